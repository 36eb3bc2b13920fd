//! Every backstore through the one shared conformance suite
//! ([`backstore::conformance::check`]): file (buffered, write-through,
//! O_DIRECT, read-only), block (a loop device, grown underneath for the
//! resize step), ram, null, native qcow2 (new and made by qemu-img), the
//! NBD client against `qemu-nbd`, and user:qemu (qemu-storage-daemon).
//! Tests that need an external program say SKIP and why when it is absent.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{require_tool, retry, run, LoopDevice, Reaped};

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
    if !require_tool("losetup") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let Some(lo) = LoopDevice::attach(&dir.path().join("loop.img"), SIZE, "block_loop_device")
    else {
        return;
    };
    let b = FileBackstore::open(&FileOptions {
        direct: true,
        write_back: false,
        exclusive: true,
        ..FileOptions::new(&lo.dev)
    })
    .unwrap();
    check(
        "block (loop device)",
        &b,
        &Expect {
            grow_medium: Some(Box::new(lo.grower())),
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
    if !require_tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_img_create(
        dir.path(),
        "q.qcow2",
        &["-f", "qcow2", "-o", "cluster_size=4096"],
    );
    let q = Qcow2Backstore::open(&img, &Qcow2Options::default()).unwrap();
    check("qcow2 (qemu-img, 4K clusters)", &q, &Expect::default());
    drop(q);
    run("qemu-img", &["check", "-q", img.to_str().unwrap()]);
}

/// `qemu-img create -q FORMAT-ARGS dir/name SIZE`; returns the image path.
fn qemu_img_create(dir: &Path, name: &str, format: &[&str]) -> std::path::PathBuf {
    let img = dir.join(name);
    let (path, size) = (img.to_str().unwrap(), SIZE.to_string());
    let args: Vec<&str> = ["create", "-q"]
        .into_iter()
        .chain(format.iter().copied())
        .chain([path, size.as_str()])
        .collect();
    run("qemu-img", &args);
    img
}

/// The NBD client against qemu-nbd on a private unix socket. NBD has no
/// resize, so the suite checks that it says so.
#[test]
fn nbd_qemu_nbd() {
    if !require_tool("qemu-nbd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("n.raw");
    std::fs::File::create(&img).unwrap().set_len(SIZE).unwrap();
    let sock = dir.path().join("nbd.sock");
    let _srv = Reaped(
        Command::new("qemu-nbd")
            .args(["-f", "raw", "-x", "c", "--discard=unmap", "-k"])
            .arg(&sock)
            .arg(&img)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let b = retry(
        "connect to qemu-nbd",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || NbdBackstore::connect(NbdAddr::Unix(sock.clone()), "c"),
    );
    assert!(!b.capabilities().resize, "NBD has no resize");
    check("nbd (qemu-nbd)", &b, &Expect::default());
}

/// user:qemu: qemu-storage-daemon (or qemu-nbd) serving a vmdk made by
/// qemu-img, supervised by the backstore.
#[test]
fn user_qemu_vmdk() {
    if !require_tool("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = qemu_img_create(dir.path(), "d.vmdk", &["-f", "vmdk"]);
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
            common::skip("user_qemu_vmdk: no qemu-storage-daemon or qemu-nbd");
            return;
        }
        Err(e) => panic!("user:qemu open: {e}"),
    };
    check("user:qemu (vmdk)", &b, &Expect::default());
}
