//! Write tasks waiting for Data-Out (RFC 7143 §10.7-10.8): immediate data,
//! unsolicited Data-Out up to FirstBurstLength, then R2Ts of at most
//! MaxBurstLength with up to MaxOutstandingR2T in flight. Data arrives in
//! order (DataPDUInOrder and DataSequenceInOrder are always Yes), so it is
//! appended to a pooled buffer and every offset, length and DataSN is
//! checked against that. A wrong DataSN poisons the task: that PDU and all
//! later data for the task are dropped and the command never runs (at ERL 0
//! the initiator recovers by timeout, abort or a new session; closing the
//! connection instead races with libiscsi's reconnect). A streamed write
//! ends the same way: its stream is closed there (`end_broken_stream`),
//! its pieces written so far stay (as for any aborted WRITE). An offset or
//! length outside what was asked for is a protocol error that ends the
//! connection.
//!
//! Memory: the write data a connection gathers is what it asked for. R2Ts
//! are issued while the tasks' granted bytes (immediate, unsolicited and
//! solicited data, [`WriteTask::granted`]) stay within [`CONN_WRITE_BYTES`];
//! past that only the oldest task (lowest CmdSN) gets more, so it always
//! completes and frees its share, and the others resume as tasks leave
//! (`resume_r2ts`). With the command window (tasks hold slots) this bounds
//! gathered data at CONN_WRITE_BYTES + one write + window x FirstBurstLength.
//!
//! Order: only the [`R2T_LANES`] oldest tasks waiting for data get R2Ts;
//! a younger one gets its first when an older one has all its data.

use iscsi_wire::bhs::sn_lt;
use iscsi_wire::request::{DataOut, ScsiCommand};
use iscsi_wire::response::{R2t, RejectReason};
use iscsi_wire::{Bhs, Frame, RESERVED_TAG};

use crate::session::{Action, Session};
use crate::txq::TxQueue;

/// Write data one connection may solicit with R2Ts for tasks other than
/// its oldest (see the module comment).
pub const CONN_WRITE_BYTES: usize = 64 << 20;

/// Write tasks of a connection that get R2Ts at once: the oldest ones;
/// younger ones wait for them (`resume_r2ts`). An initiator answers R2Ts
/// in the order it has queued its data (libiscsi: one FIFO, bursts of at
/// most 256 KiB, one R2T per task), so R2Ts for every task make all of
/// them advance one burst per round and each spends the whole time of the
/// slowest gathering its data; a few at a time finish theirs, and go to
/// the backstore, sooner.
pub const R2T_LANES: usize = 2;

/// Immediate data of a write: in the receive buffer, or already in a task
/// buffer (received there straight from the socket, `conn`).
pub enum Imm<'a> {
    Slice(&'a [u8]),
    Placed(Vec<u8>),
    /// Still on the socket, this many bytes: the connection receives them
    /// right after the command was handled (`landed_write`: into the
    /// medium once the write's checks passed).
    Pending(usize),
}

/// A CDB: 16 bytes inline, longer ones (extended CDB AHS) on the heap.
pub use target_core::engine::Cdb as CdbStore;

struct R2tState {
    ttt: u32,
    offset: u32,
    len: u32,
    got: u32,
    datasn: u32,
}

pub struct WriteTask {
    pub itt: u32,
    pub cmd: ScsiCommand,
    pub cdb: CdbStore,
    /// The data received and not handed on yet: Data-Out bytes from
    /// `base` on (`base` moves only for a streamed write, whose pieces
    /// leave as they are complete, and a refused one, whose data is
    /// dropped as it comes).
    pub buf: Vec<u8>,
    pub(crate) base: usize,
    /// A streamed write (`streamed_write`): its data goes to the backstore
    /// burst by burst; dropping it ends the task's data.
    pub(crate) stream: Option<target_core::engine::WriteStream>,
    unsol_left: u32,
    unsol_datasn: u32,
    unsol_done: bool,
    next_r2t_offset: u32,
    r2ts: Vec<R2tState>,
    r2tsn: u32,
    /// A DataSN error happened, or its stream was sealed by an abort:
    /// drop all data, never execute.
    pub(crate) poisoned: bool,
    /// Refused by its streamed-write checks while unsolicited Data-Out
    /// was still to come: the answer, sent once that data is in (and
    /// dropped); no R2T is ever sent for it (`refused_write`).
    pub(crate) refusal: Option<target_core::Outcome>,
    /// Immediate data still on the socket ([`Imm::Pending`]): the
    /// connection takes it before any other PDU.
    pub(crate) imm_pending: usize,
    /// A streamed write with a burst in `buf` to hand to its stream once
    /// the R2Ts it earned are sent (`streamed_write::Session::feed_due`).
    pub(crate) feed_due: bool,
}

