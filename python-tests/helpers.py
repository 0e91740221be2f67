"""Shared helpers: replica URLs for each real store, restores with the real litestream binary."""
import hashlib
import http.client
import http.server
import os
import pathlib
import socket
import sqlite3
import struct
import subprocess
import threading
import time
import urllib.parse
import uuid

ROOT = pathlib.Path(__file__).resolve().parent.parent


def require(var):
    value = os.environ.get(var)
    assert value, f"{var} is not set: run the tests with `make test` (it starts moto and Ceph RGW)"
    return value


class Store:
    """One replica destination kind: file://, moto or ceph."""

    def __init__(self, kind, tmp_path):
        self.kind = kind
        self.tmp_path = tmp_path
        if kind != "file":
            up = kind.upper()
            self.endpoint = require(f"LITESTREAM_TEST_{up}_ENDPOINT")
            self.access_key = require(f"LITESTREAM_TEST_{up}_ACCESS_KEY")
            self.secret_key = require(f"LITESTREAM_TEST_{up}_SECRET_KEY")
            self.bucket = require(f"LITESTREAM_TEST_{up}_BUCKET")

    def url(self, name):
        if self.kind == "file":
            return f"file://{self.tmp_path}/replica-{name}"
        return (f"s3://{self.bucket}/{uuid.uuid4().hex}/{name}?endpoint={self.endpoint}"
                f"&region=us-east-1&force-path-style=true")

    def env(self):
        """Environment for a process that uses this store (our extension or litestream)."""
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)  # litestream refuses S3 while it is set
        if self.kind != "file":
            env["AWS_ACCESS_KEY_ID"] = self.access_key
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        return env


def litestream_restore(store, url, out, txid=None):
    """Restores with the real Litestream 0.5.17 binary; returns the output path."""
    cmd = [require("LITESTREAM_TEST_BIN"), "restore", "-o", str(out)]
    if txid is not None:
        cmd += ["-txid", f"{txid:016x}"]
    cmd.append(url)
    r = subprocess.run(cmd, capture_output=True, text=True, env=store.env(), timeout=120)
    assert r.returncode == 0, f"litestream restore failed: {r.stdout}{r.stderr}"
    return out


def level_files(store, url, level):
    """Names of the LTX files of one level of a replica (file:// or S3 layout)."""
    u = urllib.parse.urlparse(url)
    if store.kind == "file":
        d = pathlib.Path(u.path) / "ltx" / str(level)
        return sorted(n for n in os.listdir(d) if n.endswith(".ltx")) if d.is_dir() else []
    import boto3
    s3 = boto3.client("s3", endpoint_url=store.endpoint, aws_access_key_id=store.access_key,
                      aws_secret_access_key=store.secret_key, region_name="us-east-1")
    prefix = f"{u.path.strip('/')}/{level:04x}/"
    resp = s3.list_objects_v2(Bucket=u.netloc, Prefix=prefix)
    return sorted(o["Key"][len(prefix):] for o in resp.get("Contents", []))


def dump(path):
    """The logical content of a database, for comparison."""
    from urllib.parse import quote
    con = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    try:
        assert con.execute("pragma integrity_check").fetchone()[0] == "ok", f"{path}: integrity check failed"
        return "\n".join(con.iterdump())
    finally:
        con.close()


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()


def yield_to_other_writers():
    """A pause between a writer's transactions when several processes write one database.
    SQLite's busy handler is sleep-and-retry, not a queue: a process that commits in a tight
    loop leaves no gap for one that waits, which then times out ("database is locked") with
    or without the extension."""
    time.sleep(0.002)


def random_workload(con, rng, steps, allow_vacuum=True):
    """Random inserts, updates, deletes, rollbacks, savepoints and VACUUMs on table t."""
    con.execute("create table if not exists t(id integer primary key, k integer, v blob)")
    con.execute("create index if not exists t_k on t(k)")
    for _ in range(steps):
        op = rng.random()
        if op < 0.35:
            con.execute("begin")
            for _ in range(rng.randint(1, 20)):
                con.execute("insert into t(k, v) values(?, randomblob(?))", (rng.randint(0, 1000), rng.randint(10, 3000)))
            con.execute("commit")
        elif op < 0.55:
            con.execute("update t set v = randomblob(?), k = k + 1 where id % ? = 0", (rng.randint(10, 500), rng.randint(2, 9)))
        elif op < 0.65:
            con.execute("delete from t where id % ? = 0", (rng.randint(3, 11),))
        elif op < 0.75:
            con.execute("begin")
            con.execute("insert into t(k, v) values(-1, randomblob(5000))")
            con.execute("delete from t where k < 100")
            con.execute("rollback")
        elif op < 0.85:
            con.execute("begin")
            con.execute("insert into t(k, v) values(-2, 'kept')")
            con.execute("savepoint sp")
            con.execute("insert into t(k, v) values(-3, 'rolled back')")
            con.execute("delete from t")
            con.execute("rollback to sp")
            con.execute("release sp")
            con.execute("commit")
        elif op < 0.92 and allow_vacuum:
            con.execute("delete from t where id % 2 = 0")
            con.execute("vacuum")
        else:
            con.execute("insert into t(k, v) values(?, zeroblob(?))", (rng.randint(0, 10), rng.randint(0, 70000)))


class FrontServer(http.server.ThreadingHTTPServer):
    """The test fronts' HTTP server. Its listen backlog is a real server's, not socketserver's
    5: a client opening 8 connections at once would otherwise see SYNs dropped and wait out
    TCP's 1 s retransmit on every few requests (our fronts close each connection)."""
    request_queue_size = 1024


