"""Child process for the lease tests: commits through the litestream VFS until told to stop,
recording the hash of every state it commits (or is about to). argv: EXT DB REPLICA_URL OUT SECONDS TTL NAME"""
import hashlib
import sqlite3
import sys
import time
import urllib.parse

ext, db, url, out, seconds, ttl, name = sys.argv[1:8]
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(ext)
con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}&min-interval=0&lease-ttl={ttl}",
                      uri=True, isolation_level=None)


def state():
    return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()


with open(out, "a") as f:
    # Every committed state is recorded, the setup's included.
    for sql in ("pragma journal_mode=wal", "create table if not exists w(id integer primary key, writer text, n integer, pad blob)"):
        con.execute(sql)
        f.write(state() + "\n")
    f.flush()
    print("ready", flush=True)
    deadline = time.time() + float(seconds)
    n = 0
    while time.time() < deadline:
        n += 1
        # Recorded before the commit: a SIGKILL between a commit (perhaps already shipped)
        # and its record would leave a real state unrecorded.
        con.execute("begin")
        con.execute("insert into w(writer, n, pad) values(?, ?, randomblob(200))", (name, n))
        f.write(state() + "\n")
        f.flush()
        con.execute("commit")
        time.sleep(0.03)
con.close()  # flushes and releases the lease
