//! `user:qemu` backstore against the real qemu-storage-daemon and qemu-nbd:
//! images made by qemu-img read back byte-exact, writes land in the image
//! (qemu-img check clean), a killed child is restarted and the connection
//! recovers, and dropping the backstore leaves no process behind. Skipped
//! with a message when QEMU's tools are not installed.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backstore::qemu::Program;
use backstore::{Backstore, QemuBackstore, QemuConfig, QemuOptions};
use common::{require_tool, retry, run};

/// An image of `format` with 0xab at [0, 1M) and 0x5c at [3M, 3M+64K).
fn image(dir: &Path, format: &str) -> PathBuf {
    let p = dir.join(format!("img.{format}"));
    let ps = p.to_str().unwrap();
    run("qemu-img", &["create", "-q", "-f", format, ps, "16M"]);
    run(
        "qemu-io",
        &[
            "-f",
            format,
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "write -P 0x5c 3M 64k",
            ps,
        ],
    );
    p
}

fn opts(dir: &Path, program: Option<Program>) -> QemuOptions {
    QemuOptions {
        name: "t".into(),
        run_dir: dir.to_path_buf(),
        program,
        read_only: false,
    }
}

/// The config string `FORMAT/IMAGE` plus `extra` (e.g. `;readonly=on`).
fn config(format: &str, img: &Path, extra: &str) -> QemuConfig {
    QemuConfig::parse(&format!("{format}/{}{extra}", img.display())).unwrap()
}

/// `FORMAT/IMAGE` + `extra` served from `dir` by `program` (`None`: the
/// backstore's choice, qemu-storage-daemon when installed).
fn serve(
    dir: &Path,
    format: &str,
    img: &Path,
    extra: &str,
    program: Option<Program>,
) -> QemuBackstore {
    QemuBackstore::open(config(format, img, extra), &opts(dir, program)).unwrap()
}

/// The backstore's private socket directories left in `dir`.
fn socket_dirs(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rtarget-qemu-"))
        .collect()
}

fn alive(pid: u32) -> bool {
    // Zombies count as dead: /proc/PID/stat's state is 'Z'.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|t| !t.trim_start().starts_with('Z'))
    })
}

fn check_pattern(b: &QemuBackstore) {
    let mut buf = vec![0u8; 1 << 20];
    b.read_at(&mut buf, 0).unwrap();
    assert!(buf.iter().all(|&x| x == 0xab));
    b.read_at(&mut buf[..128 << 10], 3 << 20).unwrap();
    assert!(buf[..64 << 10].iter().all(|&x| x == 0x5c));
    assert!(buf[64 << 10..128 << 10].iter().all(|&x| x == 0));
}

#[test]
fn formats_read_back_and_writes_land_in_the_image() {
    if !require_tool("qemu-img") || !require_tool("qemu-storage-daemon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for format in ["vmdk", "vhdx", "vdi", "qcow2"] {
        let img = image(dir.path(), format);
        let b = serve(dir.path(), format, &img, "", None);
        assert_eq!(b.size(), 16 << 20, "{format}");
        assert!(matches!(b.program(), Program::StorageDaemon(_)));
        check_pattern(&b);
        b.write_at(&[0x77; 8192], 8 << 20).unwrap();
        b.write_zeroes(0, 4096).unwrap();
        b.flush().unwrap();
        let pid = b.daemon_pid().unwrap();
        drop(b);
        assert!(!alive(pid), "{format}: child {pid} outlived the backstore");
        let ps = img.to_str().unwrap();
        run("qemu-img", &["check", "-q", "-f", format, ps]);
        run(
            "qemu-io",
            &[
                "-f",
                format,
                "-c",
                "read -P 0x77 8M 8k",
                "-c",
                "read -P 0 0 4k",
                "-c",
                "read -P 0xab 4k 1020k",
                ps,
            ],
        );
        // The socket directory is gone with it.
        assert!(
            socket_dirs(dir.path()).is_empty(),
            "{format}: socket dir left behind"
        );
    }
}

