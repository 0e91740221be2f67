"""litestream_restore(): every recorded commit and timestamps between commits restore exactly;
bad objects give clear errors and leave nothing behind; a restored database continues the chain."""
import json
import os
import random
import sqlite3
import time

import pytest

from helpers import Proxy, Store, dump, litestream_restore, proxied_moto, random_workload
from test_replication import open_replicated, sync


def restore(con, url, out, target=None, option=None):
    args = [url, str(out)] + ([target] if target is not None or option else []) + ([option] if option else [])
    sql = "select litestream_restore(" + ", ".join("?" * len(args)) + ")"
    return json.loads(con.execute(sql, args).fetchone()[0])


@pytest.mark.parametrize("kind", ["file", "moto", "ceph"])
def test_every_commit_and_timestamp_restores_exactly(connect, tmp_path, monkeypatch, kind):
    store = Store(kind, tmp_path)
    for k, v in store.env().items():
        monkeypatch.setenv(k, v)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    rng = random.Random(kind)
    recorded = []  # (txid, dump, time after the commit reached the replica)
    for _ in range(12):
        random_workload(con, rng, 1)
        txid = int(sync(con)[str(db)], 16)
        recorded.append((txid, dump(db), time.time()))
        time.sleep(0.02)
    for i, (txid, expected, _) in enumerate(recorded):
        out = tmp_path / f"t{i}.db"
        summary = restore(con, url, out, txid)
        assert int(summary["txid"], 16) == txid and summary["files"] >= 1
        assert dump(out) == expected, f"TXID {txid}"
    # Timestamps between commits (SQLite's date-time form, UTC) restore the earlier state.
    for i, (txid, expected, synced_at) in enumerate(recorded[:-1]):
        between = synced_at + 0.01
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(between)) + f".{int(between * 1000) % 1000:03d}"
        out = tmp_path / f"ts{i}.db"
        restore(con, url, out, stamp)
        assert dump(out) == expected, f"timestamp {stamp} (after TXID {txid})"
    # Latest, by hex TXID, and refusal to overwrite.
    out = tmp_path / "latest.db"
    summary = restore(con, url, out)
    assert summary["txid"] == f"{recorded[-1][0]:016x}"
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        restore(con, url, out)
    restore(con, url, out, f"{recorded[3][0]:016x}", "overwrite")
    assert dump(out) == recorded[3][1]
    # A TXID after the latest is named as such (not "outside retention"), and leaves nothing.
    beyond = recorded[-1][0] + 3
    with pytest.raises(sqlite3.OperationalError,
                       match=f"TXID 0x{beyond:016x} is after the latest TXID in the replica \\(0x{recorded[-1][0]:016x}\\)"):
        restore(con, url, tmp_path / "beyond.db", beyond)
    assert not (tmp_path / "beyond.db").exists()
    con.close()


def test_restored_database_continues_the_chain(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url)
    con.execute("pragma journal_mode=wal")
    random_workload(con, random.Random(1), 20)
    last = int(sync(con)[str(db)], 16)
    con.close()
    # A new node restores the latest state and carries on writing to the same replica.
    node2 = tmp_path / "node2.db"
    restore(connect(), url, node2)
    con = open_replicated(connect, node2, url)
    con.execute("insert into t(k, v) values(31337, 'after restore')")
    nxt = int(sync(con)[str(node2)], 16)
    assert nxt == last + 1
    l0 = tmp_path / "replica-app.db" / "ltx" / "0" / f"{nxt:016x}-{nxt:016x}.ltx"
    # A full resync would hold every page (the blobs are random: they do not compress).
    assert l0.stat().st_size < node2.stat().st_size / 4, "continued with a small L0, not a full resync"
    expected = dump(node2)
    con.close()
    assert dump(litestream_restore(store, url, tmp_path / "check.db")) == expected


def test_bad_objects_give_clear_errors_and_leave_nothing(connect, tmp_path):
    store = Store("file", tmp_path)
    url = store.url("app.db")
    db = tmp_path / "app.db"
    con = open_replicated(connect, db, url, **{"min-interval": "0"})
    con.execute("pragma journal_mode=wal")
    for i in range(4):
        random_workload(con, random.Random(i), 1)
        sync(con)
    con.close()
    l0 = tmp_path / "replica-app.db" / "ltx" / "0"
    names = sorted(os.listdir(l0))
    victim = l0 / names[1]
    original = victim.read_bytes()
    cases = {
        "corrupt": original[:150] + bytes([original[150] ^ 0xFF]) + original[151:],
        "truncated": original[: len(original) // 2],
    }
    boot = connect()
    for what, body in cases.items():
        victim.write_bytes(body)
        out = tmp_path / f"{what}.db"
        with pytest.raises(sqlite3.OperationalError) as e:
            restore(boot, url, out)
        assert names[1] in str(e.value), f"{what}: {e.value}"
        assert not out.exists() and not (tmp_path / f"{what}.db.tmp").exists()
        assert not (tmp_path / f"{what}.db.restore-tmp").exists()
    victim.unlink()
    out = tmp_path / "missing.db"
    with pytest.raises(sqlite3.OperationalError, match="non-contiguous|no files"):
        restore(boot, url, out)
    assert not out.exists()
    with pytest.raises(sqlite3.OperationalError, match="no backup|no LTX files"):
        restore(boot, f"file://{tmp_path}/nothing-here", tmp_path / "none.db")
    with pytest.raises(sqlite3.OperationalError, match="not a TXID"):
        restore(boot, url, tmp_path / "x.db", "next tuesday")


class CuttingProxy(Proxy):
    """Once armed, sends only the first `cut_after` bytes of each large GET body (once per
    object) and drops the connection, like a network that fails mid-download."""
    cut_after = None
    cuts = None  # paths cut
    gets = None  # (path, Range header) of every GET

    def do_GET(self):
        if self.cuts is not None:
            self.gets.append((self.path.split("?")[0], self.headers.get("range")))
        self._forward()

    def write_body(self, data):
        path = self.path.split("?")[0]
        if self.cut_after is None or len(data) <= self.cut_after or path in self.cuts:
            return super().write_body(data)
        self.cuts.append(path)
        self.wfile.write(data[:self.cut_after])
        self.wfile.flush()
        self.close_connection = True


def test_restore_resumes_a_download_cut_midway(connect, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    for endpoint, handler in proxied_moto((), base=CuttingProxy):
        url = f"s3://bkt/app.db?endpoint={endpoint}&region=us-east-1"
        db = tmp_path / "app.db"
        con = open_replicated(connect, db, url)
        con.execute("pragma journal_mode=wal")
        con.execute("create table t(v blob)")
        # Random bytes: LZ4 cannot shrink them, so the first LTX file is about 300 KB.
        con.execute("with recursive n(i) as (select 1 union all select i + 1 from n where i < 300) "
                    "insert into t select randomblob(1000) from n")
        sync(con)
        con.close()
        handler.cuts, handler.gets, handler.cut_after = [], [], 64 * 1024
        out = tmp_path / "out.db"
        summary = restore(connect(), url, out)
        assert dump(out) == dump(db)
        assert summary["bytes"] > 300_000
        assert handler.cuts, "no download was large enough to cut"
        for path in handler.cuts:
            asked = [rng for p, rng in handler.gets if p == path]
            # The first GET was cut at 64 KiB; the next one resumed there instead of starting over.
            assert len(asked) == 2 and asked[1] == f"bytes={64 * 1024}-", (path, asked)
