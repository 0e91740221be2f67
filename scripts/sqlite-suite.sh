#!/usr/bin/env bash
# Runs test files of SQLite's own TCL test suite (3.40.1, the version Debian 12 ships) twice:
# once on the default VFS and once with every database routed through our `litestream` VFS,
# and compares the two results file by file. After each file's litestream run, every database
# that reached the replica directory is restored with litestream_restore() and checked with
# `pragma integrity_check`.
#
#   scripts/sqlite-suite.sh                      the list in sqlite-tests/suite/files.txt
#   SQLITE_SUITE_FILES=quick scripts/sqlite-suite.sh     sqlite-tests/suite/quick.txt
#   SQLITE_SUITE_FILES="wal.test pager1.test" ...        just these files
#   SQLITE_SUITE_FILES=/some/list.txt ...                a list of your own
#
# Other settings: SQLITE_SUITE_TIMEOUT (seconds per file per VFS, default 300),
# SQLITE_SUITE_LIB (the extension without .so, default target/release/liblitestream),
# SQLITE_SUITE_KEEP=1 keeps each file's working directories (default: only the logs are kept),
# SQLITE_SUITE_LOG=debug|info|... writes the extension's log to <working dir>/tmp/extension.log
# (with SQLITE_SUITE_KEEP=1 to keep it).
#
# Output: one line per file, then exactly `sqlite-suite: N files, M differ` (M counts every file
# whose results differ, expected or not). Exit status 1 when a file differs and is not listed in
# sqlite-tests/suite/expected-differences.txt (`file.test: reason`).
#
# On a fresh Debian 12 run as root: installs build tools and tcl-dev, adds deb-src lines for the
# machine's own apt sources, downloads the sqlite3 source package and builds `testfixture` once
# into target/sqlite-suite/ (rebuilt only when sqlite-tests/suite/litestream_init.c changes).
# The tests refuse to run as root: as root, each one runs as uid/gid 65534 in a directory it owns.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE="$ROOT/sqlite-tests/suite"
OUT="$ROOT/target/sqlite-suite"
SQLITE_VERSION=3.40.1
SRC="$OUT/sqlite3-$SQLITE_VERSION"
BLD="$OUT/bld"
FIXTURE="$BLD/testfixture"
INIT_C="$SUITE/litestream_init.c"
LIB="${SQLITE_SUITE_LIB:-$ROOT/target/release/liblitestream}"
LIB="${LIB%.so}"
TIMEOUT="${SQLITE_SUITE_TIMEOUT:-300}"
# The tests refuse to run as root (attach.test exits): as root, run them as uid/gid 65534.
if [ "$(id -u)" = 0 ]; then
    RUNAS=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    OWN=(chown -R 65534:65534)
else
    RUNAS=()
    OWN=(true)
fi
NICE=(nice -n "${SQLITE_SUITE_NICE:-19}")

say() { echo "sqlite-suite: $*" >&2; }
die() { say "$*"; exit 2; }

