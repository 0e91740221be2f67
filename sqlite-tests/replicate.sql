-- The main job in the sqlite3 shell: write through the litestream VFS to a file:// replica,
-- flush, and restore it with the real Litestream 0.5.17 binary.
.load ./target/release/liblitestream
.open file:@TMP@/shell.db?vfs=litestream&replica=file://@TMP@/replica
PRAGMA journal_mode=wal;
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT);
INSERT INTO t(name) VALUES ('alpha'), ('beta');
BEGIN; INSERT INTO t(name) VALUES ('rolled back'); ROLLBACK;
UPDATE t SET name = 'gamma' WHERE id = 2;
SELECT json_type(litestream_sync(10000));
SELECT json_extract(litestream_status(), '$.databases[0].local_txid') = json_extract(litestream_status(), '$.databases[0].remote_txid');
SELECT json_extract(litestream_status(), '$.databases[0].last_error') IS NULL;
.shell "$LITESTREAM_TEST_BIN" restore -o @TMP@/restored.db file://@TMP@/replica
.open @TMP@/restored.db
PRAGMA integrity_check;
SELECT id, name FROM t ORDER BY id;
