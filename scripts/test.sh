#!/bin/bash
# scripts/test.sh — the project's whole test run (README's test command; CI runs it
# through .ci/run).  On a fresh Debian 12 machine, as root:
#    1. deps         scripts/install-deps.sh (QEMU from bookworm-backports, libiscsi-bin,
#                    tgt, open-iscsi; returns at once when everything is installed)
#    2. fmt          cargo fmt --all --check
#       size         scripts/size-check.sh: no module over 800 lines, no function over
#                    120 lines in crates/iscsi, vhost, manage, rtarget (a second)
#    3. clippy       cargo clippy --workspace --all-targets -- -D warnings
#    4. build        cargo build --workspace --release
#    5. unit         cargo test --workspace --no-fail-fast
#       fuzz-smoke   scripts/fuzz.sh --smoke: every cargo-fuzz target FUZZ_SMOKE_SECS (4 s here)
#                    over its committed corpus; a fresh machine first installs cargo-fuzz
#                    (~2.5 min) and builds the fuzz workspace (~4 min). It runs in the
#                    background beside the e2e/conformance steps (which mostly wait on
#                    round trips) and is collected at the end; a crash fails the step
#    6. e2e          tests-e2e/run.sh: real initiators against the release daemon
#       e2e-qemu     tests-e2e/qemu.sh: user:qemu images (vmdk, vhdx, vdi, qcow2) over iSCSI
#       e2e-qcow2    tests-e2e/qcow2.sh: 1 GiB random writes/discards into a qemu-img qcow2 over
#                    iSCSI -> qemu-img check clean + compare identical; crash; backing chain
#       e2e-tgt      tests-e2e/import-tgt.sh: one targets.conf in tgtd (tgt-admin) and in rtarget
#                    (import-tgt): same targets, LUNs, sizes and data seen by iscsi-ls/qemu-io
#       e2e-rbd      tests-e2e/rbd.sh: a throw-away one-node Ceph (../shared/tools/ceph), a
#                    user:rbd LU made with the CLI: 64 MiB in and back byte-exact with
#                    qemu-img, `rbd export` agrees, `rbd resize` seen as 2A/09; two gateways
#                    (alua_group): lock-driven ALUA, takeover, fencing, no ping-pong; with
#                    shared reservations, which hold through takeover and fencing (~45 s)
#       e2e-rbdpr    tests-e2e/rbd-gateways.sh: one image behind two gateways (TPG 1 and 2):
#                    a reservation made through A holds at B and at a restarted B, SPC-2
#                    likewise; iscsi-test-cu's reservation suites with one URL per gateway
#       e2e-metrics  tests-e2e/metrics.sh: iscsi-perf load on a ramdisk LU; scrapes during it show
#                    the LU's latency histogram and counters moving; `rtarget top --json`
#                    within 10% of iscsi-perf's IOPS (~12 s)
#       deb          tests-e2e/deb.sh: the .deb (cargo-deb; installed once per machine, ~4 min,
#                    when missing) installed with dpkg -i, the unit's ExecStart reaches
#                    READY=1 via NOTIFY_SOCKET and reloads on SIGHUP, dpkg -r (~20 s)
#    7. conformance  conformance/lanes.sh: conformance/run.sh --check in two lanes side by
#                    side over the LU matrix CONF_MATRIX: libiscsi's
#                    iscsi-test-cu, per-test results compared whole with the committed
#                    conformance/results*.txt (a test that got worse or went missing,
#                    any FAIL, a PASS count under conformance/floor.txt fail the step)
#    8. reliability  scripts/reliability.sh --quick: kill -9 under logged writers (fileio,
#                    block, qcow2; every acknowledged write reads back), connection chaos,
#                    1,000 sessions, ENOSPC/EIO faults (RELIABILITY.md; ~30 s, limit 7 min)
#    9. guest        tests-e2e/guest.sh: a Linux guest's open-iscsi logs in (mutual CHAP),
#                    ext4 + md5, online resize seen after a rescan; an rtarget in the
#                    guest (6.1, no ublk_drv) refuses /loopback create clearly; mode=scsi works
#       vhost        tests-e2e/vhost.sh: a Linux guest on a vhost-user-scsi-pci controller
#                    (rtarget's vhost target): sg_inq/sg_readcap, ext4 + md5, LUN hotplug,
#                    sg_persist, resize and LUN removal seen without a rescan
#       vhost-reconnect  tests-e2e/vhost.sh --reconnect: rtarget SIGKILLed and restarted
#                    during the guest's writes; they complete and read back
#       loopback     tests-e2e/loopback.sh: rtarget inside a 6.12 guest (ublk_drv): a fileio
#                    LUN of a /loopback target as /dev/ublkb0, ext4 + md5, kill -9 + restart
#                    under a writer (user recovery), clean delete; mode=scsi (open-iscsi,
#                    sg_inq, sg_persist, logout)
#       rbd-failover tests-e2e/rbd-failover.sh: a guest's dm-multipath (scsi_dh_alua) over two
#                    rtarget gateways of one RBD image; kill -9 / SIGSTOP of the owner mid-write:
#                    I/O resumes through the other, every acknowledged record in `rbd export`;
#                    the guest's PR registrations and reservation hold after the failover;
#                    `rbd resize` on the host is seen after a rescan, no relogin
#   10. bench-smoke  bench/bench.sh --smoke: every benchmark workload runs once, tiny (through
#                    bench/iscsi-load.c, which must fail on a missing LUN; its writes must land)
# Every step runs (with its own time limit) even after an earlier one failed, except
# that steps needing the release binary are skipped when the build fails.
# With CI=true in the environment (.ci/run sets it) a missing tool or device is a
# failure: the Rust tests that need one (require_tool in crates/backstore/tests/
# common) panic and the scripts (need in tests-e2e/lib.sh) exit 1; without it
# they print SKIP and pass.  Any daemon panic fails the e2e and conformance steps.  Prints a
# summary table; exit status 1 if any step failed.
#
# usage: scripts/test.sh [--quick] [--skip STEP[,STEP]] [--only STEP[,STEP]]
#   --quick   skip guest, vhost, vhost-reconnect, loopback, rbd-failover, bench-smoke and fuzz-smoke
#             (the slow steps)
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO" || exit 1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
[[ -d $HOME/.cargo/bin && :$PATH: != *:$HOME/.cargo/bin:* ]] && PATH=$HOME/.cargo/bin:$PATH

