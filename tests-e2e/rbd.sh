#!/bin/bash
# tests-e2e/rbd.sh — user:rbd end to end on a throw-away single-node Ceph
# (../shared/tools/ceph/ceph-up.sh, brought up and purged here):
#   the daemon starts with a ramdisk LUN; `/backstores/user:rbd create NAME SIZE
#   pool/image;conf=FILE` through the CLI creates the image and a LUN serves it;
#   qemu-img convert writes 64 MiB of random data in over iSCSI and reads it
#   back byte-exact; the `rbd` CLI exports the same bytes; the saveconfig holds
#   plugin "user" with config "rbd/..."; `rbd resize` made outside reaches the
#   logged-in initiator as 2A/09 and a larger READ CAPACITY (rbd_update_watch);
#   a stopped daemon no longer watches the image nor its shared PR object
#   (closed at the stop);
#   a restart from the saved config serves the data again; two gateways
#   (alua_group=1/2) on one image: RTPG alike on both, the exclusive lock
#   moves with the writes, the old owner is blocklisted and fenced, no
#   ping-pong, STPG takes it back, kill -9 of the owner; the service map
#   (ceph service dump/status), `ls` and `sessions` name the lock owner
#   and the blocklisted peer, and a stopped gateway leaves the map and the
#   PR object's watchers at once (rbd_gateways.py);
#   the same with persistent reservations shared through RADOS: they hold
#   at the new owner and at the fenced, reconnected one (rbd_gateways_pr.py).
# Prints "PASS name" / "FAIL name (why)" per check and ends with "N passed, N failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

need qemu-img rbd rados ceph-mon ceph-osd ceph-mgr python3 cmp   # lib.sh: SKIP locally, FAIL under CI=true
# (a here-string, not a pipe: under pipefail, grep -q's early exit would fail ldconfig with SIGPIPE)
if ! grep -q 'librbd\.so\.1 ' <<<"$(ldconfig -p)"; then need librbd.so.1; fi
[[ -f $TOOLS/ceph/ceph-up.sh ]] || need "$TOOLS/ceph/ceph-up.sh"
W=$(mktemp -d "${RTARGET_TEST_WORK:-${TMPDIR:-/tmp}}/e2e-rbd.XXXXXX")
NPASS=0 NFAIL=0 CEPH=$W/ceph
pass() { NPASS=$((NPASS + 1)); echo "PASS $1"; }
fail() { NFAIL=$((NFAIL + 1)); echo "FAIL $1${2:+ ($2)}"; }
check() {
    local name=$1; shift
    if "$@" >"$W/out.txt" 2>&1; then pass "$name"
    else
        # The failing checks first (a Python test prints many PASS lines after them).
        local why
        why=$(grep -E '^(FAIL|Traceback|[A-Za-z]*Error)' "$W/out.txt" | head -n 5)
        [[ -n $why ]] || why=$(tail -n 3 "$W/out.txt")
        fail "$name" "$(tr '\n' ' ' <<<"$why" | cut -c1-600)"
    fi
}
finish() {
    local rc=$? p
    stop_rtarget 10 >/dev/null 2>&1
    bash "$TOOLS/ceph/ceph-down.sh" "$CEPH" >/dev/null 2>&1
    if p=$(panics_in "$W"/state/rtarget.log*); then
        fail "no panic in the daemon logs" "$(tr '\n' ' ' <<<"$p" | cut -c1-300)"; rc=1
    else pass "no panic in the daemon logs"; fi
    if ((NFAIL == 0)); then rm -rf "$W"; else log "rbd e2e: kept $W"; fi
    echo "$NPASS passed, $NFAIL failed"
    ((NFAIL == 0)) || rc=1
    exit "$rc"
}
trap finish EXIT

t0=$SECONDS
# The OSDs drop a dead client's watch after 5 s (default 30): the gateway
# check below waits that long for a killed lock owner to count as dead.
# A ceph-mgr keeps the service map the gateways register in (rbd_gateways.py
# reads it); it takes their status every second (mgr_stats_period, default 5).
if WITH_MGR=1 ceph_up "$CEPH" "$W/ceph-up.log" \
    '[global]\nmgr_stats_period = 1\n[osd]\nosd_client_watch_timeout = 5'; then
    pass "single-node Ceph up in $((SECONDS - t0)) s"
else
    fail "ceph-up.sh" "$(tail -n 3 "$W/ceph-up.log" | tr '\n' ' ')"; exit 1
fi
CONF=$CEPH/ceph.conf
export CEPH_CONF=$CONF

PORT=$(free_port) IQN=iqn.2026-11.org.rtarget:rbd
mkdir -p "$W/state"
mkconfig "$W/state/saveconfig.json" "$PORT" "$IQN" "ramdisk:r0::1M"
start_rtarget "$W/state" "$PORT" || { fail "start rtarget"; exit 1; }
pass "rtarget started"
cli() { "$RTARGET_BIN" --socket "$RT_SOCK" "$@"; }
check "CLI: /backstores/user:rbd create NAME SIZE pool/image;conf=FILE (creates the image)" \
    cli /backstores/user:rbd create disk0 64M "rbd/img0;conf=$CONF;osd_op_timeout=20"
