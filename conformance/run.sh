#!/bin/bash
# conformance/run.sh — libiscsi's conformance suite (iscsi-test-cu, 230 tests in
# family ALL) against a freshly started rtarget (or tgt, for comparison), scored
# per test with shared/tools/cuscore.py.
#
# usage: conformance/run.sh [--check] [--target rtarget|tgt] [--matrix CFG[,CFG...]]
#                           [--suites ERE] [--timeout SEC] [--budget SEC] [--no-write]
#   --check     the ratchet (exit 1 on any of these, each printed as REGRESSION):
#               the results are compared whole with the committed ones (git HEAD,
#               else the file on disk): a test whose state got worse (PASS -> SKIP
#               or FAIL, SKIP -> FAIL) or that is missing from the new results;
#               for rtarget also any FAIL (fail=0 in every configuration), a PASS
#               count under the configuration's line in conformance/floor.txt (or
#               no line, or no committed results), and a daemon panic in the log.
#               A configuration with a regression does not overwrite its results.
#   --target    rtarget (default; target/release/rtarget) or tgt (tgtd, reference)
#   --matrix    LU configurations (see cfg_* below; default fileio)
#   --suites    only suites whose name matches this extended regex (no results written)
#   --timeout   per-suite wall-clock limit in seconds (default 120); a suite that hangs
#               is killed, its unfinished tests count as FAIL, the target is restarted
#   --budget    whole-run limit in seconds (default 900); suites not started by then FAIL
#   --no-write  do not update conformance/results*.txt
# Results: conformance/results.txt (rtarget, fileio), results-CFG.txt (other rtarget
# configurations), results-tgt[-CFG].txt (tgt).  conformance/floor.txt: the least
# number of PASS per rtarget configuration; a full run (no --suites, no --no-write)
# without regressions raises a configuration's line to its PASS count, never lowers
# it: lowering takes a hand edit of floor.txt, which review sees.  One "PASS|SKIP|FAIL Suite.Test" line
# per test, sorted, then a "tests=N pass=N skip=N fail=N" totals line.
# Logs: target/test-work/conformance/<target>-<cfg>/ (RTARGET_TEST_WORK overrides).
#
# Each suite runs as its own `iscsi-test-cu -d -V -t ALL.<Suite>` so that one hang or
# crash costs one suite, not the run.  -V (SCSI-level logging) is needed because many
# tests report a skip or a soft failure only as a verbose "[SKIPPED]"/"[FAILED]" line
# while CUnit still says "passed"; cuscore.py counts those.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"

CHECK='' TARGET=rtarget MATRIX=fileio SUITES='' TIMEOUT=120 BUDGET=900 WRITE=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --check) CHECK=1 ;;
        --target) TARGET=$2; shift ;;
        --matrix) MATRIX=$2; shift ;;
        --suites) SUITES=$2; WRITE=; shift ;;
        --timeout) TIMEOUT=$2; shift ;;
        --budget) BUDGET=$2; shift ;;
        --no-write) WRITE= ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[[ $TARGET == rtarget || $TARGET == tgt ]] || { echo "run.sh: --target rtarget|tgt" >&2; exit 2; }
need iscsi-test-cu python3 git
if [[ $TARGET == tgt ]]; then need tgtd tgtadm; fi
for cfg in ${MATRIX//,/ }; do
    case $cfg in qemu) need qemu-img qemu-storage-daemon ;; nbd) need qemu-nbd setpriv ;; esac
done
CUSCORE=$TOOLS/cuscore.py
[[ -f $CUSCORE ]] || { echo "run.sh: $CUSCORE not found (RTARGET_TOOLS=DIR overrides)" >&2; exit 2; }
WORKROOT=${RTARGET_TEST_WORK:-$REPO/target/test-work}/conformance
IQN=iqn.2026-11.org.rtarget:conformance

