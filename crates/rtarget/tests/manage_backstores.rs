//! Backstore plugins created through the CLI of a live daemon: qcow2
//! images and NBD exports, served and checked with libiscsi's tools.

mod common;

use common::host::{have, run, wait_for_path, Reaped};
use common::*;
use std::process::Command;
use std::time::Duration;

/// A qcow2 image as a `user:qcow` storage object: created by the CLI,
/// exported, written over iSCSI, and a valid image afterwards.
#[test]
fn qcow2_backstore_through_the_cli() {
    if !have("qemu-img") {
        return;
    }
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let image = s.config.with_file_name("q1.qcow2");
    ok(
        &s.socket,
        &[
            "/backstores/user:qcow",
            "create",
            "q1",
            "32M",
            image.to_str().unwrap(),
        ],
    );
    let tpg = demo_target(&s.socket, IQN, &["/backstores/user:qcow/q1"]);
    let ls = ok(&s.socket, &["ls", "/backstores/user:qcow"]);
    assert!(
        ls.contains(&format!("[{} (32.0MiB) activated]", image.display())),
        "{ls}"
    );
    assert!(ok(&s.socket, &["ls", &format!("{tpg}/luns")]).contains("[user/q1 (default_tg_pt_gp)]"));
    let saved = std::fs::read_to_string(&s.config).unwrap();
    assert!(
        saved.contains(&format!("\"config\": \"qcow/{}\"", image.display())),
        "{saved}"
    );
    assert!(
        saved.contains("\"storage_object\": \"/backstores/user/q1\""),
        "{saved}"
    );

    let url = format!("iscsi://127.0.0.1:{}/{IQN}/0", s.port);
    run("qemu-io", &["-f", "raw", "-c", "write -P 0x5a 0 1M", &url]);
    d.stop();
    let image = image.to_str().unwrap();
    run("qemu-img", &["check", image]);
    let out = run(
        "qemu-io",
        &["-f", "qcow2", "-c", "read -P 0x5a 0 1M", image],
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

/// An NBD export (qemu-nbd on a unix socket) as a `user:nbd` storage object.
#[test]
fn nbd_backstore_through_the_cli() {
    if !have("qemu-nbd") || !have("qemu-io") {
        return;
    }
    let s = setup();
    let img = s.config.with_file_name("nbd.img");
    let sock = s.config.with_file_name("nbd.sock");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let _nbd = Reaped(
        Command::new("qemu-nbd")
            .args(["-f", "raw", "-x", "exp", "-t", "-k"])
            .arg(&sock)
            .arg(&img)
            .spawn()
            .unwrap(),
    );
    wait_for_path(&sock, Duration::from_secs(10));
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let uri = format!("nbd+unix:///exp?socket={}", sock.display());
    ok(
        &s.socket,
        &[
            "/backstores/user:nbd",
            "create",
            "n1",
            &format!("cfgstring={uri}"),
        ],
    );
    demo_target(&s.socket, IQN, &["/backstores/user:nbd/n1"]);
    let ls = ok(&s.socket, &["ls", "/backstores/user:nbd"]);
    assert!(ls.contains(&format!("[{uri} (16.0MiB) activated]")), "{ls}");
    let url = format!("iscsi://127.0.0.1:{}/{IQN}/0", s.port);
    run(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x77 4096 64k", &url],
    );
    let bad = fails(
        &s.socket,
        &[
            "/backstores/user:nbd",
            "create",
            "n2",
            "cfgstring=nbd://example.org/x",
        ],
    );
    assert!(bad.contains("is not IP[:PORT]"), "{bad}");
    d.stop();
    let data = std::fs::read(&img).unwrap();
    assert!(data[4096..4096 + 65536].iter().all(|b| *b == 0x77));
    assert!(data[..4096].iter().all(|b| *b == 0));
}

/// Two storage objects whose wwns share their first 25 hex digits would
/// report one NAA designator (VPD 0x83, LIO's derivation): `create`
/// refuses the second, through the CLI and the API alike, and `rtarget
/// check` warns about a file that has them.
#[test]
fn colliding_naa_designators_are_refused_and_reported() {
    const A: &str = "0f0e0d0c-0b0a-4908-8706-050403020100";
    const SAME_NAA: &str = "0f0e0d0c-0b0a-4908-8706-0504030201ff";
    const OTHER: &str = "1f0e0d0c-0b0a-4908-8706-050403020100";
    let s = Served::start();
    s.ok(&[
        "/backstores/ramdisk",
        "create",
        "r0",
        "1M",
        &format!("wwn={A}"),
    ]);
    let e = s.fails(&[
        "/backstores/ramdisk",
        "create",
        "r1",
        "1M",
        &format!("wwn={SAME_NAA}"),
    ]);
    assert!(
        e.contains("same NAA designator") && e.contains("/backstores/ramdisk/r0"),
        "{e}"
    );
    // Another plugin, the same rule.
    let e = s.fails(&[
        "/backstores/fileio",
        "create",
        "f1",
        &s.path("f1.img"),
        "1M",
        &format!("wwn={A}"),
    ]);
    assert!(e.contains("same NAA designator"), "{e}");
    s.ok(&[
        "/backstores/ramdisk",
        "create",
        "r1",
        "1M",
        &format!("wwn={OTHER}"),
    ]);
    s.ok(&["/backstores/ramdisk", "create", "r2", "1M"]);
    assert!(!s.saved().contains(SAME_NAA));
    drop(s);

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("saveconfig.json");
    std::fs::write(
        &cfg,
        format!(
            r#"{{"storage_objects": [
                {{"plugin": "ramdisk", "name": "r0", "size": 1048576, "wwn": "{A}"}},
                {{"plugin": "ramdisk", "name": "r1", "size": 1048576, "wwn": "{SAME_NAA}"}}]}}"#
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: storage_objects[1] /backstores/ramdisk/r1")
            && stdout.contains("same NAA designator"),
        "{stdout}"
    );
}