def forward(handler, upstream, headers, body):
    """Sends `handler`'s request to `upstream` and its status and headers back (a complete
    Content-Length); returns the response body, for the caller to write (or not)."""
    conn = http.client.HTTPConnection(*upstream, timeout=60)
    conn.request(handler.command, handler.path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    handler.send_response(resp.status)
    for k, v in resp.getheaders():
        if k.lower() not in ("transfer-encoding", "connection", "content-length"):
            handler.send_header(k, v)
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    return data


class Proxy(http.server.BaseHTTPRequestHandler):
    """An S3 front that forwards requests to `upstream`, counting them, and dropping the
    headers in `drop` (conditional ones: like stores that ignore them)."""
    upstream = None
    drop = ()
    count = 0

    def _forward(self):
        type(self).count += 1
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in (*self.drop, "host")}
        data = forward(self, self.upstream, headers, body)
        if self.command != "HEAD":
            self.write_body(data)

    def write_body(self, data):
        self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, *args):
        pass


def proxied_moto(drop, base=Proxy):
    """moto (no SigV4 check: the proxy changes Host) behind a proxy (`base`, a Proxy class);
    yields (url, handler)."""
    def free_port():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port
    moto_port = free_port()
    moto = subprocess.Popen([os.path.join(os.path.dirname(require("LITESTREAM_TEST_PYTHON")), "moto_server"),
                             "-H", "127.0.0.1", "-p", str(moto_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", moto_port, timeout=1)
                c.request("PUT", "/bkt")
                assert c.getresponse().status == 200
                break
            except (ConnectionRefusedError, OSError):
                assert time.time() < deadline, "moto did not start"
                time.sleep(0.1)
        handler = type("H", (base,), {"upstream": ("127.0.0.1", moto_port), "drop": drop})
        proxy = FrontServer(("127.0.0.1", 0), handler)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{proxy.server_address[1]}", handler
        proxy.shutdown()
    finally:
        moto.terminate()
        moto.wait()


class BlackHole:
    """A TCP front for a real server that forwards bytes both ways until `hole()`; from then
    on it accepts connections and reads requests but never answers (a store that is up but
    silent). `unhole()` resets the silent connections and forwards again."""

    def __init__(self, upstream):
        host, port = urllib.parse.urlparse(upstream).netloc.split(":")
        self.upstream = (host, int(port))
        self.silent = False
        self.held = []
        self.lock = threading.Lock()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            with self.lock:
                self.held.append(client)
                silent = self.silent
            if silent:
                continue
            up = socket.create_connection(self.upstream)
            with self.lock:
                self.held.append(up)
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                while self.silent:
                    time.sleep(0.01)  # hold it: nothing goes through while silent
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def hole(self):
        self.silent = True

    def unhole(self):
        with self.lock:
            held, self.held = self.held, []
            self.silent = False
        for s in held:  # the network is back: what hung is reset, clients retry
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            except OSError:
                pass

    def close(self):
        self.server.close()
        self.unhole()


class FaultyStore:
    """An HTTP front for a real S3 server that passes every request through (Host included,
    so SigV4 signatures stay valid) except, while `mode` is set, every `every`-th one:
    `500` (InternalError), `503` (SlowDown), `reset` (the connection reset before any
    answer), `blackhole` (never answered while the mode lasts, then reset), `delay` (`delay_s`
    before forwarding), `truncate` (a response body cut in half after a full Content-Length)."""

    MODES = ("500", "503", "reset", "blackhole", "delay", "truncate")

    def __init__(self, upstream, every=3, delay_s=1.0):
        host, port = urllib.parse.urlparse(upstream).netloc.split(":")
        self.upstream = (host, int(port))
        self.mode = None
        self.every = every
        self.delay_s = delay_s
        self.requests = 0
        self.faults = 0
        self.paths = []  # every request's method and path, in order
        lock = threading.Lock()
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self):
                with lock:
                    front.requests += 1
                    front.paths.append(f"{self.command} {urllib.parse.unquote(self.path)}")
                    mode = front.mode
                    faulty = mode is not None and front.requests % front.every == 0
                    front.faults += faulty
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                if faulty and mode in ("500", "503"):
                    code, name = (500, "InternalError") if mode == "500" else (503, "SlowDown")
                    xml = f"<Error><Code>{name}</Code><Message>injected</Message></Error>".encode()
                    self.send_response(code)
                    self.send_header("content-type", "application/xml")
                    self.send_header("content-length", str(len(xml)))
                    self.end_headers()
                    self.wfile.write(xml)
                    return
                if faulty and mode == "blackhole":
                    while front.mode == "blackhole":
                        time.sleep(0.02)
                if faulty and mode in ("reset", "blackhole"):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                if faulty and mode == "delay":
                    time.sleep(front.delay_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                data = forward(self, front.upstream, headers, body)
                if self.command == "HEAD":
                    return
                if faulty and mode == "truncate" and len(data) > 1:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

            def log_message(self, *args):
                pass

        self.server = FrontServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def s3_url(self, bucket, key):
        """A replica URL for `bucket`/`key` through this front."""
        return f"s3://{bucket}/{key}?endpoint={self.url}&region=us-east-1&force-path-style=true"

    def set(self, mode, every=None):
        assert mode is None or mode in self.MODES, mode
        if every is not None:
            self.every = every
        self.mode = mode

    def close(self):
        self.mode = None
        self.server.shutdown()
        self.server.server_close()
