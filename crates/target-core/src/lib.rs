//! The target core (LIO's TCM): logical units, LUN mapping, command dispatch
//! and SPC-4/SBC-3 emulation, sense data, unit attentions, task management.
//!
//! Fabrics (iSCSI, vhost, loopback) only move commands and data; they call
//! [`LunTable::execute`] once per command, on their own thread, with the whole
//! Data-Out already gathered, and send back whatever the core put in the
//! Data-In buffer plus the returned status and sense.
//!
//! The core clears `data_in` itself (READs reuse its initialized bytes and
//! only zero-fill growth), so a fabric's buffer pool need not clear it.
//!
//! Layout: `dispatch` (LUN lookup, UA / reservation / medium gates, the fast
//! path) drives handlers from the `commands` table; `rw` and `rmw` are the
//! block data path, `provisioning` thin provisioning, `inquiry`, `mode`,
//! `misc`, `medium`, `opcodes`, `sanitize`, `xcopy` the other SPC/SBC
//! commands; `ua`, `reservation` + `pr` (+ `pr_out`, and `pr_file` for
//! APTPL state on disk), `tmf` hold per-nexus state; `error` maps every
//! failure to one status + sense answer.
//!
//! PUBLIC API CONTRACT (shared with the `iscsi` fabric and the `rtarget`
//! binary): the items below keep these names and signatures; add to them,
//! don't rename them.

use std::sync::Arc;

use backstore::Backstore;

pub mod alua;
mod alua_owner;
mod commands;
mod device;
mod dispatch;
pub mod engine;
mod error;
mod inquiry;
mod lent_read;
pub use lent_read::{LentAnswer, MediumOrder};
mod medium;
mod misc;
mod mode;
mod opcodes;
mod pr;
mod pr_file;
mod pr_out;
mod pr_shared;
mod prefetch;
mod proto;
mod provisioning;
mod reservation;
mod rmw;
mod rw;
mod sanitize;
mod sg;
pub mod stats;
mod stats_clock;
mod streamed;
mod submit;
mod tmf;
mod ua;
mod xcopy;

#[cfg(test)]
mod testutil;

#[cfg(feature = "fuzzing")]
pub use pr_file::fuzz_pr_file;

pub use alua::{AccessState, AluaGroup, AluaPort};
pub use error::{CmdError, CopyAbort, CopyDescriptor, Inaccessible};
pub use sg::{is_read_write, SgCommand, SgOutcome};
pub use streamed::{StreamCheck, WritePlan};
pub use submit::{Reply, Request};
pub use tmf::AsyncEvent;

/// How a storage object is presented as a SCSI logical unit (LIO's
/// storage-object attributes plus identity).
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// Storage object name (e.g. `disk0`); also the INQUIRY product
    /// identification fallback and part of the designators.
    pub name: String,
    /// Unit serial number (VPD 0x80) and NAA designator seed: LIO's `wwn`,
    /// a UUID string.
    pub wwn: String,
    /// Logical block size in bytes (512 or 4096).
    pub block_size: u32,
    /// T10 vendor identification, 8 bytes max (default "RTARGET").
    pub vendor: String,
    /// Product identification, 16 bytes max (LIO uses "FILEIO"/"RAMDISK-MCP").
    pub product: String,
    /// Product revision, 4 bytes max.
    pub revision: String,
    /// emulate_write_cache: report WCE=1 in the caching mode page.
    pub write_cache: bool,
    /// Refuse writes with DATA PROTECT / WRITE PROTECTED.
    pub read_only: bool,
    /// emulate_tpu / emulate_tpws: offer UNMAP and WRITE SAME with UNMAP (thin).
    pub thin_provisioning: bool,
    /// Where a fabric runs this LU's commands (rtarget's `io_engine`
    /// storage-object attribute); the core itself ignores it.
    pub io_engine: IoEngine,
}

