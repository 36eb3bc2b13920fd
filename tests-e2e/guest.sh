#!/bin/bash
# tests-e2e/guest.sh [--target rtarget|tgt] — a Linux guest's kernel initiator
# (open-iscsi, iscsi_tcp) against a target on the host: SendTargets discovery,
# login, mkfs.ext4, mount, write a file and a 32 MiB random blob, sync, umount,
# e2fsck -fn, drop caches, mount read-only, md5sum -c, logout.
# The guest is built once by shared/tools/guest/build-guest.sh into
# GUEST_CACHE (default /var/cache/rtarget-guest) and booted by run-guest.sh with
# restricted slirp networking: guest 10.0.2.100:3260 -> host 127.0.0.1:PORT.
# Without usable KVM the guest runs under TCG (~25 s against tgt on a 2-core VM);
# TIMEOUT (default 240 s) bounds the whole guest run.  Prints PASS/FAIL and the time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

TARGET=rtarget
case ${1:-} in
    --target) TARGET=${2:?--target rtarget|tgt}; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--target rtarget|tgt]" >&2; exit 2 ;;
esac
[[ $TARGET == rtarget || $TARGET == tgt ]] || { echo "--target rtarget|tgt" >&2; exit 2; }
GUEST_TOOLS=$TOOLS/guest
GUEST_CACHE=${GUEST_CACHE:-/var/cache/rtarget-guest}
export TIMEOUT=${TIMEOUT:-240}
IQN=iqn.2026-11.org.rtarget:guest
W=$(mktemp -d "${RTARGET_TEST_WORK:-${TMPDIR:-/tmp}}/guest.XXXXXX" 2>/dev/null || mktemp -d)
cleanup() {
    set +e
    [[ -n ${GPID:-} ]] && kill "$GPID" 2>/dev/null && wait "$GPID"
    stop_rtarget 5; stop_tgt
    if [[ -n ${OK:-} ]]; then rm -rf "$W"; else log "guest: kept $W"; fi
}
trap cleanup EXIT

[[ -x $GUEST_TOOLS/build-guest.sh ]] || { echo "FAIL guest (no $GUEST_TOOLS/build-guest.sh)"; exit 1; }
# build-guest.sh is a no-op when the cache is current; on a fresh machine it fetches
# .debs with apt-get download, which needs package lists: update them once if it fails.
if ! "$GUEST_TOOLS/build-guest.sh" "$GUEST_CACHE" >"$W/build.log" 2>&1; then
    if [[ $(id -u) -eq 0 ]] && apt-get update -q >>"$W/build.log" 2>&1 &&
       "$GUEST_TOOLS/build-guest.sh" "$GUEST_CACHE" >>"$W/build.log" 2>&1; then :
    else
        tail -20 "$W/build.log"; echo "FAIL guest (build-guest.sh)"; exit 1
    fi
fi

PORT=$(free_port)
if [[ $TARGET == rtarget ]]; then
    mkconfig "$W/saveconfig.json" "$PORT" "$IQN" "fileio:guest0:$W/guest0.img:256M"
    start_rtarget "$W" "$PORT"
    LUNPID=$RT_PID
else
    start_tgt "$W" "$PORT"; tgt_target 1 "$IQN"
    truncate -s 256M "$W/guest0.img"; tgt_lun 1 1 "$W/guest0.img"
    LUNPID=$TGT_PID
fi

# Expanded in the guest (busybox sh).  Every step is fatal (set -e).
# shellcheck disable=SC2016
PAYLOAD='set -ex
iscsiadm -m discovery -t sendtargets -p 10.0.2.100:3260
DEV=$(iscsi_login 10.0.2.100:3260 '"$IQN"'); echo "iSCSI disk: $DEV"
cat /sys/class/iscsi_session/session*/targetname
mkfs.ext4 -q -F $DEV
mkdir -p /mnt/t && mount -t ext4 $DEV /mnt/t
echo "hello from $(uname -r)" > /mnt/t/hello.txt
dd if=/dev/urandom of=/mnt/t/blob bs=1M count=32 2>/dev/null
md5sum /mnt/t/hello.txt /mnt/t/blob > /tmp/sums.md5
sync; umount /mnt/t
e2fsck -fn $DEV
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 -o ro $DEV /mnt/t; cat /mnt/t/hello.txt; md5sum -c /tmp/sums.md5; umount /mnt/t
iscsiadm -m node -T '"$IQN"' -p 10.0.2.100:3260 --logout
echo GUEST-ISCSI-OK'

T0=$SECONDS rc=0
FWD="3260:$PORT" "$GUEST_TOOLS/run-guest.sh" "$GUEST_CACHE" "$PAYLOAD" >"$W/console.log" 2>&1 &
GPID=$!
wait "$GPID" || rc=$?
GPID=
DT=$((SECONDS - T0))
if [[ $rc -eq 0 ]] && grep -q '^GUEST-ISCSI-OK' <(tr -d '\r' <"$W/console.log") &&
   kill -0 "$LUNPID" 2>/dev/null; then
    OK=1
    echo "PASS guest ($TARGET, kernel open-iscsi: discovery, login, ext4, md5, logout) ${DT}s"
else
    tr -d '\r' <"$W/console.log" | tail -40
    kill -0 "$LUNPID" 2>/dev/null || echo "guest: the $TARGET process died"
    [[ $TARGET == rtarget ]] && { echo "--- rtarget log (tail)"; tail -20 "$RT_LOG"; }
    echo "FAIL guest ($TARGET, run-guest rc=$rc) ${DT}s"
    exit 1
fi
