#!/bin/bash
# bench/io-engines.sh — rtarget's I/O engines (io_engine=inline / pool / uring)
# on fileio LUs, O_DIRECT and buffered (page cache), in the same run, the
# engine order rotating per round, median of ROUNDS:
#   4k-randread-qd32   iscsi-perf -r -b 8 -m 32 (random 4 KiB reads, SECS s)
#   4k-randwrite-qd32  qemu-img bench -w -d 32 -s 4k -S 7919 blocks (WCOUNT
#                      writes at a prime stride, wrapping: no two neighbours)
# with the daemon's CPU time per I/O (user+system of the whole process over the
# I/Os done); and the inline fast path (ramdisk) of this build vs a baseline
# build, A/B alternating.
#
# usage: bench/io-engines.sh [--rounds N] [--secs S] [--wcount N] [--baseline BIN] [--write-md]
#   --baseline  an older rtarget binary for the ramdisk before/after rows
#               (default: none, only this build is measured)
#   --write-md  append the table to BENCHMARKS.md
# Needs target/release/rtarget (RTARGET_BIN overrides), libiscsi-bin, qemu-img.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"

ROUNDS=3 SECS=5 WCOUNT=60000 BASELINE='' WRITE_MD=''
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --wcount) WCOUNT=$2; shift ;;
        --baseline) BASELINE=$2; shift ;;
        --write-md) WRITE_MD=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "io-engines.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
need iscsi-perf qemu-img python3

W=${RTARGET_TEST_WORK:-$REPO/target/test-work}/io-engines
mkdir -p "$W"
IQN=iqn.2026-11.org.rtarget:engines
NEW_BIN=$RTARGET_BIN
cleanup() { set +e; stop_rtarget 5; }
trap cleanup EXIT

# 1 GiB of real data on the local disk each: O_DIRECT reads must reach the
# device; the buffered file is read into the page cache before each round.
for img in direct buffered; do
    IMG=$W/$img.img
    if [[ ! -f $IMG || $(stat -c %s "$IMG") -ne $((1 << 30)) ]]; then
        dd if=/dev/urandom of="$IMG" bs=1M count=1024 status=none conv=fsync
    fi
done
mkdir -p "$W/rt"

TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, all threads
# measured CMD...: CMD prints "IOPS COUNT"; prints "IOPS CPU_US_PER_IO" of the daemon.
measured() {
    local c0 c1 v
    c0=$(cpu_ticks "$RT_PID")
    v=$("$@") || return 1
    c1=$(cpu_ticks "$RT_PID")
    python3 -c "print(${v% *}, round(($c1 - $c0) * 1e6 / $TCK / max(${v#* }, 1), 2))"
}
randread() {   # randread LUN -> "IOPS COUNT"
    local out iops
    out=$(timeout $((SECS + 30)) iscsi-perf -t "$SECS" -m 32 -b 8 -r \
        "iscsi://127.0.0.1:$PORT/$IQN/$1" 2>&1) || { tr '\r' '\n' <<<"$out" | tail -3 >&2; return 1; }
    iops=$(tr '\r' '\n' <<<"$out" | sed -n 's/^iops average \([0-9]*\) .*/\1/p' | tail -n1)
    [[ -n $iops ]] || return 1
    echo "$iops $((iops * SECS))"
}
randwrite() {   # randwrite LUN -> "IOPS COUNT"
    local out secs
    out=$(timeout 300 qemu-img bench -f raw -t none -c "$WCOUNT" -d 32 -s 4k -S $((4096 * 7919)) -w \
        "iscsi://127.0.0.1:$PORT/$IQN/$1" 2>&1) || { echo "$out" >&2; return 1; }
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    [[ -n $secs ]] || { echo "$out" >&2; return 1; }
    python3 -c "print(round($WCOUNT / max($secs, 1e-6)), $WCOUNT)"
}
serve() {   # serve BIN -> sets PORT, starts the daemon
    stop_rtarget 5 || true
    PORT=$(free_port)
    # LUN 0: ramdisk (inline); LUNs 1-3: the O_DIRECT file inline / pool /
    # uring; LUNs 4-6: the buffered file inline / pool / uring.
    mkconfig "$W/rt/saveconfig.json" "$PORT" "$IQN" "ramdisk:rd0::1G" \
        "fileio:dinl:$W/direct.img:1G:o_direct=1,io_engine=inline" \
        "fileio:dpool:$W/direct.img:1G:o_direct=1,io_engine=pool" \
        "fileio:dring:$W/direct.img:1G:o_direct=1,io_engine=uring" \
        "fileio:binl:$W/buffered.img:1G:io_engine=inline" \
        "fileio:bpool:$W/buffered.img:1G:io_engine=pool" \
        "fileio:bring:$W/buffered.img:1G:io_engine=uring"
    RTARGET_BIN=$1 start_rtarget "$W/rt" "$PORT"
}
note() {   # note KEY ROUND "IOPS CPU"
    echo "$1 $2 $3" >>"$RAW"; printf '  round %d  %-26s %8s IOPS %6s us/IO\n' "$2" "$1" ${3} >&2
}