# --- the matrix ----------------------------------------------------------------
# One function per LU configuration.  Each sets, for the work dir $W:
#   RT_LUNS   mkconfig LUNSPECs for rtarget (the first one, LUN 0, is tested)
#   TGT_FILE TGT_BS   tgt backing file and --bstype (tested as LUN 1)
#   CU_FLAGS  extra iscsi-test-cu flags;  MULTIPATH=1 passes the URL twice (2 sessions)
#   CFG_SUITES  only the suites matching this ERE make sense here (empty: all)
#   CFG_TEST    optional: run and score only this one test (Suite.Test) of those suites
#   CFG_TIMEOUT optional: per-suite limit for this configuration (default --timeout)
#   CFG_TPG_ATTRS optional: JSON object of TPG attributes merged into rtarget's config
#   CFG_TPG_PARAMS optional: JSON object of TPG parameters merged into rtarget's config
# To add one: write cfg_NAME, run `conformance/run.sh --matrix NAME` to record
# results-NAME.txt, commit it, and add NAME to the --matrix list in scripts/test.sh.
#   CFG_EXCLUDE  tests (Suite.Test, space separated) that do not apply to this LU and
#               run where they do; they are neither run nor scored here:
# Sanitize.Reset checks, 3 s after starting a SANITIZE OVERWRITE, that it is still
# running, and again after resets and a relogin: it applies only to an LU that takes
# longer than ~5 s to overwrite (cfg_sanitizereset); the fast LUs here finish first.
SLOW_SANITIZE_ONLY='Sanitize.Reset'
# GetLBAStatus.UnmapSingle expects the answer for LBA i+1 to start at i+LBPPB, which
# is SBC-4 only when a physical block is one logical block (cfg_thin4k); 512-byte
# fileio LUs truthfully report 4 KiB physical blocks (conformance/README.md).
ONE_BLOCK_PER_PHYSICAL_ONLY='GetLBAStatus.UnmapSingle'
# The ProutReserve.Access* tests check that a reservation lets a WRITE through with
# libiscsi's verify_write_works, which sends WRITE(10) of one block with 512 bytes of
# data whatever the block size: on a 4 KiB LU that is a short Data-Out, refused with
# ILLEGAL REQUEST (0E/03) as LIO refuses it. They run on the 512-byte LUs.
BLOCK_512_ONLY='ProutReserve.AccessEA ProutReserve.AccessEAAR ProutReserve.AccessEARO ProutReserve.AccessWE ProutReserve.AccessWEAR ProutReserve.AccessWERO'
# shellcheck disable=SC2317  # called through "cfg_$cfg"
cfg_fileio() {      # 1023 MiB sparse file, write-back (under 2^21 blocks: READ(6) can reach the end)
    RT_LUNS=("fileio:disk0:$W/disk0.img:1023M"); TGT_FILE=$W/disk0.img TGT_BS=rdwr
    CU_FLAGS=(-d); MULTIPATH='' TGT_THIN='' TGT_RO='' CFG_SUITES=''
}
cfg_ramdisk() {     # 1023 MiB in RAM (tgt: rdwr on a file in /dev/shm)
    cfg_fileio; RT_LUNS=("ramdisk:ram0::1023M"); TGT_FILE=/dev/shm/rtarget-conf-$$.img
}
cfg_thin() {        # fileio, thin provisioned (UNMAP, WRITE SAME with UNMAP, LBPME)
    cfg_fileio; RT_LUNS=("fileio:disk0:$W/disk0.img:1023M:emulate_tpu=1,emulate_tpws=1")
    TGT_THIN=1; CFG_EXCLUDE=$ONE_BLOCK_PER_PHYSICAL_ONLY
}
cfg_readonly() {    # thin fileio, write protected: the ReadOnly suite and the read side
    cfg_fileio; TGT_RO=1 TGT_THIN=1
    RT_LUNS=("fileio:disk0:$W/disk0.img:1023M:readonly=1,emulate_tpu=1,emulate_tpws=1")
    CFG_SUITES='^(ReadOnly|Inquiry|ModeSense6|Read(6|10|12|16)|ReadCapacity(10|16)|Verify(10|12|16)|TestUnitReady|GetLBAStatus|ReportSupportedOpcodes)$'
}
cfg_multipath() {   # fileio on tmpfs (its large writes land in the file's pages: reservations
                    # and resets from the suite's second session on the same LUN meet them)
    cfg_fileio; MULTIPATH=1 TGT_FILE=/dev/shm/rtarget-conf-$$-mp.img
    RT_LUNS=("fileio:disk0:$TGT_FILE:1023M")
}
cfg_sanitize() {    # fileio with the SANITIZE tests allowed
    cfg_fileio; CU_FLAGS=(-d -S); CFG_EXCLUDE=$SLOW_SANITIZE_ONLY
}
cfg_thinsanitize() { # thin fileio with SANITIZE allowed: BLOCK ERASE needs thin provisioning
    cfg_thin; CU_FLAGS=(-d -S); CFG_SUITES='^Sanitize$'; CFG_EXCLUDE=$SLOW_SANITIZE_ONLY
}
cfg_thin4k() {      # thin fileio with 4 KiB logical blocks: GetLBAStatus.UnmapSingle assumes
    # one logical block per physical block, which 512-byte LUs (4 KiB physical) are not
    cfg_thin; RT_LUNS=("fileio:disk0:$W/disk0.img:1023M:emulate_tpu=1,emulate_tpws=1,block_size=4096")
    CFG_SUITES='^GetLBAStatus$' CFG_EXCLUDE=''   # UnmapSingle applies here
}
cfg_fileio4k() {    # fileio with 4 KiB logical blocks (261,888 blocks): the whole suite, so
    # every block-size assumption in the core (transfer lengths, limits, READ CAPACITY,
    # WRITE SAME, COMPARE AND WRITE, UNMAP granularity) is checked with 4 KiB too
    cfg_fileio; RT_LUNS=("fileio:disk0:$W/disk0.img:1023M:block_size=4096")
    CFG_EXCLUDE=$BLOCK_512_ONLY
}
cfg_pool() {        # fileio whose commands run on the I/O worker pool (io_engine=pool)
    cfg_fileio; RT_LUNS=("fileio:disk0:$W/disk0.img:1023M:io_engine=pool")
}
cfg_uring() {       # fileio whose READ/WRITE go through io_uring (io_engine=uring)
    cfg_fileio; RT_LUNS=("fileio:disk0:$W/disk0.img:1023M:io_engine=uring")
}
cfg_sanitizereset() { # Sanitize.Reset only: a SANITIZE that outlasts TMFs, resets and a
    # relogin (>5 s) — 128 MiB at rtarget's QoS limit of 8 MiB/s takes 16 s
    # The test then sleeps 60 s without reading its socket: no NOP-In ping (it would
    # time out, close the session, and the relogin would meet a power-on UA).
    cfg_fileio; CU_FLAGS=(-d -S); CFG_SUITES='^Sanitize$' CFG_TEST=Sanitize.Reset CFG_TIMEOUT=200
    CFG_TPG_ATTRS='{"nopin_timeout": 0}'
    RT_LUNS=("fileio:disk0:$W/disk0.img:128M:qos_rw_mbytes_per_sec=8")
}
cfg_mcs() {         # fileio on a TPG allowing 2 connections per session (MaxConnections=2,
    # MC/S): libiscsi logs in one connection; the session core, the shared CmdSN
    # window and the logout paths run as for any session. (rtarget only.)
    cfg_fileio; CFG_TPG_PARAMS='{"MaxConnections": "2"}'
}
cfg_removable() {   # fileio with a removable medium (eject/load, PREVENT ALLOW)
    cfg_fileio; RT_LUNS=("fileio:disk0:$W/disk0.img:1023M:removable=1")
    CFG_SUITES='^(PreventAllow|StartStopUnit|NoMedia|TestUnitReady|Inquiry|Mandatory)$'
}
cfg_crypt() {       # thin fileio encrypted at rest (encryption=1): SANITIZE CRYPTO ERASE
    # (and BLOCK ERASE, which needs thin provisioning) plus the suites that move data
    # through the AES-XTS wrapper
    cfg_thin; CU_FLAGS=(-d -S)
    RT_LUNS=("fileio:disk0:$W/disk0.img:1023M:emulate_tpu=1,emulate_tpws=1,encryption=1")
    CFG_SUITES='^(Sanitize|Read(10|16)|Write(10|16)|WriteSame(10|16)|WriteVerify16|Verify16|OrWrite|CompareAndWrite|Unmap|ExtendedCopy)$'
    CFG_EXCLUDE=$SLOW_SANITIZE_ONLY
}
cfg_qcow2() {       # native qcow2 (user:qcow), 1023 MiB, created by rtarget
    cfg_fileio; RT_LUNS=("qcow:disk0:$W/disk0.qcow2:1023M")
}
cfg_qemu() {        # user:qemu: a 1023 MiB vmdk served through a supervised
    # qemu-storage-daemon (made here with qemu-img)
    cfg_fileio
    qemu-img create -q -f vmdk "$W/disk0.vmdk" 1023M
    RT_LUNS=("qemu:disk0:$W/disk0.vmdk:")
}
cfg_nbd() {         # user:nbd to a qemu-nbd on a unix socket (raw 1023 MiB file),
    # started here and stopped after the run (PR_SET_PDEATHSIG via setpriv as well)
    cfg_fileio
    truncate -s 1023M "$W/nbd.img"
    setpriv --pdeathsig TERM qemu-nbd -f raw -t -e 8 --cache=writeback --aio=threads \
        --discard=unmap -x disk0 -k "$W/nbd.sock" "$W/nbd.img" >"$W/qemu-nbd.log" 2>&1 &
    NBD_PID=$!
    CFG_STOP=stop_nbd
    local i; for ((i = 0; i < 100; i++)); do [[ -S $W/nbd.sock ]] && break; sleep 0.05; done
    RT_LUNS=("nbd:disk0:$W/nbd.sock::export=disk0")
}
stop_nbd() {
    [[ -n ${NBD_PID:-} ]] || return 0
    kill -TERM "$NBD_PID" 2>/dev/null; wait "$NBD_PID" 2>/dev/null || true; NBD_PID=
}
cfg_block() {       # block plugin on a raw 1023 MiB file opened O_DIRECT (o_direct=1)
    cfg_fileio; truncate -s 1023M "$W/disk0.raw"
    RT_LUNS=("block:disk0:$W/disk0.raw::o_direct=1")
}

