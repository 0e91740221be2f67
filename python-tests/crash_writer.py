"""Child process for the crash tests: writes random commits through the litestream VFS until
it is killed. argv: extension path, database path, replica URL (percent-encoded), seed."""
import random
import sqlite3
import sys

from helpers import random_workload

ext, db, replica, seed = sys.argv[1:5]
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(ext)
con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={replica}&min-interval=0", uri=True, isolation_level=None)
rng = random.Random(seed)
con.execute("pragma journal_mode=" + rng.choice(["wal", "wal", "delete"]))
con.execute("pragma wal_autocheckpoint=20")  # frequent WAL restarts: the spool path runs often
print("ready", flush=True)
while True:
    random_workload(con, rng, 1)
