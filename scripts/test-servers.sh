#!/usr/bin/env bash
# Start/stop the real S3 servers the integration tests run against:
#   moto (SigV4 enforced; full conditional-write semantics) and
#   Ceph RGW single node (mon + memstore OSD + radosgw; a real product).
# See docs on why these two (S3-SERVERS.md).
#
#   scripts/test-servers.sh start STATEDIR   -> writes STATEDIR/env (export lines)
#   scripts/test-servers.sh stop  STATEDIR   -> kills everything start launched
#
# Everything listens on 127.0.0.1 only. Ceph keeps its data in RAM.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CMD="${1:-}"
STATE="${2:-}"
if [[ ! "$CMD" =~ ^(start|stop)$ ]] || [ -z "$STATE" ]; then
    echo "usage: $0 start|stop STATEDIR" >&2; exit 2
fi
[ "$CMD" = start ] && mkdir -p "$STATE"
# stop on a missing dir is a no-op (start may never have run).
[ -d "$STATE" ] || exit 0
STATE="$(cd "$STATE" && pwd)"
CEPH="$STATE/ceph"
TIMEOUT="${TEST_SERVERS_TIMEOUT:-120}"   # seconds, per readiness wait
BUCKET=test
# Fixed keys are fine: loopback-only, throwaway servers.
CEPH_ACCESS=LITESTREAMTESTCEPH01
CEPH_SECRET=litestreamtestcephsecret0000000000000001

# Proxies must never see loopback traffic; AWS_CA_BUNDLE is irrelevant for http.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}"
export no_proxy="$NO_PROXY"
unset AWS_CA_BUNDLE AWS_PROFILE AWS_CONFIG_FILE AWS_SHARED_CREDENTIALS_FILE

log() { echo "test-servers: [${SECONDS}s] $*" >&2; }

# True if PID is alive (zombies count as dead: our init may not reap them).
alive() {
    local st
    st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ -n "$st" ] && [ "$st" != Z ]
}

# Only signal processes that are really ours (guards against pid reuse
# when stop runs long after the daemons died).
ours() {
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qE 'moto_server|ceph-mon|ceph-osd|radosgw'
}

