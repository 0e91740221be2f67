#!/usr/bin/env bash
# The quick loop: no root, no S3 server, a few minutes. Unit tests (storage, lease and
# compactor on the in-memory store with injected faults, capture's WAL cursor, LTX, restore
# plans), the sqlite3 shell tests, the Python tests on `file://` that need no server (the
# files in QUICK_FILES; tests parametrized over moto/Ceph or marked `servers` are
# deselected, not skipped), and the Node suite. `make test` runs everything, against real
# servers, and stays the gate.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
QUICK_FILES=(test_extension.py test_inputs.py test_cli.py test_restore.py test_replication.py
    test_replica_verify.py test_replica.py test_pitr.py test_status_truth.py
    test_litestream_interop.py)
for tool in sqlite3 node npm; do
    command -v "$tool" >/dev/null || { echo "test-quick: $tool is required (apt-get install sqlite3 nodejs npm)" >&2; exit 1; }
done
BIN="$(scripts/setup-venv.sh)"
unset AWS_CA_BUNDLE
export LITESTREAM_TEST_LIB="$ROOT/target/release/liblitestream"
export LITESTREAM_TEST_BIN="$BIN"
export LITESTREAM_TEST_PYTHON="$ROOT/.venv/bin/python"
export LITESTREAM_TEST_QUICK=1
failed=()
run() {
    local name="$1"; shift
    echo "=== $name"
    if "$@"; then echo "=== $name: ok"; else echo "=== $name: FAILED"; failed+=("$name"); fi
}
started=$SECONDS
run "unit tests" cargo test --release --lib --quiet
run "sqlite3 shell tests" sqlite-tests/run.sh
run "python tests (file://)" bash -c 'cd python-tests && "$LITESTREAM_TEST_PYTHON" -m pytest -q -rfE "$@"' _ "${QUICK_FILES[@]}"
run "node tests" node-tests/run.sh
echo "test-quick: $((SECONDS - started)) s"
if [ ${#failed[@]} -gt 0 ]; then echo "FAILED: ${failed[*]}"; exit 1; fi
echo "test-quick: all passed"
