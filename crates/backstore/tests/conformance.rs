//! Every backstore through the one shared conformance suite
//! ([`backstore::conformance::check`]): file (buffered, write-through,
//! O_DIRECT, read-only), block (a loop device, grown underneath for the
//! resize step), ram, null, native qcow2 (new and made by qemu-img), the
//! NBD client against `qemu-nbd`, and user:qemu (qemu-storage-daemon).
//! Tests that need an external program say SKIP and why when it is absent.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backstore::conformance::{check, Expect};
use backstore::{
    Backstore, FileBackstore, FileOptions, NbdAddr, NbdBackstore, NullBackstore, Qcow2Backstore,
    Qcow2Options, QemuBackstore, QemuConfig, QemuOptions, RamBackstore,
};

const SIZE: u64 = 8 << 20;

fn file(dir: &Path, f: impl FnOnce(&mut FileOptions)) -> FileBackstore {
    let mut o = FileOptions {
        size: Some(SIZE),
        ..FileOptions::new(dir.join("f.img"))
    };
    f(&mut o);
    FileBackstore::open(&o).unwrap()
}

fn have(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        eprintln!("SKIP: {program} is not installed");
    }
    found
}

#[test]
fn file_write_back() {
    let dir = tempfile::tempdir().unwrap();
    check("file", &file(dir.path(), |_| {}), &Expect::default());
}

#[test]
fn file_write_through() {
    let dir = tempfile::tempdir().unwrap();
    let b = file(dir.path(), |o| o.write_back = false);
    assert!(!b.capabilities().write_cache);
    check("file write-through", &b, &Expect::default());
}

/// The `block` plugin's engine on a raw file with O_DIRECT (disk-backed
/// /var/tmp; tmpfs would refuse O_DIRECT and fall back to the page cache).
#[test]
fn block_raw_file_o_direct() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let b = file(dir.path(), |o| {
        o.direct = true;
        o.write_back = false;
    });
    if !b.is_direct() {
        eprintln!("note: O_DIRECT unsupported under /var/tmp; checked buffered");
    }
    check("block (O_DIRECT file)", &b, &Expect::default());
}

#[test]
fn file_read_only() {
    let dir = tempfile::tempdir().unwrap();
    drop(file(dir.path(), |_| {}));
    let b = file(dir.path(), |o| {
        o.read_only = true;
        o.size = None;
    });
    check(
        "file read-only",
        &b,
        &Expect {
            writable: false,
            ..Expect::default()
        },
    );
}

/// A real block device: a loop device over a sparse file, grown underneath
/// (`losetup -c`) before the suite's resize step. Needs root.
#[test]
fn block_loop_device() {
    if !have("losetup") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("loop.img");
    std::fs::File::create(&img).unwrap().set_len(SIZE).unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&img)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("SKIP block_loop_device: losetup failed (not root?)");
        return;
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());
    let b = FileBackstore::open(&FileOptions {
        direct: true,
        write_back: false,
        exclusive: true,
        ..FileOptions::new(&dev)
    })
    .unwrap();
    let (img2, dev2) = (img.clone(), dev.clone());
    let grow = move |size: u64| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img2)
            .unwrap()
            .set_len(size)
            .unwrap();
        assert!(Command::new("losetup")
            .args(["-c", &dev2])
            .status()
            .unwrap()
            .success());
    };
    check(
        "block (loop device)",
        &b,
        &Expect {
            grow_medium: Some(Box::new(grow)),
            ..Expect::default()
        },
    );
}

#[test]
fn ram() {
    check("ram", &RamBackstore::new(SIZE).unwrap(), &Expect::default());
}

#[test]
fn null() {
    check(
        "null",
        &NullBackstore::new(SIZE),
        &Expect {
            stores_data: false,
            ..Expect::default()
        },
    );
}

#[test]
fn qcow2_native() {
    let dir = tempfile::tempdir().unwrap();
    let q = Qcow2Backstore::create(dir.path().join("n.qcow2"), SIZE, 64 << 10).unwrap();
    check("qcow2", &q, &Expect::default());
}

/// An image made by qemu-img with small clusters (more L2 tables and
/// refcount blocks per MiB), then `qemu-img check` after the suite.
#[test]
fn qcow2_from_qemu_img() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("q.qcow2");
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o", "cluster_size=4096"])
        .arg(&img)
        .arg(SIZE.to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let q = Qcow2Backstore::open(&img, &Qcow2Options::default()).unwrap();
    check("qcow2 (qemu-img, 4K clusters)", &q, &Expect::default());
    drop(q);
    let out = Command::new("qemu-img")
        .args(["check", "-q"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success(), "qemu-img check: {out:?}");
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The NBD client against qemu-nbd on a private unix socket. NBD has no
/// resize, so the suite checks that it says so.
#[test]
fn nbd_qemu_nbd() {
    if !have("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("n.raw");
    std::fs::File::create(&img).unwrap().set_len(SIZE).unwrap();
    let sock = dir.path().join("nbd.sock");
    let _srv = Child(
        Command::new("qemu-nbd")
            .args(["-f", "raw", "-x", "c", "--discard=unmap", "-k"])
            .arg(&sock)
            .arg(&img)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    let b = loop {
        match NbdBackstore::connect(NbdAddr::Unix(sock.clone()), "c") {
            Ok(b) => break b,
            Err(_) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => panic!("connect to qemu-nbd: {e}"),
        }
    };
    assert!(!b.can_resize(), "NBD has no resize");
    check("nbd (qemu-nbd)", &b, &Expect::default());
}

/// user:qemu: qemu-storage-daemon (or qemu-nbd) serving a vmdk made by
/// qemu-img, supervised by the backstore.
#[test]
fn user_qemu_vmdk() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.vmdk");
    let ok = Command::new("qemu-img")
        .args(["create", "-q", "-f", "vmdk"])
        .arg(&img)
        .arg(SIZE.to_string())
        .status()
        .unwrap();
    assert!(ok.success());
    let cfg = QemuConfig::parse(&format!("vmdk/{}", img.display())).unwrap();
    let opts = QemuOptions {
        name: "conformance".into(),
        run_dir: dir.path().to_path_buf(),
        program: None,
        read_only: false,
    };
    let b = match QemuBackstore::open(cfg, &opts) {
        Ok(b) => b,
        Err(backstore::QemuError::NoProgram) => {
            eprintln!("SKIP user_qemu_vmdk: no qemu-storage-daemon or qemu-nbd");
            return;
        }
        Err(e) => panic!("user:qemu open: {e}"),
    };
    check("user:qemu (vmdk)", &b, &Expect::default());
}
