#!/bin/bash
# tests-e2e/metrics.sh — monitoring under a real initiator's load (issue 16's
# acceptance). rtarget serves a 256 MiB ramdisk LU with metrics on (`set global
# metrics=`); iscsi-perf (libiscsi) reads random 4 KiB blocks, 32 in flight, for
# PERF_SECS (default 8). While it runs:
#   - two scrapes of /metrics a few seconds apart: the LU's read histogram count and
#     sum, its read bytes and the session's command counter all grew, the histogram's
#     buckets hold the reads (some finite bucket counted them, +Inf equals the count),
#     the login is counted as a success, the LU is in the core's queue-depth gauge;
#   - `rtarget top --json 0.25`, started before iscsi-perf and ending after it: the
#     mean IOPS of its frames that lie wholly inside the run (each between two frames
#     with reads) is within 10% of the average iscsi-perf reports, and those frames
#     show a read latency, a queue depth and the one session.
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
PERF_PID= TOP_PID=
cleanup() {
    set +e
    for p in $PERF_PID $TOP_PID; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
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

# top's frames cover the whole run and then some (iscsi-perf logs in first).
rt top --json 0.25 $(((PERF_SECS + 4) * 4)) >"$W/top.json" &
TOP_PID=$!
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
# The second scrape once another 20,000 reads were counted (or iscsi-perf ended).
want=$(($(reads "$W/s1") + 20000))
while scrape "$W/s2" && (($(reads "$W/s2") < want)) && kill -0 "$PERF_PID" 2>/dev/null; do
    sleep 0.05
done
wait "$PERF_PID" || { cat "$W/perf.log" >&2; log "iscsi-perf failed"; exit 1; }
PERF_PID=
wait "$TOP_PID" || { log "rtarget top failed"; exit 1; }
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

rows = []
for line in open(f"{w}/top.json"):
    frame = json.loads(line)
    rows.append(next(r for r in frame["storage_objects"] if r["storage_object"] == so))
busy = [i for i, r in enumerate(rows) if r["iops"] > 0]
# The first and last busy frames hold the run's start and end: only part busy.
inside = rows[busy[0] + 1:busy[-1]] if busy else []
if len(inside) < 12:  # three seconds
    fails.append(f"only {len(inside)} of {len(rows)} top frames inside the run")
else:
    iops = sum(r["iops"] for r in inside) / len(inside)
    ratio = iops / perf_iops
    lat = sum(r["read_lat_us"] for r in inside) / len(inside)
    qd = sum(r["queue_depth"] for r in inside) / len(inside)
    print(f"iscsi-perf: {perf_iops} IOPS; top: {iops:.0f} IOPS ({ratio:.3f}) over "
          f"{len(inside)} frames, read latency {lat:.2f} us, queue depth {qd:.3f}; "
          f"reads counted {count[0]:.0f} -> {count[1]:.0f}")
    if abs(ratio - 1) >= 0.10:
        fails.append(f"top's IOPS {iops:.0f} not within 10% of iscsi-perf's {perf_iops}")
    for r in inside:
        if not (r["read_lat_us"] > 0 and r["queue_depth"] > 0 and r["sessions"] == 1):
            fails.append(f"top row {r}")
for f in fails:
    print("FAIL:", f)
sys.exit(1 if fails else 0)
EOF
rc=$(rt_panics)
[[ $rc == 0 ]] || { log "daemon panics: $rc"; exit 1; }
log "metrics.sh: ok"
