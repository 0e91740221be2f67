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


def pytest_configure(config):
    config.addinivalue_line("markers", "servers: needs the S3 servers `make test` starts (moto, Ceph RGW)")


def pytest_collection_modifyitems(config, items):
    """`make test-quick` (LITESTREAM_TEST_QUICK=1) runs without S3 servers: tests on moto or
    Ceph, and those marked `servers`, are deselected (reported as such, never skipped).
    `make test` runs them all."""
    if os.environ.get("LITESTREAM_TEST_QUICK") != "1":
        return
    def needs_servers(item):
        params = getattr(getattr(item, "callspec", None), "params", {})
        kinds = {v for v in params.values() if isinstance(v, str)}
        return bool(kinds & {"moto", "ceph"}) or item.get_closest_marker("servers") is not None
    deselected = [i for i in items if needs_servers(i)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if not needs_servers(i)]
