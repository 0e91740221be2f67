"""A store that fails in the ways real ones do, in front of real moto (SigV4 enforced) and
Ceph RGW: every third request answered 500 or 503 SlowDown, reset, never answered, delayed,
or its response body cut short, while a writer commits (with compaction, snapshots and L0
retention running every second), a reader follows the replica and a restore runs. Commits
never wait on the store; reads and restores are right or refused, never wrong; the status
names the fault while it lasts; once the store is healthy again, the replica catches up and
every tool restores exactly the local database."""
import json
import sqlite3
import threading
import time
import urllib.parse
import uuid

import pytest

from helpers import FaultyStore, Store, dump, level_files, litestream_restore
from test_replication import open_replicated, sync
from test_restore import restore

# What the status must say once every request fails this way.
NAMED = {"500": "HTTP 500", "503": "HTTP 503", "reset": "", "blackhole": "has not answered"}
# A commit never waits on the store; this bound only catches one that does (a retry, a
# timeout: seconds), not a slow machine.
COMMIT_BOUND_S = 2.0


def status(con, db):
    doc = json.loads(con.execute("select litestream_status()").fetchone()[0])
    return next(d for d in doc["databases"] if d["path"] == str(db))


def s3_url(store, prefix, endpoint):
    return (f"s3://{store.bucket}/{prefix}/app.db?endpoint={endpoint}"
            f"&region=us-east-1&force-path-style=true")


def check_prefix_state(rows):
    """A state the writer really had: ids 1..n, each row as inserted."""
    assert rows == [(i, f"row {i}") for i in range(1, len(rows) + 1)], rows[:5]


@pytest.mark.parametrize("kind", ["moto", "ceph"])
@pytest.mark.parametrize("mode", FaultyStore.MODES)
def test_store_faults_lose_nothing_and_serve_nothing_wrong(connect, tmp_path, monkeypatch, kind, mode):
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    faulty = FaultyStore(store.endpoint)
    prefix = uuid.uuid4().hex
    url, direct = s3_url(store, prefix, faulty.url), s3_url(store, prefix, store.endpoint)
    db = tmp_path / "app.db"
    reader = None
    try:
        con = open_replicated(connect, db, url, **{"min-interval": "0", "levels": "1s", "l0-retention": "1s",
                                                   "snapshot-interval": "3s", "lease-ttl": "6s"})
        con.execute("create table t(id integer primary key, v text)")
        con.execute("insert into t(v) values('row 1')")
        sync(con)
        reader = sqlite3.connect(f"file:{tmp_path}/view.db?vfs=litestream-replica&poll-interval=100ms&prefetch=4"
                                 f"&replica={urllib.parse.quote(url, safe='')}", uri=True)
        check_prefix_state(reader.execute("select id, v from t order by id").fetchall())

        faulty.set(mode)
        # A reader and restores work through the fault on their own thread (a black-holed
        # request holds them until the mode ends); the writer commits meanwhile.
        stop, outcomes = threading.Event(), {"reads": 0, "restores": 0, "refused": 0, "wrong": []}

        def read_and_restore():
            own = sqlite3.connect(f"file:{tmp_path}/view.db?vfs=litestream-replica&poll-interval=100ms&prefetch=4"
                                  f"&replica={urllib.parse.quote(url, safe='')}", uri=True)
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    if i % 10:
                        rows = own.execute("select id, v from t order by id").fetchall()
                        kind = "reads"
                    else:
                        out = tmp_path / f"during-{i}.db"
                        restore(own, url, out)
                        rows = sqlite3.connect(out).execute("select id, v from t order by id").fetchall()
                        kind = "restores"
                except sqlite3.DatabaseError:
                    outcomes["refused"] += 1
                    continue
                try:
                    check_prefix_state(rows)
                    outcomes[kind] += 1
                except AssertionError as e:
                    outcomes["wrong"].append(str(e))
                time.sleep(0.01)
            own.close()

        worker = threading.Thread(target=read_and_restore, daemon=True)
        worker.start()
        slowest, n = 0.0, 1
        until = time.time() + 5
        while time.time() < until:
            n += 1
            start = time.monotonic()
            con.execute("insert into t(v) values(?)", (f"row {n}",))
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.005)
        assert faulty.faults > 0, "no fault was injected"
        assert slowest < COMMIT_BOUND_S, f"a commit waited {slowest:.2f}s on a failing store"

        if mode in NAMED:
            # Every request fails now: the status must say so, naming the fault.
            faulty.set(mode, every=1)
            con.execute("insert into t(v) values(?)", (f"row {n + 1}",))
            n += 1
            deadline = time.time() + 30
            while True:
                err = status(con, db)["last_error"] or ""
                if err and NAMED[mode] in err:
                    break
                assert time.time() < deadline, f"status does not name the fault: {status(con, db)}"
                time.sleep(0.1)

        faulty.set(None, every=3)
        stop.set()
        worker.join(120)
        assert not worker.is_alive(), "a read or restore still hangs after the store recovered"
        assert not outcomes["wrong"], outcomes["wrong"][:3]
        assert outcomes["reads"] + outcomes["restores"] + outcomes["refused"] > 0, outcomes
        if mode == "delay":  # slow, not failing: reads and restores get through
            assert outcomes["reads"] > 0 and outcomes["restores"] > 0, outcomes
        sync(con, 60000)
        st = status(con, db)
        assert st["last_error"] is None and st["remote_txid"] == st["local_txid"], st
        expected = dump(db)
        out = tmp_path / "after.db"
        restore(con, direct, out)
        assert dump(out) == expected
        # The reader catches up with exactly the writer's rows.
        want = con.execute("select id, v from t order by id").fetchall()
        deadline = time.time() + 30
        while True:
            try:
                got = reader.execute("select id, v from t order by id").fetchall()
            except sqlite3.DatabaseError:
                got = None
            if got == want:
                break
            assert time.time() < deadline, f"the reader has {len(got or [])} rows, the writer {len(want)}"
            time.sleep(0.1)
        # Closed first: Litestream's restore does not expect our compaction to delete files
        # between its listing and its downloads.
        con.close()
        assert dump(litestream_restore(store, direct, tmp_path / "theirs.db")) == expected
    finally:
        if reader is not None:
            reader.close()
        faulty.close()


