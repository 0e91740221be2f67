#!/usr/bin/env bash
# Runs each sqlite-tests/*.sql in the sqlite3 shell from the repo root (so
# `.load ./target/release/liblitestream` works) and compares its output with the .expected
# file. In both, @TMP@ stands for a fresh temporary directory.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
passed=0; failed=0
for sql in sqlite-tests/*.sql; do
    expected="${sql%.sql}.expected"
    tmp="$(mktemp -d)"
    actual="$(sed "s|@TMP@|$tmp|g" "$sql" | TMPDIR="$tmp" sqlite3 -batch -bail :memory: 2>&1)"
    if [ "$actual" == "$(sed "s|@TMP@|$tmp|g" "$expected")" ]; then
        passed=$((passed+1))
    else
        failed=$((failed+1))
        echo "FAIL $sql"; diff <(echo "$actual") <(sed "s|@TMP@|$tmp|g" "$expected") | head -20
    fi
    rm -rf "$tmp"
done
echo "sqlite-tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
