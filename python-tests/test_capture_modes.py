"""Capture in every mode: the state before the first commit through the VFS gets a TXID, an
exclusive-locking connection replicates, a shrinking rollback-journal commit restores
without junk pages, and a capture step that fails never skips SQLite's own write."""
import contextlib
import json
import os
import shutil
import sqlite3
import time
import urllib.parse

import pytest

from helpers import FaultyStore, Store, dump, litestream_restore
from test_replication import open_replicated, sync
from test_restore import restore


def status_of(con, db):
    doc = json.loads(con.execute("select litestream_status()").fetchone()[0])
    return next(d for d in doc["databases"] if d["path"] == str(db))


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_state_written_without_the_vfs_gets_its_own_txid(connect, tmp_path, journal_mode):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    plain = sqlite3.connect(db, isolation_level=None)
    plain.execute(f"pragma journal_mode={journal_mode}")
    plain.execute("pragma wal_autocheckpoint=0")
    plain.execute("create table keep(x)")
    plain.execute("insert into keep values('precious')")
    before = dump(db)
    # WAL mode: the table lives only in WAL frames written without the extension.
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("drop table keep")
    latest = int(sync(con)[str(db)], 16)
    plain.close()
    assert latest >= 2, "the drop must not be folded into the first snapshot"
    out = tmp_path / "before.db"
    restore(con, url, out, latest - 1)
    assert dump(out) == before
    assert dump(litestream_restore(store, url, tmp_path / "theirs.db", latest - 1)) == before
    con.close()


@pytest.mark.parametrize("inserts", [0, 20])
@pytest.mark.parametrize("journal_mode", ["delete", "persist", "truncate", "wal"])
def test_exclusive_locking_mode_from_the_start_replicates(connect, tmp_path, journal_mode, inserts):
    """With inserts=0 the database's only commit (CREATE TABLE, made before the replica's
    position was known) left the first snapshot due, and the lock our read needs is held by
    the connection for good: in rollback-journal modes nothing ever replicated, and the sync
    timed out with no error in the status."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma locking_mode=exclusive")
    con.execute(f"pragma journal_mode={journal_mode}")
    con.execute("create table t(x)")
    for i in range(inserts):
        con.execute("insert into t values(?)", (i,))
    sync(con, 10000)
    out = tmp_path / "out.db"
    restore(con, url, out)
    con2 = sqlite3.connect(out)
    assert con2.execute("select count(*) from t").fetchone()[0] == inserts
    con2.close()
    # Still held, and still replicating: one more commit arrives too.
    con.execute("insert into t values('after')")
    sync(con, 10000)
    assert dump(restore_to(con, url, tmp_path / "again.db")) == dump_through(con)
    assert dump(litestream_restore(store, url, tmp_path / "theirs.db")) == dump_through(con)
    con.close()


@pytest.mark.parametrize("order", ["mode-first", "lock-first"])
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_exclusive_commits_made_before_the_replicas_position_is_known_replicate(connect, tmp_path, monkeypatch, journal_mode, order):
    """The store answers slowly at first (every request 1 s late): every commit comes before
    the replica's position is read, so none can take the first snapshot in place, and the
    connection holds its lock for good (locking_mode=EXCLUSIVE), so no read transaction can
    either. Nothing replicated, in WAL mode too, and the sync timed out."""
    store = Store("moto", tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    faulty = FaultyStore(store.endpoint, every=1)
    try:
        faulty.set("delay")
        url = faulty.s3_url(store.bucket, f"{os.urandom(8).hex()}/app.db")
        db = tmp_path / "app.db"
        con = open_replicated(connect, db, url, **{"min-interval": "0"})
        pragmas = [f"pragma journal_mode={journal_mode}", "pragma locking_mode=exclusive"]
        for pragma in pragmas if order == "mode-first" else reversed(pragmas):
            con.execute(pragma)
        con.execute("create table t(x)")
        for i in range(3):
            con.execute("insert into t values(?)", (i,))
        assert not status_of(con, db)["remote_known"], "the store answered before the commits"
        faulty.set(None)
        sync(con, 20000)
        assert dump(restore_to(con, url, tmp_path / "out.db")) == dump_through(con)
        con.close()
        assert dump(litestream_restore(store, url, tmp_path / "theirs.db")) == dump(db)
    finally:
        faulty.close()


@pytest.mark.parametrize("journal_mode", ["wal", "persist"])
def test_an_exclusive_database_recreated_at_the_same_path_replicates(connect, tmp_path, journal_mode):
    """A database closed, deleted with its replica (not our metadata directory), and created
    again at the same path in the same process, now with locking_mode=EXCLUSIVE: its two commits came before the new
    replica's position was read, and in WAL mode the sync timed out for good (the held
    EXCLUSIVE lock keeps the snapshot's read transaction out)."""
    db = tmp_path / "app.db"
    replica = tmp_path / "replica"
    url = f"file://{replica}"
    for exclusive in (False, True, False, True):
        for f in (db, tmp_path / "app.db-wal", tmp_path / "app.db-shm", tmp_path / "app.db-journal"):
            if f.exists():
                f.unlink()
        shutil.rmtree(replica, ignore_errors=True)  # our metadata directory is left, as an app would
        con = open_replicated(connect, db, url)
        con.execute(f"pragma journal_mode={journal_mode}")
        if exclusive:
            con.execute("pragma locking_mode=exclusive")
        con.execute("pragma journal_size_limit=0")
        con.execute("create table t(x)")
        con.execute("insert into t values(1)")
        sync(con, 10000)
        want = dump_through(con)
        con.close()
        out = tmp_path / f"out-{exclusive}.db"
        if out.exists():
            out.unlink()
        assert dump(restore_to(connect(), url, out)) == want


