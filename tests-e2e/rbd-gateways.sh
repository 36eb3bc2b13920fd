#!/bin/bash
# tests-e2e/rbd-gateways.sh — one RBD image served by two rtarget gateways, with
# persistent reservations (and SPC-2 RESERVE/RELEASE) shared through the image's
# RADOS object, on a throw-away single-node Ceph (../shared/tools/ceph/ceph-up.sh):
#   gateway A serves the image as TPG 1 on one port, gateway B as TPG 2 on another:
#   same target IQN, same storage object WWN (so the same LU designators);
#   initiator 1 registers and reserves (Write Exclusive, APTPL=0) through A; a WRITE
#   from initiator 2 through B gets RESERVATION CONFLICT, READ KEYS / READ
#   RESERVATION through B show the key; B restarts and still enforces it; the
#   release through A lets B's WRITE through; an SPC-2 RESERVE(6) through A blocks
#   B likewise and the holder's logout releases it;
#   then libiscsi's iscsi-test-cu with the two URLs (its second initiator's session
#   goes to B): SUITES (an ERE, default the reservation suites and MultipathIO, whose
#   LU reset through one path must raise 29/00 on the other; "ALL": every suite)
#   must have no FAIL.
# Prints "PASS name" / "FAIL name (why)" per check and ends with "N passed, N failed".
# MON_PORT / MON_PORT_V1 pick the monitor's ports (free ones by default).
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

need rbd ceph-mon ceph-osd python3 iscsi-test-cu
if ! grep -q 'librbd\.so\.1 ' <<<"$(ldconfig -p)"; then need librbd.so.1; fi
[[ -f $TOOLS/ceph/ceph-up.sh ]] || need "$TOOLS/ceph/ceph-up.sh"
SUITES=${SUITES:-'^(ProutRegister|ProutReserve|ProutClear|ProutPreempt|PrinReadKeys|PrinServiceactionRange|PrinReportCapabilities|Reserve6|MultipathIO)$'}
W=$(mktemp -d "${RTARGET_TEST_WORK:-${TMPDIR:-/tmp}}/e2e-rbdgw.XXXXXX")
NPASS=0 NFAIL=0 CEPH=$W/ceph A_PID='' B_PID='' HOLDER=''
pass() { NPASS=$((NPASS + 1)); echo "PASS $1"; }
fail() { NFAIL=$((NFAIL + 1)); echo "FAIL $1${2:+ ($2)}"; }
check() {
    local name=$1; shift
    if "$@" >"$W/out.txt" 2>&1; then pass "$name"
    else fail "$name" "$(tail -n 3 "$W/out.txt" | tr '\n' ' ' | cut -c1-300)"; fi
}
stop_a() { RT_PID=$A_PID; A_PID=''; stop_rtarget 10; }
stop_b() { RT_PID=$B_PID; B_PID=''; stop_rtarget 10; }
finish() {
    local rc=$? p
    [[ -z $HOLDER ]] || kill "$HOLDER" 2>/dev/null
    set +u
    stop_a >/dev/null 2>&1; stop_b >/dev/null 2>&1
    bash "$TOOLS/ceph/ceph-down.sh" "$CEPH" --purge >/dev/null 2>&1
    if p=$(panics_in "$W"/[ab]/rtarget.log*); then
        fail "no panic in the daemon logs" "$(tr '\n' ' ' <<<"$p" | cut -c1-300)"; rc=1
    else pass "no panic in the daemon logs"; fi
    if ((NFAIL == 0)); then rm -rf "$W"; else log "rbd gateways e2e: kept $W"; fi
    echo "$NPASS passed, $NFAIL failed"
    ((NFAIL == 0)) || rc=1
    exit "$rc"
}
trap finish EXIT

t0=$SECONDS
if ceph_up "$CEPH" "$W/ceph-up.log"; then
    pass "single-node Ceph up in $((SECONDS - t0)) s"
else
    fail "ceph-up.sh" "$(tail -n 3 "$W/ceph-up.log" | tr '\n' ' ')"; exit 1
fi
CONF=$CEPH/ceph.conf
export CEPH_CONF=$CONF
# No exclusive-lock feature: both gateways write without handing a lock over
# (active/active; rbd_gateways_pr.py, run by rbd.sh, checks the reservations
# with lock-driven gateways, where libiscsi's alternating initiators would
# meet the no-ping-pong rule: docs/rbd-gateways.md, "Which mode").
check "rbd create rbd/gw (1023 MiB)" rbd create rbd/gw --size 1023M --image-feature layering

