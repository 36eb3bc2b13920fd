#!/bin/bash
# bench/loopback.sh — the loopback fabric's ublk disk vs the kernel's loop
# device, on the same backing file, in the same Linux 6.12 guest (ublk_drv):
# rtarget runs in the guest (GUEST_OVERLAY) and serves a fileio LUN over the
# file as /dev/ublkb0; `losetup` puts /dev/loop0 over the same file. Both are
# driven by bench/dio.c (built static here; the guest has no fio): O_DIRECT,
# one request at a time, SECS seconds per run: sequential 1 MiB read/write,
# random 4 KiB read/write. Each round runs every workload on both devices
# back to back, the order flipping every round; the table shows medians and
# the ratio ublk/loop. Under TCG (no KVM) the absolute numbers are those of an
# emulated CPU: only the ratio within one run means something.
#
# usage: bench/loopback.sh [--rounds N] [--secs S] [--size MIB]
# Needs target/release/rtarget (RTARGET_BIN overrides), gcc with a static libc,
# the 6.12 guest (built by shared/tools/guest/build-guest.sh KERNEL=6.12).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
ROUNDS=3 SECS=3 SIZE_MB=256
while [[ $# -gt 0 ]]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --size) SIZE_MB=$2; shift ;;
        *) echo "loopback.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
RT=${RTARGET_BIN:-$REPO/target/release/rtarget}
TOOLS=${RTARGET_TOOLS:-$REPO/../shared/tools}
GUEST_CACHE=${GUEST_CACHE:-/var/cache/rtarget-guest-6.12}
# A loaded host can fail the guest kernel's IO-APIC timer check under TCG.
export KAPPEND=${KAPPEND:-no_timer_check}
[[ -x $RT ]] || { echo "loopback.sh: no $RT (cargo build --release -p rtarget)" >&2; exit 1; }
KERNEL=6.12 "$TOOLS/guest/build-guest.sh" "$GUEST_CACHE" >/dev/null
W=$(mktemp -d "${TMPDIR:-/tmp}/bench-loopback.XXXXXX")
trap 'rm -rf "$W"' EXIT

# The overlay: rtarget (stripped), its libraries, dio, and the loop module
# (the guest's initramfs carries only the modules its tests load).
OV=$W/overlay
mkdir -p "$OV/usr/bin"
strip -o "$OV/usr/bin/rtarget" "$RT" 2>/dev/null || cp "$RT" "$OV/usr/bin/rtarget"
for lib in $(ldd "$RT" | grep -o '/[^ ]*'); do
    install -D -m755 "$(readlink -f "$lib")" "$OV$lib"
done
gcc -static -O2 -o "$OV/usr/bin/dio" "$HERE/dio.c"
KDEB=$(ls -v "$GUEST_CACHE"/debs/linux-image-6.12*.deb | tail -n1)
dpkg-deb --fsys-tarfile "$KDEB" | tar -x -C "$OV" --wildcards './lib/modules/*/kernel/drivers/block/loop.ko*'

# shellcheck disable=SC2016
PAYLOAD='set -e
insmod $(ls /lib/modules/*/kernel/drivers/block/loop.ko*)
S=/run/rt; mkdir -p $S
echo "{\"storage_objects\": [], \"targets\": []}" > $S/saveconfig.json
rtarget serve --config $S/saveconfig.json --state-dir $S --socket $S/api.sock > $S/rtarget.log 2>&1 &
for i in $(seq 300); do grep -q "rtarget: API on" $S/rtarget.log && break; sleep 0.1; done
rt() { rtarget --socket $S/api.sock "$@" >/dev/null; }
dd if=/dev/zero of=/root/bench.img bs=1M count='"$SIZE_MB"' 2>/dev/null
rt /backstores/fileio create b0 /root/bench.img
rt /loopback create naa.5001405c0ffee0d1
rt /loopback/naa.5001405c0ffee0d1/tpg1/luns create /backstores/fileio/b0
losetup /dev/loop0 /root/bench.img
wait_for /dev/ublkb0 10
echo "guest: $(nproc) CPUs, kernel $(uname -r)"
run() { echo "RESULT $1 $2 $(dio $2 $3 $4 $5 '"$SECS"')"; }
for r in $(seq '"$ROUNDS"'); do
    if [ $((r % 2)) = 1 ]; then D="/dev/ublkb0 /dev/loop0"; else D="/dev/loop0 /dev/ublkb0"; fi
    for wl in "1m-seqread read seq 1048576" "1m-seqwrite write seq 1048576" \
              "4k-randread read rand 4096" "4k-randwrite write rand 4096"; do
        set -- $wl
        for d in $D; do run $1 $d $2 $3 $4; done
    done
done
losetup -d /dev/loop0
rtarget --socket $S/api.sock /loopback delete naa.5001405c0ffee0d1 >/dev/null
echo BENCH-DONE'

echo "bench/loopback.sh: guest run (rounds $ROUNDS, ${SECS}s per run, ${SIZE_MB} MiB file)" >&2
TIMEOUT=${TIMEOUT:-$((120 + ROUNDS * 8 * (SECS + 2) * 2))} MEM=$((SIZE_MB * 2 + 512)) GUEST_OVERLAY=$OV \
    "$TOOLS/guest/run-guest.sh" "$GUEST_CACHE" "$PAYLOAD" >"$W/guest.log" 2>&1 || true
tr -d '\r' <"$W/guest.log" >"$W/clean.log"
grep -q '^BENCH-DONE' "$W/clean.log" || { tail -30 "$W/clean.log"; echo "loopback.sh: guest run failed" >&2; exit 1; }
grep '^guest:' "$W/clean.log"
grep -q 'accel tcg' "$W/clean.log" && echo "(TCG: emulated CPU; compare ratios only)"
python3 - "$W/clean.log" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    f = line.split()
    if f[:1] != ["RESULT"]:
        continue
    wl, dev = f[1], "ublk" if "ublk" in f[2] else "loop"
    rows.setdefault(wl, {}).setdefault(dev, []).append((float(f[7]), float(f[9])))
print("| workload | ublk IOPS | ublk MB/s | loop IOPS | loop MB/s | ublk/loop |")
print("|---|---:|---:|---:|---:|---:|")
for wl, d in rows.items():
    u = statistics.median(x[0] for x in d["ublk"]); um = statistics.median(x[1] for x in d["ublk"])
    l = statistics.median(x[0] for x in d["loop"]); lm = statistics.median(x[1] for x in d["loop"])
    print(f"| {wl} | {u:.0f} | {um:.1f} | {l:.0f} | {lm:.1f} | {u / l:.2f}x |")
EOF
