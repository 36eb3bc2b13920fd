#!/bin/bash
# tests-e2e/guest.sh [--target rtarget|tgt] — a Linux guest's kernel initiator
# (open-iscsi, iscsi_tcp) against a target on the host: SendTargets discovery,
# login, mkfs.ext4, mount, write a file and a 32 MiB random blob, sync, umount,
# e2fsck -fn, drop caches, mount read-only, md5sum -c, logout.
# Against rtarget the login uses MUTUAL CHAP (the TPG requires CHAP and the
# guest checks the target's answer), and while the guest is logged in the host
# grows the LUN (`rtarget ... resize`): the guest rescans its SCSI devices and
# must see the new size in /sys/block/sdX/size, read the new last sector and
# find its files intact; no relogin. Before that, against rtarget, a second
# rtarget runs INSIDE the guest (Debian 12's 6.1 kernel has no ublk_drv):
# `/loopback create` must fail naming ublk_drv and the kernels that have
# it, and that rtarget keeps serving (nothing created, the next change
# works); a `mode=scsi` loopback target works there (sg_inq on its /dev/sgN
# through the guest's open-iscsi; delete logs out).
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
# rtarget's LU file lives on tmpfs: the kernel initiator's large writes land
# in its pages (landed writes) and the online resize remaps it.
SHM_IMG=/dev/shm/rtarget-guest-$$.img
cleanup() {
    set +e
    [[ -n ${GPID:-} ]] && kill "$GPID" 2>/dev/null && wait "$GPID"
    stop_rtarget 5; stop_tgt
    rm -f "$SHM_IMG"
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
# Mutual CHAP credentials (rtarget only): the guest proves CHAP_USER, the
# target proves CHAP_TUSER back (open-iscsi's username_in/password_in).
CHAP_USER=guest-initiator CHAP_PASS=guestsecret-1234
CHAP_TUSER=rtarget-target CHAP_TPASS=targetsecret-5678
GROWN_MB=384
if [[ $TARGET == rtarget ]]; then
    mkconfig "$W/saveconfig.json" "$PORT" "$IQN" "fileio:guest0:$SHM_IMG:256M"
    python3 - "$W/saveconfig.json" "$CHAP_USER" "$CHAP_PASS" "$CHAP_TUSER" "$CHAP_TPASS" <<'EOF'
import json, sys
path, u, p, tu, tp = sys.argv[1:]
cfg = json.load(open(path))
tpg = cfg["targets"][0]["tpgs"][0]
tpg["attributes"]["authentication"] = 1
tpg.update(chap_userid=u, chap_password=p, chap_mutual_userid=tu, chap_mutual_password=tp)
json.dump(cfg, open(path, "w"), indent=2)
EOF
    # As start_rtarget, plus an API socket of our own for the resize.
    RT_LOG=$W/rtarget.log
    "$RTARGET_BIN" serve --listen "127.0.0.1:$PORT" --config "$W/saveconfig.json" \
        --state-dir "$W" --socket "$W/api.sock" >"$RT_LOG" 2>&1 &
    RT_PID=$!
    wait_port "$PORT" 10 || { tail -20 "$RT_LOG"; echo "FAIL guest (rtarget did not start)"; exit 1; }
    LUNPID=$RT_PID
    # Metrics on, to see the guest's large writes land in the tmpfs file.
    MPORT=$(free_port); while [[ $MPORT == "$PORT" ]]; do MPORT=$(free_port); done
    "$RTARGET_BIN" --socket "$W/api.sock" set global "metrics=127.0.0.1:$MPORT" >/dev/null
else
    start_tgt "$W" "$PORT"; tgt_target 1 "$IQN"
    truncate -s 256M "$W/guest0.img"; tgt_lun 1 1 "$W/guest0.img"
    LUNPID=$TGT_PID
fi

# Login: plain for tgt; mutual CHAP for rtarget (node record made for the
# portal directly, as iscsi_login does, then CHAP set on it).
# shellcheck disable=SC2016
LOGIN='DEV=$(iscsi_login 10.0.2.100:3260 '"$IQN"'); echo "iSCSI disk: $DEV"'
GROW=
if [[ $TARGET == rtarget ]]; then
    # shellcheck disable=SC2016
    LOGIN='N="-m node -T '"$IQN"' -p 10.0.2.100:3260"
iscsiadm $N -o new >/dev/null
for kv in authmethod=CHAP username='"$CHAP_USER"' password='"$CHAP_PASS"' username_in='"$CHAP_TUSER"' password_in='"$CHAP_TPASS"'; do
    iscsiadm $N -o update -n node.session.auth.${kv%%=*} -v ${kv#*=}
done
iscsiadm $N --login
DEV=; for i in $(seq 100); do
    for b in /sys/class/iscsi_session/session*/device/target*/*/block/*; do [ -e "$b" ] && DEV=/dev/${b##*/}; done
    [ -n "$DEV" ] && wait_for $DEV 5 && break; sleep 0.1
done; [ -n "$DEV" ]; echo "iSCSI disk (mutual CHAP): $DEV"'
    # The host resizes when it sees RESIZE-REQUEST; the guest rescans until the
    # size changes (the first rescan command also consumes the 2A/09 UA).
    # shellcheck disable=SC2016
    GROW='S0=$(cat /sys/block/${DEV#/dev/}/size); echo "size before: $S0 sectors"
echo RESIZE-REQUEST
S1=$S0; i=0; while [ "$S1" = "$S0" ]; do
    [ $i -lt 120 ] || { echo "no new size after 60 s"; exit 1; }
    for r in /sys/class/scsi_device/*/device/rescan; do echo 1 > $r; done
    S1=$(cat /sys/block/${DEV#/dev/}/size); i=$((i + 1)); [ "$S1" != "$S0" ] || sleep 0.5
done
echo "guest sees the LUN grow: $S0 -> $S1 sectors"
[ "$S1" -eq '"$((GROWN_MB * 2048))"' ]
dd if=$DEV of=/dev/null bs=512 skip=$((S1 - 1)) count=1
mount -t ext4 -o ro $DEV /mnt/t; md5sum -c /tmp/sums.md5; umount /mnt/t
echo GUEST-RESIZE-OK'
fi

NOUBLK=
if [[ $TARGET == rtarget ]]; then
    # rtarget in the guest (stripped: a smaller initramfs boots faster).
    mkdir -p "$W/overlay/usr/bin"
    strip -o "$W/overlay/usr/bin/rtarget" "$RTARGET_BIN" 2>/dev/null ||
        cp "$RTARGET_BIN" "$W/overlay/usr/bin/rtarget"
    for lib in $(ldd "$RTARGET_BIN" | grep -o '/[^ ]*'); do
        install -D -m755 "$(readlink -f "$lib")" "$W/overlay$lib"
    done
    export GUEST_OVERLAY=$W/overlay
    # shellcheck disable=SC2016
    NOUBLK='L=/run/lb; mkdir -p $L; echo "{\"storage_objects\": [], \"targets\": []}" > $L/c.json
rtarget serve --config $L/c.json --state-dir $L --socket $L/api.sock > $L/log 2>&1 &
for i in $(seq 300); do grep -q "rtarget: API on" $L/log && break; sleep 0.1; done
rl() { rtarget --socket $L/api.sock "$@"; }
rl /backstores/ramdisk create r0 1M
if rl /loopback create naa.5001405c0ffee0c1 > $L/out 2>&1; then cat $L/out; exit 1; fi
cat $L/out; grep -q "modprobe ublk_drv" $L/out; grep -q "6.12" $L/out
rl ls /loopback | grep -q "Targets: 0"
rl /backstores/ramdisk create r1 1M; rl ls /backstores | grep -q r1
rl /loopback create naa.5001405c0ffee0c2 mode=scsi
rl /loopback/naa.5001405c0ffee0c2/tpg1/luns create /backstores/ramdisk/r1
SG=$(rl ls /loopback | grep -o "/dev/sg[0-9]*"); wait_for $SG 10
sg_inq $SG | grep "Vendor identification: RTARGET"
rl /loopback delete naa.5001405c0ffee0c2; [ -z "$(ls /sys/class/iscsi_session/)" ]
echo GUEST-NOUBLK-OK'
fi

# Expanded in the guest (busybox sh).  Every step is fatal (set -e).
# shellcheck disable=SC2016
PAYLOAD='set -ex
'"$NOUBLK"'
iscsiadm -m discovery -t sendtargets -p 10.0.2.100:3260
'"$LOGIN"'
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
BIG=$(dd if=$DEV bs=1M count=40 iflag=direct 2>/dev/null | md5sum)
SMALL=$(dd if=$DEV bs=64k count=640 iflag=direct 2>/dev/null | md5sum)
[ "$BIG" = "$SMALL" ]; echo "1 MiB (sent from the pages) and 64 KiB (copied) direct reads agree: $BIG"
'"$GROW"'
iscsiadm -m node -T '"$IQN"' -p 10.0.2.100:3260 --logout
echo GUEST-ISCSI-OK'

T0=$SECONDS rc=0
FWD="3260:$PORT" "$GUEST_TOOLS/run-guest.sh" "$GUEST_CACHE" "$PAYLOAD" >"$W/console.log" 2>&1 &
GPID=$!
if [[ $TARGET == rtarget ]]; then
    # Grow the LUN once the guest asks (it is logged in and has checked its data).
    (
        for ((i = 0; i < 1200; i++)); do
            kill -0 "$GPID" 2>/dev/null || exit 0
            if tr -d '\r' <"$W/console.log" | grep -q '^RESIZE-REQUEST'; then
                "$RTARGET_BIN" --socket "$W/api.sock" /backstores/fileio/guest0 resize "${GROWN_MB}M"
                exit
            fi
            sleep 0.1
        done
    ) >"$W/resize.log" 2>&1 &
    RZPID=$!
fi
wait "$GPID" || rc=$?
[[ -n ${RZPID:-} ]] && { wait "$RZPID" || true; }
GPID=
DT=$((SECONDS - T0))
# A counter of the scrape (0 if none): bytes the guest's writes landed
# straight in the LU's pages, bytes its large reads were sent from them.
metric() {
    python3 - "http://127.0.0.1:$MPORT/metrics" "$1" <<'EOF' 2>/dev/null || echo 0
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
print(next((int(float(l.split()[1])) for l in text.splitlines()
            if l.startswith(sys.argv[2] + " ")), 0))
EOF
}
LANDED=0 LENT=0
[[ $TARGET == rtarget ]] && LANDED=$(metric rtarget_iscsi_landed_bytes_total) &&
    LENT=$(metric 'rtarget_iscsi_live_lent_bytes_total{how="sent"}')
WHAT="discovery, login, ext4, md5, logout"
[[ $TARGET == rtarget ]] && WHAT="discovery, mutual CHAP login, ext4, md5, online resize $(
    sed -n 's/^guest sees the LUN grow: //p' <(tr -d '\r' <"$W/console.log")) + rescan, logout; $((LANDED >> 20)) MiB landed in the tmpfs LU, $((LENT >> 20)) MiB of 1 MiB reads sent from its pages; in-guest rtarget: no ublk_drv refused clearly, mode=scsi sg_inq"
if [[ $rc -eq 0 ]] && grep -q '^GUEST-ISCSI-OK' <(tr -d '\r' <"$W/console.log") &&
   { [[ $TARGET != rtarget ]] || grep -q '^GUEST-RESIZE-OK' <(tr -d '\r' <"$W/console.log"); } &&
   { [[ $TARGET != rtarget ]] || grep -q '^GUEST-NOUBLK-OK' <(tr -d '\r' <"$W/console.log"); } &&
   { [[ $TARGET != rtarget ]] || ((LANDED > 0 && LENT > 0)); } &&
   kill -0 "$LUNPID" 2>/dev/null; then
    OK=1
    echo "PASS guest ($TARGET, kernel open-iscsi: $WHAT) ${DT}s"
else
    tr -d '\r' <"$W/console.log" | tail -40
    kill -0 "$LUNPID" 2>/dev/null || echo "guest: the $TARGET process died"
    [[ $TARGET == rtarget ]] && { echo "--- landed bytes: $LANDED, live lent: $LENT"; echo "--- resize"; cat "$W/resize.log" 2>/dev/null
                                  echo "--- rtarget log (tail)"; tail -20 "$RT_LOG"; }
    echo "FAIL guest ($TARGET, run-guest rc=$rc) ${DT}s"
    exit 1
fi
