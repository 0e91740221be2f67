// The extension as a Node.js application sees it (better-sqlite3 bundles its own SQLite).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';

const lib = process.env.LITESTREAM_TEST_LIB
  ?? path.resolve(import.meta.dirname, '../target/release/liblitestream');

test('loads and reports its status as JSON', () => {
  const db = new Database(':memory:');
  db.loadExtension(lib);
  db.loadExtension(lib); // a second load is harmless
  const status = JSON.parse(db.prepare('select litestream_status() as s').get().s);
  assert.ok(status.version);
  assert.equal(status.format, 'LTX v3 (Litestream 0.5.x)');
  assert.deepEqual(status.databases, []);
  db.close();
});

test('registers both VFS names in the host SQLite', () => {
  const db = new Database(':memory:');
  db.loadExtension(lib);
  const status = JSON.parse(db.prepare("select litestream_status('main') as s").get().s);
  assert.deepEqual(status.vfs.sort(), ['litestream', 'litestream-replica']);
  // Loaded permanently: a second connection has the functions without loading.
  const other = new Database(':memory:');
  assert.equal(other.prepare('select json_valid(litestream_status()) as v').get().v, 1);
  other.close();
  db.close();
});
