//! Logins by real initiators (libiscsi's iscsi-ls, QEMU's iscsi driver
//! through qemu-img) over 127.0.0.1. libiscsi offers `AuthMethod=CHAP,None`
//! whenever the URL carries a user and password; when the target answers
//! None it declares InitiatorName, TargetName and SessionType again in the
//! operational stage, which the target must accept (same values).
//!
//! A missing tool skips its test, except in CI (`CI=true`) where it fails.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CLIENT: &str = "iqn.2026-11.org.rtarget:peer";

/// Whether `prog` can run; `false` skips the test outside CI.
fn have(prog: &str) -> bool {
    let found = Command::new(prog)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{prog} is not installed (required in CI)"
        );
        println!("{prog} is not installed: skipping");
    }
    found
}

/// Run `args` with a deadline (libiscsi retries for long when a login
/// fails); the output, killed at the deadline.
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A server whose target needs CHAP (alice / wonderland12).
fn chap_target() -> (std::sync::Arc<iscsi::IscsiServer>, std::net::SocketAddr) {
    let s = iscsi::IscsiServer::new();
    let mut t = target(IQN, 8 << 20, &[]);
    t.tpgs[0].attributes.authentication = Some(true);
    t.tpgs[0].chap = Some(iscsi::ChapCredentials {
        userid: "alice".into(),
        password: "wonderland12".into(),
        mutual_userid: None,
        mutual_password: None,
    });
    s.set_target(t);
    let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    (s, addr)
}

#[test]
fn iscsi_ls_with_credentials_on_discovery_without_auth() {
    if !have("iscsi-ls") {
        return;
    }
    let (srv, addr) = server(&[]);
    let url = format!("iscsi://someone%secret1234@{addr}");
    let o = run(&["iscsi-ls", "-i", CLIENT, &url]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(IQN),
        "{}",
        text(&o)
    );
    srv.shutdown();
}

#[test]
fn qemu_img_with_credentials_on_tpg_without_auth() {
    if !have("qemu-img") {
        return;
    }
    let (srv, addr) = server(&[]);
    let url = format!("iscsi://someone%secret1234@{addr}/{IQN}/0");
    let o = run(&["qemu-img", "info", &url]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("8 MiB"),
        "{}",
        text(&o)
    );
    srv.shutdown();
}

#[test]
fn iscsi_inq_with_credentials_on_tpg_without_auth() {
    if !have("iscsi-inq") {
        return;
    }
    let (srv, addr) = server(&[]);
    let url = format!("iscsi://someone%secret1234@{addr}/{IQN}/0");
    let o = run(&["iscsi-inq", "-i", CLIENT, &url]);
    assert!(o.status.success(), "{}", text(&o));
    srv.shutdown();
}

#[test]
fn qemu_img_chap_login_and_wrong_password() {
    if !have("qemu-img") {
        return;
    }
    let (srv, addr) = chap_target();
    let url = format!("iscsi://alice%wonderland12@{addr}/{IQN}/0");
    let o = run(&["qemu-img", "info", &url]);
    assert!(o.status.success(), "{}", text(&o));
    let url = format!("iscsi://alice%not-the-password@{addr}/{IQN}/0");
    let o = run(&["qemu-img", "info", &url]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Authentication failure"), "{}", text(&o));
    // No credentials at all: refused too.
    let o = run(&["qemu-img", "info", &format!("iscsi://{addr}/{IQN}/0")]);
    assert!(!o.status.success(), "{}", text(&o));
    srv.shutdown();
}
