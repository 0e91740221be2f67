"""Point-in-time as a primitive: litestream_rollback() returns a live database to a past
state as a new transaction (history kept), litestream_fork() starts an independent replica
at a past state. Checked with our restore and with the real `litestream restore`."""
import json
import random
import sqlite3
import time
import urllib.parse

import pytest

from helpers import ROOT, Store, dump, level_files, litestream_restore, proxied_moto, random_workload
from test_replication import STORES, open_replicated, sync
from test_restore import restore


def txid_of(con, db):
    return int(sync(con)[str(db)], 16)


def rollback(con, target):
    return json.loads(con.execute("select litestream_rollback(?)", (target,)).fetchone()[0])


def fork(con, src, dst, target=None):
    return json.loads(con.execute("select litestream_fork(?, ?, ?)", (src, dst, target)).fetchone()[0])


def use_store(monkeypatch, kind, tmp_path):
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    return store


def assert_both_restore(boot, store, url, tmp_path, expected_by_txid):
    """Our restore and `litestream restore` give exactly the expected state at each TXID
    (None: the latest)."""
    for txid, expected in expected_by_txid.items():
        ours = tmp_path / f"ours-{txid}.db"
        restore(boot, url, ours, txid)
        assert dump(ours) == expected, f"our restore at {txid}"
        theirs = litestream_restore(store, url, tmp_path / f"theirs-{txid}.db", txid)
        assert dump(theirs) == expected, f"litestream restore at {txid}"


def build_history(con, db, rng, steps):
    """Random commits; returns {txid: dump} after each."""
    recorded = {}
    for _ in range(steps):
        random_workload(con, rng, 1)
        recorded[txid_of(con, db)] = dump(db)
    return recorded