RAW=$W/raw.txt; : >"$RAW"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
ENGINES=(inline pool uring)
for ((r = 1; r <= ROUNDS; r++)); do
    serve "$NEW_BIN"
    cat "$W/buffered.img" >/dev/null
    # The engine order rotates each round, so none always goes first.
    order=("${ENGINES[@]:$((r % 3))}" "${ENGINES[@]:0:$((r % 3))}")
    for wl in randread randwrite; do
        for e in "${order[@]}"; do
            for f in direct buffered; do
                case $e in inline) n=1 ;; pool) n=2 ;; uring) n=3 ;; esac
                [[ $f == buffered ]] && n=$((n + 3))
                v=$(measured "$wl" "$n") || v="ERR ERR"
                note "$f-$e-$wl" "$r" "$v"
            done
        done
    done
    order=(new); [[ -n $BASELINE ]] && { if ((r % 2)); then order=(base new); else order=(new base); fi; }
    for b in "${order[@]}"; do
        if [[ $b == base ]]; then serve "$BASELINE"; else serve "$NEW_BIN"; fi
        v=$(measured randread 0) || v="ERR ERR"
        note "ramdisk-$b-randread" "$r" "$v"
    done
done
stop_rtarget 5 || true
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

median() {   # median KEY COLUMN
    grep "^$1 " "$RAW" | awk -v c="$2" '$c != "ERR" {print $c}' | sort -g |
        awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print "-"}'
}
TABLE=$(
    echo "| LU | engine | 4k-randread-qd32 IOPS | CPU µs/IO | 4k-randwrite-qd32 IOPS | CPU µs/IO |"
    echo "|----|--------|----------------------:|----------:|-----------------------:|----------:|"
    for f in direct buffered; do
        lu=$([[ $f == direct ]] && echo "fileio o_direct=1" || echo "fileio (page cache)")
        for e in "${ENGINES[@]}"; do
            k=$f-$e
            echo "| $lu | $e | $(median "$k-randread" 3) | $(median "$k-randread" 4) |" \
                 "$(median "$k-randwrite" 3) | $(median "$k-randwrite" 4) |"
        done
    done
    for b in base new; do
        [[ $b == base && -z $BASELINE ]] && continue
        echo "| ramdisk ($([[ $b == base ]] && echo baseline || echo this) build) | inline |" \
             "$(median "ramdisk-$b-randread" 3) | $(median "ramdisk-$b-randread" 4) | - | - |"
    done
)
echo "$TABLE"
if [[ -n $WRITE_MD ]]; then
    {
        echo
        echo "### $(date -u '+%Y-%m-%d %H:%M UTC') — $(git -C "$REPO" rev-parse --short HEAD)"
        echo
        echo "$(nproc) CPUs, kernel $(uname -r); $ROUNDS rounds (reads ${SECS} s, $WCOUNT writes), median;" \
             "I/O workers: default; load average before: $LOAD0, after: $LOAD1."
        echo
        echo "$TABLE"
    } >>"$REPO/BENCHMARKS.md"
fi