/// How a fabric runs the commands of one LU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoEngine {
    /// On the connection's own thread, run to completion: the fast path
    /// for backstores that answer from memory or the page cache.
    #[default]
    Inline,
    /// On a worker pool, so a backstore that blocks (O_DIRECT, network)
    /// does not stall the connection's other commands. READ and WRITE of
    /// a backstore whose submit never blocks (librbd AIO,
    /// `Backstore::submit_never_blocks`) start on the fabric's thread.
    Pool,
    /// READ and WRITE go straight to the backstore's io_uring from the
    /// fabric's thread, queued per wake-up and submitted together; the
    /// ring's reaper completes them. Other commands go to the worker pool.
    Uring,
}

/// One storage object as seen by SCSI: its backstore plus all SCSI state that
/// belongs to the LU rather than to a path (mode page values, unit attention
/// queues per I_T nexus, reservations). Shared by every LUN that maps it.
pub struct Device {
    /// Names the LU for the life of the process (the engine's per-LU
    /// accounting keys on it; never an address, which a new device could
    /// reuse).
    id: u64,
    pub options: DeviceOptions,
    pub backstore: Arc<dyn Backstore>,
    state: device::DeviceState,
}

impl Device {
    pub fn new(options: DeviceOptions, backstore: Arc<dyn Backstore>) -> Arc<Device> {
        let caps = backstore.capabilities();
        let state = device::DeviceState::new(&options, caps);
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Arc::new(Device {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            options,
            backstore,
            state,
        })
    }

    /// A reading of the LU's monitoring counters (see [`stats`]).
    pub fn stats(&self) -> stats::LuStats {
        let mut s = self.state.stats.snapshot();
        (s.ua_established, s.ua_reported) = self.state.ua.counts();
        (s.alua_explicit_transitions, s.alua_implicit_transitions) = self.state.alua.transitions();
        s
    }

    /// The LU's id: unique among all devices of this process, never 0.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Number of logical blocks.
    pub fn num_blocks(&self) -> u64 {
        self.backstore.size() / u64::from(self.options.block_size)
    }

    /// The capacity changed underneath (the backstore was resized): queue
    /// CAPACITY DATA HAS CHANGED (2A/09, SBC-3 4.x) for every I_T nexus
    /// that has reached this LU, through any LUN or ACL that maps it, so
    /// each initiator's next command tells it to re-read the capacity.
    /// READ CAPACITY, the mode block descriptor and every LBA range check
    /// read `num_blocks()` live, so they see the new size at once.
    pub fn resized(&self) {
        self.state
            .ua
            .queue_others(None, scsi::Asc::CAPACITY_DATA_HAS_CHANGED);
    }

    /// Grow the LU to `new_size` bytes online: the backstore grows first
    /// (refusing shrinks and backstores that cannot, see
    /// [`Backstore::resize`]), then initiators are told ([`Device::resized`]).
    /// `new_size` must be a whole number of logical blocks.
    pub fn resize(&self, new_size: u64) -> std::io::Result<()> {
        let bs = u64::from(self.options.block_size.max(1));
        if !new_size.is_multiple_of(bs) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{new_size} bytes is not a whole number of {bs}-byte blocks"),
            ));
        }
        let before = self.backstore.size();
        self.backstore.resize(new_size)?;
        if self.backstore.size() != before {
            self.resized();
        }
        Ok(())
    }
}

/// One I_T nexus (an iSCSI session): the identity the core keys unit
/// attentions and reservations on.
#[derive(Debug, Clone)]
pub struct Nexus {
    /// Unique per nexus for the life of the daemon.
    pub id: u64,
    /// Initiator port name, e.g. `iqn.1994-05.com.redhat:abc,i,0x23d000000001`.
    pub initiator_port: String,
    /// Target port name, e.g. `iqn.2026-11.org.example:t1,t,0x0001`.
    pub target_port: String,
    /// Relative target port identifier (VPD 0x83), 1-based.
    pub relative_port_id: u16,
    /// Target portal group tag.
    pub tpg_tag: u16,
}

/// A LUN as mapped into a TPG or an ACL.
#[derive(Clone)]
pub struct Lun {
    pub id: u64,
    pub device: Arc<Device>,
    /// Mapped read-only (ACL `write_protect`).
    pub write_protect: bool,
}

