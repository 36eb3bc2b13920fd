#!/bin/bash
# tests-e2e/qcow2.sh — issue 5's qcow2 acceptance, over the network: rtarget's
# native qcow2 backstore (user:qcow) serving images made by qemu-img, driven by
# QEMU's iSCSI initiator (qemu-io / qemu-img with iscsi:// URLs):
#   random writes: a deterministic random list of 4 KiB and 64 KiB writes
#   (random offsets, 4 KiB aligned, random pattern bytes) totalling WRITES bytes,
#   plus write-zeroes (with and without unmap) and discards, is fed to qemu-io
#   over iSCSI and, identically, to qemu-io on a raw file.  The LUN reads back
#   byte-exact over iSCSI; after rtarget stops (exit 0) `qemu-img check` finds
#   no errors and no leaks and `qemu-img compare` finds the qcow2 image and the
#   raw file identical.  Runs for 64 KiB clusters (the default) and 4 KiB
#   clusters (which also exercises L2 / refcount cache eviction).
#   backing chain: raw base <- qcow2 mid (with a compressed cluster) <- qcow2
#   top (a zero cluster, partial clusters, larger than its backing) made by
#   qemu-img/qemu-io reads byte-exact over iSCSI; writes, write-zeroes and
#   discards through iSCSI land in the top image only (base and mid md5
#   unchanged), `qemu-img check` is clean, and the result equals the same
#   writes applied by qemu-io to a copy of the top image.
#   crash: rtarget SIGKILLed during write-through (FUA) writes: qemu-img check
#   finds no corruption, every write qemu-io saw complete is in the image, and
#   the image serves again after a restart.
# Sizes (K/M/G suffixes): QCOW2_E2E_IMAGE (virtual size, default 4G),
# QCOW2_E2E_WRITES (default 1G for 64 KiB clusters), QCOW2_E2E_WRITES_4K
# (default 256M for 4 KiB clusters; 0 skips that round).  Prints timings
# ("TIME ...") of the write phases.
# Prints "PASS name" / "FAIL name (why)" per check and ends with "N passed, N failed".
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

case ${1:-} in
    -h|--help) sed -n '2,/^set -uo pipefail/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