impl WriteTask {
    pub fn lun(&self) -> [u8; 8] {
        self.cmd.lun
    }

    /// No unsolicited Data-Out is still to come.
    pub(crate) fn unsol_done(&self) -> bool {
        self.unsol_done
    }

    /// Holds a command window slot of its own: a streamed write's slot is
    /// its engine task's (`Offload::live`), which must not count twice.
    pub(crate) fn holds_slot(&self) -> bool {
        self.stream.is_none()
    }

    /// Data-Out bytes received so far.
    pub(crate) fn received(&self) -> usize {
        self.base + self.buf.len()
    }

    /// All its data is in (a streamed write whose last burst waits to be
    /// fed: `feed_due`).
    pub(crate) fn all_in(&self) -> bool {
        self.received() as u64 >= u64::from(self.cmd.expected_data_len)
    }

    /// Bytes the initiator may send for this task without being asked
    /// again: what it has, plus the unsolicited data still allowed, or up
    /// to the end of the last R2T.
    fn granted(&self) -> usize {
        if self.poisoned {
            0
        } else if !self.unsol_done {
            self.received() + self.unsol_left as usize
        } else {
            self.next_r2t_offset as usize
        }
    }

    /// A write task of `itt` on LUN 0 that received nothing yet, streaming
    /// into `stream` if given (unit tests of the task list's users).
    #[cfg(test)]
    pub(crate) fn for_test(itt: u32, stream: Option<target_core::engine::WriteStream>) -> Self {
        let mut cmd = ScsiCommand::parse(&Bhs::default());
        cmd.itt = itt;
        WriteTask {
            itt,
            cmd,
            cdb: CdbStore::from_slice(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0]),
            buf: Vec::new(),
            base: 0,
            stream,
            unsol_left: 0,
            unsol_datasn: 0,
            unsol_done: true,
            next_r2t_offset: 0,
            r2ts: Vec::new(),
            r2tsn: 0,
            poisoned: false,
            refusal: None,
            imm_pending: 0,
            feed_due: false,
        }
    }

    /// Waits for an R2T it was not given for lack of budget.
    fn deferred(&self, max_out: usize) -> bool {
        !self.poisoned
            && self.unsol_done
            && self.r2ts.len() < max_out
            && self.next_r2t_offset < self.cmd.expected_data_len
    }
}

pub(crate) enum DataErr {
    /// Wrong DataSN: the task can no longer complete correctly.
    Sequence,
    /// Offset/length outside what was asked for: Reject, then close.
    Protocol,
}

impl Session {
    /// A write whose data is not all in the command PDU.
    pub fn start_write(
        &mut self,
        c: ScsiCommand,
        cdb: CdbStore,
        imm: Imm<'_>,
        tx: &mut TxQueue,
    ) -> Action {
        let edtl = c.expected_data_len;
        let (buf, pending) = match imm {
            Imm::Slice(imm) => {
                let mut buf = tx.take_buf();
                buf.extend_from_slice(imm);
                (buf, 0)
            }
            Imm::Placed(buf) => (buf, 0),
            Imm::Pending(n) => (tx.take_buf(), n),
        };
        let got = (buf.len() + pending) as u32;
        let unsol_left = if !self.params.initial_r2t && !c.final_bit {
            self.params.first_burst_length.min(edtl).saturating_sub(got)
        } else {
            0
        };
        let mut t = WriteTask {
            itt: c.itt,
            cmd: c,
            cdb,
            buf,
            unsol_left,
            unsol_datasn: 0,
            unsol_done: unsol_left == 0,
            next_r2t_offset: got,
            r2ts: Vec::new(),
            r2tsn: 0,
            poisoned: false,
            base: 0,
            stream: None,
            refusal: None,
            imm_pending: pending,
            feed_due: false,
        };
        if self.try_stream(&mut t, tx) == crate::streamed_write::Start::Answered {
            tx.recycle(t.buf);
            return Action::Continue;
        }
        if t.unsol_done {
            self.issue_r2ts(&mut t, tx);
        }
        self.tasks.push(t);
        Action::Continue
    }