# ---------------------------------------------------------------------------------- setup
install_packages() {
    local need=()
    command -v gcc >/dev/null || need+=(build-essential)
    command -v make >/dev/null || need+=(make)
    command -v tclsh >/dev/null || need+=(tcl)
    [ -e /usr/lib/tcl8.6/tclConfig.sh ] || [ -e /usr/lib/x86_64-linux-gnu/tcl8.6/tclConfig.sh ] \
        || ls /usr/lib/*/tclConfig.sh >/dev/null 2>&1 || need+=(tcl-dev)
    command -v xz >/dev/null || need+=(xz-utils)
    command -v sqlite3 >/dev/null || need+=(sqlite3)
    command -v setpriv >/dev/null || need+=(util-linux)
    [ -e /usr/include/zlib.h ] || need+=(zlib1g-dev)
    if [ ${#need[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "needs ${need[*]} (run as root to install them)"
        say "installing ${need[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >"$OUT/apt-install.log" 2>&1 \
            || { apt-get update -q >>"$OUT/apt-install.log" 2>&1 &&
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >>"$OUT/apt-install.log" 2>&1; } \
            || die "apt-get install failed, see $OUT/apt-install.log"
    fi
}

# deb-src entries for the same URIs and suites as the machine's own deb sources.
add_deb_src() {
    if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "no deb-src apt source (run as root to add one)"
    if [ -e /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
            > /etc/apt/sources.list.d/debian-src.sources
    fi
    if [ -e /etc/apt/sources.list ] && grep -qE '^deb ' /etc/apt/sources.list; then
        sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/debian-src.list
    fi
    say "added deb-src sources; apt-get update"
    apt-get update -q >"$OUT/apt-update.log" 2>&1 || die "apt-get update failed, see $OUT/apt-update.log"
}

fetch_source() {
    [ -e "$SRC/test/tester.tcl" ] && return 0
    local pkg="$OUT/source-package"
    mkdir -p "$pkg"
    if ! ls "$pkg"/sqlite3_"$SQLITE_VERSION".orig.tar.xz >/dev/null 2>&1; then
        add_deb_src
        say "apt-get source --download-only sqlite3"
        (cd "$pkg" && apt-get source --download-only sqlite3 >"$OUT/apt-source.log" 2>&1) \
            || die "apt-get source failed, see $OUT/apt-source.log"
    fi
    local tarball
    tarball="$(ls "$pkg"/sqlite3_"$SQLITE_VERSION".orig.tar.xz 2>/dev/null)" \
        || die "the sqlite3 source package is not version $SQLITE_VERSION: $(ls "$pkg")"
    tar -C "$OUT" -xf "$tarball" || die "cannot unpack $tarball"
    [ -e "$SRC/test/tester.tcl" ] || die "no $SRC/test/tester.tcl after unpacking $tarball"
}

build_fixture() {
    if [ -x "$FIXTURE" ] && [ "$FIXTURE" -nt "$INIT_C" ]; then return 0; fi
    say "building testfixture (SQLite $SQLITE_VERSION, SQLITE_EXTRA_INIT=litestream_suite_init) in $BLD"
    mkdir -p "$BLD"
    if [ ! -e "$BLD/Makefile" ]; then
        (cd "$BLD" && "${NICE[@]}" "$SRC/configure" >configure.log 2>&1) || die "configure failed, see $BLD/configure.log"
    fi
    rm -f "$FIXTURE"
    (cd "$BLD" && "${NICE[@]}" make -j"${SQLITE_SUITE_BUILD_JOBS:-2}" testfixture \
        OPTS=-DSQLITE_EXTRA_INIT=litestream_suite_init LIBS="$INIT_C -ldl" >make.log 2>&1) \
        || die "building testfixture failed, see $BLD/make.log"
}

mkdir -p "$OUT"
install_packages
fetch_source
build_fixture
[ -e "$LIB.so" ] || die "no extension at $LIB.so (make build, or set SQLITE_SUITE_LIB)"
# The tests run as uid 65534: the extension, the fixture and the test sources must be readable.
# A clone under a root-only directory (a CI checkout) gets search permission on its ancestors,
# nothing more: no listing, no reading of anything else in them.
if [ "$(id -u)" = 0 ] && ! "${RUNAS[@]}" test -x "$OUT"; then
    d="$OUT"
    while [ "$d" != / ]; do
        d="$(dirname "$d")"
        "${RUNAS[@]}" test -x "$d" || { say "giving the test user search permission on $d"; chmod o+x "$d"; }
    done
fi
"${RUNAS[@]}" test -r "$LIB.so" -a -x "$FIXTURE" -a -r "$SRC/test/tester.tcl" \
    || die "the test user cannot read $LIB.so, $FIXTURE or $SRC/test (check the directories' modes)"

# ---------------------------------------------------------------------------------- the list
case "${SQLITE_SUITE_FILES:-full}" in
    full) LIST_FILE="$SUITE/files.txt" ;;
    quick) LIST_FILE="$SUITE/quick.txt" ;;
    *.txt) LIST_FILE="$SQLITE_SUITE_FILES" ;;
    *) LIST_FILE="" ;;
esac
if [ -n "$LIST_FILE" ]; then
    mapfile -t FILES < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$LIST_FILE" | grep -v '^$')
else
    read -r -a FILES <<<"$SQLITE_SUITE_FILES"
fi
[ ${#FILES[@]} -gt 0 ] || die "no test files to run"

declare -A EXPECTED
while IFS= read -r line; do
    line="${line%%#*}"
    [[ "$line" =~ ^[[:space:]]*([^[:space:]:]+\.test):[[:space:]]*(.+)$ ]] || continue
    EXPECTED["${BASH_REMATCH[1]}"]="${BASH_REMATCH[2]}"
done < "$SUITE/expected-differences.txt"

# Files that need longer than the timeout under our VFS (`file.test: seconds reason`): the
# longer of the two applies to both runs.
declare -A LONGER
while IFS= read -r line; do
    line="${line%%#*}"
    [[ "$line" =~ ^[[:space:]]*([^[:space:]:]+\.test):[[:space:]]*([0-9]+) ]] || continue
    LONGER["${BASH_REMATCH[1]}"]="${BASH_REMATCH[2]}"
done < "$SUITE/timeouts.txt"

# ---------------------------------------------------------------------------------- running
RUNS="$OUT/runs"
mkdir -p "$RUNS"
chmod 755 "$OUT" "$RUNS"
RESULTS="$OUT/results.txt"
: > "$RESULTS"

# run_one FILE VFS: runs FILE in a fresh directory, sets RESULT and SECONDS_TAKEN.
run_one() {
    local file="$1" vfs="$2"
    local dir="$RUNS/${file%.test}/$vfs" log="$RUNS/${file%.test}/$vfs.log"
    rm -rf "$dir" && mkdir -p "$dir/replicas" "$dir/tmp"
    "${OWN[@]}" "$dir"
    local libenv=()
    [ "$vfs" = litestream ] && libenv=("LITESTREAM_SUITE_LIB=$LIB")
    # The extension's log (errors at least): a replica it refused to extend restores sound
    # but old, so what it logged is reported beside the result.
    local logenv=("LITESTREAM_LOG=${SQLITE_SUITE_LOG:-error}" "LITESTREAM_LOG_FILE=$dir/tmp/extension.log")
    local start=$SECONDS rc timeout="$TIMEOUT"
    [ "${LONGER[$file]:-0}" -gt "$timeout" ] && timeout="${LONGER[$file]}"
    (cd "$dir" && exec env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$dir" TMPDIR="$dir/tmp" \
        LITESTREAM_REPLICA_BASE_URL="file://$dir/replicas" "${libenv[@]}" "${logenv[@]}" \
        timeout -k 15 "$timeout" "${NICE[@]}" "${RUNAS[@]}" "$FIXTURE" "$SRC/test/$file") \
        </dev/null >"$log" 2>&1
    rc=$?
    SECONDS_TAKEN=$((SECONDS - start))
    local summary ok failures
    summary="$(grep -aE '^[0-9]+ errors out of [0-9]+ tests' "$log" | tail -n 1 | sed -E 's/ tests on .*/ tests/')"
    ok="$(grep -ac ' Ok$' "$log")"
    if [ "$rc" = 124 ] || [ "$rc" = 137 ] && [ "$SECONDS_TAKEN" -ge "$timeout" ]; then
        RESULT="timeout after ${timeout}s ($ok ok, last: $(grep -aoE '^[^ ]+\.\.\.' "$log" | tail -n 1))"
    elif [ -n "$summary" ]; then
        RESULT="$summary"
        failures="$(grep -a '^!Failures on these tests:' "$log" | tail -n 1 | sed 's/^!Failures on these tests: *//')"
        [ -n "$failures" ] && RESULT="$RESULT [$failures]"
        [ "$rc" != 0 ] && [ "${summary%% *}" = 0 ] && RESULT="$RESULT (exit $rc)"
    elif [ "$rc" -gt 128 ]; then
        RESULT="crash: signal $((rc - 128)) ($ok ok, last: $(grep -av '^$' "$log" | tail -n 1 | cut -c1-120))"
    else
        RESULT="aborted: exit $rc ($ok ok, last: $(grep -av '^$' "$log" | tail -n 1 | cut -c1-120))"
    fi
    INIT_ERRORS="$(grep -ac '^litestream_suite_init:' "$log")"
    EXT_ERRORS=""
    if [ "$vfs" = litestream ] && [ -s "$dir/tmp/extension.log" ]; then
        local n first
        n="$(grep -ac ' ERROR ' "$dir/tmp/extension.log")"
        first="$(grep -a -m1 ' ERROR ' "$dir/tmp/extension.log" | sed -E 's/^[^ ]+ ERROR +litestream\[[0-9]+\]: //' | cut -c1-200)"
        [ "$n" -gt 0 ] && EXT_ERRORS=", the extension logged $n errors (first: $first)"
    fi
}

