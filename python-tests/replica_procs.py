"""Child processes for the replica tests.

  writer EXT DB REPLICA_URL OUT SECONDS SEED   random commits through vfs=litestream; after each
                                               commit (flushed) appends {"txid", "hash"} to OUT
  reader EXT DB REPLICA_URL OUT SECONDS        read transactions through vfs=litestream-replica;
                                               appends {"txid", "hash"} of what each one saw
"""
import hashlib
import json
import random
import sqlite3
import sys
import time
import urllib.parse

from helpers import random_workload


def state_hash(con):
    return hashlib.sha256("\n".join(con.iterdump()).encode()).hexdigest()


def load(ext):
    boot = sqlite3.connect(":memory:")
    boot.enable_load_extension(True)
    boot.load_extension(ext)
    return boot


def writer(ext, db, url, out, seconds, seed, *params):
    load(ext)
    extra = "".join("&" + p for p in params)
    con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}&min-interval=0{extra}",
                          uri=True, isolation_level=None)
    con.execute("pragma journal_mode=wal")
    rng = random.Random(seed)
    random_workload(con, rng, 1, allow_vacuum=False)
    deadline = time.time() + float(seconds)
    with open(out, "a") as f:
        while True:
            txid = json.loads(con.execute("select litestream_sync(30000)").fetchone()[0])[db]
            f.write(json.dumps({"txid": txid, "hash": state_hash(con)}) + "\n")
            f.flush()
            if time.time() > deadline:
                break
            random_workload(con, rng, 1)
    con.close()


def reader(ext, db, url, out, seconds):
    load(ext)
    con = sqlite3.connect(f"file:{db}?vfs=litestream-replica&replica={urllib.parse.quote(url, safe='')}&poll-interval=50ms",
                          uri=True, isolation_level=None)
    deadline = time.time() + float(seconds)
    with open(out, "a") as f:
        while time.time() < deadline:
            con.execute("begin")
            con.execute("select count(*) from sqlite_master").fetchone()  # takes the read lock
            txid = con.execute("select litestream_txid()").fetchone()[0]
            h = state_hash(con)
            con.execute("commit")
            f.write(json.dumps({"txid": txid, "hash": h}) + "\n")
            f.flush()
            time.sleep(0.02)
    con.close()


if __name__ == "__main__":
    {"writer": writer, "reader": reader}[sys.argv[1]](*sys.argv[2:])
