/*
 * litestream_init.c: linked into SQLite's `testfixture` so that every database the TCL test
 * suite opens goes through the `litestream` VFS.
 *
 * Built with  make testfixture OPTS=-DSQLITE_EXTRA_INIT=litestream_suite_init \
 *                              LIBS="<this file> -ldl"
 * SQLite calls SQLITE_EXTRA_INIT at the end of every successful sqlite3_initialize(): the first
 * one, and each one after a test's own sqlite3_shutdown() (which makes `unix` the default VFS
 * again), in the test process and in every child process it starts (multi-client tests,
 * crashsql, ...).
 *
 * With LITESTREAM_SUITE_LIB unset or empty the hook does nothing: the binary behaves like the
 * stock testfixture, which is how the suite gets its default-VFS baseline from the same binary.
 * With LITESTREAM_SUITE_LIB=/path/to/liblitestream (without .so, like `.load`), it opens a
 * throwaway :memory: connection, loads the extension (dlopen returns the same handle after
 * the first time, so the extension's state survives a shutdown), calls
 * SELECT litestream_default_vfs('litestream') and closes the connection.
 *
 * A failure is reported on stderr with the prefix "litestream_suite_init:" (the runner counts
 * these lines) and the initialize still succeeds: some tests initialize SQLite with a malloc
 * that fails on purpose, and their result must not depend on this hook.
 */
#include <stdio.h>
#include <stdlib.h>
#include "sqlite3.h"

int litestream_suite_init(const char *unused) {
    const char *lib = getenv("LITESTREAM_SUITE_LIB");
    sqlite3 *db = 0;
    char *err = 0;
    int rc;
    (void)unused;
    if (lib == 0 || lib[0] == 0) return SQLITE_OK;
    /* sqlite3_initialize() has set isInit before calling us, so this open does not recurse. */
    rc = sqlite3_open_v2(":memory:", &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "unix");
    if (rc == SQLITE_OK) rc = sqlite3_enable_load_extension(db, 1);
    if (rc == SQLITE_OK) rc = sqlite3_load_extension(db, lib, 0, &err);
    if (rc == SQLITE_OK) {
        rc = sqlite3_exec(db, "SELECT litestream_default_vfs('litestream')", 0, 0, &err);
    }
    if (rc != SQLITE_OK) {
        fprintf(stderr, "litestream_suite_init: rc=%d %s\n", rc,
                err ? err : (db ? sqlite3_errmsg(db) : "out of memory"));
    }
    sqlite3_free(err);
    sqlite3_close(db);
    return SQLITE_OK;
}
