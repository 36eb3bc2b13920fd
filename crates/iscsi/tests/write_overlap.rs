//! Large WRITEs of an inline LU overlap with the connection's receives
//! (`crates/iscsi/src/write_overlap.rs`): a 1 MiB WRITE whose data is all
//! in while another write still gathers its data runs on the worker pool;
//! a lone WRITE stays on the connection thread; both land their data.

mod common;

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use backstore::{Backstore, Capabilities};
use common::*;
use iscsi_wire::response::{R2t, ScsiResponse};
use iscsi_wire::Opcode;
use target_core::{Device, DeviceOptions};

const MIB: usize = 1 << 20;
const BURST: usize = 256 * 1024;

/// RAM that notes which thread ran each write (offset, thread name).
struct WhereStore {
    mem: Arc<MemStore>,
    writes: Mutex<Vec<(u64, String)>>,
}

impl Backstore for WhereStore {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn capabilities(&self) -> Capabilities {
        self.mem.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.mem.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let name = std::thread::current().name().unwrap_or("").to_string();
        self.writes.lock().unwrap().push((offset, name));
        self.mem.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// An inline LU (the default engine) of 8 MiB and a libiscsi-shaped session.
fn setup() -> (Arc<WhereStore>, Arc<iscsi::IscsiServer>, Client) {
    let store = Arc::new(WhereStore {
        mem: MemStore::new(8 * MIB),
        writes: Mutex::new(Vec::new()),
    });
    let opts = DeviceOptions::new("wwhere0", "5b3c9a2e-0000-4000-8000-0000000000c7");
    let dev = Device::new(opts, Arc::clone(&store) as Arc<dyn Backstore>);
    let (srv, addr) = serve_device(dev);
    let c = session(addr, LIBISCSI);
    (store, srv, c)
}

#[test]
fn a_large_write_complete_while_another_gathers_runs_on_a_worker() {
    let (store, srv, mut c) = setup();
    let data: Vec<Vec<u8>> = (0..2u8).map(|i| pattern(MIB, 0x50 + i)).collect();
    let mut itts = Vec::new();
    for (i, d) in data.iter().enumerate() {
        let lba = (i * MIB / 512) as u32;
        let cmd = c.scsi_cmd_header(&write10(lba, (MIB / 512) as u16), false, true, MIB as u32);
        c.send_cmd(&cmd, &d[..BURST]);
        itts.push(cmd.itt);
    }
    // Answer R2Ts in the order they come: the first write's data is all
    // in while the second still gathers.
    let mut status = HashMap::new();
    while status.len() < 2 {
        let p = c.recv().unwrap();
        match p.bhs.opcode() {
            Opcode::R2T => {
                let r = R2t::parse(&p.bhs);
                let i = itts.iter().position(|&t| t == r.itt).expect("known ITT");
                c.answer_r2t(&r, &data[i]);
            }
            Opcode::SCSI_RESPONSE => {
                let r = ScsiResponse::parse(&p.bhs);
                assert_eq!(r.sn.statsn, c.exp_statsn, "StatSN in order");
                c.exp_statsn += 1;
                status.insert(r.itt, r.status);
            }
            op => panic!("unexpected {op:?}"),
        }
    }
    assert!(status.values().all(|&s| s == 0), "{status:?}");
    let writes = store.writes.lock().unwrap().clone();
    assert!(
        writes
            .iter()
            .any(|w| w.0 == 0 && w.1.starts_with("io-worker")),
        "the first write was not overlapped: {writes:?}"
    );
    for (i, d) in data.iter().enumerate() {
        let lba = (i * MIB / 512) as u32;
        let (st, got, _) = c.read_cmd(&read10(lba, (MIB / 512) as u16), MIB as u32);
        assert_eq!(st, 0);
        assert!(got == *d, "data of write {i}");
    }
    c.logout();
    srv.shutdown();
}

#[test]
fn a_lone_large_write_stays_on_the_connection_thread() {
    let (store, srv, mut c) = setup();
    for i in 0..3u8 {
        let d = pattern(MIB, i);
        let lba = u32::from(i) * (MIB / 512) as u32;
        let r = c.write_cmd(&write10(lba, (MIB / 512) as u16), &d);
        assert_eq!(r.status, 0);
        let (st, got, _) = c.read_cmd(&read10(lba, (MIB / 512) as u16), MIB as u32);
        assert_eq!(st, 0);
        assert!(got == d);
    }
    let writes = store.writes.lock().unwrap().clone();
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert!(
        writes.iter().all(|w| w.1.starts_with("iscsi-conn")),
        "{writes:?}"
    );
    c.logout();
    srv.shutdown();
}
