"""litestream_status() tells the truth while the store is up but silent (connections
accepted, never answered): the upload in flight is named, and a lease that could not be
renewed shows as expired. When the store answers again, replication goes on and the status
clears."""
import json
import time
import urllib.parse
import uuid

import pytest

from helpers import BlackHole, Store, dump, require
from test_replication import open_replicated, sync
from test_restore import restore


def status(con, db):
    doc = json.loads(con.execute("select litestream_status()").fetchone()[0])
    return next(d for d in doc["databases"] if d["path"] == str(db))


@pytest.mark.servers
def test_a_silent_store_shows_in_status(connect, tmp_path, monkeypatch):
    store = Store("moto", tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    hole = BlackHole(store.endpoint)
    url = (f"s3://{store.bucket}/{uuid.uuid4().hex}/app.db?endpoint={hole.url}"
           f"&region=us-east-1&force-path-style=true")
    db = tmp_path / "app.db"
    try:
        con = open_replicated(connect, db, url, **{"min-interval": "0", "lease-ttl": "2s"})
        con.execute("create table t(x)")
        con.execute("insert into t values(1)")
        sync(con)
        assert status(con, db)["lease"]["state"] == "held"
        hole.hole()
        con.execute("insert into t values(2)")  # the application never waits on the store
        deadline = time.time() + 30
        while True:
            st = status(con, db)
            if (st["last_error"] or "").startswith("the store has not answered") and st["lease"]["state"] == "expired":
                break
            assert time.time() < deadline, f"status still looks healthy: {st}"
            time.sleep(0.2)
        assert st["remote_txid"] < st["local_txid"], st
        hole.unhole()
        sync(con, 60000)
        # An idle database lets its lease lapse: the next commit takes it again.
        con.execute("insert into t values(3)")
        sync(con, 60000)
        st = status(con, db)
        assert st["last_error"] is None and st["lease"]["state"] == "held", st
        out = tmp_path / "out.db"
        restore(con, url, out)
        assert dump(out) == dump(db)
        con.close()
    finally:
        hole.close()


@pytest.mark.servers
def test_a_silent_store_shows_in_a_replica_readers_status(connect, tmp_path, monkeypatch):
    """A reader following a replica whose store goes silent: its poll hangs, and the replica's
    status says so (not a null last_error with a growing lag); when the store answers again
    the reader catches up and the status clears."""
    import sqlite3
    store = Store("moto", tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    hole = BlackHole(store.endpoint)
    prefix = uuid.uuid4().hex
    direct = (f"s3://{store.bucket}/{prefix}/app.db?endpoint={store.endpoint}"
              f"&region=us-east-1&force-path-style=true")
    silent = direct.replace(store.endpoint, hole.url)
    db = tmp_path / "app.db"
    try:
        con = open_replicated(connect, db, direct, **{"min-interval": "0"})
        con.execute("create table t(x)")
        con.execute("insert into t values(1)")
        sync(con)
        reader = sqlite3.connect(f"file:{tmp_path}/view.db?vfs=litestream-replica&poll-interval=100ms"
                                 f"&replica={urllib.parse.quote(silent, safe='')}", uri=True)
        assert reader.execute("select count(*) from t").fetchone() == (1,)

        def replica_status():
            doc = json.loads(con.execute("select litestream_status()").fetchone()[0])
            return next(r for r in doc["replicas"] if r["replica"].startswith("s3://"))

        hole.hole()
        deadline = time.time() + 30
        while not (replica_status()["last_error"] or "").startswith("the store has not answered"):
            assert time.time() < deadline, f"the replica's status looks healthy: {replica_status()}"
            time.sleep(0.2)
        con.execute("insert into t values(2)")
        sync(con)
        hole.unhole()
        deadline = time.time() + 60
        while reader.execute("select count(*) from t").fetchone() != (2,):
            assert time.time() < deadline, "the reader did not catch up"
            time.sleep(0.1)
        deadline = time.time() + 30
        while replica_status()["last_error"] is not None:
            assert time.time() < deadline, f"the status did not clear: {replica_status()}"
            time.sleep(0.1)
        reader.close()
        con.close()
    finally:
        hole.close()
