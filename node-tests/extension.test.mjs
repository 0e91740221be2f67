// The extension as a Node.js application sees it (better-sqlite3 bundles its own SQLite).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
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

test('a Node app replicates and reads a replica (default VFS switch: no URIs in better-sqlite3)', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'litestream-node-'));
  const boot = new Database(':memory:');
  boot.loadExtension(lib);
  process.env.LITESTREAM_REPLICA_URL = `file://${dir}/replica`;
  try {
    assert.equal(boot.prepare("select litestream_default_vfs('litestream') as p").get().p, 'unix');
    const db = new Database(path.join(dir, 'app.db'));
    db.pragma('journal_mode = wal');
    db.exec('create table notes(id integer primary key, body text)');
    const insert = db.prepare('insert into notes(body) values (?)');
    for (let i = 0; i < 50; i++) insert.run(`note ${i}`);
    const synced = JSON.parse(db.prepare('select litestream_sync(10000) as s').get().s);
    const txid = synced[path.join(dir, 'app.db')];
    assert.match(txid, /^[0-9a-f]{16}$/);
    db.close();

    boot.prepare("select litestream_default_vfs('litestream-replica')").get();
    const replica = new Database(path.join(dir, 'view.db'), { readonly: true });
    const row = replica.prepare('select count(*) as n, litestream_txid() as txid from notes').get();
    assert.equal(row.n, 50);
    assert.equal(row.txid, txid);
    assert.throws(() => replica.exec("insert into notes(body) values ('x')"), /readonly/);
    replica.close();
  } finally {
    boot.prepare("select litestream_default_vfs('unix')").get();
    delete process.env.LITESTREAM_REPLICA_URL;
    boot.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("an error's SQLite code reaches the app (err.code), not just its text", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'litestream-node-'));
  const db = new Database(':memory:');
  db.loadExtension(lib);
  try {
    fs.mkdirSync(path.join(dir, 'empty'));
    const restore = db.prepare('select litestream_restore(?, ?)');
    assert.throws(() => restore.get(`file://${dir}/empty`, path.join(dir, 'out.db')),
      (e) => e.code === 'SQLITE_EMPTY' && /no backup/.test(e.message));
    assert.throws(() => db.prepare('select litestream_sync(?)').get('soon'),
      (e) => e.code === 'SQLITE_ERROR' && /milliseconds/.test(e.message));
  } finally {
    db.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
