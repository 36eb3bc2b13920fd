#!/bin/bash
# bench/bench.sh — rtarget against tgt (Debian's userspace iSCSI target) on equal
# LUNs, in the same run, A/B alternating (the order flips every round and the
# number of rounds is even, so each side goes first equally often), each workload
# ROUNDS times; the table shows medians, the ratio rtarget/tgt and the CPU time
# per I/O of each target process (utime+stime of all its threads from
# /proc/PID/stat over the run, divided by the I/Os completed: steady even when
# the machine is busy).  tgt gets the session parameters rtarget negotiates with
# libiscsi (TGT_PARAMS below: tgt's defaults are 8 KiB segments, InitialR2T=Yes,
# 64 KiB FirstBurstLength), so both run the same PDU exchange.
#
# usage: bench/bench.sh [--rounds N] [--configs ram,disk[,ramdisk][,qcow2]] [--spdk DIR]
#                       [--smoke] [--write-md] [--rtarget-tpg-attrs K=V,...] [--initiator load|legacy]
#                       [--workloads a,b,...] [--cc cubic|reno|bbr|system]
#   --rounds    rounds per workload (default 4; an odd N becomes N+1, with --spdk a
#               multiple of 3, or of 6 with "disk")
#   --workloads only these of the workloads below (default all; e.g. 4k-randread-qd32,4k-read-qd32
#               to look at one row without waiting for the rest); the QD1 latency table runs
#               only when 4k-read-qd1 is among them
#   --cc        the TCP congestion control of the run, for every target and the initiator
#               (default cubic, the kernel's built-in default; "system" keeps the host's):
#               bench/cc.sh says why; the table's header names it
#   --rtarget-tpg-attrs  TPG attributes for rtarget's target (e.g. busy_poll_us=20)
#   --initiator load (default): every tgt/rtarget/SPDK row below is driven by bench/iscsi-load.c
#               (raw iSCSI in C, pipelined, ~0.7 µs CPU per 4 KiB I/O, fixed time); legacy:
#               iscsi-perf and qemu-img bench as in runs before 2026-12-07 (qemu-img's ~9 µs
#               per 4 KiB write capped those rows near 110k IOPS), so old tables stay
#               comparable.  Every target always gets the same initiator in a run.
#   --spdk DIR  (or SPDK_DIR=DIR) also measure SPDK's iSCSI target, built by
#               ../shared/tools/spdk/build-spdk.sh into DIR and started with its
#               run-spdk-iscsi.sh (RTARGET_TOOLS=DIR overrides ../shared/tools): one
#               polling reactor (core 0), no hugepages; "ramdisk" against its malloc
#               bdev, "ram" against its aio bdev on a file in /dev/shm (O_DIRECT on
#               tmpfs: no page cache, like a RAM disk). SPDK runs in the same rounds
#               and rotation as tgt and rtarget (each of the three first equally
#               often) and is stopped (SIGSTOP) while the others run, so its polling
#               reactor does not take a core from them. Its CPU µs/IO includes that
#               polling (a reactor spins at 100% of its core whether or not there is
#               work): reported as measured. SPDK 23.05 negotiates its own limits:
#               MaxRecvDataSegmentLength 64 KiB, InitialR2T=Yes, FirstBurstLength
#               64 KiB (run-spdk-iscsi.sh). Extra columns: SPDK and rtarget/SPDK.
#   configs (1 GiB LUNs, filled with data first so reads never hit holes):
#     ram      tgt --bstype rdwr on a file in /dev/shm  vs  rtarget fileio on /dev/shm
#     disk     both on a file on disk (target/bench-work), page cache warm
#     ramdisk  tgt as in "ram"  vs  rtarget's ramdisk backstore
#     qcow2    a 1 GiB qcow2 image (64 KiB clusters, fully allocated by qemu-io, two
#              identical copies on disk): rtarget user:qcow over iSCSI  vs
#              qemu-storage-daemon's NBD export on a unix socket (cache.direct=off,
#              aio=threads), both driven by qemu-img bench -f raw -t none; workloads
#              4k-randread-qd32 / 4k-randwrite-qd32 (4 KiB requests at a stride of
#              7919 blocks, wrapping: every block once, no two neighbours in a row;
#              qemu-img bench has no random mode) and 64k-read-qd8 / 64k-write-qd8
#              (sequential); its own table, ratio rtarget/q-s-d
#   workloads:
#     4k-randread-qd32  load: iscsi-load load --rand --qd 32 --bs 4096 --time T
#                       legacy: iscsi-perf -r -b 8 -m 32 (libiscsi; random 4 KiB reads, fixed time)
#     4k-read-qd32 / 4k-write-qd32 / 1m-read-qd8 / 1m-write-qd8 / 4k-read-qd1 (sequential)
#                       load: iscsi-load load --qd DEPTH --bs SIZE [--write] --time T
#                       legacy: qemu-img bench -t none -d DEPTH -s SIZE [-w] (COUNT requests)
#   QD1 latency: p50/p99 of single 4 KiB READ(10)s (20000 per round) from two probes,
#               bench/iscsi-load.c lat (raw iSCSI in C: the initiator adds ~nothing) and
#               bench/qd1lat.py (the same in Python, kept for comparison with older
#               runs), on both targets per config, same alternation; its own table
#   --smoke     one round, "ram" and "qcow2" (64 MiB) only, ~10x smaller counts: checks
#               every workload runs
#               (exit 1 if any rtarget run errors); numbers are not meaningful
#   --write-md  append this run's table to BENCHMARKS.md (machine, kernel, date) and
#               write its chart (IOPS and CPU ratios per workload) to
#               bench/charts/DATE-COMMIT.svg, linked from that section
# Needs target/release/rtarget (RTARGET_BIN overrides), tgtd, libiscsi-bin, qemu-utils
# with qemu-block-extra, a C compiler (cc) for bench/iscsi-load.c.  Takes ~5 min with the defaults (3 rounds, ram+disk).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"
# shellcheck source=cc.sh
source "$HERE/cc.sh"