    /// A SCSI Command whose immediate data the connection received
    /// straight into `buf` (no digests, no AHS; `conn`): the same as
    /// `handle` for the framed PDU, without the copy out of the receive
    /// buffer. Every check runs as there, before the data is used.
    pub fn handle_command_placed(&mut self, bhs: &Bhs, buf: Vec<u8>, tx: &mut TxQueue) -> Action {
        let f = Frame {
            bhs: *bhs,
            ahs: &[],
            data: &[],
            data_digest_ok: true,
            total_len: iscsi_wire::BHS_LEN + buf.len(),
        };
        let action = self.command(&f, Some(crate::session::Placed::Buf(buf)), tx);
        self.release_cmdsn();
        action
    }

    /// A SCSI Command whose `n` bytes of immediate data are still on the
    /// socket (`landed_write`): handled as [`Session::handle_command_placed`];
    /// a write task it starts waits for them (`WriteTask::imm_pending`).
    pub fn handle_command_pending(&mut self, bhs: &Bhs, n: usize, tx: &mut TxQueue) -> Action {
        let f = Frame {
            bhs: *bhs,
            ahs: &[],
            data: &[],
            data_digest_ok: true,
            total_len: iscsi_wire::BHS_LEN + n,
        };
        let action = self.command(&f, Some(crate::session::Placed::Pending(n)), tx);
        self.release_cmdsn();
        action
    }

    /// Issue the R2Ts `t` (not in `self.tasks`) may have now.
    fn issue_r2ts(&mut self, t: &mut WriteTask, tx: &mut TxQueue) {
        let edtl = t.cmd.expected_data_len;
        let max_out = usize::from(self.params.max_outstanding_r2t.max(1));
        let burst = self.params.max_burst_length.max(512);
        if t.r2ts.len() >= max_out || t.next_r2t_offset >= edtl || t.refusal.is_some() {
            return;
        }
        let ahead = self
            .tasks
            .iter()
            .filter(|o| sn_lt(o.cmd.cmdsn, t.cmd.cmdsn) && !o.poisoned && !o.all_in())
            .take(R2T_LANES)
            .count();
        if ahead >= R2T_LANES {
            tracing::trace!(
                itt = t.itt,
                "R2T deferred: older writes gather their data first"
            );
            return;
        }
        let oldest = ahead == 0;
        let others: usize = if oldest {
            0
        } else {
            self.tasks.iter().map(WriteTask::granted).sum()
        };
        while t.r2ts.len() < max_out && t.next_r2t_offset < edtl {
            let len = burst.min(edtl - t.next_r2t_offset);
            if !oldest && others + t.granted() + len as usize > CONN_WRITE_BYTES {
                tracing::trace!(itt = t.itt, "R2T deferred: write data budget in use");
                break;
            }
            let ttt = self.alloc_ttt();
            let r = R2t {
                lun: t.cmd.lun,
                itt: t.itt,
                ttt,
                sn: self.sn_peek(),
                r2tsn: t.r2tsn,
                buffer_offset: t.next_r2t_offset,
                desired_len: len,
            };
            let mut b = Bhs::default();
            r.write_to(&mut b);
            tx.push_pdu(&b, &[], self.digests);
            t.r2ts.push(R2tState {
                ttt,
                offset: t.next_r2t_offset,
                len,
                got: 0,
                datasn: 0,
            });
            t.r2tsn = t.r2tsn.wrapping_add(1);
            t.next_r2t_offset += len;
        }
    }

