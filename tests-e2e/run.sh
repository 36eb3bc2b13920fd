#!/bin/bash
# tests-e2e/run.sh [--target rtarget|tgt] — end-to-end checks of the release
# daemon with real initiators (libiscsi's tools, QEMU's iSCSI block driver) on a
# free 127.0.0.1 port, with a temp state dir and config:
#   start with no config (demo target, config saved), iscsi-ls, INQUIRY standard
#   and VPD pages, READ CAPACITY(16), a 256 MiB random image written with
#   qemu-img and read back byte-exact, qemu-io pattern checks, APTPL reservations
#   kept across the restart (aptpl.py), restart from the
#   saved config with the data intact, reads past the end answered by the target
#   with 05/21/00 (eol.py), malformed-PDU probes (malformed.py: each gets its
#   stated answer, every case runs) with the daemon still serving afterwards,
#   SIGTERM -> exit 0 within 5 s, and no panic: the daemon's count (API ping)
#   is 0 and no log of either run says "panicked".
# --target tgt runs the same initiator checks against tgtd (LUN 1) to validate the
# suite itself; the rtarget-only checks are then skipped (malformed.py's stated
# answers are rtarget's: tgt may answer some probes otherwise).
# A missing tool skips the run locally and fails it under CI=true (lib.sh need).
# Prints "PASS name" / "FAIL name (why)" per check and ends with "N passed, N failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

TARGET=rtarget
case ${1:-} in
    --target) TARGET=${2:?--target rtarget|tgt}; shift 2 ;;
    -h|--help) sed -n '2,/^set -uo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--target rtarget|tgt]" >&2; exit 2 ;;
esac
[[ $TARGET == rtarget || $TARGET == tgt ]] || { echo "--target rtarget|tgt" >&2; exit 2; }
need iscsi-ls iscsi-inq iscsi-readcapacity16 qemu-img qemu-io python3 cmp
if [[ $TARGET == tgt ]]; then need tgtd tgtadm; fi
W=$(mktemp -d "${RTARGET_TEST_WORK:-${TMPDIR:-/tmp}}/e2e.XXXXXX" 2>/dev/null || mktemp -d)
NPASS=0 NFAIL=0 FAILED=()
pass() { NPASS=$((NPASS + 1)); echo "PASS $1"; }
fail() { NFAIL=$((NFAIL + 1)); FAILED+=("$1"); echo "FAIL $1${2:+ ($2)}"; }
# check NAME CMD...: PASS if CMD succeeds; on failure show its output's tail.
check() {
    local name=$1; shift
    if "$@" >"$W/out.txt" 2>&1; then pass "$name"
    else fail "$name" "$(tail -n 3 "$W/out.txt" | tr '\n' ' ' | cut -c1-300)"; fi
}
PANICS_CHECKED=''
finish() {
    local rc=$?
    stop_rtarget 5 >/dev/null 2>&1; stop_tgt
    # A run cut short (exit 1 above) still looks for panics: one may be why.
    if [[ $TARGET == rtarget && -z $PANICS_CHECKED ]] && P=$(panics_in "$W"/state/rtarget.log*); then
        fail "no panic in the daemon logs" "$(tr '\n' ' ' <<<"$P" | cut -c1-300)"; rc=1
    fi
    if ((NFAIL == 0)); then rm -rf "$W"; else log "e2e: kept $W (daemon log: $W/state/rtarget.log)"; fi
    echo "$NPASS passed, $NFAIL failed"
    exit "$rc"
}
trap finish EXIT

PORT=$(free_port)
STATE=$W/state CFG=$W/state/saveconfig.json
if [[ $TARGET == rtarget ]]; then
    IQN=$DEMO_IQN LUN=0
    if start_rtarget "$STATE" "$PORT" "$CFG"; then
        pass "start (demo target, no config)"
    else
        fail "start" "$(tail -n 3 "$STATE/rtarget.log" 2>/dev/null | tr '\n' ' ')"; exit 1
    fi
    PID=$RT_PID
    check "saveconfig written" python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
