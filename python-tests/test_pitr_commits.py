"""Point-in-time against every commit, from every process, in every mode: page-size changes
in the history (restore, compaction, snapshots, the replica VFS, Litestream's restore), and
rollbacks and forks racing other connections and writers."""
import json
import os
import random
import shutil
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
    before = max(recorded)
    # A reader following the replica from before the change.
    follower = sqlite3.connect(
        f"file:follow.db?vfs=litestream-replica&replica={urllib.parse.quote(url, safe='')}&poll-interval=50ms",
        uri=True, isolation_level=None)
    assert follower.execute("select count(*) from t").fetchone()[0] == 120
    change_page_size(con, mode, new)
    changed = txid_of(con, db)
    recorded[changed] = (new, dump(db))
    for i in range(3):
        fill(con, 40, f"after {i}")
        con.execute("delete from t where id % 7 = ?", (i,))
        recorded[txid_of(con, db)] = (new, dump(db))
    latest = max(recorded)
    # Checked inside one read transaction: outside one, litestream_txid() is the version the
    # next read will see, and `pragma page_size` is what the last read saw.
    deadline = time.time() + 20
    while True:
        follower.execute("begin")
        follower.execute("select count(*) from t").fetchone()
        seen = int(follower.execute("select litestream_txid()").fetchone()[0], 16)
        if seen >= latest or time.time() > deadline:
            break
        follower.execute("commit")
        time.sleep(0.05)
    assert seen >= latest, "the follower did not catch up"
    assert follower.execute("pragma page_size").fetchone()[0] == new
    assert follower.execute("pragma integrity_check").fetchone()[0] == "ok"
    assert "\n".join(follower.iterdump()) == recorded[latest][1]
    follower.execute("commit")
    follower.close()
    # A rollback cannot change the page size: refused, naming why; after the change it works.
    with pytest.raises(sqlite3.OperationalError, match="cannot change the page size"):
        rollback(con, before)
    assert dump(db) == recorded[latest][1]
    summary = rollback(con, changed)
    assert dump(db) == recorded[changed][1], summary
    rolled = txid_of(con, db)
    recorded[rolled] = (new, recorded[changed][1])
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
    file before the change; once our level-9 snapshot at the new size exists, its latest
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
    # Between the change and that snapshot, its plan crosses the change, unless it starts
    # from one of our compacted files spanning it (those hold every page at the new size).
    ok, out = litestream_restore_result(store, url, tmp_path / "theirs-after-2.db", after)
    if ok:
        assert dump(tmp_path / "theirs-after-2.db") == after_dump
    else:
        assert "page size" in out, out
    # Before the change, Litestream still restores at the old size.
    ok, out = litestream_restore_result(store, url, tmp_path / "theirs-before-2.db", before)
    assert ok and dump(tmp_path / "theirs-before-2.db") == before_dump, out


