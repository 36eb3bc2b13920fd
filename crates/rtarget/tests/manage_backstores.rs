//! Backstore plugins created through the CLI of a live daemon: qcow2
//! images and NBD exports, served and checked with libiscsi's tools.

mod common;

use common::host::{require_tool, run, wait_for_path, Reaped};
use common::*;
use std::process::Command;
use std::time::Duration;

/// A qcow2 image as a `user:qcow` storage object: created by the CLI,
/// exported, written over iSCSI, and a valid image afterwards.
#[test]
fn qcow2_backstore_through_the_cli() {
    if !require_tool("qemu-img") {
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
    if !require_tool("qemu-nbd") || !require_tool("qemu-io") {
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
