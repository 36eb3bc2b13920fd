#!/bin/bash
# conformance/lanes.sh MATRIX [run.sh options...]: conformance/run.sh --check over the
# comma-separated MATRIX in two lanes side by side (CI's conformance step). Each
# configuration is its own daemon on its own port (the lanes draw from disjoint port
# ranges), and iscsi-test-cu mostly waits on round trips, so two lanes take about
# half the wall-clock time of one on 2 cores. Exit status 1 if either lane fails;
# both lanes' output is printed, lane by lane.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[[ $# -ge 1 ]] || { echo "usage: lanes.sh CFG[,CFG...] [run.sh options]" >&2; exit 2; }
IFS=, read -ra CFGS <<<"$1"; shift
LANE1=() LANE2=()
for i in "${!CFGS[@]}"; do
    if ((i % 2 == 0)); then LANE1+=("${CFGS[i]}"); else LANE2+=("${CFGS[i]}"); fi
done
LOG1=$(mktemp) LOG2=$(mktemp)
trap 'rm -f "$LOG1" "$LOG2"' EXIT
join() { local IFS=,; echo "$*"; }
RC1=0 RC2=0
PORT_RANGE=13300-13649 bash "$HERE/run.sh" --check --matrix "$(join "${LANE1[@]}")" "$@" >"$LOG1" 2>&1 &
P1=$!
if ((${#LANE2[@]})); then
    PORT_RANGE=13650-13999 bash "$HERE/run.sh" --check --matrix "$(join "${LANE2[@]}")" "$@" >"$LOG2" 2>&1 || RC2=$?
fi
wait "$P1" || RC1=$?
echo "---- lane 1: ${LANE1[*]} (exit $RC1)"; cat "$LOG1"
echo "---- lane 2: ${LANE2[*]:-none} (exit $RC2)"; cat "$LOG2"
((RC1 == 0 && RC2 == 0))
