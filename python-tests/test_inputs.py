"""What the extension is given, taken as given: timestamp targets with every digit, replica
parameters per connection and in their own form, bad input refused with a message quoting
it (never a panic), VACUUM INTO as a plain local copy, restores that overwrite a database
leaving nothing of the old one behind."""
import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse

import pytest

from helpers import Store, dump, require
from test_replication import open_replicated, sync

HERE = os.path.dirname(os.path.abspath(__file__))


def restore(con, url, out, target=None, option=None):
    args = [url, str(out)] + ([target] if target is not None or option else []) + ([option] if option else [])
    sql = "select litestream_restore(" + ", ".join("?" * len(args)) + ")"
    return json.loads(con.execute(sql, args).fetchone()[0])


def replica_uri(tmp_path, url, name="view.db", **params):
    extra = "".join(f"&{k}={urllib.parse.quote(str(v), safe='')}" for k, v in params.items())
    return f"file:{tmp_path}/{name}?vfs=litestream-replica&replica={urllib.parse.quote(url, safe='')}{extra}"


def last_open_error(connect):
    return json.loads(connect().execute("select litestream_status()").fetchone()[0])["last_open_error"]


def replica_status(con, url):
    status = json.loads(con.execute("select litestream_status()").fetchone()[0])
    name = urllib.parse.urlparse(url).path
    return [r for r in status["replicas"] if r["replica"].endswith(name)][0]


def writer_with_commits(connect, tmp_path, url, rows, blob=0):
    """A replicated database with one commit per row of `rows`; returns (con, [TXID, ...])."""
    db = tmp_path / "app.db"
    w = open_replicated(connect, db, url, **{"min-interval": "0"})
    w.execute("pragma journal_mode=wal")
    w.execute("create table t(x, v)")
    txids = [int(sync(w)[str(db)], 16)]
    for x in rows:
        w.execute("insert into t values(?, randomblob(?))", (x, blob))
        txids.append(int(sync(w)[str(db)], 16))
    return w, txids


def with_extra_digits(stamp, digits):
    """`2026-...T07:11:44.83Z` + `000001` -> `2026-...T07:11:44.830000001Z` (digits after ms)."""
    assert stamp.endswith("Z")
    base = stamp[:-1]
    if "." in base:
        secs, frac = base.split(".")
    else:
        secs, frac = base, ""
    return f"{secs}.{frac.ljust(3, '0')}{digits}Z"