def test_a_reader_far_behind_catches_up_from_the_compacted_levels(connect, tmp_path, monkeypatch):
    """A reader that missed hundreds of commits catches up from the compacted levels, not by
    reading every L0 file it missed one by one: that took longer than L0 retention kept the
    files, so behind a busy writer the reader failed and started again, and stayed stale
    (33 s in a run of the fault test above, after a store fault held its polls off)."""
    store = Store("moto", tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    reads = FaultyStore(store.endpoint)  # the readers' own front, counting their requests
    prefix = uuid.uuid4().hex
    url, read_url = s3_url(store, prefix, store.endpoint), s3_url(store, prefix, reads.url)
    direct = url
    db = tmp_path / "app.db"

    def reader(poll):
        return sqlite3.connect(f"file:{tmp_path}/view.db?vfs=litestream-replica&poll-interval={poll}"
                               f"&replica={urllib.parse.quote(read_url, safe='')}", uri=True)

    try:
        con = open_replicated(connect, db, url, **{"min-interval": "0", "levels": "1s", "l0-retention": "1h"})
        con.execute("create table t(id integer primary key, v text)")
        con.execute("insert into t(v) values('row 1')")
        sync(con)
        # Polls once, at open; the next one is an hour away.
        idle = reader("1h")
        assert idle.execute("select count(*) from t").fetchone() == (1,)
        for n in range(2, 302):
            con.execute("insert into t(v) values(?)", (f"row {n}",))
            if n % 5 == 0:
                sync(con)  # at least 60 L0 files, however fast uploads coalesce commits
        sync(con)
        txid = int(status(con, db)["local_txid"], 16)
        deadline = time.time() + 30
        while not any(int(name.split("-")[1].split(".")[0], 16) == txid for name in level_files(store, direct, 1)):
            assert time.time() < deadline, f"no L1 file reaches TXID {txid}: {level_files(store, direct, 1)}"
            time.sleep(0.2)
        behind = len(level_files(store, direct, 0)) - 2  # L0 files after the idle reader's TXID
        assert behind > 40, behind
        reads.requests = 0
        # A handle polling every 100 ms wakes the replica's poller, `behind` L0 files behind.
        follower = reader("100ms")
        want = con.execute("select id, v from t order by id").fetchall()
        deadline = time.time() + 30
        while (got := follower.execute("select id, v from t order by id").fetchall()) != want:
            assert time.time() < deadline, f"the reader has {len(got)} rows, the writer {len(want)}"
            time.sleep(0.1)
        assert idle.execute("select count(*) from t").fetchone() == (301,)
        # A plan: the listings of each level, the few L1 files, the table's pages (13 here;
        # one L0 file after another would be more than `behind`).
        assert reads.requests < 30, f"{reads.requests} requests to catch up {behind} L0 files"
        follower.close()
        idle.close()
        con.close()
    finally:
        reads.close()
