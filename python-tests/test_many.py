"""Many databases from one process: a base URL set from SQL (Litestream's directory layout),
opening and closing hundreds of databases over and over leaks nothing, and many replicas
share one cache budget."""
import json
import sqlite3
import subprocess
import sys
import urllib.parse

import pytest

from helpers import Store, dump, litestream_restore
from test_replication import sync


def test_base_url_from_sql(connect, tmp_path, monkeypatch):
    boot = connect()
    monkeypatch.delenv("LITESTREAM_REPLICA_URL", raising=False)
    monkeypatch.setenv("LITESTREAM_REPLICA_BASE_URL", f"file://{tmp_path}/from-env")
    data = tmp_path / "data"
    (data / "tenants").mkdir(parents=True)
    setting = json.loads(boot.execute("select litestream_base_url(?, ?)", (f"file://{tmp_path}/base", str(data))).fetchone()[0])
    assert setting == {"base_url": f"file://{tmp_path}/base", "data_dir": str(data)}
    try:
        expected = {}
        for name in ("tenants/a.db", "tenants/b.db", "c.db"):
            db = data / name
            con = sqlite3.connect(f"file:{db}?vfs=litestream", uri=True, isolation_level=None)
            con.execute("create table t(x)")
            con.execute("insert into t values(?)", (name,))
            sync(con)
            expected[name] = dump(db)
            con.close()
        # Litestream's directory layout: <base>/<path relative to the data dir>.
        store = Store("file", tmp_path)
        for name, want in expected.items():
            out = tmp_path / ("r-" + name.replace("/", "-"))
            assert dump(litestream_restore(store, f"file://{tmp_path}/base/{name}", out)) == want
        assert not (tmp_path / "from-env").exists(), "the SQL setting wins over the environment"
        # A database outside the data directory is an error that says so.
        with pytest.raises(sqlite3.OperationalError):
            sqlite3.connect(f"file:{tmp_path}/elsewhere.db?vfs=litestream", uri=True).execute("create table t(x)")
        assert "not under" in json.loads(boot.execute("select litestream_status()").fetchone()[0])["last_open_error"]
        with pytest.raises(sqlite3.OperationalError, match="litestream_base_url"):
            boot.execute("select litestream_base_url('ftp://nope')").fetchone()
    finally:
        cleared = json.loads(boot.execute("select litestream_base_url(NULL)").fetchone()[0])
    # Cleared: the environment applies again.
    assert cleared["base_url"] == f"file://{tmp_path}/from-env"


LEAK_CHECK = r"""
import json, os, resource, sqlite3, sys, time
ext, root, n, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
boot = sqlite3.connect(":memory:"); boot.enable_load_extension(True); boot.load_extension(ext)
boot.execute("select litestream_base_url(?, ?)", (f"file://{root}/replicas", f"{root}/dbs"))
os.makedirs(f"{root}/dbs", exist_ok=True)
def snapshot():
    status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": int(status["Threads"]),
            "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
            **{k: len(v) if k == "databases" else v for k, v in
               json.loads(boot.execute("select litestream_status()").fetchone()[0]).items()
               if k in ("databases", "closing")}}
out = []
for r in range(rounds):
    cons = []
    for i in range(n):
        con = sqlite3.connect(f"file:{root}/dbs/db{i}.db?vfs=litestream&min-interval=0", uri=True, isolation_level=None)
        if r == 0:
            con.execute("pragma journal_mode=wal")
            con.execute("create table t(id integer primary key, v text)")
        con.execute("insert into t(v) values(?)", (f"round {r}",))
        cons.append(con)
    boot.execute("select litestream_sync(60000)").fetchone()
    open_state = snapshot()
    for con in cons:
        con.close()
    # Replicators finish in the background (the status counts them as closing): once none
    # is left, every descriptor of theirs is closed.
    deadline, closed = time.time() + 30, snapshot()
    while closed["closing"] and time.time() < deadline:
        time.sleep(0.05)
        closed = snapshot()
    out.append({"open": open_state, "closed": closed})
print(json.dumps(out))
"""


def test_opening_and_closing_many_databases_leaks_nothing(ext_path, tmp_path):
    n, rounds = 200, 5
    p = subprocess.run([sys.executable, "-c", LEAK_CHECK, ext_path, str(tmp_path), str(n), str(rounds)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout.strip().splitlines()[-1])
    first, last = result[0], result[-1]
    # While open, each database is counted; once closed, none remains.
    assert all(r["open"]["databases"] == n and r["closed"]["databases"] == 0 for r in result), result
    assert all(r["closed"]["closing"] == 0 for r in result), result
    # Threads: a fixed pool whatever the number of databases.
    assert max(r["open"]["threads"] for r in result) <= 16, result
    # No descriptor, thread or (beyond noise) memory survives a round: nothing grows with
    # the rounds (a leak of even one descriptor a round would show as +4).
    assert last["closed"]["fds"] <= first["closed"]["fds"], result
    assert last["closed"]["threads"] <= first["closed"]["threads"], result
    assert last["closed"]["rss_mb"] - result[1]["closed"]["rss_mb"] < 16, result
    # Every database's replica holds every round.
    boot = sqlite3.connect(":memory:")
    boot.enable_load_extension(True)
    boot.load_extension(ext_path)
    for i in (0, n // 2, n - 1):
        out = tmp_path / f"r{i}.db"
        boot.execute("select litestream_restore(?, ?)", (f"file://{tmp_path}/replicas/db{i}.db", str(out))).fetchone()
        rows = [r[0] for r in sqlite3.connect(out).execute("select v from t order by id")]
        assert rows == [f"round {r}" for r in range(rounds)]


def test_many_replicas_share_one_cache(connect, tmp_path, monkeypatch):
    """Readers of 50 replicas in one process, each correct, all under one cache budget."""
    boot = connect()
    urls = []
    for i in range(50):
        db = tmp_path / f"w{i}.db"
        url = f"file://{tmp_path}/replicas/w{i}"
        con = sqlite3.connect(f"file:{db}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}", uri=True,
                              isolation_level=None)
        con.execute("create table t(id integer primary key, v blob)")
        con.execute("with recursive c(i) as (select 1 union all select i + 1 from c where i < 40) "
                    "insert into t(v) select randomblob(3000) from c")
        con.execute("insert into t(v) values(?)", (f"db {i}",))
        sync(con)
        con.close()
        urls.append(url)
    readers = [sqlite3.connect(f"file:{tmp_path}/r{i}.db?vfs=litestream-replica&replica={urllib.parse.quote(u, safe='')}",
                               uri=True) for i, u in enumerate(urls)]
    for i, r in enumerate(readers):
        assert r.execute("select count(*), max(case when typeof(v) = 'text' then v end) from t").fetchone() == (41, f"db {i}")
    status = json.loads(boot.execute("select litestream_status()").fetchone()[0])
    mine = [s for s in status["replicas"] if s["replica"].startswith(f"file://{tmp_path}/replicas/")]
    assert len(mine) == 50
    # One budget for all: the default 64 MiB, well above these 50 × ~130 KB.
    assert len({s["cache_bytes"] for s in mine}) == 1
    for r in readers:
        r.close()