ROUNDS=4 CONFIGS=ram,disk,qcow2 SMOKE='' WRITE_MD='' SCALE=1 RT_TPG_ATTRS='' SPDK_DIR=${SPDK_DIR:-} INITIATOR=load
ONLY_WLS='' CC=cubic
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --configs) CONFIGS=$2; shift ;;
        --spdk) SPDK_DIR=$2; shift ;;
        --smoke) SMOKE=1 ROUNDS=1 CONFIGS=ram,qcow2 SCALE=10 ;;
        --write-md) WRITE_MD=1 ;;
        --rtarget-tpg-attrs) RT_TPG_ATTRS=$2; shift ;;
        --workloads) ONLY_WLS=$2; shift ;;
        --cc) CC=$2; shift ;;
        --initiator) INITIATOR=$2; shift
            [[ $INITIATOR == load || $INITIATOR == legacy ]] || { echo "bench.sh: --initiator load|legacy" >&2; exit 2; } ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

if [[ -n $SPDK_DIR ]]; then
    SPDK_DIR=$(cd "$SPDK_DIR" && pwd)
    [[ -x $SPDK_DIR/spdk/build/bin/iscsi_tgt ]] ||
        { echo "bench.sh: no SPDK build in $SPDK_DIR (../shared/tools/spdk/build-spdk.sh)" >&2; exit 2; }
fi
# Each side goes first in as many rounds as the others (a smoke run only checks
# that all runs): two targets alternate, three rotate.
# (With --spdk only ram and ramdisk have three; any other config makes it 6.)
NT=2
if [[ -n $SPDK_DIR ]]; then
    NT=3; [[ ,$CONFIGS, =~ ,(disk), ]] && NT=6
fi
if ((ROUNDS % NT)) && [[ -z $SMOKE ]]; then
    r0=$ROUNDS; ROUNDS=$(((ROUNDS + NT - 1) / NT * NT)); echo "bench: $r0 rounds -> $ROUNDS (multiple of $NT)" >&2
fi
# order ROUND T...: the targets T in the order of round ROUND (a rotation).
order() {
    local r=$1 i; shift
    local n=$# all=("$@") out=()
    local k=$(((r - 1) % n))
    for ((i = 0; i < n; i++)); do out+=("${all[(i + k) % n]}"); done
    echo "${out[@]}"
}

