"""The `litestream` VFS from a Python application: randomized workloads replicate to every
real store kind, and the real `litestream restore` 0.5.17 rebuilds exactly the source."""
import json
import pathlib
import random
import sqlite3
import subprocess
import sys
import urllib.parse

import pytest

from helpers import Store, dump, litestream_restore, random_workload

STORES = ["file", "moto", "ceph"]


def open_replicated(connect, path, url, **params):
    connect()  # loads the extension, which registers the VFS for the process
    extra = "".join(f"&{k}={v}" for k, v in params.items())
    # The replica URL is one URI parameter: its own ? and & must be percent-encoded.
    replica = urllib.parse.quote(url, safe="")
    con = sqlite3.connect(f"file:{path}?vfs=litestream&replica={replica}{extra}", uri=True, isolation_level=None)
    return con


def sync(con, timeout_ms=30000):
    return json.loads(con.execute("select litestream_sync(?)", (timeout_ms,)).fetchone()[0])


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.parametrize("journal_mode,page_size", [("wal", 4096), ("delete", 1024), ("wal", 65536), ("truncate", 4096), ("persist", 4096)])
def test_randomized_workload_restores_with_litestream(connect, tmp_path, monkeypatch, kind, journal_mode, page_size):
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url)
    con.execute(f"pragma page_size={page_size}")
    con.execute(f"pragma journal_mode={journal_mode}")
    rng = random.Random(f"{kind}-{journal_mode}-{page_size}")
    random_workload(con, rng, 40)
    # A second connection writes too.
    other = open_replicated(connect, db, url)
    random_workload(other, rng, 10, allow_vacuum=False)
    other.close()
    sync(con)
    expected = dump(db)
    out = litestream_restore(store, url, tmp_path / "restored.db")
    assert dump(out) == expected
    con.close()


@pytest.mark.parametrize("kind", ["file", "moto"])
def test_reopen_continues_the_chain(connect, tmp_path, monkeypatch, kind):
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url)
    con.execute("pragma journal_mode=wal")
    random_workload(con, random.Random(1), 10)
    first = sync(con)[str(db)]
    con.close()
    con = open_replicated(connect, db, url)
    random_workload(con, random.Random(2), 10)
    second = sync(con)[str(db)]
    assert int(second, 16) > int(first, 16)
    status = json.loads(con.execute("select litestream_status()").fetchone()[0])
    mine = [d for d in status["databases"] if d["path"] == str(db)][0]
    assert mine["remote_txid"] == second and mine["last_error"] is None
    expected = dump(db)
    con.close()
    assert dump(litestream_restore(store, url, tmp_path / "r.db")) == expected
    # No full resync happened: only the first file is a snapshot-sized one.
    if kind == "file":
        names = sorted(p.name for p in (tmp_path / "replica-app.db/ltx/0").iterdir())
        txids = [int(n.split("-")[0], 16) for n in names]
        assert txids == list(range(1, len(txids) + 1)), names


def test_writes_without_the_vfs_are_healed(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url)
    con.execute("pragma journal_mode=wal")
    random_workload(con, random.Random(3), 10)
    sync(con)
    con.close()
    # Plain SQLite writes and checkpoints behind our back.
    plain = sqlite3.connect(db, isolation_level=None)
    plain.execute("insert into t(k, v) values(424242, 'outside')")
    plain.execute("pragma wal_checkpoint(truncate)")
    plain.close()
    con = open_replicated(connect, db, url)
    sync(con)
    expected = dump(db)
    assert "424242" in expected
    con.close()
    assert dump(litestream_restore(store, url, tmp_path / "r.db")) == expected


def test_replaced_database_file_is_healed(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url)
    random_workload(con, random.Random(4), 5)
    sync(con)
    con.close()
    db.unlink()
    fresh = sqlite3.connect(db)
    fresh.execute("create table other(x)")
    fresh.execute("insert into other values('replaced')")
    fresh.commit()
    fresh.close()
    con = open_replicated(connect, db, url)
    sync(con)
    con.close()
    restored = dump(litestream_restore(store, url, tmp_path / "r.db"))
    assert "replaced" in restored and "CREATE TABLE t" not in restored


def test_wiped_replica_is_rebuilt(connect, tmp_path):
    import shutil
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url)
    con.execute("pragma journal_mode=wal")
    random_workload(con, random.Random(5), 5)
    sync(con)
    con.close()
    shutil.rmtree(tmp_path / "replica-app.db")
    con = open_replicated(connect, db, url)
    con.execute("insert into t(k, v) values(7, 'after wipe')")
    sync(con)
    expected = dump(db)
    con.close()
    assert dump(litestream_restore(store, url, tmp_path / "r.db")) == expected


