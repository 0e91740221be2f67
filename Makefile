# litestream: a SQLite extension that replicates to object storage.
#   make        build target/release/liblitestream.so
#   make demo   build, then show the main job on the embedded file:// default
#   make test   every test: cargo, sqlite3 shell, Python, Node, SQLite's TCL suite (quick subset); starts and stops the S3 servers
#   make test-quick  no root, no S3 server: unit tests, sqlite3 shell, the Python tests on file:// that need no server, Node
#   make soak   make test with 500 SIGKILL crash trials (not 50), 100 lease trials per store (not 25), a 60 s multi-process soak (not 8 s), SQLite's whole TCL list (not the quick subset)
#   make lint   cargo fmt --check and clippy -D warnings
#   make wheel  the Python package sqlite-litestream -> target/wheels/*.whl (offline, from the release library)
#   make npm    the npm package sqlite-litestream -> target/npm/*.tgz (offline, from the release library)
#   make bench  plain SQLite vs ours vs Litestream 0.5.17 on Ceph RGW -> bench/results.md (BENCH_SCALE=0.05 for a quick run)
#   make fuzz   a short run of the LTX decoder fuzzer (needs the nightly toolchain)
#   make sqlite-suite  SQLite 3.40.1's own TCL tests on the default VFS and on ours, compared
#               (SQLITE_SUITE_FILES=quick for the ~15-file subset; see scripts/sqlite-suite.sh)

CARGO ?= cargo
LIB := target/release/liblitestream.so

.PHONY: all build demo test test-quick soak bench lint wheel npm fuzz sqlite-suite clean

all: build

build:
	$(CARGO) build --release

demo: build
	scripts/demo.sh

test: build
	scripts/run-tests.sh

test-quick: build
	scripts/test-quick.sh

bench: build
	scripts/bench.sh

soak: build
	LITESTREAM_CRASH_TRIALS=500 LITESTREAM_LEASE_TRIALS=100 LITESTREAM_MP_SOAK_SECONDS=60 SQLITE_SUITE_FILES=full scripts/run-tests.sh

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

wheel: build
	scripts/build-wheel.py

npm: build
	scripts/build-npm.sh

fuzz:
	cd fuzz && $(CARGO) +nightly fuzz run ltx_decoder -- -max_total_time=60

sqlite-suite: build
	scripts/sqlite-suite.sh

clean:
	$(CARGO) clean