# TERM the given pids, wait up to 10 s, then KILL.
kill_wait() {
    local live=("$@") p i left
    [ ${#live[@]} -eq 0 ] && return 0
    kill -TERM "${live[@]}" 2>/dev/null || true
    for i in $(seq 150); do
        [ "$i" -eq 100 ] && { log "force-killing ${live[*]}"; kill -KILL "${live[@]}" 2>/dev/null || true; }
        left=()
        for p in "${live[@]}"; do alive "$p" && left+=("$p"); done
        [ ${#left[@]} -eq 0 ] && return 0
        live=("${left[@]}")
        sleep 0.1
    done
    log "could not kill ${live[*]}"; return 1
}

stop() {
    local pids=() p f cmd first=() osds=() mons=()
    [ -f "$STATE/pids" ] && pids+=($(cat "$STATE/pids"))
    for f in "$CEPH"/run/*.pid; do
        [ -f "$f" ] && pids+=($(cat "$f"))
    done
    for p in $(printf '%s\n' "${pids[@]}" | sort -u); do
        [[ "$p" =~ ^[0-9]+$ ]] && alive "$p" && ours "$p" || continue
        cmd="$(tr '\0' ' ' <"/proc/$p/cmdline")"
        case "$cmd" in
            *ceph-mon*) mons+=("$p") ;;
            *ceph-osd*) osds+=("$p") ;;
            *) first+=("$p") ;;
        esac
    done
    # Reverse start order: radosgw hangs in shutdown once the OSD is gone,
    # and a dying OSD waits 5 s for the mon to ack.
    kill_wait "${first[@]}" && kill_wait "${osds[@]}" && kill_wait "${mons[@]}"
}

if [ "$CMD" = stop ]; then
    stop
    exit 0
fi

# ---------------------------------------------------------------- start
# A previous run in the same STATEDIR may still be up: start from scratch.
stop
rm -f "$STATE/env" "$STATE/pids"

on_exit() {
    local rc=$?
    [ $rc -eq 0 ] && return
    log "start FAILED (rc=$rc); log tails:"
    for f in "$STATE"/*.log "$CEPH"/log/*.log; do
        [ -f "$f" ] || continue
        echo "==== $f" >&2; tail -n 30 "$f" >&2
    done
    stop || true
}
trap on_exit EXIT

# Wait until "$@" succeeds or TIMEOUT expires.
wait_for() {
    local what="$1"; shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            log "$what did not come up within ${TIMEOUT}s"; return 1
        fi
        sleep 0.3
    done
}

BIN="$("$ROOT/scripts/setup-venv.sh")"
PY="$ROOT/.venv/bin/python"

if ! command -v radosgw >/dev/null || ! command -v ceph-mon >/dev/null || ! command -v ceph-osd >/dev/null; then
    log "installing Ceph (radosgw, ceph-mon, ceph-osd)"
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        radosgw ceph-mon ceph-osd >&2
fi

# Free loopback ports: 3 single ones (moto, mon, rgw) and a run of 10
# consecutive ones for the OSD's messenger (ms bind port min/max).
read -r MOTO_PORT MON_PORT RGW_PORT MS_MIN MS_MAX < <("$PY" - <<'EOF'
import random, socket
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
def run(n):
    while True:
        base = random.randint(20000, 60000 - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket(); socks.append(s); s.bind(("127.0.0.1", p))
            return base, base + n - 1
        except OSError:
            pass
        finally:
            for s in socks: s.close()
lo, hi = run(10)
ports = []
while len(ports) < 3:
    p = free()
    if p not in ports and not lo <= p <= hi: ports.append(p)
print(*ports, lo, hi)
EOF
)
[ -n "$MS_MAX" ] || { log "port selection failed"; exit 1; }

# Every daemon runs in the foreground (-f) as our child, so $! is its pid.
spawn() {
    local logf="$1"; shift
    "$@" </dev/null >>"$logf" 2>&1 &
    echo $! >>"$STATE/pids"
}

# ---------------------------------------------------------------- moto
MOTO_URL="http://127.0.0.1:$MOTO_PORT"
: >"$STATE/moto.log"
spawn "$STATE/moto.log" env INITIAL_NO_AUTH_ACTION_COUNT=3 \
    "$ROOT/.venv/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
# /moto-api/ does not consume one of the 3 unauthenticated actions.
wait_for "moto" "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$MOTO_URL/moto-api/"

read -r MOTO_ACCESS MOTO_SECRET < <("$PY" - "$MOTO_URL" <<'EOF'
import json, sys, boto3
url = sys.argv[1]
# Exactly 3 unauthenticated calls; after them moto enforces SigV4.
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
iam.create_user(UserName="litestream")
k = iam.create_access_key(UserName="litestream")["AccessKey"]
iam.put_user_policy(UserName="litestream", PolicyName="all", PolicyDocument=json.dumps(
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
print(k["AccessKeyId"], k["SecretAccessKey"])
EOF
)
[ -n "$MOTO_SECRET" ] || { log "moto IAM bootstrap failed"; exit 1; }

# Create the bucket (signed) and prove that a wrong secret is refused.
s3_bootstrap() {
    "$PY" - "$@" <<'EOF'
import sys, boto3, botocore.config, botocore.exceptions
url, ak, sk, bucket = sys.argv[1:5]
def client(secret):
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=ak, aws_secret_access_key=secret,
                        config=botocore.config.Config(s3={"addressing_style": "path"},
                                                      retries={"max_attempts": 1}))
c = client(sk)
try:
    c.create_bucket(Bucket=bucket)
except c.exceptions.BucketAlreadyOwnedByYou:
    pass
c.head_bucket(Bucket=bucket)
try:
    client(sk + "x").list_objects_v2(Bucket=bucket)
    sys.exit(f"{url}: request with a wrong secret was accepted (SigV4 not enforced)")
except botocore.exceptions.ClientError as e:
    code = e.response["ResponseMetadata"]["HTTPStatusCode"]
    if code != 403:
        sys.exit(f"{url}: wrong secret gave HTTP {code}, want 403")
EOF
}
s3_bootstrap "$MOTO_URL" "$MOTO_ACCESS" "$MOTO_SECRET" "$BUCKET"
log "moto ready at $MOTO_URL"

# ---------------------------------------------------------------- ceph
rm -rf "$CEPH"
mkdir -p "$CEPH"/{run,log,mon,osd,rgw,crash}
CONF="$CEPH/ceph.conf"
FSID="$("$PY" -c 'import uuid; print(uuid.uuid4())')"
OSD_UUID="$("$PY" -c 'import uuid; print(uuid.uuid4())')"
cat >"$CONF" <<EOF
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
mon initial members = a
public addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
ms bind port min = $MS_MIN
ms bind port max = $MS_MAX
# Without these radosgw hangs 300 s: auth none cannot do "secure" only.
ms mon client mode = crc secure
ms client mode = crc secure
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
# Default is 1 s per osdmap change: radosgw's first start creates ~10 pools
# and takes ~11 s with it, ~2 s with 0.1 s.
paxos propose interval = 0.1
osd crush chooseleaf type = 0
osd objectstore = memstore
memstore device bytes = 2147483648
run dir = $CEPH/run
admin socket = $CEPH/run/\$name.asok
pid file = $CEPH/run/\$name.pid
log file = $CEPH/log/\$name.log
crash dir = $CEPH/crash
mon data = $CEPH/mon/\$cluster-\$id
osd data = $CEPH/osd/\$cluster-\$id
keyring = $CEPH/keyring

[client.rgw]
rgw data = $CEPH/rgw
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
EOF

# CLI calls can block forever if the cluster is not up: always bound them.
ceph_cli() { timeout "$TIMEOUT" "$1" -c "$CONF" "${@:2}"; }

ceph_cli ceph-authtool --create-keyring "$CEPH/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph_cli monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$CEPH/monmap" >/dev/null
ceph_cli ceph-mon --mkfs -i a --monmap "$CEPH/monmap" --keyring "$CEPH/keyring" >>"$CEPH/log/setup.log" 2>&1
spawn "$CEPH/log/mon.a.out" ceph-mon -c "$CONF" -i a -f
wait_for "ceph-mon" timeout 10 ceph -c "$CONF" --connect-timeout 5 mon stat

OSD_ID="$(ceph_cli ceph osd new "$OSD_UUID" 2>>"$CEPH/log/setup.log")"
mkdir -p "$CEPH/osd/ceph-$OSD_ID"
ceph_cli ceph-osd -i "$OSD_ID" --mkfs --osd-uuid "$OSD_UUID" >>"$CEPH/log/setup.log" 2>&1
spawn "$CEPH/log/osd.$OSD_ID.out" ceph-osd -c "$CONF" -i "$OSD_ID" -f
spawn "$CEPH/log/client.rgw.out" radosgw -c "$CONF" -n client.rgw -f

CEPH_URL="http://127.0.0.1:$RGW_PORT"
wait_for "radosgw" "$PY" -c "
import urllib.request, urllib.error, sys
try: urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError: pass" "$CEPH_URL/"

ceph_cli radosgw-admin user create --uid=ci --display-name=ci \
    --access-key="$CEPH_ACCESS" --secret-key="$CEPH_SECRET" >>"$CEPH/log/setup.log" 2>&1
s3_bootstrap "$CEPH_URL" "$CEPH_ACCESS" "$CEPH_SECRET" "$BUCKET"
log "ceph rgw ready at $CEPH_URL"

# ---------------------------------------------------------------- env
# Written last (atomically), so its presence means everything is up.
cat >"$STATE/env.tmp" <<EOF
export LITESTREAM_TEST_MOTO_ENDPOINT=$MOTO_URL
export LITESTREAM_TEST_MOTO_ACCESS_KEY=$MOTO_ACCESS
export LITESTREAM_TEST_MOTO_SECRET_KEY=$MOTO_SECRET
export LITESTREAM_TEST_MOTO_BUCKET=$BUCKET
export LITESTREAM_TEST_CEPH_ENDPOINT=$CEPH_URL
export LITESTREAM_TEST_CEPH_ACCESS_KEY=$CEPH_ACCESS
export LITESTREAM_TEST_CEPH_SECRET_KEY=$CEPH_SECRET
export LITESTREAM_TEST_CEPH_BUCKET=$BUCKET
export LITESTREAM_TEST_BIN=$BIN
export LITESTREAM_TEST_PYTHON=$PY
EOF
mv "$STATE/env.tmp" "$STATE/env"
log "ready; env in $STATE/env"