SKIP=, ONLY=
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) SKIP+=guest,vhost,vhost-reconnect,loopback,rbd-failover,bench-smoke,fuzz-smoke, ;;
        --skip) SKIP+=$2,; shift ;;
        --only) ONLY=,$2,; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "test.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done

# LU configurations for the conformance run (see cfg_* in conformance/run.sh); each
# has its committed results file.
CONF_MATRIX=${CONF_MATRIX:-fileio,thin,readonly,multipath,removable,sanitize,thinsanitize,thin4k,fileio4k,ramdisk,crypt,sanitizereset,pool,qcow2,qemu,nbd,block,mcs,uring}
RESULTS=() FAILS=0 BUILD_OK=1 T_ALL=$SECONDS
# step NAME LIMIT_SECONDS CMD...: run one step with a wall-clock limit, record result.
step() {
    local name=$1 limit=$2 t0=$SECONDS rc=0 what; shift 2
    if [[ $SKIP == *",$name,"* || ( -n $ONLY && $ONLY != *",$name,"* ) ]]; then
        RESULTS+=("$(printf '%-12s %-7s' "$name" skipped)"); return 0
    fi
    if [[ $name =~ ^(e2e|e2e-qemu|e2e-qcow2|e2e-tgt|e2e-rbd|e2e-rbdpr|e2e-metrics|deb|conformance|reliability|guest|vhost|vhost-reconnect|rbd-failover|bench-smoke)$ && $BUILD_OK -eq 0 ]]; then
        RESULTS+=("$(printf '%-12s %-7s (release build failed)' "$name" SKIPPED)"); FAILS=$((FAILS + 1))
        return 1
    fi
    printf '\n==== %s: %s\n' "$name" "$*"
    timeout -k 15 "$limit" "$@" || rc=$?
    if ((rc == 0)); then what=ok
    elif ((rc == 124 || rc == 137)); then what="FAIL (timed out after ${limit}s)"
    else what="FAIL (exit $rc)"; fi
    ((rc == 0)) || FAILS=$((FAILS + 1))
    RESULTS+=("$(printf '%-12s %-30s %5ss' "$name" "$what" $((SECONDS - t0)))")
    printf '==== %s: %s in %ss\n' "$name" "$what" $((SECONDS - t0))
    return "$rc"
}

step deps 900 bash scripts/install-deps.sh
command -v cargo >/dev/null || { echo "test.sh: cargo not found (install Rust with rustup)"; exit 1; }
step fmt 300 cargo fmt --all --check
step size 60 bash scripts/size-check.sh
step clippy 1200 cargo clippy --workspace --all-targets -- -D warnings
step build 1200 cargo build --workspace --release || BUILD_OK=0
step unit 1200 cargo test --workspace --no-fail-fast
# fuzz-smoke: started now, in the background, collected by its step at the end.
FUZZ_DIR=$(mktemp -d)
if [[ $SKIP != *",fuzz-smoke,"* && ( -z $ONLY || $ONLY == *",fuzz-smoke,"* ) ]]; then
    (FUZZ_SMOKE_SECS=${FUZZ_SMOKE_SECS:-4} timeout -k 15 1200 bash scripts/fuzz.sh --smoke \
        >"$FUZZ_DIR/log" 2>&1; echo $? >"$FUZZ_DIR/rc") &
fi
step e2e 600 bash tests-e2e/run.sh
step e2e-qemu 300 bash tests-e2e/qemu.sh
step e2e-qcow2 240 bash tests-e2e/qcow2.sh
step e2e-tgt 120 bash tests-e2e/import-tgt.sh
step e2e-rbd 150 bash tests-e2e/rbd.sh
step e2e-rbdpr 240 bash tests-e2e/rbd-gateways.sh
step e2e-metrics 90 bash tests-e2e/metrics.sh
step deb 600 env DEB_NO_BUILD=1 bash tests-e2e/deb.sh
step conformance 1500 bash conformance/lanes.sh "$CONF_MATRIX" --timeout 60 --budget 240
step reliability 420 bash scripts/reliability.sh --quick
step guest 420 bash tests-e2e/guest.sh
step vhost 240 bash tests-e2e/vhost.sh
step vhost-reconnect 240 bash tests-e2e/vhost.sh --reconnect
step loopback 240 bash tests-e2e/loopback.sh
step rbd-failover 420 bash tests-e2e/rbd-failover.sh
step bench-smoke 180 bash bench/bench.sh --smoke
# (its own limit is the background run's 1200 s; this waits for its result)
step fuzz-smoke 1260 bash -c 'while [[ ! -f $1/rc ]]; do sleep 2; done; cat "$1/log"; exit "$(cat "$1/rc")"' _ "$FUZZ_DIR"

echo
echo "==== summary ($((SECONDS - T_ALL))s total)"
printf '  %s\n' "${RESULTS[@]}"
if ((FAILS)); then echo "test.sh: $FAILS step(s) FAILED"; exit 1; fi
echo "test.sh: all steps passed"
