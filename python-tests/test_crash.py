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
