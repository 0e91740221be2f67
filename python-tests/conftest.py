"""Fixtures shared by the Python suite: the built extension, loaded by the stdlib sqlite3
module of /usr/bin/python3 (the venv `make test` creates from it)."""
import os
import pathlib
import sqlite3

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ext_path():
    path = os.environ.get("LITESTREAM_TEST_LIB", str(ROOT / "target/release/liblitestream"))
    assert pathlib.Path(path + ".so").exists(), f"{path}.so is missing: run `make build`"
    return path


@pytest.fixture
def connect(ext_path):
    """Opens a connection with the extension loaded."""
    opened = []

    def _connect(target=":memory:", **kw):
        con = sqlite3.connect(target, **kw)
        con.enable_load_extension(True)
        con.load_extension(ext_path)
        opened.append(con)
        return con

    yield _connect
    for con in opened:
        con.close()