def restore_to(con, url, out):
    restore(con, url, out)
    return out


def dump_through(con):
    """The logical content of a database as its own connection sees it (its lock may be held
    for good: no other connection can read it)."""
    return "\n".join(con.iterdump())


@pytest.mark.parametrize("how", ["vacuum", "auto_vacuum"])
@pytest.mark.parametrize("journal_mode", ["delete", "truncate", "persist"])
def test_a_shrinking_commit_restores_to_the_same_size(connect, tmp_path, how, journal_mode):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    if how == "auto_vacuum":
        con.execute("pragma auto_vacuum=full")
    con.execute(f"pragma journal_mode={journal_mode}")
    con.execute("create table t(x)")
    con.execute("insert into t select randomblob(3000) from generate_series(1, 200)"
                if False else "with recursive n(i) as (select 1 union all select i+1 from n where i < 200) "
                "insert into t select randomblob(3000) from n")
    sync(con)
    con.execute("delete from t where rowid > 20")
    if how == "vacuum":
        con.execute("vacuum")
    latest = int(sync(con)[str(db)], 16)
    pages = con.execute("pragma page_count").fetchone()[0]
    assert os.path.getsize(db) == pages * 4096
    out = tmp_path / "out.db"
    restore(con, url, out, latest)
    assert os.path.getsize(out) == os.path.getsize(db), "junk pages past the end"
    assert dump(out) == dump(db)
    theirs = litestream_restore(store, url, tmp_path / "theirs.db")
    assert os.path.getsize(theirs) == os.path.getsize(db)
    con.close()


def test_a_failed_capture_step_never_skips_sqlites_write(connect, tmp_path):
    """The store is unreachable, so WAL restarts spool what is unshipped; the spool cannot be
    written (a file stands where its directory should be). SQLite's own writes must still all
    happen: a plain sqlite3 reopening the database sees every committed row."""
    db = tmp_path / "app.db"
    meta = tmp_path / ".app.db-litestream"
    meta.mkdir()
    (meta / "spool").write_text("not a directory")
    url = "s3://bucket/app.db?endpoint=http://127.0.0.1:9&region=us-east-1"
    con = open_replicated(connect, db, url, lease="off")
    con.execute("pragma journal_mode=wal")
    con.execute("pragma wal_autocheckpoint=5")  # many WAL restarts
    con.execute("create table t(x)")
    for i in range(300):
        con.execute("insert into t values(randomblob(2000))")
    st = json.loads(con.execute("select litestream_status()").fetchone()[0])
    # A crash now: copy the files as they are (no close, no checkpoint).
    for name in ("app.db", "app.db-wal"):
        if (tmp_path / name).exists():
            shutil.copy(tmp_path / name, tmp_path / f"crash-{name}")
    check = sqlite3.connect(tmp_path / "crash-app.db")
    assert check.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert check.execute("select count(*) from t").fetchone()[0] == 300
    check.close()
    db_status = next(d for d in st["databases"] if d["path"] == str(db))
    assert db_status["last_error"], "the failing spool must show in the status"
    con.close()


