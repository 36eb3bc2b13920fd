#!/bin/bash
# tests-e2e/vhost.sh — a Linux guest gets rtarget's LUNs over vhost-user-scsi:
# QEMU's vhost-user-scsi-pci (num_queues=2, guest memory a shared memfd) on the
# vhost target's socket; in the guest the virtio_scsi driver finds the disk
# without any setup: sg_inq / sg_vpd -p di / sg_readcap show rtarget's answers,
# then mkfs.ext4, write a file and a 32 MiB random blob, sync, umount, e2fsck,
# drop caches, mount read-only, md5sum -c. While the guest runs the host adds a
# second LUN through the CLI (`tpg1/luns create`): it must appear in the guest
# as a new disk with no manual rescan (virtio-scsi hotplug event); sg_persist
# registers, reserves, reads keys and the reservation, releases; the host grows
# LUN 0 (`resize`): the guest sees the new size without a rescan (PARAM_CHANGE
# event); the host deletes the added LUN: its disk goes away in the guest.
# The guest is built once by shared/tools/guest/build-guest.sh into GUEST_CACHE
# (default /var/cache/rtarget-guest, as tests-e2e/guest.sh) and runs under TCG
# where there is no KVM. TIMEOUT (default 240 s) bounds the guest run.
# --reconnect instead: QEMU's chardev has reconnect-ms=500; while the guest
# writes 96 MiB with O_DIRECT in 4 KiB blocks the host kills rtarget with SIGKILL and starts it
# again on the same config: the guest's writes complete (requests in flight
# are fetched again: QEMU rewinds the rings to their used index) and every
# byte reads back.
# VERBOSE=1 prints the guest console on success too. Prints PASS/FAIL and the time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
MODE=main
case ${1:-} in
    --reconnect) MODE=reconnect ;;
    -h|--help) sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--reconnect]" >&2; exit 2 ;;
esac
need qemu-system-x86_64 python3
GUEST_TOOLS=$TOOLS/guest
GUEST_CACHE=${GUEST_CACHE:-/var/cache/rtarget-guest}
export TIMEOUT=${TIMEOUT:-240}
MEM=${MEM:-512}
export MEM
WWN=naa.5001405c0ffee001
W=$(mktemp -d "${RTARGET_TEST_WORK:-${TMPDIR:-/tmp}}/vhost.XXXXXX" 2>/dev/null || mktemp -d)
cleanup() {
    set +e
    [[ -n ${GPID:-} ]] && kill "$GPID" 2>/dev/null && wait "$GPID"
    stop_rtarget 5
    if [[ -n ${OK:-} ]]; then rm -rf "$W"; else log "vhost: kept $W"; fi
}
trap cleanup EXIT

[[ -x $GUEST_TOOLS/build-guest.sh ]] || { echo "FAIL vhost (no $GUEST_TOOLS/build-guest.sh)"; exit 1; }
if ! "$GUEST_TOOLS/build-guest.sh" "$GUEST_CACHE" >"$W/build.log" 2>&1; then
    if [[ $(id -u) -eq 0 ]] && apt-get update -q >>"$W/build.log" 2>&1 &&
       "$GUEST_TOOLS/build-guest.sh" "$GUEST_CACHE" >>"$W/build.log" 2>&1; then :
    else
        tail -20 "$W/build.log"; echo "FAIL vhost (build-guest.sh)"; exit 1
    fi
fi

SOCK=$W/vhost.sock
python3 - "$W" "$WWN" "$SOCK" >"$W/saveconfig.json" <<'PY'
import json, sys
w, wwn, sock = sys.argv[1:]
print(json.dumps({
    "storage_objects": [
        {"plugin": "fileio", "name": "vdisk0", "dev": f"{w}/vdisk0.img", "size": 256 << 20,
         "write_back": True, "wwn": "3f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"},
        {"plugin": "ramdisk", "name": "hot1", "size": 64 << 20,
         "wwn": "7a6b5c4d-3e2f-4109-9876-0f1e2d3c4b5a"}],
    "targets": [{"fabric": "vhost", "wwn": wwn, "socket": sock, "tpgs": [{
        "tag": 1, "enable": True,
        "luns": [{"index": 0, "storage_object": "/backstores/fileio/vdisk0"}]}]}],
}, indent=2))
PY
PORT=$(free_port)
start_rtarget "$W" "$PORT" || { echo "FAIL vhost (rtarget did not start)"; exit 1; }
for ((i = 0; i < 50; i++)); do [[ -S $SOCK ]] && break; sleep 0.1; done
[[ -S $SOCK ]] || { tail -20 "$RT_LOG"; echo "FAIL vhost (no socket $SOCK)"; exit 1; }

