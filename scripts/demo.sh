#!/usr/bin/env bash
# The main job on the embedded file:// default, in the sqlite3 shell: write through the
# litestream VFS, restore with litestream_restore(), query the replica in place, see the
# replica's LTX files, and restore them with the real Litestream binary when the test venv
# has it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
echo "== sqlite3 $(sqlite3 --version | cut -d' ' -f1): writing $WORK/app.db through vfs=litestream, replica file://$WORK/replica"
sqlite3 -batch :memory: <<SQL
.load ./target/release/liblitestream
.open file:$WORK/app.db?vfs=litestream&replica=file://$WORK/replica
PRAGMA journal_mode=wal;
CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
INSERT INTO notes(body) VALUES ('first'), ('second');
UPDATE notes SET body = 'second, edited' WHERE id = 2;
SELECT 'synced: ' || litestream_sync(10000);
SELECT 'status: ' || litestream_status();
SQL
echo "== restored by us (litestream_restore), and read in place through the litestream-replica VFS:"
sqlite3 -batch :memory: <<SQL
.load ./target/release/liblitestream
SELECT 'restore: ' || litestream_restore('file://$WORK/replica', '$WORK/ours.db');
.open file:$WORK/view.db?vfs=litestream-replica&replica=file://$WORK/replica
SELECT 'replica TXID ' || litestream_txid() || ': ' || group_concat(body, ', ') FROM notes;
SQL
echo "== the replica (Litestream's file layout):"
find "$WORK/replica" -type f | sort | sed "s|$WORK/||"
if [ -x .venv/bin/litestream ]; then
    echo "== restored by Litestream 0.5.17 (litestream restore):"
    env -u AWS_CA_BUNDLE .venv/bin/litestream restore -o "$WORK/restored.db" "file://$WORK/replica"
    sqlite3 "$WORK/restored.db" "SELECT id, body FROM notes"
fi
