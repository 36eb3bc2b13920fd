#!/bin/bash
# tests-e2e/rbd-failover.sh — a Linux guest's dm-multipath over two rtarget
# gateways of one RBD image (docs/rbd-gateways.md), on a throw-away
# single-node Ceph (../shared/tools/ceph, brought up and purged here):
#   the guest (shared/tools/guest, TCG without KVM) logs in to gateway A
#   (TPG 1, ALUA group 1) and gateway B (TPG 2, group 2) with a 5 s
#   replacement timeout, checks scsi_dh_alua is attached, builds a multipath
#   table by hand (dmsetup: queue_if_no_path, hardware handler alua, A's path
#   group first), and a writer puts 4 KiB records with sequence numbers
#   through it, each O_DIRECT and fsync'd, printing ACK N per record done.
#   After 30 records the host kills gateway A with SIGKILL; the I/O must
#   resume through B (which takes the exclusive lock over); the failover
#   time (kill to the next ACK) is printed; every acknowledged record must be
#   in `rbd export`. Then the same with SIGSTOP (fresh image and gateways):
#   once B serves, SIGCONT A, which must find itself fenced (blocklisted)
#   and whose late writes must not land (the export check).
#   Before the writer starts the guest registers a key on both paths and
#   reserves Write Exclusive - Registrants Only through A (sg_persist; the
#   reservations are shared through the image's RADOS object); after the
#   failover READ KEYS / READ RESERVATION through B must still report them.
# Prints "PASS name" / "FAIL name (why)" per check and ends with "N passed, N failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

need qemu-system-x86_64 rbd ceph-mon ceph-osd python3
if ! grep -q 'librbd\.so\.1 ' <<<"$(ldconfig -p)"; then need librbd.so.1; fi
[[ -f $TOOLS/ceph/ceph-up.sh ]] || need "$TOOLS/ceph/ceph-up.sh"
[[ -x $TOOLS/guest/build-guest.sh ]] || need "$TOOLS/guest/build-guest.sh"
GUEST_CACHE=${GUEST_CACHE:-/var/cache/rtarget-guest}
export TIMEOUT=${TIMEOUT:-300}
W=$(mktemp -d "${RTARGET_TEST_WORK:-${TMPDIR:-/tmp}}/e2e-rbd-failover.XXXXXX")
NPASS=0 NFAIL=0 CEPH=$W/ceph IQN=iqn.2026-12.org.rtarget:gw IMAGE_BASE=rbd/failover
RECORDS=${RECORDS:-80} KILL_AT=${KILL_AT:-30} FAILOVER_MAX=${FAILOVER_MAX:-20} PRKEY=0x52544741
PIDS=()
pass() { NPASS=$((NPASS + 1)); echo "PASS $1"; }
fail() { NFAIL=$((NFAIL + 1)); echo "FAIL $1${2:+ ($2)}"; }
finish() {
    local rc=$? p
    [[ -n ${GPID:-} ]] && kill "$GPID" 2>/dev/null && wait "$GPID" 2>/dev/null
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    [[ -z ${REUSE_CEPH_CONF:-} ]] && bash "$TOOLS/ceph/ceph-down.sh" "$CEPH" --purge >/dev/null 2>&1
    if p=$(panics_in "$W"/*-gw*/rtarget.log); then
        fail "no panic in the gateways' logs" "$(tr '\n' ' ' <<<"$p" | cut -c1-300)"; rc=1
    fi
    if ((NFAIL == 0)); then rm -rf "$W"; else log "rbd failover: kept $W"; fi
    echo "$NPASS passed, $NFAIL failed"
    ((NFAIL == 0)) || rc=1
    exit "$rc"
}
trap finish EXIT

if ! "$TOOLS/guest/build-guest.sh" "$GUEST_CACHE" >"$W/build.log" 2>&1; then
    fail "build-guest.sh" "$(tail -n 3 "$W/build.log" | tr '\n' ' ')"; exit 1
