#!/bin/bash
# bench/rbd.sh — one RBD image on a throw-away single-node Ceph (../shared/tools/ceph/
# ceph-up.sh), three ways, in the same run, order rotating every round, each workload
# ROUNDS times; the table shows medians and the ratios:
#   librbd   qemu-img bench on rbd:rbd/bench (QEMU's rbd driver, librbd in-process:
#            the ceiling an iSCSI gateway can approach)
#   tgt-rbd  tgt's rbd backing store (--bstype rbd, Debian's tgt-rbd) over iSCSI
#   rtarget  rtarget's user:rbd backstore over iSCSI
# The iSCSI initiator is QEMU's libiscsi driver, so all three are driven by the same
# qemu-img bench -f raw -t none with the same parameters:
#   4k-randread-qd32 / 4k-randwrite-qd32  4 KiB requests at a stride of 7919 blocks,
#                                         wrapping (qemu-img bench has no random mode)
#   1m-read-qd8 / 1m-write-qd8            sequential 1 MiB requests
# The image (1 GiB, written in full first so reads find data) has only the layering
# feature: no exclusive lock to hand between the three clients, whose turns alternate.
# librbd's cache is off for all three (rbd_cache=false in the cluster's client
# section, as rtarget sets it and QEMU does for -t none): every write is in the OSD.
# CPU µs/IO: the target process' user+system time per I/O (tgtd, rtarget).
# Client settings: every client reads the same ceph.conf; rtarget adds its own
# (crates/backstore/src/rbd/conn.rs), among them librados_thread_count=1, which
# QEMU leaves at librados' 2, and rbd_non_blocking_aio=false (requests dispatched
# on the submitting thread), which QEMU leaves at true. LIBRBD_OPTS=
# ':librados_thread_count=1:rbd_non_blocking_aio=false' (options QEMU's rbd:
# filename passes to librados) gives the librbd column the same.
#
# A/B: RTARGET_BIN_B=PATH (another build, or a wrapper script that sets CEPH_ARGS and
# execs one) adds a fourth contender, rtarget-B, in the same rotation on the same
# image, and the columns B IOPS, B CPU µs/IO, B/librbd and B/A.
#
# usage: bench/rbd.sh [--rounds N] [--smoke] [--write-md] [--cc NAME]
#   --cc        TCP congestion control of the run, for the cluster, the targets and
#               the initiator (default cubic; "system" keeps the host's; bench/cc.sh)
#   --smoke     one round, ~10x smaller counts: checks every path runs
#   --write-md  append this run's table to BENCHMARKS.md
# Needs target/release/rtarget (RTARGET_BIN overrides), tgtd with tgt-rbd, qemu-img
# with qemu-block-extra (iscsi and rbd drivers), ceph-mon/ceph-osd, rbd.
# MON_PORT / MON_PORT_V1 pick the monitor's ports (free ones by default).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../tests-e2e/lib.sh
source "$HERE/../tests-e2e/lib.sh"
# shellcheck source=cc.sh
source "$HERE/cc.sh"

ROUNDS=3 CC=cubic SMOKE='' WRITE_MD='' SCALE=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --smoke) SMOKE=1 ROUNDS=1 SCALE=10 ;;
        --write-md) WRITE_MD=1 ;;
        --cc) CC=$2; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "rbd.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

need tgtd tgtadm qemu-img rbd ceph-mon ceph-osd python3
[[ -e /usr/lib/tgt/backing-store/bs_rbd.so ]] || need tgt-rbd
[[ -f $TOOLS/ceph/ceph-up.sh ]] || need "$TOOLS/ceph/ceph-up.sh"
mkdir -p "${RTARGET_TEST_WORK:-$REPO/target/test-work}"
W=$(mktemp -d "${RTARGET_TEST_WORK:-$REPO/target/test-work}/bench-rbd.XXXXXX")
CEPH=$W/ceph RAW=$W/raw.txt
: >"$RAW"
IQN_T=iqn.2026-11.org.rtarget:bench-tgt-rbd IQN_R=iqn.2026-11.org.rtarget:bench-rbd
cleanup() {
    set +e
    stop_rtarget 5; RT_PID=${RT_PID_B:-}; stop_rtarget 5; stop_tgt
    bash "$TOOLS/ceph/ceph-down.sh" "$CEPH" --purge >/dev/null 2>&1
    rm -rf "$W"
    bench_cc_restore
}
trap cleanup EXIT
bench_cc "$CC"

MP=${MON_PORT:-$(free_port)} MP1=${MON_PORT_V1:-$(free_port)}
while [[ $MP1 == "$MP" ]]; do MP1=$(free_port); done
MON_PORT=$MP MON_PORT_V1=$MP1 SKIP_SMOKE=1 \
    EXTRA_CONF='[mon]\nmon_data_avail_crit = -1\n[client]\nrbd_cache = false' \
    bash "$TOOLS/ceph/ceph-up.sh" "$CEPH" >"$W/ceph-up.log" 2>&1 ||
    { tail -5 "$W/ceph-up.log" >&2; exit 1; }
