'use strict';
// The loadable SQLite extension shipped in this package, for better-sqlite3 (or any host
// that loads extensions by path).
const fs = require('node:fs');
const path = require('node:path');

/** The absolute path of the extension library (for `db.loadExtension(path)`). */
function getLoadablePath() {
  const lib = path.join(__dirname, 'lib', 'liblitestream.so');
  if (!fs.existsSync(lib)) {
    throw new Error(`sqlite-litestream: ${lib} is missing (this package holds the library for linux x64 glibc only)`);
  }
  return lib;
}

/** Loads the extension into `db` (a better-sqlite3 Database): once per process is enough,
 * it registers the `litestream` and `litestream-replica` VFS and the SQL functions for
 * every connection. */
function load(db) {
  db.loadExtension(getLoadablePath());
}

module.exports = { getLoadablePath, load };
