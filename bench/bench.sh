#!/bin/bash
# bench/bench.sh — rtarget against tgt (Debian's userspace iSCSI target) on equal
# LUNs, in the same run, A/B alternating (the order flips every round), each
# workload ROUNDS times; the table shows medians and the ratio rtarget/tgt.
#
# usage: bench/bench.sh [--rounds N] [--configs ram,disk[,ramdisk]] [--smoke] [--write-md]
#   configs (1 GiB LUNs, filled with data first so reads never hit holes):
#     ram      tgt --bstype rdwr on a file in /dev/shm  vs  rtarget fileio on /dev/shm
#     disk     both on a file on disk (target/bench-work), page cache warm
#     ramdisk  tgt as in "ram"  vs  rtarget's ramdisk backstore
#   workloads (initiator: libiscsi, through iscsi-perf or QEMU's iscsi driver):
#     4k-randread-qd32  iscsi-perf -r -b 8 -m 32 (random 4 KiB reads, fixed time)
#     4k-read-qd32 / 4k-write-qd32 / 1m-read-qd8 / 1m-write-qd8 / 4k-read-qd1
#                       qemu-img bench -t none -d DEPTH -s SIZE [-w] (sequential, COUNT requests)
#   --smoke     one round, "ram" only, ~10x smaller counts: checks every workload runs
#               (exit 1 if any rtarget run errors); numbers are not meaningful
#   --write-md  append this run's table to BENCHMARKS.md (machine, kernel, date)
# Needs target/release/rtarget (RTARGET_BIN overrides), tgtd, libiscsi-bin, qemu-utils
# with qemu-block-extra.  Takes ~5 min with the defaults (3 rounds, ram+disk).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"

ROUNDS=3 CONFIGS=ram,disk SMOKE='' WRITE_MD='' SCALE=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --configs) CONFIGS=$2; shift ;;
        --smoke) SMOKE=1 ROUNDS=1 CONFIGS=ram SCALE=10 ;;
        --write-md) WRITE_MD=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

W=${RTARGET_TEST_WORK:-$REPO/target/test-work}/bench
SHM=/dev/shm/rtarget-bench-$$
mkdir -p "$W" "$SHM"
RAW=$W/raw.txt; : >"$RAW"
IQN_T=iqn.2026-11.org.rtarget:bench-tgt IQN_R=iqn.2026-11.org.rtarget:bench
cleanup() { set +e; stop_rtarget 5; stop_tgt; rm -rf "$SHM" "$W"/*.img; }
trap cleanup EXIT

# --- LUNs: the same backing kinds for both targets ---------------------------------
fill() { dd if=/dev/zero of="$1" bs=1M count=1024 status=none conv=fsync; }
declare -A TLUN RLUN    # config -> LUN number on tgt / rtarget
RSPECS=() n=0
for cfg in ${CONFIGS//,/ }; do
    case $cfg in
        ram) fill "$SHM/tgt-ram.img"; fill "$SHM/rt-ram.img"
             RSPECS+=("fileio:ram0:$SHM/rt-ram.img:1G") ;;
        disk) fill "$W/tgt-disk.img"; fill "$W/rt-disk.img"
             RSPECS+=("fileio:disk0:$W/rt-disk.img:1G") ;;
        ramdisk) [[ -f $SHM/tgt-ram.img ]] || fill "$SHM/tgt-ram.img"
             RSPECS+=("ramdisk:rd0::1G") ;;
        *) echo "bench.sh: unknown config $cfg" >&2; exit 2 ;;
    esac
    RLUN[$cfg]=$n TLUN[$cfg]=$((n + 1)); n=$((n + 1))
done

TPORT=$(free_port); start_tgt "$W/tgt" "$TPORT"; tgt_target 1 "$IQN_T"
for cfg in ${CONFIGS//,/ }; do
    case $cfg in
        ram|ramdisk) tgt_lun 1 "${TLUN[$cfg]}" "$SHM/tgt-ram.img" rdwr ;;
        disk) tgt_lun 1 "${TLUN[$cfg]}" "$W/tgt-disk.img" rdwr ;;
    esac
done
RPORT=$(free_port)
while [[ $RPORT == "$TPORT" ]]; do RPORT=$(free_port); done
rm -rf "$W/rt"; mkdir -p "$W/rt"
mkconfig "$W/rt/saveconfig.json" "$RPORT" "$IQN_R" "${RSPECS[@]}"
start_rtarget "$W/rt" "$RPORT"

url() {   # url TARGET CFG
    if [[ $1 == tgt ]]; then echo "iscsi://127.0.0.1:$TPORT/$IQN_T/${TLUN[$2]}"
    else echo "iscsi://127.0.0.1:$RPORT/$IQN_R/${RLUN[$2]}"; fi
}

# --- workloads: name, bytes per I/O, command (URL appended); each prints IOPS ---------
WORKLOADS=(4k-randread-qd32 4k-read-qd32 4k-write-qd32 1m-read-qd8 1m-write-qd8 4k-read-qd1)
PERF_SECS=$((SMOKE ? 2 : 5))
qbench() {   # qbench COUNT DEPTH SIZE [-w] URL -> IOPS
    local count=$1 depth=$2 size=$3 out secs; shift 3
    out=$(timeout 300 qemu-img bench -f raw -t none -c "$count" -d "$depth" -s "$size" "$@" 2>&1) ||
        { echo "$out" >&2; return 1; }
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    [[ -n $secs ]] || { echo "$out" >&2; return 1; }
    python3 -c "print(round($count / max($secs, 1e-6)))"
}
run_workload() {   # run_workload NAME URL -> IOPS on stdout
    local u=$2 out
    case $1 in
        4k-randread-qd32)
            out=$(timeout $((PERF_SECS + 30)) iscsi-perf -t "$PERF_SECS" -m 32 -b 8 -r "$u" 2>&1) ||
                { echo "$out" | tr '\r' '\n' | tail -5 >&2; return 1; }
            out=$(tr '\r' '\n' <<<"$out" | sed -n 's/^iops average \([0-9]*\) .*/\1/p' | tail -n1)
            [[ -n $out ]] && echo "$out" ;;
        4k-read-qd32)  qbench $((400000 / SCALE)) 32 4k "$u" ;;
        4k-write-qd32) qbench $((200000 / SCALE)) 32 4k -w "$u" ;;
        1m-read-qd8)   qbench $((4000 / SCALE)) 8 1M "$u" ;;
        1m-write-qd8)  qbench $((2000 / SCALE)) 8 1M -w "$u" ;;
        4k-read-qd1)   qbench $((40000 / SCALE)) 1 4k "$u" ;;
    esac
}
size_of() { case $1 in 1m-*) echo 1048576 ;; *) echo 4096 ;; esac; }