def test_page_size_change_under_retention(connect, tmp_path):
    """Compaction, snapshots and retention run while the page size changes back and forth:
    every TXID is either restorable, exactly and at its own page size, or refused as outside
    retention; the latest always restores."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{
        "min-interval": "0", "levels": "1s,2s", "snapshot-interval": "2s",
        "retention": "5s", "l0-retention": "2s"})
    con.execute("pragma page_size=4096")
    con.execute("create table t(id integer primary key, v text)")
    recorded = {}
    sizes = [8192, 1024, 4096]
    deadline = time.time() + 7
    i = 0
    while time.time() < deadline:
        con.execute("begin")
        fill(con, 10, f"round {i}")
        con.execute("commit")
        if i % 8 == 4:
            change_page_size(con, "delete", sizes[(i // 8) % len(sizes)])
        recorded[txid_of(con, db)] = (con.execute("pragma page_size").fetchone()[0], dump(db))
        time.sleep(0.1)
        i += 1
    time.sleep(2.5)
    assert level_files(store, url, 9) and level_files(store, url, 2)
    assert len(level_files(store, url, 0)) < len(recorded), "retention removed nothing"
    boot = connect()
    restorable = []
    for txid, (ps, expected) in sorted(recorded.items()):
        out = tmp_path / f"r-{txid}.db"
        try:
            restore(boot, url, out, txid)
        except sqlite3.OperationalError as e:
            assert "outside retention" in str(e) or "no files" in str(e), str(e)
            continue
        restorable.append(ps)
        last_restorable = txid
        assert page_size_of(out) == ps and dump(out) == expected, txid
    # Which TXIDs retention left depends on timing; the latest is always among them.
    assert restorable and restorable[-1] == recorded[max(recorded)][0]
    assert last_restorable == max(recorded)
    restore(boot, url, tmp_path / "latest.db")
    assert dump(tmp_path / "latest.db") == recorded[max(recorded)][1]
    con.close()


def crc64_go_iso(data, crc=0):
    table = crc64_go_iso.table
    crc ^= 0xFFFFFFFFFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def _crc_table():
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xD800000000000000 if c & 1 else c >> 1
        out.append(c)
    return out


crc64_go_iso.table = _crc_table()


def uvarint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def ltx_file(header, pages):
    """An LTX v3 file with `header` (100 bytes, as found in another file) and `pages`
    [(pgno, bytes)], each stored as an LZ4 block of literals only (valid LZ4, no compressor
    needed)."""
    body, crc_input, index = bytearray(header), bytearray(header), bytearray()
    for pgno, data in pages:
        n = len(data)
        block = bytes([0xF0]) + b"\xff" * ((n - 15) // 255) + bytes([(n - 15) % 255]) + data
        frame_header = pgno.to_bytes(4, "big") + (1).to_bytes(2, "big") + len(block).to_bytes(4, "big")
        index += uvarint(pgno) + uvarint(len(body)) + uvarint(len(frame_header) + len(block))
        body += frame_header + block
        crc_input += frame_header + data
    index += uvarint(0)
    index += len(index).to_bytes(8, "big")
    tail = bytes(6) + bytes(index) + bytes(8)
    checksum = crc64_go_iso(bytes(crc_input + tail)) | (1 << 63)
    return bytes(body + tail) + checksum.to_bytes(8, "big")


def test_replica_damaged_by_an_unshipped_page_size_change_heals(connect, tmp_path):
    """A replica written before page-size changes were shipped whole holds, at the change, an
    L0 of a few pages at the new size. Restores past it fail with an error naming the problem
    (never a mixed database); the writer's compaction notices and ships one full snapshot,
    after which compaction, snapshots and restores of every later TXID work again."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma page_size=4096")
    con.execute("pragma journal_mode=delete")
    con.execute("create table t(id integer primary key, v text)")
    con.execute("begin")
    fill(con, 200, "before")
    con.execute("commit")
    before, before_dump = txid_of(con, db), dump(db)
    change_page_size(con, "delete", 8192)
    changed = txid_of(con, db)
    con.execute("insert into t(v) values('after')")
    after = txid_of(con, db)
    con.close()
    # Damage the replica as the old capture did: the change's L0 holds two pages.
    boot = connect()
    at_change = tmp_path / "at-change.db"
    restore(boot, url, at_change, changed)
    raw = at_change.read_bytes()
    l0 = tmp_path / "replica-app.db" / "ltx" / "0" / f"{changed:016x}-{changed:016x}.ltx"
    header = l0.read_bytes()[:100]
    l0.write_bytes(ltx_file(header, [(1, raw[:8192]), (2, raw[8192:16384])]))
    with pytest.raises(sqlite3.OperationalError, match="page size changes from 4096 to 8192.*holds 2 pages"):
        restore(boot, url, tmp_path / "broken.db")
    restore(boot, url, tmp_path / "old.db", before)
    assert dump(tmp_path / "old.db") == before_dump
    # The writer again, with maintenance: it heals the replica with a full snapshot.
    con = open_replicated(connect, db, url, **{"min-interval": "0", "levels": "1s", "snapshot-interval": "2s"})
    deadline = time.time() + 20
    healed = None
    while time.time() < deadline:
        con.execute("insert into t(v) values('tick')")
        sync(con)
        try:
            restore(boot, url, tmp_path / "probe.db", None, "overwrite")
            healed = txid_of(con, db)
            if level_files(store, url, 1):
                break
        except sqlite3.OperationalError as e:
            assert "holds 2 pages" in str(e), str(e)
        time.sleep(0.3)
    assert healed, "the replica was not healed"
    con.execute("insert into t(v) values('healed')")
    latest, latest_dump = txid_of(con, db), dump(db)
    restore(boot, url, tmp_path / "latest.db")
    assert dump(tmp_path / "latest.db") == latest_dump
    assert read_replica(connect, url, latest) == (8192, latest_dump)
    # What the damage lost stays lost, with the same clear error; what came before is intact.
    with pytest.raises(sqlite3.OperationalError, match="holds 2 pages"):
        restore(boot, url, tmp_path / "lost.db", after)
    restore(boot, url, tmp_path / "old-2.db", before)
    assert dump(tmp_path / "old-2.db") == before_dump
    con.close()


