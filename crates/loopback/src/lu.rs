//! THE SEAM between the loopback fabric and target-core: one LUN seen
//! through the loopback target's I_T nexus. Every block request runs as a
//! SCSI command through `LunTable::execute` (the core's inline path, as the
//! vhost fabric's nexus.rs uses) on the ublk queue's own thread, so
//! reservations, write protection, ALUA, QoS and unit attentions apply as
//! for any initiator. The device's geometry is asked of the core the way an
//! initiator would (READ CAPACITY(16), Block Limits VPD).

use std::sync::{Arc, RwLock};

use scsi::opcode;
use target_core::{Command, LunTable, Nexus, Outcome, Status, TaskAttr};

use crate::request::{self, BlockRequest};

/// A unit attention is reported once per condition; a few in a row (power
/// on, then LUN inventory changed, ...) are normal, a stream of them is not.
const UA_RETRIES: usize = 8;

/// What the block device advertises, from the core's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: u32,
    pub blocks: u64,
    /// Logical blocks per physical block, as a power of two.
    pub lbppb_exponent: u8,
    /// READ CAPACITY's LBPME: the LU unmaps (thin provisioned).
    pub thin: bool,
    /// Maximum transfer length in blocks (0: no limit reported).
    pub max_transfer: u32,
    /// Maximum UNMAP LBA count (0: none).
    pub max_unmap: u32,
    /// Maximum WRITE SAME length in blocks (0: no limit reported).
    pub max_write_same: u64,
    /// WCE in the caching mode page: the LU has a volatile cache to flush.
    pub write_cache: bool,
    /// The LU refuses writes through this LUN (WP in MODE SENSE).
    pub read_only: bool,
}

/// The LUN table a target's disks run against now, shared by the target
/// and its disks. Each command takes the current one: a disk keeps running
/// while LUNs come and go, and a disk holding the table of its start would
/// keep the devices of LUNs removed since (their backstores open, an RBD
/// image's watch and lock held) until the disk itself goes, idle or not.
#[derive(Default)]
pub struct LiveLuns(RwLock<Arc<LunTable>>);

impl LiveLuns {
    pub fn new(luns: Arc<LunTable>) -> Arc<LiveLuns> {
        Arc::new(LiveLuns(RwLock::new(luns)))
    }

    pub fn get(&self) -> Arc<LunTable> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Install `luns`; commands running keep the table they started with
    /// (and so their device) until they end.
    pub fn set(&self, luns: Arc<LunTable>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = luns;
    }
}

/// One LUN of a loopback target on the target's nexus.
pub struct LuPath {
    pub(crate) luns: Arc<LiveLuns>,
    pub(crate) lun: u64,
    pub(crate) nexus: Arc<Nexus>,
}

impl LuPath {
    pub fn new(luns: Arc<LiveLuns>, lun: u64, nexus: Arc<Nexus>) -> LuPath {
        LuPath { luns, lun, nexus }
    }

    /// Run one command; unit attentions are consumed and the command run
    /// again, as the kernel's SCSI midlayer does for a disk.
    pub fn execute(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        expected_len: u32,
        data_in: &mut Vec<u8>,
    ) -> Outcome {
        let cmd = Command {
            cdb,
            data_out,
            expected_len,
            attr: TaskAttr::Simple,
        };
        let luns = self.luns.get();
        let mut o = luns.execute(&self.nexus, self.lun, &cmd, data_in);
        for _ in 0..UA_RETRIES {
            if !request::is_unit_attention(&o) {
                break;
            }
            o = luns.execute(&self.nexus, self.lun, &cmd, data_in);
        }
        o
    }

    /// One block request: `buf` is the request's data buffer (Data-Out
    /// for writes, filled with Data-In for reads). Returns the byte count
    /// or a negative errno, as ublk completes requests.
    pub fn serve(
        &self,
        req: &BlockRequest,
        block_size: u32,
        buf: &mut [u8],
        data_in: &mut Vec<u8>,
    ) -> i32 {
        let s = match request::to_scsi(req, block_size) {
            Ok(s) => s,
            Err(e) => return e.errno(),
        };
        let len = s.expected_len as usize;
        let data_out: &[u8] = match (&s.param, req.op) {
            (Some(p), _) => p,
            (None, request::OP_WRITE) => match buf.get(..len) {
                Some(b) => b,
                None => return -libc::EINVAL,
            },
            (None, _) => &[],
        };
        let o = self.execute(&s.cdb[..s.cdb_len], data_out, s.expected_len, data_in);
        let err = request::errno(&o);
        if err != 0 {
            tracing::debug!(lun = self.lun, op = req.op, status = ?o.status, "loopback: request failed");
            return err;
        }
        if req.op == request::OP_READ {
            if data_in.len() != len || buf.len() < len {
                return -libc::EIO;
            }
            buf[..len].copy_from_slice(data_in);
        }
        match req.op {
            request::OP_READ | request::OP_WRITE => s.expected_len as i32,
            _ => (u64::from(req.nr_sectors) * 512).min(i32::MAX as u64) as i32,
        }
    }

