//! End-to-end tests of live management: a daemon on a temporary API socket,
//! driven by the one-shot CLI and the shell exactly as a user would (the
//! seed walk-through), checked with libiscsi's `iscsi-ls`, the saved
//! config, and a restart.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rtarget");
const IQN: &str = "iqn.2026-11.org.example:t1";

struct Daemon {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(config: &Path, socket: &Path, portal: u16) -> Daemon {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(config.parent().unwrap())
            .arg("--default-portal")
            .arg(format!("127.0.0.1:{portal}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rtarget");
        let (tx, lines) = channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Daemon {
            child,
            lines,
            seen: Vec::new(),
        };
        d.wait_line("rtarget: API on ");
        d
    }

    fn wait_line(&mut self, prefix: &str) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no {prefix:?} line; stderr:\n{}", self.seen.join("\n"));
    }

    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "exit status {st:?}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not stop on SIGTERM");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run rtarget")
}

/// Run a CLI command that must succeed; returns stdout.
fn ok(socket: &Path, args: &[&str]) -> String {
    let out = cli(socket, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rtarget {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn have_iscsi_ls() -> bool {
    Command::new("iscsi-ls").arg("--help").output().is_ok()
}

fn iscsi_ls(port: u16) -> String {
    let out = Command::new("timeout")
        .args(["20", "iscsi-ls", "-s", &format!("iscsi://127.0.0.1:{port}")])
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "iscsi-ls failed: {s}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
    socket: PathBuf,
    image: PathBuf,
    port: u16,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("saveconfig.json");
    std::fs::write(&config, "{}\n").unwrap();
    Setup {
        socket: dir.path().join("rtarget.sock"),
        image: dir.path().join("mydisk1.img"),
        config,
        port: free_port(),
        _dir: dir,
    }
}

/// The seed walk-through with the one-shot CLI, served live without a
/// restart, saved, and served again after a restart.
#[test]
fn walkthrough_applies_live_saves_and_survives_restart() {
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let mode = std::fs::metadata(&s.socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let tpg = format!("/iscsi/{IQN}/tpg1");
    let img = s.image.to_str().unwrap();
    ok(
        &s.socket,
        &["/backstores/fileio", "create", "mydisk1", img, "64M"],
    );
    let out = ok(&s.socket, &["/iscsi", "create", &format!("wwn={IQN}")]);
    assert!(out.contains(&format!("Created target {IQN}")), "{out}");
    ok(
        &s.socket,
        &[
            &tpg,
            "set",
            "attribute",
            "authentication=0",
            "generate_node_acls=1",
            "demo_mode_write_protect=0",
        ],
    );
    ok(
        &s.socket,
        &[
            &format!("{tpg}/luns"),
            "create",
            "storage_object=/backstores/fileio/mydisk1",
        ],
    );
    assert_eq!(std::fs::metadata(&s.image).unwrap().len(), 64 << 20);

    let ls = ok(&s.socket, &["ls"]);
    let lines: Vec<&str> = ls.lines().collect();
    assert!(
        lines[0].starts_with("o- / ...") && lines[0].ends_with("[...]"),
        "{ls}"
    );
    // Padded to 80 columns (long paths overflow, as in targetcli).
    assert!(lines.iter().all(|l| l.chars().count() >= 80), "{ls}");
    assert_eq!(lines[1].chars().count(), 80, "{ls}");
    for want in [
        "  o- backstores ",
        "  | o- fileio ",
        "[Storage Objects: 1]",
        "  | | o- mydisk1 ",
        &format!("[{img} (64.0MiB) write-back activated]"),
        "  o- iscsi ",
        "[Targets: 1]",
        &format!("  | o- {IQN} "),
        "[TPGs: 1]",
        "  |   o- tpg1 ",
        "[gen-acls, no-auth]",
        "[LUNs: 1]",
        "  |     | o- lun0 ",
        &format!("[fileio/mydisk1 ({img}) (default_tg_pt_gp)]"),
        "[Portals: 1]",
        &format!("  |       o- 127.0.0.1:{} ", s.port),
        "[OK]",
        "  o- loopback ",
        "  o- vhost ",
    ] {
        assert!(ls.contains(want), "missing {want:?} in:\n{ls}");
    }
    let ls1 = ok(&s.socket, &["ls", "/iscsi", "1"]);
    assert_eq!(ls1.lines().count(), 2, "{ls1}");

    if have_iscsi_ls() {
        let out = iscsi_ls(s.port);
        assert!(out.contains(&format!("Target:{IQN}")), "{out}");
        assert!(out.contains("Lun:0"), "{out}");
        // A second portal starts listening at once.
        let port2 = free_port();
        ok(
            &s.socket,
            &[
                &format!("{tpg}/portals"),
                "create",
                "127.0.0.1",
                &port2.to_string(),
            ],
        );
        let out = iscsi_ls(port2);
        assert!(
            out.contains(&format!("Target:{IQN}")) && out.contains("Lun:0"),
            "{out}"
        );
        ok(
            &s.socket,
            &[
                &format!("{tpg}/portals"),
                "delete",
                "127.0.0.1",
                &port2.to_string(),
            ],
        );
    }

    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    assert_eq!(saved["storage_objects"][0]["name"], "mydisk1");
    assert_eq!(saved["storage_objects"][0]["size"], 64 << 20);
    let t = &saved["targets"][0];
    assert_eq!(t["wwn"], IQN);
    assert_eq!(t["tpgs"][0]["attributes"]["generate_node_acls"], 1);
    assert_eq!(
        t["tpgs"][0]["luns"][0]["storage_object"],
        "/backstores/fileio/mydisk1"
    );
    assert_eq!(t["tpgs"][0]["portals"].as_array().unwrap().len(), 1);

    d.stop();
    assert!(!s.socket.exists(), "socket left behind");
    let mut d = Daemon::start(&s.config, &s.socket, s.port);
    let line = d.wait_line("rtarget: listening on ");
    assert_eq!(line, format!("rtarget: listening on 127.0.0.1:{}", s.port));
    assert!(ok(&s.socket, &["ls"]).contains("[fileio/mydisk1 ("));
    if have_iscsi_ls() {
        assert!(iscsi_ls(s.port).contains("Lun:0"));
    }
    d.stop();
}

#[test]
fn bad_arguments_fail_clearly_and_the_daemon_survives() {
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let bad: &[(&[&str], &str)] = &[
        (
            &["/backstores/fileio", "create", "d1"],
            "missing parameter file_or_dev",
        ),
        (
            &["/backstores/fileio", "create", "d1", "/x.img", "12Q"],
            "unknown unit",
        ),
        (
            &["/iscsi", "create", "not-an-iqn"],
            "not a valid iSCSI name",
        ),
        (&["/nowhere", "ls"], "no such path: /nowhere"),
        (&["/iscsi", "frobnicate"], "unknown command"),
        (
            &["/backstores/fileio", "create", "bogus=1"],
            "unknown parameter",
        ),
        (&["/", "set", "attribute", "a=1"], "no configuration group"),
    ];
    for (args, want) in bad {
        let out = cli(&s.socket, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
    // Raw protocol garbage gets an error line, and the daemon keeps serving.
    let mut c = std::os::unix::net::UnixStream::connect(&s.socket).unwrap();
    c.write_all(b"not json\n{\"op\":\"nope\"}\n{\"op\":\"ping\"}\n")
        .unwrap();
    let mut r = BufReader::new(c);
    for want in ["bad JSON", "unknown op", "\"ok\":true"] {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains(want), "{line}");
    }
    let out = ok(&s.socket, &["--json", "ls", "/", "0"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["tree"]["name"], "/");
    // Nothing bad was saved.
    assert_eq!(std::fs::read_to_string(&s.config).unwrap(), "{}\n");
    d.stop();

    let out = cli(&s.socket, &["ls"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the rtarget daemon"));
}

#[test]
fn shell_reads_commands_from_stdin() {
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let script = format!(
        "/backstores/ramdisk create r0 16M\ncd /iscsi\npwd\ncreate {IQN}\ncd {IQN}/tpg1\npwd\nluns/ create /backstores/ramdisk/r0\nls luns\nget attribute generate_node_acls\nsaveconfig\nbookmarks add t1\ncd /\ncd @t1/luns\npwd\nexit\nls\n"
    );
    let mut child = Command::new(BIN)
        .env("HOME", s.config.parent().unwrap())
        .arg("--socket")
        .arg(&s.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Created ramdisk r0"), "{stdout}");
    assert!(stdout.contains("\n/iscsi\n"), "{stdout}");
    assert!(stdout.contains(&format!("/iscsi/{IQN}/tpg1\n")), "{stdout}");
    assert!(
        stdout.contains("o- luns ") && stdout.contains("[ramdisk/r0 (default_tg_pt_gp)]"),
        "{stdout}"
    );
    assert!(stdout.contains("generate_node_acls=0"), "{stdout}");
    assert!(stdout.contains("Configuration saved to"), "{stdout}");
    assert!(
        stdout.contains(&format!("/iscsi/{IQN}/tpg1/luns\n")),
        "{stdout}"
    );
    assert!(s.config.with_file_name(".rtarget_bookmarks").exists());
    // `exit` ends the script: the final `ls` did not run.
    assert_eq!(stdout.matches("o- ").count(), 2, "{stdout}");

    // A failing command makes the script's exit status non-zero.
    let mut child = Command::new(BIN)
        .arg("--socket")
        .arg(&s.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"cd /nowhere\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such path: /nowhere"));
    d.stop();
}

#[test]
fn saveconfig_clearconfig_restoreconfig_and_enable() {
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let copy = s.config.with_file_name("copy.json");
    ok(&s.socket, &["/backstores/ramdisk", "create", "r0", "16M"]);
    ok(&s.socket, &["/iscsi", "create", IQN]);
    let tpg = format!("/iscsi/{IQN}/tpg1");
    ok(&s.socket, &[&tpg, "disable"]);
    assert!(ok(&s.socket, &["ls", &tpg, "0"]).contains("[disabled]"));
    ok(&s.socket, &[&tpg, "enable"]);
    assert!(ok(&s.socket, &["ls", &tpg, "0"]).contains("[no-gen-acls, no-auth]"));
    let out = ok(&s.socket, &[&tpg, "status"]);
    assert_eq!(out, format!("Status for {tpg}: no-gen-acls, no-auth\n"));
    ok(
        &s.socket,
        &[&tpg, "set", "auth", "userid=u1", "password=secret12"],
    );
    let out = ok(&s.socket, &["/backstores/ramdisk/r0", "info"]);
    assert!(
        out.contains("plugin: ramdisk\n") && out.contains("size: 16777216\n"),
        "{out}"
    );
    let out = ok(&s.socket, &[&tpg, "info"]);
    assert!(
        out.contains("chap_userid: u1\n") && !out.contains("secret12"),
        "{out}"
    );
    let out = ok(&s.socket, &[&tpg, "get", "auth", "password"]);
    assert_eq!(out, "password=secret12\n");
    let out = ok(&s.socket, &["saveconfig", copy.to_str().unwrap()]);
    assert!(out.contains("Configuration saved to"), "{out}");

    let out = cli(&s.socket, &["clearconfig"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("confirm=true"));
    ok(&s.socket, &["clearconfig", "confirm=true"]);
    let ls = ok(&s.socket, &["ls"]);
    assert!(ls.contains("[Targets: 0]") && !ls.contains("r0"), "{ls}");
    let saved = std::fs::read_to_string(&s.config).unwrap();
    assert!(!saved.contains(IQN), "{saved}");

    ok(&s.socket, &["restoreconfig", copy.to_str().unwrap()]);
    let ls = ok(&s.socket, &["ls"]);
    assert!(
        ls.contains(&format!("o- {IQN} ")) && ls.contains("o- r0 "),
        "{ls}"
    );
    assert!(std::fs::read_to_string(&s.config).unwrap().contains(IQN));

    // Global preferences: no autosave, no default portal.
    ok(
        &s.socket,
        &[
            "set",
            "global",
            "auto_save=false",
            "auto_add_default_portal=false",
        ],
    );
    assert_eq!(
        ok(&s.socket, &["get", "global", "auto_save"]),
        "auto_save=false\n"
    );
    let prefs = s.config.with_file_name("rtarget-prefs.json");
    assert!(std::fs::read_to_string(&prefs)
        .unwrap()
        .contains("\"auto_save\": false"));
    let before = std::fs::read_to_string(&s.config).unwrap();
    let iqn2 = "iqn.2026-11.org.example:t2";
    let out = cli(&s.socket, &["/iscsi", "create", iqn2]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT saved"));
    assert_eq!(std::fs::read_to_string(&s.config).unwrap(), before);
    assert!(
        ok(&s.socket, &["ls", &format!("/iscsi/{iqn2}/tpg1/portals")]).contains("[Portals: 0]")
    );
    ok(&s.socket, &["saveconfig"]);
    assert!(std::fs::read_to_string(&s.config).unwrap().contains(iqn2));
    assert!(!cli(&s.socket, &["set", "global", "auto_sve=1"])
        .status
        .success());
    d.stop();
}

/// TPG CHAP set with `set auth` applies to the next login: the right
/// secret logs in, a wrong one or none is refused.
#[test]
fn tpg_chap_set_through_the_cli_is_enforced() {
    if Command::new("iscsi-inq").arg("--help").output().is_err() {
        println!("iscsi-inq is not installed: skipping");
        return;
    }
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let tpg = format!("/iscsi/{IQN}/tpg1");
    ok(&s.socket, &["/backstores/ramdisk", "create", "r0", "16M"]);
    ok(&s.socket, &["/iscsi", "create", IQN]);
    ok(
        &s.socket,
        &[&format!("{tpg}/luns"), "create", "/backstores/ramdisk/r0"],
    );
    ok(
        &s.socket,
        &[
            &tpg,
            "set",
            "attribute",
            "authentication=1",
            "generate_node_acls=1",
        ],
    );
    let out = ok(
        &s.socket,
        &[&tpg, "set", "auth", "userid=u1", "password=secret123456"],
    );
    assert!(!out.contains("secret123456"), "{out}");
    assert!(ok(&s.socket, &["ls", &tpg, "0"]).contains("[gen-acls, tpg-auth, 1-way auth]"));
    let inq = |creds: &str| {
        Command::new("timeout")
            .args([
                "20",
                "iscsi-inq",
                &format!("iscsi://{creds}127.0.0.1:{}/{IQN}/0", s.port),
            ])
            .output()
            .unwrap()
    };
    let good = inq("u1%secret123456@");
    assert!(
        good.status.success() && String::from_utf8_lossy(&good.stdout).contains("DIRECT_ACCESS"),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    // Mutual CHAP: the target proves itself with the mutual secret.
    ok(
        &s.socket,
        &[
            &tpg,
            "set",
            "auth",
            "mutual_userid=tgt",
            "mutual_password=tsecret654321",
        ],
    );
    assert!(ok(&s.socket, &["ls", &tpg, "0"]).contains("[gen-acls, tpg-auth, mutual auth]"));
    let mutual = |tp: &str| {
        Command::new("timeout")
            .args([
                "20",
                "iscsi-inq",
                &format!(
                    "iscsi://u1%secret123456@127.0.0.1:{}/{IQN}/0?target_user=tgt&target_password={tp}",
                    s.port
                ),
            ])
            .output()
            .unwrap()
    };
    assert!(mutual("tsecret654321").status.success());
    let out = mutual("wrongwrong1234");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CHAP_R"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bad in ["u1%wrongwrong12@", ""] {
        let out = inq(bad);
        assert!(!out.status.success(), "login with {bad:?} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Authentication failure"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.stop();
}

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

/// A default portal whose port is taken does not stop target creation.
#[test]
fn taken_default_portal_leaves_the_target_without_a_portal() {
    let s = setup();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let d = Daemon::start(&s.config, &s.socket, port);
    let out = cli(&s.socket, &["/iscsi", "create", IQN]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    let ls = ok(&s.socket, &["ls", &format!("/iscsi/{IQN}/tpg1/portals")]);
    assert!(ls.contains("[Portals: 0]"), "{ls}");
    // Another port works at once.
    let out = ok(
        &s.socket,
        &[
            &format!("/iscsi/{IQN}/tpg1/portals"),
            "create",
            "127.0.0.1",
            &s.port.to_string(),
        ],
    );
    assert!(out.contains("Created network portal"), "{out}");
    d.stop();
}

/// A saveconfig.json written by targetcli-fb (fileio, block, ramdisk,
/// ACLs, CHAP, two targets) restores live and serves; only the machine
/// specific paths and the portal are rewritten for the test.
#[test]
fn targetcli_saveconfig_restores_live_and_serves() {
    let s = setup();
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/tests/data/targetcli-sample.json"
    );
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sample).unwrap()).unwrap();
    let dir = s.config.parent().unwrap().to_path_buf();
    for so in v["storage_objects"].as_array_mut().unwrap() {
        if let Some(dev) = so["dev"].as_str() {
            let name = Path::new(dev).file_name().unwrap().to_owned();
            let path = dir.join(name);
            if so["plugin"] == "block" {
                std::fs::File::create(&path)
                    .unwrap()
                    .set_len(64 << 20)
                    .unwrap();
            }
            so["dev"] = serde_json::json!(path);
        }
    }
    v["targets"][0]["tpgs"][0]["portals"][0] = serde_json::json!({"ip_address": "127.0.0.1", "port": s.port, "iser": false, "offload": false});
    let restored = dir.join("from-targetcli.json");
    std::fs::write(&restored, serde_json::to_string_pretty(&v).unwrap()).unwrap();

    let d = Daemon::start(&s.config, &s.socket, s.port);
    let out = cli(&s.socket, &["restoreconfig", restored.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // ACLs and their CHAP credentials are enforced now: not reported.
    assert!(!stderr.contains("not enforced"), "{stderr}");
    let iqn = v["targets"][0]["wwn"].as_str().unwrap();
    let ls = ok(&s.socket, &["ls"]);
    for want in [
        "[Storage Objects: 2]",
        "[TPGs: 1]",
        "[ACLs: 1]",
        "[LUNs: 3]",
        "[Targets: 2]",
        "[disabled]",
        "o- iqn.1994-05.com.redhat:4d1f3e5a7b9c ",
        "[nullio (1.0TiB) activated]",
    ] {
        assert!(ls.contains(want), "missing {want:?} in\n{ls}");
    }
    if have_iscsi_ls() {
        let out = iscsi_ls(s.port);
        assert!(out.contains(&format!("Target:{iqn}")), "{out}");
        assert!(out.contains("Lun:0") && out.contains("Lun:2"), "{out}");
    }
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    assert_eq!(saved["targets"], v["targets"]);
    d.stop();
}