/// The LUNs one nexus can see (a TPG's luns, or an ACL's mapped LUNs).
#[derive(Clone, Default)]
pub struct LunTable {
    pub luns: Vec<Lun>,
}

/// SCSI status byte values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Good = 0x00,
    CheckCondition = 0x02,
    ConditionMet = 0x04,
    Busy = 0x08,
    ReservationConflict = 0x18,
    TaskSetFull = 0x28,
    AcaActive = 0x30,
    TaskAborted = 0x40,
}

/// What the core answers for one command. Sense bytes, when present, are
/// fixed-format sense data ready for the wire (no length prefix).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    pub sense: Option<Vec<u8>>,
}

/// Task attribute from the fabric (SAM-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskAttr {
    Simple,
    Ordered,
    HeadOfQueue,
    Aca,
}

/// A command as the fabric hands it to the core.
pub struct Command<'a> {
    /// The CDB (16 bytes or shorter; extended CDBs are appended by the fabric).
    pub cdb: &'a [u8],
    /// All Data-Out the initiator sent (may be shorter or longer than the
    /// CDB asks for; the core decides what that means).
    pub data_out: &'a [u8],
    /// Expected data transfer length from the fabric (bytes).
    pub expected_len: u32,
    pub attr: TaskAttr,
}

/// Task management functions (SAM-5 7), fabric-neutral: each fabric maps
/// its own codes to them (iSCSI's in `iscsi_wire::tmf`; virtio-scsi's
/// VIRTIO_SCSI_T_TMF_* map the same way). The fabric aborts its own queued
/// tasks; the core resets LU state. Fabric-specific functions (iSCSI's TASK
/// REASSIGN, a connection matter) stay with their fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfFunction {
    AbortTask,
    AbortTaskSet,
    ClearAca,
    ClearTaskSet,
    LogicalUnitReset,
    ITNexusReset,
    TargetWarmReset,
    TargetColdReset,
    QueryTask,
    QueryTaskSet,
    QueryAsyncEvent,
}

/// The core's answer to a task management function; fabrics map it to
/// their response codes (`iscsi_wire::tmf::TmfResponse` for iSCSI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfResult {
    Complete,
    LunDoesNotExist,
    NotSupported,
    Rejected,
}

impl LunTable {
    /// Run one command to completion. Data-In, if any, is appended to
    /// `data_in` (cleared first; its capacity is reused across commands so the
    /// fabric can pool it). The fabric truncates to `expected_len` and
    /// computes residuals from `data_in.len()`.
    pub fn execute(
        &self,
        nexus: &Nexus,
        lun: u64,
        cmd: &Command<'_>,
        data_in: &mut Vec<u8>,
    ) -> Outcome {
        dispatch::execute(self, nexus, lun, cmd, data_in)
    }

    /// [`LunTable::execute`] with buffers the fabric lends (a vhost
    /// guest's memory): READ and WRITE move their data between the
    /// backstore and those buffers without a copy; other commands bounce
    /// through buffers of the core (see `sg`). Runs to completion here.
    pub fn execute_sg(&self, nexus: &Nexus, lun: u64, cmd: &SgCommand<'_>) -> SgOutcome {
        sg::execute_sg(self, nexus, lun, cmd)
    }

    /// The completion-based form of [`LunTable::execute`], for engines:
    /// READ and WRITE go to the backstore's asynchronous path and `done`
    /// runs when it completes (possibly later, on another thread); other
    /// commands run here and `done` runs before this returns. The buffers
    /// come back in the [`Reply`].
    pub fn submit(
        &self,
        nexus: &Nexus,
        lun: u64,
        req: Request<'_>,
        done: impl FnOnce(Reply) + Send + 'static,
    ) {
        submit::submit(self, nexus, lun, req, done)
    }

    /// Apply a task management function's LU/target-side effects (reset
    /// state, clear reservations, queue unit attentions for other nexuses).
    pub fn task_management(&self, nexus: &Nexus, func: TmfFunction, lun: u64) -> TmfResult {
        tmf::task_management(self, nexus, func, lun)
    }

