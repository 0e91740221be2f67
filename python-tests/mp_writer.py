"""Child process for the multi-process tests: commits to a database that another process
replicates. argv: mode (`ext`: through the litestream VFS; `plain`: SQLite without the
extension), extension path, database path, replica URL (percent-encoded), seed, seconds,
then `sync` to call litestream_sync() before exiting (ext only). Prints the number of
commits it made."""
import random
import sqlite3
import sys
import time

from helpers import random_workload, yield_to_other_writers

mode, ext, db, replica, seed, seconds = sys.argv[1:7]
do_sync = "sync" in sys.argv[7:]
if mode == "ext":
    boot = sqlite3.connect(":memory:")
    boot.enable_load_extension(True)
    boot.load_extension(ext)
    con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={replica}&min-interval=0", uri=True,
                          isolation_level=None, timeout=30)
else:
    con = sqlite3.connect(db, isolation_level=None, timeout=30)
con.execute("pragma busy_timeout=30000")
con.execute("pragma wal_autocheckpoint=20")  # frequent WAL restarts by this process
rng = random.Random(seed)
deadline = time.time() + float(seconds)
commits = 0
while True:
    random_workload(con, rng, 1, allow_vacuum=False)
    commits += 1
    if time.time() >= deadline:
        break
    yield_to_other_writers()
if do_sync:
    con.execute("select litestream_sync(30000)").fetchone()
print(commits, flush=True)
con.close()
