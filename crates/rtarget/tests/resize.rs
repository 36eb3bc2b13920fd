//! Online resize end to end: a logged-in initiator (the iscsi crate's
//! raw-PDU test client, one persistent session) reads the capacity, the
//! daemon grows fileio, ramdisk and user:qcow LUNs through the CLI, and the
//! initiator's next command gets CAPACITY DATA HAS CHANGED (2A/09) and READ
//! CAPACITY shows the new size without a relogin. libiscsi's
//! iscsi-readcapacity16 (a fresh login each run) agrees when installed.
//! Refusals (shrink, bad size, not a storage object) keep the daemon up, and
//! the new sizes are in saveconfig.json. Also: the example handler
//! (`user:pattern`, crates/handler-example) served through the registry.

mod common;

use common::host::LoopDevice;
use common::initiator::{self as client, Client};
use common::{capacity, sense, tool, Served};

const IQN: &str = "iqn.2026-11.org.example:resize";

/// Blocks libiscsi's iscsi-readcapacity16 reports, `None` when not installed.
fn libiscsi_blocks(d: &Served, lun: u64) -> Option<u64> {
    let url = format!("iscsi://127.0.0.1:{}/{IQN}/{lun}", d.port());
    let out = tool(&["iscsi-readcapacity16", "-s", &url])?;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // "Total size:8388608" (bytes); -s prints the size only.
    let bytes: u64 = text
        .lines()
        .find_map(|l| l.rsplit(':').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {text}"));
    Some(bytes / 512)
}

#[test]
fn grown_luns_are_seen_by_a_logged_in_initiator() {
    let d = Served::start();
    let qcow = d.path("q.qcow2");
    let file = d.path("f.img");
    d.ok(&["/backstores/fileio", "create", "f0", &file, "4M"]);
    d.ok(&["/backstores/ramdisk", "create", "r0", "4M"]);
    d.ok(&["/backstores/user:qcow", "create", "q0", "4M", &qcow]);
    let tpg = d.demo_target(
        IQN,
        &[
            "/backstores/fileio/f0",
            "/backstores/ramdisk/r0",
            "/backstores/user:qcow/q0",
        ],
    );
    let mut c = Client::connect(d.addr());
    c.login(Some(IQN), &[]);
    for lun in 0..3 {
        c.lun = lun;
        c.clear_ua();
        assert_eq!(capacity(&mut c), (0, 8192), "LUN {lun} before");
    }
    let before = libiscsi_blocks(&d, 0);
    assert!(before.is_none_or(|b| b == 8192), "{before:?}");

    let cases: [(&str, &str, u64); 3] = [
        ("/backstores/fileio/f0", "8M", 8 << 20),
        ("/backstores/ramdisk/r0", "+12M", 16 << 20),
        ("/backstores/user:qcow/q0", "1G", 1 << 30),
    ];
    for (lun, (path, size, bytes)) in cases.iter().enumerate() {
        let out = d.ok(&[path, "resize", size]);
        assert!(out.contains("Resized"), "{out}");
        c.lun = lun as u64;
        let (st, _) = capacity(&mut c);
        assert_eq!(st, 2, "{path}: UA first");
        assert_eq!(sense(&c), (6, 0x2a, 0x09), "CAPACITY DATA HAS CHANGED");
        assert_eq!(capacity(&mut c), (0, bytes / 512), "{path} after");
        // The new last block takes a write and reads it back.
        let last = u32::try_from(bytes / 512 - 1).unwrap();
        let data = client::pattern(512, 9);
        let r = c.write_cmd(&client::write10(last, 1), &data);
        assert_eq!(r.status, 0, "write at the new end of {path}");
        let (st, back, _) = c.read_cmd(&client::read10(last, 1), 512);
        assert_eq!((st, back), (0, data));
    }
    if let Some(b) = libiscsi_blocks(&d, 0) {
        assert_eq!(b, 16384, "libiscsi sees the grown fileio LUN");
    }

    // Refusals: clear errors, nothing changes, the daemon stays up.
    let e = d.fails(&["/backstores/fileio/f0", "resize", "1M"]);
    assert!(e.contains("cannot shrink"), "{e}");
    let e = d.fails(&["/backstores/fileio/f0", "resize", "lots"]);
    assert!(e.contains("size \"lots\""), "{e}");
    let e = d.fails(&["/backstores/fileio/f0", "resize", "1000"]);
    assert!(e.contains("whole number of 512-byte blocks"), "{e}");
    let e = d.fails(&["/backstores/fileio/f0", "resize"]);
    assert!(e.contains("needs a SIZE"), "{e}");
    let e = d.fails(&[&tpg, "resize", "1G"]);
    assert!(e.contains("only a storage object"), "{e}");
    c.lun = 0;
    assert_eq!(capacity(&mut c), (0, 16384), "no UA after a refusal");
    assert!(d.ok(&["/backstores", "ls"]).contains("f0"));

    // Saved sizes, in rtslib's `size` field.
    let saved: serde_json::Value = serde_json::from_str(&d.saved()).unwrap();
    let size_of = |name: &str| {
        saved["storage_objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .map(|o| o["size"].as_u64())
    };
    assert_eq!(size_of("f0"), Some(Some(8 << 20)));
    assert_eq!(size_of("r0"), Some(Some(16 << 20)));
    assert_eq!(size_of("q0"), Some(Some(1 << 30)));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 8 << 20);

    // A later unrelated change keeps the grown device (not reopened): the
    // ramdisk's data survives it.
    d.ok(&["/backstores/ramdisk", "create", "r1", "1M"]);
    c.lun = 1;
    let last = u32::try_from((16 << 20) / 512 - 1).unwrap();
    let (st, back, _) = c.read_cmd(&client::read10(last, 1), 512);
    assert_eq!((st, back), (0, client::pattern(512, 9)));
}

/// The example handler registered as user:pattern: created through the
/// CLI, saved as `plugin: user` + `config: pattern/...`, every sector read
/// over iSCSI is the handler's, writes get DATA PROTECT, and it grows.
#[test]
fn example_handler_is_served_through_the_registry() {
    let d = Served::start();
    assert!(d.ok(&["/backstores", "ls"]).contains("user:pattern"));
    let e = d.fails(&[
        "/backstores/user:pattern",
        "create",
        "p1",
        "cfgstring=seed=x",
    ]);
    assert!(e.contains("expected seed=N"), "{e}");
    let e = d.fails(&["/backstores/user:pattern", "create", "p1"]);
    assert!(e.contains("needs a size"), "{e}");
    d.ok(&[
        "/backstores/user:pattern",
        "create",
        "p0",
        "4M",
        "cfgstring=seed=9",
    ]);
    d.demo_target(IQN, &["/backstores/user:pattern/p0"]);
    let saved = d.saved();
    assert!(saved.contains("\"config\": \"pattern/seed=9\""), "{saved}");

    let mut c = Client::connect(d.addr());
    c.login(Some(IQN), &[]);
    c.clear_ua();
    let (st, data, _) = c.read_cmd(&client::read10(100, 8), 4096);
    assert_eq!(st, 0);
    let mut want = [0u8; 512];
    for (i, s) in data.chunks(512).enumerate() {
        handler_example::sector(100 + i as u64, 9, &mut want);
        assert_eq!(s, want, "sector {}", 100 + i);
    }
    let r = c.write_cmd(&client::write10(0, 1), &[0u8; 512]);
    assert_eq!(r.status, 2);
    assert_eq!(sense(&c), (7, 0x27, 0x00), "WRITE PROTECTED");
    d.ok(&["/backstores/user:pattern/p0", "resize", "8M"]);
    let (st, _) = capacity(&mut c);
    assert_eq!((st, sense(&c)), (2, (6, 0x2a, 0x09)));
    assert_eq!(capacity(&mut c), (0, 16384));
    let (st, data, _) = c.read_cmd(&client::read10(16383, 1), 512);
    handler_example::sector(16383, 9, &mut want);
    assert_eq!((st, data), (0, want.to_vec()));
}

/// A `block` object on a loop device: after the device grows underneath
/// (`losetup -c`), `resize` without a size picks the device's new size up
/// and a logged-in initiator is told. Skipped without loop devices.
#[test]
fn block_device_grown_underneath() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let img = dir.path().join("loop.img");
    let test = "block_device_grown_underneath";
    let Some(lo) = LoopDevice::attach(&img, 4 << 20, test) else {
        return;
    };
    let d = Served::start();
    d.ok(&["/backstores/block", "create", "b0", &lo.dev]);
    d.demo_target(IQN, &["/backstores/block/b0"]);
    let mut c = Client::connect(d.addr());
    c.login(Some(IQN), &[]);
    c.clear_ua();
    assert_eq!(capacity(&mut c), (0, 8192));
    let e = d.fails(&["/backstores/block/b0", "resize", "8M"]);
    assert!(e.contains("grow the device first"), "{e}");
    lo.grow(8 << 20);
    let out = d.ok(&["/backstores/block/b0", "resize"]);
    assert!(out.contains("(8388608 bytes)"), "{out}");
    let (st, _) = capacity(&mut c);
    assert_eq!((st, sense(&c)), (2, (6, 0x2a, 0x09)));
    assert_eq!(capacity(&mut c), (0, 16384));
    // Block objects keep no size in saveconfig.json (the device has it).
    let saved = d.saved();
    assert!(!saved.contains("8388608"), "{saved}");
}