@pytest.mark.parametrize("checkpoint", ["truncate", "restart", "passive", "delete-journal"])
def test_a_full_disk_loses_no_commit_and_the_replica_heals(connect, tmp_path, checkpoint):
    """The database (and its metadata directory) on a 3 MB tmpfs: large rows and (WAL) a
    checkpoint every 20 commits, or (DELETE journal mode) none, until SQLITE_FULL. Every commit
    SQLite reported is still there, and once space is back the replica restores to exactly
    the local database."""
    import subprocess
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        store = Store("file", tmp_path)
        url = store.url("app.db")
        db = small / "app.db"
        filler = small / "filler"
        filler.write_bytes(b"\0" * 512 * 1024)
        con = open_replicated(connect, db, url, **{"min-interval": "0"})
        wal = checkpoint != "delete-journal"
        con.execute(f"pragma journal_mode={'wal' if wal else 'delete'}")
        con.execute("create table t(id integer primary key, v blob)")
        committed = 0
        with pytest.raises(sqlite3.OperationalError, match="full"):
            for i in range(100000):
                con.execute("insert into t(v) values(randomblob(20000))")
                committed += 1
                if wal and i % 20 == 19:
                    con.execute(f"pragma wal_checkpoint({checkpoint})")
        assert committed > 20
        filler.unlink()  # space is back
        sync(con, 60000)
        assert con.execute("select count(*) from t").fetchone()[0] == committed
        out = tmp_path / "out.db"
        restore(con, url, out)
        assert dump(out) == dump(db)
        con.close()
        check = sqlite3.connect(db)
        assert check.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert check.execute("select count(*) from t").fetchone()[0] == committed
        check.close()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_full_replica_directory_loses_nothing_and_heals(connect, tmp_path, journal_mode):
    """The replica (file://) on a 2 MB tmpfs that fills up while the database keeps growing:
    every commit succeeds locally, the status names the full disk, and once space is back the
    replica catches up: our restore and `litestream restore` give exactly the local database."""
    import subprocess
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        url = f"file://{small}/replica"
        db = tmp_path / "app.db"
        filler = small / "filler"
        filler.write_bytes(b"\0" * (1536 * 1024))
        con = open_replicated(connect, db, url, **{"min-interval": "0"})
        con.execute(f"pragma journal_mode={journal_mode}")
        con.execute("create table t(id integer primary key, v blob)")
        sync(con)
        for i in range(150):  # about 3 MB of rows: more than the replica's disk holds
            con.execute("insert into t(v) values(randomblob(20000))")
            if journal_mode == "wal" and i % 20 == 19:
                con.execute("pragma wal_checkpoint(truncate)")
        assert con.execute("select count(*) from t").fetchone()[0] == 150
        deadline = time.time() + 30
        while "No space left" not in (status_of(con, db)["last_error"] or ""):
            assert time.time() < deadline, f"the full replica disk is not in the status: {status_of(con, db)}"
            time.sleep(0.1)
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        sync(con, 60000)
        assert status_of(con, db)["last_error"] is None
        expected = dump(db)
        out = tmp_path / "out.db"
        restore(con, url, out)
        assert dump(out) == expected
        con.close()
        assert dump(litestream_restore(Store("file", tmp_path), url, tmp_path / "theirs.db")) == expected
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


