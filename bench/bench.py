"""Side-by-side benchmark: plain SQLite, our `litestream` VFS and Litestream 0.5.17, on one
machine, one disk and one store (Ceph RGW). Run through `make bench` / scripts/bench.sh, which
start the servers and export LITESTREAM_TEST_*. Prints a markdown report and writes it to
bench/results.md.

BENCH_SCALE (default 1.0) scales every size and duration; 0.05 is a quick smoke run.
BENCH_SECTIONS (default all: throughput,lag,puts,restore,replica,pitr,many) runs only some sections.
BENCH_RESTORE_BIG=1 adds a 1 GB (scaled) restore of ours, from a file:// replica (too big for the bench RGW).
BENCH_STORES (default ceph,file) are the stores sections 1-3 run on, one after the other (a store's
latency can hide a cost: file:// has none). Sections 4-7 run on Ceph RGW.
"""
import datetime
import hashlib
import json
import math
import multiprocessing
import os
import pathlib
import platform
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid

import boto3
import botocore.config

ROOT = pathlib.Path(__file__).resolve().parent.parent
LIB = os.environ.get("LITESTREAM_BENCH_LIB", str(ROOT / "target/release/liblitestream"))
WORK = ROOT / "target/bench-work"
SCALE = float(os.environ.get("BENCH_SCALE", "1.0"))

# Full-scale sizes (the issue's); everything below is multiplied by SCALE.
THROUGHPUT_TX = max(1000, int(200_000 * SCALE))
ROUNDS = 10  # throughput runs in this many interleaved blocks per setup
LAG_RATE, LAG_SECONDS = 5, max(2.0, 30 * SCALE)
PUT_CASES = [(10, max(2.0, 30 * SCALE)), (100, max(2.0, 30 * SCALE)), (None, max(1.0, 10 * SCALE))]
POLL_INTERVAL = 0.005  # lag poller: one HEAD per 5 ms
QUIET_SECONDS = 2.0    # Litestream is done when its L0 count is unchanged this long
INSERT = "insert into t(v) values(?)"

# BENCH_SECTIONS=restore,replica runs only those (the other sections' text is kept from results.md).
ALL_SECTIONS = ("throughput", "lag", "puts", "restore", "replica", "pitr", "many")
SECTIONS = [x.strip() for x in os.environ.get("BENCH_SECTIONS", ",".join(ALL_SECTIONS)).split(",") if x.strip()]
assert set(SECTIONS) <= set(ALL_SECTIONS), f"BENCH_SECTIONS: unknown section in {SECTIONS}; known: {ALL_SECTIONS}"

STORES = [x.strip() for x in os.environ.get("BENCH_STORES", "ceph,file").split(",") if x.strip()]
assert set(STORES) <= {"ceph", "file"} and STORES, f"BENCH_STORES: {STORES}; known: ceph, file"

RUN_ID = datetime.datetime.utcnow().strftime("bench-%Y%m%dT%H%M%S-") + uuid.uuid4().hex[:6]
PROBLEMS = []  # anything of ours (or theirs) that looked wrong; reported, never hidden


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def need(var):
    v = os.environ.get(var)
    if not v:
        sys.exit(f"bench: {var} is not set; run `make bench` (scripts/bench.sh starts the servers)")
    return v


# ------------------------------------------------------------------------------------ store
class Store:
    """The Ceph RGW bucket both tools write to, seen through boto3."""
    name, tag = "Ceph RGW", "ceph"
    l0_dir = "0000"

    def __init__(self):
        self.endpoint = need("LITESTREAM_TEST_CEPH_ENDPOINT")
        self.bucket = need("LITESTREAM_TEST_CEPH_BUCKET")
        self.keys = (need("LITESTREAM_TEST_CEPH_ACCESS_KEY"), need("LITESTREAM_TEST_CEPH_SECRET_KEY"))
        self.s3 = s3_client(self.endpoint, *self.keys)

    def url(self, prefix):
        return (f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}"
                f"&region=us-east-1&force-path-style=true")

    def keys_under(self, prefix):
        out = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/"):
            out += [o["Key"] for o in page.get("Contents", [])]
        return out

    def l0_count(self, prefix):
        return sum(1 for k in self.keys_under(prefix) if "/0000/" in k)

    def poll_spec(self):
        """What the lag poller (another process) needs to look for objects."""
        return ("s3", self.endpoint, *self.keys, self.bucket)

    def read(self, key):
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def server_puts(self):
        """RGW's own count of PUT requests (every kind: L0, compaction, snapshots, leases;
        refused conditional ones too), from its admin socket; None if unavailable."""
        asok = os.environ.get("BENCH_RGW_ASOK")
        if not asok:
            return None
        r = subprocess.run(["ceph", "--admin-daemon", asok, "perf", "dump"],
                           capture_output=True, text=True, timeout=30)
        return json.loads(r.stdout)["rgw"]["put"] if r.returncode == 0 else None

    def pages(self, key):
        return ltx_pages(key, self.read(key))


class FileStore:
    """A local directory (file://, the embedded default) both tools write to."""
    name, tag = "file://", "file"
    l0_dir = "ltx/0"
    keys = None
    server_puts = staticmethod(lambda: None)

    def __init__(self):
        self.root = WORK / "file-store"

    def url(self, prefix):
        return f"file://{self.root}/{prefix}"

    def keys_under(self, prefix):
        base = self.root / prefix
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*.ltx")) if base.exists() else []

    def l0_count(self, prefix):
        d = self.root / prefix / "ltx" / "0"
        return sum(1 for p in d.iterdir() if p.name.endswith(".ltx")) if d.exists() else 0

    def poll_spec(self):
        return ("file", str(self.root))

    def read(self, key):
        return (self.root / key).read_bytes()

    def pages(self, key):
        return ltx_pages(key, self.read(key))


def ltx_pages(key, b):
    """The decompressed pages of an LTX v3 file (what both tools write)."""
    assert b[:4] == b"LTX1", f"{key}: not an LTX file"
    page_size, pos, out = int.from_bytes(b[8:12], "big"), 100, []
    while True:
        pgno, flags = int.from_bytes(b[pos:pos + 4], "big"), int.from_bytes(b[pos + 4:pos + 6], "big")
        pos += 6
        if pgno == 0:
            return out
        assert flags == 1, f"{key}: page {pgno} is not an LZ4 block (flags {flags})"
        size = int.from_bytes(b[pos:pos + 4], "big")
        page = lz4_block(b[pos + 4:pos + 4 + size])
        assert len(page) == page_size, f"{key}: page {pgno} decompressed to {len(page)} bytes"
        out.append(page)
        pos += 4 + size


def lz4_block(src):
    """Decompresses one raw LZ4 block (no lz4 module in the venv; pages are small)."""
    out, i = bytearray(), 0
    while True:
        token = src[i]
        i += 1
        n = token >> 4
        if n == 15:
            while src[i] == 255:
                n += 255
                i += 1
            n += src[i]
            i += 1
        out += src[i:i + n]
        i += n
        if i >= len(src):
            return bytes(out)
        offset = src[i] | src[i + 1] << 8
        i += 2
        n = token & 15
        if n == 15:
            while src[i] == 255:
                n += 255
                i += 1
            n += src[i]
            i += 1
        n += 4
        start = len(out) - offset
        if offset >= n:
            out += out[start:start + n]
        else:  # overlapping match: byte by byte
            for k in range(n):
                out.append(out[start + k])


def s3_client(endpoint, ak, sk):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=ak, aws_secret_access_key=sk,
                        config=botocore.config.Config(s3={"addressing_style": "path"},
                                                      retries={"max_attempts": 3}))


def l0_key(prefix, txid, l0_dir="0000"):
    return f"{prefix}/{l0_dir}/{txid:016x}-{txid:016x}.ltx"


def poll_l0(spec, prefix, ready, stop, out):
    """Separate process (no GIL shared with the committing loop). Both tools write L0 files
    as single, consecutive TXIDs, so it HEADs (file://: stats) the next expected key every
    POLL_INTERVAL and records when it first answers 200 (time.monotonic is system-wide).
    HEAD, not LIST: on this RGW every response with a body (LIST, GET) reaches the client
    ~40 ms after the server finished it (its log says 4 ms), which would swamp the lag."""
    if spec[0] == "file":
        root = pathlib.Path(spec[1])
        l0_dir = "ltx/0"
        d = root / prefix / l0_dir
        existing = sorted(str(p.relative_to(root)) for p in d.glob("*.ltx")) if d.exists() else []
        exists = lambda key: (root / key).exists()
    else:
        import botocore.exceptions
        _, endpoint, ak, sk, bucket = spec
        s3 = s3_client(endpoint, ak, sk)
        l0_dir = "0000"
        existing = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/0000/").get("Contents", [])]

        def exists(key):
            try:
                s3.head_object(Bucket=bucket, Key=key)
                return True
            except botocore.exceptions.ClientError as e:
                if e.response["ResponseMetadata"]["HTTPStatusCode"] != 404:
                    raise
                return False
    txid = max((int(k.rsplit("/", 1)[1].split("-")[1][:16], 16) for k in existing), default=0) + 1
    seen, rtts = [], []
    ready.set()
    while not stop.is_set():
        t0 = time.monotonic()
        found = exists(l0_key(prefix, txid, l0_dir))
        t1 = time.monotonic()
        rtts.append(t1 - t0)
        if found:
            seen.append((t1, l0_key(prefix, txid, l0_dir)))
            txid += 1
            continue  # the next one may be there already
        time.sleep(max(0.0, POLL_INTERVAL - (time.monotonic() - t0)))
    out.send((seen, rtts, existing))