# lib.sh need: a missing tool skips the run locally and fails it under CI=true.
need tgtd tgtadm iscsi-perf qemu-img qemu-io python3 cc
if [[ ,$CONFIGS, == *,qcow2,* ]]; then need qemu-storage-daemon; fi
W=${RTARGET_TEST_WORK:-$REPO/target/test-work}/bench
SHM=/dev/shm/rtarget-bench-$$
mkdir -p "$W" "$SHM"
cc -O2 -o "$W/iscsi-load" "$HERE/iscsi-load.c"
RAW=$W/raw.txt; : >"$RAW"
GRAW=$W/raw-gen.txt; : >"$GRAW"   # iscsi-load's own CPU µs per I/O
IQN_T=iqn.2026-11.org.rtarget:bench-tgt IQN_R=iqn.2026-11.org.rtarget:bench
QSD_PID=''
stop_qsd() {
    [[ -n $QSD_PID ]] || return 0
    kill -TERM "$QSD_PID" 2>/dev/null; wait "$QSD_PID" 2>/dev/null; QSD_PID=''
}
SPDK_PID=''
stop_spdk() {   # not our child (run-spdk-iscsi.sh starts it): poll for its exit
    [[ -n $SPDK_PID ]] || return 0
    kill -CONT "$SPDK_PID" 2>/dev/null; kill -TERM "$SPDK_PID" 2>/dev/null
    for ((i = 0; i < 150; i++)); do kill -0 "$SPDK_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SPDK_PID" 2>/dev/null; SPDK_PID=''
}
cleanup() { set +e; stop_rtarget 5; stop_tgt; stop_qsd; stop_spdk; rm -rf "$SHM" "$W"/*.img "$W"/*.qcow2; bench_cc_restore; }
trap cleanup EXIT
bench_cc "$CC"

# --- LUNs: the same backing kinds for both targets ---------------------------------
fill() { dd if=/dev/zero of="$1" bs=1M count=1024 status=none conv=fsync; }
declare -A TLUN RLUN SLUN   # config -> LUN number on tgt / rtarget / SPDK
RSPECS=() n=0
for cfg in ${CONFIGS//,/ }; do
    case $cfg in
        ram) fill "$SHM/tgt-ram.img"; fill "$SHM/rt-ram.img"
             [[ -n $SPDK_DIR ]] && { fill "$SHM/spdk-ram.img"; SLUN[ram]=0; }
             RSPECS+=("fileio:ram0:$SHM/rt-ram.img:1G") ;;
        disk) fill "$W/tgt-disk.img"; fill "$W/rt-disk.img"
             RSPECS+=("fileio:disk0:$W/rt-disk.img:1G") ;;
        ramdisk) [[ -f $SHM/tgt-ram.img ]] || fill "$SHM/tgt-ram.img"
             [[ -n $SPDK_DIR ]] && SLUN[ramdisk]=1
             RSPECS+=("ramdisk:rd0::1G") ;;
        qcow2) QSIZE=$((SMOKE ? 64 : 1024))M
             # Two copies made the same way, then dropped from the page cache:
             # the kernel's cost per buffered write depends on how a file's
             # pages got cached (large folios), so both must start equal.
             for img in rt qsd; do
                 rm -f "$W/$img.qcow2"
                 qemu-img create -q -f qcow2 "$W/$img.qcow2" "$QSIZE"
                 qemu-io -f qcow2 -c "write -P 0x5a 0 $QSIZE" "$W/$img.qcow2" >/dev/null
                 python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$W/$img.qcow2"
             done
             RSPECS+=("qcow:qc0:$W/rt.qcow2:") ;;
        *) echo "bench.sh: unknown config $cfg" >&2; exit 2 ;;
    esac
    RLUN[$cfg]=$n TLUN[$cfg]=$((n + 1)); n=$((n + 1))
done

TPORT=$(free_port); start_tgt "$W/tgt" "$TPORT"; tgt_target 1 "$IQN_T"
# What rtarget negotiates with libiscsi (rtarget sessions detail during a run):
# tgt gets the same, so neither side pays for R2Ts or small segments alone.
TGT_PARAMS="MaxRecvDataSegmentLength=262144 MaxXmitDataSegmentLength=262144"
TGT_PARAMS+=" FirstBurstLength=262144 MaxBurstLength=262144 InitialR2T=No ImmediateData=Yes"
TGT_PARAMS+=" MaxOutstandingR2T=1"
for kv in $TGT_PARAMS; do
    tgtadm -C "$TGT_CTL" --lld iscsi --op update --mode target --tid 1 \
        --name "${kv%%=*}" --value "${kv#*=}"
done
for cfg in ${CONFIGS//,/ }; do
    case $cfg in
        ram|ramdisk) tgt_lun 1 "${TLUN[$cfg]}" "$SHM/tgt-ram.img" rdwr ;;
        disk) tgt_lun 1 "${TLUN[$cfg]}" "$W/tgt-disk.img" rdwr ;;
    esac
done
if [[ ,$CONFIGS, == *,qcow2,* ]]; then
    rm -f "$W/qsd.sock"
    # The same cache mode as rtarget's (page cache), threads for I/O.
    setpriv --pdeathsig TERM qemu-storage-daemon \
        --blockdev "{\"driver\":\"file\",\"node-name\":\"f0\",\"filename\":\"$W/qsd.qcow2\",\"aio\":\"threads\",\"cache\":{\"direct\":false}}" \
        --blockdev '{"driver":"qcow2","node-name":"q0","file":"f0"}' \
        --nbd-server "{\"addr\":{\"type\":\"unix\",\"path\":\"$W/qsd.sock\"}}" \
        --export '{"type":"nbd","id":"e0","node-name":"q0","name":"qc","writable":true}' \
        >"$W/qsd.log" 2>&1 &
    QSD_PID=$!
    for ((i = 0; i < 100; i++)); do [[ -S $W/qsd.sock ]] && break; sleep 0.05; done
    [[ -S $W/qsd.sock ]] || { echo "bench: qemu-storage-daemon did not start" >&2; cat "$W/qsd.log" >&2; exit 1; }
fi
RPORT=$(free_port)
while [[ $RPORT == "$TPORT" ]]; do RPORT=$(free_port); done
IQN_S=iqn.2016-06.io.spdk:t0
if [[ -n $SPDK_DIR ]]; then
    # LUN 0: aio bdev on FILE (the "ram" config's file), LUN 1: 1 GiB malloc bdev.
    SPORT=$(free_port)
    while [[ $SPORT == "$TPORT" || $SPORT == "$RPORT" ]]; do SPORT=$(free_port); done
    [[ -f $SHM/spdk-ram.img ]] || truncate -s 64M "$SHM/spdk-ram.img"
    SPDK_PID=$(bash "$TOOLS/spdk/run-spdk-iscsi.sh" "$SPDK_DIR" "$SPORT" "$SHM/spdk-ram.img")
    kill -STOP "$SPDK_PID"   # runs only for its own measurements (see --spdk)
fi
rm -rf "$W/rt"; mkdir -p "$W/rt"
mkconfig "$W/rt/saveconfig.json" "$RPORT" "$IQN_R" "${RSPECS[@]}"
if [[ -n $RT_TPG_ATTRS ]]; then
    set_tpg_attributes "$W/rt/saveconfig.json" "$RT_TPG_ATTRS"
fi
start_rtarget "$W/rt" "$RPORT"
# The ramdisk allocates its memory on first write: write it once through so
# every round reads data (SPDK's malloc bdev is allocated and zeroed at start;
# a read of a never-written chunk is a memset), whichever rows run. One whole
# pass (--fill), not a fixed time: this VM's host gives memory at ~0.5 GB/s on
# first touch, so 8 MiB writes to a fresh ramdisk run at ~40-60 IOPS.
if [[ -n ${RLUN[ramdisk]:-} ]]; then
    "$W/iscsi-load" load 127.0.0.1 "$RPORT" "$IQN_R" "${RLUN[ramdisk]}" --qd 8 --bs 1048576 \
        --write --fill --time 60 >/dev/null
fi
# Smoke: a WRITE above the LU's maximum transfer length (8 MiB, rtarget's
# block limits) is refused with ILLEGAL REQUEST / INVALID FIELD IN CDB, and
# iscsi-load names that sense (its failures say why).
PRE_ERRORS=0   # counted into ERRORS below
if [[ -n $SMOKE && $INITIATOR == load ]]; then
    if "$W/iscsi-load" load 127.0.0.1 "$RPORT" "$IQN_R" 0 --bs 16777216 --qd 2 --write --time 1 \
        >/dev/null 2>"$W/big.txt" || ! grep -q 'sense 5/24/00' "$W/big.txt"; then
        echo "bench: a 16 MiB WRITE was not refused with 5/24/00" >&2; cat "$W/big.txt" >&2; PRE_ERRORS=1
    fi
fi

url() {   # url TARGET CFG
    case $1 in
        tgt) echo "iscsi://127.0.0.1:$TPORT/$IQN_T/${TLUN[$2]}" ;;
        spdk) echo "iscsi://127.0.0.1:$SPORT/$IQN_S/${SLUN[$2]}" ;;
        *) echo "iscsi://127.0.0.1:$RPORT/$IQN_R/${RLUN[$2]}" ;;
    esac
}
targets_of() {   # targets_of ROUND CFG: the targets measured on CFG, in round order
    if [[ -n ${SLUN[$2]:-} ]]; then order "$1" tgt rtarget spdk
    elif (($1 % 2)); then echo tgt rtarget
    else echo rtarget tgt; fi
}
pid_of() { case $1 in tgt) echo "$TGT_PID" ;; spdk) echo "$SPDK_PID" ;; *) echo "$RT_PID" ;; esac; }
# as TARGET CMD...: run CMD with TARGET's process running (SPDK is stopped between
# its own runs: its reactor would spin on a core the others need).
as() {
    local t=$1 rc=0; shift
    [[ $t == spdk ]] && kill -CONT "$SPDK_PID"
    "$@" || rc=$?
    [[ $t == spdk ]] && kill -STOP "$SPDK_PID"
    return "$rc"
}

# --- workloads: name, bytes per I/O, command (URL appended); each prints IOPS ---------
WORKLOADS=(4k-randread-qd32 4k-read-qd32 4k-write-qd32 1m-read-qd8 1m-write-qd8 4k-read-qd1)
if [[ -n $ONLY_WLS ]]; then
    for wl in ${ONLY_WLS//,/ }; do
        [[ " ${WORKLOADS[*]} " == *" $wl "* ]] || { echo "bench.sh: unknown workload $wl" >&2; exit 2; }
    done
    read -ra WORKLOADS <<<"${ONLY_WLS//,/ }"
fi
PERF_SECS=$((SMOKE ? 2 : 5))
qbench() {   # qbench COUNT DEPTH SIZE [-w] URL -> "IOPS COUNT"
    local count=$1 depth=$2 size=$3 out secs; shift 3
    out=$(timeout 300 qemu-img bench -f raw -t none -c "$count" -d "$depth" -s "$size" "$@" 2>&1) ||
        { echo "$out" >&2; return 1; }
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    [[ -n $secs ]] || { echo "$out" >&2; return 1; }
    python3 -c "print(round($count / max($secs, 1e-6)), $count)"
}
lbench() {   # lbench DEPTH SIZE [--write] URL -> "IOPS COUNT" (iscsi-load prints MB/s, own CPU too)
    local depth=$1 size=$2 out a; shift 2
    a=${*: -1}; a=${a#iscsi://127.0.0.1:}   # PORT/IQN/LUN
    out=$(timeout $((PERF_SECS + 60)) "$W/iscsi-load" load 127.0.0.1 "${a%%/*}" "$(cut -d/ -f2 <<<"$a")" \
        "${a##*/}" --qd "$depth" --bs "$size" --time "$PERF_SECS" "${@:1:$#-1}") || return 1
    # The generator's own CPU per I/O, per target (the last field of its output).
    local tgt=rtarget flags=${*:1:$#-1}; [[ $a == *"$IQN_T"* ]] && tgt=tgt
    [[ -n ${IQN_S:-} && $a == *"$IQN_S"* ]] && tgt=spdk
    echo "qd${depth}-${size}${flags:+-${flags//--/}} $tgt ${out##* }" >>"$GRAW"
    awk '{print $1, $2}' <<<"$out"
}
TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, all threads
# measured PID CMD...: runs CMD (which prints "IOPS COUNT"), prints "IOPS CPU_US_PER_IO"
# where CPU is what process PID spent while CMD ran, over the I/Os it completed.
measured() {
    local pid=$1 c0 c1 v; shift
    c0=$(cpu_ticks "$pid")
    v=$("$@") || return 1
    c1=$(cpu_ticks "$pid")
    python3 -c "print(${v% *}, round(($c1 - $c0) * 1e6 / $TCK / max(${v#* }, 1), 2))"
}
run_workload() {   # run_workload NAME URL -> "IOPS COUNT" on stdout
    if [[ $INITIATOR == load ]]; then run_load "$@"; else run_legacy "$@"; fi
}
run_legacy() {
    local u=$2 out
    case $1 in
        4k-randread-qd32)
            out=$(timeout $((PERF_SECS + 30)) iscsi-perf -t "$PERF_SECS" -m 32 -b 8 -r "$u" 2>&1) ||
                { echo "$out" | tr '\r' '\n' | tail -5 >&2; return 1; }
            out=$(tr '\r' '\n' <<<"$out" | sed -n 's/^iops average \([0-9]*\) .*/\1/p' | tail -n1)
            [[ -n $out ]] && echo "$out $((out * PERF_SECS))" ;;
        4k-read-qd32)  qbench $((400000 / SCALE)) 32 4k "$u" ;;
        4k-write-qd32) qbench $((200000 / SCALE)) 32 4k -w "$u" ;;
        1m-read-qd8)   qbench $((4000 / SCALE)) 8 1M "$u" ;;
        1m-write-qd8)  qbench $((2000 / SCALE)) 8 1M -w "$u" ;;
        4k-read-qd1)   qbench $((40000 / SCALE)) 1 4k "$u" ;;
    esac
}
run_load() {
    local u=$2
    case $1 in
        4k-randread-qd32) lbench 32 4096 --rand "$u" ;;
        4k-read-qd32)  lbench 32 4096 "$u" ;;
        4k-write-qd32) lbench 32 4096 --write "$u" ;;
        1m-read-qd8)   lbench 8 1048576 "$u" ;;
        1m-write-qd8)  lbench 8 1048576 --write "$u" ;;
        4k-read-qd1)   lbench 1 4096 "$u" ;;
    esac
}
size_of() { case $1 in 1m-*) echo 1048576 ;; *) echo 4096 ;; esac; }