@contextlib.contextmanager
def database_the_spool_has_no_room_for(tmp_path, journal_mode):
    """A 24 MB database, written without the extension, on a 40 MB filesystem of its own (a
    tmpfs): its spool cannot hold a full snapshot. Yields the database's path."""
    import subprocess
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(small)], check=True)
    try:
        db = small / "app.db"
        plain = sqlite3.connect(db, isolation_level=None)
        plain.execute("create table t(id integer primary key, v blob)")
        plain.execute("with recursive n(i) as (select 1 union all select i+1 from n where i < 1200) "
                      "insert into t(v) select randomblob(20000) from n")
        plain.execute(f"pragma journal_mode={journal_mode}")
        plain.close()
        free = os.statvfs(small)
        assert free.f_bavail * free.f_frsize < os.path.getsize(db), "the spool must not fit"
        yield db
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.parametrize("kind", ["file", "moto"])
@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_snapshot_the_spool_has_no_room_for_streams_from_the_database(connect, tmp_path, monkeypatch, kind, journal_mode):
    """#12 case 10: a 24 MB database on a 40 MB filesystem, so its spool cannot hold a full
    snapshot. The first snapshot, a 9 MB transaction, and the resync after a plain-SQLite
    process's commits are streamed from the database to the store: replication never stalls,
    the application's commits never meet a disk the spool filled, and both restores give the
    local database."""
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    with database_the_spool_has_no_room_for(tmp_path, journal_mode) as db:
        url = store.url("app.db")
        con = open_replicated(connect, db, url, **{"min-interval": "0"})
        con.execute("insert into t(v) values(randomblob(100))")
        sync(con, 120000)
        assert status_of(con, db)["last_error"] is None
        # A transaction too big for memory (over 8 MiB of pages) and for the spool's room:
        # its pages stay pending and a streamed full snapshot ships them.
        con.execute("update t set v = randomblob(20000) where id <= 450")
        sync(con, 120000)
        assert status_of(con, db)["full_snapshots"] >= 2, status_of(con, db)
        # Commits of a process without the extension, out of the WAL before the owner reads
        # them (DELETE mode: always a change it can only see whole): a resync snapshot.
        plain = sqlite3.connect(db, isolation_level=None)
        plain.execute("update t set v = randomblob(20000) where id % 5 = 0")
        plain.execute("pragma wal_checkpoint(truncate)")
        plain.close()
        for i in range(20):
            con.execute("insert into t(v) values(randomblob(1000))")
        sync(con, 120000)
        st = status_of(con, db)
        assert st["last_error"] is None, st
        spool = db.parent / ".app.db-litestream" / "spool"
        if spool.exists():
            assert sum(f.stat().st_size for f in spool.iterdir()) < 8 << 20
        expected = dump(db)
        out = tmp_path / "out.db"
        restore(con, url, out)
        assert dump(out) == expected
        con.close()
        assert dump(litestream_restore(store, url, tmp_path / "theirs.db")) == expected


def test_a_checkpoint_waits_for_our_own_snapshot_read(connect, tmp_path):
    """The resync after a plain process's commit streams a snapshot (no spool room) inside a
    read transaction of ours. The application's commits go on meanwhile, and its checkpoints
    copy all of the WAL, as with no other reader: they wait for our read instead of stopping
    at its mark (SQLite's wal2.test counts the frames; in CI it once met such a read)."""
    store = Store("file", tmp_path)
    with database_the_spool_has_no_room_for(tmp_path, "wal") as db:
        url = store.url("app.db")
        con = open_replicated(connect, db, url, **{"min-interval": "0"})
        con.execute("insert into t(v) values(randomblob(100))")
        sync(con, 120000)
        cut_short, during_read = [], 0
        # A checkpoint may also miss the read (begin just after it, or while the status
        # is read): try again until one met it.
        for attempt in range(10):
            con.execute("pragma wal_checkpoint(truncate)")
            snapshots = status_of(con, db)["full_snapshots"]
            # A WAL generation this process did not see begin: answered with a full snapshot.
            plain = sqlite3.connect(db, isolation_level=None)
            plain.execute("update t set v = randomblob(20000) where id % 50 = ?", (attempt,))
            plain.close()
            deadline = time.monotonic() + 120
            while True:
                assert time.monotonic() < deadline, "the plain commit was never snapshotted"
                con.execute("insert into t(v) values(randomblob(100))")
                st = status_of(con, db)
                busy, frames, copied = con.execute("pragma wal_checkpoint").fetchone()
                during_read += st["snapshot_read_since"] is not None
                if busy or copied != frames:
                    cut_short.append((busy, frames, copied))
                if st["full_snapshots"] != snapshots:
                    break
            if during_read:
                break
        assert during_read > 0, "no checkpoint met our snapshot's read"
        assert cut_short == []
        assert status_of(con, db)["snapshot_read_since"] is None
        sync(con, 120000)
        expected = dump(db)
        out = tmp_path / "out.db"
        restore(con, url, out)
        assert dump(out) == expected
        con.close()