def test_bad_configuration_is_a_clear_error_at_open(connect, tmp_path):
    connect()
    for uri, needle in [
        (f"file:{tmp_path}/a.db?vfs=litestream&replica=ftp://x/y", "unsupported scheme"),
        (f"file:{tmp_path}/b.db?vfs=litestream&replica=file:///tmp/x&colour=red", "unknown URI parameter"),
        (f"file:{tmp_path}/c.db?vfs=litestream", "no replica"),
    ]:
        with pytest.raises(sqlite3.OperationalError, match="unable to open"):
            sqlite3.connect(uri, uri=True).execute("select 1").fetchall()
        status = json.loads(connect().execute("select litestream_status()").fetchone()[0])
        assert needle in status["last_open_error"], status["last_open_error"]


@pytest.mark.parametrize("checkpoint", ["PASSIVE", "FULL", "RESTART", "TRUNCATE"])
def test_checkpoints_of_every_kind_lose_nothing(connect, tmp_path, checkpoint):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "1s"})  # keep commits unshipped
    con.execute("pragma journal_mode=wal")
    con.execute("pragma wal_autocheckpoint=5")  # autocheckpoints too
    reader = open_replicated(connect, db, url)
    rng = random.Random(checkpoint)
    for i in range(30):
        random_workload(con, rng, 1, allow_vacuum=False)
        if i % 7 == 0:
            # By the app, and by another connection, while commits are still unshipped.
            (con if i % 2 else reader).execute(f"pragma wal_checkpoint({checkpoint})").fetchall()
    sync(con)
    expected = dump(db)
    reader.close()
    con.close()
    assert dump(litestream_restore(store, url, tmp_path / "r.db")) == expected


def test_journal_mode_switches_while_open(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url)
    rng = random.Random(9)
    for mode in ["wal", "delete", "wal", "truncate", "persist", "wal"]:
        assert con.execute(f"pragma journal_mode={mode}").fetchone()[0] == mode
        random_workload(con, rng, 6)
    con.execute("pragma auto_vacuum=incremental")
    con.execute("vacuum")
    con.execute("delete from t where id % 3 = 0")
    con.execute("pragma incremental_vacuum(5)")
    sync(con)
    expected = dump(db)
    con.close()
    assert dump(litestream_restore(store, url, tmp_path / "r.db")) == expected


def test_each_idle_commit_is_its_own_txid(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    con.execute("create table t(x)")
    sync(con)
    states = []
    for i in range(5):
        con.execute("insert into t values(?)", (i,))
        txid = int(sync(con)[str(db)], 16)
        states.append((txid, dump(db)))
    assert [t for t, _ in states] == list(range(states[0][0], states[0][0] + 5))
    for txid, expected in states:
        assert dump(litestream_restore(store, url, tmp_path / f"r{txid}.db", txid=txid)) == expected
    con.close()


def test_replica_from_environment(connect, tmp_path, monkeypatch):
    connect()
    (tmp_path / "data" / "tenants").mkdir(parents=True)
    monkeypatch.setenv("LITESTREAM_REPLICA_BASE_URL", f"file://{tmp_path}/base")
    monkeypatch.setenv("LITESTREAM_DATA_DIR", str(tmp_path / "data"))
    db = tmp_path / "data" / "tenants" / "a.db"
    con = sqlite3.connect(f"file:{db}?vfs=litestream", uri=True, isolation_level=None)
    con.execute("create table t(x)")
    con.execute("insert into t values('tenant a')")
    sync(con)
    expected = dump(db)
    con.close()
    # Litestream's directory layout: <base>/<path relative to the data dir>.
    store = Store("file", tmp_path)
    assert dump(litestream_restore(store, f"file://{tmp_path}/base/tenants/a.db", tmp_path / "r.db")) == expected
    # One exact URL wins over the base.
    monkeypatch.setenv("LITESTREAM_REPLICA_URL", f"file://{tmp_path}/exact")
    db2 = tmp_path / "data" / "b.db"
    con = sqlite3.connect(f"file:{db2}?vfs=litestream", uri=True, isolation_level=None)
    con.execute("create table u(y)")
    sync(con)
    con.close()
    assert (tmp_path / "exact" / "ltx" / "0").is_dir()


@pytest.mark.parametrize("kind", ["file", "moto"])
def test_file_names_with_url_characters_replicate_under_their_own_names(connect, tmp_path, monkeypatch, kind):
    """`?`, `#` and `%` in a database's file name stay part of its replica's path or key
    (SQLite's uri.test opens `test.db?mork=1#boris`) and restore from the escaped URL.
    (Litestream 0.5.17 finds no files under such a `file://` URL, escaped or not, nor under
    one with a space.)"""
    from urllib.parse import quote, urlparse
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    restorer = connect()
    base = store.url("base")
    path, _, query = base.partition("?")
    monkeypatch.setenv("LITESTREAM_REPLICA_BASE_URL", base)
    names = ["test.db?mork=1#boris", "c#d.db", "e%20f.db", "g?h"]
    for i, name in enumerate(names):
        db = tmp_path / name
        con = sqlite3.connect(f"file:{quote(str(db))}?vfs=litestream", uri=True, isolation_level=None)
        con.execute("create table t(x)")
        con.execute("insert into t values(?)", (name,))
        sync(con)
        con.close()
        url = f"{path}/{quote(name)}" + (f"?{query}" if query else "")
        restorer.execute("select litestream_restore(?, ?)", (url, str(tmp_path / f"r{i}.db")))
        assert dump(tmp_path / f"r{i}.db") == dump(db), name
    # Each replica is under the file's own name, unescaped.
    if kind == "file":
        under = sorted(p.name for p in pathlib.Path(urlparse(path).path).iterdir())
    else:
        import boto3
        s3 = boto3.client("s3", endpoint_url=store.endpoint, aws_access_key_id=store.access_key,
                          aws_secret_access_key=store.secret_key, region_name="us-east-1")
        u = urlparse(path)
        prefix = u.path.strip("/") + "/"
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=u.netloc, Prefix=prefix).get("Contents", [])]
        under = sorted({k[len(prefix):].split("/")[0] for k in keys})
    assert under == sorted(names), under


