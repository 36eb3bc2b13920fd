//! Backstore plugins created through the CLI of a live daemon: qcow2
//! images and NBD exports, served and checked with libiscsi's tools.

mod common;

use common::*;
use std::process::Child;
use std::process::Command;
use std::time::{Duration, Instant};

/// A qcow2 image as a `user:qcow` storage object: created by the CLI,
/// exported, written over iSCSI, and a valid image afterwards.
#[test]
fn qcow2_backstore_through_the_cli() {
    if Command::new("qemu-img").arg("--version").output().is_err() {
        println!("qemu-img is not installed: skipping");
        return;
    }
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let image = s.config.with_file_name("q1.qcow2");
    let tpg = format!("/iscsi/{IQN}/tpg1");
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
    ok(&s.socket, &["/iscsi", "create", IQN]);
    ok(
        &s.socket,
        &[
            &tpg,
            "set",
            "attribute",
            "generate_node_acls=1",
            "demo_mode_write_protect=0",
        ],
    );
    ok(
        &s.socket,
        &[&format!("{tpg}/luns"), "create", "/backstores/user:qcow/q1"],
    );
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
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x5a 0 1M", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop();
    let out = Command::new("qemu-img")
        .arg("check")
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "read -P 0x5a 0 1M"])
        .arg(&image)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !stdout.contains("Pattern verification failed"),
        "{stdout}"
    );
}

/// An NBD export (qemu-nbd on a unix socket) as a `user:nbd` storage object.
#[test]
fn nbd_backstore_through_the_cli() {
    if Command::new("qemu-nbd").arg("--version").output().is_err()
        || Command::new("qemu-io").arg("--version").output().is_err()
    {
        println!("qemu-nbd/qemu-io are not installed: skipping");
        return;
    }
    let s = setup();
    let img = s.config.with_file_name("nbd.img");
    let sock = s.config.with_file_name("nbd.sock");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _nbd = Kill(
        Command::new("qemu-nbd")
            .args(["-f", "raw", "-x", "exp", "-t", "-k"])
            .arg(&sock)
            .arg(&img)
            .spawn()
            .unwrap(),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while !sock.exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
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
    let tpg = format!("/iscsi/{IQN}/tpg1");
    ok(&s.socket, &["/iscsi", "create", IQN]);
    ok(
        &s.socket,
        &[
            &tpg,
            "set",
            "attribute",
            "generate_node_acls=1",
            "demo_mode_write_protect=0",
        ],
    );
    ok(
        &s.socket,
        &[&format!("{tpg}/luns"), "create", "/backstores/user:nbd/n1"],
    );
    let ls = ok(&s.socket, &["ls", "/backstores/user:nbd"]);
    assert!(ls.contains(&format!("[{uri} (16.0MiB) activated]")), "{ls}");
    let url = format!("iscsi://127.0.0.1:{}/{IQN}/0", s.port);
    let out = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write -P 0x77 4096 64k", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = cli(
        &s.socket,
        &[
            "/backstores/user:nbd",
            "create",
            "n2",
            "cfgstring=nbd://example.org/x",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not IP[:PORT]"));
    d.stop();
    let data = std::fs::read(&img).unwrap();
    assert!(data[4096..4096 + 65536].iter().all(|b| *b == 0x77));
    assert!(data[..4096].iter().all(|b| *b == 0));
}
