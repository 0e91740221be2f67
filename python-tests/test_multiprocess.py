"""Several processes write one database: one (the owner) replicates it; the others, with or
without the extension, commit too. Every commit must reach the replica, whoever made it, in
every journal mode; a gap is answered with a full snapshot, never silently."""
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse

import pytest

from helpers import ROOT, Store, dump, litestream_restore, random_workload, yield_to_other_writers
from test_replication import open_replicated, sync
from test_restore import restore

HERE = os.path.dirname(__file__)


def child(store, ext_path, mode, db, url, seed, seconds, *extra):
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, "mp_writer.py"), mode, ext_path, str(db),
         urllib.parse.quote(url, safe=""), str(seed), str(seconds), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=store.env())


def finish(p):
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, f"writer failed: {err}"
    return int(out.split()[-1])


def status_of(con, db):
    doc = json.loads(con.execute("select litestream_status()").fetchone()[0])
    return next(d for d in doc["databases"] if d["path"] == str(db))


def open_as_owner(connect, tmp_path, journal_mode):
    """This process opens app.db first (so it owns it), replicating to a file:// replica:
    (store, url, db, connection)."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma busy_timeout=30000")
    con.execute(f"pragma journal_mode={journal_mode}")
    return store, url, db, con


def check_replica(con, store, url, db, tmp_path):
    """Both restores equal the local database, which is sound."""
    expected = dump(db)
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    for f in (ours, theirs):
        f.unlink(missing_ok=True)
    restore(con, url, ours)
    assert dump(ours) == expected
    assert dump(litestream_restore(store, url, theirs)) == expected


def write_wal_database_without_the_extension(db):
    """A WAL-mode database with one row, written by plain SQLite and closed: no -wal file."""
    plain = sqlite3.connect(db, isolation_level=None)
    plain.execute("pragma journal_mode=wal")
    plain.execute("create table t(x)")
    plain.execute("insert into t values('written without the extension')")
    plain.close()


@pytest.mark.parametrize("kind,journal_mode", [("file", "wal"), ("file", "delete"), ("file", "truncate"),
                                              ("file", "persist"), ("moto", "wal"), ("moto", "delete")])
@pytest.mark.parametrize("other", ["ext", "plain"])
def test_commits_of_another_process_reach_the_replica(connect, ext_path, tmp_path, monkeypatch, kind,
                                                      journal_mode, other):
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma busy_timeout=30000")
    con.execute(f"pragma journal_mode={journal_mode}")
    con.execute("pragma wal_autocheckpoint=20")
    rng = __import__("random").Random(f"{kind}{journal_mode}{other}")
    random_workload(con, rng, 5, allow_vacuum=False)
    sync(con)
    assert status_of(con, db)["role"] == "owner"
    # The other process writes alone, then both at once.
    finish(child(store, ext_path, other, db, url, 1, 1.5))
    p = child(store, ext_path, other, db, url, 2, 1.5)
    while p.poll() is None:
        random_workload(con, rng, 1, allow_vacuum=False)
        yield_to_other_writers()
    finish(p)
    sync(con)
    check_replica(con, store, url, db, tmp_path)
    # Only the other process commits last: the owner still notices without writing itself.
    finish(child(store, ext_path, other, db, url, 3, 0.5))
    sync(con)
    check_replica(con, store, url, db, tmp_path)
    st = status_of(con, db)
    assert st["last_error"] is None, st
    con.close()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_follower_hands_over_and_its_sync_waits_for_the_owner(connect, ext_path, tmp_path, journal_mode):
    store, url, db, con = open_as_owner(connect, tmp_path, journal_mode)
    random_workload(con, __import__("random").Random(7), 3, allow_vacuum=False)
    sync(con)
    before = status_of(con, db)
    # The follower's litestream_sync() returns once the owner has shipped its commits.
    finish(child(store, ext_path, "ext", db, url, 4, 1.0, "sync"))
    expected = dump(db)
    out = tmp_path / "after-follower.db"
    restore(con, url, out)
    assert dump(out) == expected
    # Hand-offs, not full snapshots: the owner never needed to resync.
    st = status_of(con, db)
    assert st["uploads"] > before["uploads"], st
    assert st["full_snapshots"] == before["full_snapshots"] == 1, (before, st)
    handoffs = tmp_path / ".app.db-litestream" / "handoff"
    if journal_mode != "wal":
        assert not handoffs.exists() or not [n for n in os.listdir(handoffs) if n.startswith("cc-")], \
            "hand-offs left behind after they were taken"
    con.close()


def test_a_follower_takes_over_when_the_owner_exits(connect, ext_path, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    # The first process to open is the owner; this one comes second and follows.
    owner = child(store, ext_path, "ext", db, url, 5, 2.0, "sync")
    import time
    deadline = time.time() + 30
    while not (tmp_path / ".app.db-litestream" / "owner.lock").exists():
        assert time.time() < deadline, "the owner never started"
        time.sleep(0.05)
    time.sleep(0.3)
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma busy_timeout=30000")
    assert status_of(con, db)["role"] == "follower"
    con.execute("create table if not exists mine(x)")
    con.execute("insert into mine values(1)")
    finish(owner)
    # The owner is gone: this process takes over and ships what is left.
    con.execute("insert into mine values(2)")
    sync(con)
    assert status_of(con, db)["role"] == "owner"
    check_replica(con, store, url, db, tmp_path)
    con.close()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_soak_several_writers_every_txid_restores(connect, ext_path, tmp_path, monkeypatch, journal_mode):
    """Two followers with the extension and one plain writer commit at random beside the
    owner; afterwards every TXID of the replica restores to a sound database, and the latest
    equals the local file."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    seconds = float(os.environ.get("LITESTREAM_MP_SOAK_SECONDS", "8"))
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma busy_timeout=30000")
    con.execute(f"pragma journal_mode={journal_mode}")
    con.execute("pragma wal_autocheckpoint=20")
    rng = __import__("random").Random(journal_mode)
    random_workload(con, rng, 3, allow_vacuum=False)
    procs = [child(store, ext_path, "ext", db, url, 10, seconds),
             child(store, ext_path, "ext", db, url, 11, seconds),
             child(store, ext_path, "plain", db, url, 12, seconds)]
    while any(p.poll() is None for p in procs):
        random_workload(con, rng, 1, allow_vacuum=False)
        yield_to_other_writers()
    assert sum(finish(p) for p in procs) > 10
    latest = int(sync(con)[str(db)], 16)
    check_replica(con, store, url, db, tmp_path)
    # Every TXID restores to a sound database (dump() runs integrity_check).
    for txid in range(1, latest + 1):
        out = tmp_path / f"t{txid}.db"
        restore(con, url, out, txid)
        dump(out)
        out.unlink()
    con.close()


