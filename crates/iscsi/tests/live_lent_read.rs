//! Large READs of a fileio LU on tmpfs sent from the file's own pages
//! (live lent reads, `crates/iscsi/src/lent_read.rs`): the data is the
//! file's, holes read as zeroes without being allocated, DataDigest
//! sessions take the copy; a WRITE queued behind a READ does not change the
//! READ's data; and an initiator that does not read its socket neither
//! holds up another session's COMPARE AND WRITE (the lent bytes are copied
//! out within a bounded wait) nor gets that write's data in its READs.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backstore::{Backstore, FileBackstore, FileOptions};
use common::*;
use iscsi_wire::response::{DataIn, ScsiResponse};
use iscsi_wire::Opcode;
use target_core::{Device, DeviceOptions};

const MIB: usize = 1 << 20;
const SIZE: usize = 32 * MIB;

struct Rig {
    file: Arc<FileBackstore>,
    srv: Arc<iscsi::IscsiServer>,
    addr: SocketAddr,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// A fileio LU of 32 MiB on tmpfs whose first `filled` bytes hold `seed`'s
/// pattern (the rest is a hole).
fn rig(filled: usize, seed: u8) -> Rig {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let path = dir.path().join("lu.img");
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(SIZE as u64).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &pattern(filled, seed), 0).unwrap();
    drop(f);
    let file = Arc::new(FileBackstore::open(&FileOptions::new(&path)).unwrap());
    let probe = file.read_lent(0, 0).expect("a tmpfs file lends").unwrap();
    assert!(probe.is_live());
    let dev = Device::new(
        DeviceOptions::new("lent0", "5b3c9a2e-0000-4000-8000-0000000000e1"),
        Arc::clone(&file) as Arc<dyn Backstore>,
    );
    let (srv, addr) = serve_device(dev);
    Rig {
        file,
        srv,
        addr,
        path,
        _dir: dir,
    }
}

fn blocks_of(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks()
}