def test_timestamp_targets_keep_their_nanoseconds(connect, tmp_path):
    """Litestream includes a file when its (millisecond) timestamp is before the target as
    given: 1 ns to 999 us after a commit's timestamp restores that commit. We cut targets to
    milliseconds and left it out (restore, `timestamp=` and `litestream_set_time()`)."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    # Commit 2's timestamp is the one probed; commit 3 follows (Litestream refuses a time
    # after the newest file).
    w, txids = writer_with_commits(connect, tmp_path, url, [1, 2, 3])
    second = txids[2]
    live = sqlite3.connect(replica_uri(tmp_path, url), uri=True)
    live.execute("select litestream_set_time(?)", (second,)).fetchone()
    stamp = live.execute("select litestream_time()").fetchone()[0]
    live.execute("select litestream_set_time('LATEST')").fetchone()
    con = connect()
    count = lambda path: sqlite3.connect(path).execute("select count(*) from t").fetchone()[0]
    # At the commit's own timestamp it is excluded (strictly before, as Litestream).
    restore(con, url, tmp_path / "at.db", stamp)
    assert count(tmp_path / "at.db") == 1
    for i, digits in enumerate(["000001", "999999", "5"]):
        target = with_extra_digits(stamp, digits)
        out = tmp_path / f"after{i}.db"
        summary = restore(con, url, out, target)
        assert int(summary["txid"], 16) == second, target
        assert count(out) == 2, target
        assert live.execute("select litestream_set_time(?)", (target,)).fetchone()[0] == f"{second:016x}"
        assert live.execute("select count(*) from t").fetchone()[0] == 2, target
        pinned = sqlite3.connect(replica_uri(tmp_path, url, timestamp=target), uri=True)
        assert pinned.execute("select count(*) from t").fetchone()[0] == 2, target
        pinned.close()
    # The real `litestream restore -timestamp` agrees, at the commit's timestamp and 1 ns after.
    for target, rows in [(stamp, 1), (with_extra_digits(stamp, "000001"), 2)]:
        out = tmp_path / f"litestream-{rows}.db"
        r = subprocess.run([require("LITESTREAM_TEST_BIN"), "restore", "-timestamp", target, "-o", str(out), url],
                           capture_output=True, text=True, env=store.env(), timeout=120)
        assert r.returncode == 0, r.stderr
        assert count(out) == rows, f"litestream restore -timestamp {target}"
    live.close()
    w.close()


def test_replica_txid_and_timestamp_take_only_their_own_form(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    w, txids = writer_with_commits(connect, tmp_path, url, [1, 2])
    for key, value, needle in [
        ("timestamp", str(txids[1]), f'timestamp="{txids[1]}" is not a timestamp'),
        ("txid", "2099-01-01 00:00:00", 'txid="2099-01-01 00:00:00" is not a TXID'),
        ("timestamp", "2026-01-0\u00e9 00:00:00", 'timestamp="2026-01-0\u00e9 00:00:00" is not a timestamp'),
    ]:
        with pytest.raises(sqlite3.OperationalError, match="unable to open"):
            sqlite3.connect(replica_uri(tmp_path, url, **{key: value}), uri=True).execute("select count(*) from t").fetchall()
        err = last_open_error(connect)
        assert needle in err, err
    # Their own forms still work.
    pinned = sqlite3.connect(replica_uri(tmp_path, url, txid=txids[1]), uri=True)
    assert pinned.execute("select count(*) from t").fetchone()[0] == 1
    pinned = sqlite3.connect(replica_uri(tmp_path, url, timestamp="2099-01-01 00:00:00"), uri=True)
    assert pinned.execute("select count(*) from t").fetchone()[0] == 2
    w.close()


ROWS_600K = ("with recursive s(n) as (select 1 union all select n + 1 from s where n < 200) "
             "insert into t select n, randomblob(3000) from s")


def wait_for(predicate, seconds):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_poll_interval_is_per_connection(connect, tmp_path):
    """The first connection's `poll-interval` (here one hour) was every connection's."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    w, _ = writer_with_commits(connect, tmp_path, url, [1])
    slow = sqlite3.connect(replica_uri(tmp_path, url, **{"poll-interval": "1h"}), uri=True)
    assert slow.execute("select count(*) from t").fetchone()[0] == 1
    fast = sqlite3.connect(replica_uri(tmp_path, url, **{"poll-interval": "100ms"}), uri=True)
    w.execute("insert into t values(2, '')")
    sync(w)
    assert wait_for(lambda: fast.execute("select count(*) from t").fetchone()[0] == 2, 5), \
        "a connection with poll-interval=100ms did not see a commit within 5 s"
    # Once it is gone, the one-hour connection polls every hour again (nothing to assert
    # quickly); its own reads are unaffected.
    fast.close()
    assert slow.execute("select count(*) from t").fetchone()[0] == 2
    slow.close()
    w.close()


def test_prefetch_is_per_connection(connect, tmp_path):
    """The first connection's `prefetch` was every connection's."""
    store = Store("file", tmp_path)
    for first, second, expect_prefetch in [("0", "32", True), ("32", "0", False)]:
        url = store.url(f"app-{first}-{second}.db")
        db = tmp_path / f"app-{first}-{second}.db"
        w = open_replicated(connect, db, url, **{"min-interval": "0"})
        w.execute("create table t(x, v)")
        # One commit of 600 KB of incompressible rows: its file is read page by page (small
        # files come whole, with every page, and would need no prefetch).
        w.execute(ROWS_600K)
        sync(w)
        a = sqlite3.connect(replica_uri(tmp_path, url, f"a-{first}.db", prefetch=first), uri=True)
        b = sqlite3.connect(replica_uri(tmp_path, url, f"b-{second}.db", prefetch=second), uri=True)
        assert b.execute("select sum(length(v)) from t").fetchone()[0] == 600000
        # Prefetch runs in the background.
        if expect_prefetch:
            assert wait_for(lambda: replica_status(b, url)["prefetched_pages"] > 0, 5), \
                f"prefetch={second} after a prefetch={first} connection: nothing prefetched"
        else:
            time.sleep(0.5)
            prefetched = replica_status(b, url)["prefetched_pages"]
            assert prefetched == 0, f"prefetch=0 after a prefetch={first} connection: {prefetched} pages prefetched"
        a.close()
        b.close()
        w.close()


