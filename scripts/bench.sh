#!/usr/bin/env bash
# `make bench`: plain SQLite vs our VFS vs Litestream 0.5.17, side by side against one Ceph RGW.
# Starts private servers (not the test suite's, so both can run at once), always stops them,
# and runs bench/bench.py with the venv python (it can load extensions). BENCH_SCALE scales it.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/target/bench-servers"

[ -f target/release/liblitestream.so ] || [ -n "${LITESTREAM_BENCH_LIB:-}" ] || {
    echo "bench: target/release/liblitestream.so is missing: run \`make build\`" >&2; exit 1; }

scripts/test-servers.sh start "$STATE"
trap 'scripts/test-servers.sh stop "$STATE"' EXIT
# shellcheck disable=SC1091
. "$STATE/env"
# Loopback traffic must never go through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"
# RGW's admin socket: its PUT counter counts every PUT a tool makes, not just L0 files.
export BENCH_RGW_ASOK="$STATE/ceph/run/client.rgw.asok"
"$LITESTREAM_TEST_PYTHON" bench/bench.py