t = [t for t in c["targets"] if t["wwn"] == sys.argv[2]]
assert t, "demo target missing"
assert any(l["index"] == 0 for l in t[0]["tpgs"][0]["luns"]), "LUN 0 missing"
assert any(s["plugin"] == "fileio" for s in c["storage_objects"]), "no fileio object"' "$CFG" "$IQN"
else
    IQN=iqn.2026-11.org.rtarget:e2e-tgt LUN=1
    if ! { start_tgt "$STATE" "$PORT" && tgt_target 1 "$IQN" &&
           truncate -s 1G "$STATE/lun1.img" && tgt_lun 1 1 "$STATE/lun1.img"; }; then
        fail "start tgt"; exit 1
    fi
    pass "start tgt"; PID=$TGT_PID
fi
URL=iscsi://127.0.0.1:$PORT/$IQN/$LUN

# --- discovery and identification ------------------------------------------------
ls_ok() {
    local out; out=$(timeout 30 iscsi-ls -s "iscsi://127.0.0.1:$PORT") || return 1
    echo "$out"
    grep -q "^Target:$IQN " <<<"$out" && grep -Eq "^Lun:$LUN +Type:DIRECT_ACCESS" <<<"$out"
}
check "iscsi-ls -s lists target and LUN $LUN" ls_ok

inq_std() {
    local out; out=$(timeout 30 iscsi-inq "$URL") || return 1
    echo "$out"
    grep -q '^Peripheral Device Type:DIRECT_ACCESS' <<<"$out" &&
        grep -q '^Vendor:' <<<"$out" && grep -q '^Product:' <<<"$out" &&
        grep -Eq '^Version:[5-7] ' <<<"$out"          # SPC-3 or later
}
check "iscsi-inq standard INQUIRY" inq_std
if ! timeout 30 iscsi-inq "$URL" >/dev/null 2>&1; then
    fail "target not answering INQUIRY: remaining checks not run"; exit 1
fi

vpd_pages() {   # page 0x00 must list 0x80, 0x83, 0xb0; every listed page must be well formed
    local out p; out=$(timeout 30 iscsi-inq -e 1 -c 0 "$URL") || return 1
    echo "$out"
    for p in 0x80 0x83 0xb0; do grep -q "^Page:$p " <<<"$out" || { echo "page $p not listed"; return 1; }; done
    # iscsi-inq only decodes the pages libiscsi knows: check each listed page raw.
    timeout 60 python3 "$HERE/vpd.py" 127.0.0.1 "$PORT" "$IQN" "$LUN"
}
check "VPD pages (0x00 lists 0x80 0x83 0xb0; every listed page well formed)" vpd_pages

vpd_83() {
    local out; out=$(timeout 30 iscsi-inq -e 1 -c 131 "$URL") || return 1
    echo "$out"
    grep -q 'Association:(0) LOGICAL_UNIT' <<<"$out" &&
        grep -Eq 'Designator Type:\((3|2|1|8)\)' <<<"$out"
}
check "iscsi-inq VPD 0x83 has a logical-unit designator" vpd_83

vpd_80() {
    local out; out=$(timeout 30 iscsi-inq -e 1 -c 128 "$URL") || return 1
    echo "$out"; grep -Eq '^Unit Serial Number:\[ *[^] ]+' <<<"$out"
}
check "iscsi-inq VPD 0x80 unit serial number" vpd_80

vpd_bad() {   # an unsupported page must fail with ILLEGAL REQUEST / INVALID FIELD IN CDB
    local out; out=$(timeout 30 iscsi-inq -e 1 -c 200 "$URL" 2>&1) && { echo "page 0xc8 accepted"; return 1; }
    echo "$out"; grep -q 'ILLEGAL_REQUEST' <<<"$out" && grep -q 'INVALID_FIELD_IN_CDB' <<<"$out"
}
check "iscsi-inq unsupported VPD page -> ILLEGAL REQUEST" vpd_bad

