#!/bin/bash
# bench/vhost.sh — rtarget's vhost-user-scsi target vs qemu-storage-daemon's
# vhost-user-blk export, on the same file, driven by a host-side vhost-user
# frontend written for this (crates/vhost/examples/vhost_bench.rs: memfd guest
# memory, QUEUES split request virtqueues with one driver thread each, QD
# requests in flight in total, QD/QUEUES per queue; no guest, so TCG does not
# distort it). QUEUES defaults to 2: QEMU gives a guest one queue per vCPU
# (num_queues / num-queues default), and this machine has 2 cores; both vhost
# targets get the same number of queues. And the same LU over rtarget's iSCSI for reference (driven by
# qemu-img bench through QEMU's libiscsi driver: random = a stride of 7919
# blocks, every block once, no two neighbours in a row). Workloads: 4 KiB
# random read QD32, 4 KiB random write QD32, 1 MiB sequential read QD8; each
# prints IOPS, MB/s and the target process' CPU time (user+system, all
# threads) per I/O. Alternating order, ROUNDS rounds, medians; the load
# average before and after (other work on the machine makes IOPS noisy, CPU
# per I/O much less so).
#
# The iSCSI row stays one session at the same QD, what a guest's initiator
# uses for one LU.
#
# usage: bench/vhost.sh [--rounds N] [--secs S] [--size BYTES] [--queues Q] [--no-iscsi]
# Needs target/release/rtarget (RTARGET_BIN overrides), qemu-storage-daemon,
# qemu-img (with the iscsi block driver). Environment reaches rtarget (e.g.
# RTARGET_VHOST_OFFLOAD_BYTES, RTARGET_IO_WORKERS for comparisons).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ROUNDS=3 SECS=5 SIZE=$((1 << 30)) ISCSI=1 QUEUES=2
while [[ $# -gt 0 ]]; do
    case $1 in
        --no-iscsi) ISCSI=0; shift; continue ;;
        --rounds) ROUNDS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --size) SIZE=$2; shift ;;
        --queues) QUEUES=$2; shift ;;
        *) echo "vhost.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
RT=${RTARGET_BIN:-$REPO/target/release/rtarget}
command -v qemu-storage-daemon >/dev/null || { echo "vhost.sh: needs qemu-storage-daemon" >&2; exit 1; }
(cd "$REPO" && cargo build -q --release -p vhost-scsi --example vhost_bench)
FE=$REPO/target/release/examples/vhost_bench
W=${RTARGET_TEST_WORK:-$REPO/target/test-work}/bench-vhost
rm -rf "$W"; mkdir -p "$W/rt"
IMG=$W/disk.img
# Real data, so reads never hit holes; page cache warm for both.
head -c "$SIZE" /dev/urandom >"$IMG"
RT_PID='' QSD_PID=''
cleanup() {
    set +e
    [[ -n $RT_PID ]] && kill -TERM "$RT_PID" && wait "$RT_PID"
    [[ -n $QSD_PID ]] && kill -TERM "$QSD_PID" && wait "$QSD_PID"
    rm -rf "$W"
}
trap cleanup EXIT
wait_sock() { local i; for ((i = 0; i < 200; i++)); do [[ -S $1 ]] && return 0; sleep 0.05; done; return 1; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setpriv --pdeathsig TERM "$RT" serve --listen "127.0.0.1:$PORT" --config "$W/rt/saveconfig.json" \
    --state-dir "$W/rt" --socket "$W/rt/api.sock" >"$W/rt/rtarget.log" 2>&1 &
RT_PID=$!
wait_sock "$W/rt/api.sock" || { cat "$W/rt/rtarget.log" >&2; exit 1; }
WWN=naa.5001405abcdef012
cli() { "$RT" --socket "$W/rt/api.sock" "$@" >/dev/null; }
cli /backstores/fileio create d0 "$IMG" "$SIZE"
cli /vhost create "$WWN" "socket=$W/rt.sock"
cli "/vhost/$WWN/tpg1/luns" create /backstores/fileio/d0
# The same LU over iSCSI (demo mode: no ACL, no authentication).
IQN=iqn.2026-12.org.rtarget:vhost-bench
cli /iscsi create "$IQN"
cli "/iscsi/$IQN/tpg1" set attribute authentication=0 generate_node_acls=1 demo_mode_write_protect=0
cli "/iscsi/$IQN/tpg1/luns" create /backstores/fileio/d0
ISCSI_URL=iscsi://127.0.0.1:$PORT/$IQN/0

setpriv --pdeathsig TERM qemu-storage-daemon \
    --blockdev "{\"driver\":\"file\",\"node-name\":\"f0\",\"filename\":\"$IMG\",\"aio\":\"threads\",\"cache\":{\"direct\":false}}" \
    --export "{\"type\":\"vhost-user-blk\",\"id\":\"e0\",\"node-name\":\"f0\",\"writable\":true,\"num-queues\":$QUEUES,\"addr\":{\"type\":\"unix\",\"path\":\"$W/qsd.sock\"}}" \
    >"$W/qsd.log" 2>&1 &
QSD_PID=$!
wait_sock "$W/qsd.sock" || { cat "$W/qsd.log" >&2; exit 1; }

WORKLOADS=("4k-randread-qd32 randread 4096 32" "4k-randwrite-qd32 randwrite 4096 32" "1m-read-qd8 read 1048576 8")
# rtarget's CPU seconds (user+system, all threads) so far.
cpu_secs() { python3 -c 'import os,sys
f=open(f"/proc/{sys.argv[1]}/stat").read().rsplit(")",1)[1].split()
print((int(f[11])+int(f[12]))/os.sysconf("SC_CLK_TCK"))' "$1"; }
# iscsi RW BS QD: the same workload over rtarget's iSCSI, in the frontend's format.
iscsi() {
    local rw=$1 bs=$2 qd=$3 count args=() out secs c0 c1
    if ((bs >= 1 << 20)); then count=$((SECS * 1500)); else count=$((SECS * 60000)); fi
    [[ $rw == rand* ]] && args+=(-S $((bs * 7919)))
    [[ $rw == *write ]] && args+=(-w)
    c0=$(cpu_secs "$RT_PID")
    out=$(timeout 300 qemu-img bench -f raw -t none -c "$count" -d "$qd" -s "$bs" "${args[@]}" "$ISCSI_URL" 2>&1) ||
        { echo "$out" >&2; return 1; }
    c1=$(cpu_secs "$RT_PID")
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
    python3 -c "n,s,c=$count,max($secs,1e-6),$c1-$c0
print(f'ios={n} errors=0 secs={s:.2f} iops={n/s:.0f} mbps={n*$bs/s/1e6:.1f} cpu_us_per_io={c/n*1e6:.1f}')"
}
TARGETS=(rtarget qsd); ((ISCSI)) && TARGETS+=(iscsi)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
RAW=$W/raw.txt; : >"$RAW"
for ((r = 0; r < ROUNDS; r++)); do
    # Rotate who goes first.
    ORDER=("${TARGETS[@]:r % ${#TARGETS[@]}}" "${TARGETS[@]:0:r % ${#TARGETS[@]}}")
    for wl in "${WORKLOADS[@]}"; do
        read -r name rw bs qd <<<"$wl"
        for t in "${ORDER[@]}"; do
            case $t in
                rtarget) args=(--socket "$W/rt.sock" --kind scsi --pid "$RT_PID") ;;
                qsd) args=(--socket "$W/qsd.sock" --kind blk --pid "$QSD_PID") ;;
            esac
            if [[ $t == iscsi ]]; then out=$(iscsi "$rw" "$bs" "$qd")
            else out=$("$FE" "${args[@]}" --rw "$rw" --bs "$bs" --qd "$qd" --queues "$QUEUES" --secs "$SECS" --size "$SIZE"); fi
            echo "$name $t $out" | tee -a "$RAW" >&2
        done
    done
