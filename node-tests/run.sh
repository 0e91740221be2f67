#!/usr/bin/env bash
# Installs better-sqlite3@12 once (12 is the last major that runs on Node 20) and runs the
# Node suite with node's built-in test runner.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [ ! -e node_modules/better-sqlite3/build/Release/better_sqlite3.node ]; then
    npm install --no-audit --no-fund --loglevel=error
fi
node --test