SIZE=0
readcap() {
    local out; out=$(timeout 30 iscsi-readcapacity16 "$URL") || return 1
    echo "$out"
    SIZE=$(sed -n 's/^Total size:\([0-9]*\)$/\1/p' <<<"$out")
    grep -q '^LOGICAL BLOCK LENGTH IN BYTES:512$' <<<"$out" && ((SIZE >= 256 << 20))
}
if readcap >"$W/out.txt" 2>&1; then pass "iscsi-readcapacity16 (512-byte blocks, $((SIZE >> 20)) MiB)"
else fail "iscsi-readcapacity16" "$(tail -n 4 "$W/out.txt" | tr '\n' ' ')"; fi
if [[ $TARGET == rtarget ]]; then
    check "READ CAPACITY size is the demo's 1 GiB" test "$SIZE" -eq $((1 << 30))
fi

# --- data: 256 MiB through QEMU's iSCSI driver -------------------------------------
head -c $((256 << 20)) /dev/urandom >"$W/rand.bin"
T0=$SECONDS
check "qemu-img convert write 256 MiB" \
    timeout 120 qemu-img convert -n -f raw -O raw "$W/rand.bin" "$URL"
WT=$((SECONDS - T0)) T0=$SECONDS
readback() {
    rm -f "$W/back.bin"
    timeout 120 qemu-img convert -f raw -O raw "$URL" "$W/back.bin" || return 1
    cmp -n $((256 << 20)) "$W/rand.bin" "$W/back.bin"
}
check "qemu-img convert read back, cmp byte-exact" readback
echo "     (write ${WT}s, read $((SECONDS - T0))s)"

qio() { timeout 60 qemu-io -f raw "$@" "$URL"; }
qio_ok() {   # qemu-io prints errors but may still exit 0: also scan its output
    local out; out=$(qio "$@" 2>&1); local rc=$?
    echo "$out"; ((rc == 0)) && ! grep -Eqi 'error|fail|mismatch' <<<"$out"
}
check "qemu-io write/read pattern 0xab 1M at 0" \
    qio_ok -c 'write -P 0xab 0 1M' -c 'read -P 0xab 0 1M'
check "qemu-io unaligned-size pattern 0x5a 3M+4k at 7M+512" \
    qio_ok -c 'write -P 0x5a 7340544 3149824' -c 'read -P 0x5a 7340544 3149824'
check "qemu-io 4 KiB writes at the last blocks of the LUN" \
    qio_ok -c "write -P 0xcd $((SIZE - 4096)) 4k" -c "read -P 0xcd $((SIZE - 4096)) 4k"
check "qemu-io aio_write batch then readv" \
    qio_ok -c 'aio_write -P 0x11 64M 64k' -c 'aio_write -P 0x22 65M 64k' -c 'aio_flush' \
           -c 'read -P 0x11 64M 64k' -c 'read -P 0x22 65M 64k'
check "qemu-io zero write (write -z) reads back zeros" \
    qio_ok -c 'write -P 0x77 80M 1M' -c 'write -z 80M 1M' -c 'read -P 0 80M 1M'
# QEMU refuses a read past the image's end itself (nothing is sent): eol.py sends
# READ(16)/READ(10) past the end to the target and wants 05/21/00 back.
check "reads past the end: the target answers LBA OUT OF RANGE (05/21/00)" \
    timeout 60 python3 "$HERE/eol.py" 127.0.0.1 "$PORT" "$IQN" "$LUN"
check "qemu-io flush" qio_ok -c 'write -P 0x33 90M 64k' -c 'flush'