done
echo "request queues per vhost target: $QUEUES (QD split over them); iSCSI: one session"
echo "load average: before $LOAD0, after $(cut -d' ' -f1-3 /proc/loadavg)"
# name target iops(median) MB/s cpu-us/io ; ratio rtarget/qsd
python3 - "$RAW" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    f = line.split(); kv = dict(x.split("=") for x in f[2:])
    rows.setdefault((f[0], f[1]), []).append(kv)
iscsi = any(k[1] == "iscsi" for k in rows)
head = "| workload | rtarget vhost-user-scsi IOPS | MB/s | CPU µs/IO | q-s-d vhost-user-blk IOPS | MB/s | CPU µs/IO |"
line = "|---|---:|---:|---:|---:|---:|---:|"
if iscsi:
    head += " rtarget iSCSI IOPS | MB/s | CPU µs/IO |"
    line += "---:|---:|---:|"
head += " vhost/q-s-d |" + (" vhost/iSCSI |" if iscsi else "")
line += "---:|" + ("---:|" if iscsi else "")
print(head); print(line)
for name in dict.fromkeys(k[0] for k in rows):
    m = {}
    for t in ("rtarget", "qsd", "iscsi"):
        rs = rows.get((name, t))
        if rs:
            m[t] = [st.median(float(r[k]) for r in rs) for k in ("iops", "mbps", "cpu_us_per_io")]
    cells = [name]
    for t in ("rtarget", "qsd") + (("iscsi",) if iscsi else ()):
        a = m[t]
        cells += [f"{a[0]:.0f}", f"{a[1]:.0f}", f"{a[2]:.1f}"]
    cells.append(f"{m['rtarget'][0] / m['qsd'][0]:.2f}x")
    if iscsi:
        cells.append(f"{m['rtarget'][0] / m['iscsi'][0]:.2f}x")
    print("| " + " | ".join(cells) + " |")
# Per round (the same round's runs compared; order rotates every round).
for name in dict.fromkeys(k[0] for k in rows):
    r = [float(x["iops"]) for x in rows[(name, "rtarget")]]
    out = [name + ": vhost/q-s-d " + " ".join(f"{a / float(b['iops']):.2f}" for a, b in zip(r, rows[(name, "qsd")]))]
    if iscsi:
        out.append("vhost/iSCSI " + " ".join(f"{a / float(b['iops']):.2f}" for a, b in zip(r, rows[(name, "iscsi")])))
    print("per round, " + ", ".join(out))
PY
