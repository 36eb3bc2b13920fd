//! Helpers shared by the daemon tests (`manage*.rs`, `alua_live.rs`,
//! `save_kill.rs`): a daemon on a temporary API socket and state
//! directory, the one-shot CLI, and libiscsi's `iscsi-ls`.
//! Each test crate uses a different subset of them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_rtarget");
pub const IQN: &str = "iqn.2026-11.org.example:t1";

pub struct Daemon {
    pub child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    pub fn start(config: &Path, socket: &Path, portal: u16) -> Daemon {
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

    pub fn wait_line(&mut self, prefix: &str) -> String {
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

    pub fn stop(mut self) {
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

pub fn have_iscsi_ls() -> bool {
    Command::new("iscsi-ls").arg("--help").output().is_ok()
}

pub fn iscsi_ls(port: u16) -> String {
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