IQN=iqn.2026-11.org.rtarget:rbdgw WWN=$(python3 -c 'import uuid; print(uuid.uuid4())')
PA=$(free_port) PB=$(free_port)
while [[ $PB == "$PA" ]]; do PB=$(free_port); done
# gwconfig DIR PORT TAG: gateway config: the image as LUN 0 of TPG TAG.
gwconfig() {
    mkdir -p "$1"
    python3 - "$1/saveconfig.json" "$2" "$3" "$IQN" "$WWN" "$CONF" <<'EOF'
import json, sys
out, port, tag, iqn, wwn, conf = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
so = {"plugin": "user", "name": "gw", "config": f"rbd/rbd/gw;conf={conf};osd_op_timeout=20",
      "size": 1023 << 20, "wwn": wwn, "attributes": {}}
tpg = {"tag": tag, "enable": True,
       "attributes": {"generate_node_acls": 1, "authentication": 0,
                      "demo_mode_write_protect": 0, "cache_dynamic_acls": 1},
       "parameters": {}, "luns": [{"index": 0, "storage_object": "/backstores/user/gw"}],
       "portals": [{"ip_address": "127.0.0.1", "port": port}], "node_acls": []}
cfg = {"fabric_modules": [], "storage_objects": [so],
       "targets": [{"fabric": "iscsi", "wwn": iqn, "tpgs": [tpg]}]}
json.dump(cfg, open(out, "w"), indent=2)
EOF
}
gwconfig "$W/a" "$PA" 1
gwconfig "$W/b" "$PB" 2
start_a() { start_rtarget "$W/a" "$PA" && A_PID=$RT_PID; }
start_b() { start_rtarget "$W/b" "$PB" && B_PID=$RT_PID; }
start_a || { fail "start gateway A"; exit 1; }
start_b || { fail "start gateway B"; exit 1; }
pass "gateways A (TPG 1, port $PA) and B (TPG 2, port $PB) serve rbd/gw"

pr() { timeout 60 python3 "$HERE/rbd_pr.py" "$1" 127.0.0.1 "$2" "$IQN" 0 "$3"; }
KEY=0x5241444f53
check "initiator 1 registers and reserves (WE) through A" pr reserve "$PA" "$KEY"
check "initiator 2 through B: key listed, holder shown, WRITE -> RESERVATION CONFLICT" \
    pr conflict "$PB" "$KEY"
stop_b >/dev/null 2>&1
: >"$W/b/rtarget.log.tmp"; cat "$W/b/rtarget.log" >>"$W/b/rtarget.log.old"; : >"$W/b/rtarget.log"
rm -f "$W/b/rtarget.log.tmp"
start_b || { fail "restart gateway B"; exit 1; }
check "gateway B restarted: WRITE from initiator 2 still RESERVATION CONFLICT" pr conflict "$PB" "$KEY"
check "initiator 1 unregisters through A" pr release "$PA" "$KEY"
check "initiator 2's WRITE through B is GOOD again" pr writes "$PB" 0

# SPC-2: the holder's session stays open (a coprocess) until we close its stdin.
coproc HOLD { timeout 120 python3 "$HERE/rbd_pr.py" spc2 127.0.0.1 "$PA" "$IQN" 0 0 2>&1; }
HOLDER=$HOLD_PID
if read -r -t 30 line <&"${HOLD[0]}" && [[ $line == reserved ]]; then
    pass "initiator 1 RESERVE(6)s through A"
    check "SPC-2: initiator 2's WRITE through B -> RESERVATION CONFLICT" pr conflict "$PB" 0
    exec {HOLD[1]}>&-
    wait "$HOLDER" 2>/dev/null; HOLDER=''
    check "SPC-2: the holder's logout at A releases it at B" pr writes "$PB" 0
else
    fail "initiator 1 RESERVE(6)s through A" "$line"
fi

# libiscsi with both paths: its second initiator (PersistentReserve, Reserve6 ...)
# logs in through B.
URLS=("iscsi://127.0.0.1:$PA/$IQN/0" "iscsi://127.0.0.1:$PB/$IQN/0")
mkdir -p "$W/cu"
for suite in $(iscsi-test-cu -l | awk -F. 'NF == 2 && $1 == "ALL" {print $2}'); do
    [[ $SUITES == ALL || $suite =~ $SUITES ]] || continue
    timeout -k 5 600 iscsi-test-cu -d -V -t "ALL.$suite" "${URLS[@]}" >"$W/cu/$suite.log" 2>&1
done
# Scored as conformance/run.sh scores (its normalize_log: what a suite's clean-up
# logs after the last verdict, e.g. a PRIN meeting a reset's UA, is no test's).
# shellcheck source=/dev/null
source <(sed -n '/^normalize_log() {/,/^}/p' "$REPO/conformance/run.sh")
cat "$W"/cu/*.log | normalize_log | python3 "$TOOLS/cuscore.py" /dev/stdin --list | grep -E '^(PASS|SKIP|FAIL) ' \
    >"$W/cu.txt" || true
read -r np ns nf < <(awk '{c[$1]++} END {print c["PASS"]+0, c["SKIP"]+0, c["FAIL"]+0}' "$W/cu.txt")
if ((nf == 0 && np > 0)); then
    pass "iscsi-test-cu over A and B: $np passed, $ns skipped, no FAIL"
else
    fail "iscsi-test-cu over A and B: $np passed, $ns skipped, $nf failed" \
        "$(grep '^FAIL' "$W/cu.txt" | head -5 | tr '\n' ' ')"
fi