def test_a_failed_pinned_open_leaves_other_connections_following(connect, tmp_path):
    """A pinned open that failed released its handle twice: the replica was dropped under
    the connections still open, and they stopped following the writer."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    w, _ = writer_with_commits(connect, tmp_path, url, [1])
    live = sqlite3.connect(replica_uri(tmp_path, url, **{"poll-interval": "100ms"}), uri=True)
    assert live.execute("select count(*) from t").fetchone()[0] == 1
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        sqlite3.connect(replica_uri(tmp_path, url, "other.db", txid=999999), uri=True).execute("select 1 from t").fetchall()
    assert replica_status(live, url)["connections"] == 1
    w.execute("insert into t values(2, '')")
    sync(w)
    assert wait_for(lambda: live.execute("select count(*) from t").fetchone()[0] == 2, 5), \
        "the open connection stopped following the replica"
    live.close()
    w.close()


READ_ERROR_SCRIPT = r"""
import ctypes, json, os, sys, urllib.parse
lib = ctypes.CDLL("libsqlite3.so.0")
LOG = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)
logged = []
callback = LOG(lambda _, code, msg: logged.append((code, msg.decode())))
lib.sqlite3_shutdown()
assert lib.sqlite3_config(16, callback, None) == 0  # SQLITE_CONFIG_LOG
lib.sqlite3_initialize()
import sqlite3
ext, tmp = sys.argv[1], sys.argv[2]
url = f"file://{tmp}/replica"
c = sqlite3.connect(":memory:")
c.enable_load_extension(True)
c.load_extension(ext)
w = sqlite3.connect(f"file:{tmp}/app.db?vfs=litestream&min-interval=0&replica=" + urllib.parse.quote(url, safe=""), uri=True, isolation_level=None)
w.execute("create table t(x, v)")
w.execute("with recursive s(n) as (select 1 union all select n + 1 from s where n < 200) insert into t select n, randomblob(3000) from s")
txid = json.loads(w.execute("select litestream_sync()").fetchone()[0])[f"{tmp}/app.db"]
r = sqlite3.connect(f"file:{tmp}/view.db?vfs=litestream-replica&prefetch=0&txid={txid}&replica=" + urllib.parse.quote(url, safe=""), uri=True)
assert r.execute("select count(*) from sqlite_master").fetchone()[0] == 1
# Retention (here: by hand) removes every file of the TXID this connection reads.
for level in os.listdir(f"{tmp}/replica/ltx"):
    for name in os.listdir(f"{tmp}/replica/ltx/{level}"):
        os.remove(f"{tmp}/replica/ltx/{level}/{name}")
try:
    r.execute("select sum(length(v)) from t").fetchone()
    print(json.dumps({"error": None}))
except sqlite3.OperationalError as e:
    replicas = json.loads(r.execute("select litestream_status()").fetchone()[0])["replicas"]
    print(json.dumps({"error": str(e), "logged": logged, "status": replicas}))
"""


def test_a_read_whose_txid_left_retention_says_why(ext_path, tmp_path):
    """SQLite can only say "disk I/O error": the reason goes to SQLite's error log
    (sqlite3_log) and stays in litestream_status() after the next successful poll."""
    r = subprocess.run([sys.executable, "-c", READ_ERROR_SCRIPT, ext_path, str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["error"] == "disk I/O error", out
    reasons = [msg for code, msg in out["logged"] if "left the replica's retention" in msg]
    assert reasons, f"nothing in SQLite's error log says why: {out['logged']}"
    assert out["logged"][0][0] & 0xff == 10, out["logged"]  # SQLITE_IOERR
    assert "left the replica's retention" in (out["status"][0].get("last_read_error") or ""), out["status"]


def test_bad_targets_and_urls_are_errors_quoting_them(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    w, txids = writer_with_commits(connect, tmp_path, url, [1])
    con = connect()
    bad = "2026-01-0\u00e9 00:00:00"  # byte 10 is inside a character: slicing there panicked
    with pytest.raises(sqlite3.OperationalError) as e:
        restore(con, url, tmp_path / "x.db", bad)
    assert bad in str(e.value) and "internal error" not in str(e.value), e.value
    with pytest.raises(sqlite3.OperationalError) as e:
        w.execute("select litestream_rollback(?)", (bad,)).fetchone()
    assert bad in str(e.value) and "internal error" not in str(e.value), e.value
    live = sqlite3.connect(replica_uri(tmp_path, url), uri=True)
    with pytest.raises(sqlite3.OperationalError) as e:
        live.execute("select litestream_set_time(?)", (bad,)).fetchone()
    assert bad in str(e.value) and "internal error" not in str(e.value), e.value
    # A negative integer was taken as TXID 2^64 - 1.
    with pytest.raises(sqlite3.OperationalError) as e:
        live.execute("select litestream_set_time(-1)").fetchone()
    assert "Integer(-1)" in str(e.value), e.value
    live.close()
    # An unparseable URL is quoted (less its credentials), not "<unparseable URL>".
    with pytest.raises(sqlite3.OperationalError) as e:
        restore(con, "s3://AKIA:hunter2@bkt:port/p", tmp_path / "y.db")
    assert "s3://bkt:port/p" in str(e.value) and "hunter2" not in str(e.value), e.value
    # file: URLs that the URL parser makes into / or /relative are refused.
    for bad_url in ["file:", "file:///", "file:relative"]:
        with pytest.raises(sqlite3.OperationalError) as e:
            restore(con, bad_url, tmp_path / "z.db")
        assert f'"{bad_url}"' in str(e.value) and "directory" in str(e.value), e.value
        with pytest.raises(sqlite3.OperationalError) as e:
            con.execute("select litestream_base_url(?)", (bad_url,)).fetchone()
        assert "directory" in str(e.value), e.value
    assert not (tmp_path / "x.db").exists() and not (tmp_path / "y.db").exists()
    w.close()


def test_out_of_range_durations_are_refused(connect, tmp_path):
    """lease-ttl=99999999999999999999h gave a lease that expired in 1970."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        open_replicated(connect, tmp_path / "app.db", url, **{"lease-ttl": "99999999999999999999h"}).execute("create table t(x)")
    err = last_open_error(connect)
    assert 'lease-ttl="99999999999999999999h" is out of range' in err, err


