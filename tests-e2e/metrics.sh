#!/bin/bash
# tests-e2e/metrics.sh — monitoring under a real initiator's load (issue 16's
# acceptance). rtarget serves a 256 MiB ramdisk LU with metrics on (`set global
# metrics=`); iscsi-perf (libiscsi) reads random 4 KiB blocks, 32 in flight, for
# PERF_SECS (default 8). While it runs:
#   - two scrapes of /metrics a few seconds apart: the LU's read histogram count and
#     sum, its read bytes and the session's command counter all grew, the histogram's
#     buckets hold the reads (some finite bucket counted them, +Inf equals the count),
#     the login is counted as a success, the LU is in the core's queue-depth gauge;
#   - `rtarget top --json` over one interval covering nearly all of the run: its IOPS
#     are within 10% of the average iscsi-perf reports, and it shows a read latency
#     and a queue depth.
# usage: tests-e2e/metrics.sh        (needs the release binary, iscsi-perf, curl)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"
need iscsi-perf curl python3

PERF_SECS=${PERF_SECS:-8}
IQN=iqn.2026-11.org.rtarget:metrics
SO=/backstores/ramdisk/rd0
W=$(mktemp -d /tmp/rtarget-metrics.XXXXXX)
PERF_PID=
cleanup() {
    set +e
    [[ -n $PERF_PID ]] && kill "$PERF_PID" 2>/dev/null && wait "$PERF_PID" 2>/dev/null
    stop_rtarget 5
    rm -rf "$W"
}
trap cleanup EXIT

PORT=$(free_port)
MPORT=$(free_port)
while [[ $MPORT == "$PORT" ]]; do MPORT=$(free_port); done
mkconfig "$W/saveconfig.json" "$PORT" "$IQN" ramdisk:rd0::256M
start_rtarget "$W" "$PORT"
rt() { "$RTARGET_BIN" --socket "$RT_SOCK" "$@"; }
rt set global "metrics=127.0.0.1:$MPORT" >/dev/null
scrape() { curl -sf --max-time 10 "http://127.0.0.1:$MPORT/metrics" >"$1"; }
# value FILE SERIES: the sample of SERIES (name and labels as printed), 0 if absent.
value() { awk -v s="$2" 'index($0, s " ") == 1 { print $2; found = 1 } END { if (!found) print 0 }' "$1"; }
reads() { value "$1" "rtarget_lu_latency_seconds_count{storage_object=\"$SO\",op=\"read\"}"; }

scrape "$W/s0"
[[ $(reads "$W/s0") == 0 ]] || { log "reads counted before any initiator"; exit 1; }

iscsi-perf -t "$PERF_SECS" -m 32 -b 8 -r "iscsi://127.0.0.1:$PORT/$IQN/0" >"$W/perf.log" 2>&1 &
PERF_PID=$!
# Until the reads flow (an event on the target side, not a guess at a delay).
for ((i = 0; i < 200; i++)); do
    scrape "$W/s1"
    (($(reads "$W/s1") > 0)) && break
    kill -0 "$PERF_PID" 2>/dev/null || { cat "$W/perf.log" >&2; log "iscsi-perf ended early"; exit 1; }
    sleep 0.05
done
(($(reads "$W/s1") > 0)) || { log "no reads counted within 10 s"; exit 1; }
# One top frame over nearly the whole run (iscsi-perf averages from its first read
# to PERF_SECS later; the frame ends half a second before that), so a machine
# whose speed changes during the run moves both figures alike.
rt top --json "$((PERF_SECS - 1)).5" 1 >"$W/top.json"
scrape "$W/s2"
wait "$PERF_PID" || { cat "$W/perf.log" >&2; log "iscsi-perf failed"; exit 1; }
PERF_PID=
PERF_IOPS=$(tr '\r' '\n' <"$W/perf.log" | sed -n 's/^iops average \([0-9]*\) .*/\1/p' | tail -n1)
[[ -n $PERF_IOPS ]] || { cat "$W/perf.log" >&2; log "no average in iscsi-perf's output"; exit 1; }

python3 - "$W" "$SO" "$PERF_IOPS" <<'EOF'
import json, sys

w, so, perf_iops = sys.argv[1], sys.argv[2], int(sys.argv[3])

def parse(path):
    out = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        out[series] = float(value)
    return out

s1, s2 = parse(f"{w}/s1"), parse(f"{w}/s2")
lu = f'storage_object="{so}"'
rd = f'{lu},op="read"'
fails = []

def grew(series):
    a, b = s1.get(series, 0), s2.get(series)
    if b is None or not b > a:
        fails.append(f"{series}: {a} -> {b}")
    return (a, b)

count = grew(f"rtarget_lu_latency_seconds_count{{{rd}}}")
grew(f"rtarget_lu_latency_seconds_sum{{{rd}}}")
grew(f"rtarget_lu_read_bytes_total{{{lu}}}")
session = [k for k in s2 if k.startswith("rtarget_session_lun_commands_total{") and lu in k]
if len(session) != 1:
    fails.append(f"one session series for {so}: {session}")
else:
    grew(session[0])
buckets = {k: v for k, v in s2.items()
           if k.startswith("rtarget_lu_latency_seconds_bucket{") and rd in k}
inf = [v for k, v in buckets.items() if 'le="+Inf"' in k]
finite = [v for k, v in buckets.items() if 'le="+Inf"' not in k]
if inf != [count[1]]:
    fails.append(f"+Inf bucket {inf} != count {count[1]}")
if len(finite) < 20 or max(finite) != count[1] or min(finite) == count[1]:
    fails.append(f"buckets not filled by the reads: {sorted(finite)}")
if s2.get('rtarget_iscsi_logins_total{result="success",reason="normal"}', 0) < 1:
    fails.append("the login is not counted")
if f"rtarget_lu_in_flight{{{lu}}}" not in s2:
    fails.append("no queue depth gauge")

frame = json.loads(open(f"{w}/top.json").read().splitlines()[-1])
row = next(r for r in frame["storage_objects"] if r["storage_object"] == so)
ratio = row["iops"] / perf_iops
print(f"iscsi-perf: {perf_iops} IOPS; top: {row['iops']:.0f} IOPS ({ratio:.3f}), "
      f"read latency {row['read_lat_us']:.1f} us, queue depth {row['queue_depth']:.2f}, "
      f"in flight {row['in_flight']}; reads counted {count[0]:.0f} -> {count[1]:.0f}")
if abs(ratio - 1) >= 0.10:
    fails.append(f"top's IOPS {row['iops']:.0f} not within 10% of iscsi-perf's {perf_iops}")
if not (row["read_lat_us"] > 0 and row["queue_depth"] > 0 and row["sessions"] == 1):
    fails.append(f"top row {row}")
for f in fails:
    print("FAIL:", f)
sys.exit(1 if fails else 0)
EOF
rc=$(rt_panics)
[[ $rc == 0 ]] || { log "daemon panics: $rc"; exit 1; }
log "metrics.sh: ok"
