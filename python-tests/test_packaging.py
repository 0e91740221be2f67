"""The new user's path: `make wheel`'s wheel installed with pip into a fresh venv, and the
README's quick start run as written (its code blocks are read from the README, so they cannot
rot): the stdlib sqlite3 on /usr/bin/python3, the command-line tool the wheel installs, and
apsw. Each replica restores, with the real
Litestream binary too, to the database the quick start wrote."""
import os
import pathlib
import re
import sqlite3
import stat
import subprocess
import sys
import zipfile

import pytest

from helpers import dump

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LIBRARY_BYTES = 10 * 1024 * 1024


def quick_start_blocks(lang):
    """The ```lang code blocks of the README's "Quick start" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick start"):text.index("\n## ", text.index("## Quick start") + 1)]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def as_run_here(code, replica_dir):
    """The block as a user runs it, with its replica directory under the test's own."""
    return code.replace("/tmp/quickstart-replica", str(replica_dir))


@pytest.fixture(scope="module")
def wheel(ext_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("wheels")
    built = subprocess.run([sys.executable, str(ROOT / "scripts" / "build-wheel.py"), ext_path + ".so", str(out)],
                           capture_output=True, text=True, check=True, timeout=300).stdout.strip()
    return pathlib.Path(built)


def venv_with(wheel, where, python, *more):
    """A fresh venv of `python` with the wheel installed (offline) and `more` packages."""
    subprocess.run([python, "-m", "venv", str(where)], check=True, timeout=300)
    pip = [str(where / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + ["--no-index", str(wheel)], check=True, timeout=300)
    if more:
        subprocess.run(pip + list(more), check=True, timeout=600)
    return where / "bin" / "python"


def test_the_wheel_holds_a_stripped_library_and_the_glibc_tag_it_needs(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        lib = z.getinfo("sqlite_litestream/liblitestream.so")
        assert lib.file_size <= MAX_LIBRARY_BYTES, f"{lib.file_size} bytes"
        record = z.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
    assert "sqlite_litestream/__init__.py" in names
    with zipfile.ZipFile(wheel) as z:
        cli = z.getinfo(next(n for n in names if n.endswith(".data/scripts/sqlite-litestream")))
        mode = cli.external_attr >> 16
        assert stat.S_ISREG(mode) and mode & 0o111, f"pip makes the tool executable: {oct(mode)}"
    assert all(n in record for n in names), "RECORD lists every file"
    needed = subprocess.run(["objdump", "-T", os.environ.get("LITESTREAM_TEST_LIB", "") + ".so"],
                            capture_output=True, text=True, check=True).stdout
    newest = max(int(m) for m in re.findall(r"GLIBC_2\.(\d+)", needed))
    assert wheel.name.endswith(f"-py3-none-manylinux_2_{newest}_x86_64.whl"), wheel.name


def test_the_release_library_is_at_most_10_mb(ext_path):
    size = os.path.getsize(ext_path + ".so")
    assert size <= MAX_LIBRARY_BYTES, f"{ext_path}.so is {size} bytes"


def run_quick_start(python, block, first_line, tmp_path):
    """Runs one Python block of the quick start in a fresh app directory; returns the
    directory, the replica directory and what it printed."""
    app, replica_dir = tmp_path / "app", tmp_path / "replica"
    app.mkdir()
    assert first_line in block
    run = subprocess.run([str(python), "-c", as_run_here(block, replica_dir)], cwd=app,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return app, replica_dir, run.stdout


def test_the_python_quick_start_runs_from_the_wheel(wheel, tmp_path):
    python = venv_with(wheel, tmp_path / "venv", "/usr/bin/python3")
    stdlib = quick_start_blocks("python")[0]
    app, replica_dir, out = run_quick_start(python, stdlib, "import sqlite3, sqlite_litestream", tmp_path)
    synced, restored = out.splitlines()
    assert re.fullmatch(r'\{"' + re.escape(str(app / "app.db")) + r'":"[0-9a-f]{16}"\}', synced), synced
    assert restored == "[('hello, object storage',)]"
    assert dump(app / "restored.db") == dump(app / "app.db")
    # What Litestream itself restores from the same replica.
    theirs = tmp_path / "theirs.db"
    subprocess.run([os.environ["LITESTREAM_TEST_BIN"], "restore", "-o", str(theirs),
                    f"file://{replica_dir}/app.db"], check=True, capture_output=True, timeout=120)
    assert dump(theirs) == dump(app / "app.db")
    # The command-line tool the wheel put on the venv's PATH: the shell block, line by line.
    env = dict(os.environ, PATH=f"{python.parent}{os.pathsep}{os.environ['PATH']}")
    lines = quick_start_blocks("sh")[0].strip().splitlines()
    assert [line.split()[1] for line in lines] == ["ls", "verify", "restore"], lines
    for line in lines:
        run = subprocess.run(as_run_here(line, replica_dir), shell=True, cwd=app, env=env,
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (line, run.stdout, run.stderr)
        if line.split()[1] == "ls":
            assert re.search(r"^0 +0000000000000001 +0000000000000001 ", run.stdout, re.M), run.stdout
        if line.split()[1] == "verify":
            assert run.stdout.startswith("ok: "), run.stdout
    assert dump(app / "restored-cli.db") == dump(app / "app.db")
    # The open-error one-liner, after a mistyped parameter.
    why = quick_start_blocks("python")[2]
    probe = (as_run_here(stdlib.split("replica =")[0], replica_dir)
             + "try:\n    sqlite3.connect('file:x.db?vfs=litestream&replica=file:///tmp/r&min-intervl=1s', uri=True).execute('select 1')\n"
             + "except sqlite3.OperationalError as e:\n    print(e)\n" + why)
    run = subprocess.run([str(python), "-c", probe], cwd=app, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "unable to open database file"
    assert "min-intervl" in run.stdout.splitlines()[1], run.stdout


def python_without_load_extension():
    """The first python3 on PATH whose sqlite3 cannot load extensions (pyenv's), else the
    system one: apsw runs on both."""
    for d in os.environ.get("PATH", "").split(os.pathsep):
        candidate = os.path.join(d, "python3")
        if os.access(candidate, os.X_OK) and not candidate.startswith("/usr/bin"):
            probe = subprocess.run([candidate, "-c", "import sqlite3; print(hasattr(sqlite3.Connection, 'enable_load_extension'))"],
                                   capture_output=True, text=True)
            if probe.stdout.strip() == "False":
                return candidate
    return "/usr/bin/python3"


def test_the_apsw_quick_start_runs_from_the_wheel(wheel, tmp_path):
    python = venv_with(wheel, tmp_path / "venv", python_without_load_extension(), "apsw")
    block = quick_start_blocks("python")[1]
    app, replica_dir, out = run_quick_start(python, block, "import apsw, sqlite_litestream", tmp_path)
    assert re.fullmatch(r'\{"' + re.escape(str(app / "app-apsw.db")) + r'":"[0-9a-f]{16}"\}', out.strip()), out
    boot = sqlite3.connect(":memory:")
    boot.enable_load_extension(True)
    boot.load_extension(os.environ["LITESTREAM_TEST_LIB"])
    out = tmp_path / "restored.db"
    boot.execute("select litestream_restore(?, ?)", (f"file://{replica_dir}/app-apsw.db", str(out)))
    assert dump(out) == dump(app / "app-apsw.db")
    assert sqlite3.connect(out).execute("select body from notes").fetchall() == [("hello from apsw",)]
