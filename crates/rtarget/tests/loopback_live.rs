//! The loopback fabric through the daemon. Where the kernel has no ublk
//! driver (this host; Debian 12's own 6.1 kernel) `/loopback create`
//! fails with a message naming ublk_drv and the kernels that have it, the
//! configuration is unchanged and the daemon keeps serving. With ublk_drv
//! (the 6.12 test guest) tests-e2e/loopback.sh covers the disks.

mod common;

use common::Served;

const WWN: &str = "naa.5001405abcdef013";

#[test]
fn loopback_create_without_ublk_fails_clearly_and_the_daemon_keeps_serving() {
    if std::path::Path::new(loopback::UBLK_CONTROL).exists() {
        return; // a ublk kernel: see tests-e2e/loopback.sh
    }
    let d = Served::start();
    d.ok(&["/backstores/ramdisk", "create", "r0", "1M"]);
    let err = d.fails(&["/loopback", "create", WWN]);
    for want in ["ublk_drv", "modprobe ublk_drv", "6.12", "6.1 kernel"] {
        assert!(err.contains(want), "{want:?} missing from: {err}");
    }
    let ls = d.ok(&["ls", "/loopback"]);
    assert!(ls.contains("Targets: 0"), "{ls}");
    assert!(!d.saved().contains("\"loopback\""), "nothing saved");
    // Still serving: other changes go through.
    d.ok(&["/backstores/ramdisk", "create", "r1", "1M"]);
    assert!(d.ok(&["ls", "/backstores"]).contains("r1"));
}
