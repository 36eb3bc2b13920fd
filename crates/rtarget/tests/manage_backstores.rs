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

/// An image made by `qemu-img create` opens with its own size, named
/// relative to the client's directory, under the short name `qcow2`
/// (saved as user:qcow), with no size argument.
#[test]
fn existing_qcow2_image_opens_with_its_own_size() {
    if !require_tool("qemu-img") {
        return;
    }
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let dir = s.config.parent().unwrap();
    run(
        "qemu-img",
        &[
            "create",
            "-f",
            "qcow2",
            dir.join("e.qcow2").to_str().unwrap(),
            "48M",
        ],
    );
    let out = cli_in(
        dir,
        &s.socket,
        &["/backstores/qcow2", "create", "q1", "e.qcow2"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = ok(&s.socket, &["ls", "/backstores/qcow2"]);
    let image = dir.join("e.qcow2");
    assert!(
        ls.contains("o- user:qcow") && ls.contains(&format!("[{} (48.0MiB) ", image.display())),
        "{ls}"
    );
    let saved = std::fs::read_to_string(&s.config).unwrap();
    assert!(
        saved.contains(&format!("\"config\": \"qcow/{}\"", image.display())),
        "{saved}"
    );
    // A new image still needs its size, and the error says how to give it.
    let err = fails(
        &s.socket,
        &[
            "/backstores/qcow2",
            "create",
            "q2",
            "/nonexistent-dir/n.qcow2",
        ],
    );
    assert!(
        err.contains("e.g. /backstores/user:qcow create q1 "),
        "{err}"
    );
    d.stop();
}

/// `rtarget ARGS` run in `dir` (relative paths resolve there).
fn cli_in(dir: &std::path::Path, socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rtarget"))
        .current_dir(dir)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

/// A 16 MiB image (`nbd.img` next to the config) exported by qemu-nbd
/// (`-x exp`, then `nbd_args`, on a unix socket) as storage object
/// `user:nbd/n1` (cfgstring: the export's URI, then `uri_tail`), LUN 0 of
/// a demo-mode target [`IQN`] on a started daemon. Returns qemu-nbd, the
/// daemon and the URI.
fn nbd_lu(s: &Setup, nbd_args: &[&str], uri_tail: &str) -> (Reaped, Daemon, String) {
    let img = s.config.with_file_name("nbd.img");
    let sock = s.config.with_file_name("nbd.sock");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let nbd = Reaped(
        Command::new("qemu-nbd")
            .args(["-f", "raw", "-x", "exp"])
            .args(nbd_args)
            .arg("-k")
            .arg(&sock)
            .arg(&img)
            .spawn()
            .unwrap(),
    );
    wait_for_path(&sock, Duration::from_secs(10));
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let uri = format!("nbd+unix:///exp?socket={}{uri_tail}", sock.display());
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
    (nbd, d, uri)
}

/// An NBD export (qemu-nbd on a unix socket) as a `user:nbd` storage object.
#[test]
fn nbd_backstore_through_the_cli() {
    if !require_tool("qemu-nbd") || !require_tool("qemu-io") {
        return;
    }
    let s = setup();
    let (_nbd, d, uri) = nbd_lu(&s, &["-t"], "");
    let img = s.config.with_file_name("nbd.img");
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
    // The NBD client's reconnects are a metric (0: the server never left),
    // the one docs/grafana/rtarget.json's recoveries panel queries.
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    ok(&s.socket, &["set", "global", &format!("metrics={metrics}")]);
    let mut http = std::net::TcpStream::connect(metrics).unwrap();
    std::io::Write::write_all(&mut http, b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut scrape = String::new();
    std::io::Read::read_to_string(&mut http, &mut scrape).unwrap();
    let series =
        "rtarget_backstore_events_total{storage_object=\"/backstores/user/n1\",event=\"reconnects\"} 0";
    assert!(scrape.contains(series), "{scrape}");
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

/// A hung NBD server (qemu-nbd stopped with SIGSTOP) behind a `user:nbd`
/// LU: the initiator's READ fails with MEDIUM ERROR within the cfgstring's
/// `io_timeout` instead of holding a worker forever, and the daemon shuts
/// down with a command still in flight and the server still stopped
/// (exiting non-zero: the final flush could not reach the server).
#[test]
fn hung_nbd_server_fails_commands_and_shutdown_completes() {
    use common::initiator::{read10, write10, Client};
    use std::time::Instant;
    if !require_tool("qemu-nbd") {
        return;
    }
    let s = setup();
    let (nbd, d, _) = nbd_lu(&s, &["-t", "-e", "4"], "&io_timeout=1");
    let mut c = Client::connect(std::net::SocketAddr::from(([127, 0, 0, 1], s.port)));
    c.login(Some(IQN), &[]);
    c.clear_ua();
    assert_eq!(c.write_cmd(&write10(0, 1), &[0x5a; 512]).status, 0);
    let pid = nbd.0.id() as i32;
    // SAFETY: signalling the test's own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let start = Instant::now();
    let (st, _, _) = c.read_cmd(&read10(0, 1), 512);
    let took = start.elapsed();
    assert_eq!(st, 2, "CHECK CONDITION");
    assert_eq!(
        sense(&c),
        (3, 0x11, 0),
        "MEDIUM ERROR, UNRECOVERED READ ERROR"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    println!("READ from a stopped NBD server failed after {took:?}");
    // One more READ in flight, then shutdown.
    let cmd = c.scsi_cmd_header(&read10(0, 1), true, false, 512);
    let mut bhs = iscsi_wire::Bhs::default();
    cmd.write_to(&mut bhs);
    c.send(&bhs, &[]);
    let start = Instant::now();
    let mut d = d;
    d.signal(libc::SIGTERM);
    let st = d.wait_exit(Duration::from_secs(15));
    let took = start.elapsed();
    assert!(
        st.is_some(),
        "no exit within 15 s with the NBD server stopped"
    );
    println!("shutdown with a stopped NBD server took {took:?}");
    // The shutdown flush cannot reach the server, and says so.
    d.wait_line_within("rtarget: error", Duration::from_secs(5));
    assert!(!st.unwrap().success());
    assert!(
        d.seen
            .iter()
            .any(|l| l.contains("some backstores could not be flushed")),
        "{}",
        d.seen.join("\n")
    );
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
}
