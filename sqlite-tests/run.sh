#!/usr/bin/env bash
# Runs each sqlite-tests/*.sql in the sqlite3 shell (from the repo root, so
# `.load ./target/release/liblitestream` works) and compares its output with the .expected file.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
passed=0; failed=0
for sql in sqlite-tests/*.sql; do
    expected="${sql%.sql}.expected"
    actual="$(TMPDIR="$(mktemp -d)" sqlite3 -batch -bail :memory: < "$sql" 2>&1)"
    if [ "$actual" == "$(cat "$expected")" ]; then
        passed=$((passed+1))
    else
        failed=$((failed+1))
        echo "FAIL $sql"; diff <(echo "$actual") "$expected" | head -20
    fi
done
echo "sqlite-tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
