#!/bin/bash
# bench/ab.sh — A/B two rtarget builds on the same machine, in the same run:
# both daemons run side by side (own port, own LUNs: a 1 GiB ramdisk and a 1 GiB
# fileio image in /dev/shm, filled first), every workload runs on A and B back to
# back with the order flipping every round; prints the median IOPS and the median
# daemon CPU time per I/O (utime+stime, steadier than IOPS when the machine is
# busy) per binary and the ratios B/A. For quick before/after loops on a
# data-path change.
#
# usage: bench/ab.sh [--rounds N] [--luns rd,shm,pool] [--workloads a,b,...]
#                    [--tpg-attrs-a K=V,...] [--tpg-attrs-b K=V,...] [--cc NAME] BIN_A BIN_B
#   luns: rd (ramdisk), shm (fileio in /dev/shm), pool (the same with io_engine=pool)
#   workloads: 4k-randread-qd32 (iscsi-perf -r -b 8 -m 32, 4 s)
#              4k-write-qd32 64k-read-qd8 64k-write-qd8 1m-read-qd8 1m-write-qd8
#              4k-read-qd1 (single-request latency)
#              (qemu-img bench -f raw -t none, sequential, fixed count)
#              4k-lat-qd1: bench/iscsi-load.c lat, 20000 READ(10)s one at a time; its
#              "IOPS" cells are the p50 latency in µs (B/A below 1 is better)
#              L-4k-randread-qd32 L-4k-write-qd32 L-1m-read-qd8 L-1m-write-qd8: the
#              same by bench/iscsi-load.c load for 4 s (bench.sh's initiator and
#              session keys: 256 KiB immediate data, then R2Ts)
#   --cc       TCP congestion control of the run (default cubic; "system" keeps the
#              host's; bench/cc.sh says why)
#   tpg-attrs: TPG attributes of daemon A / B (the same binary twice then
#              compares a setting, e.g. --tpg-attrs-b busy_poll_us=50)
# Needs libiscsi-bin, qemu-utils with qemu-block-extra, and cc for 4k-lat-qd1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"
# shellcheck source=cc.sh
source "$HERE/cc.sh"

ROUNDS=5 LUNS=rd,shm CC=cubic
TPG_ATTRS=('' '')
WLS=4k-randread-qd32,4k-write-qd32,64k-read-qd8,64k-write-qd8,1m-read-qd8,1m-write-qd8
while [[ $# -gt 2 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --luns) LUNS=$2; shift ;;
        --workloads) WLS=$2; shift ;;
        --tpg-attrs-a) TPG_ATTRS[0]=$2; shift ;;
        --tpg-attrs-b) TPG_ATTRS[1]=$2; shift ;;
        --cc) CC=$2; shift ;;
        *) echo "ab.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
[[ $# -eq 2 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
BINS=("$(realpath "$1")" "$(realpath "$2")")

W=$(mktemp -d /tmp/rtarget-ab.XXXXXX) SHM=$(mktemp -d /dev/shm/rtarget-ab.XXXXXX)
if [[ ,$WLS, == *,4k-lat-qd1,* || ,$WLS, == *,L-* ]]; then need cc; cc -O2 -o "$W/iscsi-load" "$HERE/iscsi-load.c"; fi
IQN=iqn.2026-11.org.rtarget:ab
declare -a PIDS PORTS
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do RT_PID=$p stop_rtarget 5; done
    rm -rf "$W" "$SHM"
    bench_cc_restore
}
trap cleanup EXIT
bench_cc "$CC"
echo "ab: TCP congestion control $BENCH_CC" >&2

declare -A LUNNO
for i in 0 1; do
    specs=() n=0
    for l in ${LUNS//,/ }; do
        case $l in
            rd) specs+=("ramdisk:rd$i::1G") ;;
            shm) dd if=/dev/zero of="$SHM/f$i.img" bs=1M count=1024 status=none
                 specs+=("fileio:shm$i:$SHM/f$i.img:1G") ;;
            pool) dd if=/dev/zero of="$SHM/p$i.img" bs=1M count=1024 status=none
                 specs+=("fileio:pool$i:$SHM/p$i.img:1G:io_engine=pool") ;;
            *) echo "ab.sh: unknown LUN kind $l" >&2; exit 2 ;;
        esac
        LUNNO[$l]=$n; n=$((n + 1))
    done
    port=$(free_port)
    while [[ " ${PORTS[*]:-} " == *" $port "* ]]; do port=$(free_port); done
    mkdir -p "$W/d$i"; mkconfig "$W/d$i/saveconfig.json" "$port" "$IQN" "${specs[@]}"
    if [[ -n ${TPG_ATTRS[i]} ]]; then
        set_tpg_attributes "$W/d$i/saveconfig.json" "${TPG_ATTRS[i]}"
    fi
    RTARGET_BIN=${BINS[$i]} start_rtarget "$W/d$i" "$port"
    PIDS[i]=$RT_PID PORTS[i]=$port
done