# --- target lifecycle ----------------------------------------------------------
start_target() {    # uses W PORT; sets URL; returns non-zero if the target is not serving
    if [[ $TARGET == rtarget ]]; then
        URL=iscsi://127.0.0.1:$PORT/$IQN/0
        [[ -f $W/saveconfig.json ]] || mkconfig "$W/saveconfig.json" "$PORT" "$IQN" "${RT_LUNS[@]}" || return 1
        if [[ -n ${CFG_TPG_ATTRS:-}${CFG_TPG_PARAMS:-} ]]; then
            python3 -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p))
for t in c["targets"]:
    for g in t["tpgs"]:
        g["attributes"].update(json.loads(sys.argv[2] or "{}"))
        g.setdefault("parameters", {}).update(json.loads(sys.argv[3] or "{}"))
json.dump(c, open(p, "w"), indent=2)' "$W/saveconfig.json" "${CFG_TPG_ATTRS:-}" "${CFG_TPG_PARAMS:-}" || return 1
        fi
        start_rtarget "$W" "$PORT"
    else
        URL=iscsi://127.0.0.1:$PORT/$IQN/1
        start_tgt "$W" "$PORT" || return 1
        local upd=(tgtadm -C "$TGT_CTL" --lld iscsi --op update --mode logicalunit --tid 1 --lun 1)
        [[ -f $TGT_FILE ]] || truncate -s 1023M "$TGT_FILE" || return 1
        tgt_target 1 "$IQN" && tgt_lun 1 1 "$TGT_FILE" "$TGT_BS" || return 1
        if [[ -n ${TGT_THIN:-} ]]; then "${upd[@]}" --params thin_provisioning=1 || return 1; fi
        if [[ -n ${TGT_RO:-} ]]; then "${upd[@]}" --params readonly=1 || return 1; fi
    fi
}
stop_target() {
    if [[ $TARGET == rtarget ]]; then stop_rtarget 5 || true; else stop_tgt; fi
}
# restart_target: (re)start, noting a failure instead of aborting the run.
restart_target() {
    stop_target
    start_target || { echo "target failed to start (see $W/*.log)" >>"$W/events.txt"; return 1; }
}
target_alive() {
    local pid; if [[ $TARGET == rtarget ]]; then pid=${RT_PID:-}; else pid=${TGT_PID:-}; fi
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}
trap 'stop_target; rm -f /dev/shm/rtarget-conf-$$*.img' EXIT