# ------------------------------------------------------------------------------------ setups
def fresh_path(name):
    path = WORK / f"{name}.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        pathlib.Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def make_table(con, sync):
    mode = con.execute("pragma journal_mode=wal").fetchone()[0]
    assert mode == "wal", f"journal_mode is {mode}"
    con.execute(f"pragma synchronous={sync}")
    con.execute("create table if not exists t(id integer primary key, v text)")


class Plain:
    """Plain SQLite: default VFS, nothing replicates."""
    label = "plain SQLite"

    def __init__(self, store, case):
        self.path = fresh_path(f"{case}-plain")
        self.prefix = None

    def start(self, sync):
        self.con = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        make_table(self.con, sync)
        return self.con

    def settle(self):
        return {}

    def stop(self):
        self.con.close()


class Ours:
    """Our extension: vfs=litestream, replica on Ceph, default min-interval."""
    label = "ours (vfs=litestream)"

    def __init__(self, store, case):
        self.store, self.case = store, case
        self.path = fresh_path(f"{case}-ours")
        self.prefix = f"{RUN_ID}/{case}-ours"

    def status(self):
        doc = json.loads(self.con.execute("select litestream_status()").fetchone()[0])
        mine = [d for d in doc["databases"] if d["path"] == str(self.path)]
        assert mine, f"{self.path} missing from litestream_status: {doc}"
        return mine[0]

    def sync(self):
        t = time.monotonic()
        try:
            self.con.execute("select litestream_sync(120000)").fetchone()
        except sqlite3.Error as e:
            PROBLEMS.append(f"ours, {self.case}: litestream_sync failed: {e}")
        return time.monotonic() - t

    def start(self, sync):
        replica = urllib.parse.quote(self.store.url(self.prefix), safe="")
        self.con = sqlite3.connect(f"file:{self.path}?vfs=litestream&replica={replica}",
                                   uri=True, isolation_level=None, timeout=30)
        make_table(self.con, sync)
        self.sync()
        self.base_l0 = self.store.l0_count(self.prefix)
        self.base_uploads = self.status()["uploads"]
        return self.con

    def settle(self):
        drain = self.sync()
        st = self.status()
        if st["last_error"]:
            PROBLEMS.append(f"ours, {self.case}: last_error = {st['last_error']!r}")
        if st["local_txid"] != st["remote_txid"] or st["pending_files"]:
            PROBLEMS.append(f"ours, {self.case}: not drained after litestream_sync: {st}")
        return {"drain_s": drain, "l0": self.store.l0_count(self.prefix) - self.base_l0,
                "uploads": st["uploads"] - self.base_uploads}

    def stop(self):
        self.con.close()


LIVE_PROCS = []


class Litestream:
    """Litestream 0.5.17: `litestream replicate DB URL` next to the app, default settings."""
    label = "Litestream 0.5.17"

    def __init__(self, store, case):
        self.store, self.case = store, case
        self.path = fresh_path(f"{case}-litestream")
        self.prefix = f"{RUN_ID}/{case}-litestream"
        self.logfile = WORK / f"{case}-litestream.log"

    def wait_quiet(self, timeout=120):
        """Until the L0 count has not changed for QUIET_SECONDS (Litestream syncs every 1 s)."""
        t0 = time.monotonic()
        count, since = self.store.l0_count(self.prefix), time.monotonic()
        while time.monotonic() - since < QUIET_SECONDS:
            if self.proc.poll() is not None:
                raise RuntimeError(f"litestream exited ({self.proc.returncode}); see {self.logfile}")
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"litestream still uploading after {timeout} s")
            time.sleep(0.1)
            n = self.store.l0_count(self.prefix)
            if n != count:
                count, since = n, time.monotonic()
        return count, time.monotonic() - t0 - QUIET_SECONDS

    def start(self, sync):
        setup = sqlite3.connect(self.path, isolation_level=None)
        make_table(setup, sync)
        setup.close()
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)  # litestream refuses S3 while it is set
        if self.store.keys:
            env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = self.store.keys
        self.log = open(self.logfile, "w")
        self.proc = subprocess.Popen([need("LITESTREAM_TEST_BIN"), "replicate", str(self.path),
                                      self.store.url(self.prefix)],
                                     env=env, stdout=self.log, stderr=subprocess.STDOUT)
        LIVE_PROCS.append(self.proc)
        # Its first sync (snapshot, its own tables) is setup, not part of the measurement.
        deadline = time.monotonic() + 60
        while self.store.l0_count(self.prefix) == 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"litestream did not start; see {self.logfile}")
            time.sleep(0.1)
        self.base_l0, _ = self.wait_quiet()
        self.con = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        self.con.execute(f"pragma synchronous={sync}")
        return self.con

    def settle(self):
        count, drain = self.wait_quiet()
        return {"drain_s": drain, "l0": count - self.base_l0}

    def stop(self):
        self.con.close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        LIVE_PROCS.remove(self.proc)
        self.log.close()
        errors = [l.strip() for l in open(self.logfile) if "level=ERROR" in l]
        if errors:
            PROBLEMS.append(f"Litestream, {self.case}: {len(errors)} ERROR log lines, first: {errors[0]}")


TOOLS = [Plain, Ours, Litestream]


# ------------------------------------------------------------------------------------ cases
def insert_rows(con, n, start=0):
    for i in range(start, start + n):
        con.execute(INSERT, (f"row {i}",))


def throughput(store, sync):
    """All three DBs open at once; ROUNDS blocks each, in rotating order, so slow drifts of the
    disk or of other load on the machine hit every setup alike. After each block the setup
    settles (its uploads finish) so that it does not steal CPU from the next one's block."""
    setups = [tool(store, f"tput-{sync.lower()}-{store.tag}") for tool in TOOLS]
    cons = [t.start(sync) for t in setups]
    block = THROUGHPUT_TX // ROUNDS
    secs, last = [[] for _ in setups], [{} for _ in setups]
    for r in range(ROUNDS):
        log(f"throughput {sync}: round {r + 1}/{ROUNDS}, {block} transactions per setup")
        for k in [(r + j) % len(setups) for j in range(len(setups))]:
            begin = time.perf_counter()
            insert_rows(cons[k], block, r * block)
            secs[k].append(time.perf_counter() - begin)
            last[k] = setups[k].settle()
    rows = []
    for t, con, s, st in zip(setups, cons, secs, last):
        n = con.execute("select count(*) from t").fetchone()[0]
        if n != block * ROUNDS:
            PROBLEMS.append(f"{t.label}, {t.path.name}: {n} rows after {block * ROUNDS} inserts")
        t.stop()
        rows.append({"store": store.name, "tool": t.label, "tps": block * ROUNDS / sum(s), "secs": sum(s), "rounds": s, **st})
    for r in rows:
        r["ratio"] = r["tps"] / rows[0]["tps"]
        per_round = [p / x for p, x in zip(rows[0]["rounds"], r["rounds"])]
        r["spread"] = (statistics.median(per_round), min(per_round), max(per_round))
    return rows


def percentile(xs, p):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    return xs[max(0, math.ceil(p / 100 * len(xs)) - 1)]


def lag(store, tool):
    t = tool(store, f"lag-{store.tag}")
    n = max(5, int(LAG_RATE * LAG_SECONDS))
    log(f"lag: {t.label}, {n} commits at {LAG_RATE}/s")
    con = t.start("NORMAL")
    ctx = multiprocessing.get_context("spawn")  # never fork a process with a tokio runtime in it
    ready, stop = ctx.Event(), ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    poller = ctx.Process(target=poll_l0, args=(store.poll_spec(), t.prefix, ready, stop, send),
                         daemon=True)
    poller.start()
    if not ready.wait(30):
        raise RuntimeError("lag poller did not start")
    commits = []  # time.monotonic() when COMMIT returned
    t0 = time.monotonic()
    for i in range(n):
        time.sleep(max(0.0, t0 + i / LAG_RATE - time.monotonic()))
        con.execute(INSERT, (f"lag-{i:06d};",))
        commits.append(time.monotonic())
    st = t.settle()
    time.sleep(0.2)  # a few more polls past the last upload
    stop.set()
    seen, rtts, existing = recv.recv()
    poller.join()
    t.stop()
    # Exact attribution: commit i wrote the unique marker `lag-<i>;`; its object is the first
    # L0 whose pages contain that marker (later ones may contain it too: pages accumulate rows).
    all_l0 = {k for k in store.keys_under(t.prefix) if f"/{store.l0_dir}/" in k}
    unseen = all_l0 - {k for _, k in seen} - set(existing)
    if unseen:
        PROBLEMS.append(f"{t.label}, lag: the poller missed {len(unseen)} L0 keys (not consecutive TXIDs?): "
                        f"{sorted(unseen)[:3]}")
    first_seen = {}  # commit number -> arrival of the first object holding it
    for arrival, key in seen:
        for m in re.findall(rb"lag-(\d{6});", b"".join(store.pages(key))):
            first_seen.setdefault(int(m), arrival)
    lags, early, missing = [], 0, 0
    for i, cm in enumerate(commits):
        if i not in first_seen:
            missing += 1
            continue
        early += first_seen[i] < cm
        lags.append(max(0.0, first_seen[i] - cm) * 1000)
    if missing:
        PROBLEMS.append(f"{t.label}, lag: {missing} of {n} commits never showed up in an L0 object")
    return {"store": store.name, "tool": t.label, "commits": n, "files": len(seen), "early": early,
            "p50": percentile(lags, 50) if lags else None, "p99": percentile(lags, 99) if lags else None,
            "max": max(lags) if lags else None, "head_rtt_ms": 1000 * sum(rtts) / len(rtts), **st}