ERRORS=$PRE_ERRORS
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)   # other work on the machine makes numbers noisy
T0=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
    for cfg in ${CONFIGS//,/ }; do
        [[ $cfg == qcow2 ]] && continue    # compared with q-s-d below, not with tgt
        read -ra ORDER <<<"$(targets_of "$r" "$cfg")"
        for wl in "${WORKLOADS[@]}"; do
            for t in "${ORDER[@]}"; do
                if v=$(as "$t" measured "$(pid_of "$t")" run_workload "$wl" "$(url "$t" "$cfg")"); then
                    echo "$cfg $wl $t $r $v" >>"$RAW"
                    printf '  round %d  %-8s %-17s %-8s %8s IOPS %7s us-cpu/io\n' "$r" "$cfg" "$wl" "$t" ${v} >&2
                else
                    echo "$cfg $wl $t $r ERR" >>"$RAW"
                    printf '  round %d  %-8s %-17s %-8s    ERROR\n' "$r" "$cfg" "$wl" "$t" >&2
                    [[ $t == rtarget ]] && ERRORS=$((ERRORS + 1))
                    if [[ $t == rtarget ]] && ! kill -0 "${RT_PID:-0}" 2>/dev/null; then
                        echo "bench: rtarget died; restarting it" >&2
                        tail -5 "$W/rt/rtarget.log" >&2; start_rtarget "$W/rt" "$RPORT"
                    fi
                fi
            done
        done
    done
done

# --- QD1 latency percentiles (bench/iscsi-load.c lat and qd1lat.py: the initiators above report none) -
LRAW=$W/raw-lat.txt; : >"$LRAW"
LAT_ROUNDS=$ROUNDS; [[ " ${WORKLOADS[*]} " == *" 4k-read-qd1 "* ]] || LAT_ROUNDS=0
for ((r = 1; r <= LAT_ROUNDS; r++)); do
    for cfg in ${CONFIGS//,/ }; do
        [[ $cfg == qcow2 ]] && continue
        read -ra ORDER <<<"$(targets_of "$r" "$cfg")"
        for probe in c py; do
            for t in "${ORDER[@]}"; do
                case $t in
                    tgt) a=("$TPORT" "$IQN_T" "${TLUN[$cfg]}") ;;
                    spdk) a=("$SPORT" "$IQN_S" "${SLUN[$cfg]}") ;;
                    *) a=("$RPORT" "$IQN_R" "${RLUN[$cfg]}") ;;
                esac
                if [[ $probe == c ]]; then probe_cmd=("$W/iscsi-load" lat); else probe_cmd=(python3 "$HERE/qd1lat.py"); fi
                if v=$(as "$t" timeout 120 "${probe_cmd[@]}" 127.0.0.1 "${a[@]}" $((20000 / SCALE))); then
                    echo "$cfg $probe $t $r $v" >>"$LRAW"
                    printf '  round %d  %-8s 4k-read-qd1 latency (%-2s) %-8s p50/p99/mean %s us\n' \
                        "$r" "$cfg" "$probe" "$t" "${v% *}" >&2
                else
                    printf '  round %d  %-8s 4k-read-qd1 latency (%-2s) %-8s ERROR\n' "$r" "$cfg" "$probe" "$t" >&2
                    [[ $t == rtarget ]] && ERRORS=$((ERRORS + 1))
                fi
            done
        done
    done
