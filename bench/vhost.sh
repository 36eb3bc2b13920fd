#!/bin/bash
# bench/vhost.sh — rtarget's vhost-user-scsi target vs qemu-storage-daemon's
# vhost-user-blk export, on the same file, driven by a host-side vhost-user
# frontend written for this (crates/vhost/examples/vhost_bench.rs: memfd guest
# memory, one split virtqueue, N requests in flight; no guest, so TCG does not
# distort it). Workloads: 4 KiB random read QD32, 4 KiB random write QD32,
# 1 MiB sequential read QD8; each prints IOPS, MB/s and the target process'
# CPU time (user+system, all threads) per I/O. A/B alternating, ROUNDS rounds,
# medians.
#
# usage: bench/vhost.sh [--rounds N] [--secs S] [--size BYTES]
# Needs target/release/rtarget (RTARGET_BIN overrides), qemu-storage-daemon.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ROUNDS=3 SECS=5 SIZE=$((1 << 30))
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --size) SIZE=$2; shift ;;
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

setpriv --pdeathsig TERM qemu-storage-daemon \
    --blockdev "{\"driver\":\"file\",\"node-name\":\"f0\",\"filename\":\"$IMG\",\"aio\":\"threads\",\"cache\":{\"direct\":false}}" \
    --export "{\"type\":\"vhost-user-blk\",\"id\":\"e0\",\"node-name\":\"f0\",\"writable\":true,\"num-queues\":1,\"addr\":{\"type\":\"unix\",\"path\":\"$W/qsd.sock\"}}" \
    >"$W/qsd.log" 2>&1 &
QSD_PID=$!
wait_sock "$W/qsd.sock" || { cat "$W/qsd.log" >&2; exit 1; }

WORKLOADS=("4k-randread-qd32 randread 4096 32" "4k-randwrite-qd32 randwrite 4096 32" "1m-read-qd8 read 1048576 8")
RAW=$W/raw.txt; : >"$RAW"
for ((r = 0; r < ROUNDS; r++)); do
    if ((r % 2)); then ORDER=(qsd rtarget); else ORDER=(rtarget qsd); fi
    for wl in "${WORKLOADS[@]}"; do
        read -r name rw bs qd <<<"$wl"
        for t in "${ORDER[@]}"; do
            if [[ $t == rtarget ]]; then args=(--socket "$W/rt.sock" --kind scsi --pid "$RT_PID")
            else args=(--socket "$W/qsd.sock" --kind blk --pid "$QSD_PID"); fi
            out=$("$FE" "${args[@]}" --rw "$rw" --bs "$bs" --qd "$qd" --secs "$SECS" --size "$SIZE")
            echo "$name $t $out" | tee -a "$RAW" >&2
        done
    done
done
# name target iops(median) MB/s cpu-us/io ; ratio rtarget/qsd
python3 - "$RAW" <<'PY'
import sys, statistics as st
rows = {}
for line in open(sys.argv[1]):
    f = line.split(); kv = dict(x.split("=") for x in f[2:])
    rows.setdefault((f[0], f[1]), []).append(kv)
print("| workload | rtarget vhost-user-scsi IOPS | MB/s | CPU us/IO | qemu-storage-daemon vhost-user-blk IOPS | MB/s | CPU us/IO | ratio |")
print("|---|---|---|---|---|---|---|---|")
for name in dict.fromkeys(k[0] for k in rows):
    m = {}
    for t in ("rtarget", "qsd"):
        rs = rows[(name, t)]
        m[t] = [st.median(float(r[k]) for r in rs) for k in ("iops", "mbps", "cpu_us_per_io")]
    a, b = m["rtarget"], m["qsd"]
    print(f"| {name} | {a[0]:.0f} | {a[1]:.0f} | {a[2]:.1f} | {b[0]:.0f} | {b[1]:.0f} | {b[2]:.1f} | {a[0]/b[0]:.2f}x |")
PY