CONF=$CEPH/ceph.conf
export CEPH_CONF=$CONF
SIZE=$((SMOKE ? 256 : 1024))
rbd create rbd/bench --size "${SIZE}M" --image-feature layering
rbd bench --io-type write --io-pattern seq --io-size 4M --io-threads 4 \
    --io-total "${SIZE}M" rbd/bench >/dev/null

TPORT=$(free_port); start_tgt "$W/tgt" "$TPORT"; tgt_target 1 "$IQN_T"
tgtadm -C "$TGT_CTL" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 \
    -b rbd/bench --bstype rbd --bsopts "conf=$CONF"
RPORT=$(free_port)
while [[ $RPORT == "$TPORT" ]]; do RPORT=$(free_port); done
mkdir -p "$W/rt"
python3 - "$W/rt/saveconfig.json" "$RPORT" "$IQN_R" "$CONF" "$SIZE" <<'EOF'
import json, sys
out, port, iqn, conf, size = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
so = {"plugin": "user", "name": "bench", "config": f"rbd/rbd/bench;conf={conf}",
      "size": size << 20, "wwn": "5b1c0f2e-1234-4bcd-9ef0-0123456789ab", "attributes": {}}
tpg = {"tag": 1, "enable": True,
       "attributes": {"generate_node_acls": 1, "authentication": 0,
                      "demo_mode_write_protect": 0, "cache_dynamic_acls": 1},
       "parameters": {}, "luns": [{"index": 0, "storage_object": "/backstores/user/bench"}],
       "portals": [{"ip_address": "127.0.0.1", "port": port}], "node_acls": []}
json.dump({"fabric_modules": [], "storage_objects": [so],
           "targets": [{"fabric": "iscsi", "wwn": iqn, "tpgs": [tpg]}]}, open(out, "w"))
EOF
start_rtarget "$W/rt" "$RPORT"
WHO=(librbd tgt rtarget) RT_PID_B='' BPORT=''
if [[ -n ${RTARGET_BIN_B:-} ]]; then
    RT_PID_A=$RT_PID
    BPORT=$(free_port)
    while [[ $BPORT == "$TPORT" || $BPORT == "$RPORT" ]]; do BPORT=$(free_port); done
    mkdir -p "$W/rtb"
    sed "s/\"port\": $RPORT/\"port\": $BPORT/" "$W/rt/saveconfig.json" >"$W/rtb/saveconfig.json"
    RTARGET_BIN=$RTARGET_BIN_B start_rtarget "$W/rtb" "$BPORT"
    RT_PID_B=$RT_PID RT_PID=$RT_PID_A
    WHO+=(rtarget-B)
fi

url() {
    case $1 in
        librbd) echo "rbd:rbd/bench:conf=$CONF${LIBRBD_OPTS:-}" ;;
        tgt) echo "iscsi://127.0.0.1:$TPORT/$IQN_T/1" ;;
        rtarget) echo "iscsi://127.0.0.1:$RPORT/$IQN_R/0" ;;
        rtarget-B) echo "iscsi://127.0.0.1:$BPORT/$IQN_R/0" ;;
    esac
}
pid_of() {
    case $1 in tgt) echo "$TGT_PID" ;; rtarget) echo "$RT_PID" ;; rtarget-B) echo "$RT_PID_B" ;; *) echo '' ;; esac
}
cpu_ticks() {   # user+system clock ticks of PID (0 without one)
    [[ -n $1 ]] || { echo 0; return; }
    awk '{print $14 + $15}' "/proc/$1/stat"
}