@pytest.mark.parametrize("limit", [0, 20000])
def test_a_wal_trimmed_to_its_size_limit_is_followed_without_resyncing(connect, tmp_path, limit):
    """With `journal_size_limit`, SQLite trims a restarted WAL after a commit: the stale
    frames past the live generation are cut off, the generation goes on. That trim was taken
    for a reset, and every restart after it cost a full snapshot (94 in 200 commits)."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    con.execute(f"pragma journal_size_limit={limit}")
    con.execute("pragma wal_autocheckpoint=20")  # ~80 KB WALs: longer than either limit
    con.execute("create table t(v)")
    for i in range(120):
        con.execute("insert into t values(randomblob(3000))")
        if i % 30 == 0:
            sync(con)
    sync(con)
    st = status_of(con, db)
    assert (st["full_snapshots"], st["last_error"]) == (1, None), st
    expected = dump(db)
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    restore(con, url, ours)
    assert dump(ours) == expected
    assert dump(litestream_restore(store, url, theirs)) == expected
    con.close()


SPILLING_TRANSACTION = """
import sqlite3, sys, urllib.parse
ext, db, url, savepoint = sys.argv[1:5]
if ext:
    boot = sqlite3.connect(":memory:")
    boot.enable_load_extension(True)
    boot.load_extension(ext)
    target = f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}&min-interval=0"
else:
    target = f"file:{db}"
con = sqlite3.connect(target, uri=True, isolation_level=None)
con.execute("pragma cache_size=10")
con.execute("begin")
for _ in range(5):
    con.execute("insert into t select randomblob(900) from t")
if savepoint == "1":
    con.execute("savepoint s")
    con.execute("insert into t select randomblob(900) from t")
    con.execute("rollback to s")
    con.execute("insert into t select randomblob(900) from t where rowid % 3 = 0")
con.execute("commit")
con.close()
"""


@pytest.mark.parametrize("savepoint", [False, True])
@pytest.mark.parametrize("writer", ["ours", "follower", "plain"])
def test_a_transaction_rewriting_its_spilled_frames_is_captured_without_resyncing(
        connect, ext_path, tmp_path, writer, savepoint):
    """A transaction bigger than the page cache spills pages to the WAL before it commits;
    a page spilled twice is rewritten in place, and SQLite then writes every later frame with
    zero salts and checksums, filled in once the commit frame is written. Those frames were
    taken for another process's WAL generation: every such transaction cost a full snapshot,
    and the snapshot's read at the last close left an empty -wal and -shm behind (SQLite's
    wal-11.9, walro-1.3.2). By this process, a follower with the extension, or a process
    without it."""
    import subprocess
    import sys
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma page_size=1024")
    con.execute("pragma journal_mode=wal")
    con.execute("create table t(x primary key)")
    con.execute("insert into t values(randomblob(900))")
    con.execute("pragma wal_checkpoint")
    sync(con)
    if writer == "ours":
        con.execute("pragma cache_size=10")
        con.execute("begin")
        for _ in range(5):
            con.execute("insert into t select randomblob(900) from t")
        if savepoint:
            con.execute("savepoint s")
            con.execute("insert into t select randomblob(900) from t")
            con.execute("rollback to s")
            con.execute("insert into t select randomblob(900) from t where rowid % 3 = 0")
        con.execute("commit")
    else:
        ext = ext_path if writer == "follower" else ""
        subprocess.run([sys.executable, "-c", SPILLING_TRANSACTION, ext, str(db), url, "1" if savepoint else "0"],
                       check=True, timeout=60)
    con.execute("insert into t values(randomblob(900))")
    sync(con)
    st = status_of(con, db)
    # A process without the extension restarted the WAL and handed nothing over: one resync
    # (by design: frames it wrote and checkpointed before the restart are unknowable).
    resyncs = 1 if writer == "plain" else 0
    assert (st["full_snapshots"], st["last_error"]) == (1 + resyncs, None), st
    expected = dump(db)
    assert expected.count("INSERT INTO") > 30
    restore(con, url, tmp_path / "ours.db")
    assert dump(tmp_path / "ours.db") == expected
    con.execute("pragma wal_checkpoint")
    con.close()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("app.db-")] == []
    assert dump(litestream_restore(store, url, tmp_path / "theirs.db")) == expected


def catches_up_and_restores(con, store, url, db, tmp_path):
    """The replica catches up (status clear) and both restores give exactly the local
    database; closes `con`."""
    sync(con, 60000)
    assert status_of(con, db)["last_error"] is None, status_of(con, db)
    expected = dump(db)
    out = tmp_path / "out.db"
    restore(con, url, out)
    assert dump(out) == expected
    con.close()
    assert dump(litestream_restore(store, url, tmp_path / "theirs.db")) == expected


KILLED_WRITER = """
import sqlite3, sys, time, urllib.parse
ext, db, url, checkpoint = sys.argv[1:5]
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(ext)
con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}"
                      "&min-interval=0&lease-ttl=3s", uri=True, isolation_level=None)
