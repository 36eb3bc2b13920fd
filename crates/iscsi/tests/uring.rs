//! LUs with `io_engine=uring`: data written over iSCSI reads back through
//! the ring (page cache and O_DIRECT), the commands a connection takes in
//! one wake-up reach the kernel with fewer system calls than requests, and a read the kernel fails (a file cut underneath) answers
//! MEDIUM ERROR as the synchronous path does.

mod common;

use std::path::Path;
use std::sync::Arc;

use backstore::{Backstore, FileBackstore, FileOptions, UringBackstore};
use common::*;
use iscsi::IscsiServer;
use target_core::{Device, DeviceOptions, IoEngine};

const SIZE: u64 = 8 << 20;

fn uring_server(
    path: &Path,
    direct: bool,
) -> (Arc<IscsiServer>, std::net::SocketAddr, Arc<UringBackstore>) {
    let file = FileBackstore::open(&FileOptions {
        size: Some(SIZE),
        direct,
        ..FileOptions::new(path)
    })
    .unwrap();
    assert_eq!(file.is_direct(), direct, "O_DIRECT where asked");
    let store = Arc::new(UringBackstore::new(file).unwrap());
    let mut opts = DeviceOptions::new("uring0", "5b3c9a2e-0000-4000-8000-0000000000c1");
    opts.io_engine = IoEngine::Uring;
    let dev = Device::new(opts, Arc::clone(&store) as Arc<dyn Backstore>);
    let (s, addr) = serve_device(dev);
    (s, addr, store)
}

/// The ring's counters: (requests, wake-ups of its reaper by submitters).
fn counters(b: &UringBackstore) -> (u64, u64) {
    let h = b.health();
    let get = |k| h.iter().find(|(n, _)| *n == k).map(|p| p.1).unwrap();
    (get("uring_ops"), get("uring_kicks"))
}

/// 16 reads sent in one TCP write: answered with their own data, and
/// handed to the kernel with fewer wake-ups than reads.
fn burst_of_reads(c: &mut Client, store: &UringBackstore, seed: u8) {
    let mut burst = Vec::new();
    let mut want = std::collections::HashMap::new();
    for i in 0..16u32 {
        let cmd = c.scsi_cmd_header(&read10(i * 8, 8), true, false, 4096);
        burst.extend(c.encode_cmd(&cmd, &[]));
        want.insert(cmd.itt, pattern(4096, seed.wrapping_add(i as u8)));
    }
    let (ops0, kicks0) = counters(store);
    c.send_raw(&burst).unwrap();
    c.expect_reads(want);
    let (ops, kicks) = counters(store);
    assert_eq!(ops - ops0, 16, "every read went through the ring");
    assert!(
        kicks - kicks0 <= 8,
        "16 reads of one burst took {} wake-ups",
        kicks - kicks0
    );
}

fn write_read_back(direct: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lu.img");
    let (srv, addr, store) = uring_server(&path, direct);
    let mut c = session(addr, &[]);
    for i in 0..16u32 {
        let mut cdb = write10(i * 8, 8);
        // FUA on every other write.
        cdb[1] = if i % 2 == 1 { 0x08 } else { 0 };
        let r = c.write_cmd(&cdb, &pattern(4096, 40 + i as u8));
        assert_eq!(r.status, 0);
    }
    // A large write through R2T, and its read back.
    let big = pattern(1 << 20, 7);
    assert_eq!(c.write_cmd(&write10(4096, 2048), &big).status, 0);
    let (st, got, _) = c.read_cmd(&read10(4096, 2048), 1 << 20);
    assert_eq!(st, 0);
    assert!(got == big, "1 MiB read back");
    burst_of_reads(&mut c, &store, 40);
    // SYNCHRONIZE CACHE(10).
    let (st, _, _) = c.read_cmd(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], 0);
    assert_eq!(st, 0);
    c.logout();
    srv.shutdown();
    // What the initiator wrote is in the file.
    let on_disk = std::fs::read(&path).unwrap();
    assert!(on_disk[..4096] == pattern(4096, 40)[..]);
    assert!(on_disk[4096 * 512..4096 * 512 + (1 << 20)] == big[..]);
}

#[test]
fn data_written_over_iscsi_reads_back_through_the_ring() {
    write_read_back(false);
}

#[test]
fn data_written_over_iscsi_reads_back_through_the_ring_o_direct() {
    write_read_back(true);
}

#[test]
fn a_read_the_kernel_fails_answers_medium_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.img");
    let (srv, addr, _store) = uring_server(&path, false);
    let mut c = session(addr, &[]);
    assert_eq!(c.write_cmd(&write10(0, 8), &pattern(4096, 1)).status, 0);
    // The file shrinks underneath (the LU still says 8 MiB).
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let (st, _, r) = c.read_cmd(&read10(4096, 8), 4096);
    assert_eq!(st, 2, "CHECK CONDITION");
    assert!(r.is_some());
    let s = &c.last_sense;
    assert_eq!(
        (s[2] & 0xf, s[12], s[13]),
        (3, 0x11, 0),
        "UNRECOVERED READ ERROR"
    );
    // Below the cut all is well.
    let (st, got, _) = c.read_cmd(&read10(0, 8), 4096);
    assert_eq!(st, 0);
    assert!(got == pattern(4096, 1));
    c.logout();
    srv.shutdown();
}