def test_vacuum_into_makes_a_plain_local_copy(connect, tmp_path):
    """VACUUM INTO's target is attached through the connection's VFS as a main database: it
    was refused ("no replica for copy.db"), leaving an empty file."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    w, _ = writer_with_commits(connect, tmp_path, url, [1, 2, 3])
    copy = tmp_path / "copy.db"
    w.execute("vacuum into ?", (str(copy),))
    assert dump(copy) == dump(tmp_path / "app.db")
    status = json.loads(w.execute("select litestream_status()").fetchone()[0])
    paths = [d["path"] for d in status["databases"]]
    assert str(tmp_path / "app.db") in paths and str(copy) not in paths, paths
    assert not (tmp_path / ".copy.db-litestream").exists()
    # From a replica connection too: a local copy of the replica's state.
    live = sqlite3.connect(replica_uri(tmp_path, url), uri=True)
    live.execute(f"/* a copy */ VACUUM INTO '{tmp_path}/replica-copy.db'")
    assert dump(tmp_path / "replica-copy.db") == dump(copy)
    live.close()
    # Afterwards, a database opened on this thread is replicated as ever.
    other_url = store.url("other.db")
    other = open_replicated(connect, tmp_path / "other.db", other_url, **{"min-interval": "0"})
    other.execute("create table u(x)")
    assert int(sync(other)[str(tmp_path / "other.db")], 16) >= 1
    other.close()
    # A host that sets its own trace hook replaces ours: VACUUM INTO is then refused like an
    # ATTACH, leaving no file, and the URI form with vfs=unix still makes the copy.
    w.set_trace_callback(lambda sql: None)
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        w.execute("vacuum into ?", (str(tmp_path / "traced.db"),))
    assert not (tmp_path / "traced.db").exists()
    w.execute("vacuum into ?", (f"file:{tmp_path}/traced.db?vfs=unix",))
    assert dump(tmp_path / "traced.db") == dump(copy)
    w.set_trace_callback(None)
    # An ATTACH of a new database with no replica configured is still refused, and leaves
    # no file behind.
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        w.execute("attach ? as x", (str(tmp_path / "attached.db"),))
    assert "no replica for" in last_open_error(connect)
    assert not (tmp_path / "attached.db").exists()
    w.close()


def test_restore_overwrite_removes_the_old_wal(connect, tmp_path):
    """A leftover -wal beside the output was applied to the restored file: 'overwrite'
    returned success and the file opened as the old database."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    w, _ = writer_with_commits(connect, tmp_path, url, [1, 2])
    out = tmp_path / "out.db"
    old = sqlite3.connect(out, isolation_level=None)
    old.execute("pragma journal_mode=wal")
    old.execute("pragma wal_autocheckpoint=0")
    old.execute("create table t(x, v)")
    old.execute("insert into t values('old', ''), ('old', ''), ('old', '')")
    # A copy of the database and its WAL as a crashed process leaves them.
    stale = tmp_path / "stale"
    stale.mkdir()
    for suffix in ["", "-wal", "-shm"]:
        (stale / f"out.db{suffix}").write_bytes(open(f"{out}{suffix}", "rb").read())
    old.close()
    for suffix in ["", "-wal", "-shm"]:
        os.replace(stale / f"out.db{suffix}", f"{out}{suffix}")
    assert os.path.getsize(f"{out}-wal") > 0
    con = connect()
    restore(con, url, out, None, "overwrite")
    check = sqlite3.connect(out)
    assert check.execute("select count(*), count(distinct x) from t").fetchone() == (2, 2), "opened as the old database"
    check.close()
    assert not os.path.exists(f"{out}-wal") and not os.path.exists(f"{out}-shm")
    w.close()