# --- restart from the saved config (rtarget only) ---------------------------------
if [[ $TARGET == rtarget ]]; then
    # A persistent reservation made with APTPL=1 must survive the restart below.
    PRKEY=0x5254415247455431
    check "PR REGISTER+RESERVE with APTPL=1" \
        python3 "$HERE/aptpl.py" register 127.0.0.1 "$PORT" "$IQN" "$LUN" $PRKEY
    T0=$SECONDS; rc=0; stop_rtarget 5 || rc=$?
    if ((rc == 0)); then pass "SIGTERM -> exit 0 in $((SECONDS - T0))s (first run)"
    else fail "SIGTERM -> exit 0 (first run)" "exit status $rc after $((SECONDS - T0))s"; fi
    if start_rtarget "$STATE" "$PORT" "$CFG"; then
        pass "restart from saved config"; PID=$RT_PID
        persist() {   # the random image survives where qemu-io did not overwrite it
            local r; rm -f "$W/back.bin"
            timeout 120 qemu-img convert -f raw -O raw "$URL" "$W/back.bin" || return 1
            for r in 1:6 16:48 96:160; do   # [start MiB : length MiB]
                cmp -i $((${r%:*} << 20)) -n $((${r#*:} << 20)) "$W/rand.bin" "$W/back.bin" || return 1
            done
            # and what qemu-io wrote before the restart
            qio_ok -c 'read -P 0xab 0 1M' -c 'read -P 0x11 64M 64k' -c 'read -P 0 80M 1M'
        }
        check "data intact after restart" persist
        check "APTPL registration and reservation restored after restart" \
            python3 "$HERE/aptpl.py" check 127.0.0.1 "$PORT" "$IQN" "$LUN" $PRKEY
        check "PR unregister after restart" \
            python3 "$HERE/aptpl.py" clear 127.0.0.1 "$PORT" "$IQN" "$LUN" $PRKEY
    else
        fail "restart from saved config" "$(tail -n 3 "$RT_LOG" | tr '\n' ' ')"; exit 1
    fi
fi
rm -f "$W/back.bin" "$W/rand.bin"

# --- malformed PDUs: each probe, then a health check from a fresh session ----------
# Every listed case must report, and the script must exit 0 (an error in the
# script itself, or a case that never ran, is a failure).
MAL_CASES=$(python3 "$HERE/malformed.py" --list | wc -l) MAL_RC=0 MAL_SEEN=0
timeout 180 python3 "$HERE/malformed.py" 127.0.0.1 "$PORT" "$IQN" "$LUN" >"$W/malformed.txt" 2>&1 || MAL_RC=$?
while read -r line; do
    case $line in
        PASS\ malformed-*) pass "${line#PASS }"; MAL_SEEN=$((MAL_SEEN + 1)) ;;
        FAIL\ malformed-*) x=${line#FAIL }; y=${x#* (}; fail "${x%% (*}" "${y%)}"; MAL_SEEN=$((MAL_SEEN + 1)) ;;
        FAIL\ *) x=${line#FAIL }; y=${x#* (}; fail "${x%% (*}" "${y%)}" ;;
    esac
done <"$W/malformed.txt"
if ((MAL_RC == 0 && MAL_SEEN == MAL_CASES && MAL_CASES > 0)); then
    pass "malformed.py ran all $MAL_CASES cases, exit 0"
else
    fail "malformed.py ran all its cases" "$MAL_SEEN of $MAL_CASES reported, exit $MAL_RC: $(tail -n 2 "$W/malformed.txt" | tr '\n' ' ' | cut -c1-200)"
fi
alive() { kill -0 "$PID" 2>/dev/null; }
check "target process alive after malformed PDUs" alive
check "iscsi-ls after malformed PDUs" ls_ok
check "iscsi-inq after malformed PDUs" inq_std

# --- shutdown ---------------------------------------------------------------------
if [[ $TARGET == rtarget ]]; then
    # A panic in a connection or pool thread leaves the daemon serving: count them.
    N=$(rt_panics)
    if [[ $N == 0 ]]; then pass "daemon panic count is 0 (API ping)"
    else fail "daemon panic count is 0 (API ping)" "panics: $N"; fi
    T0=$SECONDS; rc=0; stop_rtarget 5 || rc=$?
    if ((rc == 0)); then pass "SIGTERM -> exit 0 in $((SECONDS - T0))s"
    else fail "SIGTERM -> exit 0 within 5 s" "exit status $rc after $((SECONDS - T0))s"; fi
    # Both runs' logs (start_rtarget keeps the first one in rtarget.log.old).
    PANICS_CHECKED=1
    if P=$(panics_in "$STATE"/rtarget.log*); then
        fail "no panic in the daemon logs" "$(tr '\n' ' ' <<<"$P" | cut -c1-300)"
    else pass "no panic in the daemon logs"; fi
fi
((NFAIL == 0))
