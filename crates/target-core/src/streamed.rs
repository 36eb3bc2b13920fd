//! Streamed writes, the core's half: "checks now, medium later". A WRITE
//! whose data comes in several bursts, on an LU whose backstore asks for
//! it ([`backstore::Backstore::streams_writes`]: an RBD image, where a
//! write's milliseconds in the cluster dwarf its data phase), is checked
//! when the command arrives, before any of its data: every gate
//! [`LunTable::execute`] passes a WRITE through before the backstore call
//! (unit attention, ALUA state, reservations, sanitize, medium, write
//! protection, PROTECT field, LBA range, transfer length, a failed flush
//! for a durable write; `dispatch::prepare_rw`, the asynchronous path's
//! own checks). A write that passes becomes a [`WritePlan`], which the
//! fabric turns into an `engine::WriteStream` and feeds each burst as it
//! lands. Anything else (COMPARE AND WRITE, WRITE AND VERIFY, WRITE SAME,
//! WRITE(6), ORDERED / HEAD OF QUEUE / ACA tasks, other backstores) is
//! [`StreamCheck::Unsuited`]: the fabric gathers all data and runs it as
//! before.

use std::sync::Arc;

use scsi::cdb::Cdb;
use scsi::opcode as op;

use crate::dispatch::{self, GOOD};
use crate::rw::Access;
use crate::stats::{Counters, Started};
use crate::{Device, LunTable, Nexus, Outcome, TaskAttr};

/// A WRITE that passed its checks: where its data goes.
pub struct WritePlan {
    pub(crate) dev: Arc<Device>,
    /// Byte offset on the medium of the first Data-Out byte.
    pub(crate) offset: u64,
    /// Data-Out bytes the medium takes (whole blocks); later ones are
    /// dropped, as the gathered path drops them.
    pub(crate) len: usize,
    /// Durable before GOOD (FUA, or the write cache off): one flush after
    /// the last piece.
    pub(crate) fua: bool,
    /// Counted in the LU's statistics from the command's arrival.
    pub(crate) started: Started<DevStats>,
    /// The LU's unit-attention count when the checks ran (`ua::raised`):
    /// a piece that finds it moved must have them run again
    /// ([`LunTable::recheck_streamed_write`]) before it reaches the medium.
    pub(crate) fence: u64,
}

/// The statistics of a device, owned (a completion outlives the command's
/// borrow of its LUN table).
pub(crate) struct DevStats(pub(crate) Arc<Device>);

impl AsRef<Counters> for DevStats {
    fn as_ref(&self) -> &Counters {
        &self.0.state.stats
    }
}

/// What [`LunTable::check_streamed_write`] decided.
pub enum StreamCheck {
    /// Passed every check: its data may go to the medium piece by piece.
    Stream(WritePlan),
    /// Answered now (refused by a check, or nothing to write): none of its
    /// data reaches the medium.
    Answer(Outcome),
    /// Not for streaming: gather all its data and run it as usual.
    Unsuited,
}

impl LunTable {
    /// The LU and parsed CDB of a SIMPLE WRITE(10/12/16) to `lun_id`, the
    /// writes checked when they arrive; `None` for anything else.
    fn simple_write(&self, lun_id: u64, cdb: &[u8], attr: TaskAttr) -> Option<(&crate::Lun, Cdb)> {
        if attr != TaskAttr::Simple {
            return None;
        }
        let lun = self.find(lun_id)?;
        let c = Cdb::new(cdb).ok()?;
        matches!(c.opcode(), op::WRITE_10 | op::WRITE_12 | op::WRITE_16).then_some((lun, c))
    }