    pub fn data_out(&mut self, f: &Frame<'_>, tx: &mut TxQueue) -> Action {
        let d = DataOut::parse(&f.bhs);
        let Some(idx) = self.tasks.iter().position(|t| t.itt == d.itt) else {
            // Most likely the task was aborted; its late data is discarded.
            tracing::debug!(itt = d.itt, "Data-Out for an unknown task, discarded");
            return Action::Continue;
        };
        if self.tasks[idx].poisoned {
            return Action::Continue;
        }
        let mut t = self.tasks.swap_remove(idx);
        let at = t.received();
        let res = self.accept_data(&mut t, &d, at, f.data.len(), tx);
        if res.is_ok() {
            t.buf.extend_from_slice(f.data);
        }
        self.finish_data(t, &f.bhs, res, tx)
    }

    /// The write task a Data-Out with header `bhs` continues, taken out of
    /// the task list, when its data can be received straight into the
    /// task's buffer: the task waits for data and this PDU starts exactly
    /// where the buffer ends (every other case takes the framed path, which
    /// reports it). Give it back with [`Session::data_out_placed`].
    pub fn claim_data_out(&mut self, bhs: &Bhs) -> Option<WriteTask> {
        let d = DataOut::parse(bhs);
        let idx = self.tasks.iter().position(|t| {
            t.itt == d.itt && !t.poisoned && t.received() == d.buffer_offset as usize
        })?;
        Some(self.tasks.swap_remove(idx))
    }

    /// A Data-Out whose `len` data bytes the connection received straight
    /// into `t.buf` at `base` (no copy through the receive buffer): the same
    /// checks and outcome as [`Session::data_out`].
    pub fn data_out_placed(
        &mut self,
        mut t: WriteTask,
        bhs: &Bhs,
        base: usize,
        tx: &mut TxQueue,
    ) -> Action {
        let d = DataOut::parse(bhs);
        let len = t.buf.len() - base;
        let at = t.base + base;
        let res = self.accept_data(&mut t, &d, at, len, tx);
        if res.is_err() {
            t.buf.truncate(base);
        }
        self.finish_data(t, bhs, res, tx)
    }

    /// After a Data-Out: poison, close or, once all data is in, execute.
    pub(crate) fn finish_data(
        &mut self,
        mut t: WriteTask,
        bhs: &Bhs,
        res: Result<(), DataErr>,
        tx: &mut TxQueue,
    ) -> Action {
        let d = DataOut::parse(bhs);
        match res {
            Ok(()) => {}
            Err(DataErr::Sequence) => {
                tracing::warn!(
                    itt = d.itt,
                    datasn = d.datasn,
                    "Data-Out with a wrong DataSN: task will not run"
                );
                t.poisoned = true;
                let ended = self.end_broken_stream(&mut t, tx);
                let buf = std::mem::take(&mut t.buf);
                tx.recycle(buf);
                self.tasks.push(t);
                return if ended {
                    Action::Continue
                } else {
                    Action::Close
                };
            }
            Err(DataErr::Protocol) => {
                tracing::warn!(
                    itt = d.itt,
                    offset = d.buffer_offset,
                    len = bhs.data_segment_len(),
                    "Data-Out outside the expected range, closing (ERL 0)"
                );
                self.reject(tx, RejectReason::PROTOCOL_ERROR, bhs);
                tx.recycle(t.buf);
                return Action::Close;
            }
        }
        if t.refusal.is_some() {
            self.drain_refused(t, tx);
            return Action::Continue;
        }
        let all_in = t.received() as u64 >= u64::from(t.cmd.expected_data_len);
        if t.stream.is_some() {
            // A burst ends with its final Data-Out; the last one ends the
            // data. Written once the R2Ts it earned are out (`feed_due`).
            t.feed_due |= d.final_bit || all_in;
            self.tasks.push(t);
            if all_in {
                self.resume_r2ts(tx);
            }
            return Action::Continue;
        }
        if all_in {
            let buf = std::mem::take(&mut t.buf);
            self.execute_owned(tx, &t.cmd, t.cdb.as_slice(), buf);
            self.resume_r2ts(tx);
        } else {
            self.tasks.push(t);
        }
        Action::Continue
    }

