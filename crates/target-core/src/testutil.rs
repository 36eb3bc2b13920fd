//! Test rig: an in-memory backstore with failure injection and call
//! counters, and helpers that run CDBs through the public `LunTable` API.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use backstore::{Backstore, Capabilities};

use crate::{Command, Device, DeviceOptions, Lun, LunTable, Nexus, Outcome, Status, TaskAttr};

pub const BLOCKS: u64 = 2048;
pub const WWN: &str = "6a1c0f2e-1234-4bcd-9ef0-0123456789ab";

pub struct MemStore {
    /// Reported size; only the first 64 MiB are backed (huge-LU tests never
    /// touch data past that).
    size: u64,
    data: Mutex<Vec<u8>>,
    fail: AtomicBool,
    /// Only flushes fail (a writeback error met at fsync).
    fail_flush: AtomicBool,
    fua: AtomicUsize,
    flushes: AtomicUsize,
    pub discards: AtomicUsize,
    can_discard: bool,
    /// Write in 512-byte pieces with a yield between them, so a concurrent
    /// reader can observe a half-done write unless the core prevents it.
    pub piecewise: AtomicBool,
    /// While closed, writes wait (a long-running operation, held still):
    /// [`MemStore::stall`] / [`MemStore::unstall`]. A condition variable,
    /// not a poll, so the writer resumes the moment the test lets it.
    stalled: Mutex<bool>,
    unstalled: Condvar,
    /// Allocated byte range reported by `allocation_at`, when set.
    allocated: Mutex<Option<(u64, u64)>>,
}

impl MemStore {
    pub fn new(size: u64, can_discard: bool) -> MemStore {
        MemStore {
            size,
            data: Mutex::new(vec![0u8; size.min(64 << 20) as usize]),
            fail: AtomicBool::new(false),
            fail_flush: AtomicBool::new(false),
            fua: AtomicUsize::new(0),
            flushes: AtomicUsize::new(0),
            discards: AtomicUsize::new(0),
            can_discard,
            piecewise: AtomicBool::new(false),
            stalled: Mutex::new(false),
            unstalled: Condvar::new(),
            allocated: Mutex::new(None),
        }
    }

    /// Report `[start, end)` as the only allocated range.
    pub fn set_allocated(&self, start: u64, end: u64) {
        *self.allocated.lock().expect("lock") = Some((start, end));
    }

    /// Hold every write until [`MemStore::unstall`].
    pub fn stall(&self) {
        *self.stalled.lock().expect("lock") = true;
    }

    /// Let held and later writes through.
    pub fn unstall(&self) {
        *self.stalled.lock().expect("lock") = false;
        self.unstalled.notify_all();
    }

    fn wait_unstalled(&self) {
        let g = self.stalled.lock().expect("lock");
        drop(self.unstalled.wait_while(g, |s| *s).expect("lock"));
    }

    pub fn fail(&self, on: bool) {
        self.fail.store(on, Ordering::SeqCst);
    }

    pub fn fail_flush(&self, on: bool) {
        self.fail_flush.store(on, Ordering::SeqCst);
    }

    pub fn fua_writes(&self) -> usize {
        self.fua.load(Ordering::SeqCst)
    }

    pub fn flushes(&self) -> usize {
        self.flushes.load(Ordering::SeqCst)
    }

    fn check(&self) -> io::Result<()> {
        if self.fail.load(Ordering::SeqCst) {
            Err(io::Error::other("injected failure"))
        } else {
            Ok(())
        }
    }

    pub fn bytes(&self, at: usize, len: usize) -> Vec<u8> {
        self.data.lock().expect("lock")[at..at + len].to_vec()
    }
}