    /// QUERY ASYNCHRONOUS EVENT: the unit attention pending for `nexus` on
    /// `lun` (it stays pending).
    pub fn query_async_event(&self, nexus: &Nexus, lun: u64) -> AsyncEvent {
        tmf::query_async_event(self, nexus, lun)
    }

    /// The nexus ended (logout, connection loss): drop its per-nexus state
    /// that must not outlive it.
    pub fn nexus_gone(&self, nexus: &Nexus) {
        tmf::nexus_gone(self, nexus)
    }

    /// The LUN inventory this table describes changed under `nexus` (a LUN
    /// was added, removed or remapped while its session stays logged in):
    /// queue REPORTED LUNS DATA HAS CHANGED (3F/0E) on every LU of the table
    /// for that nexus, so whichever LUN the initiator touches next tells it to
    /// rescan (SPC-4 7.5.x, as LIO does for every LUN of the ACL).
    pub fn luns_changed(&self, nexus: &Nexus) {
        for lun in &self.luns {
            lun.device
                .state
                .ua
                .queue_for(nexus.id, scsi::Asc::REPORTED_LUNS_DATA_HAS_CHANGED);
        }
    }

    /// Bytes of Data-Out the CDB itself asks for, for the block write
    /// commands (WRITE, WRITE AND VERIFY, ORWRITE, COMPARE AND WRITE); `None`
    /// for other commands, whose parameter lists count as what was sent.
    /// Fabrics compute write residuals from it without parsing CDBs.
    pub fn data_out_len(&self, lun: u64, cdb: &[u8]) -> Option<u64> {
        use scsi::opcode::*;
        let bs = u64::from(self.find(lun)?.device.options.block_size);
        let c = scsi::cdb::Cdb::new(cdb).ok()?;
        let blocks = match c.opcode() {
            WRITE_6 | WRITE_10 | WRITE_12 | WRITE_16 | WRITE_AND_VERIFY_10
            | WRITE_AND_VERIFY_12 | WRITE_AND_VERIFY_16 | ORWRITE_16 => u64::from(c.rw().blocks),
            // The verify data and the write data.
            COMPARE_AND_WRITE => 2 * u64::from(c.b(13)),
            _ => return None,
        };
        Some(blocks * bs)
    }

    /// The LUN entry for `lun`, if mapped.
    pub fn find(&self, lun: u64) -> Option<&Lun> {
        self.luns.iter().find(|l| l.id == lun)
    }
}

/// Whether `cdb` may keep [`LunTable::execute`] busy for long (seconds to
/// minutes): today SANITIZE without IMMED, which SBC-3 completes only when
/// the whole medium is sanitized. A fabric that runs each connection's
/// commands on one thread should hand such a command to another thread, so
/// the connection's other commands keep getting answers (NOT READY,
/// SANITIZE IN PROGRESS, as the standard wants) meanwhile.
pub fn may_run_long(cdb: &[u8]) -> bool {
    matches!(cdb, [scsi::opcode::SANITIZE, b1, ..]
        if b1 & 0x80 == 0
            && matches!(b1 & 0x1f, sanitize::SA_OVERWRITE | sanitize::SA_BLOCK_ERASE))
}

