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

/// Eight 8 MiB WRITEs at once (64 MiB, the connection's whole engine
/// budget if streams were charged their length): every one completes and
/// lands. Charged, they made the connection stop reading the socket their
/// own Data-Out had to come from, and none ever finished.
#[test]
fn many_large_streamed_writes_at_once_all_complete() {
    const LEN: usize = 8 * MIB;
    const N: usize = 8;
    let ram = Arc::new(RamBackstore::new((N * LEN) as u64).unwrap());
    let dev = Device::new(
        DeviceOptions::new("rams1", "5b3c9a2e-0000-4000-8000-0000000000e8"),
        Arc::clone(&ram) as Arc<dyn Backstore>,
    );
    let (srv, addr) = serve_device(dev);
    let mut c = session(addr, LIBISCSI);
    let data: Vec<Vec<u8>> = (0..N).map(|i| pattern(LEN, i as u8 + 1)).collect();
    let mut itts = Vec::new();
    for (i, d) in data.iter().enumerate() {
        let lba = (i * LEN / 512) as u32;
        let cmd = c.scsi_cmd_header(&write10(lba, (LEN / 512) as u16), false, true, LEN as u32);
        itts.push(cmd.itt);
        c.send_cmd(&cmd, &d[..BURST]);
    }
    let mut done = 0;
    while done < N {
        let p = c.recv().expect("the writes stalled");
        match p.bhs.opcode() {
            iscsi_wire::Opcode::R2T => {
                let r = iscsi_wire::response::R2t::parse(&p.bhs);
                let i = itts.iter().position(|&t| t == r.itt).unwrap();
                c.answer_r2t(&r, &data[i]);
            }
            iscsi_wire::Opcode::SCSI_RESPONSE => {
                let r = iscsi_wire::response::ScsiResponse::parse(&p.bhs);
                assert_eq!(r.status, 0);
                c.exp_statsn += 1;
                done += 1;
            }
            op => panic!("unexpected {op:?}"),
        }
    }
    for (i, d) in data.iter().enumerate() {
        assert!(medium(&ram, i * LEN, LEN) == *d, "write {i}");
    }
    c.logout();
    srv.shutdown();
}

/// A memory backstore has written a piece by the time `piece` returns:
/// the next burst of the write is received into the buffer that piece was
/// written from (still in the cache: 1 MiB ramdisk writes 7% more IOPS,
/// BENCHMARKS.md "Session 13 ... s13-write"), not into another pooled
/// buffer, the pieces' buffers coming back only with the answer.
#[test]
fn each_burst_is_received_into_the_buffer_the_last_was_written_from() {
    let (store, srv, _addr, mut c) = stream_rig(8 * MIB, LIBISCSI);
    for round in 0..2u8 {
        let data = pattern(MIB, 0x30 + round);
        let lba = u32::from(round) * (MIB / 512) as u32;
        let r = c.write_cmd(&write10(lba, (MIB / 512) as u16), &data);
        assert_eq!(r.status, 0, "GOOD");
    }
    let pieces = store.pieces();
    assert_eq!(pieces.len(), 8, "two writes of four 256 KiB bursts");
    for (w, p) in pieces.chunks(4).enumerate() {
        assert!(
            p.iter().all(|q| q.len == BURST && q.addr == p[0].addr),
            "write {w}: its bursts came in {:?}",
            p.iter().map(|q| q.addr).collect::<Vec<_>>()
        );
    }
    c.logout();
    srv.shutdown();
}
