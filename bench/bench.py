"""Side-by-side benchmark: plain SQLite, our `litestream` VFS and Litestream 0.5.17, on one
machine, one disk and one store (Ceph RGW). Run through `make bench` / scripts/bench.sh, which
start the servers and export LITESTREAM_TEST_*. Prints a markdown report and writes it to
bench/results.md.

BENCH_SCALE (default 1.0) scales every size and duration; 0.05 is a quick smoke run.
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
        """The decompressed pages of an LTX v3 file (what both tools write)."""
        b = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
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


def l0_key(prefix, txid):
    return f"{prefix}/0000/{txid:016x}-{txid:016x}.ltx"


def poll_l0(endpoint, ak, sk, bucket, prefix, ready, stop, out):
    """Separate process (no GIL shared with the committing loop). Both tools write L0 files
    as single, consecutive TXIDs, so it HEADs the next expected key every POLL_INTERVAL and
    records when it first answers 200 (time.monotonic is system-wide). HEAD, not LIST: on
    this RGW every response with a body (LIST, GET) reaches the client ~40 ms after the
    server finished it (its log says 4 ms), which would swamp the lag being measured."""
    import botocore.exceptions
    s3 = s3_client(endpoint, ak, sk)
    existing = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/0000/").get("Contents", [])]
    txid = max((int(k.rsplit("/", 1)[1].split("-")[1][:16], 16) for k in existing), default=0) + 1
    seen, rtts = [], []
    ready.set()
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            s3.head_object(Bucket=bucket, Key=l0_key(prefix, txid))
            found = True
        except botocore.exceptions.ClientError as e:
            if e.response["ResponseMetadata"]["HTTPStatusCode"] != 404:
                raise
            found = False
        t1 = time.monotonic()
        rtts.append(t1 - t0)
        if found:
            seen.append((t1, l0_key(prefix, txid)))
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
    setups = [tool(store, f"tput-{sync.lower()}") for tool in TOOLS]
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
        rows.append({"tool": t.label, "tps": block * ROUNDS / sum(s), "secs": sum(s), "rounds": s, **st})
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
    t = tool(store, "lag")
    n = max(5, int(LAG_RATE * LAG_SECONDS))
    log(f"lag: {t.label}, {n} commits at {LAG_RATE}/s")
    con = t.start("NORMAL")
    ctx = multiprocessing.get_context("spawn")  # never fork a process with a tokio runtime in it
    ready, stop = ctx.Event(), ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    poller = ctx.Process(target=poll_l0, args=(store.endpoint, *store.keys, store.bucket,
                                               t.prefix, ready, stop, send), daemon=True)
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
    all_l0 = {k for k in store.keys_under(t.prefix) if "/0000/" in k}
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
    return {"tool": t.label, "commits": n, "files": len(seen), "early": early,
            "p50": percentile(lags, 50) if lags else None, "p99": percentile(lags, 99) if lags else None,
            "max": max(lags) if lags else None, "head_rtt_ms": 1000 * sum(rtts) / len(rtts), **st}


def puts(store, tool, rate, seconds):
    t = tool(store, f"puts-{rate or 'max'}")
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
    return {"tool": t.label, "target": rate, "commits": n, "rate": n / secs,
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
        f"`{store.bucket}`, one prefix per case under `{RUN_ID}/`",
    ]


def report(env_lines, tput, lags, put_rows, wall):
    out = ["# Benchmark: plain SQLite vs ours vs Litestream 0.5.17", ""]
    out += env_lines + [""]

    out += [f"## 1. Throughput: {(THROUGHPUT_TX // ROUNDS) * ROUNDS:,} single-row transactions, WAL",
            "", "Target: ours ÷ plain ≥ 0.95 (Litestream 0.5.17 was measured at 0.68-0.74).", "",
            "| synchronous | setup | tx/s | ÷ plain | ÷ plain per round: median (min–max) | commit time | drain after last block | new L0 objects |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for sync, rows in tput:
        for r in rows:
            drain = "" if "drain_s" not in r else f"{r['drain_s']:.2f} s"
            l0 = "" if "l0" not in r else f"{r['l0']:,}"
            out.append(f"| {sync} | {r['tool']} | {r['tps']:,.0f} | **{r['ratio']:.3f}** | "
                       f"{r['spread'][0]:.2f} ({r['spread'][1]:.2f}–{r['spread'][2]:.2f}) | {r['secs']:.1f} s | {drain} | {l0} |")
    out += ["", f"Each setup gets its own fresh DB, all three open at once; the {THROUGHPUT_TX:,} "
            f"transactions run as {ROUNDS} blocks per setup in rotating order (plain, ours, Litestream; "
            "ours, Litestream, plain; ...), and each setup settles after its block (ours: "
            "`litestream_sync()`; Litestream: L0 count unchanged for "
            f"{QUIET_SECONDS:.0f} s) outside the timed part. tx/s = transactions ÷ time spent in "
            "the commit loop; the per-round median is less sensitive to bursts of other load. Drain after the last block: ours = time `litestream_sync()` took; "
            "Litestream = time until its L0 count stopped changing (less the quiet window).", ""]

    out += [f"## 2. Lag at {LAG_RATE} commits/s (synchronous=NORMAL, {LAG_SECONDS:.0f} s)", "",
            "Lag = COMMIT returning → first L0 object containing it readable in the bucket. "
            "Target for ours: p50 ≤ 25 ms, p99 ≤ 100 ms (Litestream 0.5.17 defaults: p50 800 ms, p99 1.3 s).",
            "", "| setup | commits | new L0 objects | p50 | p99 | max | mean HEAD round trip |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for r in lags:
        out.append(f"| {r['tool']} | {r['commits']} | {r['files']} | {fmt_ms(r['p50'])} | "
                   f"{fmt_ms(r['p99'])} | {fmt_ms(r['max'])} | {r['head_rtt_ms']:.1f} ms |")
    out += ["", f"Method: a separate process HEADs the next expected L0 key (`<prefix>/0000/<txid>-<txid>.ltx`; "
            f"both tools write consecutive single-TXID L0 files) every {POLL_INTERVAL * 1000:.0f} ms; "
            "a key's arrival is when the first HEAD answering 200 came back (an upper bound: lags "
            "include up to one poll period plus one HEAD). HEAD, not LIST or GET: on this RGW every "
            "response with a body reaches the client ~40 ms after the server finished it (the RGW log "
            "says 4 ms). Attribution is exact: commit i inserts the text `lag-<i>;`, and its object is "
            "the first L0 object whose (LZ4-decoded) pages contain that text. Commits whose object was "
            "readable before COMMIT returned (counted as 0 ms): "
            + ", ".join(f"{r['tool']} {r['early']}" for r in lags) + ".", ""]

    out += ["## 3. PUTs (new L0 objects) per 1,000 commits (synchronous=NORMAL)", "",
            "| target rate | setup | commits | achieved commits/s | new L0 objects | **L0 PUTs per 1,000 commits** | `uploads` (ours) | all PUTs (RGW counter) | all PUTs per 1,000 commits |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in put_rows:
        target = f"{r['target']:,}/s" if r["target"] else "as fast as possible (10,000/s target)"
        uploads = f"{r['uploads']:,}" if "uploads" in r else ""
        everything = ("n/a | n/a" if r["all_puts"] is None
                      else f"{r['all_puts']:,} | {1000 * r['all_puts'] / r['commits']:,.1f}")
        out.append(f"| {target} | {r['tool']} | {r['commits']:,} | {r['rate']:,.1f} | {r['l0']:,} | "
                   f"**{r['per_1000']:,.1f}** | {uploads} | {everything} |")
    out += ["", "Paced rates sleep to an absolute schedule; the fastest case commits in a tight loop for "
            f"{PUT_CASES[2][1]:.0f} s. New L0 objects are counted by listing the case's prefix after "
            "the tool settled. \"All PUTs\" is RGW's own PUT counter over the same span (setup "
            "excluded): every PUT the tool made (L0, compaction, snapshots, lease renewals, refused "
            "conditional writes); the harness itself only LISTs, HEADs and GETs.", ""]

    out += ["## Problems observed", ""]
    out += [f"- {p}" for p in PROBLEMS] or ["- none (no `last_error`, every sync drained, no Litestream ERROR lines, row counts right)"]
    out += ["", f"Total wall time of this run: {wall / 60:.1f} min. Load average at the end: "
            f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} (other work on this machine skews every number).", ""]
    return "\n".join(out)


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
    try:
        tput = [(s, throughput(store, s)) for s in ("NORMAL", "FULL")]
        lags = [lag(store, tool) for tool in (Ours, Litestream)]
        put_rows = [puts(store, tool, rate, secs) for rate, secs in PUT_CASES for tool in (Ours, Litestream)]
    finally:
        for p in LIVE_PROCS:
            p.kill()
    ours_log = WORK / "ours.log"
    if ours_log.exists() and ours_log.stat().st_size:
        lines = ours_log.read_text().splitlines()
        PROBLEMS.append(f"ours logged {len(lines)} warning/error lines ({ours_log}), first: {lines[0]}")
    text = report(env_lines, tput, lags, put_rows, time.monotonic() - began)
    (ROOT / "bench/results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