need qemu-img qemu-io python3 md5sum   # lib.sh: SKIP locally, FAIL under CI=true
bytes() { python3 -c 'import sys; t=sys.argv[1]; m={"K":1<<10,"M":1<<20,"G":1<<30}
print(int(t[:-1]) * m[t[-1].upper()] if t[-1].upper() in m else int(t))' "$1"; }
IMAGE=$(bytes "${QCOW2_E2E_IMAGE:-4G}")
WRITES=$(bytes "${QCOW2_E2E_WRITES:-1G}")
WRITES_4K=$(bytes "${QCOW2_E2E_WRITES_4K:-256M}")

W=$(mktemp -d "${RTARGET_TEST_WORK:-${TMPDIR:-/tmp}}/e2e-qcow2.XXXXXX")
NPASS=0 NFAIL=0 PID='' T0=$SECONDS
pass() { NPASS=$((NPASS + 1)); echo "PASS $1"; }
fail() { NFAIL=$((NFAIL + 1)); echo "FAIL $1${2:+ ($2)}"; }
check() {
    local name=$1; shift
    if "$@" >"$W/out.txt" 2>&1; then pass "$name"
    else fail "$name" "$(tail -n 3 "$W/out.txt" | tr '\n' ' ' | cut -c1-300)"; fi
}
STATE=$W/state CFG=$W/state/saveconfig.json SOCK=$W/api.sock
mkdir -p "$STATE"
# start: the daemon on its own API socket (never the system-wide default one).
start() {
    # Earlier runs' logs are kept whole (the panic check at the end reads them).
    if [[ -f $STATE/rtarget.log ]]; then cat "$STATE/rtarget.log" >>"$STATE/rtarget.log.old"; fi
    : >"$STATE/rtarget.log"   # exists before the wait loop greps it
    "$RTARGET_BIN" serve --listen "127.0.0.1:$PORT" --config "$CFG" --state-dir "$STATE" \
        --socket "$SOCK" >>"$STATE/rtarget.log" 2>&1 &
    PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        grep -q "rtarget: listening on" "$STATE/rtarget.log" && return 0
        kill -0 "$PID" 2>/dev/null || { tail -20 "$STATE/rtarget.log" >&2; PID=; return 1; }
        sleep 0.1
    done
    return 1
}
# stop: SIGTERM; returns the daemon's exit status (137 if it had to be killed).
stop() {
    local pid=$PID i
    [[ -n $pid ]] || return 0
    PID=
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid"
}
finish() {
    local rc=$? p
    stop >/dev/null 2>&1
    # A panic in a connection or pool thread leaves the daemon serving: every
    # run's log (the crash round's too) must be free of them.
    if p=$(panics_in "$STATE"/rtarget.log*); then
        fail "no panic in the daemon logs" "$(tr '\n' ' ' <<<"$p" | cut -c1-300)"; rc=1
    else pass "no panic in the daemon logs"; fi
    if ((NFAIL == 0)); then rm -rf "$W"; else log "qcow2 e2e: kept $W"; fi
    echo "$NPASS passed, $NFAIL failed ($((SECONDS - T0)) s)"
    exit "$rc"
}
trap finish EXIT
[[ -x $RTARGET_BIN ]] || { fail "no rtarget binary at $RTARGET_BIN"; exit 1; }

PORT=$(free_port) IQN=iqn.2026-11.org.rtarget:qcow2e2e
URL=iscsi://127.0.0.1:$PORT/$IQN/0
now() { echo "${EPOCHREALTIME/[.,]/}"; }   # microseconds
# qio TARGET FORMAT SCRIPT LOG: run a qemu-io command script (stdin) with a write-back
# cache (a writethrough cache would make every write FUA) and discard enabled.
# qemu-io may exit 0 after a failed command: every command must have succeeded.
qio() {
    timeout 300 qemu-io -t writeback -d unmap -f "$2" "$1" <"$3" >"$4" 2>&1 || return 1
    ! grep -Eqi 'fail|error|mismatch|pattern verification' "$4" || return 1
    local want got
    want=$(grep -Ec '^(aio_write|write|discard|read)' "$3")
    got=$(grep -Eo '(wrote|discard|read) [0-9]+/[0-9]+ bytes' "$4" | wc -l)
    [[ $want == "$got" ]] || { echo "qemu-io: $got of $want commands completed" >>"$4"; return 1; }
}

# gen SEED SIZE TOTAL CLUSTER: a deterministic random command script. Batches of
# aio requests that touch disjoint clusters (so their completion order can't
# matter), each followed by aio_flush (wait for completion); now and then a
# synchronous discard between batches.
gen() {
    python3 - "$@" <<'EOF'
import random, sys
seed, size, total, cs = (int(a) for a in sys.argv[1:5])
rng = random.Random(seed)
K4, K64, BATCH = 4096, 65536, 64
unit = max(cs, K64)         # disjointness granule (covers a 64 KiB write's clusters)
units = size // unit
out, done = [], 0
def pick(used, span):
    while True:
        off = rng.randrange(0, size - span + 1, K4)
        us = set(range(off // unit, (off + span - 1) // unit + 1))
        if not us & used:
            used |= us
            return off
while done < total:
    used = set()
    for _ in range(BATCH):
        r, pat = rng.random(), rng.randrange(1, 256)
        if r < 0.45:
            out.append(f"aio_write -P {pat} {pick(used, K4)} 4k"); done += K4
        elif r < 0.70:        # 64 KiB aligned: whole clusters
            off = pick(used, K64) & ~(K64 - 1)
            out.append(f"aio_write -P {pat} {off} 64k"); done += K64
        elif r < 0.93:        # 64 KiB at 4 KiB alignment: partial clusters
            out.append(f"aio_write -P {pat} {pick(used, K64)} 64k"); done += K64
        elif r < 0.965:       # WRITE SAME with UNMAP
            out.append(f"aio_write -z -u {pick(used, K64) & ~(K64 - 1)} 64k")
        else:                 # WRITE SAME without UNMAP, partial cluster
            out.append(f"aio_write -z {pick(used, K4)} 4k")
    out.append("aio_flush")
    if rng.random() < 0.1:    # UNMAP of 4 KiB .. 1 MiB
        n = rng.randrange(1, 257) * K4
        out.append(f"discard {rng.randrange(0, size - n + 1, K4)} {n}")
out.append("flush")
print("\n".join(out))
EOF
}

# --- random writes: qcow2 over iSCSI vs the same script on a raw file ----------------
# round NAME CLUSTER TOTAL
round() {
    local name=$1 cs=$2 total=$3 img=$W/$1.qcow2 raw=$W/$1.raw t0 t1 us rc
    [[ $total -gt 0 ]] || return 0
    if ! qemu-img create -q -f qcow2 -o "cluster_size=$cs" "$img" "$IMAGE" ||
        ! truncate -s "$IMAGE" "$raw" || ! gen "$cs" "$IMAGE" "$total" "$cs" >"$W/$name.io"; then
        fail "$name: make image and command script"; return 1
    fi
    pass "$name: qemu-img create -f qcow2 -o cluster_size=$cs ($((IMAGE >> 20)) MiB) and a $((total >> 20)) MiB write script"
    mkconfig "$CFG" "$PORT" "$IQN" "qcow:$name:$img::emulate_tpu=1"
    if start; then pass "$name: rtarget serves it as user:qcow"; else fail "$name: start"; return 1; fi
    t0=$(now)
    if qio "$URL" raw "$W/$name.io" "$W/$name.iscsi.log"; then
        t1=$(now); us=$((t1 - t0))
        pass "$name: $((total >> 20)) MiB of random 4K/64K writes, zeroes and discards over iSCSI"
        echo "TIME $name: $((total >> 20)) MiB random writes over iSCSI in $((us / 1000)) ms" \
            "= $((total * 1000000 / us / 1000000)) MB/s ($(grep -c aio_write "$W/$name.io") writes)"
    else
        fail "$name: writes over iSCSI" "$(tail -n 2 "$W/$name.iscsi.log" | tr '\n' ' ' | cut -c1-300)"
    fi
    t0=$(now)
    check "$name: the same script on a raw file" qio "$raw" raw "$W/$name.io" "$W/$name.raw.log"
    echo "TIME $name: same script on a raw file in $((($(now) - t0) / 1000)) ms"
    # qemu-img compare reads only what either side maps (cmp of two sparse
    # 4 GiB files would take longer than the whole write phase).
    t0=$(now)
    check "$name: reads back over iSCSI identical to the raw file (qemu-img compare iscsi:// raw)" \
        timeout 300 qemu-img compare -f raw -F raw "$URL" "$raw"
    echo "TIME $name: read back over iSCSI and compare in $((($(now) - t0) / 1000)) ms"
    stop; rc=$?
    check "$name: rtarget exits 0 on SIGTERM" test "$rc" -eq 0
    # exit status 0 = no errors and no leaks (2 = corruption, 3 = leaks).
    check "$name: qemu-img check: no errors, no leaks" qemu-img check -f qcow2 "$img"
    grep -E 'allocated|end offset' "$W/out.txt" | sed "s/^/INFO $name: /"
    check "$name: qemu-img compare qcow2 vs raw: identical" \
        qemu-img compare -f qcow2 -F raw "$img" "$raw"
    ((NFAIL)) || rm -f "$img" "$raw"
}
round c64k 65536 "$WRITES"
round c4k 4096 "$WRITES_4K"

# --- crash: SIGKILL rtarget during write-through (FUA) writes ------------------------
# Every write qemu-io saw complete was FUA, so it must be in the image after the
# crash; the one in flight may or may not be.  The image must have no corruption
# (leaks are allowed: qemu-img check exit 0 or 3) and serve again after a restart.
crash() {
    local img=$W/crash.qcow2 raw=$W/crash.raw n rc qp
    if ! { qemu-img create -q -f qcow2 "$img" 1G &&
        gen 99 $((1 << 30)) $((1 << 30)) 65536 | sed -e '/^aio_flush$/d' -e '/^flush$/d' \
            -e 's/^aio_write/write/' >"$W/crash.io"; }; then
        fail "crash: make image"; return 1
    fi
    mkconfig "$CFG" "$PORT" "$IQN" "qcow:crash:$img::emulate_tpu=1"
    start || { fail "crash: start"; return 1; }
    stdbuf -oL qemu-io -t writethrough -d unmap -f raw "$URL" <"$W/crash.io" >"$W/crash.log" 2>&1 &
    qp=$!
    sleep "${QCOW2_E2E_CRASH_AFTER:-3}"
    kill -KILL "$PID"; wait "$PID" 2>/dev/null; PID=''
    sleep 0.5
    kill -KILL "$qp"; wait "$qp" 2>/dev/null
    n=$(grep -Eo '^(qemu-io> )*(wrote|discard) [0-9]+/' "$W/crash.log" | wc -l)
    echo "INFO crash: rtarget killed after $n completed write-through commands"
    check "crash: some writes completed before the SIGKILL" test "$n" -gt 100
    qemu-img check -f qcow2 "$img" >"$W/out.txt" 2>&1; rc=$?
    if ((rc == 0 || rc == 3)); then pass "crash: qemu-img check: no corruption (exit $rc)"
    else fail "crash: qemu-img check: no corruption" "exit $rc: $(tail -n 3 "$W/out.txt" | tr '\n' ' ')"; fi
    # The first n commands applied to a raw file; the range of command n+1 (in
    # flight: SCSI writes are not atomic, a 64 KiB write over two clusters may
    # be half done) is taken from the image.
    survived() {
        rm -f "$raw"; truncate -s 1G "$raw"
        head -n "$n" "$W/crash.io" | qemu-io -t writeback -d unmap -f raw "$raw" >/dev/null 2>&1 || return 1
        qemu-img convert -f qcow2 -O raw "$img" "$W/crash.conv" || return 1
        python3 - "$W/crash.conv" "$raw" "$(sed -n "$((n + 1))p" "$W/crash.io")" <<'PY' || return 1
import sys
conv, raw, cmd = sys.argv[1], sys.argv[2], sys.argv[3].split()
if cmd:
    num = lambda t: int(t[:-1]) << 10 if t[-1] in "kK" else int(t)
    off, n = num(cmd[-2]), num(cmd[-1])
    with open(conv, "rb") as a, open(raw, "r+b") as b:
        a.seek(off); data = a.read(n); b.seek(off); b.write(data)
PY
        qemu-img compare -f raw -F raw "$W/crash.conv" "$raw"
    }
    check "crash: every completed write-through write survived" survived
    rm -f "$W/crash.conv"
    start || { fail "crash: restart on the crashed image"; return 1; }
    check "crash: the crashed image serves and takes writes after a restart" timeout 60 qemu-io -f raw \
        -c "write -P 0x5c 0 128k" -c "read -P 0x5c 0 128k" -c "flush" "$URL"
    stop; rc=$?
    check "crash: rtarget exits 0 on SIGTERM" test "$rc" -eq 0
    qemu-img check -f qcow2 "$img" >"$W/out.txt" 2>&1; rc=$?
    if ((rc == 0 || rc == 3)); then pass "crash: qemu-img check after the restart: no corruption (exit $rc)"
    else fail "crash: qemu-img check after the restart" "exit $rc"; fi
    ((NFAIL)) || rm -f "$img" "$raw"
}
crash

# --- backing chain: raw <- qcow2 (compressed cluster) <- qcow2 ------------------------
C=$W/chain
mkdir -p "$C"
mkchain() {
    qemu-img create -q -f raw "$C/base.raw" 64M &&
        qemu-io -f raw -c "write -P 0x11 0 64M" -c "write -P 0x12 5M 3M" "$C/base.raw" &&
        qemu-img create -q -f qcow2 -b base.raw -F raw "$C/mid.qcow2" 64M &&
        qemu-io -f qcow2 -c "write -P 0x21 1M 1M" -c "write -P 0x22 2101248 8k" \
            -c "write -c -P 0x23 4M 64k" -c "write -z 6M 128k" -c "write -P 0x24 63M 1M" \
            "$C/mid.qcow2" &&
        qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$C/top.qcow2" 80M &&
        qemu-io -f qcow2 -c "write -P 0x31 1572864 64k" -c "write -P 0x32 4198400 4k" \
            -c "write -z 5M 64k" -c "write -P 0x33 70M 2M" -c "write -P 0x34 66121728 8k" \
            "$C/top.qcow2" &&
        qemu-img convert -f qcow2 -O raw "$C/top.qcow2" "$C/top.expect.raw" &&
        cp "$C/top.qcow2" "$C/ref.qcow2" &&
        md5sum "$C/base.raw" "$C/mid.qcow2" >"$C/lower.md5"
} >"$W/out.txt" 2>&1
if mkchain; then
    pass "chain: qemu-img made base.raw <- mid.qcow2 (compressed, zero clusters) <- top.qcow2 (80M over 64M)"
else
    fail "chain: make images" "$(tail -n 2 "$W/out.txt" | tr '\n' ' ')"; exit 1
fi
check "chain: mid.qcow2 holds a compressed cluster" \
    bash -c 'qemu-img check "$1" | grep -Eq "[1-9][0-9.]*% compressed"' _ "$C/mid.qcow2"
mkconfig "$CFG" "$PORT" "$IQN" "qcow:top:$C/top.qcow2::emulate_tpu=1"
if start; then pass "chain: rtarget serves top.qcow2"; else fail "chain: start"; exit 1; fi
chain_read() {
    rm -f "$C/back.raw"
    timeout 120 qemu-img convert -f raw -O raw "$URL" "$C/back.raw" && cmp "$C/back.raw" "$1"
}
check "chain: reads back over iSCSI byte-exact (= qemu-img convert of top.qcow2)" \
    chain_read "$C/top.expect.raw"
# Partial writes over backed clusters (copy-on-write from mid and from base), a
# write into the compressed cluster, zeroes and discards over backed data, a write
# past the backing file's end.
cat >"$C/w.io" <<'EOF'
write -P 0x41 8k 4k
write -P 0x42 1052672 4k
write -P 0x43 4227072 4k
write -P 0x44 5308416 64k
write -z 7344128 8k
write -z -u 9M 64k
discard 10M 192k
write -P 0x45 67104768 8k
write -P 0x46 79M 1M
aio_write -P 0x47 20M 64k
aio_write -P 0x48 22024192 4k
aio_write -P 0x49 23130112 8k
aio_flush
flush
EOF
check "chain: writes, zeroes and discards over iSCSI" qio "$URL" raw "$C/w.io" "$C/w.log"
check "chain: the same script on a copy of top.qcow2 (qemu-io)" \
    qio "$C/ref.qcow2" qcow2 "$C/w.io" "$C/ref.log"
qemu-img convert -f qcow2 -O raw "$C/ref.qcow2" "$C/ref.raw" 2>"$W/out.txt"
check "chain: reads back over iSCSI equal to the qemu-io copy" chain_read "$C/ref.raw"
stop; rc=$?
check "chain: rtarget exits 0 on SIGTERM" test "$rc" -eq 0
check "chain: base.raw and mid.qcow2 unchanged (md5)" md5sum -c "$C/lower.md5"
check "chain: qemu-img check top.qcow2: no errors, no leaks" qemu-img check -f qcow2 "$C/top.qcow2"
check "chain: qemu-img compare top.qcow2 vs the qemu-io copy: identical" \
    qemu-img compare -f qcow2 -F qcow2 "$C/top.qcow2" "$C/ref.qcow2"
check "chain: backing file recorded unchanged" \
    bash -c 'qemu-img info "$1" | grep -Eq "^backing file: mid.qcow2"' _ "$C/top.qcow2"
((NFAIL == 0))