    /// The geometry, as an initiator learns it.
    pub fn probe(&self) -> Result<Geometry, String> {
        let mut buf = Vec::new();
        let tur = [opcode::TEST_UNIT_READY, 0, 0, 0, 0, 0];
        self.execute(&tur, &[], 0, &mut buf);
        // READ CAPACITY(16): SERVICE ACTION IN(16) / 10h.
        let mut rc = [0u8; 16];
        rc[0] = opcode::SERVICE_ACTION_IN_16;
        rc[1] = 0x10;
        rc[10..14].copy_from_slice(&32u32.to_be_bytes());
        self.good(&rc, 32, &mut buf, "READ CAPACITY(16)")?;
        if buf.len() < 16 {
            return Err("short READ CAPACITY(16) data".into());
        }
        let last = u64::from_be_bytes(buf[0..8].try_into().unwrap_or_default());
        let block_size = u32::from_be_bytes(buf[8..12].try_into().unwrap_or_default());
        let lbppb_exponent = buf[13] & 0x0f;
        let thin = buf[14] & 0x80 != 0;
        let mut g = Geometry {
            block_size,
            blocks: last + 1,
            lbppb_exponent,
            thin,
            max_transfer: 0,
            max_unmap: 0,
            max_write_same: 0,
            write_cache: false,
            read_only: false,
        };
        // Block Limits VPD (B0h).
        let inq = [opcode::INQUIRY, 1, 0xb0, 0, 0x40, 0];
        if self.good(&inq, 0x40, &mut buf, "INQUIRY B0").is_ok() && buf.len() >= 44 {
            let be32 =
                |at: usize| u32::from_be_bytes(buf[at..at + 4].try_into().unwrap_or_default());
            g.max_transfer = be32(8);
            g.max_unmap = if thin { be32(20) } else { 0 };
            g.max_write_same = u64::from_be_bytes(buf[36..44].try_into().unwrap_or_default());
        }
        // MODE SENSE(10) caching page (08h): WCE; the header's WP bit.
        let ms = [0x5a, 0x08, 0x08, 0, 0, 0, 0, 0, 0xff, 0];
        if self.good(&ms, 0xff, &mut buf, "MODE SENSE(10)").is_ok() && buf.len() >= 8 {
            g.read_only = buf[3] & 0x80 != 0;
            let bdl = u16::from_be_bytes([buf[6], buf[7]]) as usize;
            let page = 8 + bdl;
            g.write_cache =
                buf.get(page) == Some(&0x08) && buf.get(page + 2).is_some_and(|b| b & 0x04 != 0);
        }
        if g.block_size < 512 || !g.block_size.is_power_of_two() {
            return Err(format!(
                "block size {} is not usable for a block device",
                g.block_size
            ));
        }
        Ok(g)
    }

