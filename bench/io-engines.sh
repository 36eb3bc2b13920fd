#!/bin/bash
# bench/io-engines.sh — rtarget's I/O engines: 4 KiB random reads at QD32
# (iscsi-perf -r -b 8 -m 32) on an O_DIRECT fileio LU served inline vs on the
# worker pool, and the inline fast path (ramdisk) of this build vs a baseline
# build (before the pool existed), in the same run, A/B alternating, median of
# ROUNDS.
#
# usage: bench/io-engines.sh [--rounds N] [--secs S] [--baseline BIN] [--write-md]
#   --baseline  an older rtarget binary for the ramdisk before/after rows
#               (default: none, only this build is measured)
#   --write-md  append the table to BENCHMARKS.md
# Needs target/release/rtarget (RTARGET_BIN overrides) and libiscsi-bin.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"

ROUNDS=3 SECS=5 BASELINE='' WRITE_MD=''
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --baseline) BASELINE=$2; shift ;;
        --write-md) WRITE_MD=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "io-engines.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

W=${RTARGET_TEST_WORK:-$REPO/target/test-work}/io-engines
mkdir -p "$W"
IQN=iqn.2026-11.org.rtarget:engines
NEW_BIN=$RTARGET_BIN
cleanup() { set +e; stop_rtarget 5; }
trap cleanup EXIT

# 1 GiB of real data on the local disk: O_DIRECT reads must reach the device.
IMG=$W/direct.img
if [[ ! -f $IMG || $(stat -c %s "$IMG") -ne $((1 << 30)) ]]; then
    dd if=/dev/urandom of="$IMG" bs=1M count=1024 status=none conv=fsync
fi
mkdir -p "$W/rt"

perf() {   # perf PORT LUN -> IOPS
    local out
    out=$(timeout $((SECS + 30)) iscsi-perf -t "$SECS" -m 32 -b 8 -r \
        "iscsi://127.0.0.1:$1/$IQN/$2" 2>&1) || { tr '\r' '\n' <<<"$out" | tail -3 >&2; return 1; }
    tr '\r' '\n' <<<"$out" | sed -n 's/^iops average \([0-9]*\) .*/\1/p' | tail -n1
}
serve() {   # serve BIN -> sets PORT, starts the daemon
    stop_rtarget 5 || true
    PORT=$(free_port)
    # LUN 0: ramdisk (inline); LUN 1: O_DIRECT fileio inline; LUN 2: the same file on the pool.
    mkconfig "$W/rt/saveconfig.json" "$PORT" "$IQN" "ramdisk:rd0::1G" \
        "fileio:dinl:$IMG:1G:o_direct=1,io_engine=inline" \
        "fileio:dpool:$IMG:1G:o_direct=1,io_engine=pool"
    RTARGET_BIN=$1 start_rtarget "$W/rt" "$PORT"
}

RAW=$W/raw.txt; : >"$RAW"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
    serve "$NEW_BIN"
    for pair in "direct-inline 1" "direct-pool 2"; do
        set -- $pair
        iops=$(perf "$PORT" "$2") || iops=ERR
        echo "$1 $r $iops" >>"$RAW"; printf '  round %d  %-16s %8s IOPS\n' "$r" "$1" "$iops" >&2
    done
    order=(new); [[ -n $BASELINE ]] && { if ((r % 2)); then order=(base new); else order=(new base); fi; }
    for b in "${order[@]}"; do
        if [[ $b == base ]]; then serve "$BASELINE"; else serve "$NEW_BIN"; fi
        iops=$(perf "$PORT" 0) || iops=ERR
        echo "ramdisk-$b $r $iops" >>"$RAW"; printf '  round %d  %-16s %8s IOPS\n' "$r" "ramdisk-$b" "$iops" >&2
    done
done
stop_rtarget 5 || true

median() { grep "^$1 " "$RAW" | awk '$3 != "ERR" {print $3}' | sort -n |
    awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print "ERR"}'; }
TABLE=$(
    echo "| LUN | engine | build | 4k-randread-qd32 IOPS | MB/s |"
    echo "|-----|--------|-------|----------------------:|-----:|"
    for row in "direct-inline|fileio o_direct=1|inline|this" "direct-pool|fileio o_direct=1|pool|this" \
               "ramdisk-base|ramdisk|inline|baseline" "ramdisk-new|ramdisk|inline|this"; do
        IFS='|' read -r key lu eng build <<<"$row"
        [[ $key == ramdisk-base && -z $BASELINE ]] && continue
        m=$(median "$key")
        mb=$([[ $m == ERR ]] && echo - || echo $((m * 4096 / 1000000)))
        echo "| $lu | $eng | $build | $m | $mb |"
    done
)
echo "$TABLE"
if [[ -n $WRITE_MD ]]; then
    {
        echo
        echo "### $(date -u '+%Y-%m-%d %H:%M UTC') — $(git -C "$REPO" rev-parse --short HEAD)"
        echo
        echo "$(nproc) CPUs, kernel $(uname -r); $ROUNDS rounds of ${SECS} s, median; I/O workers: default;" \
             "load average before: $LOAD0."
        echo
        echo "$TABLE"
    } >>"$REPO/BENCHMARKS.md"
fi
