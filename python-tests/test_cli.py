"""The command-line tool `sqlite-litestream` (built next to the library): restore, ls, verify
and fork on replicas our extension wrote (file:// and moto with SigV4) and on one the real
Litestream 0.5.17 wrote; damaged files named; exit statuses as documented."""
import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest

from helpers import Store, dump, level_files
from test_replication import open_replicated, sync

ROOT = pathlib.Path(__file__).resolve().parent.parent
VECTORS = ROOT / "testdata" / "litestream-0.5.17"


def cli(*args, env=None, check=None):
    """Runs the tool; returns (exit status, stdout, stderr). `check` = the status expected."""
    tool = pathlib.Path(os.environ["LITESTREAM_TEST_LIB"]).parent / "sqlite-litestream"
    run = subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, env=env, timeout=120)
    if check is not None:
        assert run.returncode == check, (args, run.returncode, run.stdout, run.stderr)
    return run.returncode, run.stdout, run.stderr


def written(connect, tmp_path, url, commits=6):
    """A replicated database with `commits` transactions; returns {TXID: dump} and the
    database's path."""
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    con.execute("create table t(id integer primary key, v text)")
    states = {}
    for i in range(commits):
        con.execute("insert into t(v) values(?)", (f"row {i}" * 50,))
        txid = int(sync(con)[str(db)], 16)
        states[txid] = dump(db)
    con.close()
    return states, db


@pytest.mark.parametrize("kind", ["file", "moto"])
def test_restore_ls_verify_and_fork_what_the_extension_wrote(connect, tmp_path, monkeypatch, kind):
    store = Store(kind, tmp_path)
    env = store.env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    url = store.url("app.db")
    states, db = written(connect, tmp_path, url)
    latest = max(states)

    # ls: every file of every level, as the store has them.
    _, out, _ = cli("ls", "--json", url, env=env, check=0)
    listed = json.loads(out)
    for level in range(10):
        names = sorted(f"{f['min_txid']}-{f['max_txid']}.ltx" for f in listed if f["level"] == level)
        assert names == level_files(store, url, level), level
    assert all(f["size"] > 0 and f["timestamp"].endswith("Z") for f in listed), listed

    # verify: every file read and checked, the latest state plannable.
    _, out, _ = cli("verify", "--json", url, env=env, check=0)
    report = json.loads(out)
    assert report["problems"] == [] and report["files"] == len(listed), report
    assert report["latest_txid"] == f"{latest:016x}", report

    # restore: the latest state, then each TXID, then a time after the last commit.
    _, out, err = cli("restore", "-o", tmp_path / "latest.db", url, env=env, check=0)
    assert f"restored TXID {latest:016x}" in out and "downloaded" in err, (out, err)
    assert dump(tmp_path / "latest.db") == dump(db) == states[latest]
    for txid, state in states.items():
        out_db = tmp_path / f"at-{txid}.db"
        _, out, _ = cli("restore", "--json", "--txid", txid, "-o", out_db, url, env=env, check=0)
        assert json.loads(out)["txid"] == f"{txid:016x}"
        assert dump(out_db) == state, txid
    cli("restore", "--timestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 5)),
        "-o", tmp_path / "by-time.db", url, env=env, check=0)
    assert dump(tmp_path / "by-time.db") == states[latest]
    # An existing output is refused (status 1) unless --overwrite.
    code, _, err = cli("restore", "-o", tmp_path / "latest.db", url, env=env)
    assert code == 1 and "already exists" in err, err
    cli("restore", "--overwrite", "--txid", min(states), "-o", tmp_path / "latest.db", url, env=env, check=0)
    assert dump(tmp_path / "latest.db") == states[min(states)]

    # fork: a new replica at an older TXID, which restores to that state.
    fork_url = store.url("fork.db")
    middle = sorted(states)[len(states) // 2]
    _, out, _ = cli("fork", "--json", "--txid", middle, url, fork_url, env=env, check=0)
    assert json.loads(out)["txid"] == f"{middle:016x}"
    cli("restore", "-o", tmp_path / "forked.db", fork_url, env=env, check=0)
    assert dump(tmp_path / "forked.db") == states[middle]


def test_verify_and_restore_name_a_damaged_file(connect, tmp_path):
    url = f"file://{tmp_path}/replica"
    states, _ = written(connect, tmp_path, url, commits=3)
    victim = sorted((tmp_path / "replica" / "ltx" / "0").iterdir())[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    code, out, err = cli("verify", url)
    assert code == 1, (out, err)
    assert f"problem: level 0 file {victim.name}" in out, out
    assert victim.name in err, err
    code, _, err = cli("restore", "-o", tmp_path / "out.db", url)
    assert code == 1 and victim.name in err, err
    assert not (tmp_path / "out.db").exists()


def test_a_replica_litestream_wrote(tmp_path):
    replica = tmp_path / "replica"
    shutil.copytree(VECTORS / "file-replica", replica)
    _, out, _ = cli("verify", f"file://{replica}", check=0)
    assert out.splitlines()[-1].startswith("ok: 17 files checked; the latest state, TXID 0000000000000025"), out
    assert "gap: level 1" in out, out  # Litestream's compacted levels have gaps: named, not failed
    for txid in ("000000000000001d", "0000000000000025"):
        out_db = tmp_path / f"{txid}.db"
        cli("restore", "--txid", txid, "-o", out_db, f"file://{replica}", check=0)
        assert out_db.read_bytes() == (VECTORS / "expected-db" / f"restore-txid-{txid}.db").read_bytes()


def test_exit_statuses(tmp_path, connect):
    cli(check=2)
    cli("frobnicate", "file:///x", check=2)
    cli("restore", "file:///x", check=2)  # no -o
    cli("restore", "--txid", "yesterday", "-o", tmp_path / "x.db", "file:///x", check=2)
    cli("restore", "--txid", "1", "--timestamp", "2026-01-01T00:00:00Z", "-o", tmp_path / "x.db", "file:///x", check=2)
    cli("ls", "--frobnicate", "file:///x", check=2)
    cli("fork", "file:///x", check=2)
    _, out, _ = cli("--help", check=0)
    assert "exit status" in out
    # Nothing at the target: an empty replica, a TXID after the latest.
    code, _, err = cli("restore", "-o", tmp_path / "x.db", f"file://{tmp_path}/empty", check=3)
    assert "no LTX files" in err or "no backup" in err, err
    url = f"file://{tmp_path}/replica"
    states, _ = written(connect, tmp_path, url, commits=1)
    _, _, err = cli("restore", "--txid", max(states) + 5, "-o", tmp_path / "x.db", url, check=3)
    assert "after the latest TXID" in err, err
    # A URL the tool cannot use.
    code, _, err = cli("ls", "ftp://nowhere/x")
    assert code == 1 and "ftp" in err, err
