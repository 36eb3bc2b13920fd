//! Large WRITEs to a ramdisk stream (`Backstore::streams_large_writes`):
//! each burst is copied into the ramdisk as soon as it is in (while it is
//! still in the cache), not all of them once the last arrived; smaller
//! WRITEs are gathered and written whole, as before.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backstore::{Backstore, RamBackstore};
use common::*;
use target_core::{Device, DeviceOptions};

const MIB: usize = 1 << 20;
const BURST: usize = 256 * 1024;

fn medium(ram: &RamBackstore, at: usize, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    ram.read_at(&mut b, at as u64).unwrap();
    b
}

/// Wait (up to 5 s) until `ram` holds `want` at `at`.
fn holds(ram: &RamBackstore, at: usize, want: &[u8]) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if medium(ram, at, want.len()) == want {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    false
}

#[test]
fn a_large_writes_bursts_reach_the_ramdisk_before_its_last_data_out() {
    let ram = Arc::new(RamBackstore::new(8 * MIB as u64).unwrap());
    assert!(ram.streams_large_writes());
    let dev = Device::new(
        DeviceOptions::new("rams0", "5b3c9a2e-0000-4000-8000-0000000000e7"),
        Arc::clone(&ram) as Arc<dyn Backstore>,
    );
    let (srv, addr) = serve_device(dev);
    let mut c = session(addr, LIBISCSI);
    let data = pattern(MIB, 0x47);
    let lba = 2048u32;
    let base = lba as usize * 512;
    let cmd = c.scsi_cmd_header(&write10(lba, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    for _ in 0..3 {
        let r = expect_r2t(&mut c);
        let off = r.buffer_offset as usize;
        // Everything before this R2T's burst is on the ramdisk already.
        assert!(
            holds(&ram, base, &data[..off]),
            "the first {off} bytes are not on the ramdisk before the rest is sent"
        );
        c.answer_r2t(&r, &data);
    }
    assert_eq!(expect_response(&mut c).status, 0, "GOOD");
    assert!(medium(&ram, base, MIB) == data);
    // A small WRITE (no stream) still lands whole.
    let small = pattern(64 * 1024, 0x12);
    let r = c.write_cmd(&write10(0, 128), &small);
    assert_eq!(r.status, 0);
    assert!(medium(&ram, 0, small.len()) == small);
    c.logout();
    srv.shutdown();
}
