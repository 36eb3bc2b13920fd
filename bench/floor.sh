#!/bin/bash
# bench/floor.sh — the floor of CPU per I/O on this machine: bench/floor.c (a
# minimal responder that answers iscsi-load's PDUs with fixed data: no SCSI
# engine, no backstore) next to rtarget and tgt, driven by the same initiator
# (bench/iscsi-load.c), in the same run, the order rotating every round. Per
# target and workload: median IOPS, the target process's CPU µs per I/O
# (utime+stime from /proc/PID/stat over the run), the initiator's own CPU µs
# per I/O, and for "lat" the p50/p99 latency.
#
# usage: bench/floor.sh [--rounds N] [--time SECS] [--targets T,...] [--workloads W,...]
#   targets:   floor-block  floor.c, blocking recv (sleeps between PDUs)
#              floor-spin   floor.c, spinning on recv(MSG_DONTWAIT) (never sleeps)
#              floor-yield  floor.c, spinning with sched_yield (as rtarget's busy poll)
#              rtarget      target/release/rtarget (RTARGET_BIN overrides), ramdisk LU, defaults
#              rtarget-nopoll  the same daemon's second target, busy_poll_us=0
#              tgt          tgtd, --bstype rdwr on a 1 GiB file in /dev/shm, rtarget's session keys
#              (default: all six)
#   workloads: qd1 (iscsi-load load --qd 1, 4 KiB reads, SECS), lat (iscsi-load lat,
#              20000 READ(10)s), qd32r / qd32w (load --qd 32, 4 KiB reads / writes, SECS)
#              (default qd1,lat)
#   --cc NAME  TCP congestion control of the run (default cubic; "system" keeps the
#              host's; bench/cc.sh says why)
#   --pin CPU  every target (all its threads) and the initiator on that one CPU: no
#              cross-CPU wake-ups (shows what those cost; not how targets are run)
# Needs cc, tgtd/tgtadm for tgt. Wrap in `flock -x /work/wt/bench.lock` on shared machines.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"
# shellcheck source=cc.sh
source "$HERE/cc.sh"

ROUNDS=3 SECS=3 TARGETS=floor-block,floor-spin,floor-yield,rtarget,rtarget-nopoll,tgt WLS=qd1,lat PIN='' CC=cubic
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --cc) CC=$2; shift ;;
        --time) SECS=$2; shift ;;
        --targets) TARGETS=$2; shift ;;
        --workloads) WLS=$2; shift ;;
        --pin) PIN=$2; shift ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
    esac
    shift
done
need cc
W=$(mktemp -d /tmp/rtarget-floor.XXXXXX) SHM=$(mktemp -d /dev/shm/rtarget-floor.XXXXXX)
cc -O2 -o "$W/iscsi-load" "$HERE/iscsi-load.c"
cc -O2 -o "$W/floor" "$HERE/floor.c"
declare -A PID PORT IQN LUN
FLOOR_PIDS=()
cleanup() {
    set +e
    for p in "${FLOOR_PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    stop_rtarget 5; stop_tgt; rm -rf "$W" "$SHM"
    bench_cc_restore
}
trap cleanup EXIT
bench_cc "$CC"
echo "floor: TCP congestion control $BENCH_CC" >&2

taken=" "
new_port() { local p; p=$(free_port); while [[ $taken == *" $p "* ]]; do p=$(free_port); done; taken+="$p "; echo "$p"; }
for t in ${TARGETS//,/ }; do
    case $t in
        floor-*)
            PORT[$t]=$(new_port); IQN[$t]=iqn.2026-12.org.rtarget:floor LUN[$t]=0
            "$W/floor" "${PORT[$t]}" "${t#floor-}" 2>"$W/$t.log" &
            PID[$t]=$! FLOOR_PIDS+=("$!")
            wait_port "${PORT[$t]}" ;;
        rtarget|rtarget-nopoll)
            if [[ -z ${RT_PID:-} ]]; then
                RPORT=$(new_port)
                mkconfig "$W/rt.json" "$RPORT" iqn.2026-11.org.rtarget:floor "ramdisk:rd0::1G"
                # A second target with busy polling off, on the same daemon and port.
                python3 - "$W/rt.json" <<'PY'
import copy, json, sys
cfg = json.load(open(sys.argv[1]))
t = copy.deepcopy(cfg["targets"][0])
t["wwn"] += "-nopoll"
for tpg in t["tpgs"]:
    tpg.setdefault("attributes", {})["busy_poll_us"] = 0