    /// Check a Data-Out of `len` bytes against the task which had received
    /// `base` bytes before it, and advance the task's sequence state; the
    /// caller appends (or has placed) the data.
    pub(crate) fn accept_data(
        &mut self,
        t: &mut WriteTask,
        d: &DataOut,
        base: usize,
        len: usize,
        tx: &mut TxQueue,
    ) -> Result<(), DataErr> {
        let len = u32::try_from(len).map_err(|_| DataErr::Protocol)?;
        let check_sn = |got: u32, want: u32| {
            if got == want {
                Ok(())
            } else {
                Err(DataErr::Sequence)
            }
        };
        if d.ttt == RESERVED_TAG {
            if t.unsol_done {
                return Err(DataErr::Protocol);
            }
            check_sn(d.datasn, t.unsol_datasn)?;
            if d.buffer_offset as usize != base {
                return Err(DataErr::Protocol);
            }
            if len > t.unsol_left {
                return Err(DataErr::Protocol);
            }
            t.unsol_left -= len;
            t.unsol_datasn = t.unsol_datasn.wrapping_add(1);
            if d.final_bit {
                t.unsol_done = true;
                t.next_r2t_offset = d.buffer_offset + len;
                self.issue_r2ts(t, tx);
            } else if t.unsol_left == 0 {
                return Err(DataErr::Protocol);
            }
            return Ok(());
        }
        let Some(ri) = t.r2ts.iter().position(|r| r.ttt == d.ttt) else {
            return Err(DataErr::Protocol);
        };
        let r = &mut t.r2ts[ri];
        check_sn(d.datasn, r.datasn)?;
        if d.buffer_offset as usize != base
            || d.buffer_offset != r.offset + r.got
            || len > r.len - r.got
        {
            return Err(DataErr::Protocol);
        }
        r.got += len;
        r.datasn = r.datasn.wrapping_add(1);
        if d.final_bit || r.got == r.len {
            if r.got != r.len {
                return Err(DataErr::Protocol);
            }
            t.r2ts.remove(ri);
            self.issue_r2ts(t, tx);
        }
        Ok(())
    }

    /// A task left: tasks whose R2Ts were deferred may get them now. (In
    /// the common case no task waits and this is one pass of checks.)
    pub fn resume_r2ts(&mut self, tx: &mut TxQueue) {
        let max_out = usize::from(self.params.max_outstanding_r2t.max(1));
        for i in 0..self.tasks.len() {
            if !self.tasks[i].deferred(max_out) {
                continue;
            }
            // Out of the list while it is considered (as everywhere), then
            // back in its place.
            let mut t = self.tasks.swap_remove(i);
            self.issue_r2ts(&mut t, tx);
            self.tasks.push(t);
            let last = self.tasks.len() - 1;
            self.tasks.swap(i, last);
        }
    }

    /// Drop the write task at `i` of `self.tasks` (ABORT TASK).
    pub fn drop_task(&mut self, i: usize, tx: &mut TxQueue) {
        let t = self.tasks.swap_remove(i);
        tx.recycle(t.buf);
        self.resume_r2ts(tx);
    }

    /// Drop every task waiting for data (logout, warm/cold reset).
    pub fn drop_all_tasks(&mut self, tx: &mut TxQueue) {
        for t in self.tasks.drain(..) {
            tx.recycle(t.buf);
        }
    }

    /// Drop the tasks of one LUN (ABORT/CLEAR TASK SET, LUN RESET).
    pub fn drop_lun_tasks(&mut self, lun: [u8; 8], tx: &mut TxQueue) {
        let mut i = 0;
        while i < self.tasks.len() {
            if self.tasks[i].lun() == lun {
                let t = self.tasks.swap_remove(i);
                tx.recycle(t.buf);
            } else {
                i += 1;
            }
        }
        self.resume_r2ts(tx);
    }
}
