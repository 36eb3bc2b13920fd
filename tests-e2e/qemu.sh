#!/bin/bash
# tests-e2e/qemu.sh — user:qemu end to end: images made by qemu-img in vmdk,
# vhdx, vdi and qcow2 (known patterns written with qemu-io) served by rtarget
# through supervised qemu-storage-daemon children, checked with QEMU's iSCSI
# initiator:
#   each LUN reads back byte-exact (qemu-img convert to raw + cmp against the
#   source image converted before the start); the saveconfig holds plugin
#   "user" with config "qemu/FORMAT/PATH"; a LUN created through the CLI
#   (/backstores/user:qemu create NAME 0 CFGSTRING) is saved; writes through
#   iSCSI land in the images (qemu-img check clean, qemu-io reads the
#   pattern from the file); a qemu-storage-daemon killed (SIGKILL) while reads
#   run is restarted, the reads complete and the LUN is still byte-exact;
#   deleting an object ends its child; SIGTERM to rtarget leaves no
#   qemu-storage-daemon behind, restart from the
#   saved config serves the written data, and SIGKILL to rtarget takes its
#   children with it (PR_SET_PDEATHSIG).
# Prints "PASS name" / "FAIL name (why)" per check and ends with "N passed, N failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

need qemu-img qemu-io qemu-storage-daemon pgrep   # lib.sh: SKIP locally, FAIL under CI=true
W=$(mktemp -d "${RTARGET_TEST_WORK:-${TMPDIR:-/tmp}}/e2e-qemu.XXXXXX")
NPASS=0 NFAIL=0 PID=
pass() { NPASS=$((NPASS + 1)); echo "PASS $1"; }
fail() { NFAIL=$((NFAIL + 1)); echo "FAIL $1${2:+ ($2)}"; }
check() {
    local name=$1; shift
    if "$@" >"$W/out.txt" 2>&1; then pass "$name"
    else fail "$name" "$(tail -n 3 "$W/out.txt" | tr '\n' ' ' | cut -c1-300)"; fi
}
# children: the qemu-storage-daemon pids whose parent is $1.
children() { pgrep -P "$1" -f qemu-storage-daemon 2>/dev/null | sort; }
stop() {
    local pid=$PID i
    [[ -n $pid ]] || return 0
    PID=
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}
finish() {
    local rc=$? p
    stop
    # A panic in a connection or pool thread leaves the daemon serving: every
    # run's log must be free of them.
    if p=$(panics_in "${STATE:-$W/state}"/rtarget.log*); then
        fail "no panic in the daemon logs" "$(tr '\n' ' ' <<<"$p" | cut -c1-300)"; rc=1
    else pass "no panic in the daemon logs"; fi
    if ((NFAIL == 0)); then rm -rf "$W"; else log "qemu e2e: kept $W"; fi
    echo "$NPASS passed, $NFAIL failed"
    exit "$rc"
}
trap finish EXIT

STATE=$W/state CFG=$W/state/saveconfig.json SOCK=$W/api.sock
mkdir -p "$STATE"
start() {
    # Earlier runs' logs are kept whole (the panic check at the end reads them).
    if [[ -f $STATE/rtarget.log ]]; then cat "$STATE/rtarget.log" >>"$STATE/rtarget.log.old"; fi
    : >"$STATE/rtarget.log"
    "$RTARGET_BIN" serve --listen "127.0.0.1:$PORT" --config "$CFG" --state-dir "$STATE" \
        --socket "$SOCK" >>"$STATE/rtarget.log" 2>&1 &
    PID=$!
    local i
    for ((i = 0; i < 300; i++)); do
        grep -q "rtarget: listening on" "$STATE/rtarget.log" && return 0
        kill -0 "$PID" 2>/dev/null || { tail -20 "$STATE/rtarget.log" >&2; PID=; return 1; }
        sleep 0.1
    done
    return 1
}

FORMATS=(vmdk vhdx vdi qcow2)
for f in "${FORMATS[@]}"; do
    img=$W/disk.$f
    qemu-img create -q -f "$f" "$img" 64M &&
        qemu-io -f "$f" -c "write -P 0xa5 0 3M" -c "write -P 0x3c 17M 64k" \
            -c "write -P 0x81 63M 1M" "$img" >/dev/null &&
        qemu-img convert -f "$f" -O raw "$img" "$W/src.$f.raw" ||
        { fail "make $f image"; exit 1; }
done
pass "qemu-img made vmdk, vhdx, vdi and qcow2 images with known content"

PORT=$(free_port) IQN=iqn.2026-11.org.rtarget:qemu
specs=()
for f in "${FORMATS[@]}"; do specs+=("qemu:$f:$W/disk.$f:"); done
mkconfig "$CFG" "$PORT" "$IQN" "${specs[@]}"
if start; then pass "start with four user:qemu LUNs"; else fail "start"; exit 1; fi
mapfile -t KIDS < <(children "$PID")
check "one qemu-storage-daemon child per LUN" test "${#KIDS[@]}" -eq 4
check "private 0700 socket directories under the state dir" bash -c '
    n=0; for d in "$1"/qemu/rtarget-qemu-*; do
        [[ $(stat -c %a "$d") == 700 && $(stat -c %a "$d/nbd.sock") == 600 ]] || exit 1; n=$((n+1))
    done; ((n == 4))' _ "$STATE"