done

# --- qcow2: rtarget user:qcow over iSCSI vs qemu-storage-daemon over NBD ---------------
QWORKLOADS=(4k-randread-qd32 4k-randwrite-qd32 64k-read-qd8 64k-write-qd8)
QRAW=$W/raw-qcow2.txt; : >"$QRAW"
STRIDE=$((4096 * 7919))
run_qworkload() {   # run_qworkload NAME URL -> IOPS
    case $1 in
        4k-randread-qd32)  qbench $((200000 / SCALE)) 32 4k -S "$STRIDE" "$2" ;;
        4k-randwrite-qd32) qbench $((100000 / SCALE)) 32 4k -S "$STRIDE" -w "$2" ;;
        64k-read-qd8)      qbench $((40000 / SCALE)) 8 64k "$2" ;;
        64k-write-qd8)     qbench $((20000 / SCALE)) 8 64k -w "$2" ;;
    esac
}
if [[ -n ${RLUN[qcow2]:-} ]]; then
    for ((r = 1; r <= ROUNDS; r++)); do
        if ((r % 2)); then ORDER=(qsd rtarget); else ORDER=(rtarget qsd); fi
        for wl in "${QWORKLOADS[@]}"; do
            for t in "${ORDER[@]}"; do
                if [[ $t == qsd ]]; then u="nbd+unix:///qc?socket=$W/qsd.sock"
                else u="iscsi://127.0.0.1:$RPORT/$IQN_R/${RLUN[qcow2]}"; fi
                if [[ $t == qsd ]]; then pid=$QSD_PID; else pid=$RT_PID; fi
                if v=$(measured "$pid" run_qworkload "$wl" "$u"); then
                    echo "qcow2 $wl $t $r $v" >>"$QRAW"
                    printf '  round %d  %-8s %-17s %-8s %8s IOPS %7s us-cpu/io\n' "$r" qcow2 "$wl" "$t" ${v} >&2
                else
                    echo "qcow2 $wl $t $r ERR" >>"$QRAW"
                    printf '  round %d  %-8s %-17s %-8s    ERROR\n' "$r" qcow2 "$wl" "$t" >&2
                    [[ $t == rtarget ]] && ERRORS=$((ERRORS + 1))
                fi
            done
        done
    done
    stop_qsd
    stop_rtarget 5 || true
    # Both copies took the same writes: both must still be consistent.
    for img in rt qsd; do
        qemu-img check -q -f qcow2 "$W/$img.qcow2" ||
            { echo "bench: qemu-img check $img.qcow2 failed" >&2; ERRORS=$((ERRORS + 1)); }
    done