    fn good(&self, cdb: &[u8], len: u32, buf: &mut Vec<u8>, what: &str) -> Result<(), String> {
        let o = self.execute(cdb, &[], len, buf);
        if o.status == Status::Good {
            Ok(())
        } else {
            Err(format!("{what} failed: {:?}", o.status))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::*;
    use backstore::RamBackstore;
    use target_core::{Device, DeviceOptions, Lun};

    fn path(opts: DeviceOptions, write_protect: bool) -> LuPath {
        let dev = Device::new(opts, Arc::new(RamBackstore::new(4 << 20).unwrap()));
        let luns = Arc::new(LunTable {
            luns: vec![Lun {
                id: 0,
                device: dev,
                write_protect,
            }],
        });
        LuPath::new(LiveLuns::new(luns), 0, nexus())
    }

    fn nexus() -> Arc<Nexus> {
        Arc::new(Nexus {
            id: 1 << 50,
            initiator_port: "naa.5001405000000001".into(),
            target_port: "naa.5001405000000002,t,0x0001".into(),
            relative_port_id: 1,
            tpg_tag: 1,
        })
    }

    fn req(op: u8, start_sector: u64, nr_sectors: u32) -> BlockRequest {
        BlockRequest {
            op,
            flags: 0,
            start_sector,
            nr_sectors,
        }
    }

    /// The power-on unit attention never reaches the block layer; data
    /// written through the core reads back; discard and write-zeroes read
    /// back zeroes; the geometry is the core's.
    #[test]
    fn requests_run_through_the_core() {
        let mut o = DeviceOptions::new("lb", "5a4b3c2d-0000-4000-8000-0000000000aa");
        o.block_size = 4096;
        o.thin_provisioning = true;
        let p = path(o, false);
        let mut din = Vec::new();
        let mut buf = vec![0xabu8; 8192];
        assert_eq!(
            p.serve(&req(OP_WRITE, 8, 16), 4096, &mut buf, &mut din),
            8192
        );
        let mut back = vec![0u8; 8192];
        assert_eq!(
            p.serve(&req(OP_READ, 8, 16), 4096, &mut back, &mut din),
            8192
        );
        assert_eq!(back, buf);
        assert_eq!(p.serve(&req(OP_FLUSH, 0, 0), 4096, &mut [], &mut din), 0);
        assert_eq!(
            p.serve(&req(OP_DISCARD, 8, 8), 4096, &mut [], &mut din),
            4096
        );
        assert_eq!(
            p.serve(&req(OP_WRITE_ZEROES, 16, 8), 4096, &mut [], &mut din),
            4096
        );
        assert_eq!(
            p.serve(&req(OP_READ, 8, 16), 4096, &mut back, &mut din),
            8192
        );
        assert!(back.iter().all(|&b| b == 0));
        let g = p.probe().unwrap();
        assert_eq!((g.block_size, g.blocks, g.thin), (4096, 1024, true));
        assert!(g.max_unmap > 0 && g.max_transfer > 0 && g.write_cache && !g.read_only);
    }

    /// A write-protected LUN answers DATA PROTECT, which fails the write
    /// with the target's refusal, and says WP in its geometry.
    #[test]
    fn write_protected_lun_is_read_only() {
        let p = path(
            DeviceOptions::new("ro", "5a4b3c2d-0000-4000-8000-0000000000ab"),
            true,
        );
        let mut din = Vec::new();
        let mut buf = vec![1u8; 512];
        assert_eq!(
            p.serve(&req(OP_WRITE, 0, 1), 512, &mut buf, &mut din),
            -libc::EREMOTEIO
        );
        assert_eq!(p.serve(&req(OP_READ, 0, 1), 512, &mut buf, &mut din), 512);
        let g = p.probe().unwrap();
        assert!(g.read_only);
        assert_eq!(g.max_unmap, 0);
    }

    /// LUN 1 goes (its disk stopped, as `LoopbackTarget::set_luns` does)
    /// while LUN 0's disk stays, idle: its device is released and its
    /// backstore closed once, at once, not when LUN 0's disk goes; LUN 0's
    /// disk goes on serving.
    #[test]
    fn a_kept_disk_lets_go_of_a_removed_luns_device() {
        let store = backstore::testing::CountsCloses::new(1 << 20);
        let dev = |name: &str, uuid: &str, store: Arc<dyn backstore::Backstore>| {
            Device::new(DeviceOptions::new(name, uuid), store)
        };
        let keep = dev(
            "keep",
            "5a4b3c2d-0000-4000-8000-0000000000b1",
            Arc::new(RamBackstore::new(1 << 20).unwrap()),
        );
        let gone = dev(
            "gone",
            "5a4b3c2d-0000-4000-8000-0000000000b2",
            store.clone(),
        );
        let lun = |id, device: &Arc<Device>| Lun {
            id,
            device: device.clone(),
            write_protect: false,
        };
        let live = LiveLuns::new(Arc::new(LunTable {
            luns: vec![lun(0, &keep), lun(1, &gone)],
        }));
        let weak = Arc::downgrade(&gone);
        drop(gone);
        let nexus = nexus();
        let p0 = LuPath::new(live.clone(), 0, nexus.clone());
        let p1 = LuPath::new(live.clone(), 1, nexus);
        let (mut din, mut buf) = (Vec::new(), vec![0u8; 512]);
        assert_eq!(p0.serve(&req(OP_READ, 0, 1), 512, &mut buf, &mut din), 512);
        assert_eq!(p1.serve(&req(OP_READ, 0, 1), 512, &mut buf, &mut din), 512);

        drop(p1);
        live.set(Arc::new(LunTable {
            luns: vec![lun(0, &keep)],
        }));
        assert_eq!(weak.strong_count(), 0, "LUN 0's disk still holds it");
        assert_eq!(store.closes(), 1, "closed once");
        assert_eq!(p0.serve(&req(OP_READ, 0, 1), 512, &mut buf, &mut din), 512);
    }
}