wal = checkpoint != "delete-journal"
con.execute(f"pragma journal_mode={'wal' if wal else 'delete'}")
con.execute("create table t(id integer primary key, v blob)")
print(0, flush=True)
try:
    for i in range(100000):
        con.execute("insert into t(v) values(randomblob(20000))")
        print(i + 1, flush=True)  # SQLite reported this commit
        if wal and i % 20 == 19:
            con.execute(f"pragma wal_checkpoint({checkpoint})")
except sqlite3.OperationalError as e:
    print("FULL", e, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("checkpoint", ["truncate", "passive", "delete-journal"])
@pytest.mark.parametrize("store_state", ["up", "down"])
@pytest.mark.parametrize("kind", ["moto", "ceph"])
def test_a_writer_killed_at_a_full_disk_loses_no_commit(connect, ext_path, tmp_path, monkeypatch, checkpoint,
                                                         store_state, kind):
    """A replicating writer process fills its database's 3 MB filesystem until SQLITE_FULL
    (the store up, or down: every request answered 500), then is killed (SIGKILL). A plain
    sqlite3 sees every commit SQLite reported, in a sound database; once space is back and the
    store up, the next writer heals the replica to exactly the local database."""
    import signal
    import subprocess
    import sys
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    faulty = FaultyStore(store.endpoint, every=1)
    url = faulty.s3_url(store.bucket, f"{os.urandom(8).hex()}/app.db")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        db = small / "app.db"
        filler = small / "filler"
        filler.write_bytes(b"\0" * 512 * 1024)
        faulty.mode = "500" if store_state == "down" else None
        child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, ext_path, str(db), url, checkpoint],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=store.env())
        committed = None
        try:
            for line in child.stdout:
                if line.startswith("FULL"):
                    assert "full" in line, line
                    break
                committed = int(line)
            else:
                raise AssertionError(f"the writer ended before the disk was full: {child.stderr.read()}")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        assert committed > 20
        if store_state == "down":
            assert faulty.faults > 0, "the writer never met the store being down"
        check = sqlite3.connect(db)
        assert check.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert check.execute("select count(*) from t").fetchone()[0] == committed
        check.close()
        filler.unlink()
        subprocess.run(["mount", "-o", "remount,size=64m", str(small)], check=True)
        faulty.mode = None
        con = open_replicated(connect, db, url, **{"min-interval": "0", "lease-ttl": "3s"})
        assert con.execute("select count(*) from t").fetchone()[0] == committed
        catches_up_and_restores(con, store, url, db, tmp_path)
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_full_spool_with_the_store_down_loses_nothing_and_heals(connect, tmp_path, monkeypatch, journal_mode):
    """The metadata directory (spool, state, hand-offs) on a 1 MB filesystem of its own, the
    store down (every request answered 500) while 3 MB of commits are made: every commit
    succeeds locally, the status names the trouble, and once the store is back (the spool
    still full) the replica catches up to exactly the local database."""
    import subprocess
    store = Store("moto", tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    faulty = FaultyStore(store.endpoint, every=1)
    url = faulty.s3_url(store.bucket, f"{os.urandom(8).hex()}/app.db")
    db = tmp_path / "app.db"
    spool = tmp_path / ".app.db-litestream"
    spool.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(spool)], check=True)
    try:
        con = open_replicated(connect, db, url, **{"min-interval": "0"})
        con.execute(f"pragma journal_mode={journal_mode}")
        con.execute("create table t(id integer primary key, v blob)")
        sync(con)
        faulty.mode = "500"
        for i in range(150):
            con.execute("insert into t(v) values(randomblob(20000))")
            if journal_mode == "wal" and i % 20 == 19:
                con.execute("pragma wal_checkpoint(truncate)")
        assert con.execute("select count(*) from t").fetchone()[0] == 150
        deadline = time.time() + 30
        while status_of(con, db)["last_error"] is None:
            assert time.time() < deadline, f"the status says nothing: {status_of(con, db)}"
            time.sleep(0.1)
        assert faulty.faults > 0
        faulty.mode = None
        catches_up_and_restores(con, store, url, db, tmp_path)
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


