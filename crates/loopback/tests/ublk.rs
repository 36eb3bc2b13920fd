//! A real ublk disk, where the kernel has ublk_drv (skipped elsewhere; the
//! 6.12 test guest runs it: tests-e2e/loopback.sh --smoke). Two LUNs, one
//! write-protected: data written through /dev/ublkbN reads back after the
//! page cache is bypassed; the read-only disk is read-only to the kernel;
//! the block size and discard limits are the LU's; stop removes the disks.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use backstore::RamBackstore;
use loopback::{LoopbackConfig, LoopbackTarget, QueueConfig, UBLK_CONTROL};
use target_core::{Device, DeviceOptions, Lun, LunTable};

fn sysfs(dev: &Path, attr: &str) -> String {
    let name = dev.file_name().unwrap().to_str().unwrap();
    std::fs::read_to_string(format!("/sys/block/{name}/{attr}"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn ublk_disks_serve_through_the_core() {
    if !Path::new(UBLK_CONTROL).exists() {
        eprintln!("no {UBLK_CONTROL}: skipped");
        return;
    }
    let mut o = DeviceOptions::new("lb0", "5a4b3c2d-0000-4000-8000-0000000000c1");
    o.block_size = 4096;
    o.thin_provisioning = true;
    let rw = Device::new(o, Arc::new(RamBackstore::new(64 << 20).unwrap()));
    let ro = Device::new(
        DeviceOptions::new("lb1", "5a4b3c2d-0000-4000-8000-0000000000c2"),
        Arc::new(RamBackstore::new(16 << 20).unwrap()),
    );
    let luns = LunTable {
        luns: vec![
            Lun {
                id: 0,
                device: rw,
                write_protect: false,
            },
            Lun {
                id: 1,
                device: ro,
                write_protect: true,
            },
        ],
    };
    let cfg = LoopbackConfig {
        wwn: "naa.5001405c0ffee001".into(),
        nexus_wwn: "naa.5001405c0ffee002".into(),
        tpg_tag: 1,
        queues: QueueConfig {
            queues: 2,
            depth: 32,
            max_io_bytes: 256 << 10,
        },
        state_dir: None,
    };
    let t = LoopbackTarget::start(cfg, luns).unwrap();
    let devs = t.devices();
    assert_eq!(devs.len(), 2);
    let (d0, d1) = (devs[0].1.clone(), devs[1].1.clone());
    assert_eq!(sysfs(&d0, "queue/logical_block_size"), "4096");
    assert_eq!(sysfs(&d0, "ro"), "0");
    assert_eq!(sysfs(&d1, "ro"), "1");
    assert_ne!(sysfs(&d0, "queue/discard_max_bytes"), "0");
    assert_eq!(sysfs(&d0, "queue/write_cache"), "write back");
    assert_eq!(sysfs(&d0, "size"), (64u64 << 20 >> 9).to_string());

    let pattern: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i * 7 + i / 4096) as u8)
        .collect();
    let mut f = OpenOptions::new().read(true).write(true).open(&d0).unwrap();
    f.seek(SeekFrom::Start(8 << 20)).unwrap();
    f.write_all(&pattern).unwrap();
    f.sync_all().unwrap();
    // Drop the page cache of the disk, so the read comes from the core.
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let mut back = vec![0u8; pattern.len()];
    f.seek(SeekFrom::Start(8 << 20)).unwrap();
    f.read_exact(&mut back).unwrap();
    assert!(back == pattern, "data read back differs");
    drop(f);
    // The kernel refuses the write itself (the open may succeed).
    let wrote = OpenOptions::new()
        .write(true)
        .open(&d1)
        .and_then(|mut f| f.write_all(&[0u8; 4096]).and_then(|_| f.sync_all()));
    assert!(wrote.is_err(), "a read-only disk took a write");

    t.stop();
    assert!(!d0.exists() && !d1.exists(), "disks removed on stop");
}