def test_restore_refuses_to_overwrite_a_database_open_here(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    w, _ = writer_with_commits(connect, tmp_path, url, [1, 2])
    before = dump(tmp_path / "app.db")
    for target in [str(tmp_path / "app.db"), os.path.relpath(tmp_path / "app.db")]:
        with pytest.raises(sqlite3.OperationalError) as e:
            restore(connect(), url, target, 1, "overwrite")
        assert "is open with vfs=litestream in this process" in str(e.value), e.value
    assert dump(tmp_path / "app.db") == before
    w.execute("insert into t values(3, '')")
    sync(w)
    w.close()


def test_an_open_error_is_the_threads_own_and_its_paths(connect, tmp_path):
    """Two threads open with a mistyped parameter each: each thread's status names its own
    mistake (one process-wide slot would give both the later one), `open_errors` names both
    paths, and a path that then opens is dropped from it."""
    import threading
    connect()  # loads the extension
    store = Store("file", tmp_path)
    url = urllib.parse.quote(store.url("x.db"), safe="")
    seen = {}

    def bad_open(name, param, go, done):
        go.wait(10)
        with pytest.raises(sqlite3.OperationalError, match="unable to open"):
            sqlite3.connect(f"file:{tmp_path}/{name}?vfs=litestream&replica={url}&{param}=1",
                            uri=True).execute("select 1").fetchall()
        done.set()
        # Both have failed before either reads its own.
        both.wait(10)
        # A connection of this thread's own (the fixture's may only close in its thread); the
        # extension, loaded once, adds its functions to every connection.
        con = sqlite3.connect(":memory:")
        seen[name] = json.loads(con.execute("select litestream_status()").fetchone()[0])["last_open_error"]
        con.close()

    both = threading.Barrier(2)
    go_a, done_a, go_b, done_b = (threading.Event() for _ in range(4))
    threads = [threading.Thread(target=bad_open, args=("a.db", "min-intervl", go_a, done_a)),
               threading.Thread(target=bad_open, args=("b.db", "leese", go_b, done_b))]
    for t in threads:
        t.start()
    go_a.set()
    assert done_a.wait(10)
    go_b.set()  # b fails after a: a process-wide slot would now hold b's error for both
    for t in threads:
        t.join(20)
    assert "min-intervl" in seen["a.db"] and "leese" not in seen["a.db"], seen
    assert "leese" in seen["b.db"], seen
    errors = json.loads(connect().execute("select litestream_status()").fetchone()[0])["open_errors"]
    assert "min-intervl" in errors[f"{tmp_path}/a.db"], errors
    assert "leese" in errors[f"{tmp_path}/b.db"], errors
    ok = sqlite3.connect(f"file:{tmp_path}/a.db?vfs=litestream&replica={url}", uri=True)
    ok.execute("create table t(x)")
    errors = json.loads(connect().execute("select litestream_status()").fetchone()[0])["open_errors"]
    assert f"{tmp_path}/a.db" not in errors and f"{tmp_path}/b.db" in errors, errors
    ok.close()


def sql_error(con, sql, args=()):
    """The error `sql` fails with: its SQLite code's name, and its message."""
    with pytest.raises(sqlite3.Error) as e:
        con.execute(sql, args).fetchone()
    return e.value.sqlite_errorname, str(e.value)


def test_errors_carry_a_sqlite_code_the_host_can_branch_on(connect, tmp_path, monkeypatch):
    """Every failure used to be SQLITE_ERROR, so a host could only parse the text. Now the code
    says what to do: EMPTY (nothing to restore: a first start), BUSY (try again later), PERM
    (credentials), CANTOPEN (a local path), ERROR (bad input, a corrupt object, a call made in
    the wrong state); all of them OperationalError in Python's sqlite3."""
    con = connect()
    out = str(tmp_path / "out.db")
    empty = tmp_path / "empty-replica"
    empty.mkdir()
    code, msg = sql_error(con, "select litestream_restore(?, ?)", (f"file://{empty}", out))
    assert code == "SQLITE_EMPTY" and "no backup" in msg, (code, msg)

    store = Store("file", tmp_path)
    url = store.url("app.db")
    w, txids = writer_with_commits(connect, tmp_path, url, [1, 2])
    code, msg = sql_error(con, "select litestream_restore(?, ?, ?)", (url, out, "yesterday"))
    assert code == "SQLITE_ERROR" and "yesterday" in msg, (code, msg)
    (tmp_path / "a-file").write_text("")  # a missing directory is created; one under a file cannot be
    code, msg = sql_error(con, "select litestream_restore(?, ?)", (url, str(tmp_path / "a-file" / "x.db")))
    assert code == "SQLITE_CANTOPEN" and "a-file" in msg, (code, msg)
    restore(con, url, out)
    code, msg = sql_error(con, "select litestream_restore(?, ?)", (url, out))
    assert code == "SQLITE_ERROR" and "already exists" in msg, (code, msg)
    # A target before the replica's first TXID: nothing there for it.
    code, msg = sql_error(con, "select litestream_restore(?, ?, ?)", (url, str(tmp_path / "early.db"), "2000-01-01T00:00:00Z"))
    assert code == "SQLITE_EMPTY", (code, msg)

    # A call in a state that does not allow it is SQLITE_ERROR, as SQLite's own
    # "cannot VACUUM from within a transaction" is.
    w.execute("begin")
    code, msg = sql_error(w, "select litestream_rollback(?)", (txids[0],))
    assert code == "SQLITE_ERROR" and "inside a transaction" in msg, (code, msg)
    w.execute("rollback")
    code, msg = sql_error(con, "select litestream_txid()")
    assert code == "SQLITE_ERROR" and "litestream-replica" in msg, (code, msg)

    # A sync the store cannot answer: try again later.
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nobody listens there now: every request is refused
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    down = open_replicated(connect, tmp_path / "down.db",
                           f"s3://bkt/down.db?endpoint=http://127.0.0.1:{port}&region=us-east-1")
    down.execute("create table t(x)")
    code, msg = sql_error(down, "select litestream_sync(300)")
    assert code == "SQLITE_BUSY" and "timed out" in msg, (code, msg)
    assert down.execute("select count(*) from t").fetchone() == (0,)  # the local database is fine
    down.close()
    w.close()


@pytest.mark.servers
def test_wrong_credentials_are_a_permission_error(connect, tmp_path, monkeypatch):
    store = Store("moto", tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", store.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + store.secret_key)
    code, msg = sql_error(connect(), "select litestream_restore(?, ?)", (store.url("app.db"), str(tmp_path / "out.db")))
    assert code == "SQLITE_PERM" and "access denied" in msg, (code, msg)
    assert not (tmp_path / "out.db").exists()


def test_a_corrupt_object_fails_the_call_but_not_the_callers_transaction(connect, tmp_path):
    """A function failing with SQLITE_IOERR or SQLITE_CORRUPT would make SQLite roll back the
    caller's whole transaction (and some hosts delete a database that says CORRUPT): a bad
    replica must cost the application nothing."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    w, _ = writer_with_commits(connect, tmp_path, url, [1, 2, 3], blob=3000)
    w.close()
    damaged = 0
    for root, _, names in os.walk(tmp_path / "replica-app.db"):
        for n in names:
            if n.endswith(".ltx"):
                path = os.path.join(root, n)
                data = bytearray(open(path, "rb").read())
                data[len(data) // 2] ^= 0xFF
                open(path, "wb").write(bytes(data))
                damaged += 1
    assert damaged
    app = connect(str(tmp_path / "local.db"), isolation_level=None)
    app.execute("create table mine(x)")
    app.execute("begin")
    app.execute("insert into mine values (1)")
    code, msg = sql_error(app, "select litestream_restore(?, ?)", (url, str(tmp_path / "out.db")))
    assert code == "SQLITE_ERROR" and ".ltx" in msg, (code, msg)
    assert app.in_transaction, "the failed restore ended the caller's transaction"
    app.execute("commit")
    assert app.execute("select x from mine").fetchall() == [(1,)]
    assert not (tmp_path / "out.db").exists()