url() { echo "iscsi://127.0.0.1:$PORT/$IQN/$1"; }
readback() {  # LUN FORMAT
    rm -f "$W/back.raw"
    timeout 120 qemu-img convert -f raw -O raw "$(url "$1")" "$W/back.raw" && cmp "$W/back.raw" "$W/src.$2.raw"
}
for i in "${!FORMATS[@]}"; do
    check "${FORMATS[$i]} LUN reads back byte-exact over iSCSI" readback "$i" "${FORMATS[$i]}"
done

check "saveconfig holds user objects with config qemu/FORMAT/PATH" python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
got = sorted(s["config"] for s in c["storage_objects"] if s["plugin"] == "user")
assert got == sorted(f"qemu/{f}/{sys.argv[2]}/disk.{f}" for f in sys.argv[3:]), got' \
    "$CFG" "$W" "${FORMATS[@]}"

# Kill the vmdk child while reads run; they wait for the restart and go on.
old=$(children "$PID")
victim=$(pgrep -P "$PID" -f "disk.vmdk" | head -1)
timeout 120 qemu-img bench -f raw -c 40000 -d 2 -s 4k -S 8k "$(url 0)" >"$W/bench.txt" 2>&1 &
BENCH=$!
sleep 0.5
kill -0 "$BENCH" 2>/dev/null && running=1 || running=0
kill -KILL "$victim"
if wait "$BENCH" && ((running)); then
    pass "reads in flight survive SIGKILL of their qemu-storage-daemon"
else
    fail "reads in flight survive SIGKILL of their qemu-storage-daemon" "running=$running $(tail -2 "$W/bench.txt")"
fi
check "vmdk LUN byte-exact after the restart" readback 0 vmdk
new=$(children "$PID")
check "killed child was replaced" bash -c '[[ $(wc -l <<<"$2") == 4 && $1 != "$2" ]] && ! kill -0 "$3" 2>/dev/null' \
    _ "$old" "$new" "$victim"
check "restart logged" grep -q "QEMU image server died; restarting" "$STATE/rtarget.log"

# CLI: create one more from the shell's command, size 0 = the image's.
qemu-img create -q -f vmdk "$W/cli.vmdk" 8M
cli() { "$RTARGET_BIN" --socket "$SOCK" "$@"; }
check "CLI: /backstores/user:qemu create NAME 0 CFGSTRING" \
    cli /backstores/user:qemu create cli0 0 "vmdk/$W/cli.vmdk"
check "CLI: ls shows it with the image's size" bash -c \
    '"$1" --socket "$2" ls /backstores/user:qemu | grep -q "cli0.*vmdk/.*(8.0MiB)"' _ "$RTARGET_BIN" "$SOCK"
check "CLI: LUN from it" cli "/iscsi/$IQN/tpg1/luns" create /backstores/user:qemu/cli0
check "CLI: saveconfig" cli saveconfig
# delete ends the object's child
qemu-img create -q -f vdi "$W/tmp.vdi" 4M
cli /backstores/user:qemu create tmp1 0 "vdi/$W/tmp.vdi" >/dev/null
tmpkid=$(pgrep -P "$PID" -f "tmp.vdi")
check "CLI: delete stops its qemu-storage-daemon" bash -c '
    [[ -n $3 ]] && "$1" --socket "$2" /backstores/user:qemu delete tmp1 || exit 1
    for ((i = 0; i < 50; i++)); do kill -0 "$3" 2>/dev/null || exit 0; sleep 0.1; done; exit 1' \
    _ "$RTARGET_BIN" "$SOCK" "$tmpkid"

# Writes through iSCSI (checked in the files after the daemon stops).
for i in "${!FORMATS[@]}"; do
    check "${FORMATS[$i]}: qemu-io writes over iSCSI" timeout 60 qemu-io -f raw \
        -c "write -P 0x$((i + 1))e 5M 1M" -c "write -z 40M 64k" -c "aio_flush" "$(url "$i")"
done

# SIGTERM: the daemon exits cleanly and takes every child with it.
kids=$(children "$PID")
stop
check "SIGTERM leaves no qemu-storage-daemon behind" bash -c 'for p in $1; do kill -0 "$p" 2>/dev/null && exit 1; done; exit 0' _ "$kids"
for f in "${FORMATS[@]}" ; do
    check "$f: qemu-img check clean after writes" qemu-img check -q -f "$f" "$W/disk.$f"
done
for i in "${!FORMATS[@]}"; do
    f=${FORMATS[$i]}
    check "$f: iSCSI writes are in the image" qemu-io -f "$f" -c "read -P 0x$((i + 1))e 5M 1M" \
        -c "read -P 0 40M 64k" -c "read -P 0x81 63M 1M" "$W/disk.$f"
done

# Restart from the saved config (five objects now), then SIGKILL rtarget.
if start; then pass "restart from the saved config"; else fail "restart"; exit 1; fi
check "restored LUNs serve the written data" timeout 60 qemu-io -f raw \
    -c "read -P 0x1e 5M 1M" "$(url 0)"
check "CLI-created LUN restored" timeout 60 qemu-io -f raw -c "read -P 0 0 64k" "$(url 4)"
kids=$(children "$PID")
check "five children after restart" test "$(wc -w <<<"$kids")" -eq 5
kill -KILL "$PID"; wait "$PID" 2>/dev/null; PID=
gone() {  # PIDS: all exited within 5 s
    local i p
    for ((i = 0; i < 50; i++)); do
        ((i)) && sleep 0.1
        for p in $1; do kill -0 "$p" 2>/dev/null && continue 2; done
        return 0
    done
    return 1
}
check "SIGKILL of rtarget takes its children (PDEATHSIG)" gone "$kids"
((NFAIL == 0))
