#!/usr/bin/env bash
# Runs every test suite against real servers: starts moto (SigV4 enforced) and Ceph RGW,
# runs cargo tests, the sqlite3 shell scripts, the Python and Node suites, SQLite's own TCL
# tests through our VFS (scripts/sqlite-suite.sh), and always stops
# the servers, even when a test fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STATE="$ROOT/target/test-servers"

for tool in sqlite3 node npm; do
    command -v "$tool" >/dev/null || { echo "run-tests: $tool is required (apt-get install sqlite3 nodejs npm)" >&2; exit 1; }
done

scripts/test-servers.sh start "$STATE"
trap 'scripts/test-servers.sh stop "$STATE"' EXIT
# shellcheck disable=SC1091
. "$STATE/env"
export LITESTREAM_TEST_LIB="$ROOT/target/release/liblitestream"

# Each suite's output is also kept in target/test-logs, so the end of the run can show the
# failures again: a CI log is often read from its tail.
LOGS="$ROOT/target/test-logs"
rm -rf "$LOGS" && mkdir -p "$LOGS"
failed=()
run() {
    local name="$1"; shift
    local log="$LOGS/${name// /-}.log"
    echo "=== $name"
    if "$@" 2>&1 | tee "$log"; then echo "=== $name: ok"; else echo "=== $name: FAILED"; failed+=("$name"); fi
}

run "cargo tests" cargo test --release
run "sqlite3 shell tests" sqlite-tests/run.sh
run "python tests" "$LITESTREAM_TEST_PYTHON" -m pytest -q -rfE python-tests
run "node tests" node-tests/run.sh
# SQLite's own TCL tests through our VFS, compared with the default VFS (file:// replicas; the
# quick subset here, the whole list under make soak).
run "sqlite suite" env SQLITE_SUITE_FILES="${SQLITE_SUITE_FILES:-quick}" SQLITE_SUITE_LIB="$LITESTREAM_TEST_LIB" \
    scripts/sqlite-suite.sh

if [ ${#failed[@]} -gt 0 ]; then
    for name in "${failed[@]}"; do
        echo "=== the end of $name's output again (whole: target/test-logs/${name// /-}.log)"
        tail -n 60 "$LOGS/${name// /-}.log"
    done
    echo "FAILED suites: ${failed[*]}"
    exit 1
fi
echo "all test suites passed"