# Expanded in the guest (busybox sh); every step is fatal (set -e).
# shellcheck disable=SC2016
PAYLOAD='set -ex
disks() { for b in /sys/bus/scsi/devices/*/block/*; do [ -e "$b" ] && echo /dev/${b##*/}; done; }
DEV=; for i in $(seq 300); do DEV=$(disks | head -n1); [ -n "$DEV" ] && break; sleep 0.1; done
[ -n "$DEV" ]; wait_for $DEV 10; echo "vhost disk: $DEV"
ls /sys/bus/scsi/devices/
sg_inq $DEV
sg_vpd -p di $DEV
sg_readcap $DEV
mkfs.ext4 -q -F $DEV
mkdir -p /mnt/t && mount -t ext4 $DEV /mnt/t
echo "hello from $(uname -r) over vhost-user-scsi" > /mnt/t/hello.txt
dd if=/dev/urandom of=/mnt/t/blob bs=1M count=32 2>/dev/null
md5sum /mnt/t/hello.txt /mnt/t/blob > /tmp/sums.md5
sync; umount /mnt/t
e2fsck -fn $DEV
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 -o ro $DEV /mnt/t; cat /mnt/t/hello.txt; md5sum -c /tmp/sums.md5; umount /mnt/t
echo HOTPLUG-REQUEST
N=1; for i in $(seq 600); do N=$(disks | wc -l); [ "$N" -ge 2 ] && break; sleep 0.1; done
[ "$N" -ge 2 ]; NEW=$(disks | grep -v "^$DEV$" | head -n1); wait_for $NEW 10
ls -d /sys/bus/scsi/devices/*:1:1 # LUN 1, as a scan would name it
echo "hotplugged disk: $NEW"; sg_readcap $NEW
sg_turs $DEV || true  # the LUN change left REPORTED LUNS DATA HAS CHANGED for sda
sg_persist --out --register --param-sark=0x5eed $DEV
sg_persist --out --reserve --param-rk=0x5eed --prout-type=1 $DEV
sg_persist --in --read-keys $DEV | grep -q 0x5eed
sg_persist --in --read-reservation $DEV | tee /tmp/res; grep -q 0x5eed /tmp/res
sg_persist --out --release --param-rk=0x5eed --prout-type=1 $DEV
sg_persist --out --register --param-rk=0x5eed --param-sark=0 $DEV
S0=$(cat /sys/block/${DEV#/dev/}/size)
echo RESIZE-REQUEST
S1=$S0; for i in $(seq 600); do S1=$(cat /sys/block/${DEV#/dev/}/size); [ "$S1" != "$S0" ] && break; sleep 0.1; done
echo "resize seen without a rescan: $S0 -> $S1 sectors"; [ "$S1" -eq '"$((384 * 2048))"' ]
echo REMOVE-REQUEST
for i in $(seq 600); do [ -e /sys/block/${NEW#/dev/} ] || break; sleep 0.1; done
[ ! -e /sys/block/${NEW#/dev/} ]; echo "LUN removal seen: $NEW is gone"
mount -t ext4 -o ro $DEV /mnt/t; md5sum -c /tmp/sums.md5; umount /mnt/t
echo GUEST-VHOST-OK'

# shellcheck disable=SC2016
RECONNECT_PAYLOAD='set -ex
disks() { for b in /sys/bus/scsi/devices/*/block/*; do [ -e "$b" ] && echo /dev/${b##*/}; done; }
DEV=; for i in $(seq 300); do DEV=$(disks | head -n1); [ -n "$DEV" ] && break; sleep 0.1; done
[ -n "$DEV" ]; wait_for $DEV 10; echo "vhost disk: $DEV"
dd if=/dev/urandom of=/tmp/blob bs=1M count=48 2>/dev/null
md5sum </tmp/blob | tee /tmp/want
echo KILL-REQUEST
dd if=/tmp/blob of=$DEV bs=4k oflag=direct
dd if=/tmp/blob of=$DEV bs=4k seek=16384 oflag=direct
echo WRITES-DONE
echo 3 > /proc/sys/vm/drop_caches
for off in 0 1024; do
    dd if=$DEV bs=64k skip=$off count=768 iflag=direct 2>/dev/null | md5sum | tee /tmp/got
    cmp /tmp/want /tmp/got
