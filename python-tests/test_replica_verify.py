"""Readers never serve what was not written: a damaged LTX object (one flipped byte in a page
frame) or an object whose header names other TXIDs than its name makes reads and restores
fail with the reason, never return other data."""
import json
import os
import shutil
import sqlite3
import time
import urllib.parse

import pytest

from helpers import Store
from test_replication import open_replicated, sync
from test_restore import restore

NEEDLE = b"needle-1000"


def write(connect, tmp_path, big):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    con = open_replicated(connect, tmp_path / "app.db", url, **{"min-interval": "0"})
    con.execute("begin")
    con.execute("create table t(k text, v blob)")
    con.execute("insert into t values(?, null)", (NEEDLE.decode(),))
    if big:  # every file holding the needle is larger than what is read whole
        con.execute("insert into t select 'pad', randomblob(4000) from (with recursive n(i) as (select 1 union all select i + 1 from n where i < 60) select i from n)")
    con.execute("commit")
    sync(con)
    con.close()
    return url, tmp_path / "replica-app.db"


def ltx_files(replica_dir):
    for root, _, names in os.walk(replica_dir):
        for n in names:
            if n.endswith(".ltx"):
                yield os.path.join(root, n)


def flip_needle(replica_dir):
    """Turns 'needle-1000' into 'needle-9000' inside every file holding it (LZ4 keeps such
    literals as they are), leaving a frame that still decompresses."""
    damaged = []
    for path in ltx_files(replica_dir):
        data = bytearray(open(path, "rb").read())
        at = data.find(NEEDLE)
        if at >= 0:
            data[at + 7] = ord("9")
            open(path, "wb").write(bytes(data))
            damaged.append((path, len(data)))
    assert damaged, "no LTX file holds the needle"
    return damaged


def replica_reader(tmp_path, url):
    return sqlite3.connect(f"file:{tmp_path}/view.db?vfs=litestream-replica&prefetch=0"
                           f"&replica={urllib.parse.quote(url, safe='')}", uri=True)


def assert_refused(tmp_path, url, sql):
    """Opening the replica (its version is built at open) or the query fails, with the
    reason in the error or the status."""
    with pytest.raises(sqlite3.DatabaseError):
        reader = replica_reader(tmp_path, url)
        try:
            reader.execute(sql).fetchone()
        finally:
            reader.close()


def read_needle(reader):
    return reader.execute("select k from t where k like 'needle-%'").fetchone()[0]


def status_text(connect):
    return connect().execute("select litestream_status()").fetchone()[0]


def test_a_damaged_small_file_is_never_served(connect, tmp_path):
    url, replica_dir = write(connect, tmp_path, big=False)
    damaged = flip_needle(replica_dir)
    assert all(size <= 64 << 10 for _, size in damaged)
    assert_refused(tmp_path, url, "select k from t")
    assert "checksum" in status_text(connect)
    # Restore refuses the same objects.
    with pytest.raises(sqlite3.DatabaseError, match="checksum"):
        restore(connect(), url, tmp_path / "out.db")


def test_a_damaged_large_file_is_refused_once_checked(connect, tmp_path):
    url, replica_dir = write(connect, tmp_path, big=True)
    damaged = flip_needle(replica_dir)
    assert all(size > 64 << 10 for _, size in damaged)
    reader = replica_reader(tmp_path, url)
    # Pages of a large file are served while it is checked in the background; once the check
    # fails nothing more comes from it, cached pages included.
    deadline = time.time() + 20
    while True:
        try:
            value = read_needle(reader)
        except sqlite3.DatabaseError:
            break
        assert value in ("needle-1000", "needle-9000")
        assert time.time() < deadline, "the damaged file was still served after 20 s"
        reader.execute("pragma cache_size=0")  # SQLite's own cache must not hide our reads
        time.sleep(0.05)
    assert "damaged" in status_text(connect)
    reader.close()


@pytest.mark.parametrize("big", [False, True])
def test_an_object_whose_header_names_other_txids_is_refused(connect, tmp_path, big):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    con = open_replicated(connect, tmp_path / "app.db", url, **{"min-interval": "0"})
    con.execute("create table t(k text, v blob)")
    for i in range(3):
        con.execute("insert into t values(?, randomblob(?))", (f"row-{i}", 40000 if big else 10))
        sync(con)
    con.close()
    ltx_dir = tmp_path / "replica-app.db" / "ltx"
    l0 = ltx_dir / "0"
    names = sorted(os.listdir(l0))
    assert len(names) >= 3, names
    # The content of TXID 3 under the name of TXID 2 (and the other way round).
    a, b = l0 / names[1], l0 / names[2]
    shutil.move(a, tmp_path / "swap")
    shutil.move(b, a)
    shutil.move(tmp_path / "swap", b)
    # Only L0 files: a compacted level would cover them.
    for level in os.listdir(ltx_dir):
        if level != "0":
            shutil.rmtree(ltx_dir / level)
    with pytest.raises(sqlite3.DatabaseError, match="not those of the file's name"):
        restore(connect(), url, tmp_path / "out.db")
    assert_refused(tmp_path, url, "select count(*) from t")
    assert "not those of the file's name" in status_text(connect)


def rows_of(con):
    return con.execute("select id, v from t order by id").fetchall()


def txids_of_commits(con, table, name, n):
    """n commits, each synced on its own: TXIDs 2..n+1 after the create's TXID 1."""
    con.execute(f"create table {table}(id integer primary key, v text)")
    sync(con)
    for i in range(n):
        con.execute(f"insert into {table}(v) values(?)", (f"{name} {i}",))
        sync(con)


@pytest.mark.parametrize("new_txids", [2, 6, 12], ids=["behind-the-reader", "at-its-txid", "past-it"])
def test_a_replica_rewritten_under_a_reader_is_read_anew(connect, tmp_path, new_txids):
    """The replica is deleted and replicated again from scratch, from another database,
    while a reader follows it (at TXID 6). Whether the new history is behind the reader's
    TXID, at it or past it, the reader comes to serve the new database: never its old pages
    (SQLite's own page cache included), never the old history extended with the new one's."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    old = open_replicated(connect, tmp_path / "old.db", url, **{"min-interval": "0"})
    txids_of_commits(old, "t", "old", 5)
    old.close()
    reader = sqlite3.connect(f"file:{tmp_path}/view.db?vfs=litestream-replica&poll-interval=50ms"
                             f"&replica={urllib.parse.quote(url, safe='')}", uri=True)
    assert len(rows_of(reader)) == 5
    shutil.rmtree(tmp_path / "replica-app.db")
    new = open_replicated(connect, tmp_path / "new.db", url, **{"min-interval": "0"})
    txids_of_commits(new, "t", "new", new_txids - 1)
    assert json.loads(new.execute("select litestream_status()").fetchone()[0])["databases"][0]["remote_txid"] \
        == f"{new_txids:016x}"
    expected = rows_of(new)
    deadline = time.time() + 20
    seen = rows_of(reader)
    while seen != expected and time.time() < deadline:
        time.sleep(0.05)
        seen = rows_of(reader)
    assert seen == expected, f"the reader serves {seen}, the replica holds {expected}"
    assert reader.execute("pragma integrity_check").fetchone() == ("ok",)
    reader.close()
    new.close()
