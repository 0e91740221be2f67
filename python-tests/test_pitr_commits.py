"""Point-in-time against every commit, from every process, in every mode: page-size changes
in the history (restore, compaction, snapshots, the replica VFS, Litestream's restore), and
rollbacks and forks racing other connections and writers."""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse

import pytest

from helpers import Store, dump, level_files, litestream_restore, require
from test_pitr import fork, rollback, txid_of
from test_replication import open_replicated, sync
from test_restore import restore

HERE = os.path.dirname(os.path.abspath(__file__))


def page_size_of(path):
    with open(path, "rb") as f:
        head = f.read(18)
    size = int.from_bytes(head[16:18], "big")
    return 65536 if size == 1 else size


def fill(con, n, tag):
    con.executemany("insert into t(v) values(?)", [(f"{tag} {i} " * 20,) for i in range(n)])


def change_page_size(con, mode, new):
    if mode == "wal":
        con.execute("pragma journal_mode=delete")  # VACUUM cannot change it in WAL mode
    con.execute(f"pragma page_size={new}")
    con.execute("vacuum")
    if mode == "wal":
        con.execute("pragma journal_mode=wal")
    assert con.execute("pragma page_size").fetchone()[0] == new


def read_replica(connect, url, target):
    connect()
    con = sqlite3.connect(
        f"file:replica.db?vfs=litestream-replica&replica={urllib.parse.quote(url, safe='')}&txid={target}",
        uri=True, isolation_level=None)
    try:
        ps = con.execute("pragma page_size").fetchone()[0]
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
        return ps, "\n".join(con.iterdump())
    finally:
        con.close()


@pytest.mark.parametrize("mode", ["delete", "truncate", "persist", "wal"])
@pytest.mark.parametrize("old,new", [(4096, 8192), (8192, 1024)])
def test_page_size_change_restores_on_both_sides(connect, tmp_path, monkeypatch, mode, old, new):
    """Before the fix every restore after `PRAGMA page_size=N; VACUUM` failed with 'LTX files
    have different page sizes'. Now each TXID restores at the page size it had (ours, and
    the replica VFS); compaction and a snapshot across the change work, and afterwards so
    do restores of every TXID still covered."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0", "levels": "1s", "snapshot-interval": "2s"})
    con.execute(f"pragma page_size={old}")
    con.execute(f"pragma journal_mode={mode}")
    con.execute("create table t(id integer primary key, v text)")
    recorded = {}
    for i in range(3):
        fill(con, 40, f"before {i}")
        recorded[txid_of(con, db)] = (old, dump(db))
    change_page_size(con, mode, new)
    changed = txid_of(con, db)
    recorded[changed] = (new, dump(db))
    for i in range(3):
        fill(con, 40, f"after {i}")
        con.execute("delete from t where id % 7 = ?", (i,))
        recorded[txid_of(con, db)] = (new, dump(db))
    boot = connect()

    def check(label):
        for txid, (ps, expected) in sorted(recorded.items()):
            out = tmp_path / f"{label}-{txid}.db"
            summary = restore(boot, url, out, txid)
            assert summary["page_size"] == ps, (label, txid, summary)
            assert page_size_of(out) == ps and dump(out) == expected, (label, txid)
            assert read_replica(connect, url, txid) == (ps, expected), (label, txid)
        latest = tmp_path / f"{label}-latest.db"
        restore(boot, url, latest)
        assert dump(latest) == recorded[max(recorded)][1]

    check("l0")
    # Compaction into L1 and a snapshot from the replica itself, across the change.
    deadline = time.time() + 15
    while time.time() < deadline and not (level_files(store, url, 9) and level_files(store, url, 1)):
        time.sleep(0.2)
    time.sleep(1.5)
    assert level_files(store, url, 9) and level_files(store, url, 1), "no snapshot or L1 was made"
    check("compacted")
    con.close()


def litestream_restore_result(store, url, out, txid=None):
    cmd = [require("LITESTREAM_TEST_BIN"), "restore", "-o", str(out)]
    if txid is not None:
        cmd += ["-txid", f"{txid:016x}"]
    r = subprocess.run(cmd + [url], capture_output=True, text=True, env=store.env(), timeout=120)
    return r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("old,new", [(4096, 8192), (8192, 1024)])
def test_litestream_restores_a_replica_with_a_page_size_change(connect, tmp_path, old, new):
    """What Litestream 0.5.17 makes of a replica with a page-size change: TXIDs before it
    restore (old size); TXIDs after it fail ('page size') as long as its plan starts from a
    snapshot before the change; once our level-9 snapshot at the new size exists, its latest
    state restores. Ours restores every TXID throughout."""
    require("LITESTREAM_TEST_BIN")
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute(f"pragma page_size={old}")
    con.execute("create table t(id integer primary key, v text)")
    fill(con, 50, "before")
    before, before_dump = txid_of(con, db), dump(db)
    change_page_size(con, "delete", new)
    fill(con, 50, "after")
    after, after_dump = txid_of(con, db), dump(db)
    con.close()
    boot = connect()
    ok, out = litestream_restore_result(store, url, tmp_path / "theirs-before.db", before)
    assert ok and page_size_of(tmp_path / "theirs-before.db") == old, out
    assert dump(tmp_path / "theirs-before.db") == before_dump
    for target in (after, None):
        ok, out = litestream_restore_result(store, url, tmp_path / f"theirs-{target}.db", target)
        assert not ok and "page size" in out, out
        restore(boot, url, tmp_path / f"ours-{target}.db", target)
        assert dump(tmp_path / f"ours-{target}.db") == after_dump
    # Our snapshot (level 9, at the new size) makes the latest state restorable by Litestream.
    con = open_replicated(connect, db, url, **{"min-interval": "0", "levels": "1s", "snapshot-interval": "1s"})
    deadline = time.time() + 20
    while time.time() < deadline and not level_files(store, url, 9):
        con.execute("insert into t(v) values('tick')")
        sync(con)
        time.sleep(0.3)
    con.close()
    assert level_files(store, url, 9)
    latest_dump = dump(db)
    ok, out = litestream_restore_result(store, url, tmp_path / "theirs-latest.db")
    assert ok, out
    assert page_size_of(tmp_path / "theirs-latest.db") == new
    assert dump(tmp_path / "theirs-latest.db") == latest_dump
    restore(boot, url, tmp_path / "ours-latest.db")
    assert (tmp_path / "ours-latest.db").read_bytes() == (tmp_path / "theirs-latest.db").read_bytes()
    # Before the change, Litestream still restores at the old size.
    ok, out = litestream_restore_result(store, url, tmp_path / "theirs-before-2.db", before)
    assert ok and dump(tmp_path / "theirs-before-2.db") == before_dump, out