# A follower: argv extension, database, replica URL, journal mode; then its statements.
FOLLOWER = """
import sqlite3, sys, urllib.parse
ext, db, url, mode = sys.argv[1:5]
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(ext)
con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}&min-interval=0",
                      uri=True, isolation_level=None, timeout=30)
con.execute(f"pragma journal_mode={mode}")
"""

SPILLED_ROLLBACK = FOLLOWER + """con.execute("pragma cache_size=5")  # the big transaction below spills pages into the file
con.execute("insert into u values('theirs')")  # a commit of this follower: handed over
con.execute("begin")
con.execute("update t set v = randomblob(2000)")
con.execute("rollback")  # puts the spilled pages back: no commit, nothing to hand over
con.close()
"""


def run_follower(script, store, ext_path, db, url, journal_mode):
    r = subprocess.run([sys.executable, "-c", script, ext_path, str(db), url, journal_mode],
                       capture_output=True, text=True, env=store.env(), timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("journal_mode", ["delete", "truncate", "persist"])
@pytest.mark.parametrize("who", ["owner", "follower"])
def test_a_rolled_back_transaction_that_spilled_is_no_commit(connect, ext_path, tmp_path, journal_mode, who):
    """A rollback puts spilled pages back without moving the change counter. The owner must
    still take the hand-offs of others' commits before it (they are not its own commit), and
    a follower must not hand it over under the counter of the commit before it."""
    store, url, db, con = open_as_owner(connect, tmp_path, journal_mode)
    con.execute("create table t(id integer primary key, v blob)")
    con.execute("create table u(x)")
    con.execute("insert into t(v) select randomblob(2000) from "
                "(with recursive n(i) as (select 1 union all select i + 1 from n where i < 200) select i from n)")
    sync(con)
    if who == "follower":
        run_follower(SPILLED_ROLLBACK, store, ext_path, db, url, journal_mode)
    else:
        # Another process's commit, then at once a spilled rollback of the owner's.
        r = subprocess.run([sys.executable, "-c",
                            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=30); "
                            "c.execute(\"insert into u values('theirs')\"); c.commit()", str(db)],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        con.execute("pragma cache_size=5")
        con.execute("begin")
        con.execute("update t set v = randomblob(2000)")
        con.execute("rollback")
    sync(con)
    check_replica(con, store, url, db, tmp_path)
    con.close()


EXCLUSIVE_FOLLOWER = FOLLOWER + """con.execute("pragma locking_mode=exclusive")
for table in ("a", "b", "c"):  # three commits in one hold of the lock: one counter step
    con.execute(f"insert into {table} values(randomblob(3000))")
con.close()
"""


@pytest.mark.parametrize("journal_mode", ["delete", "truncate", "persist"])
def test_a_follower_in_exclusive_locking_mode_hands_over_every_commit(connect, ext_path, tmp_path, journal_mode):
    """SQLite moves the change counter once per hold of the lock, not once per commit: a
    follower holding it over several commits hands all their pages over."""
    store, url, db, con = open_as_owner(connect, tmp_path, journal_mode)
    for table in ("a", "b", "c"):
        con.execute(f"create table {table}(v)")
    sync(con)
    run_follower(EXCLUSIVE_FOLLOWER, store, ext_path, db, url, journal_mode)
    sync(con)
    check_replica(con, store, url, db, tmp_path)
    assert status_of(con, db)["full_snapshots"] == 1, "handed over, not resynced"
    con.close()


def test_reopened_in_this_process_it_is_owned_at_once(connect, tmp_path):
    """The replicator of a closed connection is still finishing in the background when the
    database is opened again: it must not keep (or take back) ownership from the new one."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    for i in range(20):
        con = open_replicated(connect, db, url, **{"min-interval": "0"})
        assert status_of(con, db)["role"] == "owner", f"reopen {i}"
        con.execute("create table if not exists t(x)")
        con.execute("insert into t values(?)", (i,))
        sync(con)
        con.close()
    con = open_replicated(connect, db, url)
    check_replica(con, store, url, db, tmp_path)
    con.close()


LOCK_PROBE = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)
try:
    # Rollback-journal mode: the exclusive lock; WAL mode: leaving WAL needs it too.
    con.execute(sys.argv[2])
    print("taken")
except sqlite3.OperationalError as e:
    print(e)
"""


@pytest.mark.parametrize("journal_mode,probe", [("delete", "begin exclusive"),
                                                ("wal", "pragma journal_mode=delete")])
def test_closing_a_replicated_connection_keeps_the_process_locks(connect, tmp_path, journal_mode, probe):
    """SQLite's locks are POSIX locks, which closing any descriptor of the file drops for the
    whole process. A replicated connection closing (and its replicator finishing later) must
    leave the locks of the process's other connections alone: here a plain connection's read
    transaction, which must keep every other process from taking the exclusive lock."""
    store, url, db, con = open_as_owner(connect, tmp_path, journal_mode)
    con.execute("create table t(x)")
    con.execute("insert into t values(1)")
    sync(con)
    plain = sqlite3.connect(db, isolation_level=None)
    plain.execute("begin")
    assert plain.execute("select count(*) from t").fetchone() == (1,)
    con.close()
    # Once no replicator is left, everything it opened is closed (or, for the database file,
    # handed to SQLite's VFS to close when the last lock goes).
    boot = connect()
    deadline = time.time() + 30
    while json.loads(boot.execute("select litestream_status()").fetchone()[0])["closing"]:
        assert time.time() < deadline, "the replicator never finished"
        time.sleep(0.05)
    probe_out = subprocess.run([sys.executable, "-c", LOCK_PROBE, str(db), probe],
                               capture_output=True, text=True, timeout=60)
    assert probe_out.stdout.strip() == "database is locked", probe_out
    plain.execute("commit")
    plain.close()
    # And with the read transaction over, the lock is free.
    probe_out = subprocess.run([sys.executable, "-c", LOCK_PROBE, str(db), probe],
                               capture_output=True, text=True, timeout=60)
    assert probe_out.stdout.strip() == "taken", probe_out


REPLACED_FOLLOWER = FOLLOWER + """con.execute("insert into t values('new file, follower')")
try:
    con.execute("select litestream_sync(3000)").fetchone()
    print("synced")
except sqlite3.OperationalError as e:
    print(e)
"""


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_a_follower_on_a_replaced_database_file_is_told_not_lied_to(connect, ext_path, tmp_path, journal_mode):
    """Another file is renamed over the database while this process owns it (and keeps the old
    file open, as SQLite does). A process opening the path now writes another database than
    the one replicated: its litestream_sync() must fail and say why, never report success."""
    store, url, db, con = open_as_owner(connect, tmp_path, journal_mode)
    con.execute("create table t(v)")
    con.execute("insert into t values('old file')")
    sync(con)
    other = tmp_path / "other.db"
    o = sqlite3.connect(other)
    o.execute(f"pragma journal_mode={journal_mode}")
    o.execute("create table t(v)")
    o.execute("insert into t values('new file')")
    o.commit()
    o.close()
    os.replace(other, db)
    r = subprocess.run([sys.executable, "-c", REPLACED_FOLLOWER, ext_path, str(db), url, journal_mode],
                       capture_output=True, text=True, env=store.env(), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "was replaced by another file" in r.stdout, r.stdout
    con.close()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_an_empty_database_syncs_at_once_and_another_writers_first_commit_replicates(connect, tmp_path, journal_mode):
    """A new database opened through the VFS and not written yet has nothing to replicate:
    litestream_sync() succeeds at once (it waited for a snapshot that could not be taken and
    timed out; the last close waited 5 s). The first commit, made by a process without the
    extension, is then the replica's first snapshot."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    assert con.execute("select count(*) from sqlite_schema").fetchone()[0] == 0
    assert sync(con, 1000)[str(db)] == "0000000000000000"
    st = status_of(con, db)
    assert (st["last_error"], st["snapshot_read_since"]) == (None, None), st
    plain = sqlite3.connect(db, isolation_level=None)
    plain.execute(f"pragma journal_mode={journal_mode}")
    plain.execute("create table t(x)")
    plain.execute("insert into t values('first')")
    assert int(sync(con)[str(db)], 16) >= 1
    plain.close()
    check_replica(con, store, url, db, tmp_path)
    con.close()


def test_a_wal_database_without_its_wal_file_is_snapshotted_by_a_sync_before_any_read(connect, tmp_path):
    """A WAL-mode database a plain process wrote and closed (no -wal file left). Opened
    through the VFS, its first snapshot waits for the application's first read (our read
    transaction would create the -wal and -shm before SQLite does), but a sync does not wait
    for that: it takes the snapshot itself."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    write_wal_database_without_the_extension(db)
    assert not os.path.exists(f"{db}-wal")
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    assert int(sync(con)[str(db)], 16) == 1
    assert status_of(con, db)["needs_snapshot"] is False
    check_replica(con, store, url, db, tmp_path)
    con.close()


def test_a_deferred_first_snapshot_is_taken_while_the_status_is_polled(connect, tmp_path):
    """The first snapshot of a WAL-mode database with no -wal file waits (briefly) for the
    application to open the WAL. A monitor polling litestream_status() from another
    connection meanwhile must not restart that wait: the snapshot is taken without any read,
    sync or close of the application."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    write_wal_database_without_the_extension(db)
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    monitor = connect()
    deadline = time.monotonic() + 30
    while True:
        doc = json.loads(monitor.execute("select litestream_status()").fetchone()[0])
        st = next(d for d in doc["databases"] if d["path"] == str(db))
        if st["remote_txid"] != "0000000000000000":
            break
        assert time.monotonic() < deadline, f"the first snapshot was never taken: {st}"
        time.sleep(0.05)
    assert st["full_snapshots"] == 1 and st["last_error"] is None, st
    check_replica(con, store, url, db, tmp_path)
    con.close()


PLAIN_WAL_WRITER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
mode = con.execute("pragma journal_mode=wal").fetchone()[0]
assert mode == "wal", mode
con.execute("update t set v = v || ' (updated in place by a plain process)' where rowid % 2 = 0")
con.execute("insert into t(v) values('plain one'), ('plain two')")
if sys.argv[2] == "truncated":
    busy, log, done = con.execute("pragma wal_checkpoint(truncate)").fetchone()
    assert busy == 0, (busy, log, done)
con.close()
"""


@pytest.mark.parametrize("how", ["switched-to-wal", "wal-never-read", "truncated"])
def test_a_plain_process_that_checkpoints_its_commits_away_is_not_missed(connect, tmp_path, how):
    """The owner has no WAL to follow (its database was in rollback-journal mode; or in WAL
    mode with no -wal file and no read of ours; or the WAL truncated to nothing). A process
    without the extension then creates the WAL, commits, checkpoints and deletes or truncates
    it, all between two of the owner's looks: only the database file changed. The owner must
    notice and resync (it saw nothing to read and replicated none of it)."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    if how == "wal-never-read":
        plain = sqlite3.connect(db, isolation_level=None)
        plain.execute("pragma journal_mode=wal")
        plain.execute("create table t(v)")
        plain.executemany("insert into t values(?)", [(f"row {i}",) for i in range(20)])
        plain.close()
        con = open_replicated(connect, db, url, **{"min-interval": "0"})
    else:
        con = open_replicated(connect, db, url, **{"min-interval": "0"})
        con.execute("pragma busy_timeout=30000")
        con.execute("pragma journal_mode=" + ("delete" if how == "switched-to-wal" else "wal"))
        con.execute("create table t(v)")
        con.executemany("insert into t values(?)", [(f"row {i}",) for i in range(20)])
        if how == "truncated":
            assert con.execute("pragma wal_checkpoint(truncate)").fetchone()[0] == 0
            assert os.path.getsize(f"{db}-wal") == 0
    sync(con)
    before = status_of(con, db)
    r = subprocess.run([sys.executable, "-c", PLAIN_WAL_WRITER, str(db), how],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    if how == "truncated":
        assert os.path.getsize(f"{db}-wal") == 0
    else:
        assert not os.path.exists(f"{db}-wal")
    sync(con)
    check_replica(con, store, url, db, tmp_path)
    st = status_of(con, db)
    assert st["last_error"] is None, st
    assert st["full_snapshots"] > before["full_snapshots"], (before, st)
    con.close()


PLAIN_WORKER = """
import sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
for line in sys.stdin:
    print(repr(con.execute(line).fetchall()), flush=True)
"""


def wal_header(db):
    """(checkpoint sequence, salts) of the WAL's header as it is on disk."""
    with open(f"{db}-wal", "rb") as f:
        b = f.read(32)
    return int.from_bytes(b[12:16], "big"), b[16:24]


def test_a_wal_header_written_again_by_another_process_does_not_hide_its_commits(connect, tmp_path):
    """SQLite writes a WAL generation's header with its first frame, with the writing
    connection's own checkpoint sequence. A transaction of ours restarts the WAL, writes the
    header with the frames it spills, and rolls back; the next writer, a process without the
    extension that has restarted the WAL before (so it keeps the salts), writes the header
    again: same salts, another checkpoint sequence and checksum, from which its frames chain.
    It commits, and our next write restarts the WAL over that commit. Verified against our
    own header, its frames failed and the commit was lost without a word: every TXID after
    it restored a database missing it (found by the multi-process soak as unsound TXIDs)."""
    store, url, db, con = open_as_owner(connect, tmp_path, "wal")
    con.execute("pragma wal_autocheckpoint=0")
    con.execute("create table t(v)")
    # Many pages: the plain commit below changes the first, our later ones the last.
    con.executemany("insert into t(v) values(?)", [(f"row {i} " + "x" * 100,) for i in range(2000)])
    sync(con)
    plain = subprocess.Popen([sys.executable, "-c", PLAIN_WORKER, str(db)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)

    def in_plain(sql):
        plain.stdin.write(sql + "\n")
        plain.stdin.flush()
        return plain.stdout.readline()

    try:
        # The plain process restarts the WAL three times itself: from then on it keeps the
        # salts when it writes a generation's header (a connection that never did picks new
        # ones), with checkpoint sequence 3; ours, restarting once, writes 1.
        restarts = 0
        for attempt in range(100):
            before = wal_header(db)
            in_plain("pragma wal_checkpoint(passive)")
            in_plain("insert into t(v) values('plain, restarting the WAL')")
            restarts += wal_header(db)[1] != before[1]
            if restarts == 3:
                break
        else:
            pytest.fail(f"the plain process restarted the WAL {restarts} times in 100 tries")
        sync(con)
        # A transaction of ours that spills (restarting the WAL: our header), then rolls back.
        busy, log, done = con.execute("pragma wal_checkpoint(passive)").fetchone()
        assert busy == 0 and log == done, (busy, log, done)
        con.execute("pragma cache_size=5")
        con.execute("begin")
        con.executemany("insert into t(v) values(randomblob(3000))", [()] * 40)
        ours = wal_header(db)
        con.execute("rollback")
        con.execute("pragma cache_size=-2000")
        in_plain("update t set v = 'committed by the plain process over our header' where rowid = 1")
        theirs = wal_header(db)
        assert theirs[1] == ours[1] and theirs[0] != ours[0], (ours, theirs)
        # Our next write restarts the WAL over the plain commit.
        busy, log, done = con.execute("pragma wal_checkpoint(passive)").fetchone()
        assert busy == 0 and log == done, (busy, log, done)
        con.execute("insert into t(v) values('ours, in the next generation')")
        assert wal_header(db)[1] != theirs[1], "our write restarted the WAL"
    finally:
        plain.stdin.close()
        assert plain.wait(timeout=60) == 0
    sync(con)
    check_replica(con, store, url, db, tmp_path)
    assert status_of(con, db)["last_error"] is None
    con.close()


def test_a_sync_that_needs_a_read_the_database_refuses_says_why_at_once(connect, tmp_path):
    """A full snapshot is due but the database cannot be read whole (here its file was
    deleted under the open connection): litestream_sync() fails with that reason, not a
    timeout after waiting for what cannot happen, and the status names it too."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    write_wal_database_without_the_extension(db)
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    os.unlink(db)
    with pytest.raises(sqlite3.OperationalError) as e:
        sync(con, 20000)
    assert "cannot read the database whole for a full snapshot" in str(e.value), e.value
    assert "unable to open database file" in str(e.value), e.value
    assert "timed out" not in str(e.value), e.value
    assert "for a full snapshot" in (status_of(con, db)["last_error"] or ""), status_of(con, db)
    con.close()


FOLLOWER_THEN_PLAIN = """
import sqlite3, sys, urllib.parse
ext, db, url = sys.argv[1:4]
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(ext)
follower = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}",
                           uri=True, isolation_level=None, timeout=30)