#[test]
fn large_reads_come_from_the_files_pages_holes_stay_holes() {
    let data_len = 3 * MIB + 512 * 1024;
    let r = rig(data_len, 5);
    let mut medium = vec![0u8; SIZE];
    medium[..data_len].copy_from_slice(&pattern(data_len, 5));
    let allocated = blocks_of(&r.path);
    let configs: &[&[(&str, &str)]] = &[
        &[],
        // PDUs and bursts that end inside a page.
        &[
            ("MaxRecvDataSegmentLength", "12288"),
            ("MaxBurstLength", "98304"),
        ],
        // DataDigest: the copy (its CRC must not read live pages).
        &[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")],
    ];
    for (i, extra) in configs.iter().enumerate() {
        let mut c = nth_session(r.addr, i as u8, extra);
        let before = r.srv.live_lent_sends().0;
        // Data, data into the hole, the hole alone, an unaligned start.
        let reads = [(0, 2048), (6144, 2048), (16384, 4096), (1001, 777)];
        assert_reads_match(&mut c, &medium, &reads, i);
        let lent = r.srv.live_lent_sends().0 - before;
        if i < 2 {
            // The 1 MiB and 2 MiB reads; not the 388 KiB one? It is
            // over LIVE_MIN too: all four.
            assert_eq!(lent, (2048 + 2048 + 4096 + 777) * 512, "config {i}");
        } else {
            assert_eq!(lent, 0, "DataDigest takes the copy");
        }
        c.logout();
    }
    assert_eq!(
        blocks_of(&r.path),
        allocated,
        "reading the hole allocated it"
    );
    r.srv.shutdown();
}

/// A READ and then a WRITE to the same blocks sent together: the READ
/// shows the data from before the WRITE (its bytes left the file before
/// the WRITE ran).
#[test]
fn a_write_queued_behind_a_live_read_does_not_change_its_data() {
    let r = rig(MIB, 1);
    r.file.write_at(&vec![1u8; MIB], 0).unwrap();
    let mut c = session(r.addr, &[]);
    for round in 0..20u8 {
        let old = 1 + round;
        let new = old + 1;
        let read = c.scsi_cmd_header(&read10(0, 2048), true, false, MIB as u32);
        // Small, so that it arrives with the READ and runs inline, in the
        // same batch, before the batch's flush.
        let write = c.scsi_cmd_header(&write10(256, 8), false, true, 4096);
        let mut bytes = c.encode_cmd(&read, &[]);
        bytes.extend(c.encode_cmd(&write, &vec![new; 4096]));
        c.send_raw(&bytes).unwrap();
        let got = answers(&mut c, 2).remove(&read.itt).unwrap();
        assert_eq!(got.len(), MIB);
        assert!(
            got.iter().all(|&b| b == old),
            "round {round}: the READ saw the later WRITE"
        );
        assert_eq!(c.write_cmd(&write10(0, 2048), &vec![new; MIB]).status, 0);
    }
    assert!(r.srv.live_lent_sends().0 >= 20 * MIB as u64);
    c.logout();
    r.srv.shutdown();
}

/// Receive `n` answers (Data-In with status or SCSI Response, all GOOD):
/// the Data-In bytes per ITT.
fn answers(c: &mut Client, n: usize) -> HashMap<u32, Vec<u8>> {
    let mut got: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut answered = 0;
    while answered < n {
        let p = c.recv().unwrap();
        match p.bhs.opcode() {
            Opcode::DATA_IN => {
                let d = DataIn::parse(&p.bhs);
                let v = got.entry(d.itt).or_default();
                assert_eq!(d.buffer_offset as usize, v.len());
                v.extend_from_slice(&p.data);
                if let Some(s) = d.status {
                    assert_eq!(s, 0);
                    answered += 1;
                }
            }
            Opcode::SCSI_RESPONSE => {
                let r = ScsiResponse::parse(&p.bhs);
                assert_eq!(r.status, 0);
                got.entry(r.itt).or_default();
                answered += 1;
            }
            op => panic!("unexpected {op:?}"),
        }
    }
    c.exp_statsn += n as u32;
    got
}

/// An initiator that sends 1 MiB READs and does not read its socket: its
/// connection copies what the socket does not take (the metric says so)
/// instead of holding the LU's medium order, so a COMPARE AND WRITE of
/// another session is not held up for the send timeout (30 s), and the
/// READs, answered once their initiator reads, show the data from before
/// that write.
#[test]
fn a_slow_reader_neither_holds_up_nor_sees_a_later_compare_and_write() {
    let r = rig(8 * MIB, 0);
    r.file.write_at(&vec![7u8; 8 * MIB], 0).unwrap();
    let mut slow = session(r.addr, &[]);
    let mut bytes = Vec::new();
    let mut itts = Vec::new();
    // Fewer than a split flush's worth (split_flush::SPLIT): one batch,
    // every READ runs before the connection blocks on its full socket.
    const READS: usize = 6;
    for _ in 0..READS {
        let cmd = slow.scsi_cmd_header(&read10(0, 2048), true, false, MIB as u32);
        itts.push(cmd.itt);
        bytes.extend(slow.encode_cmd(&cmd, &[]));
    }
    let before = r.srv.live_lent_sends().0;
    slow.send_raw(&bytes).unwrap();
    // Until every READ ran: the slow connection had to copy (its socket
    // is full).
    let t = Instant::now();
    while r.srv.live_lent_sends().0 - before < (READS * MIB) as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the READs did not run"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(r.srv.live_lent_sends().1 > 0, "nothing copied");
    let mut c = nth_session(r.addr, 9, &[]);
    // COMPARE AND WRITE of block 0: 7s -> 9s.
    let mut caw = [0u8; 16];
    caw[0] = 0x89;
    caw[13] = 1;
    let mut data = vec![7u8; 512];
    data.extend_from_slice(&[9u8; 512]);
    let t = Instant::now();
    let resp = c.write_cmd(&caw, &data);
    let took = t.elapsed();
    assert_eq!(resp.status, 0);
    assert!(took < Duration::from_secs(3), "held up {took:?}");
    let got = answers(&mut slow, itts.len());
    for itt in itts {
        let d = &got[&itt];
        assert_eq!(d.len(), MIB);
        assert!(d.iter().all(|&b| b == 7), "a READ saw the later write");
    }
    let mut b0 = vec![0u8; 512];
    r.file.read_at(&mut b0, 0).unwrap();
    assert!(b0.iter().all(|&b| b == 9));
    slow.logout();
    c.logout();
    r.srv.shutdown();
}
