#!/bin/bash
# tests-e2e/loopback.sh — the loopback fabric (ublk) inside a Linux 6.12 guest,
# whose kernel has ublk_drv: rtarget runs IN the guest (copied in with
# GUEST_OVERLAY, with the shared libraries it needs). Through the CLI the guest
# creates a fileio backstore, `/loopback create naa.…` and `tpg1/luns create`;
# `ls /loopback` must show /dev/ublkb0; then mkfs.ext4 on /dev/ublkb0, mount,
# write a file and a 16 MiB random blob, sync, umount, e2fsck -fn, drop caches,
# mount read-only, md5sum -c; blkdiscard (the LU is thin: emulate_tpu=1) must
# punch holes in the backing file (UNMAP through the core); user recovery:
# kill -9 rtarget while a writer appends fsynced records to a mounted ext4,
# restart it: it recovers /dev/ublkb0 (no new disk), the writer finishes
# without an error, every acknowledged record verifies after drop caches;
# `/loopback delete`, with a new file system mounted and a writer running,
# returns, ends the writer and removes /dev/ublkb0; mode=scsi on a second
# target: the guest's open-iscsi initiator logs in to rtarget's private
# portal (as the TPG's nexus WWN), `ls` shows /dev/sdX and /dev/sgN, sg_inq
# shows rtarget's INQUIRY, sg_persist registers and reads a key, data
# written with O_DIRECT reads back, also after kill -9 + restart (the
# session reconnects to the same private port); `delete` logs out (no
# session, no disk); SIGTERM leaves a ublk disk and a scsi-mode session for
# the next rtarget; when their targets were removed from the config while
# rtarget was down, the disk is deleted and the session logged out at
# start-up. The daemon stops cleanly (exit 0, no panic). The
# saved config holds the target as rtslib writes the loopback fabric.
# The guest is built once by shared/tools/guest/build-guest.sh with KERNEL=6.12
# into GUEST_CACHE (default /var/cache/rtarget-guest-6.12) and runs under TCG
# where there is no KVM. TIMEOUT (default 240 s) bounds the guest run.
# VERBOSE=1 prints the guest console on success too. Prints PASS/FAIL and the time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
case ${1:-} in
    -h|--help) sed -n '2,/^set -euo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "usage: $0" >&2; exit 2 ;;
esac
need qemu-system-x86_64 python3
GUEST_TOOLS=$TOOLS/guest
GUEST_CACHE=${GUEST_CACHE:-/var/cache/rtarget-guest-6.12}
export TIMEOUT=${TIMEOUT:-240}
export MEM=${MEM:-1024}
# A loaded host can make the guest kernel's IO-APIC timer check fail under
# TCG ("IO-APIC + timer doesn't work", a panic at boot): skip that check.
export KAPPEND=${KAPPEND:-no_timer_check}
WWN=naa.5001405c0ffee0a1
WWN2=naa.5001405c0ffee0a2
WWN3=naa.5001405c0ffee0a3
W=$(mktemp -d "${RTARGET_TEST_WORK:-${TMPDIR:-/tmp}}/loopback.XXXXXX" 2>/dev/null || mktemp -d)
cleanup() {
    set +e
    [[ -n ${GPID:-} ]] && kill "$GPID" 2>/dev/null && wait "$GPID"
    if [[ -n ${OK:-} ]]; then rm -rf "$W"; else log "loopback: kept $W"; fi
}
trap cleanup EXIT
T0=$(date +%s)

[[ -x $GUEST_TOOLS/build-guest.sh ]] || { echo "FAIL loopback (no $GUEST_TOOLS/build-guest.sh)"; exit 1; }
[[ -x $RTARGET_BIN ]] || { echo "FAIL loopback (no $RTARGET_BIN: cargo build --release -p rtarget)"; exit 1; }
if ! KERNEL=6.12 "$GUEST_TOOLS/build-guest.sh" "$GUEST_CACHE" >"$W/build.log" 2>&1; then
    if [[ $(id -u) -eq 0 ]] && apt-get update -q >>"$W/build.log" 2>&1 &&
       KERNEL=6.12 "$GUEST_TOOLS/build-guest.sh" "$GUEST_CACHE" >>"$W/build.log" 2>&1; then :
    else
        tail -20 "$W/build.log"; echo "FAIL loopback (build-guest.sh KERNEL=6.12)"; exit 1
    fi
fi

# The overlay: rtarget and every shared library it links (the guest's
# initramfs has a libc of the same Debian release, but not necessarily all).
OV=$W/overlay
mkdir -p "$OV/usr/bin"
# Stripped: a smaller initramfs boots faster.
strip -o "$OV/usr/bin/rtarget" "$RTARGET_BIN" 2>/dev/null || cp "$RTARGET_BIN" "$OV/usr/bin/rtarget"
for lib in $(ldd "$RTARGET_BIN" | grep -o '/[^ ]*'); do
    install -D -m755 "$(readlink -f "$lib")" "$OV$lib"
