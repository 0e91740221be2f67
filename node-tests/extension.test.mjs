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

test("the npm package installs into a fresh project, and the README's Node quick start runs with it", async () => {
  const { spawnSync, execFileSync } = await import('node:child_process');
  const root = path.resolve(import.meta.dirname, '..');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'litestream-node-'));
  try {
    // `make npm`'s tarball, installed offline (it has no dependencies) into a new project;
    // better-sqlite3 is the one this suite installed (building it again takes minutes).
    const tarball = execFileSync(path.join(root, 'scripts/build-npm.sh'), [`${lib}.so`, path.join(dir, 'dist')],
      { encoding: 'utf8' }).trim();
    const app = path.join(dir, 'app');
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
    execFileSync('npm', ['install', '--offline', '--no-audit', '--no-fund', '--loglevel=error', tarball], { cwd: app });
    fs.symlinkSync(path.resolve(import.meta.dirname, 'node_modules/better-sqlite3'),
      path.join(app, 'node_modules/better-sqlite3'));
    const pkg = path.join(app, 'node_modules/sqlite-litestream');
    assert.ok(fs.existsSync(path.join(pkg, 'index.d.ts')), 'types ship');
    // CommonJS sees the same functions, and the library inside the package.
    const cjs = spawnSync(process.execPath, ['-e',
      "const m = require('sqlite-litestream'); console.log(typeof m.load, m.getLoadablePath())"],
      { cwd: app, encoding: 'utf8' });
    assert.equal(cjs.stdout.trim(), `function ${fs.realpathSync(pkg)}/lib/liblitestream.so`, cjs.stderr);

    const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
    const start = readme.indexOf('## Quick start');
    const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
    const block = /```js\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(block, 'the quick start has a js block');
    assert.ok(block.includes("from 'sqlite-litestream'"), 'the quick start uses the package');
    const code = block.replaceAll('/tmp/quickstart-replica', `${dir}/replica`);
    const run = spawnSync(process.execPath, ['--input-type=module', '-e', code],
      { cwd: app, encoding: 'utf8', timeout: 60000 });
    assert.equal(run.status, 0, run.stderr);
    const synced = JSON.parse(run.stdout.trim());
    assert.match(synced[path.join(fs.realpathSync(app), 'app-node.db')] ?? synced[path.join(app, 'app-node.db')], /^[0-9a-f]{16}$/, run.stdout);
    const db = new Database(':memory:');
    db.loadExtension(lib);
    db.prepare('select litestream_restore(?, ?)').get(`file://${dir}/replica/app-node.db`, path.join(dir, 'out.db'));
    db.close();
    const restored = new Database(path.join(dir, 'out.db'), { readonly: true });
    const source = new Database(path.join(app, 'app-node.db'), { readonly: true });
    assert.deepEqual(restored.prepare('select body from notes').all(), [{ body: 'hello from node' }]);
    assert.deepEqual(restored.prepare('select body from notes').all(), source.prepare('select body from notes').all());
    restored.close();
    source.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
