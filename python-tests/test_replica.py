"""The litestream-replica VFS: readers in other processes query a replica while a writer
works; every read transaction sees exactly the primary's state at one committed TXID, never
older than one it saw before."""
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
import urllib.parse

import pytest

from helpers import Store, random_workload, require
from test_replication import open_replicated, sync

HERE = os.path.dirname(os.path.abspath(__file__))


def spawn(ext_path, env, *args):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "replica_procs.py"), args[0], ext_path, *args[1:]],
                            cwd=HERE, env=env, stderr=subprocess.PIPE)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def check_readers(observations_by_reader, truth):
    """Each observation equals the writer's state at its TXID; TXIDs never go back."""
    for obs in observations_by_reader:
        assert obs, "a reader observed nothing"
        last = -1
        for o in obs:
            txid = int(o["txid"], 16)
            assert txid >= last, f"went back from {last} to {txid}"
            last = txid
            if o["txid"] in truth:
                assert o["hash"] == truth[o["txid"]], f"reader saw a state that is not TXID {o['txid']}"
        seen = {o["txid"] for o in obs} & set(truth)
        assert len(seen) >= 3, f"readers followed too little of the writer: {sorted(seen)}"


def run_writer_and_readers(ext_path, tmp_path, store, url, seconds=6, writer_params=()):
    env = store.env()
    db = str(tmp_path / "app.db")
    w = spawn(ext_path, env, "writer", db, url, str(tmp_path / "writer.jsonl"), str(seconds), "seed", *writer_params)
    # Readers start once the replica exists.
    deadline = time.time() + 20
    while not (tmp_path / "writer.jsonl").exists() or not read_jsonl(tmp_path / "writer.jsonl"):
        assert time.time() < deadline and w.poll() is None, w.stderr.read().decode() if w.poll() is not None else "writer too slow"
        time.sleep(0.05)
    # Readers go on a little after the writer stops, to see it catch up.
    readers = [spawn(ext_path, env, "reader", str(tmp_path / "replica-view.db"), url, str(tmp_path / f"reader{i}.jsonl"), str(seconds + 3))
               for i in range(2)]
    for p in [w, *readers]:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    truth = {o["txid"]: o["hash"] for o in read_jsonl(tmp_path / "writer.jsonl")}
    observations = [read_jsonl(tmp_path / f"reader{i}.jsonl") for i in range(2)]
    return truth, observations


@pytest.mark.parametrize("kind", ["file", "moto", "ceph"])
def test_readers_see_committed_states_only(ext_path, tmp_path, kind):
    store = Store(kind, tmp_path)
    url = store.url("app.db")
    truth, observations = run_writer_and_readers(ext_path, tmp_path, store, url)
    check_readers(observations, truth)
    # The readers caught up with the end of the writer's work.
    final = max(truth, key=lambda t: int(t, 16))
    assert any(o["txid"] == final for obs in observations for o in obs), "no reader reached the last TXID"