cfg["targets"].append(t)
json.dump(cfg, open(sys.argv[1], "w"), indent=2)
PY
                start_rtarget "$W/rt" "$RPORT" "$W/rt.json"
            fi
            PORT[$t]=$RPORT PID[$t]=$RT_PID LUN[$t]=0 IQN[$t]=iqn.2026-11.org.rtarget:floor
            [[ $t == rtarget-nopoll ]] && IQN[$t]+=-nopoll ;;
        tgt)
            PORT[$t]=$(new_port); IQN[$t]=iqn.2026-11.org.rtarget:floor-tgt LUN[$t]=1
            need tgtd tgtadm
            dd if=/dev/zero of="$SHM/tgt.img" bs=1M count=1024 status=none
            start_tgt "$W/tgt" "${PORT[$t]}"; tgt_target 1 "${IQN[$t]}"
            for kv in MaxRecvDataSegmentLength=262144 MaxXmitDataSegmentLength=262144 \
                FirstBurstLength=262144 MaxBurstLength=262144 InitialR2T=No ImmediateData=Yes \
                MaxOutstandingR2T=1; do
                tgtadm -C "$TGT_CTL" --lld iscsi --op update --mode target --tid 1 \
                    --name "${kv%%=*}" --value "${kv#*=}"
            done
            tgt_lun 1 1 "$SHM/tgt.img" rdwr
            PID[$t]=$TGT_PID ;;
        *) echo "floor.sh: unknown target $t" >&2; exit 2 ;;
    esac
done

INIT=("$W/iscsi-load")
if [[ -n $PIN ]]; then
    INIT=(taskset -c "$PIN" "$W/iscsi-load")
    for t in ${TARGETS//,/ }; do taskset -a -p -c "$PIN" "${PID[$t]}" >/dev/null; done
fi
TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
run() {   # run WORKLOAD TARGET -> "VALUE... COUNT INITIATOR_CPU" (see the table)
    local a=(127.0.0.1 "${PORT[$2]}" "${IQN[$2]}" "${LUN[$2]}") out
    case $1 in
        qd1) out=$("${INIT[@]}" load "${a[@]}" --qd 1 --time "$SECS") ;;
        qd32r) out=$("${INIT[@]}" load "${a[@]}" --qd 32 --time "$SECS") ;;
        qd32w) out=$("${INIT[@]}" load "${a[@]}" --qd 32 --write --time "$SECS") ;;
        lat) out=$("${INIT[@]}" lat "${a[@]}" 20000)
             # p50 p99 (warm-up commands count for CPU); no initiator CPU
             read -r p50 p99 _ <<<"$out"; echo "$p50/$p99 21000 -"; return ;;
    esac
    read -r iops count _ gcpu <<<"$out"; echo "$iops $count $gcpu"
}
# rtarget's ramdisk allocates its memory on first write: written once before the
# rounds, so no round pays for that.
for t in ${TARGETS//,/ }; do
    [[ $t == rtarget* ]] || continue
    "$W/iscsi-load" load 127.0.0.1 "${PORT[$t]}" "${IQN[$t]}" "${LUN[$t]}" --qd 8 --bs 1048576 \
        --write --time 2 >/dev/null
    break
done
RAW=$W/raw.txt; : >"$RAW"
read -ra TS <<<"${TARGETS//,/ }"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for ((r = 0; r < ROUNDS; r++)); do
    for wl in ${WLS//,/ }; do
        for ((k = 0; k < ${#TS[@]}; k++)); do
            t=${TS[(k + r) % ${#TS[@]}]}
            c0=$(cpu_ticks "${PID[$t]}")
            read -r v count gcpu <<<"$(run "$wl" "$t")"
            c1=$(cpu_ticks "${PID[$t]}")
            cpu=$(python3 -c "print(round(($c1 - $c0) * 1e6 / $TCK / $count, 2))")
            echo "$wl $t $v $cpu $gcpu" >>"$RAW"
            printf '  round %d %-5s %-14s %12s  target %6s us-cpu/io  initiator %s\n' \
                $((r + 1)) "$wl" "$t" "$v" "$cpu" "$gcpu" >&2
        done
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
python3 - "$RAW" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    wl, t, v, cpu, g = line.split()
    rows.setdefault((wl, t), []).append((v, float(cpu), g))
med = statistics.median
print("| workload | target | IOPS (lat: p50/p99 µs) | target CPU µs/IO | initiator CPU µs/IO |")
print("|---|---|---:|---:|---:|")
for (wl, t), vals in rows.items():
    if wl == "lat":
        v = f"{med(float(x[0].split('/')[0]) for x in vals):.1f}/{med(float(x[0].split('/')[1]) for x in vals):.1f}"
    else:
        v = f"{med(float(x[0]) for x in vals):.0f}"
    g = [float(x[2]) for x in vals if x[2] != "-"]
    print(f"| {wl} | {t} | {v} | {med(x[1] for x in vals):.2f} | {med(g):.2f} |" if g else
          f"| {wl} | {t} | {v} | {med(x[1] for x in vals):.2f} | - |")
EOF