def puts(store, tool, rate, seconds):
    t = tool(store, f"puts-{rate or 'max'}-{store.tag}")
    log(f"PUTs: {t.label}, {rate or 'max'} commits/s for {seconds:.1f} s")
    con = t.start("NORMAL")
    puts_before = store.server_puts()
    n, t0 = 0, time.monotonic()
    if rate:
        for n in range(1, int(rate * seconds) + 1):
            time.sleep(max(0.0, t0 + (n - 1) / rate - time.monotonic()))
            con.execute(INSERT, (f"put {n}",))
        time.sleep(max(0.0, t0 + n / rate - time.monotonic()))  # n commits take n/rate seconds
    else:
        while time.monotonic() - t0 < seconds:
            insert_rows(con, 100, n)
            n += 100
    secs = time.monotonic() - t0
    st = t.settle()
    puts_after = store.server_puts()
    t.stop()
    all_puts = None if None in (puts_before, puts_after) else puts_after - puts_before
    return {"store": store.name, "tool": t.label, "target": rate, "commits": n, "rate": n / secs,
            "per_1000": 1000 * st["l0"] / n, "all_puts": all_puts, **st}


# ------------------------------------------------------------------------------------ report
def fmt_ms(x):
    return "n/a" if x is None else f"{x:,.0f} ms" if x >= 100 else f"{x:.1f} ms"


