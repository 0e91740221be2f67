#!/usr/bin/env python3
"""Builds the Python wheel `sqlite-litestream` from the release library, offline.

    scripts/build-wheel.py [LIB.so] [OUT_DIR]   defaults: target/release/liblitestream.so,
                                                target/wheels

A wheel is a zip with a fixed layout (PEP 427): the package (packaging/python), the library
stripped of debug info, the command-line tool `sqlite-litestream` (built next to the library)
as a script pip puts on PATH (`<name>.data/scripts/`), and a dist-info directory (METADATA,
WHEEL, RECORD). The platform tag is manylinux_2_<N>_<arch>, where glibc 2.<N> is the newest
symbol version the library or the tool imports, so pip installs it exactly where it can load.
Prints the wheel's path.
"""
import base64
import hashlib
import os
import platform
import re
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "packaging", "python", "sqlite_litestream")
NAME = "sqlite_litestream"


def version():
    with open(os.path.join(ROOT, "Cargo.toml")) as f:
        return re.search(r'^version = "([^"]+)"', f.read(), re.M).group(1)


def glibc_needed(lib):
    """The newest GLIBC_2.N the library's dynamic symbols require."""
    out = subprocess.run(["objdump", "-T", lib], check=True, capture_output=True, text=True).stdout
    minors = [int(m) for m in re.findall(r"GLIBC_2\.(\d+)", out)]
    if not minors:
        sys.exit(f"build-wheel: no GLIBC symbol versions in {lib}")
    return max(minors)


def record_line(arcname, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def main():
    lib = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "liblitestream.so")
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "target", "wheels")
    ver = version()
    with open(os.path.join(PKG, "__init__.py")) as f:
        pkg_ver = re.search(r'__version__ = "([^"]+)"', f.read()).group(1)
    if pkg_ver != ver:
        sys.exit(f"build-wheel: packaging/python says {pkg_ver}, Cargo.toml {ver}")
    cli = os.path.join(os.path.dirname(lib), "sqlite-litestream")
    if not os.path.exists(cli):
        sys.exit(f"build-wheel: {cli} is missing (cargo build --release builds it)")
    arch = platform.machine()
    tag = f"py3-none-manylinux_2_{max(glibc_needed(lib), glibc_needed(cli))}_{arch}"

    def stripped(path):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, os.path.basename(path))
            subprocess.run(["strip", "--strip-debug", "-o", out, path], check=True)
            with open(out, "rb") as f:
                return f.read()

    lib_bytes, cli_bytes = stripped(lib), stripped(cli)
    files = {}
    for name in sorted(os.listdir(PKG)):
        if name.endswith(".py"):
            with open(os.path.join(PKG, name), "rb") as f:
                files[f"{NAME}/{name}"] = f.read()
    files[f"{NAME}/liblitestream.so"] = lib_bytes
    files[f"{NAME}-{ver}.data/scripts/sqlite-litestream"] = cli_bytes
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    dist = f"{NAME}-{ver}.dist-info"
    files[f"{dist}/METADATA"] = (
        "Metadata-Version: 2.1\n"
        "Name: sqlite-litestream\n"
        f"Version: {ver}\n"
        "Summary: SQLite extension: replicate every commit to object storage (Litestream 0.5 "
        "compatible), restore, and read replicas in place\n"
        "License: Apache-2.0\n"
        "Requires-Python: >=3.8\n"
        "Description-Content-Type: text/markdown\n\n" + readme
    ).encode()
    files[f"{dist}/WHEEL"] = (
        "Wheel-Version: 1.0\n"
        "Generator: scripts/build-wheel.py\n"
        "Root-Is-Purelib: false\n"
        f"Tag: {tag}\n"
    ).encode()
    with open(os.path.join(ROOT, "LICENSE"), "rb") as f:
        files[f"{dist}/LICENSE"] = f.read()
    record = [record_line(n, d) for n, d in files.items()] + [f"{dist}/RECORD,,"]
    files[f"{dist}/RECORD"] = ("\n".join(record) + "\n").encode()
    os.makedirs(out_dir, exist_ok=True)
    wheel = os.path.join(out_dir, f"{NAME}-{ver}-{tag}.whl")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            executable = name.endswith(".so") or "/scripts/" in name
            # A regular file's full mode: pip makes a file executable only when its zip mode
            # says regular file (S_IFREG) and executable.
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    print(wheel)


if __name__ == "__main__":
    main()