@pytest.mark.parametrize("kind", STORES)
def test_agent_loop_rollback(connect, tmp_path, monkeypatch, kind):
    """Record S, break things, roll back to S: the database is S again, and the replica
    restores to S at the new TXID and to the broken state just before it (ours and
    Litestream's restore), and replication carries on."""
    store = use_store(monkeypatch, kind, tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    build_history(con, db, random.Random(kind), 8)
    good_txid, good = txid_of(con, db), dump(db)
    # The agent's destructive changes: a dropped table, a mass update, a schema change.
    con.execute("create table notes(id integer primary key, body text)")
    con.executemany("insert into notes(body) values(?)", [(f"note {i}" * 30,) for i in range(300)])
    con.execute("update t set v = zeroblob(100), k = -k")
    con.execute("drop index t_k")
    con.execute("alter table t add column extra text default 'x'")
    con.execute("drop table t")
    broken_txid, broken = txid_of(con, db), dump(db)
    assert broken != good
    # A reader in the middle of a read transaction keeps its snapshot until it ends.
    reader = open_replicated(connect, db, url, **{"min-interval": "0"})
    reader.execute("begin")
    assert reader.execute("select count(*) from notes").fetchone()[0] == 300

    summary = rollback(con, good_txid)

    assert summary["target_txid"] == f"{good_txid:016x}" and summary["from_txid"] == f"{broken_txid:016x}"
    assert summary["txid"] == f"{broken_txid + 1:016x}" and summary["shipped"], summary
    assert not summary["whole_database"], summary
    assert dump(db) == good
    assert reader.execute("select count(*) from notes").fetchone()[0] == 300, "snapshot kept"
    reader.execute("commit")
    assert reader.execute("select count(*) from sqlite_schema where name = 'notes'").fetchone()[0] == 0
    assert reader.execute("select count(*) from t").fetchone()[0] == good.count("INSERT INTO \"t\"")
    reader.close()
    # History is kept: both states restore, with both tools.
    boot = connect()
    assert_both_restore(boot, store, url, tmp_path,
                        {broken_txid: broken, broken_txid + 1: good, None: good})
    # Replication carries on from the rollback.
    con.execute("insert into t(k, v) values(4242, 'after the rollback')")
    after_txid, after = txid_of(con, db), dump(db)
    assert after_txid == broken_txid + 2
    restore(boot, url, tmp_path / "after.db")
    assert dump(tmp_path / "after.db") == after
    con.close()


def test_rollback_to_timestamp_and_back_again(connect, tmp_path):
    """A timestamp target; then rolling back the rollback (history is never rewritten)."""
    db = tmp_path / "app.db"
    url = f"file://{tmp_path}/replica"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    con.execute("create table t(id integer primary key, v text)")
    con.executemany("insert into t(v) values(?)", [(f"row {i}",) for i in range(500)])
    first_txid, first = txid_of(con, db), dump(db)
    time.sleep(0.05)
    # One reading of the clock: seconds and milliseconds read apart could straddle a second
    # and name a time up to a second earlier (before the first commit: a flaky failure).
    now_ms = int(time.time() * 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_ms // 1000)) + f".{now_ms % 1000:03d}Z"
    time.sleep(0.05)
    con.execute("delete from t where id % 3 = 0")
    con.execute("vacuum")  # the database shrinks: the rollback must grow it back
    shrunk_txid, shrunk = txid_of(con, db), dump(db)
    summary = rollback(con, stamp)
    assert summary["target_txid"] == f"{first_txid:016x}", summary
    assert dump(db) == first
    # Roll the rollback back: to the shrunk state.
    rollback(con, shrunk_txid)
    assert dump(db) == shrunk
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    # Already at the target: nothing to write.
    same = rollback(con, txid_of(con, db))
    assert same["pages"] == 0 and same["txid"] is None, same
    out = tmp_path / "latest.db"
    restore(connect(), url, out)
    assert dump(out) == shrunk
    con.close()


@pytest.mark.parametrize("journal_mode", ["delete", "truncate", "persist"])
def test_rollback_in_rollback_journal_modes(connect, tmp_path, journal_mode):
    """Pages rewritten in place behind a hot journal: other connections wait for the
    exclusive lock, then see the target state; both restores agree."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute(f"pragma journal_mode={journal_mode}")
    recorded = build_history(con, db, random.Random(journal_mode), 6)
    target = sorted(recorded)[2]
    con.execute("create table extra(x)")
    con.execute("insert into extra values(randomblob(50000))")
    broken_txid, broken = txid_of(con, db), dump(db)
    other = open_replicated(connect, db, url, **{"min-interval": "0"})
    assert other.execute("select count(*) from extra").fetchone()[0] == 1  # caches pages
    summary = rollback(con, target)
    assert summary["txid"] == f"{broken_txid + 1:016x}" and summary["shipped"], summary
    assert dump(db) == recorded[target]
    assert not (tmp_path / "app.db-journal").exists() or (tmp_path / "app.db-journal").read_bytes()[:8] != bytes.fromhex("d9d505f920a163d7")
    # The other connection drops its cache (the change counter moved).
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        other.execute("select count(*) from extra").fetchone()
    assert con.execute("pragma journal_mode").fetchone()[0] == journal_mode
    assert_both_restore(connect(), store, url, tmp_path, {broken_txid: broken, None: recorded[target]})
    con.execute("insert into t(k, v) values(5, 'after')")
    assert txid_of(con, db) == broken_txid + 2
    other.close()
    con.close()


def test_rollback_refuses_what_it_cannot_do_safely(connect, tmp_path):
    db = tmp_path / "app.db"
    url = f"file://{tmp_path}/replica"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    recorded = build_history(con, db, random.Random(7), 6)
    current, before = txid_of(con, db), dump(db)
    # Inside a transaction.
    con.execute("begin")
    with pytest.raises(sqlite3.OperationalError, match="inside a transaction"):
        rollback(con, min(recorded))
    con.execute("rollback")
    # A target in the future, or not a target at all.
    with pytest.raises(sqlite3.OperationalError, match="after the current TXID"):
        rollback(con, current + 5)
    with pytest.raises(sqlite3.OperationalError, match="not a TXID"):
        rollback(con, "yesterday-ish")
    # Beyond retention: the files that made the early TXIDs restorable are gone.
    l0 = tmp_path / "replica" / "ltx" / "0"
    early = sorted(recorded)[2]
    for txid in range(2, early + 1):
        (l0 / f"{txid:016x}-{txid:016x}.ltx").unlink()
    with pytest.raises(sqlite3.OperationalError, match="outside retention|no files"):
        rollback(con, early - 1)
    assert dump(db) == before
    # Not a litestream database.
    plain = connect(str(tmp_path / "plain.db"))
    plain.execute("create table x(y)")
    with pytest.raises(sqlite3.OperationalError, match="not opened with vfs=litestream"):
        rollback(plain, 1)
    # A journal kept only in memory could not make the rollback crash-safe.
    other = open_replicated(connect, tmp_path / "journal.db", f"file://{tmp_path}/replica-j")
    other.execute("pragma journal_mode=memory")
    other.execute("create table x(y)")
    sync(other)
    with pytest.raises(sqlite3.OperationalError, match="keeps no journal on disk"):
        rollback(other, 1)
    # After all that the database replicates on as before.
    con.execute("insert into t(k, v) values(1, 'still fine')")
    assert txid_of(con, db) == current + 1
    con.close()
    other.close()


def test_rollback_refused_without_the_lease(connect, tmp_path):
    """Another writer holds the destination's lease: the rollback could never ship, so it
    refuses at once and changes nothing."""
    url = f"file://{tmp_path}/replica"
    a = open_replicated(connect, tmp_path / "a.db", url, **{"min-interval": "0"})
    a.execute("create table t(x)")
    a.execute("insert into t values(1)")
    sync(a)
    b = open_replicated(connect, tmp_path / "b.db", url, **{"min-interval": "0"})
    b.execute("pragma journal_mode=wal")
    b.execute("create table u(y)")
    before = dump(tmp_path / "b.db")
    t0 = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="does not hold the lease.*held by"):
        rollback(b, 1)
    assert time.monotonic() - t0 < 10
    assert dump(tmp_path / "b.db") == before
    b.close()
    a.close()


@pytest.fixture
def switchable_store():
    """moto behind a proxy that can be told to refuse every request, or only writes."""
    for url, handler in proxied_moto(()):
        handler.refuse = None
        original = handler._forward

        def forward(self, original=original):
            refuse = type(self).refuse
            if refuse == "all" or (refuse == "writes" and self.command in ("PUT", "POST", "DELETE")):
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                body = b"<Error><Code>AccessDenied</Code><Message>refused by the test</Message></Error>"
                self.send_response(403)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            original(self)

        handler.do_GET = handler.do_PUT = handler.do_POST = handler.do_DELETE = handler.do_HEAD = forward
        yield url, handler


def test_rollback_on_a_store_that_refuses(connect, tmp_path, monkeypatch, switchable_store):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    endpoint, handler = switchable_store
    url = f"s3://bkt/app.db?endpoint={endpoint}&region=us-east-1"
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0", "lease": "off"})
    con.execute("pragma journal_mode=wal")
    recorded = build_history(con, db, random.Random(3), 5)
    target = sorted(recorded)[1]
    current, before = txid_of(con, db), dump(db)
    # A store refusing everything: the rollback cannot read history, changes nothing.
    handler.refuse = "all"
    with pytest.raises(sqlite3.OperationalError, match="nothing was changed"):
        rollback(con, target)
    assert dump(db) == before
    # A store refusing writes: the rollback happens locally and says it is not shipped yet.
    handler.refuse = "writes"
    summary = rollback(con, target)
    assert not summary["shipped"] and "AccessDenied" in summary["error"], summary
    assert summary["txid"] == f"{current + 1:016x}"
    assert dump(db) == recorded[target]
    # The store comes back: the rollback ships like any transaction.
    handler.refuse = None
    assert txid_of(con, db) == current + 1
    out = tmp_path / "out.db"
    restore(connect(), url, out)
    assert dump(out) == recorded[target]
    con.close()


@pytest.mark.parametrize("kind", STORES)
def test_fork_at_several_targets(connect, tmp_path, monkeypatch, kind):
    store = use_store(monkeypatch, kind, tmp_path)
    src = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, src, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    recorded = {txid_of(con, db): dump(db)}
    assert list(recorded) == [1], "TXID 1 is the first snapshot"
    recorded.update(build_history(con, db, random.Random(kind), 8))
    txids = sorted(recorded)
    boot = connect()
    forks = {}
    for name, target in (("first", txids[0]), ("middle", txids[4]), ("hex", f"{txids[6]:016x}"), ("latest", None)):
        dst = store.url(f"fork-{name}.db")
        summary = fork(boot, src, dst, target)
        expected_txid = txids[-1] if target is None else int(str(target), 16) if isinstance(target, str) else target
        assert summary["txid"] == f"{expected_txid:016x}", summary
        # One snapshot, at the target.
        assert level_files(store, dst, 9) == [f"{1:016x}-{expected_txid:016x}.ltx"]
        # A target that is one file (TXID 1; or a compaction that ran meanwhile) is copied by
        # the store, nothing passing through this process; several files are merged here.
        assert summary["server_side_copy"] == (summary["files"] == 1), summary
        if summary["server_side_copy"]:
            assert summary["bytes_downloaded"] == 0 and summary["bytes_copied_server_side"] > 0, summary
        else:
            assert summary["bytes_uploaded"] > 0, summary
        if name == "first":
            assert summary["server_side_copy"], summary
        (tmp_path / name).mkdir()
        assert_both_restore(boot, store, dst, tmp_path / name, {None: recorded[expected_txid]})
        forks[name] = (dst, expected_txid)
    # The replica VFS reads a fork at once.
    dst, txid = forks["middle"]
    quoted = urllib.parse.quote(dst, safe="")
    reader = sqlite3.connect(f"file:{tmp_path}/r.db?vfs=litestream-replica&replica={quoted}", uri=True)
    assert "\n".join(reader.iterdump()) == recorded[txid]
    reader.close()
    # A non-empty destination is refused.
    with pytest.raises(sqlite3.OperationalError, match="needs an empty destination"):
        fork(boot, src, dst)
    # Independence: the fork's writer and the source's writer never see each other.
    node = tmp_path / "fork-node.db"
    restore(boot, dst, node)
    fcon = open_replicated(connect, node, dst, **{"min-interval": "0"})
    fcon.execute("insert into t(k, v) values(777, 'only in the fork')")
    assert txid_of(fcon, node) == txid + 1
    fork_state = dump(node)
    con.execute("insert into t(k, v) values(888, 'only in the source')")
    source_state = dump(db)
    txid_of(con, db)
    restore(boot, src, tmp_path / "src-latest.db")
    restore(boot, dst, tmp_path / "fork-middle-now.db")
    assert dump(tmp_path / "src-latest.db") == source_state
    assert dump(tmp_path / "fork-middle-now.db") == fork_state
    fcon.close()
    con.close()


CRASHING_ROLLBACK = r"""
import json, os, random, sqlite3, sys, urllib.parse
sys.path.insert(0, sys.argv[5])
from helpers import dump, random_workload
ext, db, url, mode = sys.argv[1:5]
boot = sqlite3.connect(":memory:"); boot.enable_load_extension(True); boot.load_extension(ext)
con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}&min-interval=0", uri=True, isolation_level=None)
con.execute(f"pragma journal_mode={mode}")
recorded = {}
rng = random.Random(mode)
for _ in range(5):
    random_workload(con, rng, 1, allow_vacuum=False)
    txid = int(json.loads(con.execute("select litestream_sync()").fetchone()[0])[db], 16)
    recorded[txid] = dump(db)
con.execute("insert into t(k, v) select k, randomblob(2000) from t")
con.execute("drop index t_k")
txid = int(json.loads(con.execute("select litestream_sync()").fetchone()[0])[db], 16)
recorded[txid] = dump(db)
print(json.dumps({"recorded": recorded, "target": sorted(recorded)[1], "broken": txid}), flush=True)
os.environ["LITESTREAM_CRASH_AT"] = sys.argv[6]
con.execute("select litestream_rollback(?)", (sorted(recorded)[1],)).fetchone()
print("not reached", flush=True)
"""


@pytest.mark.parametrize("mode,point", [("wal", "wal-frames"), ("delete", "journal-page"), ("persist", "journal-page")])
def test_rollback_killed_midway_is_all_or_nothing(ext_path, connect, tmp_path, mode, point):
    """The process dies in the middle of a rollback: SQLite's own recovery gives the whole
    rollback (WAL: the commit frame was written) or none of it (journal: pages half
    written), never a mix; replication then carries on to a replica equal to the database."""
    import subprocess
    import sys
    db = tmp_path / "app.db"
    url = f"file://{tmp_path}/replica"
    child = subprocess.run([sys.executable, "-c", CRASHING_ROLLBACK, ext_path, str(db), url, mode,
                            str(ROOT / "python-tests"), point], capture_output=True, text=True, timeout=120)
    assert child.returncode != 0 and "not reached" not in child.stdout, child.stdout + child.stderr
    info = json.loads(child.stdout.splitlines()[0])
    recorded = {int(k): v for k, v in info["recorded"].items()}
    expected = recorded[info["target"]] if mode == "wal" else recorded[info["broken"]]
    # Plain SQLite recovers (rebuilds the WAL index / plays the hot journal back).
    if mode != "wal":
        assert (tmp_path / "app.db-journal").exists(), "the crash left a hot journal"
    plain = sqlite3.connect(db)
    plain.execute("select count(*) from sqlite_schema").fetchone()
    plain.close()
    assert dump(db) == expected
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("insert into t(k, v) values(1, 'after the crash')")
    sync(con)
    after = dump(db)
    out = tmp_path / "out.db"
    restore(connect(), url, out)
    assert dump(out) == after
    con.close()
