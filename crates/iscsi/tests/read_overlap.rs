//! Large READs of an inline LU overlap with the connection's sends
//! (`crates/iscsi/src/read_overlap.rs`): pipelined 1 MiB READs run on the
//! worker pool while the connection has Data-In to send, and come back
//! with their own data; a lone READ stays on the connection thread; task
//! ordering holds for an overlapped READ (an ORDERED READ followed by a
//! WRITE of the same blocks returns the old data).

mod common;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use backstore::{Backstore, Capabilities};
use common::*;
use iscsi_wire::request::Attr;
use iscsi_wire::response::{DataIn, ScsiResponse};
use iscsi_wire::Opcode;
use target_core::{Device, DeviceOptions};

const MIB: usize = 1 << 20;

/// RAM that notes which thread ran each read (offset, thread name).
struct WhereStore {
    mem: Arc<MemStore>,
    reads: Mutex<Vec<(u64, String)>>,
}

impl Backstore for WhereStore {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn capabilities(&self) -> Capabilities {
        self.mem.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let name = std::thread::current().name().unwrap_or("").to_string();
        self.reads.lock().unwrap().push((offset, name));
        self.mem.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.mem.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// An inline LU (the default engine) of 8 MiB, MiB `i` filled with
/// `pattern(MIB, i)`.
fn setup() -> (Arc<WhereStore>, Arc<iscsi::IscsiServer>, Client) {
    let mem = MemStore::new(8 * MIB);
    for i in 0..8 {
        mem.write_at(&pattern(MIB, i as u8), (i * MIB) as u64)
            .unwrap();
    }
    let store = Arc::new(WhereStore {
        mem,
        reads: Mutex::new(Vec::new()),
    });
    let opts = DeviceOptions::new("where0", "5b3c9a2e-0000-4000-8000-0000000000c1");
    let dev = Device::new(opts, Arc::clone(&store) as Arc<dyn Backstore>);
    let (srv, addr) = serve_device(dev);
    let c = session(addr, &[]);
    store.reads.lock().unwrap().clear();
    (store, srv, c)
}

/// A READ(10) of MiB `mib` as encoded for the wire, with its ITT.
fn read_mib(c: &mut Client, mib: u32, attr: Attr) -> (u32, Vec<u8>) {
    let mut cmd = c.scsi_cmd_header(&read10(mib * 2048, 2048), true, false, MIB as u32);
    cmd.attr = attr;
    (cmd.itt, c.encode_cmd(&cmd, &[]))
}

/// Gather the answers of `n` commands: ITT -> (status, Data-In bytes),
/// StatSN checked in order.
fn answers(c: &mut Client, n: usize) -> HashMap<u32, (u8, Vec<u8>)> {
    let mut got: HashMap<u32, (u8, Vec<u8>)> = HashMap::new();
    let mut done = 0;
    while done < n {
        let p = c.recv().unwrap();
        let (itt, status) = match p.bhs.opcode() {
            Opcode::DATA_IN => {
                let d = DataIn::parse(&p.bhs);
                let e = got.entry(d.itt).or_default();
                assert_eq!(
                    d.buffer_offset as usize,
                    e.1.len(),
                    "offset of ITT {}",
                    d.itt
                );
                e.1.extend_from_slice(&p.data);
                (d.itt, d.status.map(|s| (s, d.sn.statsn)))
            }
            Opcode::SCSI_RESPONSE => {
                let r = ScsiResponse::parse(&p.bhs);
                got.entry(r.itt).or_default();
                (r.itt, Some((r.status, r.sn.statsn)))
            }
            op => panic!("unexpected {op:?}"),
        };
        if let Some((s, statsn)) = status {
            assert_eq!(statsn, c.exp_statsn, "StatSN in order");
            c.exp_statsn += 1;
            got.get_mut(&itt).unwrap().0 = s;
            done += 1;
        }
    }
    got
}

#[test]
fn pipelined_large_reads_overlap_on_workers_with_their_own_data() {
    let (store, srv, mut c) = setup();
    // Six 1 MiB READs in one segment: they arrive in one batch.
    let mut wire = Vec::new();
    let mut want = HashMap::new();
    for i in 0..6u32 {
        let (itt, pdu) = read_mib(&mut c, i, Attr::Simple);
        wire.extend(pdu);
        want.insert(itt, pattern(MIB, i as u8));
    }
    c.send_raw(&wire).unwrap();
    let got = answers(&mut c, 6);
    for (itt, data) in want {
        let (status, d) = &got[&itt];
        assert_eq!(*status, 0, "ITT {itt}");
        assert!(*d == data, "data of ITT {itt}");
    }
    let reads = store.reads.lock().unwrap().clone();
    assert_eq!(reads.len(), 6);
    // The first has nothing to overlap with and runs here; the others
    // find Data-In queued and go to the pool.
    assert!(reads[0].1.starts_with("iscsi-conn"), "{reads:?}");
    assert!(
        reads.iter().any(|r| r.1.starts_with("io-worker")),
        "{reads:?}"
    );
    c.logout();
    srv.shutdown();
}

#[test]
fn a_lone_large_read_stays_on_the_connection_thread() {
    let (store, srv, mut c) = setup();
    for i in 0..3u32 {
        let (status, data, _) = c.read_cmd(&read10(i * 2048, 2048), MIB as u32);
        assert_eq!(status, 0);
        assert!(data == pattern(MIB, i as u8));
    }
    let reads = store.reads.lock().unwrap().clone();
    assert!(
        reads.iter().all(|r| r.1.starts_with("iscsi-conn")),
        "{reads:?}"
    );
    c.logout();
    srv.shutdown();
}

#[test]
fn an_overlapped_ordered_read_is_not_overtaken_by_a_later_write() {
    let (store, srv, mut c) = setup();
    // READ MiB 0 (runs here, its Data-In queued), ORDERED READ MiB 1
    // (overlapped on a worker), then a WRITE into MiB 1: it must wait for
    // the ORDERED READ, which returns the old data.
    let mut wire = read_mib(&mut c, 0, Attr::Simple).1;
    let (ordered_itt, pdu) = read_mib(&mut c, 1, Attr::Ordered);
    wire.extend(pdu);
    let new = pattern(4096, 0xaa);
    let w = c.scsi_cmd_header(&write10(2048, 8), false, true, 4096);
    wire.extend(c.encode_cmd(&w, &new));
    c.send_raw(&wire).unwrap();
    let got = answers(&mut c, 3);
    assert_eq!(got[&w.itt].0, 0, "WRITE status");
    let (status, data) = &got[&ordered_itt];
    assert_eq!(*status, 0);
    assert!(
        *data == pattern(MIB, 1),
        "the ORDERED READ saw the later WRITE"
    );
    let reads = store.reads.lock().unwrap().clone();
    assert!(
        reads
            .iter()
            .any(|r| r.0 == MIB as u64 && r.1.starts_with("io-worker")),
        "the ORDERED READ was overlapped: {reads:?}"
    );
    // And the WRITE did land.
    let (status, data, _) = c.read_cmd(&read10(2048, 8), 4096);
    assert_eq!(status, 0);
    assert!(data == new);
    c.logout();
    srv.shutdown();
}
