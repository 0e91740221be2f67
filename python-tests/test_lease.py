"""One writer per destination. Writers with overlapping lives (deploys), SIGKILLed or
SIGSTOPped past their lease TTL, on moto and Ceph RGW: the TXID chain never forks and every
restore point is one writer's state at one of its commits."""
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

from helpers import FaultyStore, Store, litestream_restore, proxied_moto
from test_replication import open_replicated, sync
from test_restore import restore

HERE = os.path.dirname(os.path.abspath(__file__))
TRIALS = int(os.environ.get("LITESTREAM_LEASE_TRIALS", "25"))
TTL = "1s"


def start_writer(ext_path, store, tmp_path, url, name, seconds):
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "lease_writer.py"), ext_path, str(tmp_path / f"{name}.db"),
                          url, str(tmp_path / f"{name}.states"), str(seconds), TTL, name],
                         cwd=HERE, env=store.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"ready", p.stderr.read().decode()
    return p


def l0_txids(store, url):
    if store.kind == "file":
        d = store.tmp_path / "replica-app.db" / "ltx" / "0"
        names = [n for n in os.listdir(d) if n.endswith(".ltx")]
    else:
        import boto3
        u = urllib.parse.urlparse(url)
        s3 = boto3.client("s3", endpoint_url=store.endpoint, aws_access_key_id=store.access_key,
                          aws_secret_access_key=store.secret_key, region_name="us-east-1")
        prefix = f"{u.path.strip('/')}/0000/"
        names = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=u.netloc, Prefix=prefix):
            names += [o["Key"][len(prefix):] for o in page.get("Contents", [])]
    pairs = sorted(tuple(int(x, 16) for x in n[:-4].split("-")) for n in names)
    return pairs


def db_hash(path):
    c = sqlite3.connect(path)
    try:
        return hashlib.sha256("\n".join(c.iterdump()).encode()).hexdigest()
    finally:
        c.close()


@pytest.mark.parametrize("kind", ["moto", "ceph"])
@pytest.mark.parametrize("trial", range(TRIALS))
def test_overlapping_writers_never_fork(connect, ext_path, tmp_path, monkeypatch, kind, trial):
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    url = store.url("app.db")
    rng = random.Random(f"{kind}-{trial}")
    overlapping_writers(connect, ext_path, tmp_path, store, url, url, rng)


@pytest.mark.parametrize("kind,mode", [("moto", m) for m in FaultyStore.MODES] +
                         [("ceph", m) for m in ("reset", "blackhole", "delay")])
def test_writers_taking_over_through_store_faults_never_fork(connect, ext_path, tmp_path, monkeypatch, kind, mode):
    """The same takeovers while every third request to the store fails (errors, resets,
    silence, delays, cut bodies) for the first 1.5 s, lease renewals and conditional writes
    among them; then the store is well again and the writers that are left finish."""
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    faulty = FaultyStore(store.endpoint)
    faulty.mode = mode
    threading.Timer(1.5, lambda: setattr(faulty, "mode", None)).start()
    key = f"{os.urandom(8).hex()}/app.db"
    through = faulty.s3_url(store.bucket, key)
    direct = f"s3://{store.bucket}/{key}?endpoint={store.endpoint}&region=us-east-1&force-path-style=true"
    rng = random.Random(f"faults-{kind}-{mode}")
    # The writers outlive the faults by 3 s: time to get past the pauses the faults caused
    # (a writer that closes while the store fails keeps its commits locally).
    overlapping_writers(connect, ext_path, tmp_path, store, through, direct, rng,
                        scenario=rng.choice(["kill", "stop"]), seconds=4.5)
    assert faulty.faults > 0


def overlapping_writers(connect, ext_path, tmp_path, store, url, direct, rng, scenario=None, seconds=2.5):
    """Writers `a` and `b` (and `c`) replicate one database to `url` with overlapping lives,
    one killed or stopped past its TTL (`scenario`, else one at random); then the chain
    (read at `direct`) has no gap or fork and every restore point is a writer's state."""
    scenario = scenario or rng.choice(["overlap", "kill", "stop", "three"])
    a = start_writer(ext_path, store, tmp_path, url, "a", seconds)
    time.sleep(rng.uniform(0.3, 0.8))
    b = start_writer(ext_path, store, tmp_path, url, "b", seconds)
    procs = [a, b]
    if scenario == "kill":
        time.sleep(rng.uniform(0.1, 1.0))
        a.kill()
    elif scenario == "stop":
        a.send_signal(signal.SIGSTOP)
        time.sleep(1.6)  # past the 1 s TTL: b takes over
        a.send_signal(signal.SIGCONT)
    elif scenario == "three":
        time.sleep(0.5)
        procs.append(start_writer(ext_path, store, tmp_path, url, "c", 1.5))
        time.sleep(rng.uniform(0.1, 0.6))
        rng.choice([a, b]).kill()
    for p in procs:
        p.wait(timeout=60)
    states = set()
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.states"
        if path.exists():
            states |= set(path.read_text().split())
    url = direct
    chain = l0_txids(store, url)
    assert chain, "nothing replicated"
    assert all(lo == hi for lo, hi in chain), chain
    assert [lo for lo, _ in chain] == list(range(1, len(chain) + 1)), f"gap or fork: {chain}"
    boot = connect()
    latest = tmp_path / "latest.db"
    restore(boot, url, latest)
    assert db_hash(latest) in states, f"{scenario}: the latest restore is no writer's committed state"
    theirs = litestream_restore(store, url, tmp_path / "theirs.db")
    assert theirs.read_bytes() == latest.read_bytes()
    for txid in rng.sample(range(1, len(chain) + 1), min(4, len(chain))):
        out = tmp_path / f"t{txid}.db"
        restore(boot, url, out, txid)
        assert db_hash(out) in states, f"{scenario}: TXID {txid} is no writer's committed state"