qbench() {   # qbench COUNT DEPTH SIZE [-w] URL -> "IOPS COUNT"
    local count=$1 depth=$2 size=$3 out secs; shift 3
    out=$(timeout 300 qemu-img bench -f raw -t none -c "$count" -d "$depth" -s "$size" "$@" 2>&1) ||
        { echo "$out" >&2; return 1; }
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    python3 -c "print(round($count / max($secs, 1e-6)), $count)"
}
run() {   # run WORKLOAD URL -> "IOPS COUNT"
    local out iops
    case $1 in
        4k-randread-qd32)
            out=$(timeout 60 iscsi-perf -t 4 -m 32 -b 8 -r "$2" 2>&1 | tr '\r' '\n')
            iops=$(sed -n 's/^iops average \([0-9]*\) .*/\1/p' <<<"$out" | tail -n1)
            [[ -n $iops ]] && echo "$iops $((iops * 4))" ;;
        4k-write-qd32) qbench 150000 32 4k -w "$2" ;;
        64k-read-qd8)  qbench 40000 8 64k "$2" ;;
        64k-write-qd8) qbench 20000 8 64k -w "$2" ;;
        1m-read-qd8)   qbench 3000 8 1M "$2" ;;
        1m-write-qd8)  qbench 1500 8 1M -w "$2" ;;
        4k-read-qd1)   qbench 40000 1 4k "$2" ;;
        4k-lat-qd1)    # p50 µs in place of IOPS; the 1000 warm-up commands count for CPU
            local a=${2#iscsi://127.0.0.1:}
            out=$(timeout 120 "$W/iscsi-load" lat 127.0.0.1 "${a%%/*}" "$IQN" "${a##*/}" 20000) || return 1
            echo "${out%% *} 21000" ;;
        L-*)   # L-4k-randread-qd32 -> iscsi-load load --qd 32 --bs 4096 --rand
            local a=${2#iscsi://127.0.0.1:} w=${1#L-} bs qd flags=()
            bs=${w%%-*}; bs=${bs/k/*1024}; bs=$((${bs/m/*1048576})); qd=${w##*-qd}
            [[ $w == *write* ]] && flags+=(--write); [[ $w == *rand* ]] && flags+=(--rand)
            out=$(timeout 60 "$W/iscsi-load" load 127.0.0.1 "${a%%/*}" "$IQN" "${a##*/}" \
                --qd "$qd" --bs "$bs" --time 4 "${flags[@]}") || return 1
            awk '{print $1, $2}' <<<"$out" ;;
        *) echo "ab.sh: unknown workload $1" >&2; return 2 ;;
    esac
}

# A ramdisk allocates (and the kernel zeroes) its huge pages on first write:
# write it once through (--fill: this VM's host gives memory at ~0.5 GB/s on
# first touch) so the first round does not pay for that.
if [[ ,$LUNS, == *,rd,* && -x $W/iscsi-load ]]; then
    for i in 0 1; do
        "$W/iscsi-load" load 127.0.0.1 "${PORTS[i]}" "$IQN" "${LUNNO[rd]}" --qd 8 --bs 1048576 \
            --write --fill --time 60 >/dev/null
    done
fi

TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, all threads
RAW=$W/raw.txt; : >"$RAW"
AB=(A B)
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then ORDER=(0 1); else ORDER=(1 0); fi
    for l in ${LUNS//,/ }; do
        for wl in ${WLS//,/ }; do
            for i in "${ORDER[@]}"; do
                c0=$(cpu_ticks "${PIDS[i]}")
                v=$(run "$wl" "iscsi://127.0.0.1:${PORTS[i]}/$IQN/${LUNNO[$l]}") || v=ERR
                c1=$(cpu_ticks "${PIDS[i]}")
                # CPU the daemon spent per I/O (µs): steadier than IOPS on a busy machine.
                if [[ $v == ERR || -z $v ]]; then cpu=ERR v=ERR
                else cpu=$(python3 -c "print(round(($c1 - $c0) * 1e6 / $TCK / ${v#* }, 2))"); v=${v% *}; fi
                echo "$l $wl $i $v $cpu" >>"$RAW"
                printf '  round %d %-4s %-17s %s %8s IOPS %6s us-cpu/io\n' "$r" "$l" "$wl" "${AB[i]}" "$v" "$cpu" >&2
            done
        done
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$RAW" <<'EOF'
import statistics, sys
data = {}
for line in open(sys.argv[1]):
    l, wl, i, v, cpu = line.split()
    data.setdefault((l, wl), ([], []))[int(i)].append((v, cpu))
def med(vals, k):
    ok = [float(x[k]) for x in vals if x[k] != "ERR"]
    return statistics.median(ok) if ok else 0
print("| LUN | workload | A IOPS | B IOPS | B/A | A us-cpu/io | B us-cpu/io | B/A cpu | B IOPS rounds |")
print("|-----|----------|-------:|-------:|----:|------------:|------------:|--------:|---------------|")
for (l, wl), (a, b) in data.items():
    ia, ib, ca, cb = med(a, 0), med(b, 0), med(a, 1), med(b, 1)
    r = f"{ib / ia:.3f}" if ia else "-"
    rc = f"{cb / ca:.3f}" if ca else "-"
    rounds = " ".join(x[0] for x in b)
    print(f"| {l} | {wl} | {ia:.0f} | {ib:.0f} | {r} | {ca:.2f} | {cb:.2f} | {rc} | {rounds} |")
EOF
