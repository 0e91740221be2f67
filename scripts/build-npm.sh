#!/usr/bin/env bash
# Builds the npm package sqlite-litestream from the release library, offline:
#     scripts/build-npm.sh [LIB.so] [OUT_DIR]   defaults: target/release/liblitestream.so, target/npm
# The package (packaging/node: CJS, ESM, .d.ts) with the library stripped of debug info in lib/,
# its version Cargo.toml's; `npm pack` makes the tarball. Prints the tarball's path.
# Publishing (not done from here) would be: npm publish <tarball>.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lib="${1:-$root/target/release/liblitestream.so}"
out="$(mkdir -p "${2:-$root/target/npm}" && cd "${2:-$root/target/npm}" && pwd)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$root"/packaging/node/{index.cjs,index.mjs,index.d.ts,README.md} "$root/LICENSE" "$stage/"
mkdir "$stage/lib"
strip --strip-debug -o "$stage/lib/liblitestream.so" "$lib"
sed "s/\"version\": \"0.0.0\"/\"version\": \"$version\"/" "$root/packaging/node/package.json" > "$stage/package.json"
grep -q "\"version\": \"$version\"" "$stage/package.json" || { echo "build-npm: no version in package.json" >&2; exit 1; }
tarball="$(cd "$stage" && npm pack --silent --pack-destination "$out")"
echo "$out/$tarball"
