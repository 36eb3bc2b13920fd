#!/bin/bash
# scripts/install-deps.sh — install the system packages the test suite needs on
# Debian 12 (bookworm), idempotently: QEMU 10 from bookworm-backports (system
# emulator, iscsi:// block driver, qemu-img/qemu-io), libiscsi's tools, tgt (the
# reference target), open-iscsi and strace (the power-loss tests record system
# calls with it), Ceph for the rbd backstore's tests (librbd/librados headers,
# one mon + one osd (+ a mgr for the service map) started by ../shared/tools/ceph/ceph-up.sh; no daemon is started
# here; tgt-rbd, tgt's rbd backing store, for bench/rbd.sh), and libclang (the loopback fabric's libublk generates its ublk bindings
# with bindgen at build time).  Returns at once when all are present.
# Needs root for the apt steps (it is a no-op, not an error, when nothing is missing).
set -euo pipefail

BPO_PKGS=(qemu-system-x86 qemu-block-extra qemu-utils)
PKGS=(libiscsi-bin tgt open-iscsi python3 strace libclang1-14)
CEPH_PKGS=(librbd-dev librados-dev libradospp-dev ceph-mon ceph-osd ceph-mgr ceph-common tgt-rbd)
need=()
for p in "${BPO_PKGS[@]}" "${PKGS[@]}" "${CEPH_PKGS[@]}"; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [[ ${#need[@]} -eq 0 ]]; then
    echo "install-deps: all packages present"
    exit 0
fi
echo "install-deps: missing: ${need[*]}"
[[ $(id -u) -eq 0 ]] || { echo "install-deps: run as root to install them" >&2; exit 1; }
. /etc/os-release
[[ ${VERSION_CODENAME:-} == bookworm ]] ||
    echo "install-deps: warning: written for Debian 12 (bookworm), this is ${PRETTY_NAME:-unknown}" >&2

export DEBIAN_FRONTEND=noninteractive
if ! grep -rqsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" \
        >/etc/apt/sources.list.d/bookworm-backports.list
fi
apt-get update -q
apt-get install -y -q -t bookworm-backports "${BPO_PKGS[@]}"
apt-get install -y -q "${PKGS[@]}"
# Without recommends: no mds, no tooling the tests do not use.
apt-get install -y -q --no-install-recommends "${CEPH_PKGS[@]}"
# tgt's package starts a system tgtd on port 3260; the tests start their own on
# other ports with their own control socket, so it is left alone.
echo "install-deps: done"