# ---- rollback -------------------------------------------------------------------------------


def test_rollback_right_after_reopening_a_wal_database(connect, tmp_path):
    """Reopened, nothing written yet: the WAL is empty and its index gives page size 0. The
    rollback was refused ('the database's is 0'); it reads the database file instead."""
    db = tmp_path / "app.db"
    url = f"file://{tmp_path}/replica"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    con.execute("create table t(id integer primary key, v text)")
    fill(con, 100, "first")
    first, first_dump = txid_of(con, db), dump(db)
    fill(con, 100, "second")
    sync(con)
    con.close()
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    summary = rollback(con, first)
    assert dump(db) == first_dump, summary
    assert summary["txid"] is not None and summary["shipped"], summary
    con.close()


@pytest.mark.parametrize("mode", ["wal", "delete", "truncate", "persist"])
def test_rollback_to_what_the_database_already_holds_writes_nothing(connect, tmp_path, mode):
    """History changed pages and changed them back: the database equals the target, so the
    rollback writes no page and adds no TXID (it rewrote every changed page)."""
    db = tmp_path / "app.db"
    url = f"file://{tmp_path}/replica"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute(f"pragma journal_mode={mode}")
    con.execute("create table t(id integer primary key, v text)")
    fill(con, 200, "row")
    target, target_dump = txid_of(con, db), dump(db)
    con.execute("update t set v = 'changed' where id < 50")
    assert txid_of(con, db) > target
    # A rollback to the target writes pages; a second one to the same target must write none.
    first = rollback(con, target)
    assert first["pages"] > 0 and dump(db) == target_dump, first
    after_first = txid_of(con, db)
    second = rollback(con, target)
    assert second["pages"] == 0 and second["txid"] is None, second
    assert txid_of(con, db) == after_first
    # Rolling back to the state the first rollback produced (equal to the target) too.
    third = rollback(con, after_first)
    assert third["pages"] == 0 and third["txid"] is None, third
    assert dump(db) == target_dump
    # As retention leaves it: a snapshot, and no file covering the history after the target
    # (every page of the target is a candidate); still none is written.
    fork(con, url, f"file://{tmp_path}/snap", after_first - 1)
    name = f"{1:016x}-{after_first - 1:016x}.ltx"
    (tmp_path / "replica" / "ltx" / "9").mkdir(exist_ok=True)
    shutil.copy(tmp_path / "snap" / "ltx" / "9" / name, tmp_path / "replica" / "ltx" / "9" / name)
    l0 = tmp_path / "replica" / "ltx" / "0"
    for txid in range(target + 1, after_first):
        (l0 / f"{txid:016x}-{txid:016x}.ltx").unlink()
    fourth = rollback(con, target)
    assert fourth["whole_database"] and fourth["pages"] == 0 and fourth["txid"] is None, fourth
    assert txid_of(con, db) == after_first and dump(db) == target_dump
    con.close()