# show_failures LOG: the lines each failing test of LOG printed (its name through the next
# test's), indented, at most 40 lines a test.
show_failures() {
    local log="$1" name
    for name in $(grep -a '^!Failures on these tests:' "$log" | tail -n 1 | sed 's/^!Failures on these tests: *//'); do
        awk -v t="$name" '
            index($0, t "...") == 1 { on = 1; n = 0 }
            on && n > 0 && /^[^ ]+\.\.\./ { on = 0 }
            on && n < 40 { print "    | " $0; n++ }' "$log"
    done
}

# check_replicas FILE [killed]: restores every database under the litestream run's replica directory
# and checks it (with testfixture: see integrity.tcl for why not with sqlite3). Sets RESTORE (a short text) and RESTORE_FAILED (count).
# integrity DIR DB: testfixture's integrity check of DB (default VFS), run from DIR.
integrity() {
    (cd "$1" && timeout 120 "${RUNAS[@]}" env -i PATH=/usr/bin:/bin HOME="$1" "$FIXTURE" "$SUITE/integrity.tcl" "$2" 2>&1)
}
# content DIR DB: the MD5 of DB's schema and rows (content.tcl), run from DIR.
content() {
    (cd "$1" && timeout 120 "${RUNAS[@]}" env -i PATH=/usr/bin:/bin HOME="$1" "$FIXTURE" "$SUITE/content.tcl" "$2" 2>&1)
}

