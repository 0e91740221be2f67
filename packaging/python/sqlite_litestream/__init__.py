"""The litestream SQLite extension: replicate every commit to object storage (Litestream 0.5
compatible), restore, and read replicas in place.

    import sqlite3, sqlite_litestream
    boot = sqlite3.connect(":memory:")
    sqlite_litestream.load(boot)   # once per process: registers the VFS for every connection

Works with the standard library's ``sqlite3`` (when its ``enable_load_extension`` exists:
Debian's and most distributions' Pythons; not pyenv's or python.org's default builds) and
with ``apsw`` (any Python).
"""
import os

__all__ = ["loadable_path", "load", "__version__"]

__version__ = "0.1.0"


def loadable_path():
    """The path of the extension library, without its ``.so`` suffix (as SQLite's
    ``load_extension`` and the sqlite3 shell's ``.load`` take it)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "liblitestream")


def load(conn):
    """Loads the extension into ``conn`` (a ``sqlite3.Connection`` or an ``apsw.Connection``).
    Once per process is enough: the VFS (``litestream``, ``litestream-replica``) and the SQL
    functions are registered for every connection opened after it."""
    path = loadable_path()
    if type(conn).__module__.startswith("apsw"):
        conn.enable_load_extension(True)
        conn.load_extension(path)
        return
    if not hasattr(conn, "enable_load_extension"):
        raise RuntimeError(
            "this Python's sqlite3 module cannot load extensions (built without "
            "enable_load_extension, as pyenv's and python.org's are): use /usr/bin/python3, "
            "or apsw (pip install apsw) and sqlite_litestream.load(apsw.Connection(':memory:'))"
        )
    conn.enable_load_extension(True)
    try:
        conn.load_extension(path)
    finally:
        conn.enable_load_extension(False)
