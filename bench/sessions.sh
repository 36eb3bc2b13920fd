#!/bin/bash
# bench/sessions.sh — does throughput grow with sessions? N concurrent iscsi-perf
# initiators (one session each, distinct initiator names so no login reinstates
# another's session), each QD32 4 KiB random read, against one rtarget ramdisk LU;
# for every N: total IOPS, the ratio to one session, the daemon's CPU time per I/O
# (utime+stime of all its threads / I/Os) and how busy the whole machine was (the
# initiators share its cores: when the machine is saturated, more sessions cannot
# add throughput). The order of the N values flips every round; medians.
#
# --connections "1 2": instead, ONE session spread over C connections (MC/S, the TPG
# allows the largest C), QD32 over the whole session, driven by the test initiator
# crates/iscsi/examples/mcs_perf.rs (libiscsi and open-iscsi open one connection per
# session); build it first: cargo build --release -p iscsi --example mcs_perf
# (MCS_PERF overrides the binary).
#
# usage: bench/sessions.sh [--rounds N] [--sessions "1 4 16" | --connections "1 2"]
#                          [--secs S] [--lun-size 1G] [--cc NAME]
#   --cc   TCP congestion control of the run (default cubic; "system" keeps the host's;
#          bench/cc.sh says why)
# Needs target/release/rtarget (RTARGET_BIN overrides) and libiscsi-bin. KEEP=1 keeps
# the work directory (each initiator's output, the daemon's log). Takes ~1 min.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"
# shellcheck source=cc.sh
source "$HERE/cc.sh"

ROUNDS=3 SESSIONS="1 4 16" SECS=5 SIZE=1G CONNS='' CC=cubic
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --cc) CC=$2; shift ;;
        --sessions) SESSIONS=$2; shift ;;
        --connections) CONNS=$2; SESSIONS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --lun-size) SIZE=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "sessions.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
need iscsi-perf python3
MCS_PERF=${MCS_PERF:-$REPO/target/release/examples/mcs_perf}
if [[ -n $CONNS && ! -x $MCS_PERF ]]; then
    echo "sessions.sh: $MCS_PERF missing: cargo build --release -p iscsi --example mcs_perf" >&2
    exit 2
fi

W=$(mktemp -d /tmp/rtarget-sessions.XXXXXX)
IQN=iqn.2026-11.org.rtarget:sessions
cleanup() { set +e; stop_rtarget 5; [[ -n ${KEEP:-} ]] || rm -rf "$W"; bench_cc_restore; }
trap cleanup EXIT
bench_cc "$CC"
PORT=$(free_port)
mkconfig "$W/saveconfig.json" "$PORT" "$IQN" "ramdisk:rd0::$SIZE"
if [[ -n $CONNS ]]; then
    python3 -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p))
for t in c["targets"]:
    for g in t["tpgs"]: g.setdefault("parameters", {})["MaxConnections"] = sys.argv[2]
json.dump(c, open(p, "w"), indent=2)' "$W/saveconfig.json" "$(tr ' ' '\n' <<<"$CONNS" | sort -n | tail -n1)"
fi
start_rtarget "$W" "$PORT"
URL="iscsi://127.0.0.1:$PORT/$IQN/0"

TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime, all threads
machine() { awk '/^cpu /{print $2+$3+$4+$7+$8, $2+$3+$4+$5+$6+$7+$8}' /proc/stat; }   # busy total

# run_n N -> "IOPS IOS ERRORS INIT_TICKS": N initiators at once, each for SECS
# seconds; INIT_TICKS is the CPU they used (this subshell's waited-for children).
run_n() {
    local n=$1 k pids=() total=0 ios=0 errs=0 iops ticks me=$BASHPID
    if [[ -n $CONNS ]]; then   # one session, n connections: one initiator process
        timeout $((SECS + 30)) "$MCS_PERF" "127.0.0.1:$PORT" "$IQN" "$n" 32 "$SECS" >"$W/out.0" 2>&1 || true
        ticks=$(awk '{print $16 + $17}' "/proc/$me/stat")
        iops=$(sed -n 's/^iops \([0-9]*\)$/\1/p' "$W/out.0")
        if [[ -z $iops ]]; then tail -3 "$W/out.0" >&2; echo "0 0 1 $ticks"; return; fi
        echo "$iops $((iops * SECS)) 0 $ticks"; return
    fi
    for ((k = 0; k < n; k++)); do
        timeout $((SECS + 30)) iscsi-perf -i "iqn.2026-11.org.rtarget:init$k" -t "$SECS" \
            -m 32 -b 8 -r "$URL" >"$W/out.$k" 2>&1 &
        pids+=($!)
    done
    for ((k = 0; k < n; k++)); do wait "${pids[k]}" || true; done
    ticks=$(awk '{print $16 + $17}' "/proc/$me/stat")   # cutime + cstime
    for ((k = 0; k < n; k++)); do
        iops=$(tr '\r' '\n' <"$W/out.$k" | sed -n 's/^iops average \([0-9]*\) .*/\1/p' | tail -n1)
        if [[ -z $iops ]]; then errs=$((errs + 1)); tr '\r' '\n' <"$W/out.$k" | tail -3 >&2; continue; fi
        total=$((total + iops)) ios=$((ios + iops * SECS))
    done
    echo "$total $ios $errs $ticks"
}

