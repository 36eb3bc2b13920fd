//! End-to-end tests of the `rtarget` binary: demo creation, config errors,
//! serving the demo target to libiscsi's `iscsi-ls`, clean shutdown.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rtarget");

struct Daemon {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Daemon {
    fn start(config: &Path, state: &Path) -> Daemon {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .arg("--state-dir")
            .arg(state)
            .env("RUST_LOG", "info")
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

    /// Wait for a stderr line starting with `prefix`; None if the daemon
    /// exited or the timeout passed first.
    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
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

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_serve(config: &Path, state: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run rtarget")
}

#[test]
fn broken_config_is_a_located_error_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("saveconfig.json");
    let text = "{\n  \"storage_objects\": [\n    {\"plugin\": \"fileio\",, }\n  ]\n}\n";
    std::fs::write(&cfg, text).unwrap();
    let out = run_serve(&cfg, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3:", cfg.display())),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text);
    assert!(!dir.path().join("backup").exists());
    assert!(!dir.path().join("demo0.img").exists());
}

#[test]
fn invalid_config_lists_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("saveconfig.json");
    let text = r#"{"storage_objects": [], "targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.x:y",
        "tpgs": [{"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/fileio/missing"}],
                  "portals": [{"ip_address": "127.0.0.1", "port": 3260}]}]}]}"#;
    std::fs::write(&cfg, text).unwrap();
    let out = run_serve(&cfg, dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("storage object /backstores/fileio/missing does not exist"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), text);
}

#[test]
fn check_subcommand_reports_warnings() {
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/tests/data/targetcli-sample.json"
    );
    let out = Command::new(BIN)
        .args(["check", "--config", sample])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("OK (5 storage objects, 2 targets"),
        "{stdout}"
    );
    // Its ACLs and CHAP credentials are served: nothing to warn about.
    assert!(!stdout.contains("not enforced"), "{stdout}");
    // What rtarget keeps but does not act on is reported.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("saveconfig.json");
    std::fs::write(
        &cfg,
        r#"{"targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.x:y", "tpgs": [{"tag": 1,
            "portals": [{"ip_address": "127.0.0.1", "port": 3260, "iser": true}]}]}]}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("warning: "), "{stdout}");
}

/// Without a config: the demo config and sparse image are written, the
/// daemon serves the demo target (iscsi-ls sees it), and SIGTERM stops it
/// with status 0.
#[test]
fn demo_target_is_created_served_and_shut_down() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("etc/saveconfig.json");
    let state = dir.path().join("state");
    let mut d = Daemon::start(&cfg, &state);
    let line = d.wait_line("rtarget: listening on ", Duration::from_secs(30));
    let Some(line) = line else {
        panic!("daemon never listened; stderr:\n{}", d.seen.join("\n"));
    };
    let addr = line
        .trim_start_matches("rtarget: listening on ")
        .trim()
        .to_string();

    let saved = std::fs::read_to_string(&cfg).expect("demo config written");
    let v: serde_json::Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(v["targets"][0]["wwn"], "iqn.2026-11.org.rtarget:demo");
    assert_eq!(v["storage_objects"][0]["name"], "demo0");
    let img = std::fs::metadata(state.join("demo0.img")).unwrap();
    assert_eq!(img.len(), 1 << 30);
    assert!(
        std::os::unix::fs::MetadataExt::blocks(&img) * 512 < 1 << 20,
        "image is not sparse"
    );
    assert!(d
        .wait_line("  libiscsi  iscsi-ls -s iscsi://", Duration::from_secs(5))
        .is_some());

    if Command::new("iscsi-ls").arg("--help").output().is_err() {
        println!("iscsi-ls is not installed: skipping the discovery check");
    } else {
        let out = Command::new("timeout")
            .args(["20", "iscsi-ls", "-s", &format!("iscsi://{addr}")])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "iscsi-ls failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("Target:iqn.2026-11.org.rtarget:demo"),
            "{stdout}"
        );
        assert!(stdout.contains("Lun:0"), "{stdout}");
    }

    d.signal(libc::SIGTERM);
    let st = d
        .wait_exit(Duration::from_secs(20))
        .expect("daemon did not stop on SIGTERM");
    assert!(st.success(), "exit status {st:?}");

    // A second start reuses the saved config (no demo banner, same identity).
    let mut d = Daemon::start(&cfg, &state);
    assert!(d
        .wait_line("rtarget: listening on ", Duration::from_secs(30))
        .is_some());
    assert!(
        !d.seen.iter().any(|l| l.contains("demo target was created")),
        "{:?}",
        d.seen
    );
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), saved);
    d.signal(libc::SIGINT);
    assert!(d
        .wait_exit(Duration::from_secs(20))
        .expect("no exit on SIGINT")
        .success());
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok()
}

/// 64 MiB of random data written to the demo LUN with qemu-img and read
/// back byte for byte.
#[test]
fn demo_lun_round_trips_data_through_qemu_img() {
    if !have("qemu-img") {
        println!("qemu-img is not installed: skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("saveconfig.json");
    let mut d = Daemon::start(&cfg, dir.path());
    let Some(line) = d.wait_line("rtarget: listening on ", Duration::from_secs(30)) else {
        panic!("daemon never listened; stderr:\n{}", d.seen.join("\n"));
    };
    let addr = line
        .trim_start_matches("rtarget: listening on ")
        .trim()
        .to_string();
    let url = format!("iscsi://{addr}/iqn.2026-11.org.rtarget:demo/0");

    let input = dir.path().join("in.raw");
    let mut data = vec![0u8; 64 << 20];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut data)
        .unwrap();
    std::fs::write(&input, &data).unwrap();
    let out = Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&input)
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "write: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let output = dir.path().join("out.raw");
    let out = Command::new("qemu-img")
        .args(["dd", "-f", "raw", "-O", "raw", "bs=1M", "count=64"])
        .arg(format!("if={url}"))
        .arg(format!("of={}", output.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "read: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = std::fs::read(&output).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "data read back differs from data written");

    d.signal(libc::SIGTERM);
    assert!(d
        .wait_exit(Duration::from_secs(20))
        .expect("no exit on SIGTERM")
        .success());
    // The demo image holds the data after shutdown (flushed, same bytes).
    let mut img = vec![0u8; data.len()];
    let f = std::fs::File::open(dir.path().join("demo0.img")).unwrap();
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut img, 0).unwrap();
    assert!(img == data, "image differs after shutdown");
}