impl DeviceOptions {
    /// Options with rtarget's defaults: 512-byte blocks, vendor "RTARGET",
    /// product = `name`, revision "0001", write cache on, writable, thick.
    pub fn new(name: &str, wwn: &str) -> DeviceOptions {
        DeviceOptions {
            name: name.to_string(),
            wwn: wwn.to_string(),
            block_size: 512,
            vendor: "RTARGET".to_string(),
            product: name.to_string(),
            revision: "0001".to_string(),
            write_cache: true,
            read_only: false,
            thin_provisioning: false,
            io_engine: IoEngine::Inline,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::{Lun, LunTable};

    const TUR: [u8; 6] = [0, 0, 0, 0, 0, 0];

    #[test]
    fn may_run_long_is_sanitize_without_immed() {
        assert!(crate::may_run_long(&[0x48, 0x01, 0, 0, 0, 0, 0, 0, 8, 0]));
        assert!(crate::may_run_long(&[0x48, 0x22, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!crate::may_run_long(&[0x48, 0x81, 0, 0, 0, 0, 0, 0, 8, 0]));
        assert!(!crate::may_run_long(&[0x48, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!crate::may_run_long(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]));
        assert!(!crate::may_run_long(&[]));
    }

    /// `luns_changed` queues 3F/0E for the given nexus on every LU of the
    /// table (a second device included), and for nobody else.
    #[test]
    fn luns_changed_queues_reported_luns_data_has_changed() {
        let t = Rig::new();
        let other = Rig::new();
        let b = t.nexus(2);
        t.run_as(&b, &TUR, &[]);
        let table = LunTable {
            luns: vec![
                t.table.luns[0].clone(),
                Lun {
                    id: 1,
                    device: other.dev.clone(),
                    write_protect: false,
                },
            ],
        };
        // `me` has consumed the power-on UA of the second device too.
        let mut buf = Vec::new();
        let o = other.run_full(&t.me, 0, &TUR, &[], &mut buf);
        assert_eq!(o.status, crate::Status::Good);

        table.luns_changed(&t.me);
        for lun in [0u64, 1] {
            let o = t.run_full_table(&table, &t.me, lun, &TUR);
            assert_eq!(sense_of(&o), Some((6, 0x3f, 0x0e)), "LUN {lun}");
            let o = t.run_full_table(&table, &t.me, lun, &TUR);
            assert_eq!(o.status, crate::Status::Good, "reported once on LUN {lun}");
        }
        let (o, _) = t.run_as(&b, &TUR, &[]);
        assert_eq!(o.status, crate::Status::Good, "other nexus not affected");
        // INQUIRY does not consume it; the next TUR still reports it.
        table.luns_changed(&t.me);
        let o = t.run_full_table(&table, &t.me, 0, &[0x12, 0, 0, 0, 36, 0]);
        assert_eq!(o.status, crate::Status::Good);
        let o = t.run_full_table(&table, &t.me, 0, &TUR);
        assert_eq!(sense_of(&o), Some((6, 0x3f, 0x0e)));
    }

    /// The Data-Out a write CDB asks for, which fabrics use for residuals.
    #[test]
    fn data_out_len_of_write_cdbs() {
        use std::sync::Arc;
        let store = Arc::new(backstore::NullBackstore::new(1 << 20));
        let mut opts = crate::DeviceOptions::new("n", "00000000-0000-4000-8000-000000000000");
        opts.block_size = 4096;
        let luns = LunTable {
            luns: vec![Lun {
                id: 3,
                device: crate::Device::new(opts, store),
                write_protect: false,
            }],
        };
        let cases: &[(&[u8], Option<u64>)] = &[
            (&[0x0a, 0, 0, 0, 0, 0], Some(256 * 4096)),
            (&[0x0a, 0, 0, 0, 2, 0], Some(2 * 4096)),
            (&[0x2a, 0, 0, 0, 0, 0, 0, 0, 3, 0], Some(3 * 4096)),
            (&[0x2e, 0, 0, 0, 0, 0, 0, 1, 0, 0], Some(256 * 4096)),
            (&[0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0], Some(5 * 4096)),
            (
                &[0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0],
                Some(7 * 4096),
            ),
            (
                &[0x8b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0],
                Some(4 * 4096),
            ),
            (
                &[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
                Some(2 * 4096),
            ),
            (&[0x2a, 0, 0], None), // truncated CDB
            (&[0x12, 0, 0, 0, 36, 0], None),
            (&[], None),
        ];
        for (cdb, want) in cases {
            assert_eq!(luns.data_out_len(3, cdb), *want, "{cdb:02x?}");
        }
        // An unmapped LUN has no block size to count with.
        assert_eq!(
            luns.data_out_len(9, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            None
        );
    }

    /// Growing the backstore under a logged-in nexus: the next command of
    /// every nexus gets 2A/09 once, READ CAPACITY 10/16 report the new
    /// size at once, and an LBA past the old end becomes addressable.
    #[test]
    fn resize_queues_capacity_data_has_changed() {
        use std::sync::Arc;
        let t = Rig::new();
        let store = Arc::new(backstore::RamBackstore::new(1 << 20).unwrap());
        let dev = crate::Device::new(
            crate::DeviceOptions::new("r", "00000000-0000-4000-8000-000000000001"),
            store,
        );
        let table = LunTable {
            luns: vec![Lun {
                id: 0,
                device: dev.clone(),
                write_protect: false,
            }],
        };
        let exec = |n: &crate::Nexus, cdb: &[u8], data_out: &[u8], want: u32| {
            let mut buf = Vec::new();
            let cmd = crate::Command {
                cdb,
                data_out,
                expected_len: want.max(data_out.len() as u32),
                attr: crate::TaskAttr::Simple,
            };
            let o = table.execute(n, 0, &cmd, &mut buf);
            (o, buf)
        };
        const CAP10: [u8; 10] = [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        const CAP16: [u8; 16] = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
        const WRITE_LBA_2048: [u8; 10] = [0x2a, 0, 0, 0, 0x08, 0, 0, 0, 1, 0];
        let b = t.nexus(7);
        for n in [&t.me, &b] {
            let (o, _) = exec(n, &TUR, &[], 0);
            assert_eq!(sense_of(&o), Some((6, 0x29, 0x00)), "power-on first");
        }
        let (o, cap) = exec(&t.me, &CAP10, &[], 8);
        assert_eq!(o.status, crate::Status::Good);
        assert_eq!(&cap[..4], &2047u32.to_be_bytes());
        let (o, _) = exec(&t.me, &WRITE_LBA_2048, &[7u8; 512], 0);
        assert_eq!(sense_of(&o), Some((5, 0x21, 0x00)), "LBA 2048 out of range");

        let e = dev.resize((4 << 20) + 100).unwrap_err();
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::InvalidInput,
            "not whole blocks"
        );
        assert!(dev.resize(512 << 10).is_err(), "shrink refused");
        dev.resize(4 << 20).unwrap();
        assert_eq!(dev.num_blocks(), 8192);
        // INQUIRY does not consume the UA; the next other command gets it, once.
        let (o, _) = exec(&t.me, &[0x12, 0, 0, 0, 36, 0], &[], 36);
        assert_eq!(o.status, crate::Status::Good);
        let (o, _) = exec(&t.me, &CAP10, &[], 8);
        assert_eq!(
            sense_of(&o),
            Some((6, 0x2a, 0x09)),
            "CAPACITY DATA HAS CHANGED"
        );
        let (o, cap) = exec(&t.me, &CAP10, &[], 8);
        assert_eq!(o.status, crate::Status::Good);
        assert_eq!(&cap[..4], &8191u32.to_be_bytes());
        let (o, _) = exec(&b, &TUR, &[], 0);
        assert_eq!(sense_of(&o), Some((6, 0x2a, 0x09)), "second nexus too");
        let (o, cap) = exec(&b, &CAP16, &[], 32);
        assert_eq!(o.status, crate::Status::Good);
        assert_eq!(&cap[..8], &8191u64.to_be_bytes());
        let (o, _) = exec(&t.me, &WRITE_LBA_2048, &[7u8; 512], 0);
        assert_eq!(o.status, crate::Status::Good, "LBA 2048 now inside");
        // The mode parameter block descriptor carries the size too.
        let (o, ms) = exec(&t.me, &[0x1a, 0, 0x3f, 0, 255, 0], &[], 255);
        assert_eq!(o.status, crate::Status::Good);
        assert_eq!(ms[3], 8, "block descriptor length");
        assert_eq!(&ms[4..8], &8192u32.to_be_bytes(), "NUMBER OF BLOCKS");
        // The same size again changes nothing and queues nothing.
        dev.resize(4 << 20).unwrap();
        let (o, _) = exec(&t.me, &TUR, &[], 0);
        assert_eq!(o.status, crate::Status::Good);
    }
}