impl Backstore for MemStore {
    fn size(&self) -> u64 {
        self.size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            discard: self.can_discard,
            ..Capabilities::default()
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check()?;
        let d = self.data.lock().expect("lock");
        let o = offset as usize;
        buf.copy_from_slice(&d[o..o + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.wait_unstalled();
        self.check()?;
        if self.piecewise.load(Ordering::Relaxed) {
            for (i, piece) in buf.chunks(512).enumerate() {
                let o = offset as usize + i * 512;
                self.data.lock().expect("lock")[o..o + piece.len()].copy_from_slice(piece);
                std::thread::yield_now();
            }
            return Ok(());
        }
        let mut d = self.data.lock().expect("lock");
        let o = offset as usize;
        d[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    fn write_at_fua(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.fua.fetch_add(1, Ordering::SeqCst);
        self.write_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.check()?;
        if self.fail_flush.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected flush failure"));
        }
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn allocation_at(&self, offset: u64) -> io::Result<Option<backstore::Extent>> {
        let Some((start, end)) = *self.allocated.lock().expect("lock") else {
            return Ok(None);
        };
        let e = if offset < start {
            backstore::Extent {
                allocated: false,
                len: start - offset,
            }
        } else if offset < end {
            backstore::Extent {
                allocated: true,
                len: end - offset,
            }
        } else {
            backstore::Extent {
                allocated: false,
                len: self.size - offset,
            }
        };
        Ok(Some(e))
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check()?;
        if !self.can_discard {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        self.discards.fetch_add(1, Ordering::SeqCst);
        let mut d = self.data.lock().expect("lock");
        d[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

pub struct Rig {
    pub table: LunTable,
    pub dev: Arc<Device>,
    pub store: Arc<MemStore>,
    pub me: Nexus,
}

pub fn sense_of(o: &Outcome) -> Option<(u8, u8, u8)> {
    o.sense.as_ref().map(|s| (s[2] & 0x0f, s[12], s[13]))
}

impl Rig {
    fn build(opts: DeviceOptions, size: u64, luns: &[u64], consume_ua: bool) -> Rig {
        let store = Arc::new(MemStore::new(size, opts.thin_provisioning));
        let dev = Device::new(opts, store.clone());
        let table = LunTable {
            luns: luns
                .iter()
                .map(|&id| Lun {
                    id,
                    device: dev.clone(),
                    write_protect: false,
                })
                .collect(),
        };
        let rig = Rig {
            table,
            dev,
            store,
            me: Rig::make_nexus(1),
        };
        if consume_ua {
            let (o, _) = rig.run(&[0, 0, 0, 0, 0, 0], &[]);
            assert_eq!(sense_of(&o), Some((6, 0x29, 0)));
        }
        rig
    }

    fn opts() -> DeviceOptions {
        DeviceOptions::new("disk0", WWN)
    }

    /// One LUN 0, the power-on UA for `me` already consumed.
    pub fn new() -> Rig {
        Rig::build(Rig::opts(), BLOCKS * 512, &[0], true)
    }

    /// Like `new`, but `me` has not talked to the device yet.
    pub fn fresh() -> Rig {
        Rig::build(Rig::opts(), BLOCKS * 512, &[0], false)
    }

    pub fn thin() -> Rig {
        let mut o = Rig::opts();
        o.thin_provisioning = true;
        Rig::build(o, BLOCKS * 512, &[0], true)
    }

    pub fn read_only() -> Rig {
        let mut o = Rig::opts();
        o.read_only = true;
        Rig::build(o, BLOCKS * 512, &[0], true)
    }

    /// One LUN 0 of a device with these options (e.g. another WWN, so
    /// another NAA designator), the power-on UA for `me` consumed.
    pub fn with_options(opts: DeviceOptions) -> Rig {
        Rig::build(opts, BLOCKS * 512, &[0], true)
    }

    pub fn sized(bytes: u64) -> Rig {
        // Sparse enough for tests: the Vec is only touched where written.
        Rig::build(Rig::opts(), bytes, &[0], true)
    }

    pub fn with_luns(ids: &[u64]) -> Rig {
        Rig::build(Rig::opts(), BLOCKS * 512, ids, true)
    }

    fn make_nexus(id: u64) -> Nexus {
        Nexus {
            id,
            initiator_port: format!("iqn.2026-01.test:init{id},i,0x1"),
            target_port: "iqn.2026-01.test:tgt,t,0x0001".to_string(),
            relative_port_id: 1,
            tpg_tag: 1,
        }
    }

    pub fn nexus(&self, id: u64) -> Nexus {
        Rig::make_nexus(id)
    }

    pub fn run_full(
        &self,
        nexus: &Nexus,
        lun: u64,
        cdb: &[u8],
        data_out: &[u8],
        buf: &mut Vec<u8>,
    ) -> Outcome {
        let cmd = Command {
            cdb,
            data_out,
            expected_len: data_out.len() as u32,
            attr: TaskAttr::Simple,
        };
        self.table.execute(nexus, lun, &cmd, buf)
    }

    /// Run a CDB without Data-Out through another LUN table.
    pub fn run_full_table(&self, table: &LunTable, nexus: &Nexus, lun: u64, cdb: &[u8]) -> Outcome {
        let cmd = Command {
            cdb,
            data_out: &[],
            expected_len: 0,
            attr: TaskAttr::Simple,
        };
        table.execute(nexus, lun, &cmd, &mut Vec::new())
    }

    pub fn run(&self, cdb: &[u8], data_out: &[u8]) -> (Outcome, Vec<u8>) {
        self.run_as(&self.me, cdb, data_out)
    }

    pub fn run_as(&self, nexus: &Nexus, cdb: &[u8], data_out: &[u8]) -> (Outcome, Vec<u8>) {
        let mut buf = Vec::new();
        let o = self.run_full(nexus, 0, cdb, data_out, &mut buf);
        (o, buf)
    }

    pub fn run_lun(&self, lun: u64, cdb: &[u8], data_out: &[u8]) -> (Outcome, Vec<u8>) {
        let mut buf = Vec::new();
        let o = self.run_full(&self.me, lun, cdb, data_out, &mut buf);
        (o, buf)
    }

    pub fn run_into(&self, cdb: &[u8], data_out: &[u8], buf: &mut Vec<u8>) -> Outcome {
        self.run_full(&self.me, 0, cdb, data_out, buf)
    }

    /// Run without Data-Out and require GOOD.
    #[track_caller]
    pub fn ok(&self, cdb: &[u8]) -> (Status, Vec<u8>) {
        let (o, d) = self.run(cdb, &[]);
        assert_eq!(o.status, Status::Good, "{cdb:02x?} -> {:?}", sense_of(&o));
        (o.status, d)
    }

    #[track_caller]
    pub fn expect_sense(&self, cdb: &[u8], key: u8, asc: u8, ascq: u8) {
        let (o, d) = self.run(cdb, &[]);
        assert_eq!(o.status, Status::CheckCondition, "{cdb:02x?}");
        assert_eq!(sense_of(&o), Some((key, asc, ascq)), "{cdb:02x?}");
        assert!(d.is_empty(), "no data with CHECK CONDITION");
    }
}