# Keep only what belongs to each test before cuscore.py scores the log.  CUnit prints
# a test's verdict ("passed"/"FAILED") and THEN the test teardown runs and logs: with
# -V its "Send PRIN/READ_KEYS" lands on the verdict's line (hiding the verdict from
# cuscore), and on a target without PERSISTENT RESERVE the teardown logs "[SKIPPED]
# PERSISTENT RESERVE IN is not implemented." which cuscore would pin on the test that
# just passed.  So: cut the verdict line after the verdict, and drop everything from
# a verdict (or "Run Summary") up to the next "Test:"/"Suite:" line.
# One exception: iSCSIdatasn.iSCSIDataSnInvalid sends bad DataSNs through libiscsi's
# write10() helper with "expect GOOD", so the helper logs "[FAILED] WRITE10 command
# failed" for each rejection the test wants; the test itself asserts that every
# write failed (CU_ASSERT_NOT_EQUAL(ret, 0)), so CUnit's verdict is the right one there.
normalize_log() {
    awk '
        /^Suite: / { suite = $2 }
        /^Suite: |^  Test: / { after = 0 }
        /^Run Summary/ { after = 1 }    # also the next log'"'"'s suite set-up, up to "Suite:"
        after { next }
        /^(passed|FAILED)([[:space:]]|$)/ { print $1; after = 1; next }
        /^  Test: [^ ]+ \.\.\.(passed|FAILED)/ {     # a test that printed nothing
            match($0, /\.\.\.(passed|FAILED)/); print substr($0, 1, RSTART + RLENGTH - 1)
            after = 1; next
        }
        /^  Test: / { test = $2 }
        suite == "iSCSIdatasn" && test == "iSCSIDataSnInvalid" &&
            /^    \[FAILED\] WRITE10 command failed with status/ { next }
        # PreventAllow.{LUN,Warm,Cold}Reset loop `while (testunitready() != 0)`
        # after the reset: each UNIT ATTENTION they clear there on purpose is
        # logged as [FAILED]. Only those lines, only inside that loop, go.
        /^    Wait until all unit attentions clear/ { ua_wait = (suite == "PreventAllow") }
        ua_wait && /^    \[FAILED\] TESTUNITREADY command failed .*UNIT_ATTENTION/ { next }
        ua_wait && !/^    Send TESTUNITREADY \(Expecting SUCCESS\)|^    Wait until all unit attentions clear/ { ua_wait = 0 }
        { print }
        /^  Test: .*(passed|FAILED)[[:space:]]*$/ { after = 1 }
    '
}