def test_readers_survive_compaction_and_retention(ext_path, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    truth, observations = run_writer_and_readers(
        ext_path, tmp_path, store, url, seconds=8,
        writer_params=("levels=1s,2s", "snapshot-interval=2s", "retention=2s", "l0-retention=1s"))
    check_readers(observations, truth)
    l0 = os.listdir(tmp_path / "replica-app.db" / "ltx" / "0")
    assert len(l0) < len(truth), "retention deleted no L0 file: the test proves nothing"


def test_reader_on_a_replica_written_by_litestream(connect, ext_path, tmp_path):
    """The real `litestream replicate` writes; our VFS reads; each state we see is what
    `litestream restore -txid` gives for that TXID."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("pragma journal_mode=wal")
    random_workload(con, random.Random(1), 3, allow_vacuum=False)
    proc = subprocess.Popen([require("LITESTREAM_TEST_BIN"), "replicate", str(db), url], env=store.env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        reader = spawn(ext_path, store.env(), "reader", str(tmp_path / "view.db"), url, str(tmp_path / "r.jsonl"), "5")
        rng = random.Random(2)
        deadline = time.time() + 5
        while time.time() < deadline:
            random_workload(con, rng, 1, allow_vacuum=False)
            time.sleep(0.3)
        assert reader.wait(timeout=60) == 0, reader.stderr.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    con.close()
    obs = read_jsonl(tmp_path / "r.jsonl")
    txids = sorted({o["txid"] for o in obs}, key=lambda t: int(t, 16))
    assert len(txids) >= 3, txids
    for txid in txids:
        out = tmp_path / f"lr-{txid}.db"
        r = subprocess.run([require("LITESTREAM_TEST_BIN"), "restore", "-txid", txid, "-o", str(out), url],
                           env=store.env(), capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        c = sqlite3.connect(out)
        expected = hashlib.sha256("\n".join(c.iterdump()).encode()).hexdigest()
        c.close()
        assert all(o["hash"] == expected for o in obs if o["txid"] == txid), f"TXID {txid}"


def test_time_travel_and_readonly(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    w = open_replicated(connect, db, url, **{"min-interval": "0"})
    w.execute("pragma journal_mode=wal")
    w.execute("create table t(x)")
    states = {}
    for i in range(5):
        w.execute("insert into t values(?)", (i,))
        txid = sync(w)[str(db)]
        states[txid] = i + 1
    quoted = urllib.parse.quote(url, safe="")
    first = min(states, key=lambda t: int(t, 16))
    pinned = sqlite3.connect(f"file:{tmp_path}/v.db?vfs=litestream-replica&replica={quoted}&txid={first}", uri=True)
    assert pinned.execute("select count(*) from t").fetchone()[0] == states[first]
    assert pinned.execute("select litestream_txid()").fetchone()[0] == first
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        pinned.execute("insert into t values(99)")
    live = sqlite3.connect(f"file:{tmp_path}/v.db?vfs=litestream-replica&replica={quoted}", uri=True)
    for txid, count in states.items():
        live.execute("select litestream_set_time(?)", (txid,)).fetchone()
        assert live.execute("select count(*) from t").fetchone()[0] == count
    live.execute("select litestream_set_time('LATEST')").fetchone()
    assert live.execute("select count(*) from t").fetchone()[0] == 5
    assert live.execute("select litestream_lag() >= 0").fetchone()[0] == 1
    # Timestamps work too (the time of the latest file: everything before it).
    ts = live.execute("select litestream_time()").fetchone()[0]
    live.execute("select litestream_set_time(?)", (ts,)).fetchone()
    assert live.execute("select count(*) from t").fetchone()[0] == 4
    status = json.loads(live.execute("select litestream_status()").fetchone()[0])
    replica = [r for r in status["replicas"] if r["replica"].endswith("replica-app.db")][0]
    assert replica["cache_hits"] + replica["cache_misses"] > 0
    # The status tells what each connection reads: `txid` is the latest (what following
    # connections read), `pinned_txids` the versions pinned ones read.
    latest = max(states, key=lambda t: int(t, 16))
    by_time = live.execute("select litestream_txid()").fetchone()[0]
    assert replica["txid"] == latest and replica["connections"] == 2, replica
    assert replica["pinned_txids"] == sorted({first, by_time}), replica
    live.execute("select litestream_set_time('LATEST')").fetchone()
    pinned.close()
    status = json.loads(live.execute("select litestream_status()").fetchone()[0])
    replica = [r for r in status["replicas"] if r["replica"].endswith("replica-app.db")][0]
    assert replica["pinned_txids"] == [] and replica["connections"] == 1, replica
    for c in (live, w):
        c.close()


def test_unreadable_replica_is_a_clear_error(connect, tmp_path):
    connect()
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        sqlite3.connect(f"file:{tmp_path}/x.db?vfs=litestream-replica&replica=file://{tmp_path}/none", uri=True).execute("select 1 from sqlite_master").fetchall()
    status = json.loads(connect().execute("select litestream_status()").fetchone()[0])
    assert "no LTX files" in status["last_open_error"], status["last_open_error"]