def foreign_commit(kind, ext_path, tmp_path, db, url, sql):
    """Commits `sql` on `db` from another connection: a plain connection in this process
    (`plain`), another process through the VFS (`vfs-process`), or another process without
    it (`plain-process`)."""
    if kind == "plain":
        c = sqlite3.connect(str(db), isolation_level=None)
        c.execute("pragma busy_timeout=5000")
        c.execute(sql)
        c.close()
        return
    code = (
        "import sqlite3, sys, urllib.parse\n"
        "ext, db, url, sql, vfs = sys.argv[1:]\n"
        "b = sqlite3.connect(':memory:'); b.enable_load_extension(True); b.load_extension(ext)\n"
        "uri = f'file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe=\"\")}&min-interval=0&lease=off' if vfs == '1' else f'file:{db}'\n"
        "c = sqlite3.connect(uri, uri=True, isolation_level=None)\n"
        "c.execute('pragma busy_timeout=5000')\n"
        "c.execute(sql)\n"
        "c.close()\n"
    )
    subprocess.run([sys.executable, "-c", code, ext_path, str(db), url, sql, "1" if kind == "vfs-process" else "0"],
                   check=True, timeout=60)


@pytest.mark.parametrize("mode", ["wal", "delete", "truncate", "persist"])
@pytest.mark.parametrize("other", ["plain", "plain-process", "vfs-process"])
def test_rollback_after_another_connection_committed(ext_path, connect, tmp_path, mode, other):
    """Another connection commits (a plain connection in this process, another process with
    or without the VFS): the rollback, planned only from what this process captured, wrote
    a mix and left the database malformed. Now the owner captures the other commit first (a
    hand-off, or a full snapshot for a writer without the extension) and the result is the
    target exactly, in the database and in the replica; or, while the replica does not have
    the other commit, a refusal that changes nothing."""
    db = tmp_path / "app.db"
    url = f"file://{tmp_path}/replica"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute(f"pragma journal_mode={mode}")
    con.execute("create table t(id integer primary key, v text)")
    fill(con, 300, "base")
    target, target_dump = txid_of(con, db), dump(db)
    con.execute("update t set v = 'ours' where id <= 100")
    sync(con)
    foreign_commit(other, ext_path, tmp_path, db, url, "insert into t(v) select v || ' foreign' from t")
    before = dump(db)
    assert "foreign" in before
    try:
        summary = rollback(con, target)
    except sqlite3.OperationalError as e:
        assert other == "vfs-process" or "did not capture" in str(e) or "replica does not have" in str(e), str(e)
        assert dump(db) == before
    else:
        assert dump(db) == target_dump, summary
        out = tmp_path / "latest.db"
        restore(connect(), url, out)
        assert dump(out) == target_dump
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    con.close()


# ---- rollback under locking_mode=EXCLUSIVE --------------------------------------------------


@pytest.mark.parametrize("mode", ["delete", "truncate", "persist", "wal"])
def test_rollback_refused_under_exclusive_locking(connect, tmp_path, mode):
    """locking_mode=EXCLUSIVE keeps SQLite's page cache across transactions: the rollback
    reported success and the next write undid it. Now refused, nothing changed."""
    db = tmp_path / "app.db"
    url = f"file://{tmp_path}/replica"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute(f"pragma journal_mode={mode}")
    con.execute("create table t(id integer primary key, v text)")
    fill(con, 50, "a")
    target = txid_of(con, db)
    fill(con, 50, "b")
    sync(con)
    con.execute("pragma locking_mode=exclusive")
    count = con.execute("select count(*) from t").fetchone()[0]  # caches pages, keeps the lock
    why = "WAL index private" if mode == "wal" else "page cache"
    with pytest.raises(sqlite3.OperationalError, match=f"locking_mode=EXCLUSIVE.*{why}"):
        rollback(con, target)
    con.execute("insert into t(v) values('next')")
    assert con.execute("select count(*) from t").fetchone()[0] == count + 1
    con.close()
    assert dump(db).count('INSERT INTO "t"') == count + 1


