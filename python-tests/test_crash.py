"""A writer killed with SIGKILL at random moments never leaves a replica that restores to
anything but the source, and the TXID chain never has a gap or a fork."""
import os
import random
import subprocess
import sys
import time
import urllib.parse

import pytest

from helpers import Store, dump, litestream_restore

TRIALS = int(os.environ.get("LITESTREAM_CRASH_TRIALS", "50"))
HERE = os.path.dirname(os.path.abspath(__file__))


def l0_chain(replica_dir):
    names = sorted(os.listdir(os.path.join(replica_dir, "ltx", "0")))
    ranges = [tuple(int(x, 16) for x in n[:-4].split("-")) for n in names if n.endswith(".ltx")]
    return ranges


@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_at_random_moments(connect, ext_path, tmp_path, trial):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    rng = random.Random(trial)
    # Several crashes in a row on the same database and replica.
    for crash in range(3):
        child = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "crash_writer.py"), ext_path, str(db),
             urllib.parse.quote(url, safe=""), f"{trial}-{crash}"],
            stdout=subprocess.PIPE, cwd=HERE)
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.01, 0.4))
        child.kill()
        child.wait()
    connect()
    import sqlite3
    con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}", uri=True)
    con.execute("select count(*) from sqlite_master").fetchone()  # rolls back a hot journal
    con.execute("select litestream_sync(30000)").fetchone()
    expected = dump(db)
    con.close()
    chain = l0_chain(str(tmp_path / "replica-app.db"))
    assert all(lo == hi for lo, hi in chain), chain
    assert [lo for lo, _ in chain] == list(range(1, len(chain) + 1)), f"gap or fork: {chain}"
    assert dump(litestream_restore(store, url, tmp_path / "restored.db")) == expected
    # Every TXID in the chain restores to a sound database (never a torn snapshot).
    for txid in range(1, len(chain) + 1, max(1, len(chain) // 6)):
        dump(litestream_restore(store, url, tmp_path / f"restored-{txid}.db", txid=txid))


HELD_IN_MEMORY = """
import sqlite3, sys
ext, db, replica = sys.argv[1:4]
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(ext)
con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={replica}&min-interval=60s", uri=True,
                      isolation_level=None)
con.execute("pragma journal_mode=wal")
con.execute("pragma wal_autocheckpoint=0")
con.execute("create table t(v)")
con.execute("select litestream_sync(10000)")  # shipped; the position is saved in this WAL
for _ in range(20):  # committed, held back by min-interval
    con.execute("insert into t values (randomblob(3000))")
con.execute("pragma wal_checkpoint(passive)")  # all in the database file: the next write restarts the WAL
con.execute("pragma cache_size=2")
con.execute("begin")
# Spills to the WAL before committing: the restart happens, the 20 commits' pages are copied
# out of the old WAL into memory, and no commit frame reaches the new one.
con.execute("insert into t select randomblob(3000) from "
            "(with recursive n(i) as (select 1 union all select i + 1 from n where i < 200) select i from n)")
print("ready", flush=True)
sys.stdin.read()
"""


def test_kill_after_a_wal_restart_that_held_commits_in_memory(connect, ext_path, tmp_path):
    """Commits not shipped yet when SQLite restarts the WAL are held in memory; a crash then
    loses them locally, and the next open must notice (the saved position is in the old WAL
    generation) and ship a full snapshot instead of leaving a gap."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    child = subprocess.Popen([sys.executable, "-c", HELD_IN_MEMORY, ext_path, str(db), urllib.parse.quote(url, safe="")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=HERE)
    assert child.stdout.readline().strip() == b"ready"
    child.kill()
    child.wait()
    connect()
    import sqlite3
    con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}", uri=True)
    assert con.execute("select count(*) from t").fetchone()[0] == 20
    con.execute("select litestream_sync(30000)").fetchone()
    expected = dump(db)
    con.close()
    assert dump(litestream_restore(store, url, tmp_path / "restored.db")) == expected