fi
# iscsi-load must fail loudly on a non-GOOD status: a LUN the target does not have.
if [[ -n $SMOKE && $INITIATOR == load ]]; then
    if "$W/iscsi-load" load 127.0.0.1 "$TPORT" "$IQN_T" 77 --time 1 >/dev/null 2>"$W/neg.txt" ||
        ! grep -q 'READ CAPACITY did not succeed' "$W/neg.txt"; then
        echo "bench: iscsi-load did not fail on a missing LUN" >&2; cat "$W/neg.txt" >&2; ERRORS=$((ERRORS + 1))
    fi
    # Its sequential writes start at LBA 0 with a 0x5a pattern: they must have landed.
    for img in "$SHM/tgt-ram.img" "$SHM/rt-ram.img"; do
        [[ $(head -c 4096 "$img" | tr -d '\132' | wc -c) == 0 ]] ||
            { echo "bench: iscsi-load's writes are not in $img" >&2; ERRORS=$((ERRORS + 1)); }
    done
fi
ELAPSED=$((SECONDS - T0))

# --- table -----------------------------------------------------------------------
PEERS=(tgt); [[ -n $SPDK_DIR ]] && PEERS+=(spdk)   # the table's peer columns
TABLE=$(python3 "$HERE/report.py" table "$RAW" "${PEERS[@]}")
SPDK_VER=''
[[ -n $SPDK_DIR ]] && SPDK_VER=$(git -C "$SPDK_DIR/spdk" describe --tags 2>/dev/null || echo '?')
MACHINE="$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r)"
echo
echo "rtarget vs tgt $(tgtd --version 2>/dev/null | head -n1 || dpkg-query -W -f '${Version}' tgt 2>/dev/null)${SPDK_VER:+ and SPDK $SPDK_VER}"
echo "$MACHINE; TCP congestion control $BENCH_CC; $ROUNDS round(s), median; ${ELAPSED}s; load average before: $LOAD0"
[[ -s $RAW ]] || TABLE='(no tgt comparison in this run)'
echo "$TABLE"
GTABLE=''
if [[ -s $GRAW ]]; then GTABLE=$(python3 "$HERE/report.py" gen "$GRAW"); echo; echo "$GTABLE"; fi
LTABLE=''
if [[ -s $LRAW ]]; then LTABLE=$(python3 "$HERE/report.py" lat "$LRAW"); echo; echo "$LTABLE"; fi
QTABLE=''
if [[ -s $QRAW ]]; then
    QTABLE=$(python3 "$HERE/report.py" table "$QRAW" qsd)
    echo
    echo "qcow2: rtarget user:qcow (iSCSI) vs qemu-storage-daemon $(qemu-storage-daemon --version | head -n1 | awk '{print $3}') (NBD, unix socket)"
    echo "$QTABLE"