done
echo GUEST-VHOST-OK'
CHARDEV="socket,id=vus,path=$SOCK"
if [[ $MODE == reconnect ]]; then
    PAYLOAD=$RECONNECT_PAYLOAD CHARDEV+=",reconnect-ms=500"
fi

T0=$SECONDS rc=0
"$GUEST_TOOLS/run-guest.sh" "$GUEST_CACHE" "$PAYLOAD" \
    -object "memory-backend-memfd,id=mem,size=${MEM}M,share=on" -machine memory-backend=mem \
    -chardev "$CHARDEV" -device vhost-user-scsi-pci,chardev=vus,num_queues=2 \
    >"$W/console.log" 2>&1 &
GPID=$!
KILLED=
if [[ $MODE == reconnect ]]; then
    # SIGKILL rtarget while the guest writes, start it again at once.
    for ((i = 0; i < 2400; i++)); do
        kill -0 "$GPID" 2>/dev/null || break
        if tr -d '\r' <"$W/console.log" | grep -q '^KILL-REQUEST'; then
            tr -d '\r' <"$W/console.log" | grep -q '^WRITES-DONE' && break  # too late
            kill -KILL "$RT_PID"; wait "$RT_PID" 2>/dev/null || true; RT_PID=
            KILLED=1
            start_rtarget "$W" "$PORT" || { echo "FAIL vhost (rtarget did not restart)"; exit 1; }
            break
        fi
        sleep 0.1
    done
fi
# Live changes through the CLI when the guest asks for them, in order: add a
# LUN, grow LUN 0, delete the added LUN.
[[ $MODE == reconnect ]] || (
    rt() { "$RTARGET_BIN" --socket "$RT_SOCK" "$@"; }
    for req in HOTPLUG RESIZE REMOVE; do
        for ((i = 0; ; i++)); do
            ((i < 2400)) && kill -0 "$GPID" 2>/dev/null || exit 0
            tr -d '\r' <"$W/console.log" | grep -q "^$req-REQUEST" && break
            sleep 0.1
        done
        case $req in
            HOTPLUG) rt "/vhost/$WWN/tpg1/luns" create /backstores/ramdisk/hot1 ;;
            RESIZE) rt /backstores/fileio/vdisk0 resize 384M ;;
            REMOVE) rt "/vhost/$WWN/tpg1/luns" delete 1 ;;
        esac
    done
) >"$W/hotplug.log" 2>&1 &
HPID=$!
wait "$GPID" || rc=$?
wait "$HPID" || true
GPID=
DT=$((SECONDS - T0))
WHAT="sg_inq, sg_vpd, sg_readcap, ext4, md5, LUN hotplug, sg_persist, resize, LUN removal"
[[ $MODE == reconnect ]] && WHAT="reconnect-ms: rtarget SIGKILLed and restarted during 96 MiB of O_DIRECT writes, all read back"
if [[ $MODE == reconnect && -z $KILLED ]]; then
    echo "vhost: the guest finished writing before the kill (make the writes longer)"; rc=1
fi
if [[ $rc -eq 0 ]] && grep -q '^GUEST-VHOST-OK' <(tr -d '\r' <"$W/console.log") &&
   kill -0 "$RT_PID" 2>/dev/null && [[ $(rt_panics) == 0 ]]; then
    OK=1
    [[ -n ${VERBOSE:-} ]] && tr -d '\r' <"$W/console.log"
    echo "PASS vhost (vhost-user-scsi-pci, num_queues=2: $WHAT) ${DT}s"
else
    tr -d '\r' <"$W/console.log" | tail -40
    kill -0 "$RT_PID" 2>/dev/null || echo "vhost: the rtarget process died"
    echo "--- hotplug"; cat "$W/hotplug.log" 2>/dev/null
    echo "--- rtarget log (tail)"; tail -20 "$RT_LOG"
    echo "FAIL vhost (run-guest rc=$rc) ${DT}s"
    exit 1
fi
