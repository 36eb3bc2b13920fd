//! Large READs from a ramdisk sent from its own memory (`lent_read`): the
//! data is right with digests on and off, across chunk boundaries, holes
//! and residuals, and a READ is never torn by a WRITE that runs while its
//! Data-In is still queued or being sent (every block of every read is
//! one whole pattern).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use backstore::{Backstore, RamBackstore};
use common::*;
use iscsi::IscsiServer;
use iscsi_wire::response::{DataIn, ScsiResponse};
use iscsi_wire::Opcode;
use target_core::{Device, DeviceOptions, Lun, LunTable};

const SIZE: u64 = 8 << 20;

fn ram_server() -> (Arc<IscsiServer>, SocketAddr, Arc<RamBackstore>) {
    let store = Arc::new(RamBackstore::new(SIZE).unwrap());
    let mut t = target(IQN, 4096, &[]);
    let dev = Device::new(
        DeviceOptions::new("rd0", "5b3c9a2e-0000-4000-8000-0000000000d1"),
        store.clone(),
    );
    t.tpgs[0].luns = Arc::new(LunTable {
        luns: vec![Lun {
            id: 0,
            device: dev,
            write_protect: false,
        }],
    });
    let s = IscsiServer::new();
    s.set_target(t);
    let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    (s, addr, store)
}

/// Every 512-byte block of `data` is one byte repeated; the patterns.
fn whole_blocks(data: &[u8]) -> Result<Vec<u8>, usize> {
    let mut seen = Vec::new();
    for (i, b) in data.chunks(512).enumerate() {
        if !b.iter().all(|&x| x == b[0]) {
            return Err(i);
        }
        if !seen.contains(&b[0]) {
            seen.push(b[0]);
        }
    }
    Ok(seen)
}

#[test]
fn large_reads_match_the_medium_with_and_without_digests() {
    let (srv, addr, store) = ram_server();
    // Data across the first chunk boundary (1 MiB), a hole after it.
    let data = pattern(3 << 19, 9);
    store.write_at(&data, 1 << 19).unwrap();
    let mut medium = vec![0u8; SIZE as usize];
    medium[1 << 19..(1 << 19) + data.len()].copy_from_slice(&data);
    let configs: &[&[(&str, &str)]] = &[
        &[],
        &[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")],
        // PDUs that end inside a chunk and bursts that cross one.
        &[
            ("MaxRecvDataSegmentLength", "12288"),
            ("MaxBurstLength", "98304"),
        ],
    ];
    for (i, extra) in configs.iter().enumerate() {
        let mut c = nth_session(addr, i as u8, extra);
        let reads = [(1024, 2048), (0, 4096), (1536, 2047), (3000, 256)];
        assert_reads_match(&mut c, &medium, &reads, i);
        // EDTL shorter than the transfer: the first bytes, an overflow.
        let (st, got, _) = c.read_cmd(&read10(1024, 2048), 700 * 1024);
        assert_eq!(st, 0);
        assert!(got == medium[1 << 19..(1 << 19) + 700 * 1024]);
        // Out of range: CHECK CONDITION, no data.
        let (st, got, _) = c.read_cmd(&read10((SIZE / 512) as u32 - 8, 256), 128 << 10);
        assert_eq!((st, got.len()), (2, 0));
        c.logout();
    }
    srv.shutdown();
}

/// A READ and then a WRITE to the same blocks sent together: however the
/// connection batches them (the WRITE may run before the READ's Data-In
/// is flushed), the READ shows the data from before the WRITE, and the
/// connection does not stall on itself (a design that held the chunk's
/// read lock until the flush would deadlock the WRITE here).
#[test]
fn write_queued_behind_a_read_does_not_change_its_data() {
    let (srv, addr, store) = ram_server();
    store.write_at(&vec![1u8; 1 << 20], 0).unwrap();
    let mut c = session(addr, &[]);
    for round in 0..20u8 {
        let old = 1 + round;
        let new = old + 1;
        let read = c.scsi_cmd_header(&read10(0, 2048), true, false, 1 << 20);
        let write = c.scsi_cmd_header(&write10(256, 128), false, true, 65536);
        let mut bytes = c.encode_cmd(&read, &[]);
        bytes.extend(c.encode_cmd(&write, &vec![new; 65536]));
        c.send_raw(&bytes).unwrap();
        let mut got = Vec::new();
        let mut answered = 0;
        while answered < 2 {
            let p = c.recv().unwrap();
            match p.bhs.opcode() {
                Opcode::DATA_IN => {
                    let d = DataIn::parse(&p.bhs);
                    got.extend_from_slice(&p.data);
                    answered += usize::from(d.status.is_some());
                }
                Opcode::SCSI_RESPONSE => {
                    assert_eq!(ScsiResponse::parse(&p.bhs).status, 0);
                    answered += 1;
                }
                op => panic!("unexpected {op:?}"),
            }
        }
        c.exp_statsn += 2;
        assert_eq!(got.len(), 1 << 20);
        assert!(
            got.iter().all(|&b| b == old),
            "round {round}: the READ saw the later WRITE"
        );
        // Bring the whole range to `new` for the next round.
        assert_eq!(
            c.write_cmd(&write10(0, 2048), &vec![new; 1 << 20]).status,
            0
        );
    }
    c.logout();
    srv.shutdown();
}

#[test]
fn reads_are_never_torn_by_a_concurrent_writer() {
    let (srv, addr, store) = ram_server();
    // 1.5 MiB across the first chunk boundary.
    let (lba, blocks) = (1024u32, 3072u16);
    store.write_at(&vec![0u8; 3 << 19], 1 << 19).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = nth_session(addr, 1, &[]);
            let mut p = 0u8;
            let mut writes = 0;
            while !stop.load(Ordering::Relaxed) {
                p = p.wrapping_add(1);
                let r = c.write_cmd(&write10(lba, blocks), &vec![p; blocks as usize * 512]);
                assert_eq!(r.status, 0);
                writes += 1;
            }
            writes
        })
    };
    let mut c = nth_session(
        addr,
        2,
        &[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")],
    );
    let mut mixed = 0;
    for i in 0..150 {
        let (st, got, _) = c.read_cmd(&read10(lba, blocks), blocks as u32 * 512);
        assert_eq!(st, 0);
        match whole_blocks(&got) {
            Ok(p) => mixed += usize::from(p.len() > 1),
            Err(b) => panic!("read {i}: block {b} torn"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0);
    eprintln!("{writes} writes; {mixed} of 150 reads saw more than one pattern");
    c.logout();
    srv.shutdown();
}