fi

if [[ -n $WRITE_MD && -z $SMOKE ]]; then
    MD=$REPO/BENCHMARKS.md
    # shellcheck disable=SC2016  # the backquotes are Markdown
    STAMP=$(date -u '+%Y%m%d-%H%M')-$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
    CHART_REL=bench/charts/$STAMP.svg
    mkdir -p "$REPO/bench/charts"
    srcs=("$RAW:tgt"); [[ -n $SPDK_DIR ]] && srcs+=("$RAW:spdk"); [[ -s $QRAW ]] && srcs+=("$QRAW:qsd")
    python3 "$HERE/report.py" svg "$REPO/$CHART_REL" \
        "rtarget vs tgt${SPDK_DIR:+ / SPDK} / q-s-d, $STAMP, load $LOAD0 (higher is better)" "${srcs[@]}"
    [[ -f $MD ]] || printf '# Benchmarks\n\nWritten by `bash bench/bench.sh --write-md`; newest last.\n' >"$MD"
    {
        echo
        echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo
        echo "Machine: $MACHINE; TCP congestion control $BENCH_CC (bench/cc.sh). tgt $(dpkg-query -W -f '${Version}' tgt 2>/dev/null || echo '?')," \
             "libiscsi $(dpkg-query -W -f '${Version}' libiscsi-bin 2>/dev/null || echo '?')," \
             "QEMU $(qemu-img --version | head -n1 | awk '{print $3}')." \
             "$ROUNDS rounds, ${SPDK_DIR:+three targets rotating where SPDK runs, else }A/B alternating (each side first in as many rounds), median; configs: $CONFIGS;" \
             "load average before the run: $LOAD0.${RT_TPG_ATTRS:+ rtarget TPG attributes: $RT_TPG_ATTRS.}"
        echo
        echo "tgt's session parameters set to rtarget's: $TGT_PARAMS. CPU µs/IO: utime+stime of" \
             "the target process (all threads) during the run over the I/Os it completed."
        if [[ -n $SPDK_DIR ]]; then
            echo
            echo "SPDK $SPDK_VER iscsi_tgt (one reactor on core 0, no hugepages; ramdisk rows: its" \
                 "malloc bdev, ram rows: its aio bdev on a file in /dev/shm), in the same rounds and" \
                 "rotation (each target first in a third of the rounds), stopped (SIGSTOP) while the" \
                 "others run. Its session limits: MaxRecvDataSegmentLength 64 KiB, InitialR2T=Yes," \
                 "FirstBurstLength 64 KiB. **Its CPU µs/IO includes idle polling** (the reactor spins" \
                 "at 100% of a core whether or not there is work): it is wall time per I/O, as measured."
        fi
        echo
        echo "![IOPS and CPU ratios]($CHART_REL)"
        echo
        echo "$TABLE"
        if [[ -n $GTABLE ]]; then
            echo
            echo "Initiator: $([[ $INITIATOR == load ]] && echo 'every row above by bench/iscsi-load.c load (one session, fixed time; randread --rand, the rest sequential)' || echo '4k-randread-qd32 by iscsi-perf, the other rows by qemu-img bench (--initiator legacy)');" \
                 "its own CPU µs per I/O (user+system, medians):"
            echo
            echo "$GTABLE"
        elif [[ $INITIATOR == legacy ]]; then
            echo
            echo "Initiator (--initiator legacy): 4k-randread-qd32 by iscsi-perf, the other rows by qemu-img bench."
        fi
        if [[ -n $LTABLE ]]; then
            echo
            echo "4 KiB reads at QD1, one READ(10) at a time from two raw iSCSI initiators:" \
                 "bench/iscsi-load.c lat (C: a send, a recv and two clock reads per command) and" \
                 "bench/qd1lat.py (Python: its own cost is in both columns), medians over rounds:"
            echo
            echo "$LTABLE"
        fi
        if [[ -n $QTABLE ]]; then
            echo
            echo "qcow2 rows: the same 1 GiB qcow2 image (fully allocated, two identical copies)" \
                 "served by rtarget user:qcow over iSCSI and by qemu-storage-daemon over NBD" \
                 "(unix socket), both measured with qemu-img bench -f raw -t none; rand =" \
                 "4 KiB requests at a stride of 7919 blocks (wrapping)."
            echo
            echo "$QTABLE"
        fi
    } >>"$MD"
    echo "bench: appended to BENCHMARKS.md" >&2
fi
((ERRORS == 0))
