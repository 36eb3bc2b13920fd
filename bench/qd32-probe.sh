#!/bin/bash
# bench/qd32-probe.sh — what differs between a fast and a slow round of ramdisk
# 4 KiB reads at QD32 (BENCHMARKS.md, "Session 9: the two modes of ramdisk 4 KiB
# reads at QD32"). One daemon (BIN) with a 1 GiB ramdisk (written through first),
# then ROUNDS rounds of bench/iscsi-load.c load --qd 32 --bs 4096 --time 4 per
# workload (read: sequential, randread: --rand), each on a new session. Per round:
#   IOPS, daemon and initiator CPU µs per I/O, CPU time of other processes in the
#   round (load from elsewhere), the vCPUs' steal time (the host's), cpu-probe
#   pingpong/smt before and after (the machine's own speed), the busy poll's
#   waits per I/O (metrics), per-thread CPU placement, migrations and switches
#   (qd32-probe-sample.py), syscalls and context switches per I/O of both
#   processes (perf stat; counting them costs a little throughput), and the
#   connection's TCP state (ss -tinm) mid-round.
#
# usage: bench/qd32-probe.sh BIN ROUNDS [read] [randread]
# Run it under the benchmark lock; needs cc, perf, ss, python3.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"
[[ $# -ge 2 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
need cc; need perf; need ss; need python3
BIN=$(realpath "$1") ROUNDS=$2; shift 2
WLS=${*:-read}
W=$(mktemp -d /tmp/rtarget-qd32probe.XXXXXX)
cc -O2 -o "$W/iscsi-load" "$HERE/iscsi-load.c"
cc -O2 -pthread -o "$W/cpu-probe" "$HERE/cpu-probe.c"
IQN=iqn.2026-11.org.rtarget:probe
port=$(free_port) mport=$(free_port)
while [[ $mport == "$port" ]]; do mport=$(free_port); done
mkconfig "$W/saveconfig.json" "$port" "$IQN" "ramdisk:rd0::1G"
"$BIN" serve --listen "127.0.0.1:$port" --config "$W/saveconfig.json" --state-dir "$W" \
    --socket "$W/api.sock" --metrics "127.0.0.1:$mport" >"$W/log" 2>&1 &
PID=$!
trap 'kill $PID; wait $PID; rm -rf "$W"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$W/log" && break; sleep 0.1; done
"$W/iscsi-load" load 127.0.0.1 "$port" "$IQN" 0 --qd 8 --bs 1048576 --write --time 3 >/dev/null
polls() {
    python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
        "http://127.0.0.1:$mport/metrics" | awk '/busy_poll/ && !/^#/ {printf "%s=%s ", $1, $2}'
}
busy() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8}' /proc/stat; }   # all CPUs, ticks
steal() { awk '/^cpu / {print $9}' /proc/stat; }   # ticks the host ran something else on our vCPUs
per_io() { awk -F, -v n="$1" '/sys_enter/ {printf "syscalls %.3f", $1 / n} /context/ {printf " cs %.4f", $1 / n}' "$2"; }
TCK=$(getconf CLK_TCK)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); daemon $(grep AnonHuge /proc/$PID/smaps_rollup | tr -s ' ')"
for ((r = 1; r <= ROUNDS; r++)); do
    for wl in $WLS; do
        fl=(); [[ $wl == randread ]] && fl=(--rand)
        pp=$("$W/cpu-probe" pingpong) sm0=$("$W/cpu-probe" smt) p0=$(polls)
        s0=$(busy) st0=$(steal) c0=$(awk '{print $14 + $15}' "/proc/$PID/stat")
        "$W/iscsi-load" load 127.0.0.1 "$port" "$IQN" 0 --qd 32 --bs 4096 --time 4 "${fl[@]}" >"$W/out" &
        LP=$!
        # perf over 3.5 s of the 4 s round: counts below are scaled by 3.5/4.
        perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$PID" -o "$W/perfd" -- sleep 3.5 &
        PD=$!
        perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$LP" -o "$W/perfl" -- sleep 3.5 &
        PL=$!
        (sleep 2; ss -tinm "sport = :$port" >"$W/ss") &
        python3 "$HERE/qd32-probe-sample.py" "$PID" "$LP" >"$W/samp" || true
        wait "$LP"
        s1=$(busy) st1=$(steal) c1=$(awk '{print $14 + $15}' "/proc/$PID/stat") p1=$(polls) sm1=$("$W/cpu-probe" smt)
        wait "$PD" "$PL" || true
        read -r iops count _ icpu <"$W/out"
        echo "round $r $wl: IOPS $iops daemon-cpu/io $(python3 -c "print(round(($c1 - $c0) * 1e6 / $TCK / $count, 2))")" \
            "init-cpu/io $icpu other-processes-cpu-s $(python3 -c "print(round(($s1 - $s0 - $c1 + $c0) / $TCK - $icpu * $count / 1e6, 2))")" \
            "steal-s $(python3 -c "print(round(($st1 - $st0) / $TCK, 2))")"
        echo "  before: $pp; $sm0"
        echo "  after:  $sm1"
        python3 - "$p0" "$p1" "$count" <<'PY'
import re, sys
def parse(s): return {k: float(v) for k, v in re.findall(r'(\S+)=(\S+)', s)}
a, b, n = parse(sys.argv[1]), parse(sys.argv[2]), int(sys.argv[3])
name = lambda k: re.sub(r'.*result=|[{}"]', "", k)
waits = " ".join(f"{name(k)}={(b[k] - a.get(k, 0)) / n:.4f}" for k in b if "result" in k)
spin = " ".join(f"{b[k] - a.get(k, 0):.3f}" for k in b if "spin" in k)
print(f"  busy poll waits per I/O: {waits}; spinning (s): {spin}")
PY
        cat "$W/samp"
        n=$((count * 7 / 8))
        echo "  per I/O daemon: $(per_io "$n" "$W/perfd"); initiator: $(per_io "$n" "$W/perfl")"
        grep -v '^State\|^Recv' "$W/ss" | tr -s ' ' | grep -o 'skmem:([^)]*)\|cwnd:[0-9]*\|rcv_space:[0-9]*\|snd_wnd:[0-9]*\|rwnd_limited:[^ ]*' |
            tr '\n' ' ' | sed 's/^/  tcp: /; s/$/\n/'
    done
done