def environment(store):
    lib = pathlib.Path(LIB + ".so")
    sha = hashlib.sha256(lib.read_bytes()).hexdigest()[:16]
    mtime = datetime.datetime.fromtimestamp(lib.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
    head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"],
                           capture_output=True, text=True).stdout.strip()
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    ls_version = subprocess.run([need("LITESTREAM_TEST_BIN"), "version"], env=env,
                                capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    fs = subprocess.run(["df", "-T", str(WORK)], capture_output=True, text=True).stdout.splitlines()[-1].split()
    return [
        f"- run `{RUN_ID}`, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, BENCH_SCALE={SCALE}",
        f"- machine: {os.cpu_count()} CPUs ({cpu}), Linux {platform.release()}; databases in "
        f"`{WORK}` ({fs[1]} on {fs[0]}), same directory for all three setups; load average at "
        f"the start {'/'.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"- SQLite {sqlite3.sqlite_version} (Python {platform.python_version()}'s `sqlite3`), "
        f"page size 4096, table `t(id integer primary key, v text)`, one `INSERT` of a ~10-byte "
        f"text per autocommit transaction, `journal_mode=WAL`, `wal_autocheckpoint` default (1000)",
        f"- ours: `{lib.relative_to(ROOT) if lib.is_relative_to(ROOT) else lib}` sha256 {sha}…, built "
        f"{mtime}; git HEAD `{head}`{' (src/ has uncommitted changes)' if dirty else ''}; "
        f"URI `file:DB?vfs=litestream&replica=s3://…` with default `min-interval` (100ms)",
        f"- Litestream: `{need('LITESTREAM_TEST_BIN')} replicate DB s3://…` ({ls_version}), no config "
        f"file: defaults (monitor/sync interval 1 s, L1 compaction 30 s, checkpoints of its own)",
        f"- store: Ceph RGW (single node, memstore OSD: data in RAM) at {store.endpoint}, bucket "
        f"`{store.bucket}`, one prefix per case under `{RUN_ID}/`; sections 1-3 run on each of "
        f"{', '.join(STORES)} (`BENCH_STORES`; file:// is a directory `{WORK / 'file-store'}` on the databases' disk)",
    ]


def report_throughput(tput):
    out = [f"## 1. Throughput: {(THROUGHPUT_TX // ROUNDS) * ROUNDS:,} single-row transactions, WAL",
            "", "Target: ours ÷ plain ≥ 0.95 (Litestream 0.5.17 was measured at 0.68-0.74).", "",
            "| store | synchronous | setup | tx/s | ÷ plain | ÷ plain per round: median (min–max) | commit time | drain after last block | new L0 objects |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for sync, rows in tput:
        for r in rows:
            drain = "" if "drain_s" not in r else f"{r['drain_s']:.2f} s"
            l0 = "" if "l0" not in r else f"{r['l0']:,}"
            out.append(f"| {r['store']} | {sync} | {r['tool']} | {r['tps']:,.0f} | **{r['ratio']:.3f}** | "
                       f"{r['spread'][0]:.2f} ({r['spread'][1]:.2f}–{r['spread'][2]:.2f}) | {r['secs']:.1f} s | {drain} | {l0} |")
    out += ["", f"Each setup gets its own fresh DB, all three open at once; the {THROUGHPUT_TX:,} "
            f"transactions run as {ROUNDS} blocks per setup in rotating order (plain, ours, Litestream; "
            "ours, Litestream, plain; ...), and each setup settles after its block (ours: "
            "`litestream_sync()`; Litestream: L0 count unchanged for "
            f"{QUIET_SECONDS:.0f} s) outside the timed part. tx/s = transactions ÷ time spent in "
            "the commit loop; the per-round median is less sensitive to bursts of other load. Drain after the last block: ours = time `litestream_sync()` took; "
            "Litestream = time until its L0 count stopped changing (less the quiet window).", ""]
    return "\n".join(out)


def report_lag(lags):
    out = [f"## 2. Lag at {LAG_RATE} commits/s (synchronous=NORMAL, {LAG_SECONDS:.0f} s)", "",
            "Lag = COMMIT returning → first L0 object containing it readable in the bucket. "
            "Target for ours: p50 ≤ 25 ms, p99 ≤ 100 ms (Litestream 0.5.17 defaults: p50 800 ms, p99 1.3 s).",
            "", "| store | setup | commits | new L0 objects | p50 | p99 | max | mean HEAD (file://: stat) round trip |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in lags:
        out.append(f"| {r['store']} | {r['tool']} | {r['commits']} | {r['files']} | {fmt_ms(r['p50'])} | "
                   f"{fmt_ms(r['p99'])} | {fmt_ms(r['max'])} | {r['head_rtt_ms']:.1f} ms |")
    out += ["", f"Method: a separate process HEADs the next expected L0 key (`<prefix>/0000/<txid>-<txid>.ltx`; "
            f"both tools write consecutive single-TXID L0 files) every {POLL_INTERVAL * 1000:.0f} ms; "
            "a key's arrival is when the first HEAD answering 200 came back (an upper bound: lags "
            "include up to one poll period plus one HEAD). HEAD, not LIST or GET: on this RGW every "
            "response with a body reaches the client ~40 ms after the server finished it (the RGW log "
            "says 4 ms). Attribution is exact: commit i inserts the text `lag-<i>;`, and its object is "
            "the first L0 object whose (LZ4-decoded) pages contain that text. Commits whose object was "
            "readable before COMMIT returned (counted as 0 ms): "
            + ", ".join(f"{r['tool']} ({r['store']}) {r['early']}" for r in lags) + ".", ""]
    return "\n".join(out)


def report_puts(put_rows):
    out = ["## 3. PUTs (new L0 objects) per 1,000 commits (synchronous=NORMAL)", "",
            "| store | target rate | setup | commits | achieved commits/s | new L0 objects | **L0 PUTs per 1,000 commits** | `uploads` (ours) | all PUTs (RGW counter) | all PUTs per 1,000 commits |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in put_rows:
        target = f"{r['target']:,}/s" if r["target"] else "as fast as possible (10,000/s target)"
        uploads = f"{r['uploads']:,}" if "uploads" in r else ""
        everything = ("n/a | n/a" if r["all_puts"] is None
                      else f"{r['all_puts']:,} | {1000 * r['all_puts'] / r['commits']:,.1f}")
        out.append(f"| {r['store']} | {target} | {r['tool']} | {r['commits']:,} | {r['rate']:,.1f} | {r['l0']:,} | "
                   f"**{r['per_1000']:,.1f}** | {uploads} | {everything} |")
    out += ["", "Paced rates sleep to an absolute schedule; the fastest case commits in a tight loop for "
            f"{PUT_CASES[2][1]:.0f} s. New L0 objects are counted by listing the case's prefix after "
            "the tool settled. \"All PUTs\" is RGW's own PUT counter over the same span (setup "
            "excluded): every PUT the tool made (L0, compaction, snapshots, lease renewals, refused "
            "conditional writes); the harness itself only LISTs, HEADs and GETs.", ""]
    return "\n".join(out)


def previous_sections():
    """Sections of the current results.md by number, to keep those not re-run this time."""
    f = ROOT / "bench/results.md"
    if not f.exists():
        return {}, "?"
    text = f.read_text()
    run = re.search(r"run `([^`]+)`.*?BENCH_SCALE=([0-9.]+)", text)
    parts = re.split(r"\n(?=## )", text)
    return {m.group(1): p.rstrip() + "\n" for p in parts if (m := re.match(r"## (\d)\.", p))}, \
        (f"`{run.group(1)}`, BENCH_SCALE={run.group(2)}" if run else "?")


def report(env_lines, done, wall):
    old, old_run = previous_sections()
    out = ["# Benchmark: plain SQLite vs ours vs Litestream 0.5.17 (and litestream-vfs 0.5.17)", ""]
    out += env_lines + [""]
    for num in "1234567":
        if num in done:
            out.append(done[num])
        elif num in old and "_Not re-run:" in old[num]:
            out.append(old[num])  # kept twice: its marker already names the run it came from
        elif num in old:
            out.append(f"{old[num].splitlines()[0]}\n\n_Not re-run: kept from the previous results file (run {old_run})._\n"
                       + "\n".join(old[num].splitlines()[1:]))
    out += ["## Problems observed", ""]
    out += [f"- {p}" for p in PROBLEMS] or ["- none (no `last_error`, every sync drained, no Litestream ERROR lines, row counts right)"]
    out += ["", f"Total wall time of this run: {wall / 60:.1f} min. Load average at the end: "
            f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} (other work on this machine skews every number).", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------------ restore / replica reads
# Sections 4 and 5 run their measured side (restores, replica readers) in fresh subprocesses:
# peak RSS and cold caches are per process, and litestream-vfs registers a VFS named
# `litestream` too, so it can never share a process with our extension.
RESTORE_MB = max(2.0, 100 * SCALE)
RESTORE_UPDATES = max(2000, int(200_000 * SCALE))
RESTORE_RUNS = 3
RESTORE_BIG_MB = 1024 * SCALE  # only with BENCH_RESTORE_BIG=1: the bench RGW's memstore holds 2 GB in all
# Short levels so the restore plan has a snapshot, L1, L2 and L0; short L0 retention and a rare
# snapshot keep the replica small enough for the bench RGW's 2 GB memstore at full scale.
RESTORE_PARAMS = "levels=2s,10s&snapshot-interval=30s&l0-retention=10s"
READ_MB = max(2.0, 100 * SCALE)
READ_LOOKUPS = 1000
VIS_RATE, VIS_SECONDS = 5, max(5.0, 20 * SCALE)
VIS_POLL = "100ms"


def vfs_lib():
    import litestream_vfs  # pip package litestream-vfs==0.5.17 (scripts/setup-venv.sh)
    return os.path.splitext(litestream_vfs.loadable_path())[0]


def rgw_counters():
    """RGW's own request counters: `get` counts object GETs (HEADs too), `req` every request."""
    asok = os.environ.get("BENCH_RGW_ASOK")
    if not asok:
        return None
    r = subprocess.run(["ceph", "--admin-daemon", asok, "perf", "dump"], capture_output=True, text=True, timeout=30)
    if r.returncode:
        return None
    d = json.loads(r.stdout)["rgw"]
    return {"get": d["get"], "req": d["req"]}


def rgw_delta(a, b):
    return None if a is None or b is None else {k: b[k] - a[k] for k in a}


def run_child(args, env_extra=None, timeout=1800):
    """Runs `bench.py child ...` in a fresh process (cold caches); returns its JSON result."""
    env = dict(os.environ)
    env.update(env_extra or {})
    p = subprocess.run([sys.executable, __file__, "child", *args], env=env,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"child {args[:2]} failed ({p.returncode}): {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def popen_rss(cmd, env, timeout=1800):
    """Runs cmd under /usr/bin/time -v; returns (seconds, peak RSS MB of cmd alone, its output).
    Not os.wait4 from here: Linux carries the forking parent's RSS high-water mark over exec, so
    every child of this (big) python would report at least its size."""
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True, timeout=timeout)
    secs = time.monotonic() - t0
    if p.returncode:
        raise RuntimeError(f"{cmd[:3]} failed ({p.returncode}): {(p.stdout + p.stderr)[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return secs, rss / 1024, p.stdout

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def writer(store, name, params=""):
    """Our writer on a fresh DB replicating to a fresh prefix of the bench bucket."""
    path, prefix = fresh_path(name), f"{RUN_ID}/{name}"
    url = store.url(prefix)
    con = sqlite3.connect(f"file:{path}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}{params}",
                          uri=True, isolation_level=None, timeout=30)
    con.execute("pragma journal_mode=wal")
    return con, path, prefix, url


def ours_sync(con, what):
    try:
        con.execute("select litestream_sync(300000)").fetchone()
    except sqlite3.Error as e:
        PROBLEMS.append(f"ours, {what}: litestream_sync failed: {e}")


def levels_present(store, prefix):
    return {k[len(prefix) + 1:].split("/")[0] for k in store.keys_under(prefix)}


def fill(con, table, mb, row_bytes):
    """~mb MB of rows (id, k, v) in 20 transactions; v is random so pages do not compress away."""
    rows = int(mb * 1024 * 1024 / (row_bytes + 30))
    step = max(1, rows // 20)
    for lo in range(0, rows, step):
        con.execute(f"with recursive c(i) as (select {lo + 1} union all select i + 1 from c where i < {min(rows, lo + step)}) "
                    f"insert into {table}(id, k, v) select i, abs(random()) % {rows}, randomblob({row_bytes}) from c")
    return rows


def restore_section(store):
    con, path, prefix, url = writer(store, "restore", "&" + RESTORE_PARAMS)
    con.execute("create table r(id integer primary key, k integer, v blob)")
    t0 = time.monotonic()
    rows = fill(con, "r", RESTORE_MB, 1000)
    log(f"restore: {rows:,} rows loaded in {time.monotonic() - t0:.1f} s; {RESTORE_UPDATES:,} updates")
    import random
    rng = random.Random(4)
    t0 = time.monotonic()
    for _ in range(RESTORE_UPDATES):  # one autocommit transaction each; min-interval coalesces uploads
        con.execute("update r set v = randomblob(1000) where id = ?", (rng.randint(1, rows),))
    upd_secs = time.monotonic() - t0
    ours_sync(con, "restore")
    # A realistic replica: a snapshot and L1/L2 files, plus L0 past them. Wait for compaction.
    t0 = time.monotonic()
    while not {"0001", "0002", "0009"} <= levels_present(store, prefix):
        if time.monotonic() - t0 > 180:
            PROBLEMS.append(f"ours, restore: after 180 s the replica has only levels {sorted(levels_present(store, prefix))}")
            break
        time.sleep(1)
    snaps_then = [k for k in store.keys_under(prefix) if "/0009/" in k]
    # a few more commits after the compaction, so the plan has every level in it
    for _ in range(20):
        con.execute("update r set v = randomblob(1000) where id = ?", (rng.randint(1, rows),))
    ours_sync(con, "restore")
    local_sha = None
    con.close()  # also stops compaction: every restore below sees the same replica
    keys = store.keys_under(prefix)
    log(f"restore: snapshots before the last commits {snaps_then}, after close {[k for k in keys if '/0009/' in k]}")
    by_level = {}
    for k in keys:
        lvl = k[len(prefix) + 1:].split("/")[0]
        by_level[lvl] = by_level.get(lvl, 0) + 1
    ck = sqlite3.connect(path)
    ck.execute("pragma wal_checkpoint(truncate)")
    ck.close()
    db_mb = path.stat().st_size / 2**20
    local_sha = sha256_file(path)

    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    runs = {"ours": [], "litestream": []}
    shas, info = {}, {}
    for i in range(RESTORE_RUNS):
        for tool in ("ours", "litestream"):  # alternate, so drifts of the machine hit both alike
            out = WORK / f"restore-{tool}-{i}.db"
            for f in WORK.glob(f"restore-{tool}-{i}.db*"):
                f.unlink()
            if tool == "ours":
                cmd = [sys.executable, __file__, "child", "restore", url, str(out)]
            else:
                cmd = [need("LITESTREAM_TEST_BIN"), "restore", "-o", str(out), url]
            secs, rss, text = popen_rss(cmd, env)
            runs[tool].append((secs, rss))
            shas.setdefault(tool, set()).add(sha256_file(out))
            if tool == "ours":
                info = json.loads(text.strip().splitlines()[-1])
            log(f"restore {tool} run {i + 1}: {secs:.2f} s, peak RSS {rss:.0f} MB")
            out.unlink()
    for tool, s in shas.items():
        if len(s) != 1:
            PROBLEMS.append(f"restore: {tool}'s {RESTORE_RUNS} restores differ from each other")
    identical = shas["ours"] == shas["litestream"]
    if not identical:
        PROBLEMS.append("restore: ours and litestream restored different bytes")
    if shas["ours"] != {local_sha}:
        PROBLEMS.append("restore: our restore differs from the writer's own (checkpointed) DB file")
    big = None
    if os.environ.get("BENCH_RESTORE_BIG") == "1":
        big = restore_big(store, env)
    # baseline: the same python + sqlite3 + our extension doing nothing
    _, base_rss, _ = popen_rss([sys.executable, __file__, "child", "noop"], env)
    return {"rows": rows, "db_mb": db_mb, "upd_secs": upd_secs, "levels": by_level, "files": len(keys),
            "runs": runs, "identical": identical, "same_as_local": shas["ours"] == {local_sha},
            "info": info, "big": big, "base_rss": base_rss, "url": url}


def restore_big(store, env):
    # On a file:// replica: the bench RGW keeps every object in 2 GB of RAM, too little for
    # a 1 GB database's files. What is measured is the restoring process's memory.
    path = fresh_path("restore-big")
    replica = WORK / "restore-big-replica"
    shutil.rmtree(replica, ignore_errors=True)
    url = f"file://{replica}"
    con = sqlite3.connect(f"file:{path}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}",
                          uri=True, isolation_level=None, timeout=30)
    con.execute("pragma journal_mode=wal")
    con.execute("create table r(id integer primary key, k integer, v blob)")
    t0 = time.monotonic()
    fill(con, "r", RESTORE_BIG_MB, 1000)
    ours_sync(con, "restore-big")
    con.close()
    log(f"restore big: {RESTORE_BIG_MB:.0f} MB loaded+synced in {time.monotonic() - t0:.1f} s")
    out = WORK / "restore-big-out.db"
    secs, rss, text = popen_rss([sys.executable, __file__, "child", "restore", url, str(out)], env)
    ok = sha256_file(out) == sha256_file(path) if path.stat().st_size == out.stat().st_size else False
    if not ok:
        PROBLEMS.append("restore big: output differs from the writer's DB file (maybe only un-checkpointed)")
    size = out.stat().st_size / 2**20
    out.unlink()
    path.unlink()
    shutil.rmtree(replica, ignore_errors=True)
    return {"mb": size, "secs": secs, "rss": rss}


def replica_section(store):
    con, path, prefix, url = writer(store, "reads")
    con.execute("create table p(id integer primary key, k integer, v blob)")
    rows = fill(con, "p", READ_MB, 200)
    con.execute("create index p_k on p(k)")
    con.execute("create table lag(id integer primary key, t real)")
    ours_sync(con, "reads")
    con.close()  # no writer traffic while GETs are counted
    local = WORK / "reads-local.db"
    for f in WORK.glob("reads-local.db*"):
        f.unlink()
    sqlite3.connect(":memory:").execute("select litestream_restore(?, ?)", (url, str(local))).fetchone()
    db_mb = local.stat().st_size / 2**20
    log(f"reads: {rows:,} rows, {db_mb:.0f} MB")
    vfs_env = {"LITESTREAM_REPLICA_URL": url}
    res = {"rows": rows, "db_mb": db_mb, "url": url}
    for tool in ("ours", "vfs"):
        extra = vfs_env if tool == "vfs" else {}
        res[tool + "_a"] = run_child(["reads-a", tool, url, str(rows)], extra)
        res[tool + "_b"] = run_child(["reads-b", tool, url, str(rows)], extra)
        log(f"reads {tool}: {res[tool + '_a']} {res[tool + '_b']}")
    res["plain_b"] = run_child(["reads-b", "plain", str(local), str(rows)])
    if res["ours_a"]["count"] != rows or res["vfs_a"]["count"] != rows:
        PROBLEMS.append(f"reads: COUNT(*) ours {res['ours_a']['count']}, litestream-vfs {res['vfs_a']['count']}, expected {rows}")
    if len({res[t + "_b"]["sum"] for t in ("ours", "vfs", "plain")}) != 1:
        PROBLEMS.append(f"reads: lookup checksums differ: " + ", ".join(f"{t} {res[t + '_b']['sum']}" for t in ("ours", "vfs", "plain")))
    res["vis"] = visibility(store, path, url)
    return res


def visibility(store, path, url):
    """Writer (ours, this process) commits VIS_RATE/s; one reader per tool in its own process
    polls max(id), each query its own read transaction; lag = first seen - COMMIT returned."""
    con = sqlite3.connect(f"file:{path}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}",
                          uri=True, isolation_level=None, timeout=30)
    n = int(VIS_RATE * VIS_SECONDS)
    env = dict(os.environ)
    readers = {}
    for tool in ("ours", "vfs"):
        e = dict(env)
        if tool == "vfs":
            e["LITESTREAM_REPLICA_URL"] = url
        readers[tool] = subprocess.Popen([sys.executable, __file__, "child", "visible", tool, url, str(n)],
                                         env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for tool, p in readers.items():  # each prints "ready" once its first query answered
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"visibility reader {tool} did not start: {line} {p.stderr.read()[-2000:]}")
    log(f"visibility: {n} commits at {VIS_RATE}/s")
    commits = {}
    t0 = time.monotonic()
    for i in range(1, n + 1):
        time.sleep(max(0.0, t0 + (i - 1) / VIS_RATE - time.monotonic()))
        con.execute("insert into lag(id, t) values(?, ?)", (i, time.time()))
        commits[i] = time.monotonic()
    ours_sync(con, "visibility")
    out = {}
    for tool, p in readers.items():
        so, se = p.communicate(timeout=120)
        if p.returncode:
            PROBLEMS.append(f"visibility reader {tool} failed: {se[-500:]}")
            continue
        seen = json.loads(so.strip().splitlines()[-1])  # [(monotonic, max id)] on each change
        first = {}
        for t, m in seen:
            for i in range(1, (m or 0) + 1):
                first.setdefault(i, t)
        lags = [(first[i] - commits[i]) * 1000 for i in commits if i in first]
        missing = n - len(lags)
        if missing:
            PROBLEMS.append(f"visibility {tool}: {missing} of {n} commits never became visible within 10 s after the last")
        out[tool] = {"n": n, "seen": len(lags), "p50": percentile(lags, 50) if lags else None,
                     "p99": percentile(lags, 99) if lags else None, "max": max(lags) if lags else None}
    con.close()
    return out


# ---------------------------------------------------------------------------- child processes
def child_load(tool):
    """Loads the tool's extension once in this fresh process (not timed)."""
    if tool != "plain":
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(LIB if tool == "ours" else vfs_lib())
        return loader


def child_connect(tool, target):
    """A connection in this fresh process: ours (litestream-replica), litestream-vfs, or plain."""
    if tool == "plain":
        return sqlite3.connect(target, isolation_level=None)
    if tool == "ours":
        return sqlite3.connect(f"file:{WORK}/view.db?vfs=litestream-replica&replica={urllib.parse.quote(target, safe='')}"
                               f"&poll-interval={VIS_POLL}", uri=True, isolation_level=None)
    return sqlite3.connect(f"file:{WORK}/view.db?vfs=litestream", uri=True, isolation_level=None)


def ours_gets(con):
    try:
        doc = json.loads(con.execute("select litestream_status()").fetchone()[0])
        return sum(r["gets"] for r in doc.get("replicas", []))
    except sqlite3.Error:
        return None


def step(con, tool, fn):
    """Times fn(); GETs by RGW's counter (and by our own status, for ours) around it.
    con is the connection litestream_status() runs on (the loader, for ours)."""
    r0, g0 = rgw_counters(), ours_gets(con) if tool == "ours" else None
    t0 = time.perf_counter()
    val = fn()
    secs = time.perf_counter() - t0
    r1, g1 = rgw_counters(), ours_gets(con) if tool == "ours" else None
    d = rgw_delta(r0, r1)
    return val, {"ms": secs * 1000, "rgw_get": d and d["get"], "rgw_req": d and d["req"],
                 "own_gets": None if g0 is None or g1 is None else g1 - g0}


def child(args):
    kind = args[0]
    if kind == "noop":
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(LIB)
        print("{}")
    elif kind == "restore":
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(LIB)
        print(loader.execute("select litestream_restore(?, ?)", (args[1], args[2])).fetchone()[0])
    elif kind in ("reads-a", "reads-b"):
        import random
        tool, target, rows = args[1], args[2], int(args[3])
        loader = child_load(tool)
        holder = []  # the open is timed from connect through the first read of the schema
        _, out_open = step(loader, tool, lambda: holder.append(child_connect(tool, target))
                           or holder[0].execute("select count(*) from sqlite_master").fetchone())
        con, out = holder[0], {"open": out_open}
        if kind == "reads-a":
            _, out["point"] = step(con, tool, lambda: con.execute("select length(v) from p where id = ?", (rows // 3,)).fetchone())
            # NOT INDEXED: count the table's own b-tree (else SQLite counts the smaller index)
            out["count"], out["scan"] = step(con, tool, lambda: con.execute("select count(*) from p not indexed").fetchone()[0])
        else:
            ids = random.Random(7).sample(range(1, rows + 1), READ_LOOKUPS)
            look = lambda: sum(con.execute("select k from p where id = ?", (i,)).fetchone()[0] for i in ids)
            out["sum"], out["cold"] = step(con, tool, look)
            _, out["warm"] = step(con, tool, look)
        print(json.dumps(out))
    elif kind == "many":
        many_child(args[1], args[2], args[3])
    elif kind == "visible":
        tool, target, n = args[1], args[2], int(args[3])
        child_load(tool)
        con = child_connect(tool, target)
        con.execute("select max(id) from lag").fetchone()
        print("ready", flush=True)
        seen, last, deadline = [], None, None
        give_up = time.monotonic() + n / VIS_RATE + 40  # never seeing anything must end too
        while time.monotonic() < give_up:
            m = con.execute("select max(id) from lag").fetchone()[0]
            now = time.monotonic()
            if m != last:
                seen.append((now, m))
                last = m
            if m == n:
                break
            if m and deadline is None:
                deadline = now + n / VIS_RATE + 10  # first commit seen: the rest come within the run
            if deadline and now > deadline:
                break
            time.sleep(0.002)
        print(json.dumps(seen))


def report_restore(r):
    med = {t: statistics.median(s for s, _ in runs) for t, runs in r["runs"].items()}
    rss = {t: max(m for _, m in runs) for t, runs in r["runs"].items()}
    info = r["info"]
    out = [f"## 4. Restore: {r['db_mb']:.0f} MB database after {RESTORE_UPDATES:,} single-row updates", "",
           "Targets: restore time ours ÷ `litestream restore` ≤ 0.5 on the same replica; peak RSS of the "
           "restoring process ≤ 64 MB (100 MB and 1 GB databases).", "",
           "| tool | median time (of 3) | runs | ÷ litestream | peak RSS (max of 3) |",
           "|---|---:|---|---:|---:|"]
    for t, label in (("ours", "ours (`litestream_restore()` in a fresh python)"), ("litestream", "`litestream restore -o OUT URL` 0.5.17")):
        runs = ", ".join(f"{s:.2f}" for s, _ in r["runs"][t])
        out.append(f"| {label} | {med[t]:.2f} s | {runs} s | **{med[t] / med['litestream']:.2f}** | **{rss[t]:.0f} MB** |")
    out += ["", f"- Outputs byte-identical (sha256, ours vs litestream, all runs): **{'yes' if r['identical'] else 'NO'}**; "
            f"ours = the writer's own checkpointed DB file: {'yes' if r['same_as_local'] else 'NO'}.",
            f"- Our restore's own report: {info.get('files')} files, {info.get('pages'):,} pages, "
            f"{(info.get('bytes') or 0) / 2**20:.1f} MB downloaded, {info.get('seconds', 0):.2f} s, TXID {info.get('txid')}.",
            f"- Replica: {r['files']} objects by level " + ", ".join(f"`{k}`: {v}" for k, v in sorted(r["levels"].items()))
            + f" (written by our writer with `{RESTORE_PARAMS}`, "
            "default `min-interval`; waited until a snapshot, L1 and L2 existed, then 20 more commits, then closed the writer).",
            f"- DB: table `r(id integer primary key, k integer, v blob)`, {r['rows']:,} rows of a 1,000-byte random blob, "
            f"loaded in 20 transactions; then {RESTORE_UPDATES:,} autocommit `update r set v = randomblob(1000) where id = ?` "
            f"(random ids) in {r['upd_secs']:.1f} s.",
            f"- Peak RSS = \"Maximum resident set size\" of that one process by `/usr/bin/time -v`. The ours process is python + sqlite3 + our "
            f"extension; the same process loading the extension and doing nothing peaks at {r['base_rss']:.0f} MB. "
            "Runs alternate ours, litestream, ours, ...; the output is deleted between runs (page cache stays warm for both)."]
    if r["big"]:
        b = r["big"]
        out += [f"- **{b['mb']:,.0f} MB database** (loaded in 20 transactions, no updates; only L0 files; on a `file://` replica, as the bench RGW is too small), ours only: "
                f"restore {b['secs']:.1f} s, peak RSS **{b['rss']:.0f} MB**."]
    else:
        out += [f"- {RESTORE_BIG_MB:,.0f} MB database restore: not run (BENCH_RESTORE_BIG=1)."]
    return "\n".join(out + [""])


def report_replica(r):
    def gets(x):
        own = "" if x.get("own_gets") is None else f" ({x['own_gets']} by `litestream_status`)"
        return "n/a" if x["rgw_get"] is None else f"{x['rgw_get']}{own}"
    o_a, v_a, o_b, v_b, p_b = r["ours_a"], r["vfs_a"], r["ours_b"], r["vfs_b"], r["plain_b"]
    rows = [
        ("open (connect + read the schema)", o_a["open"], v_a["open"], None),
        ("cold point lookup by primary key, after open", o_a["point"], v_a["point"], None),
        ("full scan `select count(*) from p not indexed`, cold", o_a["scan"], v_a["scan"], None),
        (f"{READ_LOOKUPS:,} random PK lookups, cold (fresh process, after open)", o_b["cold"], v_b["cold"], p_b["cold"]),
        (f"same {READ_LOOKUPS:,} lookups again, warm", o_b["warm"], v_b["warm"], p_b["warm"]),
    ]
    out = [f"## 5. Read replicas: {r['db_mb']:.0f} MB database on Ceph RGW, ours (`litestream-replica`) vs litestream-vfs 0.5.17", "",
           "Targets: cold scan ≥ 5x faster than litestream-vfs; a cold point lookup after open ≤ 4 GETs; "
           "warm lookups within 1.5x of plain SQLite on a local file; visibility p50 ≤ 200 ms at a 100 ms poll interval.", "",
           "| step | ours: time | ours: GETs | litestream-vfs: time | litestream-vfs: GETs | litestream-vfs ÷ ours | plain SQLite (local file) | ours ÷ plain |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, o, v, p in rows:
        plain = "" if p is None else f"{fmt_ms(p['ms'])}"
        # only the warm row is comparable: plain's "cold" reads come from the OS page cache
        ratio = "" if p is None or p is p_b["cold"] else f"**{o['ms'] / p['ms']:.2f}**"
        out.append(f"| {name} | {fmt_ms(o['ms'])} | {gets(o)} | {fmt_ms(v['ms'])} | {gets(v)} | "
                   f"**{v['ms'] / o['ms']:.2f}** | {plain} | {ratio} |")
    vis = r["vis"]
    out += ["", f"Visibility lag (writer: ours, {VIS_RATE} commits/s for {VIS_SECONDS:.0f} s; reader in its own process "
            "runs `select max(id) from lag` every 2 ms, each its own read transaction; lag = first query that saw "
            "the row − the writer's COMMIT returning, `time.monotonic`):", "",
            "| reader | poll interval | commits | seen | p50 | p99 | max |", "|---|---|---:|---:|---:|---:|---:|"]
    for t, label, poll in (("ours", "ours", VIS_POLL), ("vfs", "litestream-vfs 0.5.17", "1 s (fixed)")):
        v = vis.get(t)
        if v:
            out.append(f"| {label} | {poll} | {v['n']} | {v['seen']} | **{fmt_ms(v['p50'])}** | {fmt_ms(v['p99'])} | {fmt_ms(v['max'])} |")
    out += ["", f"- DB: `p(id integer primary key, k integer, v blob)` + index `p_k on p(k)`, {r['rows']:,} rows with a "
            "200-byte random blob, loaded by our writer in 20 transactions (default settings: L0 files only, "
            "unless 30 s passed), synced, writer closed before any read was measured.",
            f"- ours: `file:view.db?vfs=litestream-replica&replica=<url>&poll-interval={VIS_POLL}` (default prefetch 32, "
            "cache 64M); litestream-vfs: `pip install litestream-vfs==0.5.17`, `litestream_vfs/litestream-vfs.so`, "
            "`LITESTREAM_REPLICA_URL` set before loading, `file:view.db?vfs=litestream`. Each tool in fresh "
            "processes (one for open/point/scan, one for the lookups); never both in one process.",
            "- GETs = RGW's own `get` perf counter (object GETs; HEADs too) around each step, read over the admin "
            "socket; nothing else talks to this RGW meanwhile (the readers' LISTs are not GETs). In parentheses: "
            "our `litestream_status()` `replicas[].gets`. The 1,000 lookups use one seeded set of ids for all three; "
            "their checksum matched across tools unless listed under Problems.",
            "- plain: the same 1,000 lookups on a local copy (our `litestream_restore`), default VFS, fresh process "
            "(its \"cold\" is OS-page-cache warm, so only the warm row gets a ratio).",
            "- Every GET with a body on this RGW reaches the client ~40 ms after the server finished it (see "
            "section 2), so cold times here are mostly (number of sequential GETs) × ~40 ms, for both tools."]
    return "\n".join(out + [""])


# ------------------------------------------------------------------------------------ rollback / fork
PITR_MB = 1024 * SCALE
PITR_RGW_MB = min(PITR_MB, 128)  # the bench RGW keeps every object in 2 GB of RAM
PITR_CHANGED_ROWS = 10  # one row per page, far apart: 10 changed leaf pages


def uploaded_bytes(con, path):
    st = json.loads(con.execute("select litestream_status()").fetchone()[0])
    d = [d for d in st["databases"] if d["path"] == str(path)][0]
    return d["uploaded_bytes"], int(d["local_txid"], 16)


def pitr_case(label, mb, url_of):
    """A database of `mb` MB (loaded with plain SQLite, then replicated: TXID 1 is its
    snapshot), 10 rows on 10 pages changed, rolled back; forks at TXID 1 (one file: the
    store copies it) and at the latest TXID (several files: merged here)."""
    path = fresh_path(f"pitr-{label}")
    plain = sqlite3.connect(path, isolation_level=None)
    plain.execute("pragma journal_mode=wal")
    plain.execute("create table p(id integer primary key, k integer, v blob)")
    rows = fill(plain, "p", mb, 1000)
    plain.close()
    url = url_of("source")
    con = sqlite3.connect(f"file:{path}?vfs=litestream&replica={urllib.parse.quote(url, safe='')}&min-interval=0",
                          uri=True, isolation_level=None, timeout=60)
    t0 = time.monotonic()
    ours_sync(con, f"pitr {label} snapshot")
    snapshot_s = time.monotonic() - t0
    _, target = uploaded_bytes(con, path)
    ids = [1 + i * (rows // PITR_CHANGED_ROWS) for i in range(PITR_CHANGED_ROWS)]
    marks = "?" + ",?" * (len(ids) - 1)
    before = con.execute(f"select group_concat(hex(v)) from p where id in ({marks})", ids).fetchone()[0]
    for i in ids:
        con.execute("update p set v = randomblob(1000) where id = ?", (i,))
    ours_sync(con, f"pitr {label} changes")
    up0, _ = uploaded_bytes(con, path)
    t0 = time.monotonic()
    r = json.loads(con.execute("select litestream_rollback(?)", (target,)).fetchone()[0])
    rollback_s = time.monotonic() - t0
    up1, _ = uploaded_bytes(con, path)
    after = con.execute(f"select group_concat(hex(v)) from p where id in ({marks})", ids).fetchone()[0]
    if after != before or not r["shipped"]:
        PROBLEMS.append(f"pitr {label}: the rollback did not restore the 10 rows or did not ship: {r}")
    con.close()
    forks = []
    for name, ftarget in (("at TXID 1 (the snapshot: one file)", 1), ("at the latest TXID (files merged here)", None)):
        loader = sqlite3.connect(":memory:")
        t0 = time.monotonic()
        f = json.loads(loader.execute("select litestream_fork(?, ?, ?)", (url, url_of(f"fork-{ftarget}"), ftarget)).fetchone()[0])
        forks.append((name, time.monotonic() - t0, f))
    return {"label": label, "mb": path.stat().st_size / 2**20, "snapshot_s": snapshot_s, "rollback_s": rollback_s,
            "rollback": r, "uploaded": up1 - up0, "forks": forks}


def pitr_section(store):
    replicas = WORK / "pitr-replicas"
    shutil.rmtree(replicas, ignore_errors=True)
    cases = [pitr_case("file", PITR_MB, lambda n: f"file://{replicas}/{n}"),
             pitr_case("rgw", PITR_RGW_MB, lambda n: store.url(f"{RUN_ID}/pitr/{n}"))]
    shutil.rmtree(replicas, ignore_errors=True)
    return cases


def report_pitr(cases):
    out = ["## 6. Rollback and fork", "",
           "Targets: a rollback of 10 changed pages costs in proportion to the changed pages, not the "
           "database size (time and bytes uploaded); a fork at the latest snapshot boundary moves no bytes "
           "through this machine. A database is loaded with plain SQLite, then opened with `vfs=litestream` "
           "(TXID 1 = its snapshot); 10 rows on 10 different pages are updated (10 TXIDs), then "
           "`litestream_rollback(1)`. Litestream 0.5.17 has no rollback or fork (the equivalent is a full "
           "restore plus a new replica).", "",
           "| store | DB size | initial snapshot upload | rollback time | pages written | bytes read from store | bytes uploaded (new L0) |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        r = c["rollback"]
        out.append(f"| {c['label']} | {c['mb']:.0f} MB | {c['snapshot_s']:.1f} s | {c['rollback_s'] * 1000:.0f} ms | "
                   f"{r['pages']} | {r['bytes_read']:,} | {c['uploaded']:,} |")
    out += ["", "| store | fork | time | server-side copy | bytes downloaded | bytes uploaded | copied by the store |",
            "|---|---|---:|---|---:|---:|---:|"]
    for c in cases:
        for name, secs, f in c["forks"]:
            out.append(f"| {c['label']} ({c['mb']:.0f} MB) | {name} | {secs:.2f} s | {f['server_side_copy']} | "
                       f"{f['bytes_downloaded']:,} | {f['bytes_uploaded']:,} | {f['bytes_copied_server_side']:,} |")
    return "\n".join(out + [""])


# ------------------------------------------------------------------------------------ many databases
MANY_DBS = max(20, int(1000 * SCALE))
MANY_RATE = 100  # commits/s spread over all databases
MANY_LOAD_S = max(10.0, 60 * SCALE)
MANY_IDLE_S = max(20.0, 60 * SCALE)
MANY_SETTLE_MAX_S = 180
# Short levels for both tools, so compaction after the load settles before the idle window.
MANY_LEVELS = ("3s", "6s", "12s")
MANY_L0_RETENTION = "3s"


def proc_facts(pid="self"):
    status = dict(l.split(":\t", 1) for l in open(f"/proc/{pid}/status").read().splitlines() if ":\t" in l)
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "hwm_mb": int(status["VmHWM"].split()[0]) / 1024,
            "threads": int(status["Threads"]), "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def cpu_seconds(pid="self"):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rgw_requests():
    c = rgw_counters()
    return c["req"] if c else None


def settle_store(max_s, quiet_s=6.0):
    """Until the store has seen no request for `quiet_s` (compaction after a load); seconds."""
    t0 = time.monotonic()
    last, since = rgw_requests(), time.monotonic()
    while time.monotonic() - t0 < max_s and time.monotonic() - since < quiet_s:
        time.sleep(0.5)
        now = rgw_requests()
        if now != last:
            last, since = now, time.monotonic()
    return time.monotonic() - t0


def many_load(cons, seconds, on_commit):
    """MANY_RATE commits/s on random databases (a seeded schedule, the same for every tool)."""
    import random
    rng = random.Random(42)
    t0 = time.monotonic()
    k = 0
    while True:
        due = t0 + k / MANY_RATE
        if due - t0 >= seconds:
            return k
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        i = rng.randrange(len(cons))
        cons[i].execute("insert into t(v) values(?)", (f"commit {k} " * 8,))
        on_commit(i, time.monotonic())
        k += 1


def many_child(kind, root, base):
    """Ours (`ours`) or the same app without the extension (`plain`) in a fresh process."""
    import resource
    import threading
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = {"start": proc_facts()}
    mon = None
    if kind == "ours":
        mon = sqlite3.connect(":memory:", check_same_thread=False)
        mon.enable_load_extension(True)
        mon.load_extension(LIB)
        mon.execute("select litestream_base_url(?, ?)", (base, root))
        out["loaded"] = proc_facts()
    t0 = time.monotonic()
    cons = []
    for i in range(MANY_DBS):
        path = f"{root}/db{i:04d}.db"
        uri = f"file:{path}?vfs=litestream" if kind == "ours" else f"file:{path}"
        con = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
        con.execute("pragma journal_mode=wal")
        con.execute("create table t(id integer primary key, v text)")
        con.execute("insert into t(v) values('created')")
        cons.append(con)
    if mon:
        mon.execute("select litestream_sync(600000)").fetchone()
    out["setup_s"] = time.monotonic() - t0
    settle_store(MANY_SETTLE_MAX_S)
    out["open"] = proc_facts()
    # The load; ours: a poller records when each commit is in the replica.
    commits = {}  # db index -> [commit times]
    shipped_at = {}  # (db index, n-th commit) -> time the replica had it
    stop = threading.Event()
    paths = [f"{root}/db{i:04d}.db" for i in range(MANY_DBS)]
    base_commits = {}
    if mon:
        st = json.loads(mon.execute("select litestream_status()").fetchone()[0])
        base_commits = {d["path"]: d["commits_shipped"] for d in st["databases"]}

    def poll():
        # The harness's own CPU (status JSON of every database 50 times a second) is not the
        # extension's: it is measured on this thread and taken out of the load figure.
        while not stop.is_set():
            now = time.monotonic()
            st = json.loads(mon.execute("select litestream_status()").fetchone()[0])
            for d in st["databases"]:
                i = int(d["path"][-7:-3])
                for n in range(1, d["commits_shipped"] - base_commits[d["path"]] + 1):
                    shipped_at.setdefault((i, n), now)
            poll_cpu[0] = time.thread_time()
            time.sleep(0.02)
    poll_cpu = [0.0]
    poller = threading.Thread(target=poll) if mon else None
    if poller:
        poller.start()
    cpu0, w0 = cpu_seconds(), time.monotonic()
    n = many_load(cons, MANY_LOAD_S, lambda i, t: commits.setdefault(i, []).append(t))
    if mon:
        sqlite3.connect(":memory:").execute("select litestream_sync(600000)").fetchone()
        time.sleep(0.1)
    load_cpu, load_wall = cpu_seconds() - cpu0, time.monotonic() - w0
    stop.set()
    if poller:
        poller.join()
        load_cpu -= poll_cpu[0]
    out["load"] = {"commits": n, "cpu_pct": 100 * load_cpu / load_wall, "poller_cpu_s": poll_cpu[0], **proc_facts()}
    if poller:
        lags = sorted(shipped_at[(i, k + 1)] - t for i, ts in commits.items() for k, t in enumerate(ts)
                      if (i, k + 1) in shipped_at)
        missing = n - len(lags)
        out["lag_ms"] = {"p50": 1000 * lags[len(lags) // 2], "p99": 1000 * lags[min(len(lags) - 1, int(len(lags) * 0.99))],
                         "max": 1000 * lags[-1], "missing": missing}
    out["settle_s"] = settle_store(MANY_SETTLE_MAX_S)
    req0, cpu0, w0 = rgw_requests(), cpu_seconds(), time.monotonic()
    time.sleep(MANY_IDLE_S)
    req1 = rgw_requests()
    out["idle"] = {"requests": None if req0 is None else req1 - req0, "seconds": time.monotonic() - w0,
                   "cpu_pct": 100 * (cpu_seconds() - cpu0) / (time.monotonic() - w0), **proc_facts()}
    if mon:
        ok, t0 = 0, time.monotonic()
        for i, path in enumerate(paths):
            restored = f"{root}/restored-{i:04d}.db"
            mon.execute("select litestream_restore(?, ?)", (f"{base}/db{i:04d}.db" if "?" not in base else
                        base.replace("?", f"/db{i:04d}.db?", 1), restored)).fetchone()
            a = "\n".join(sqlite3.connect(restored).iterdump())
            b = "\n".join(cons[i].iterdump())
            ok += a == b
            os.unlink(restored)
        out["restored_ok"], out["restore_s"] = ok, time.monotonic() - t0
    for con in cons:
        con.close()
    print(json.dumps(out))


def many_litestream(store, root, prefix):
    """The same databases and load with `litestream replicate -config` (a `dir:` entry)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(root, exist_ok=True)
    cons = []
    for i in range(MANY_DBS):
        con = sqlite3.connect(f"{root}/db{i:04d}.db", isolation_level=None, timeout=60)
        con.execute("pragma journal_mode=wal")
        con.execute("create table t(id integer primary key, v text)")
        con.execute("insert into t(v) values('created')")
        cons.append(con)
    cfg = WORK / "many-litestream.yml"
    levels = "\n".join(f"  - interval: {lv}" for lv in MANY_LEVELS)
    cfg.write_text(f"""levels:
{levels}
l0-retention: {MANY_L0_RETENTION}
dbs:
  - dir: {root}
    pattern: "*.db"
    replica:
      type: s3
      bucket: {store.bucket}
      path: {prefix}
      endpoint: {store.endpoint}
      region: us-east-1
      force-path-style: true
""")
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"] = store.keys
    log_f = open(WORK / "many-litestream.log", "w")
    t0 = time.monotonic()
    proc = subprocess.Popen([need("LITESTREAM_TEST_BIN"), "replicate", "-config", str(cfg)], env=env,
                            stdout=log_f, stderr=subprocess.STDOUT)
    LIVE_PROCS.append(proc)
    out = {}
    try:
        deadline = time.monotonic() + 600
        while True:  # every database has its first L0
            dbs = {k.split("/")[2] for k in store.keys_under(prefix) if "/0000/" in k}
            if len(dbs) >= MANY_DBS:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"litestream did not start all databases ({len(dbs)}); see {WORK / 'many-litestream.log'}")
            time.sleep(1)
        out["setup_s"] = time.monotonic() - t0
        settle_store(30)
        out["open"] = proc_facts(proc.pid)
        cpu0, w0 = cpu_seconds(proc.pid), time.monotonic()
        n = many_load(cons, MANY_LOAD_S, lambda i, t: None)
        out["load"] = {"commits": n, "cpu_pct": 100 * (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - w0),
                       **proc_facts(proc.pid)}
        # Its monitors never go quiet: wait as long as ours took at most, then measure.
        time.sleep(20)
        req0, cpu0, w0 = rgw_requests(), cpu_seconds(proc.pid), time.monotonic()
        time.sleep(MANY_IDLE_S)
        req1 = rgw_requests()
        out["idle"] = {"requests": None if req0 is None else req1 - req0, "seconds": time.monotonic() - w0,
                       "cpu_pct": 100 * (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - w0), **proc_facts(proc.pid)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        LIVE_PROCS.remove(proc)
        for con in cons:
            con.close()
    return out


def many_section(store):
    levels = ",".join(MANY_LEVELS)
    os.environ["LITESTREAM_LEVELS"] = levels
    os.environ["LITESTREAM_L0_RETENTION"] = MANY_L0_RETENTION
    results = {}
    for kind in ("plain", "ours"):
        root = WORK / f"many-{kind}"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        base = store.url(f"{RUN_ID}/many-ours")
        log(f"many: {kind}, {MANY_DBS} databases")
        results[kind] = run_child(["many", kind, str(root), base], timeout=3600)
        shutil.rmtree(root, ignore_errors=True)
    log(f"many: Litestream, {MANY_DBS} databases")
    root = WORK / "many-litestream"
    shutil.rmtree(root, ignore_errors=True)
    results["litestream"] = many_litestream(store, str(root), f"{RUN_ID}/many-litestream")
    shutil.rmtree(root, ignore_errors=True)
    del os.environ["LITESTREAM_LEVELS"], os.environ["LITESTREAM_L0_RETENTION"]
    return results


def report_many(r):
    ours, plain, ls = r["ours"], r["plain"], r["litestream"]
    per_hour = lambda x: "—" if x["idle"]["requests"] is None else f"{x['idle']['requests'] * 3600 / x['idle']['seconds']:,.0f}"
    extra = lambda k, when: ours[when][k] - plain[when][k]
    out = [f"## 7. {MANY_DBS:,} databases from one process", "",
           f"Targets (1,000 databases, {MANY_RATE} commits/s spread over them for {MANY_LOAD_S:.0f} s, then idle): "
           "≤ 100 MB RSS, ≤ 16 threads, ≤ 1% CPU idle, 0 requests per idle hour, p99 lag ≤ 1 s; all restore. "
           f"Both tools with the same compaction levels ({', '.join(MANY_LEVELS)}; L0 retention {MANY_L0_RETENTION}) so "
           "compaction after the load settles before the idle window; Litestream 0.5.17 runs `replicate -config` with one "
           "`dir:` entry (pattern `*.db`) next to the same app. Ours runs inside the app: its figures are the app's "
           "process with the extension minus the same app without it (`plain`, same databases and load, no replication).", "",
           "| | ours (extension, in the app) | the app alone (plain SQLite) | ours: extension's share | Litestream 0.5.17 (its own process) |",
           "|---|---:|---:|---:|---:|"]
    for label, when, key, fmt in (("RSS after open+sync, MB", "open", "rss_mb", "{:.0f}"),
                                  ("RSS at the end of the load, MB", "load", "rss_mb", "{:.0f}"),
                                  ("peak RSS, MB", "idle", "hwm_mb", "{:.0f}"),
                                  ("threads (under load)", "load", "threads", "{:d}"),
                                  ("file descriptors (under load)", "load", "fds", "{:d}")):
        out.append(f"| {label} | {fmt.format(ours[when][key])} | {fmt.format(plain[when][key])} | "
                   f"{fmt.format(extra(key, when))} | {fmt.format(ls[when][key])} |")
    out.append(f"| CPU under load, % of one core | {ours['load']['cpu_pct']:.1f} | {plain['load']['cpu_pct']:.1f} | "
               f"{ours['load']['cpu_pct'] - plain['load']['cpu_pct']:.1f} | {ls['load']['cpu_pct']:.1f} |")
    out.append(f"| CPU idle, % of one core | {ours['idle']['cpu_pct']:.2f} | {plain['idle']['cpu_pct']:.2f} | "
               f"{ours['idle']['cpu_pct'] - plain['idle']['cpu_pct']:.2f} | {ls['idle']['cpu_pct']:.2f} |")
    out.append(f"| store requests in {ours['idle']['seconds']:.0f} s idle (per hour) | {ours['idle']['requests']} ({per_hour(ours)}) | — | — | "
               f"{ls['idle']['requests']} ({per_hour(ls)}) |")
    lag = ours.get("lag_ms", {})
    out.append(f"| lag commit → in the replica: p50 / p99 / max | {lag.get('p50', 0):.0f} / {lag.get('p99', 0):.0f} / {lag.get('max', 0):.0f} ms"
               f"{'' if not lag.get('missing') else ' (' + str(lag['missing']) + ' not seen)'} | — | — | not measured (syncs every 1 s) |")
    out.append(f"| databases restored equal to the source | {ours.get('restored_ok')} / {MANY_DBS} in {ours.get('restore_s', 0):.0f} s | — | — | — |")
    out.append(f"| setup: open {MANY_DBS:,} databases, first sync | {ours['setup_s']:.1f} s | {plain['setup_s']:.1f} s | — | {ls['setup_s']:.1f} s (until every database had an L0) |")
    out += ["", f"Ours waited {ours['settle_s']:.0f} s after the load for the store to go quiet (compaction, retention); "
            "Litestream's compaction monitors list the store at every interval whether or not anything changed, "
            "so it never goes quiet (its idle window starts 20 s after the load). Requests are RGW's own counter "
            "(every request of every kind)."]
    return "\n".join(out + [""])


def main():
    sys.setswitchinterval(0.001)
    os.environ.pop("AWS_CA_BUNDLE", None)
    store = Store()
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = store.keys
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    # Our warnings go to a file the report can point at (read at load time).
    os.environ.setdefault("LITESTREAM_LOG", "warn")
    os.environ.setdefault("LITESTREAM_LOG_FILE", str(WORK / "ours.log"))
    env_lines = environment(store)  # before loading: the .so may be rebuilt during the run
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(LIB)  # registers the VFS for the whole process; not the default VFS

    began = time.monotonic()
    done = {}  # section number -> its markdown
    try:
        stores = [{"ceph": store, "file": FileStore()}[name] for name in STORES]
        if "throughput" in SECTIONS:
            done["1"] = report_throughput([(s, throughput(st, s)) for st in stores for s in ("NORMAL", "FULL")])
        if "lag" in SECTIONS:
            done["2"] = report_lag([lag(st, tool) for st in stores for tool in (Ours, Litestream)])
        if "puts" in SECTIONS:
            done["3"] = report_puts([puts(st, tool, rate, secs) for st in stores
                                     for rate, secs in PUT_CASES for tool in (Ours, Litestream)])
        if "restore" in SECTIONS:
            t = time.monotonic()
            done["4"] = report_restore(restore_section(store))
            log(f"restore section: {time.monotonic() - t:.0f} s")
        if "replica" in SECTIONS:
            t = time.monotonic()
            done["5"] = report_replica(replica_section(store))
            log(f"replica section: {time.monotonic() - t:.0f} s")
        if "many" in SECTIONS:
            t = time.monotonic()
            done["7"] = report_many(many_section(store))
            log(f"many section: {time.monotonic() - t:.0f} s")
        if "pitr" in SECTIONS:
            t = time.monotonic()
            done["6"] = report_pitr(pitr_section(store))
            log(f"pitr section: {time.monotonic() - t:.0f} s")
    finally:
        for p in LIVE_PROCS:
            p.kill()
    ours_log = WORK / "ours.log"
    if ours_log.exists() and ours_log.stat().st_size:
        lines = ours_log.read_text().splitlines()
        PROBLEMS.append(f"ours logged {len(lines)} warning/error lines ({ours_log}), first: {lines[0]}")
    text = report(env_lines, done, time.monotonic() - began)
    (ROOT / "bench/results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(sys.argv[2:])
    else:
        main()
