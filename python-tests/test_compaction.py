"""Compaction, snapshots and retention (short intervals): after they ran, restores with our
restore and with `litestream restore` 0.5.17 agree on every TXID, and every restorable TXID
gives exactly the state recorded at that commit."""
import random
import time

import pytest

from helpers import Store, dump, level_files, litestream_restore, random_workload
from test_replication import open_replicated, sync
from test_restore import restore


@pytest.mark.parametrize("kind", ["file", "moto"])
def test_compaction_snapshots_retention(connect, tmp_path, monkeypatch, kind):
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{
        "min-interval": "0", "levels": "1s,2s", "snapshot-interval": "3s",
        "retention": "4s", "l0-retention": "1s"})
    con.execute("pragma journal_mode=wal")
    rng = random.Random(kind)
    recorded = {}
    deadline = time.time() + 9
    while time.time() < deadline:
        random_workload(con, rng, 1)
        txid = int(sync(con)[str(db)], 16)
        recorded[txid] = dump(db)
        time.sleep(0.15)
    time.sleep(3.5)  # let the last compactions, snapshot and retention run
    levels = {lvl: level_files(store, url, lvl) for lvl in (0, 1, 2, 9)}
    assert levels[1] and levels[2] and levels[9], levels
    assert len(levels[0]) < len(recorded), f"L0 retention removed nothing: {levels[0]}"
    latest = max(recorded)
    boot = connect()
    restorable = []
    for txid in sorted(recorded):
        out = tmp_path / f"ours-{txid}.db"
        try:
            restore(boot, url, out, txid)
            ok = True
        except Exception as e:  # noqa: BLE001 - any failure must be a clear "not available"
            assert "outside retention" in str(e) or "no files" in str(e), str(e)
            ok = False
        theirs_ok = True
        try:
            litestream_restore(store, url, tmp_path / f"theirs-{txid}.db", txid=txid)
        except AssertionError:
            theirs_ok = False
        assert ok == theirs_ok, f"TXID {txid}: ours {ok}, litestream {theirs_ok}"
        if ok:
            restorable.append(txid)
            assert dump(out) == recorded[txid], f"TXID {txid}"
            assert out.read_bytes() == (tmp_path / f"theirs-{txid}.db").read_bytes(), f"TXID {txid} differs from Litestream's"
    assert latest in restorable
    # Retention made early points unavailable, but every point within L0 retention remains.
    assert len(restorable) < len(recorded)
    con.close()


@pytest.mark.parametrize("kind", ["file", "moto"])
def test_a_database_open_only_for_moments_is_still_maintained(connect, tmp_path, monkeypatch, kind):
    """A connection per request: the database is open for milliseconds at a time and never
    while a schedule's boundary passes. Maintenance a boundary made due while it was closed
    runs at the next open (its last close waits for that pass), so L0 is compacted and
    trimmed and snapshots are taken; before, L0 grew for ever and nothing was compacted."""
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    params = {"min-interval": "0", "levels": "1s", "snapshot-interval": "2s",
              "retention": "1h", "l0-retention": "1s"}
    commits = 8
    for i in range(commits):
        con = open_replicated(connect, db, url, **params)
        if i == 0:
            con.execute("pragma journal_mode=wal")
            con.execute("create table t(i, pad)")
        con.execute("insert into t values(?, randomblob(3000))", (i,))
        con.close()
        time.sleep(1.1)  # closed while each boundary passes
    levels = {lvl: level_files(store, url, lvl) for lvl in (0, 1, 9)}
    assert levels[1] and levels[9], levels
    assert len(levels[0]) < commits, f"L0 retention removed nothing: {levels[0]}"
    out = tmp_path / "ours.db"
    restore(connect(), url, out)
    assert dump(out) == dump(db)
    theirs = litestream_restore(store, url, tmp_path / "theirs.db")
    assert out.read_bytes() == theirs.read_bytes()


@pytest.mark.servers
def test_the_last_close_ends_maintenance_before_it_returns(connect, tmp_path, monkeypatch):
    """No process of ours changes the replica once its last connection closed: a pass of
    compaction, snapshots and retention in flight at the close ends (at its current step)
    before the close returns. Otherwise a restore started then (Litestream's lists first,
    downloads after) fails on files removed under it. A store answering each request 300 ms
    late keeps the pass in flight at the close."""
    import uuid

    import boto3

    from helpers import FaultyStore

    store = Store("moto", tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    slow = FaultyStore(store.endpoint, every=1, delay_s=0.3)
    prefix = uuid.uuid4().hex
    url = f"s3://{store.bucket}/{prefix}/app.db?endpoint={slow.url}&region=us-east-1&force-path-style=true"
    s3 = boto3.client("s3", endpoint_url=store.endpoint, aws_access_key_id=store.access_key,
                      aws_secret_access_key=store.secret_key, region_name="us-east-1")

    def replica():
        resp = s3.list_objects_v2(Bucket=store.bucket, Prefix=f"{prefix}/")
        return sorted((o["Key"], o["ETag"]) for o in resp.get("Contents", []))

    try:
        db = tmp_path / "app.db"
        con = open_replicated(connect, db, url, **{"min-interval": "0", "levels": "1s",
                                                   "l0-retention": "1s", "snapshot-interval": "2s"})
        con.execute("create table t(x)")
        for i in range(3):
            con.execute("insert into t values(?)", (i,))
        sync(con)
        slow.set("delay")
        # Wait for the compaction pass to list level 1: it is in flight.
        seen = len(slow.paths)
        deadline = time.time() + 10
        while not any("/0001/" in p for p in slow.paths[seen:]):
            assert time.time() < deadline, slow.paths[seen:]
            time.sleep(0.01)
        con.close()
        closed = replica()
        time.sleep(3)  # the rest of the pass would have run by now (10 requests at most)
        assert replica() == closed
        assert any("/0001/" in key for key, _ in closed), "the compaction did not finish before the close"
    finally:
        slow.close()