# ---- fork into a destination a writer has open ----------------------------------------------

WRITER = r"""
import sqlite3, sys, time, urllib.parse
ext, db, url, ready, go, ttl = sys.argv[1:]
b = sqlite3.connect(':memory:'); b.enable_load_extension(True); b.load_extension(ext)
c = sqlite3.connect(f'file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe="")}&min-interval=0&lease-ttl={ttl}',
                    uri=True, isolation_level=None)
c.execute('pragma user_version').fetchone()  # opened, empty: nothing to ship yet
# A sync asks the store: it takes the lease (an open alone asks nothing of an empty replica).
c.execute('select litestream_sync(10000)').fetchone()
open(ready, 'w').write('ready')
import os
while not os.path.exists(go):
    time.sleep(0.05)
c.execute('create table w(x)')
c.execute("insert into w values('after the fork')")
print(c.execute('select litestream_sync(10000)').fetchone()[0])
c.close()
"""


def test_fork_refused_while_a_writer_holds_the_destination(ext_path, connect, tmp_path):
    """A writer opened on the destination (another process) holds its lease: the fork
    used to pass the emptiness check and ignore it, and the writer then shipped L0/1-1
    beside the fork's L9/1-N. Now the fork refuses; once the writer is gone a fork goes
    through, and a writer opening afterwards continues after the fork's TXID."""
    src_url = f"file://{tmp_path}/src"
    dst_url = f"file://{tmp_path}/dst"
    src = open_replicated(connect, tmp_path / "src.db", src_url, **{"min-interval": "0"})
    src.execute("create table t(id integer primary key, v text)")
    fill(src, 50, "src")
    for i in range(3):
        src.execute("insert into t(v) values(?)", (f"more {i}",))
    n = txid_of(src, tmp_path / "src.db")
    src_dump = dump(tmp_path / "src.db")
    ready, go = tmp_path / "ready", tmp_path / "go"
    w = subprocess.Popen([sys.executable, "-c", WRITER, ext_path, str(tmp_path / "w.db"), dst_url, str(ready), str(go), "30s"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        while not ready.exists() and time.time() < deadline:
            time.sleep(0.05)
        lock = tmp_path / "dst" / "lock.json"
        while not lock.exists() and time.time() < deadline:
            time.sleep(0.05)
        assert lock.exists(), "the writer took no lease"
        boot = connect()
        with pytest.raises(sqlite3.OperationalError, match="leased by another writer"):
            fork(boot, src_url, dst_url, 2)
        go.write_text("go")
        out, err = w.communicate(timeout=60)
        assert w.returncode == 0, err
    finally:
        if w.poll() is None:
            w.kill()
    # The writer shipped alone; the destination is its replica now, so a fork is refused.
    with pytest.raises(sqlite3.OperationalError, match="already holds LTX files"):
        fork(boot, src_url, dst_url)
    # A fresh destination: the fork takes and gives back its lease; a writer opening
    # afterwards (from a restore of the fork) continues after the fork's TXID.
    dst2 = f"file://{tmp_path}/dst2"
    summary = fork(boot, src_url, dst2)
    assert summary["txid"] == f"{n:016x}"
    restore(boot, dst2, tmp_path / "restored.db")
    w2 = open_replicated(connect, tmp_path / "restored.db", dst2, **{"min-interval": "0"})
    w2.execute("insert into t(v) values('continued')")
    assert txid_of(w2, tmp_path / "restored.db") == n + 1
    w2.close()
    assert sorted(os.listdir(tmp_path / "dst2" / "ltx" / "0")) == [f"{n + 1:016x}-{n + 1:016x}.ltx"]
    assert dump(tmp_path / "restored.db") != src_dump


def test_fork_fences_a_writer_whose_lease_lapsed(ext_path, connect, tmp_path):
    """A writer opened the destination (lease taken, nothing shipped), then stalled (SIGSTOP)
    until its lease lapsed: the fork takes the lease and writes L9/1-N. When the writer
    resumes it must not ship TXID 1 beside it: taking the lease anew, it reads the replica's
    position again and continues after N."""
    src_url = f"file://{tmp_path}/src"
    dst_url = f"file://{tmp_path}/dst"
    src = open_replicated(connect, tmp_path / "src.db", src_url, **{"min-interval": "0"})
    src.execute("create table t(id integer primary key, v text)")
    fill(src, 20, "src")
    src.execute("insert into t(v) values('x')")
    n = txid_of(src, tmp_path / "src.db")
    ready, go = tmp_path / "ready", tmp_path / "go"
    w = subprocess.Popen([sys.executable, "-c", WRITER, ext_path, str(tmp_path / "w.db"), dst_url, str(ready), str(go), "3s"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 20
        lock = tmp_path / "dst" / "lock.json"
        while not (ready.exists() and lock.exists()) and time.time() < deadline:
            time.sleep(0.05)
        assert lock.exists(), "the writer took no lease"
        w.send_signal(signal.SIGSTOP)
        time.sleep(3.5)  # lease-ttl=3s: it lapses while the writer is stopped
        summary = fork(connect(), src_url, dst_url)
        assert summary["txid"] == f"{n:016x}"
        go.write_text("go")
        w.send_signal(signal.SIGCONT)
        out, err = w.communicate(timeout=60)
        assert w.returncode == 0, err
    finally:
        if w.poll() is None:
            w.send_signal(signal.SIGCONT)
            w.kill()
    l0_dir = tmp_path / "dst" / "ltx" / "0"
    l0 = sorted(os.listdir(l0_dir)) if l0_dir.exists() else []
    assert l0 and all(int(name[:16], 16) > n for name in l0), l0
    # The destination restores to the writer's database (its resync after the fork).
    restore(connect(), dst_url, tmp_path / "dst.db")
    assert "after the fork" in dump(tmp_path / "dst.db")


def test_fork_without_the_lease_when_told(connect, tmp_path, monkeypatch):
    """LITESTREAM_LEASE=off (as for writers, for stores without conditional writes): the fork
    does not take the lease; only the emptiness check keeps it out of a live replica."""
    src_url = f"file://{tmp_path}/src"
    src = open_replicated(connect, tmp_path / "src.db", src_url, **{"min-interval": "0"})
    src.execute("create table t(x)")
    src.execute("insert into t values(1)")
    sync(src)
    # A lease someone else holds on the destination.
    (tmp_path / "dst").mkdir()
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 600))
    (tmp_path / "dst" / "lock.json").write_text(json.dumps({"generation": 1, "expires_at": until, "owner": "elsewhere:1"}))
    boot = connect()
    with pytest.raises(sqlite3.OperationalError, match=r"leased by another writer \(elsewhere:1"):
        fork(boot, src_url, f"file://{tmp_path}/dst")
    assert not (tmp_path / "dst" / "ltx").exists()
    monkeypatch.setenv("LITESTREAM_LEASE", "off")
    fork(boot, src_url, f"file://{tmp_path}/dst")
    assert json.loads((tmp_path / "dst" / "lock.json").read_text())["owner"] == "elsewhere:1"
    with pytest.raises(sqlite3.OperationalError, match="already holds LTX files"):
        fork(boot, src_url, f"file://{tmp_path}/dst")
    src.close()