# results file for (target, configuration)
results_file() {
    local f=results
    [[ $TARGET == tgt ]] && f+=-tgt
    [[ $1 == fileio ]] || f+=-$1
    echo "$HERE/$f.txt"
}

# baseline_of FILE: the committed version (git HEAD), else the file on disk.
baseline_of() {
    local rel=${1#"$REPO"/}
    git -C "$REPO" show "HEAD:$rel" 2>/dev/null || cat "$1" 2>/dev/null || true
}

ALL_SUITES=$(iscsi-test-cu -l | awk -F. 'NF == 2 && $1 == "ALL" {print $2}')
ALL_TESTS=$(iscsi-test-cu -l | awk -F. 'NF == 3 && $1 == "ALL" {print $2 "." $3}')

# suite_spec SUITE: the -t argument for SUITE without the tests in CFG_EXCLUDE (the
# whole suite when none is excluded; empty when all are).
suite_spec() {
    local t excluded='' list=()
    for t in $ALL_TESTS; do
        [[ ${t%%.*} == "$1" ]] || continue
        if [[ " $CFG_EXCLUDE " == *" $t "* ]]; then excluded=1; continue; fi
        list+=("ALL.$t")
    done
    if [[ -z $excluded ]]; then echo "ALL.$1"; else (IFS=,; echo "${list[*]}"); fi
}

# run_config CFG: run every selected suite; prints the path of the scored list.
run_config() {
    local cfg=$1 suite t0 rc deadline status
    W=$WORKROOT/$TARGET-$cfg; rm -rf "$W"; mkdir -p "$W/logs"
    CFG_TEST='' CFG_STOP='' CFG_TIMEOUT='' CFG_TPG_ATTRS='' CFG_TPG_PARAMS='' CFG_EXCLUDE=''
    "cfg_$cfg"
    PORT=$(free_port)
    : >"$W/events.txt"
    restart_target || true
    deadline=$((SECONDS + BUDGET))
    for suite in $ALL_SUITES; do
        [[ -z $SUITES || $suite =~ $SUITES ]] || continue
        [[ -z $CFG_SUITES || $suite =~ $CFG_SUITES ]] || continue
        if ((SECONDS >= deadline)); then
            echo "budget of ${BUDGET}s exhausted before suite $suite" >>"$W/events.txt"; continue
        fi
        if ! target_alive; then
            echo "target not running before suite $suite: restarting" >>"$W/events.txt"
            restart_target || { printf '  %-28s  target down, not run\n' "$suite" >&2; continue; }
        fi
        t0=$SECONDS rc=0
        local urls=("$URL"); [[ -n $MULTIPATH ]] && urls+=("$URL")
        local spec="ALL.${CFG_TEST:-$suite}"
        if [[ -z $CFG_TEST && -n $CFG_EXCLUDE ]]; then spec=$(suite_spec "$suite"); fi
        [[ -n $spec ]] || continue
        timeout -k 5 "${CFG_TIMEOUT:-$TIMEOUT}" iscsi-test-cu "${CU_FLAGS[@]}" -V -t "$spec" "${urls[@]}" \
            >"$W/logs/$suite.log" 2>&1 || rc=$?
        status="rc=$rc"
        if ((rc == 124 || rc == 137)); then
            status="TIMEOUT after ${CFG_TIMEOUT:-$TIMEOUT}s ($(grep -o 'Test: [^ ]*' "$W/logs/$suite.log" | tail -n1 || true))"
            echo "suite $suite: $status; restarting the target" >>"$W/events.txt"
            restart_target || true
        elif ! target_alive; then
            status="target DIED during suite"
            echo "suite $suite: target died (rc=$rc)" >>"$W/events.txt"
        fi
        printf '  %-28s %4ss  %s\n' "$suite" $((SECONDS - t0)) "$status" >&2
    done
    stop_target
    if [[ -n $CFG_STOP ]]; then "$CFG_STOP"; fi   # helpers a cfg_ function started
    { cat "$W"/logs/*.log 2>/dev/null || true; } | normalize_log >"$W/full.log"
    # Score; tests that never reported (budget, hang, filtered out) count as FAIL.
    python3 "$CUSCORE" "$W/full.log" --list | grep -E '^(PASS|SKIP|FAIL) ' >"$W/scored.txt" || true
    local t
    for t in $ALL_TESTS; do
        [[ -z $SUITES || ${t%%.*} =~ $SUITES ]] || continue
        [[ -z $CFG_SUITES || ${t%%.*} =~ $CFG_SUITES ]] || continue
        [[ -z $CFG_TEST || $t == "$CFG_TEST" ]] || continue
        [[ " $CFG_EXCLUDE " != *" $t "* ]] || continue
        grep -q " $t\$" "$W/scored.txt" || echo "FAIL $t" >>"$W/scored.txt"
    done
    {
        LC_ALL=C sort -k2 "$W/scored.txt"
        awk '{n++; c[$1]++} END {printf "tests=%d pass=%d skip=%d fail=%d\n", n, c["PASS"], c["SKIP"], c["FAIL"]}' \
            "$W/scored.txt"
    } >"$W/results.txt"
}

FLOOR=$HERE/floor.txt
# floor_of CFG: the committed floor (git HEAD, else the file on disk) for CFG; empty
# when it has none.  The committed one, so a floor lowered on disk is still enforced.
floor_of() {
    baseline_of "$FLOOR" | awk -v c="$1" '$1 == c {print $2; exit}'
}
# raise_floor CFG PASS: set CFG's line in floor.txt to PASS if that is higher (or new).
# (Under a lock: conformance/lanes.sh runs two of these side by side.)
raise_floor() {
    exec 9>"${TMPDIR:-/tmp}/rtarget-conformance-floor.lock"
    flock 9
    local cur; cur=$(awk -v c="$1" '$1 == c {print $2; exit}' "$FLOOR" 2>/dev/null)
    if [[ -z $cur || $2 -gt $cur ]]; then
        if [[ -n $cur ]]; then
            sed -i "s/^$1 $cur\$/$1 $2/" "$FLOOR"
            echo "   floor.txt: $1 raised $cur -> $2 (commit it)" >&2
        else
            echo "$1 $2" >>"$FLOOR"
            echo "   floor.txt: $1 recorded at $2 (commit it)" >&2
        fi
    fi
    exec 9>&-
}
# compare BASE_FILE NEW_FILE: print one REGRESSION line per test that got worse
# (PASS > SKIP > FAIL) or is missing from NEW, BETTER per test that got better, and
# NEW per test only in NEW.
compare() {
    awk '
        function rank(s) { return s == "PASS" ? 2 : s == "SKIP" ? 1 : 0 }
        FNR == 1 { f++ }
        !/^(PASS|SKIP|FAIL) / { next }
        f == 1 { old[$2] = $1; next }
        { new[$2] = $1 }
        END {
            for (t in old) {
                if (!(t in new)) print "REGRESSION " t ": " old[t] " -> missing from the results"
                else if (rank(new[t]) < rank(old[t])) print "REGRESSION " t ": " old[t] " -> " new[t]
                else if (rank(new[t]) > rank(old[t])) print "BETTER " t ": " old[t] " -> " new[t]
            }
            for (t in new) if (!(t in old)) print "NEW " t ": " new[t]
        }' "$1" "$2" | LC_ALL=C sort
}

REGRESSED=0
for cfg in ${MATRIX//,/ }; do
    declare -F "cfg_$cfg" >/dev/null || { echo "run.sh: unknown configuration $cfg" >&2; exit 2; }
    T0=$SECONDS
    echo "== conformance: $TARGET, $cfg (per-suite timeout ${TIMEOUT}s)" >&2
    run_config "$cfg"
    RES=$W/results.txt OUTF=$(results_file "$cfg")
    if [[ -s $W/events.txt ]]; then sed 's/^/  ! /' "$W/events.txt" >&2; fi
    echo "== $TARGET/$cfg: $(tail -n1 "$RES") in $((SECONDS - T0))s (logs: $W)" >&2
    PASSN=$(grep -c '^PASS ' "$RES" || true) FAILN=$(grep -c '^FAIL ' "$RES" || true)
    BAD=()   # this configuration's regressions
    # A panic in a connection or pool thread leaves the daemon serving: the log tells.
    if [[ $TARGET == rtarget ]] && PANICS=$(panics_in "$W"/rtarget.log*); then
        BAD+=("REGRESSION the daemon panicked (see $W/rtarget.log*):")
        while IFS= read -r l; do BAD+=("     $l"); done <<<"$PANICS"
    fi
    if [[ -n $CHECK ]]; then
        BASE=$(baseline_of "$OUTF")
        if [[ -n $SUITES ]]; then   # a subset: compare only the suites that ran
            BASE=$(awk -v re="$SUITES" '/^(PASS|SKIP|FAIL) / {split($2, a, "."); if (a[1] ~ re) print}' <<<"$BASE")
        fi
        if [[ -z $BASE ]]; then
            BAD+=("REGRESSION no committed results $(basename "$OUTF") to compare with (run without --check, commit it)")
        else
            echo "   baseline: $(awk '/^(PASS|SKIP|FAIL) / {n++; c[$1]++}
                END {printf "tests=%d pass=%d skip=%d fail=%d", n, c["PASS"], c["SKIP"], c["FAIL"]}' <<<"$BASE")" >&2
            CMP=$(compare <(printf '%s\n' "$BASE") "$RES")
            echo "   better: $(grep -c '^BETTER ' <<<"$CMP" || true)" >&2
            grep -E '^(NEW|BETTER) ' <<<"$CMP" | sed 's/^/   /' >&2 || true
            while IFS= read -r l; do [[ -n $l ]] && BAD+=("$l"); done < <(grep '^REGRESSION ' <<<"$CMP" || true)
        fi
        if [[ $TARGET == rtarget ]]; then
            ((FAILN == 0)) || BAD+=("REGRESSION fail=$FAILN: every configuration must have fail=0")
            if [[ -z $SUITES ]]; then
                FL=$(floor_of "$cfg")
                if [[ -z $FL ]]; then
                    BAD+=("REGRESSION no line for $cfg in conformance/floor.txt (a run without --check records one: commit it)")
                elif ((PASSN < FL)); then
                    BAD+=("REGRESSION pass=$PASSN is under the floor $FL (conformance/floor.txt; lowering it is a hand edit)")
                else
                    echo "   floor: pass=$PASSN >= $FL" >&2
                fi
            fi
        fi
    fi
    if ((${#BAD[@]})); then
        printf '   %s\n' "${BAD[@]}" >&2
        REGRESSED=1
    elif [[ -n $CHECK ]]; then
        echo "   no regressions" >&2
    fi
    if [[ -n $WRITE ]]; then
        if ((${#BAD[@]})) && [[ -n $CHECK ]]; then
            echo "   not writing ${OUTF#"$REPO"/} (regressions; this run's list: $RES)" >&2
        else
            cp "$RES" "$OUTF"; echo "   wrote ${OUTF#"$REPO"/}" >&2
            if [[ $TARGET == rtarget ]] && ((${#BAD[@]} == 0)); then raise_floor "$cfg" "$PASSN"; fi
        fi
    fi
done
exit $REGRESSED