@pytest.mark.parametrize("journal_mode", ["delete", "truncate", "persist"])
def test_a_new_database_whose_first_transaction_rolls_back_has_nothing_to_ship(connect, tmp_path, journal_mode):
    """The first transaction of a new database spills pages to the file (a cache too small
    for it), then rolls back: SQLite truncates the file to nothing again. That was captured
    as a commit of a database of no pages, which could never ship: every sync (and the last
    close) timed out."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute(f"pragma journal_mode={journal_mode}")
    con.execute("pragma cache_size=10")
    con.execute("begin")
    con.execute("create table t(v blob)")
    for _ in range(300):
        con.execute("insert into t values(randomblob(3000))")
    assert os.path.getsize(db) > 0, "the transaction spilled nothing to the file"
    con.execute("rollback")
    assert os.path.getsize(db) == 0
    sync(con, 5000)
    con.execute("create table t(v)")
    con.execute("insert into t values('after the rollback')")
    sync(con, 5000)
    assert dump(restore_to(con, url, tmp_path / "out.db")) == dump(db)
    con.close()


LEAVES_A_HOT_JOURNAL = """
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("pragma cache_size=10")
con.execute("begin")
for _ in range(300):
    con.execute("insert into t values(randomblob(3000))")
os._exit(0)  # mid-transaction, pages spilled: the journal is hot
"""

OPENS_AND_CLOSES = """
import sqlite3, sys, time, urllib.parse
ext, db, url = sys.argv[1:4]
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(ext)
con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}", uri=True)
began = time.monotonic()
con.close()
print(time.monotonic() - began)
"""


def test_the_last_close_does_not_wait_for_a_hot_journal_to_be_rolled_back(connect, tmp_path):
    """A database whose first snapshot is due, left with a hot journal by a writer that died
    mid-transaction, opened and closed unread: the snapshot's read transaction cannot roll
    the journal back (it is read-only), and at the last close no read of the application
    is coming to do it. The close waited out its 5 s; it now stops at once, says why, and
    the next connection that reads recovers the database and ships it."""
    import subprocess
    import sys
    db = tmp_path / "app.db"
    plain = sqlite3.connect(db)
    plain.execute("create table t(v blob)")
    plain.execute("insert into t values('committed')")
    plain.commit()
    plain.close()
    expected = dump(db)
    subprocess.run([sys.executable, "-c", LEAVES_A_HOT_JOURNAL, str(db)], check=True, timeout=60)
    assert os.path.getsize(str(db) + "-journal") > 0
    store = Store("file", tmp_path)
    url = store.url("app.db")
    env = dict(os.environ, LITESTREAM_LOG="warn")
    ext = os.environ["LITESTREAM_TEST_LIB"]
    child = subprocess.run([sys.executable, "-c", OPENS_AND_CLOSES, ext, str(db), url],
                           capture_output=True, text=True, env=env, timeout=60)
    assert child.returncode == 0, child.stderr
    assert "the next connection to read the database recovers it" in child.stderr, child.stderr
    assert "timed out" not in child.stderr, child.stderr
    assert os.path.exists(str(db) + "-journal"), "nothing read the database: the journal is still there"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    assert con.execute("select v from t").fetchall() == [("committed",)]
    sync(con, 5000)
    assert dump(restore_to(con, url, tmp_path / "out.db")) == expected
    con.close()