WORKLOADS=(4k-randread-qd32 4k-randwrite-qd32 1m-read-qd8 1m-write-qd8)
STRIDE=$((4096 * 7919))
count_of() {
    case $1 in
        4k-randread-qd32) echo $((40000 / SCALE)) ;;
        4k-randwrite-qd32) echo $((20000 / SCALE)) ;;
        1m-read-qd8) echo $((1500 / SCALE)) ;;
        1m-write-qd8) echo $((800 / SCALE)) ;;
    esac
}
args_of() {
    case $1 in
        4k-randread-qd32) echo "-d 32 -s 4k -S $STRIDE" ;;
        4k-randwrite-qd32) echo "-d 32 -s 4k -S $STRIDE -w" ;;
        1m-read-qd8) echo "-d 8 -s 1M" ;;
        1m-write-qd8) echo "-d 8 -s 1M -w" ;;
    esac
}
run() {   # run WORKLOAD WHO -> "IOPS CPU_US_PER_IO"
    local count out secs pid t0 t1 a
    count=$(count_of "$1"); pid=$(pid_of "$2")
    read -ra a <<<"$(args_of "$1")"
    t0=$(cpu_ticks "$pid")
    out=$(timeout 600 qemu-img bench -f raw -t none -c "$count" "${a[@]}" "$(url "$2")" 2>&1) ||
        { echo "$out" | tail -3 >&2; return 1; }
    t1=$(cpu_ticks "$pid")
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    [[ -n $secs ]] || { echo "$out" >&2; return 1; }
    python3 -c "import os; print(round($count / max($secs, 1e-6)), \
round(($t1 - $t0) * 1e6 / os.sysconf('SC_CLK_TCK') / $count, 1))"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
T0=$SECONDS ERRORS=0
N=${#WHO[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    for wl in "${WORKLOADS[@]}"; do
        for ((k = 0; k < N; k++)); do
            t=${WHO[$(((k + r) % N))]}
            if res=$(run "$wl" "$t"); then
                echo "$wl $t $r $res" >>"$RAW"
                printf '  round %d  %-18s %-8s %8s IOPS  %6s us-cpu/io\n' "$r" "$wl" "$t" $res >&2
            else
                echo "$wl $t $r ERR 0" >>"$RAW"
                printf '  round %d  %-18s %-8s    ERROR\n' "$r" "$wl" "$t" >&2
                [[ $t == rtarget* ]] && ERRORS=$((ERRORS + 1))
            fi
        done
    done
done
ELAPSED=$((SECONDS - T0))

TABLE=$(python3 - "$RAW" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
size = lambda wl: 1 << 20 if wl.startswith("1m") else 4096
data = {}
for wl, t, r, v, cpu in rows:
    data.setdefault(wl, {}).setdefault(t, []).append((v, float(cpu)))
ab = any(t == "rtarget-B" for per in data.values() for t in per)
extra = " B IOPS | B CPU µs/IO | B/librbd | B/A |" if ab else ""
print("| workload | librbd IOPS | MB/s | tgt-rbd IOPS | MB/s | CPU µs/IO | rtarget IOPS | MB/s | CPU µs/IO | rtarget/tgt-rbd | rtarget/librbd |" + extra)
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" * 4 if ab else ""))
for wl, per in data.items():
    cells, med, cpus = [], {}, {}
    for t in ("librbd", "tgt", "rtarget") + (("rtarget-B",) if ab else ()):
        ok = [(int(v), c) for v, c in per.get(t, []) if v != "ERR"]
        m = statistics.median(v for v, _ in ok) if ok else None
        cpu = statistics.median(c for _, c in ok) if ok else None
        med[t], cpus[t] = m, cpu
        if t == "rtarget-B":
            continue
        cells += [f"{m:.0f}" if m else "error", f"{m * size(wl) / 1e6:.0f}" if m else "-"]
        if t != "librbd":
            cells.append(f"{cpu:.0f}" if cpu is not None else "-")
    r = lambda a, b: f"{med[a] / med[b]:.2f}x" if med[a] and med[b] else "-"
    b = ""
    if ab:
        m, cpu = med["rtarget-B"], cpus["rtarget-B"]
        b = (f" {m:.0f} |" if m else " error |") + (f" {cpu:.0f} |" if cpu is not None else " - |")
        b += f" {r('rtarget-B', 'librbd')} | {r('rtarget-B', 'rtarget')} |"
    print(f"| {wl} | " + " | ".join(cells) + f" | {r('rtarget', 'tgt')} | {r('rtarget', 'librbd')} |" + b)
EOF
)
MACHINE="$(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), kernel $(uname -r)"
echo
echo "RBD: librbd direct vs tgt-rbd vs rtarget user:rbd; $MACHINE; $ROUNDS round(s), median;" \
     "${ELAPSED}s; TCP congestion control $BENCH_CC; load average before: $LOAD0"
echo "$TABLE"
if [[ -n $WRITE_MD && -z $SMOKE ]]; then
    {
        echo
        echo "## RBD $(date -u '+%Y-%m-%d %H:%M UTC') — $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
        echo
        echo "\`bash bench/rbd.sh --rounds $ROUNDS\`: one 1 GiB RBD image (layering only, written" \
             "in full first) on a single-node Ceph $(dpkg-query -W -f '${Version}' ceph-osd 2>/dev/null)" \
             "(one mon, one OSD on this machine's disk, rbd_cache=false for every client), driven by" \
             "qemu-img bench -f raw -t none: librbd direct (QEMU's rbd driver), tgt" \
             "$(dpkg-query -W -f '${Version}' tgt-rbd 2>/dev/null) --bstype rbd over iSCSI, rtarget" \
             "user:rbd over iSCSI (QEMU's libiscsi driver). Machine: $MACHINE; TCP congestion control $BENCH_CC; load average before:" \
             "$LOAD0; rand = 4 KiB at a stride of 7919 blocks; median of $ROUNDS rounds, order rotating."
        echo
        echo "$TABLE"
    } >>"$REPO/BENCHMARKS.md"
    echo "bench: appended to BENCHMARKS.md" >&2
fi
((ERRORS == 0))