check_replicas() {
    local file="$1"
    local dir="$RUNS/${file%.test}/litestream"
    local out="$RUNS/${file%.test}/restored" rlog="$RUNS/${file%.test}/restore.log"
    rm -rf "$out" && mkdir -p "$out" && "${OWN[@]}" "$out"
    : > "$rlog"
    local n=0 failed=0 names=() rel unsound_sources=0 other_data=0
    # A replicated database's directory holds an ltx/ directory (ltx/<level>/<txids>.ltx).
    while IFS= read -r rel; do
        [ -n "$rel" ] || continue
        n=$((n + 1))
        local target="$out/$n.db" res rc
        local url="file://$dir/replicas/$rel"
        url="${url//\'/\'\'}"   # vacuum.test names a database a'z.db
        res="$(cd "$out" && timeout 120 "${RUNAS[@]}" env -i PATH=/usr/bin:/bin HOME="$out" sqlite3 -batch :memory: \
            ".load $LIB" "select litestream_restore('$url', '$target')" 2>&1)"
        rc=$?
        local restored=$rc
        if [ $rc = 0 ]; then
            res="$(integrity "$out" "$target")"
            rc=$?
        fi
        local src="" cand srcres=""
        for cand in "$dir/testdir/$rel" "$dir/$rel"; do [ -f "$cand" ] && { src="$cand"; break; }; done
        if [ -n "$src" ]; then
            # A copy of the source as the test left it (a hot journal rolls back on the copy).
            rm -rf "$out/src$n" && mkdir -p "$out/src$n" && cp "$src" "$out/src$n/db"
            local ext
            for ext in wal journal; do [ ! -f "$src-$ext" ] || cp "$src-$ext" "$out/src$n/db-$ext"; done
            "${OWN[@]}" "$out/src$n"
        fi
        if [ $rc = 0 ] && [ "$(echo "$res" | tail -n 1)" = ok ]; then
            # Sound; and the same data as its source, when the source is there to compare (an
            # empty file was never written: a test deleted the database and opened it again).
            # A run the timeout killed left its source mid-way, ahead of what had shipped.
            if [ -s "$src" ] && [ "${2:-}" != killed ]; then
                local mine theirs
                mine="$(content "$out" "$target")"
                theirs="$(content "$out" "$out/src$n/db")"
                if [ "$mine" != "$theirs" ]; then
                    echo "other data than its source $rel: replica $mine, source $theirs" >>"$rlog"
                    other_data=$((other_data + 1))
                    continue
                fi
            fi
            echo "ok $rel" >>"$rlog"
            continue
        fi
        # Restored, but unsound: a replica cannot be sounder than its database, and some tests
        # corrupt theirs on purpose (journal2.test copies a database in the middle of a write).
        # When a copy of the source database (and its -wal) at the end of the test fails the
        # same check (whether the check reports problems or cannot even read the file: e_vacuum's
        # VACUUM INTO target is "malformed" to the check's moved pending byte, restored or not),
        # that is not counted.
        if [ $restored = 0 ] && [ -n "$src" ]; then
            srcres="$(integrity "$out" "$out/src$n/db")"
            if [ "$(echo "$srcres" | tail -n 1)" != ok ]; then
                { echo "unsound like its source $rel:"; echo "$res" | head -n 5; echo "source:"; echo "$srcres" | head -n 5; } >>"$rlog"
                unsound_sources=$((unsound_sources + 1))
                continue
            fi
        fi
        failed=$((failed + 1))
        names+=("$rel")
        { echo "FAILED $rel (rc $rc):"; echo "$res" | head -n 20; [ -n "$srcres" ] && echo "source: $srcres" | head -n 3; } >>"$rlog"
    done < <(cd "$dir/replicas" 2>/dev/null && find . -type d -name ltx -prune -print | sed -e 's|^\./||' -e 's|/ltx$||' | sort)
    RESTORE_FAILED=$((failed + other_data))
    local notes=()
    [ $unsound_sources = 0 ] || notes+=("$unsound_sources as unsound as their source")
    [ $other_data = 0 ] || notes+=("$other_data with other data than their source")
    if [ $n = 0 ]; then
        RESTORE="no replica"
    elif [ $failed = 0 ] && [ ${#notes[@]} = 0 ]; then
        RESTORE="$n replicas restore ok"
    elif [ $failed = 0 ]; then
        RESTORE="$n replicas restore ok ($(IFS=,; echo "${notes[*]}" | sed 's/,/, /g'))"
    else
        RESTORE="$failed of $n replicas FAIL to restore ($(printf '%s ' "${names[@]}" | cut -c1-160))"
    fi
}

nfiles=0; ndiff=0; nunexpected=0; nunseen=0
for file in "${FILES[@]}"; do
    [ -e "$SRC/test/$file" ] || { echo "$file: no such test file" | tee -a "$RESULTS"; nfiles=$((nfiles+1)); ndiff=$((ndiff+1)); nunexpected=$((nunexpected+1)); continue; }
    mkdir -p "$RUNS/${file%.test}"
    run_one "$file" default; r_default="$RESULT"; t_default=$SECONDS_TAKEN
    run_one "$file" litestream; r_ours="$RESULT"; t_ours=$SECONDS_TAKEN; init_errors=$INIT_ERRORS; ext_errors=$EXT_ERRORS
    killed=""; [[ "$r_ours" == timeout* ]] && killed=killed
    check_replicas "$file" "$killed"
    differs=0
    [ "$r_default" != "$r_ours" ] && differs=1
    # Both timed out: nothing to compare (the counts of passed tests depend on speed).
    both_timeout=0
    [[ "$r_default" == timeout* && "$r_ours" == timeout* ]] && { differs=0; both_timeout=1; }
    [ "$RESTORE_FAILED" -gt 0 ] && differs=1
    extra=""
    [ "$init_errors" -gt 0 ] && extra=", $init_errors failed VFS installs"
    if [ $differs = 0 ] && [ $both_timeout = 1 ]; then
        verdict="not compared (both timed out)"
    elif [ $differs = 0 ] && [ -n "${EXPECTED[$file]:-}" ]; then
        # Listed, yet the same this time: the entry may be stale (or the difference rare).
        verdict="same (an expected difference not seen this run: check its entry)"
        nunseen=$((nunseen + 1))
    elif [ $differs = 0 ]; then
        verdict="same"
    elif [ -n "${EXPECTED[$file]:-}" ]; then
        verdict="differs (expected, see expected-differences.txt)"
    else
        verdict="DIFFERS"; nunexpected=$((nunexpected + 1))
    fi
    [ $differs = 1 ] && ndiff=$((ndiff + 1))
    nfiles=$((nfiles + 1))
    line="$file: $verdict | default: $r_default, ${t_default}s | litestream: $r_ours, ${t_ours}s, $RESTORE$extra$ext_errors"
    echo "$line" | tee -a "$RESULTS"
    # CI keeps only this output: show what each unexpectedly failing test printed.
    [ "$verdict" = DIFFERS ] && show_failures "$RUNS/${file%.test}/litestream.log"
    if [ "${SQLITE_SUITE_KEEP:-0}" != 1 ]; then
        rm -rf "$RUNS/${file%.test}/default" "$RUNS/${file%.test}/litestream" "$RUNS/${file%.test}/restored"
    fi
done
echo "sqlite-suite: $nfiles files, $ndiff differ$([ "$nunseen" = 0 ] || echo ", $nunseen expected differences not seen")" | tee -a "$RESULTS"
[ "$nunexpected" = 0 ]