follower.execute("insert into t values('from the follower')")
assert follower.execute("pragma wal_checkpoint(truncate)").fetchone()[0] == 0
# Right after the follower's hand-off, before the owner looks: a connection without the
# extension's VFS writes a WAL generation of its own and checkpoints it away.
plain = sqlite3.connect(db, isolation_level=None, timeout=30)
plain.execute("insert into t values('from a plain connection')")
plain.execute("update t set x = x || ' (updated by plain)'")
assert plain.execute("pragma wal_checkpoint(truncate)").fetchone()[0] == 0
plain.close()
follower.close()
"""


def test_commits_checkpointed_away_right_after_a_followers_hand_off_are_not_missed(connect, ext_path, tmp_path):
    """A follower truncates the WAL (handing its generation over); before the owner's next
    look, a writer without the extension starts the next generation, commits and truncates
    it too. The follower's hand-off ends where the database file no longer is: the owner
    must resync, not take the hand-off as the whole story."""
    store, url, db, con = open_as_owner(connect, tmp_path, "wal")
    con.execute("create table t(x)")
    con.execute("insert into t values('from the owner')")
    sync(con)
    r = subprocess.run([sys.executable, "-c", FOLLOWER_THEN_PLAIN, ext_path, str(db), url],
                       capture_output=True, text=True, env=store.env(), timeout=60)
    assert r.returncode == 0, r.stderr
    sync(con)
    check_replica(con, store, url, db, tmp_path)
    assert status_of(con, db)["last_error"] is None
    con.close()


LAST_TO_CLOSE = FOLLOWER + """con.execute("insert into t values('follower')")
print("ready", flush=True)
sys.stdin.readline()  # the owner has closed: this close is the database's last
con.close()
"""


@pytest.mark.parametrize("shm", ["kept", "read-only"])
def test_a_follower_closing_last_takes_over_and_leaves_no_wal_behind(connect, ext_path, tmp_path, shm):
    """The owner closes first; the follower's close is the database's last: SQLite checkpoints
    and deletes the -wal and -shm, then the follower takes the replica over and snapshots
    it. That snapshot's read-only connection re-created an empty -wal and -shm it could not
    delete, left behind for good (SQLite's walro-1.3.2: a -shm after every connection closed).
    With the -shm made read-only before, as walro does."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    con.execute("create table t(v)")
    con.execute("insert into t values('owner')")
    sync(con)
    follower = subprocess.Popen([sys.executable, "-c", LAST_TO_CLOSE, ext_path, str(db), url, "wal"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=store.env())
    try:
        assert follower.stdout.readline().strip() == "ready"
        if shm == "read-only":
            os.chmod(f"{db}-shm", 0o444)
        expected = dump(db)
        con.close()
        follower.stdin.write("\n")
        follower.stdin.flush()
        assert follower.wait(60) == 0
    finally:
        follower.kill()
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("app.db-"))
    assert left == []
    assert "'follower'" in expected
    assert dump(litestream_restore(store, url, tmp_path / "theirs.db")) == expected