#[test]
fn killed_daemon_is_restarted_and_io_recovers() {
    if !require_tool("qemu-img") || !require_tool("qemu-storage-daemon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "qcow2");
    let b = serve(dir.path(), "qcow2", &img, "", None);
    let pid = b.daemon_pid().unwrap();
    // Private socket directory.
    let sock_dir = socket_dirs(dir.path()).pop().unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        sock_dir.metadata().unwrap().permissions().mode() & 0o777,
        0o700
    );
    let sock = sock_dir.path().join("nbd.sock");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );

    b.write_at(&[0x11; 4096], 5 << 20).unwrap();
    b.flush().unwrap();
    b.write_at(&[0x22; 4096], 6 << 20).unwrap();
    // SAFETY: signalling the test's own grandchild.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    // The next request waits for the restart and succeeds.
    check_pattern(&b);
    let pid2 = retry(
        "no restart",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            b.daemon_pid()
                .filter(|p| *p != pid)
                .ok_or("still the old pid")
        },
    );
    assert!(!alive(pid));
    assert_eq!(b.restarts(), 1);
    assert_eq!(b.health(), [("restarts", 1)]);
    let mut buf = [0u8; 4096];
    b.read_at(&mut buf, 5 << 20).unwrap();
    assert_eq!(buf, [0x11; 4096], "flushed write survived the crash");
    // A write was unflushed when qcow2's caches died with the child: every
    // later flush and FUA write says so (until the object is re-opened).
    b.write_at(&[0x33; 4096], 7 << 20).unwrap();
    assert!(b.flush().is_err(), "possible loss not reported");
    assert!(b.flush().is_err(), "possible loss reported only once");
    assert!(b.write_at_fua(&[0x44; 4096], 7 << 20).is_err());
    drop(b);
    assert!(!alive(pid2));
    run(
        "qemu-img",
        &["check", "-q", "-f", "qcow2", img.to_str().unwrap()],
    );
}

#[test]
fn qemu_nbd_fallback_and_start_failures() {
    if !require_tool("qemu-img") || !require_tool("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "vmdk");
    let nbd = Program::QemuNbd("qemu-nbd".into());
    let b = serve(dir.path(), "vmdk", &img, ";readonly=on", Some(nbd.clone()));
    assert!(b.capabilities().read_only);
    check_pattern(&b);
    assert!(b.write_at(&[0; 512], 0).is_err());
    let pid = b.daemon_pid().unwrap();
    drop(b);
    assert!(!alive(pid));

    // A wrong format fails at open with QEMU's own words, leaving nothing.
    let cfg = config("vhdx", &img, "");
    for p in [None, Some(nbd)] {
        let e = QemuBackstore::open(cfg.clone(), &opts(dir.path(), p))
            .err()
            .expect("vmdk opened as vhdx");
        assert!(e.to_string().contains("exited during start"), "{e}");
    }
    assert_eq!(socket_dirs(dir.path()).len(), 0);
}

/// A child that cannot come back: requests wait `RECONNECT_WAIT`, then fail
/// (the core answers MEDIUM ERROR) naming the daemon; once the image is back
/// the supervisor's next attempt succeeds and I/O resumes.
#[test]
fn io_fails_while_the_daemon_cannot_restart_then_resumes() {
    if !require_tool("qemu-img") || !require_tool("qemu-storage-daemon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "vdi");
    let b = serve(dir.path(), "vdi", &img, ";readonly=on", None);
    let pid = b.daemon_pid().unwrap();
    let away = dir.path().join("away.vdi");
    std::fs::rename(&img, &away).unwrap();
    // SAFETY: signalling the test's own grandchild.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    let e = b.read_at(&mut buf, 0).unwrap_err();
    assert!(t.elapsed() >= backstore::qemu::RECONNECT_WAIT, "{e}");
    assert!(e.to_string().contains("is not running"), "{e}");
    assert!(b.restarts() >= 2, "kept retrying: {}", b.restarts());
    std::fs::rename(&away, &img).unwrap();
    retry(
        "no recovery",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || b.read_at(&mut buf, 0),
    );
    assert_eq!(buf, [0xab; 4096]);
}