ERRORS=0
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)   # other work on the machine makes numbers noisy
T0=$SECONDS
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then ORDER=(tgt rtarget); else ORDER=(rtarget tgt); fi
    for cfg in ${CONFIGS//,/ }; do
        for wl in "${WORKLOADS[@]}"; do
            for t in "${ORDER[@]}"; do
                if iops=$(run_workload "$wl" "$(url "$t" "$cfg")"); then
                    echo "$cfg $wl $t $r $iops" >>"$RAW"
                    printf '  round %d  %-8s %-17s %-8s %8s IOPS\n' "$r" "$cfg" "$wl" "$t" "$iops" >&2
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
ELAPSED=$((SECONDS - T0))

# --- table -----------------------------------------------------------------------
TABLE=$(python3 - "$RAW" "$ROUNDS" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
size = lambda wl: 1 << 20 if wl.startswith("1m") else 4096
data = {}
for cfg, wl, t, r, v in rows:
    data.setdefault((cfg, wl), {}).setdefault(t, []).append(v)
def med(vals):
    ok = [int(v) for v in vals if v != "ERR"]
    return (statistics.median(ok), len(vals) - len(ok)) if ok else (None, len(vals))
print("| LUN | workload | tgt IOPS | tgt MB/s | rtarget IOPS | rtarget MB/s | rtarget/tgt |")
print("|-----|----------|---------:|---------:|-------------:|-------------:|------------:|")
for (cfg, wl), per in data.items():
    cells = []
    vals = {}
    for t in ("tgt", "rtarget"):
        m, errs = med(per.get(t, []))
        vals[t] = m
        note = f" ({errs} err)" if errs else ""
        cells += [f"{m:.0f}{note}" if m is not None else "error",
                  f"{m * size(wl) / 1e6:.0f}" if m is not None else "-"]
    ratio = f"{vals['rtarget'] / vals['tgt']:.2f}x" if vals["tgt"] and vals["rtarget"] else "-"
    print(f"| {cfg} | {wl} | " + " | ".join(cells) + f" | {ratio} |")
EOF
)
MACHINE="$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r)"
echo
echo "rtarget vs tgt $(tgtd --version 2>/dev/null | head -n1 || dpkg-query -W -f '${Version}' tgt 2>/dev/null)"
echo "$MACHINE; $ROUNDS round(s), median; ${ELAPSED}s; load average before: $LOAD0"
echo "$TABLE"

if [[ -n $WRITE_MD && -z $SMOKE ]]; then
    MD=$REPO/BENCHMARKS.md
    # shellcheck disable=SC2016  # the backquotes are Markdown
    [[ -f $MD ]] || printf '# Benchmarks\n\nWritten by `bash bench/bench.sh --write-md`; newest last.\n' >"$MD"
    {
        echo
        echo "## $(date -u '+%Y-%m-%d %H:%M UTC') — $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo
        echo "Machine: $MACHINE. tgt $(dpkg-query -W -f '${Version}' tgt 2>/dev/null || echo '?')," \
             "libiscsi $(dpkg-query -W -f '${Version}' libiscsi-bin 2>/dev/null || echo '?')," \
             "QEMU $(qemu-img --version | head -n1 | awk '{print $3}')." \
             "$ROUNDS rounds, A/B alternating, median; configs: $CONFIGS;" \
             "load average before the run: $LOAD0."
        echo
        echo "$TABLE"
    } >>"$MD"
    echo "bench: appended to BENCHMARKS.md" >&2
fi
((ERRORS == 0))
