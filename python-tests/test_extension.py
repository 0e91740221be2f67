"""The extension as a Python application sees it."""
import json
import sqlite3


def test_status_is_json_with_version(connect):
    con = connect()
    status = json.loads(con.execute("select litestream_status()").fetchone()[0])
    assert status["version"]
    assert status["format"] == "LTX v3 (Litestream 0.5.x)"
    assert status["databases"] == []
    assert sorted(status["vfs"]) == ["litestream", "litestream-replica"]


def test_loading_twice_and_other_connections(connect, ext_path):
    con = connect()
    con.load_extension(ext_path)  # a second load is harmless
    assert con.execute("select json_valid(litestream_status('main'))").fetchone()[0] == 1
    # Loaded permanently: a connection that never loaded it has the functions too.
    other = sqlite3.connect(":memory:")
    assert json.loads(other.execute("select litestream_status()").fetchone()[0])["version"]
    other.close()


def test_both_vfs_names_are_registered(connect, tmp_path):
    connect()
    try:
        sqlite3.connect(f"file:{tmp_path}/x.db?vfs=no-such-vfs", uri=True)
        raise AssertionError("an unknown VFS must be refused")
    except sqlite3.OperationalError as e:
        assert "no such vfs" in str(e)
    for name in ("litestream", "litestream-replica"):
        try:
            con = sqlite3.connect(f"file:{tmp_path}/{name}.db?vfs={name}", uri=True)
            con.execute("select 1 from sqlite_master").fetchall()
            con.close()
        except sqlite3.OperationalError as e:
            # Registered (not "no such vfs"), even where opening is not implemented yet.
            assert "no such vfs" not in str(e), e


def test_wrong_arity_is_an_error(connect):
    con = connect()
    try:
        con.execute("select litestream_status(1, 2)")
        raise AssertionError("two arguments must be refused")
    except sqlite3.OperationalError as e:
        assert "wrong number of arguments" in str(e)


LOAD_ON_OUR_VFS = r"""
import sqlite3, sys, urllib.parse
ext, tmp = sys.argv[1], sys.argv[2]
boot = sqlite3.connect(":memory:"); boot.enable_load_extension(True); boot.load_extension(ext)
replica = urllib.parse.quote(f"file://{tmp}/replica", safe="")
con = sqlite3.connect(f"file:{tmp}/app.db?vfs=litestream&replica={replica}", uri=True)
con.enable_load_extension(True)
con.load_extension(ext)  # resolved through the connection's VFS: ours
print(con.execute("select json_valid(litestream_status())").fetchone()[0])
"""


def test_loading_on_a_litestream_connection(ext_path, tmp_path):
    """SQLite loads an extension through the connection's VFS (xDlOpen/xDlSym): on a database
    opened with vfs=litestream that must work, not crash the host (it did, once)."""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-c", LOAD_ON_OUR_VFS, ext_path, str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[-2000:]}"
    assert p.stdout.strip() == "1"
