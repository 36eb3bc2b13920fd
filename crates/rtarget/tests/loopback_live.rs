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

/// `mode=scsi` where the kernel has no iscsi_tcp (this host: no module
/// to load): `create` fails naming the module, nothing is saved, the
/// daemon keeps serving.
#[test]
fn loopback_scsi_mode_without_iscsi_tcp_fails_clearly() {
    if std::path::Path::new("/sys/module/iscsi_tcp").exists() {
        return; // an initiator kernel: see tests-e2e/loopback.sh
    }
    let d = Served::start();
    let err = d.fails(&["/loopback", "create", WWN, "mode=scsi"]);
    // Without iscsiadm the message names that instead (checked first).
    assert!(
        err.contains("iscsi_tcp") || err.contains("iscsiadm"),
        "{err}"
    );
    assert!(err.contains("mode=scsi"), "{err}");
    assert!(!d.saved().contains("\"loopback\""), "nothing saved");
    d.ok(&["/backstores/ramdisk", "create", "r1", "1M"]);
}
