#!/bin/bash
# scripts/reliability.sh — the reliability campaign (RELIABILITY.md holds its figures).
# Needs root (loop device, tmpfs mount), python3, qemu-img, losetup and the release
# daemon (cargo build --release -p rtarget).
#
# usage: scripts/reliability.sh [--quick] [--work DIR]
#   --quick  the CI size (a few minutes): 10 kills per backend, 64 sessions x 50
#            verified rounds under chaos, 1,000 sessions, 3 fault rounds
#   (none)   the full run: 100 kills per backend, 64 sessions x 1,000 rounds, 1,000
#            sessions, 20 fault rounds
# Parts (each prints its figure line; see the scripts' headers):
#   crash    tests-e2e/crash.py BACKEND KILLS: kill -9 under FUA/SYNC-logged writers,
#            every write acknowledged durable reads back (fileio, block on a loop
#            device, qcow2 + qemu-img check); the ramdisk negative control must FAIL
#            (it keeps nothing), which shows the check can
#   chaos    tests-e2e/chaos.py chaos: 64 verified sessions while connections are
#            opened, half-closed, reset, slow-dripped and fed garbage
#   sessions tests-e2e/chaos.py sessions 1000: RSS, login latency p50/p99
#   faults   tests-e2e/faults.py: ENOSPC on a thin LU (07/27/07), EIO from an NBD
#            server (MEDIUM ERROR), a bystander LU serving, no restart
# The power-loss tests (qcow2 metadata, saveconfig, APTPL) are cargo tests:
# crates/backstore/tests/powerloss.rs, crates/rtarget/tests/save_powercut.rs,
# crates/target-core/tests/aptpl_powercut.rs (scripts/test.sh's unit step runs them).
# Exit status 1 if any part failed; a summary lists each part's figure line.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"

QUICK='' WORK=${RTARGET_TEST_WORK:-$REPO/target/test-work}/reliability
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --work) WORK=$2; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "reliability.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
need python3 qemu-img losetup mount
if [[ $(id -u) -ne 0 ]]; then
    if in_ci; then echo "FAIL reliability.sh: needs root (loop device, tmpfs)"; exit 1; fi
    echo "SKIP reliability.sh: needs root (loop device, tmpfs)"; exit 0
fi
[[ -x $RTARGET_BIN ]] || { echo "reliability.sh: no $RTARGET_BIN (cargo build --release -p rtarget)"; exit 1; }
export RTARGET_BIN
if [[ -n $QUICK ]]; then KILLS=10 ROUNDS=50 FAULTS=3; else KILLS=100 ROUNDS=1000 FAULTS=20; fi
mkdir -p "$WORK"
E2E=$REPO/tests-e2e FAILS=0 SUMMARY=()

# part NAME CMD...: run, keep its last line (the figure), count a failure.
part() {
    local name=$1 t0=$SECONDS out rc; shift
    echo "==== $name: $*"
    out=$("$@" 2>&1); rc=$?
    printf '%s\n' "$out"
    SUMMARY+=("$(printf '%-5s %-16s %4ss  %s' "$([[ $rc == 0 ]] && echo ok || echo FAIL)" "$name" \
        $((SECONDS - t0)) "$(grep -E '^(crash|chaos|sessions|faults)[: ]' <<<"$out" | tail -1)")")
    ((rc == 0)) || FAILS=$((FAILS + 1))
}

for b in fileio block qcow2; do
    part "crash-$b" python3 "$E2E/crash.py" "$b" "$KILLS" "$WORK/crash-$b"
done
# The negative control: a ramdisk forgets everything, so the same check must fail.
echo "==== crash-control: python3 $E2E/crash.py ramdisk 1 (must report lost blocks)"
if python3 "$E2E/crash.py" ramdisk 1 "$WORK/crash-ramdisk" >"$WORK/crash-control.log" 2>&1; then
    echo "FAIL: the ramdisk control lost nothing: the crash check cannot fail"
    SUMMARY+=("FAIL  crash-control     the check did not see a ramdisk lose its data")
    FAILS=$((FAILS + 1))
else
    grep -E '^crash ' "$WORK/crash-control.log"
    SUMMARY+=("ok    crash-control     must lose, did: $(grep -E '^crash ramdisk: kills' "$WORK/crash-control.log")")
fi
part chaos python3 "$E2E/chaos.py" chaos 64 "$ROUNDS" "$WORK/chaos"
part sessions python3 "$E2E/chaos.py" sessions 1000 "$WORK/sessions"
part faults python3 "$E2E/faults.py" "$FAULTS" "$WORK/faults"

echo
echo "==== reliability summary ($([[ -n $QUICK ]] && echo quick || echo full), ${SECONDS}s)"
printf '  %s\n' "${SUMMARY[@]}"
((FAILS == 0)) || { echo "reliability.sh: $FAILS part(s) FAILED"; exit 1; }
echo "reliability.sh: all parts passed"
