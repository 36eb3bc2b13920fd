//! Helpers shared by the daemon tests (`manage*.rs`, `acl_live.rs`, `alua_live.rs`,
//! `fabric_live.rs`, `resize.rs`, `save_kill.rs`, `serve.rs`): a daemon
//! whose stderr is watched, started on a temporary API socket and state
//! directory ([`Served`]), the one-shot CLI, a demo-mode target, libiscsi's
//! tools, and the SCSI answers a raw-PDU initiator checks. The initiator
//! itself is the iscsi crate's test client ([`initiator`]); host helpers
//! (seeded random numbers, loop devices, reaped children) are backstore's
//! ([`host`]). Each test crate uses a different subset of them.
#![allow(dead_code)]

#[path = "../../../iscsi/tests/common/mod.rs"]
pub mod initiator;

#[path = "../../../backstore/tests/common/mod.rs"]
pub mod host;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use initiator::Client;

pub const BIN: &str = env!("CARGO_BIN_EXE_rtarget");
pub const IQN: &str = "iqn.2026-11.org.example:t1";

/// A running `rtarget` whose stderr lines are collected (so tests can wait
/// for one, and the daemon never blocks writing them); killed on drop.
pub struct Daemon {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Daemon {
    /// `rtarget serve` on `config` with its API on `socket`, its state next
    /// to the config and its default portal on 127.0.0.1:`portal`; returns
    /// once the API listens.
    pub fn start(config: &Path, socket: &Path, portal: u16) -> Daemon {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--config")
            .arg(config)
            .arg("--socket")
            .arg(socket)
            .arg("--state-dir")
            .arg(config.parent().unwrap())
            .arg("--default-portal")
            .arg(format!("127.0.0.1:{portal}"));
        let mut d = Daemon::spawn(cmd);
        d.wait_line("rtarget: API on ");
        d
    }

