//! The daemon under systemd's protocols, without systemd: READY=1 on
//! `$NOTIFY_SOCKET` once the portals accept connections, and SIGHUP (the
//! unit's ExecReload) re-reading the config file, where a broken file
//! changes nothing and a good one is applied.

mod common;

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The test's end of `$NOTIFY_SOCKET`.
struct Notify {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl Notify {
    fn bind(path: &Path) -> Notify {
        Notify {
            sock: UnixDatagram::bind(path).unwrap(),
            seen: Vec::new(),
        }
    }

    /// The next message that has the line `line`, within 30 s.
    fn wait_for(&mut self, line: &str) -> String {
        let end = Instant::now() + Duration::from_secs(30);
        let mut buf = vec![0u8; 4096];
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            self.sock.set_read_timeout(Some(left)).unwrap();
            let Ok(n) = self.sock.recv(&mut buf) else {
                break;
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(msg.clone());
            if msg.lines().any(|l| l == line) {
                return msg;
            }
        }
        panic!("no {line:?} notification; got {:?}", self.seen);
    }
}

fn serve_notified(s: &Setup, notify: &Path) -> Daemon {
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .arg("--config")
        .arg(&s.config)
        .arg("--socket")
        .arg(&s.socket)
        .arg("--state-dir")
        .arg(s.config.parent().unwrap())
        .env("NOTIFY_SOCKET", notify);
    Daemon::spawn(cmd)
}

/// Wait for a stderr line containing `text` (log lines start with a time).
fn logged(d: &mut Daemon, text: &str) {
    while let Some(l) = d.wait_line_within("", Duration::from_secs(30)) {
        if l.contains(text) {
            return;
        }
    }
    panic!("no line with {text:?}: {:?}", d.seen);
}

fn accepts(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_ok()
}

#[test]
fn ready_after_the_portal_listens_and_sighup_reloads_only_good_files() {
    // A saved config with a target on the test's portal.
    let served = Served::start();
    served.ok(&["/backstores/ramdisk", "create", "r1", "16M"]);
    served.demo_target(IQN, &["/backstores/ramdisk/r1"]);
    let s = served.stop();
    assert!(!accepts(s.port));

    let notify_path = s.config.with_file_name("notify");
    let mut notify = Notify::bind(&notify_path);
    let mut d = serve_notified(&s, &notify_path);
    let ready = notify.wait_for("READY=1");
    // READY means the portal accepts now, not soon.
    assert!(accepts(s.port), "READY before the portal listens");
    assert!(ready.contains("STATUS=serving 1 target(s)"), "{ready}");

    // A good file: applied (a second storage object appears).
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    cfg["storage_objects"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"plugin": "ramdisk", "name": "r2", "size": 1048576}));
    std::fs::write(&s.config, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    d.signal(libc::SIGHUP);
    notify.wait_for("RELOADING=1");
    let done = notify.wait_for("READY=1");
    assert!(done.contains("STATUS=reloaded"), "{done}");
    let ls = ok(&s.socket, &["ls", "/backstores/ramdisk"]);
    assert!(ls.contains("o- r1 ") && ls.contains("o- r2 "), "{ls}");

    // A broken file, then an invalid one (a LUN of a missing object):
    // reported, and nothing running changes.
    for bad in ["{ \"storage_objects\": [ ,, ] }".to_string(), {
        let mut c = cfg.clone();
        c["storage_objects"] = serde_json::json!([]);
        c.to_string()
    }] {
        std::fs::write(&s.config, &bad).unwrap();
        d.signal(libc::SIGHUP);
        let done = notify.wait_for("READY=1");
        assert!(
            done.contains("failed (running configuration unchanged)"),
            "{done}"
        );
        logged(
            &mut d,
            "reload failed, the running configuration is unchanged",
        );
        let ls = ok(&s.socket, &["ls", "/backstores/ramdisk"]);
        assert!(ls.contains("o- r1 ") && ls.contains("o- r2 "), "{ls}");
        assert!(accepts(s.port));
        // The file is left as the admin wrote it, to be fixed.
        assert_eq!(std::fs::read_to_string(&s.config).unwrap(), bad);
    }
    d.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1");
    assert!(d.wait_exit(Duration::from_secs(20)).unwrap().success());
}

/// Under systemd stderr is the journal stream `$JOURNAL_STREAM` names:
/// log lines then carry their level as `<N>` (no timestamp, no colour).
#[test]
fn journal_stream_gets_priority_prefixes() {
    use std::os::unix::fs::MetadataExt;
    let s = setup();
    let log = s.config.with_file_name("journal.log");
    let file = std::fs::File::create(&log).unwrap();
    let md = file.metadata().unwrap();
    let notify_path = s.config.with_file_name("notify");
    let mut notify = Notify::bind(&notify_path);
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&s.config)
        .arg("--socket")
        .arg(&s.socket)
        .arg("--state-dir")
        .arg(s.config.parent().unwrap())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("JOURNAL_STREAM", format!("{}:{}", md.dev(), md.ino()))
        .env("RUST_LOG", "info")
        .stderr(file)
        .spawn()
        .unwrap();
    notify.wait_for("READY=1");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("<6>rtarget::serve: ready")),
        "{text}"
    );
    assert!(!text.contains('\x1b') && !text.contains("INFO"), "{text}");
}
