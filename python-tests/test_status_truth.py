"""litestream_status() tells the truth while the store is up but silent (connections
accepted, never answered): the upload in flight is named, and a lease that could not be
renewed shows as expired. When the store answers again, replication goes on and the status
clears."""
import json
import time
import urllib.parse
import uuid

from helpers import BlackHole, Store, dump, require
from test_replication import open_replicated, sync
from test_restore import restore


def status(con, db):
    doc = json.loads(con.execute("select litestream_status()").fetchone()[0])
    return next(d for d in doc["databases"] if d["path"] == str(db))


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