    /// Runs `cmd` (an `rtarget serve ...`) with stderr watched; does not wait.
    pub fn spawn(mut cmd: Command) -> Daemon {
        let mut child = cmd
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
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stderr line starting with `prefix` within 30 s; panics
    /// with everything seen otherwise.
    pub fn wait_line(&mut self, prefix: &str) -> String {
        match self.wait_line_within(prefix, Duration::from_secs(30)) {
            Some(l) => l,
            None => panic!("no {prefix:?} line; stderr:\n{}", self.seen.join("\n")),
        }
    }

    /// The first stderr line starting with `prefix`; `None` if the daemon
    /// exited or `timeout` passed first.
    pub fn wait_line_within(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if l.starts_with(prefix) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// The exit status, if the daemon exits within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, then a clean exit (status 0) within 20 s.
    pub fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let st = self
            .wait_exit(Duration::from_secs(20))
            .expect("daemon did not stop on SIGTERM");
        assert!(st.success(), "exit status {st:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn cli(socket: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run rtarget")
}

/// Run a CLI command that must succeed; returns stdout.
pub fn ok(socket: &Path, args: &[&str]) -> String {
    let out = cli(socket, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rtarget {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Run a CLI command that must fail; returns its error text.
pub fn fails(socket: &Path, args: &[&str]) -> String {
    let out = cli(socket, args);
    assert!(!out.status.success(), "rtarget {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The TPG attributes of a target anyone may use: no CHAP, ACLs generated
/// for every initiator, LUNs writable in that demo mode.
pub fn demo_mode(socket: &Path, tpg: &str) {
    ok(
        socket,
        &[
            tpg,
            "set",
            "attribute",
            "authentication=0",
            "generate_node_acls=1",
            "demo_mode_write_protect=0",
        ],
    );
}

/// Target `iqn` whose tpg1 is in [`demo_mode`] and exports `objects`
/// (storage object paths) as LUNs 0, 1, ...; returns the TPG's path.
pub fn demo_target(socket: &Path, iqn: &str, objects: &[&str]) -> String {
    ok(socket, &["/iscsi", "create", iqn]);
    let tpg = format!("/iscsi/{iqn}/tpg1");
    demo_mode(socket, &tpg);
    for so in objects {
        ok(socket, &[&format!("{tpg}/luns"), "create", so]);
    }
    tpg
}

/// `timeout 20 PROGRAM ARGS...` (libiscsi's tools retry for long when
/// something is wrong); `None` when the program is not installed (a SKIP
/// line, or a panic under CI=true: [`host::require_tool`]).
#[track_caller]
pub fn tool(args: &[&str]) -> Option<Output> {
    if !host::require_tool(args[0]) {
        return None;
    }
    Some(
        Command::new("timeout")
            .arg("20")
            .args(args)
            .output()
            .unwrap(),
    )
}

/// Whether iscsi-ls is installed ([`host::require_tool`]: fails under CI=true).
#[track_caller]
pub fn have_iscsi_ls() -> bool {
    host::require_tool("iscsi-ls")
}

/// `iscsi-ls -s` against 127.0.0.1:`port`, which must succeed.
pub fn iscsi_ls(port: u16) -> String {
    iscsi_ls_at(&format!("127.0.0.1:{port}"))
}

/// `iscsi-ls -s` against `addr` (`IP:PORT`), which must succeed.
pub fn iscsi_ls_at(addr: &str) -> String {
    let out = tool(&["iscsi-ls", "-s", &format!("iscsi://{addr}")]).unwrap();
    let s = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "iscsi-ls failed: {s}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    s
}

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub image: PathBuf,
    pub port: u16,
}

pub fn setup() -> Setup {
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

/// A daemon on its own [`Setup`], driven through the one-shot CLI: what
/// most daemon tests start with. The daemon is declared first so it is
/// killed before its directory goes.
pub struct Served {
    pub d: Daemon,
    pub s: Setup,
}

impl Served {
    /// A daemon on a fresh setup (empty config, free portal port).
    pub fn start() -> Served {
        Served::on(setup())
    }

    /// A daemon on `s` (e.g. again after [`Served::stop`]).
    pub fn on(s: Setup) -> Served {
        let d = Daemon::start(&s.config, &s.socket, s.port);
        Served { d, s }
    }

    /// Clean shutdown; the setup stays for a restart or a look at the files.
    pub fn stop(self) -> Setup {
        self.d.stop();
        self.s
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.s.socket, args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        ok(&self.s.socket, args)
    }

    pub fn fails(&self, args: &[&str]) -> String {
        fails(&self.s.socket, args)
    }

    pub fn demo_target(&self, iqn: &str, objects: &[&str]) -> String {
        demo_target(&self.s.socket, iqn, objects)
    }

    /// `name` in the state directory (next to saveconfig.json).
    pub fn path(&self, name: &str) -> String {
        self.s
            .config
            .with_file_name(name)
            .to_string_lossy()
            .into_owned()
    }

    /// saveconfig.json as the daemon last wrote it.
    pub fn saved(&self) -> String {
        std::fs::read_to_string(&self.s.config).unwrap()
    }

    pub fn port(&self) -> u16 {
        self.s.port
    }

    /// The default portal.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.s.port))
    }
}

/// Sense key, ASC and ASCQ of the initiator's last CHECK CONDITION.
pub fn sense(c: &Client) -> (u8, u8, u8) {
    let s = &c.last_sense;
    assert!(s.len() >= 14, "no sense: {s:02x?}");
    (s[2] & 0x0f, s[12], s[13])
}

/// READ CAPACITY (16): (status, last LBA + 1); 0 blocks when it failed.
pub fn capacity(c: &mut Client) -> (u8, u64) {
    let cdb = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
    let (st, data, _) = c.read_cmd(&cdb, 32);
    if st != 0 {
        return (st, 0);
    }
    (st, u64::from_be_bytes(data[..8].try_into().unwrap()) + 1)
}

/// REPORT LUNS, which must succeed: the LUN numbers.
pub fn report_luns(c: &mut Client) -> Vec<u64> {
    let (st, data, _) = c.read_cmd(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], 4096);
    assert_eq!(st, 0, "REPORT LUNS, sense {:02x?}", c.last_sense);
    let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
    data[8..8 + len]
        .chunks(8)
        .map(|e| scsi::lun::decode(e.try_into().unwrap()))
        .collect()
}