def test_store_outage_never_fails_local_commits(connect, tmp_path):
    """A replica that cannot be reached: commits succeed, status says why, nothing is lost."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"s3://bkt/app.db?endpoint=http://127.0.0.1:{port}&region=us-east-1"
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url)
    con.execute("pragma journal_mode=wal")
    random_workload(con, random.Random(11), 10)
    with pytest.raises(sqlite3.OperationalError, match="timed out"):
        con.execute("select litestream_sync(4000)").fetchone()
    status = json.loads(con.execute("select litestream_status()").fetchone()[0])
    mine = [d for d in status["databases"] if d["path"] == str(db)][0]
    assert "127.0.0.1" in (mine["last_error"] or "") or "s3://bkt" in (mine["last_error"] or ""), mine
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    con.close()


FIRST_SNAPSHOT = """
import resource, sqlite3, sys, urllib.parse
ext, db, url = sys.argv[1:4]
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(ext)
plain = sqlite3.connect(db, isolation_level=None)
plain.execute("create table t(v)")
# 64 MB of random bytes: LZ4 cannot shrink them, so the snapshot LTX is as large.
plain.execute("insert into t select randomblob(4000) from "
              "(with recursive n(i) as (select 1 union all select i + 1 from n where i < 16000) select i from n)")
plain.close()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}", uri=True)
con.execute("select litestream_sync(120000)").fetchone()
con.close()
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.parametrize("kind", ["file", "moto"])
def test_first_snapshot_of_a_large_database_is_not_built_in_memory(connect, ext_path, tmp_path, kind):
    """Opening a 64 MB database against an empty replica ships a full snapshot (TXID 1): it is
    encoded into the spool and streamed from there, so the process does not grow by its size."""
    store = Store(kind, tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    r = subprocess.run([sys.executable, "-c", FIRST_SNAPSHOT, ext_path, str(db), url],
                       env=store.env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    before_kb, after_kb = map(int, r.stdout.split())
    assert after_kb - before_kb < 24 * 1024, f"peak RSS grew by {(after_kb - before_kb) // 1024} MB"
    assert dump(litestream_restore(store, url, tmp_path / "restored.db")) == dump(db)


KILLED_AFTER_SNAPSHOT = FIRST_SNAPSHOT.replace("con.close()\n", "print('ready', flush=True)\nsys.stdin.read()\n")


def test_position_after_a_spooled_snapshot_survives_a_kill(connect, ext_path, tmp_path):
    """A snapshot encoded into the spool records the replica's position once uploaded, so a
    writer killed right after does not ship the whole database again at the next open."""
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    child = subprocess.Popen([sys.executable, "-c", KILLED_AFTER_SNAPSHOT, ext_path, str(db), url],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=store.env())
    assert child.stdout.readline().strip() == b"ready"
    child.kill()
    child.wait()
    con = open_replicated(connect, db, url)
    con.execute("insert into t values (1)")
    sync(con)
    con.close()
    l0 = tmp_path / "replica-app.db" / "ltx" / "0"
    sizes = {p.name: p.stat().st_size for p in l0.iterdir() if p.name.endswith(".ltx")}
    assert sorted(sizes) == ["0000000000000001-0000000000000001.ltx", "0000000000000002-0000000000000002.ltx"], sizes
    assert sizes["0000000000000002-0000000000000002.ltx"] < 1 << 20, sizes
    assert dump(litestream_restore(store, url, tmp_path / "restored.db")) == dump(db)