    /// A WRITE(10/12/16) of `data_out_len` bytes whose data is still to
    /// come: whether it may be streamed to the backstore (see the module
    /// comment), after its checks. Nothing is checked (no unit attention
    /// consumed) unless the answer is `Stream` or `Answer`.
    pub fn check_streamed_write(
        &self,
        nexus: &Nexus,
        lun_id: u64,
        cdb: &[u8],
        attr: TaskAttr,
        data_out_len: u32,
    ) -> StreamCheck {
        let Some((lun, c)) = self.simple_write(lun_id, cdb, attr) else {
            return StreamCheck::Unsuited;
        };
        let b = &lun.device.backstore;
        if !(b.streams_writes() || b.lands_writes() || b.streams_large_writes()) {
            return StreamCheck::Unsuited;
        }
        let started = lun.device.state.stats.begin(c.opcode());
        // Before the checks: a condition raised while they run is seen.
        let fence = lun.device.state.ua.raised();
        match dispatch::prepare_rw(self, nexus, lun, c, data_out_len as usize) {
            Ok(Some(Access::Write { offset, len, fua })) => StreamCheck::Stream(WritePlan {
                dev: Arc::clone(&lun.device),
                offset,
                len,
                fua,
                started: started.hand_to(DevStats(Arc::clone(&lun.device))),
                fence,
            }),
            // A READ cannot come out of a WRITE's CDB; nothing to write
            // (zero blocks) is GOOD, as the gathered path answers.
            Ok(_) => {
                started.end(&GOOD, 0, 0);
                StreamCheck::Answer(GOOD)
            }
            Err(e) => {
                let out = dispatch::outcome_for(&e);
                started.end(&out, 0, 0);
                StreamCheck::Answer(out)
            }
        }
    }

    /// A WRITE(10/12/16) whose Expected Data Transfer Length is above the
    /// LU's maximum transfer length (Block Limits VPD), checked when the
    /// command arrives, before any of its data is solicited: `Some` is
    /// its answer (the checks in the order a gathered write would meet
    /// them: a pending unit attention, then the transfer length's INVALID
    /// FIELD IN CDB, ...). A gathered write would first draw all of its
    /// data with R2Ts (16 MiB of Data-Out for a 16 MiB WRITE) only to
    /// drop it. `None` (the cheap common case, or a write whose CDB
    /// passes after all): gather it as usual.
    pub fn check_oversized_write(
        &self,
        nexus: &Nexus,
        lun_id: u64,
        cdb: &[u8],
        attr: TaskAttr,
        data_out_len: u32,
    ) -> Option<Outcome> {
        if u64::from(data_out_len) <= crate::device::MAX_TRANSFER_BYTES {
            return None;
        }
        let (lun, c) = self.simple_write(lun_id, cdb, attr)?;
        let opcode = c.opcode();
        // Passed (the CDB asks for no more than the limit: an overflow the
        // gathered path answers with its residual): gather it, counted
        // when it runs.
        let e = dispatch::prepare_rw(self, nexus, lun, c, data_out_len as usize).err()?;
        let out = dispatch::outcome_for(&e);
        lun.device.state.stats.begin(opcode).end(&out, 0, 0);
        Some(out)
    }

    /// Run the checks of a streamed write again (the CDB and length it was
    /// started with) because a unit attention was raised on its LU since
    /// they ran (`WriteStream::fenced`): a reset, a preemption, an ALUA
    /// change. `Ok`: the write may go on, with the count to remember
    /// (`WriteStream::checked`); `Err`: its answer (the unit attention
    /// itself when it was this nexus's, as a gathered write would get it
    /// once its data is in), and none of its remaining data may land.
    pub fn recheck_streamed_write(
        &self,
        nexus: &Nexus,
        lun_id: u64,
        cdb: &[u8],
        data_out_len: u32,
    ) -> Result<u64, Outcome> {
        let lun = self
            .find(lun_id)
            .ok_or_else(|| dispatch::outcome_for(&crate::error::CmdError::LunNotSupported))?;
        // It parsed when the write started; a CDB cannot change since.
        let c = Cdb::new(cdb)
            .map_err(|_| dispatch::outcome_for(&crate::error::CmdError::InvalidOpcode))?;
        let fence = lun.device.state.ua.raised();
        match dispatch::prepare_rw(self, nexus, lun, c, data_out_len as usize) {
            Ok(_) => Ok(fence),
            Err(e) => Err(dispatch::outcome_for(&e)),
        }
    }
}