fi
if [[ -n ${REUSE_CEPH_CONF:-} ]]; then
    CONF=$REUSE_CEPH_CONF IMAGE_BASE=rbd/failover$$
else
    if ceph_up "$CEPH" "$W/ceph-up.log"; then
        pass "single-node Ceph up"
    else
        fail "ceph-up.sh" "$(tail -n 3 "$W/ceph-up.log" | tr '\n' ' ')"; exit 1
    fi
    CONF=$CEPH/ceph.conf
fi
export CEPH_CONF=$CONF
# Expanded in the guest (busybox sh).
# shellcheck disable=SC2016
PAYLOAD='set -e
for p in 3260 3261; do
    N="-m node -T '"$IQN"' -p 10.0.2.100:$p"
    iscsiadm $N -o new >/dev/null
    iscsiadm $N -o update -n node.session.timeo.replacement_timeout -v 5
    iscsiadm $N -o update -n "node.conn[0].timeo.noop_out_interval" -v 2
    iscsiadm $N -o update -n "node.conn[0].timeo.noop_out_timeout" -v 3
    iscsiadm $N --login >/dev/null
done
A=; B=
for i in $(seq 200); do
    for s in /sys/class/iscsi_session/session*; do
        port=$(cat $s/device/connection*/iscsi_connection/connection*/persistent_port)
        for b in $s/device/target*/*/block/*; do
            [ -e "$b" ] || continue
            [ "$port" = 3260 ] && A=/dev/${b##*/}
            [ "$port" = 3261 ] && B=/dev/${b##*/}
        done
    done
    [ -n "$A" ] && [ -n "$B" ] && break
    sleep 0.1
done
wait_for $A 5; wait_for $B 5
echo "PATHS A=$A dh=$(cat /sys/block/${A#/dev/}/device/dh_state) B=$B dh=$(cat /sys/block/${B#/dev/}/device/dh_state)"
sg_rtpg -d $A | grep -iE "target port group id|asymmetric access state" || true
S=$(cat /sys/block/${A#/dev/}/size)
dmsetup create mp --table "0 $S multipath 1 queue_if_no_path 1 alua 2 1 round-robin 0 1 1 $A 1 round-robin 0 1 1 $B 1"
dmsetup mknodes mp 2>/dev/null || true   # no udev here
MP=/dev/mapper/mp
[ -e $MP ] || MP=/dev/$(basename $(readlink -f /sys/block/dm-*/dm/.. 2>/dev/null | head -n1) 2>/dev/null)
[ -b "$MP" ] || MP=/dev/dm-0
wait_for $MP 5
dmsetup table mp
# Persistent reservation before the failover: the key on both paths (as
# mpathpersist registers it), Write Exclusive - Registrants Only through A.
for p in $A $B; do sg_persist -n --out --register --param-sark='"$PRKEY"' $p; done
sg_persist -n --out --reserve --param-rk='"$PRKEY"' --prout-type=5 $A
head -c 4096 /dev/zero > /tmp/zero
echo WRITER-START
i=0
while [ $i -lt '"$RECORDS"' ]; do
    { printf "rtarget-failover seq=%08d\n" $i; head -c 4066 /tmp/zero; } > /tmp/rec
    dd if=/tmp/rec of=$MP bs=4096 seek=$i count=1 oflag=direct conv=notrunc,fsync 2>/tmp/dd.err ||
        { cat /tmp/dd.err; echo "WRITE-FAILED $i"; exit 1; }
    echo "ACK $i"
    i=$((i + 1))
done
dmsetup status mp
echo WRITER-DONE
sg_persist -n -i -k $B | sed "s/^/PRK /"
sg_persist -n -i -r $B | sed "s/^/PRR /"
sg_persist -n --out --clear --param-rk='"$PRKEY"' $B   # frees the LU for the late-write check
# The host resizes the image once I/O resumed through B (`rbd resize`):
# a rescan of the path shows the new size, no relogin.
for i in $(seq 100); do
    echo 1 > /sys/block/${B#/dev/}/device/rescan
    [ "$(cat /sys/block/${B#/dev/}/size)" != "$S" ] && break
    sleep 0.1
done
echo "RESIZE $S $(cat /sys/block/${B#/dev/}/size)"'

check_export() {
    rbd export --no-progress "$IMAGE" "$W/$KIND-export.raw" >/dev/null 2>&1 || return 1
    # The number only: a kernel message can land on the same console line.
    python3 - "$W/$KIND-export.raw" <(tr -d '\r' <"$W/$KIND-console.log" | sed -n 's/^ACK \([0-9][0-9]*\).*/\1/p') <<'EOF'
import sys
img = open(sys.argv[1], "rb").read()
acked = [int(x) for x in open(sys.argv[2]).read().split()]
bad = [i for i in acked
       if img[i * 4096:(i + 1) * 4096] != (b"rtarget-failover seq=%08d\n" % i).ljust(4096, b"\0")]
print(f"{len(acked)} acknowledged records, {len(bad)} missing or wrong: {bad[:10]}")
sys.exit(1 if bad or not acked else 0)
EOF
}

# variant KIND SIGNAL: fresh image and gateways, the guest writer, SIGNAL to A.
variant() {
KIND=$1 SIG=$2 IMAGE=$IMAGE_BASE-$1
rbd create --size 64M "$IMAGE" || { fail "rbd create $IMAGE"; return 1; }

PA=$(free_port); PB=$(free_port); while [[ $PB == "$PA" ]]; do PB=$(free_port); done
for me in 1 2; do
    mkdir -p "$W/$KIND-gw$me"
    python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import rbd_gw_common as g
g.gateway_config(sys.argv[2], int(sys.argv[3]), {1: int(sys.argv[4]), 2: int(sys.argv[5])},
                 sys.argv[6], sys.argv[7])' \
        "$HERE" "$W/$KIND-gw$me/saveconfig.json" "$me" "$PA" "$PB" "$CONF" "$IMAGE"
    port=$PA; [[ $me == 2 ]] && port=$PB
    "$RTARGET_BIN" serve --listen "127.0.0.1:$port" --config "$W/$KIND-gw$me/saveconfig.json" \
        --state-dir "$W/$KIND-gw$me" --socket "$W/$KIND-gw$me/api.sock" >"$W/$KIND-gw$me/rtarget.log" 2>&1 &
    PIDS+=($!)
    wait_port "$port" 10 || { fail "gateway $me did not start" "$(tail -n 3 "$W/$KIND-gw$me/rtarget.log")"; return 1; }
done
APID=${PIDS[-2]} BPID=${PIDS[-1]}

T0=$SECONDS
FWD="3260:$PA 3261:$PB" "$TOOLS/guest/run-guest.sh" "$GUEST_CACHE" "$PAYLOAD" >"$W/$KIND-console.log" 2>&1 &
GPID=$!
acks() { tr -d '\r' <"$W/$KIND-console.log" | grep -c '^ACK '; }
killed= resumed=
while kill -0 "$GPID" 2>/dev/null; do
    n=$(acks)
    if [[ -z $killed ]] && ((n >= KILL_AT)); then
        kill "-$SIG" "$APID"; killed=$(date +%s.%N) at=$n
        log "rbd failover: SIG$SIG to gateway A after $n acknowledged records"
    # Two records on: the guest writes one at a time, and A may have
    # finished the one in flight just before the signal (its ACK printed
    # after); with SIGSTOP, waking A on that ACK meant B never took over.
    elif [[ -n $killed && -z $resumed ]] && ((n > at + 1)); then
        resumed=$(date +%s.%N)
        # SIGSTOP: wake A once B serves; its late writes must be refused.
        [[ $SIG == STOP ]] && kill -CONT "$APID"
        # The guest checks after its writes that a rescan sees this.
        rbd resize --no-progress --size 80M "$IMAGE" >"$W/$KIND-resize.log" 2>&1 &
    fi
    sleep 0.05
done
wait "$GPID"; grc=$?; GPID=
tr -d '\r' <"$W/$KIND-console.log" | grep -E '^(PATHS|WRITE-FAILED|[0-9]+ [0-9]+ multipath)' >&2
if [[ $grc -eq 0 ]] && tr -d '\r' <"$W/$KIND-console.log" | grep -q '^WRITER-DONE'; then
    pass "$KIND: the guest wrote $RECORDS records through dm-multipath in $((SECONDS - T0)) s"
else
    fail "$KIND: guest writer (run-guest rc=$grc)" "$(tr -d '\r' <"$W/$KIND-console.log" | tail -n 5 | tr '\n' ' ')"
fi
if [[ -n $killed && -n $resumed ]]; then
    ft=$(awk -v a="$killed" -v b="$resumed" 'BEGIN{printf "%.1f", b-a}')
    echo "failover time ($KIND A to the next acknowledged record): $ft s"
    # The guest's 5 s replacement timeout (+ 5 s noop-out for a stopped A)
    # plus B's takeover; librbd's own lock handoff waits out the dead
    # owner's watch (30 s).
    if awk -v t="$ft" -v m="$FAILOVER_MAX" 'BEGIN{exit !(t < m)}'; then
        pass "$KIND: I/O resumed through B after $ft s (< $FAILOVER_MAX s)"
    else fail "$KIND: I/O resumed through B within $FAILOVER_MAX s" "$ft s"; fi
else
    fail "$KIND: I/O resumed through B" "killed=${killed:-no} resumed=${resumed:-no}"
fi
# The registrations (one per path) and the reservation made before the
# failover, read through B after it.
prk=$(tr -d '\r' <"$W/$KIND-console.log" | grep '^PRK ' | tr -s ' ' | tr '\n' ' ')
prr=$(tr -d '\r' <"$W/$KIND-console.log" | grep '^PRR ' | tr -s ' ' | tr '\n' ' ')
if [[ $prk == *"2 registered reservation keys"*"$PRKEY"*"$PRKEY"* &&
    $prr == *"Key=$PRKEY"*"registrants only"* ]]; then
    pass "$KIND: the PR registrations and reservation made before the failover hold after it"
else fail "$KIND: the PR registrations and reservation hold after the failover" "$prk / $prr"; fi
# 64 MiB -> 80 MiB in 512-byte sectors.
rs=$(tr -d '\r' <"$W/$KIND-console.log" | sed -n 's/^RESIZE \([0-9]* [0-9]*\).*/\1/p')
if [[ $rs == "131072 163840" ]]; then
    pass "$KIND: \`rbd resize\` on the host is seen by the guest after a rescan, no relogin"
else fail "$KIND: \`rbd resize\` seen by the guest after a rescan" "sectors before/after: ${rs:-none}; $(tail -n 2 "$W/$KIND-resize.log" | tr '\n' ' ')"; fi
if out=$(check_export 2>&1); then pass "$KIND: rbd export holds every acknowledged record ($out)"
else fail "$KIND: rbd export holds every acknowledged record" "$out"; fi
if [[ $SIG == STOP ]]; then
    # A, woken, was blocklisted while stopped: a late write through it is
    # refused (02/04/0A) and it no longer claims active/optimized.
    if out=$(python3 "$HERE/rbd_gateways.py" --late-write "$PA" 2>&1) &&
        grep -q "fenced" "$W/$KIND-gw1/rtarget.log"; then
        pass "$KIND: A, woken, is fenced: $out"
    else fail "$KIND: A, woken, is fenced" "$out"; fi
fi
for p in "$APID" "$BPID"; do kill -CONT "$p" 2>/dev/null; kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
PIDS=()
}

variant kill-9 KILL
variant sigstop STOP
