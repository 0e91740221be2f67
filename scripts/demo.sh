#!/usr/bin/env bash
# The main job on the embedded file:// default, in the sqlite3 shell: load the extension,
# see what it registers, and (as the VFS issues land) replicate and restore.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "== loading target/release/liblitestream.so into sqlite3 $(sqlite3 --version | cut -d' ' -f1)"
sqlite3 -batch :memory: <<SQL
.load ./target/release/liblitestream
SELECT 'status: ' || litestream_status();
SQL