done

# Expanded in the guest (busybox sh); every step is fatal (set -e).
# shellcheck disable=SC2016
PAYLOAD='set -ex
S=/run/rt; mkdir -p $S
rt() { rtarget --socket $S/api.sock "$@"; }
echo "{\"storage_objects\": [], \"targets\": []}" > $S/saveconfig.json
serve() {
    rtarget serve --listen 127.0.0.1:3260 --config $S/saveconfig.json --state-dir $S --socket $S/api.sock >> $S/rtarget.log 2>&1 &
    RTPID=$!
    for i in $(seq 600); do [ "$(grep -c "rtarget: listening on" $S/rtarget.log)" -ge "$1" ] && break; sleep 0.1; done
    [ "$(grep -c "rtarget: listening on" $S/rtarget.log)" -ge "$1" ] || { cat $S/rtarget.log; exit 1; }
}
serve 1
rt /backstores/fileio create lb0 /root/lb0.img 96M
rt /backstores/fileio/lb0 set attribute emulate_tpu=1
rt /loopback create '"$WWN"'
rt /loopback/'"$WWN"'/tpg1/luns create /backstores/fileio/lb0
rt ls /loopback | tee /tmp/ls.txt
grep -q "/dev/ublkb0" /tmp/ls.txt
grep -q "\"fabric\": \"loopback\"" $S/saveconfig.json
wait_for /dev/ublkb0 10
cat /sys/block/ublkb0/queue/logical_block_size /sys/block/ublkb0/queue/write_cache /sys/block/ublkb0/size
mkfs.ext4 -q -F /dev/ublkb0
mkdir -p /mnt/t && mount -t ext4 /dev/ublkb0 /mnt/t
echo "hello from $(uname -r) over ublk" > /mnt/t/hello.txt
dd if=/dev/urandom of=/mnt/t/blob bs=1M count=16 2>/dev/null
md5sum /mnt/t/hello.txt /mnt/t/blob > /tmp/sums.md5
sync; umount /mnt/t
e2fsck -fn /dev/ublkb0
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 -o ro /dev/ublkb0 /mnt/t; cat /mnt/t/hello.txt; md5sum -c /tmp/sums.md5; umount /mnt/t
cat /sys/block/ublkb0/queue/discard_max_bytes
K0=$(du -k /root/lb0.img | cut -f1)
blkdiscard /dev/ublkb0
K1=$(du -k /root/lb0.img | cut -f1)
echo "blkdiscard: backing file $K0 KiB -> $K1 KiB"; [ "$K1" -lt "$K0" ]
# User recovery: kill -9 rtarget while a writer appends fsynced records
# (a record is acknowledged when fsync returned: logged outside the disk),
# restart it: it takes /dev/ublkb0 over (no new disk), the writer goes on
# without an error, and every acknowledged record reads back from disk.
mkfs.ext4 -q -F /dev/ublkb0
mount -t ext4 /dev/ublkb0 /mnt/t
: > /tmp/acked
(i=0; while [ $i -lt 80 ]; do
    echo "record $i" | dd of=/mnt/t/r$i conv=fsync 2>/dev/null || exit 1
    echo $i >> /tmp/acked; i=$((i+1))
done) &
WR=$!
while [ "$(wc -l < /tmp/acked)" -lt 20 ]; do sleep 0.1; done
kill -9 $RTPID; echo "killed rtarget at $(wc -l < /tmp/acked) records"
wait $RTPID || true
serve 2
grep "recovered" $S/rtarget.log | tail -n 2
grep -q "recovered=true" $S/rtarget.log
rt ls /loopback | grep -q /dev/ublkb0
[ ! -e /dev/ublkb1 ]
wait $WR; echo "writer finished: $(wc -l < /tmp/acked) records acknowledged"
umount /mnt/t
e2fsck -fn /dev/ublkb0
echo 3 > /proc/sys/vm/drop_caches
mount -t ext4 -o ro /dev/ublkb0 /mnt/t
for i in $(cat /tmp/acked); do [ "$(cat /mnt/t/r$i)" = "record $i" ] || { echo "record $i lost"; exit 1; }; done
echo "all $(wc -l < /tmp/acked) acknowledged records verified"; umount /mnt/t
# Delete with the file system mounted and a writer running: the delete
# returns, the writer fails, nothing hangs (blkdiscard emptied the disk).
mkfs.ext4 -q -F /dev/ublkb0
mount -t ext4 /dev/ublkb0 /mnt/t
(while dd if=/dev/zero of=/mnt/t/w bs=1M count=8 conv=fsync 2>/dev/null; do :; done) &
WR=$!
while [ ! -s /mnt/t/w ]; do sleep 0.1; done
rt /loopback delete '"$WWN"'
wait $WR; echo "writer ended"
umount -l /mnt/t
[ ! -e /dev/ublkb0 ]; echo "ublkb0 removed"
# mode=scsi: the local open-iscsi initiator logs in to a private portal of
# rtarget; the LUN is a SCSI disk with an sg node: sg_inq shows rtarget,
# PR works through sg_persist; delete logs out (session and disk gone).
rt /backstores/fileio create lb1 /root/lb1.img 16M
rt /loopback create '"$WWN2"' mode=scsi
rt /loopback/'"$WWN2"'/tpg1/luns create /backstores/fileio/lb1
grep -q "\"mode\": \"scsi\"" $S/saveconfig.json
rt ls /loopback | tee /tmp/ls2.txt
SD=$(grep -o "/dev/sd[a-z]*" /tmp/ls2.txt | head -n1); SG=$(grep -o "/dev/sg[0-9]*" /tmp/ls2.txt | head -n1)
echo "scsi mode: $SD $SG"; wait_for "$SD" 10; wait_for "$SG" 10
sg_inq "$SG" | tee /tmp/inq.txt; grep -q "Vendor identification: RTARGET" /tmp/inq.txt
sg_persist --out --register --param-sark=0xabc123 "$SG"
sg_persist --in --read-keys "$SG" | tee /tmp/keys.txt; grep -q 0xabc123 /tmp/keys.txt
NX=$(grep -o "nexus naa\.[0-9a-f]*" /tmp/ls2.txt | cut -d" " -f2)
sg_persist --in --read-full-status "$SG" | tee /tmp/full.txt; grep -qi "$NX" /tmp/full.txt
dd if=/dev/urandom of=/tmp/x bs=64k count=16 2>/dev/null; dd if=/tmp/x of="$SD" bs=64k oflag=direct 2>/dev/null
[ "$(dd if="$SD" bs=64k count=16 iflag=direct 2>/dev/null | md5sum)" = "$(md5sum < /tmp/x)" ]
# kill -9 and restart: the new rtarget listens on the same private port,
# the session of the initiator reconnects by itself, the disk stays.
kill -9 $RTPID; wait $RTPID || true
serve 3
grep -q "resumed=true" $S/rtarget.log; [ -e "$SD" ]
[ "$(dd if="$SD" bs=64k count=16 iflag=direct 2>/dev/null | md5sum)" = "$(md5sum < /tmp/x)" ]
echo "scsi mode: $SD survived kill -9 + restart"
rt /loopback delete '"$WWN2"'
[ -z "$(ls /sys/class/iscsi_session/)" ]; [ ! -e "$SD" ]; echo "logged out, $SD gone"
# A disk kept for recovery and a scsi-mode session (rtarget stopped with
# SIGTERM: they stay) that the config no longer has (edited while rtarget
# was down) are deleted / logged out when rtarget starts.
rt /loopback create '"$WWN3"'
rt /loopback/'"$WWN3"'/tpg1/luns create /backstores/fileio/lb0
D3=$(rt ls /loopback | grep -o "/dev/ublkb[0-9]*"); wait_for $D3 10
rt /loopback create '"$WWN2"' mode=scsi
rt /loopback/'"$WWN2"'/tpg1/luns create /backstores/fileio/lb1
# SIGTERM is a handover too: the disk and the session stay.
kill -TERM $RTPID; wait $RTPID; [ -e $D3 ]; [ -n "$(ls /sys/class/iscsi_session/)" ]
echo "{\"storage_objects\": [], \"targets\": []}" > $S/saveconfig.json
serve 4
[ ! -e $D3 ]; [ ! -e /dev/ublkc${D3#/dev/ublkb} ]; grep -q "no target claims" $S/rtarget.log
[ -z "$(ls /sys/class/iscsi_session/)" ]
echo "unclaimed $D3 deleted at start-up"
kill -TERM $RTPID; wait $RTPID; echo "rtarget exit $?"
if grep -n "panicked" $S/rtarget.log; then exit 1; fi
echo GUEST-LOOPBACK-OK'

GUEST_OVERLAY=$OV "$GUEST_TOOLS/run-guest.sh" "$GUEST_CACHE" "$PAYLOAD" >"$W/guest.log" 2>&1 &
GPID=$!
rc=0; wait "$GPID" || rc=$?; GPID=
T=$(( $(date +%s) - T0 ))
if [[ $rc -eq 0 ]] && grep -aq GUEST-LOOPBACK-OK "$W/guest.log"; then
    [[ -n ${VERBOSE:-} ]] && cat "$W/guest.log"
    OK=1; echo "PASS loopback (${T}s)"
else
    tail -40 "$W/guest.log"; echo "FAIL loopback (rc $rc, ${T}s)"; exit 1
fi