RAW=$W/raw.txt; : >"$RAW"
UNIT='session(s)'; [[ -z $CONNS ]] || UNIT='connection(s)'

read -ra NS <<<"$SESSIONS"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average before: $LOAD0; TCP congestion control $BENCH_CC" >&2
for ((r = 1; r <= ROUNDS; r++)); do
    order=("${NS[@]}")
    if ! ((r % 2)); then for ((i = 0; i < ${#NS[@]}; i++)); do order[i]=${NS[${#NS[@]} - 1 - i]}; done; fi
    for n in "${order[@]}"; do
        c0=$(cpu_ticks "$RT_PID"); read -r b0 t0 < <(machine)
        read -r iops ios errs iticks < <(run_n "$n")
        c1=$(cpu_ticks "$RT_PID"); read -r b1 t1 < <(machine)
        kill -0 "$RT_PID" 2>/dev/null || { echo "sessions.sh: rtarget died" >&2; tail -5 "$RT_LOG" >&2; exit 1; }
        cpu=$(python3 -c "print(round(($c1 - $c0) * 1e6 / $TCK / max($ios, 1), 2))")
        busy=$(python3 -c "print(round(100 * ($b1 - $b0) / max($t1 - $t0, 1)))")
        # The I/O path's share of the machine (daemon + initiators, in CPUs): on a
        # busy machine one session gets fewer CPUs than four, whatever rtarget does.
        path=$(python3 -c "print(round(($c1 - $c0 + $iticks) / $TCK / $SECS, 2))")
        icpu=$(python3 -c "print(round($iticks * 1e6 / $TCK / max($ios, 1), 2))")
        echo "$n $iops $cpu $busy $errs $path $icpu" >>"$RAW"
        printf "  round %d  %3d %s %8d IOPS %6s us-cpu/io (initiators %s)  path %s CPUs  machine %3s%% busy  %d failed\n" \
            "$r" "$n" "$UNIT" "$iops" "$cpu" "$icpu" "$path" "$busy" "$errs" >&2
    done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
echo "$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1); $ROUNDS round(s), median;" \
     "load average before: $LOAD0, after: $LOAD1"
python3 - "$RAW" "${CONNS:+1}" <<'EOF'
import statistics, sys
data = {}
for line in open(sys.argv[1]):
    n, iops, cpu, busy, errs, path, icpu = line.split()
    data.setdefault(int(n), []).append(
        (int(iops), float(cpu), int(busy), int(errs), float(path), float(icpu)))
med = lambda rows, k: statistics.median(r[k] for r in rows)
base = med(data[min(data)], 0) if data else 0
mcs = sys.argv[2:] == ["1"]
what = "connections of 1 session, QD32 in all" if mcs else "sessions x QD32"
one = "1 connection" if mcs else "1 session"
print(f"| {what} | total IOPS | vs {one} | rtarget us-cpu/io | initiators us-cpu/io"
      " | CPUs used (rtarget + initiators) | machine busy | failed |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for n in sorted(data):
    rows = data[n]
    iops = med(rows, 0)
    ratio = f"{iops / base:.2f}x" if base else "-"
    print(f"| {n} | {iops:.0f} | {ratio} | {med(rows, 1):.2f} | {med(rows, 5):.2f}"
          f" | {med(rows, 4):.2f} | {med(rows, 2):.0f}% | {sum(r[3] for r in rows)} |")
fails = sum(r[3] for rows in data.values() for r in rows)
sys.exit(1 if fails else 0)
EOF