def test_second_writer_waits_and_says_so(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    a = open_replicated(connect, tmp_path / "a.db", url, **{"lease-ttl": "2s"})
    a.execute("create table t(x)")
    a.execute("select litestream_sync(5000)").fetchone()
    # Another writer in another "node" (a second database file) on the same destination.
    b = open_replicated(connect, tmp_path / "b.db", url, **{"lease-ttl": "2s"})
    b.execute("create table u(y)")
    with pytest.raises(sqlite3.OperationalError, match="timed out"):
        b.execute("select litestream_sync(1500)").fetchone()
    status = json.loads(b.execute("select litestream_status()").fetchone()[0])
    mine = {d["path"]: d for d in status["databases"]}
    assert mine[str(tmp_path / "b.db")]["lease"]["state"] == "waiting"
    assert mine[str(tmp_path / "a.db")]["lease"]["state"] == "held"
    a.close()  # releases: b takes over, resyncs with a full L0 of its own state
    b.execute("select litestream_sync(10000)").fetchone()
    b.close()
    out = tmp_path / "r.db"
    restore(connect(), url, out)
    assert db_hash(out) == db_hash(tmp_path / "b.db")


@pytest.fixture
def ignoring_store():
    """A store that silently ignores If-None-Match/If-Match."""
    for url, _ in proxied_moto(("if-none-match", "if-match")):
        yield url


@pytest.fixture
def counting_store():
    """moto behind a proxy that counts requests."""
    for url, handler in proxied_moto(()):
        yield url, handler


def test_store_ignoring_conditional_writes_is_refused(connect, tmp_path, monkeypatch, ignoring_store):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    url = f"s3://bkt/app.db?endpoint={ignoring_store}&region=us-east-1"
    con = open_replicated(connect, tmp_path / "app.db", url)
    con.execute("create table t(x)")
    with pytest.raises(sqlite3.OperationalError, match="does not honour conditional writes"):
        con.execute("select litestream_sync(3000)").fetchone()
    status = json.loads(con.execute("select litestream_status()").fetchone()[0])
    mine = status["databases"][0] if len(status["databases"]) == 1 else [d for d in status["databases"] if d["path"] == str(tmp_path / "app.db")][0]
    assert mine["lease"]["state"] == "refused" and mine["uploads"] == 0, mine
    assert con.execute("select count(*) from t").fetchone()[0] == 0  # the local database works
    con.close()
    # Explicitly without a lease, it replicates.
    con = open_replicated(connect, tmp_path / "other.db", url.replace("app.db", "other.db"), lease="off")
    con.execute("create table t(x)")
    con.execute("select litestream_sync(10000)").fetchone()
    status = json.loads(con.execute("select litestream_status()").fetchone()[0])
    mine = [d for d in status["databases"] if d["path"] == str(tmp_path / "other.db")][0]
    assert mine["lease"]["state"] == "off" and mine["uploads"] >= 1, mine
    con.close()


def test_a_connection_that_only_reads_asks_the_store_nothing(connect, tmp_path, monkeypatch, counting_store):
    """An app opening a connection per request pays no store request for one that only
    reads: its last close takes no lease and lists nothing (the position saved at the last
    upload says the replica has every commit). The maintenance the writing session left due
    runs once, at the next open, and not again."""
    url, handler = counting_store
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    replica = f"s3://bkt/reads.db?endpoint={url}&region=us-east-1"
    db = tmp_path / "reads.db"
    con = open_replicated(connect, db, replica)
    con.execute("pragma journal_mode=wal")
    con.execute("create table t(x)")
    for i in range(5):
        con.execute("insert into t values(?)", (i,))
    txid = int(sync(con)[str(db)], 16)
    con.close()
    con = open_replicated(connect, db, replica)
    assert con.execute("select count(*) from t").fetchone()[0] == 5
    con.close()  # waits for the maintenance pass the writes left due
    record = json.loads((tmp_path / ".reads.db-litestream" / "maintenance.json").read_text())
    assert record["covered_txid"] == [txid] * len(record["covered_txid"]), record
    handler.count = 0
    for _ in range(20):
        con = open_replicated(connect, db, replica)
        assert con.execute("select count(*) from t").fetchone()[0] == 5
        con.close()
    assert handler.count == 0, f"{handler.count} requests for 20 connections that only read"
    # A connection that writes still ships before its close returns.
    con = open_replicated(connect, db, replica)
    con.execute("insert into t values('shipped')")
    con.close()
    assert handler.count > 0
    out = tmp_path / "restored.db"
    restore(connect(), replica, out)
    assert sqlite3.connect(out).execute("select count(*) from t").fetchone()[0] == 6


def test_with_the_store_down_only_one_open_per_boundary_tries_maintenance(connect, tmp_path, monkeypatch):
    """A connection per request that only reads, the store down (every connection reset):
    the first open tries the maintenance the writes left due, and its close waits for that
    try; the next opens ask the store nothing (not one try each, each making its close
    wait). Once the store is back, a writing connection ships, and the replica restores."""
    store = Store("moto", tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    faulty = FaultyStore(store.endpoint, every=1)
    replica = faulty.s3_url(store.bucket, f"{os.urandom(8).hex()}/down.db")
    db = tmp_path / "down.db"
    con = open_replicated(connect, db, replica)
    con.execute("pragma journal_mode=wal")
    con.execute("create table t(x)")
    con.execute("insert into t values(1)")
    con.close()
    faulty.set("reset")
    open_replicated(connect, db, replica).close()
    assert faulty.faults > 0, "the first open did not try the maintenance that was due"
    # The close waits for that try within a bound; what it left running ends first.
    tried, deadline = -1, time.time() + 60
    while tried != faulty.requests and time.time() < deadline:
        tried = faulty.requests
        time.sleep(1.0)
    for _ in range(10):
        con = open_replicated(connect, db, replica)
        assert con.execute("select count(*) from t").fetchone()[0] == 1
        con.close()
    assert faulty.requests == tried, f"{faulty.requests - tried} requests while the store was down"
    faulty.set(None)
    con = open_replicated(connect, db, replica)
    con.execute("insert into t values(2)")
    con.close()
    out = tmp_path / "restored.db"
    restore(connect(), replica, out)
    assert sqlite3.connect(out).execute("select count(*) from t").fetchone()[0] == 2
    faulty.close()


IDLE_AT_EXIT = r"""
import sqlite3, sys, urllib.parse
ext, base, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
b = sqlite3.connect(':memory:'); b.enable_load_extension(True); b.load_extension(ext)
cons = []
for i in range(n):
    url = urllib.parse.quote(f"{sys.argv[4]}/db{i}.db?endpoint={sys.argv[5]}&region=us-east-1", safe="")
    c = sqlite3.connect(f"file:{base}/db{i}.db?vfs=litestream&replica={url}", uri=True)
    assert c.execute("select count(*) from t").fetchone()[0] == 1
    cons.append(c)
print("open", flush=True)
"""  # exits with every connection open: the exit flush runs


def test_process_exit_with_databases_that_only_read_asks_the_store_nothing(ext_path, connect, tmp_path, monkeypatch, counting_store):
    """A process exiting with connections open flushes every database (bounded): one with
    nothing to ship costs no request, however many there are."""
    url, handler = counting_store
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    n = 10
    for i in range(n):
        db = tmp_path / f"db{i}.db"
        replica = f"s3://bkt/exit/db{i}.db?endpoint={url}&region=us-east-1"
        con = open_replicated(connect, db, replica)
        con.execute("create table t(x)")
        con.execute("insert into t values(1)")
        con.close()
        # The next open runs the maintenance these writes left due; after it, nothing is due.
        open_replicated(connect, db, replica).close()
    handler.count = 0
    r = subprocess.run([sys.executable, "-c", IDLE_AT_EXIT, ext_path, str(tmp_path), str(n), "s3://bkt/exit", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "open" in r.stdout, r.stderr
    assert handler.count == 0, f"{handler.count} requests at the exit of {n} databases that only read"


def test_idle_database_costs_no_requests(connect, tmp_path, monkeypatch, counting_store):
    """Once maintenance has settled, an idle database makes no request at all (its lease
    lapses); the next commit wakes it."""
    url, handler = counting_store
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    replica = f"s3://bkt/idle.db?endpoint={url}&region=us-east-1"
    con = open_replicated(connect, tmp_path / "idle.db", replica, **{
        "lease-ttl": "1s", "levels": "1s,2s", "snapshot-interval": "2s", "l0-retention": "1s", "retention": "2s"})
    con.execute("pragma journal_mode=wal")
    con.execute("create table t(x)")
    for i in range(5):
        con.execute("insert into t values(?)", (i,))
    con.execute("select litestream_sync(10000)").fetchone()
    time.sleep(8)  # compaction, snapshot and retention run, then settle
    handler.count = 0
    time.sleep(6)
    assert handler.count == 0, f"{handler.count} requests while idle"
    con.execute("insert into t values('wake up')")
    con.execute("select litestream_sync(10000)").fetchone()
    assert handler.count > 0
    con.close()