check "CLI: LUN 1 from it" cli "/iscsi/$IQN/tpg1/luns" create /backstores/user:rbd/disk0
check "CLI: saveconfig" cli saveconfig
check "rbd info sees the 64 MiB image" bash -c 'rbd info rbd/img0 | grep -q "size 64 MiB"'

url="iscsi://127.0.0.1:$PORT/$IQN/1"
head -c 64M /dev/urandom >"$W/src.raw"
t1=$SECONDS
check "qemu-img convert writes 64 MiB over iSCSI" \
    timeout 120 qemu-img convert -n -f raw -O raw "$W/src.raw" "$url"
check "qemu-img convert reads it back byte-exact" bash -c '
    timeout 120 qemu-img convert -f raw -O raw "$1" "$2/back.raw" && cmp "$2/back.raw" "$2/src.raw"' _ "$url" "$W"
log "rbd e2e: 64 MiB in and back in $((SECONDS - t1)) s"
check "rbd export holds the same bytes" bash -c '
    rbd export --no-progress rbd/img0 - | cmp - "$1/src.raw"' _ "$W"
check "saveconfig holds plugin user, config rbd/rbd/img0;..." python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
got = [s for s in c["storage_objects"] if s["plugin"] == "user"]
assert len(got) == 1 and got[0]["config"].startswith("rbd/rbd/img0;conf="), got
assert got[0]["size"] == 64 << 20, got' "$W/state/saveconfig.json"
check "rbd resize elsewhere reaches the initiator as 2A/09, READ CAPACITY 80 MiB" \
    timeout 60 python3 "$HERE/rbd_resize.py" "$PORT" "$IQN" 1 80 resize rbd/img0

# pr_watchers IMAGE: how many watch the image's shared PR object
# (rtarget_pr.<image id>; exit status 1 at none).
pr_watchers() {
    local id
    id=$(rbd info "$1" --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') &&
        rados -p rbd listwatchers "rtarget_pr.$id" | grep -c watcher=
}
# A deleted object lets go of its image at once, as a stopped daemon does.
check "CLI: a second user:rbd object with a LUN" bash -c '
    "$1" --socket "$2" /backstores/user:rbd create disk1 16M "rbd/img1;conf=$3;osd_op_timeout=20" &&
    "$1" --socket "$2" "/iscsi/$4/tpg1/luns" create /backstores/user:rbd/disk1' \
    _ "$RTARGET_BIN" "$RT_SOCK" "$CONF" "$IQN"
check "it watches its image header and shared PR object" bash -c "$(declare -f pr_watchers)
    rbd status rbd/img1 | grep -q watcher= && pr_watchers rbd/img1"
check "CLI: delete it" cli /backstores/user:rbd delete disk1
check "the deleted object no longer watches its image header nor PR object" bash -c "$(declare -f pr_watchers)
    ! rbd status rbd/img1 | grep watcher= && test \"\$(pr_watchers rbd/img1)\" = 0"

mkdir -p "$W/gw"
check "two gateways on one image: ALUA from the exclusive lock, takeover, fencing, no ping-pong" \
    env RTARGET_BIN="$RTARGET_BIN" timeout 180 python3 "$HERE/rbd_gateways.py" "$W/gw" "$CONF"
grep -E "^(takeover|failover|stop)" "$W/out.txt" >&2
mkdir -p "$W/gwpr"
check "lock-driven gateways with shared PR: the reservation holds through takeover, fencing, kill -9" \
    env RTARGET_BIN="$RTARGET_BIN" timeout 180 python3 "$HERE/rbd_gateways_pr.py" "$W/gwpr" "$CONF"
grep -E "^(takeover|failover)" "$W/out.txt" >&2

check "the daemon watches the image's shared PR object" bash -c "$(declare -f pr_watchers); pr_watchers rbd/img0"
stop_rtarget 10 || true
# Closed at the stop, not left for the OSDs to time out (5 s here, 30 s by
# default): the other gateways of an image need not wait for it.
check "the stopped daemon no longer watches the image header" \
    bash -c '! rbd status rbd/img0 | grep watcher='
check "nor its shared PR object" bash -c "$(declare -f pr_watchers); test \"\$(pr_watchers rbd/img0)\" = 0"
# Empty the log first: start_rtarget's wait could see the old run's
# "listening on" before the new daemon truncates it (kept for panics_in).
cat "$W/state/rtarget.log" >>"$W/state/rtarget.log.old"; : >"$W/state/rtarget.log"
start_rtarget "$W/state" "$PORT" || { fail "restart rtarget"; exit 1; }
check "after a restart from the saved config the data reads back" bash -c '
    timeout 120 qemu-img convert -f raw -O raw "$1" "$2/back2.raw" &&
    cmp -n $((64 << 20)) "$2/back2.raw" "$2/src.raw" &&
    test "$(stat -c %s "$2/back2.raw")" -eq $((80 << 20))' _ "$url" "$W"
