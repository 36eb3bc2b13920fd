//! Streamed writes, the iSCSI half: a WRITE whose data comes in several
//! bursts, on an LU whose backstore takes its data piece by piece
//! (`Backstore::streams_writes`: user:rbd; `streams_large_writes`: the
//! ramdisk, for WRITEs of at least [`LAND_MIN`]), is checked when the command
//! arrives (`LunTable::check_streamed_write`) and then written burst by
//! burst: the immediate data at once, each R2T'd burst when its final
//! Data-Out is in, each as its own asynchronous backstore write
//! (`engine::WriteStream`). The command is answered, through the engine
//! queue like any asynchronous command, once its last piece completed.
//!
//! Why: an initiator that takes one R2T at a time with 256 KiB bursts
//! (libiscsi, QEMU's driver) needs three R2T round trips for a 1 MiB write,
//! ~2 ms at QD8 behind its own queue; only then did librbd see the write,
//! for its ~4-5 ms. Streamed, the cluster works on the first bursts while
//! the rest arrives (BENCHMARKS.md, "Session 10 ... s10-rbdwrite").
//!
//! Unsolicited Data-Out still to come (InitialR2T=No) streams too: it
//! ends the first burst. A write refused by its checks is answered at
//! once when no unsolicited Data-Out is still to come (nothing more
//! arrives for it: no R2T was sent), else once that data is in, dropped
//! (`refused_write`).
//!
//! A task's stream ends (is sealed) when all its data is in, or when the
//! task is dropped (task management, logout, connection loss): the
//! engine's waits (`abort_flights`) then see it finish once its pieces in
//! flight complete.

use iscsi_wire::request::Attr;
use target_core::engine::{TaskInfo, WriteStream};
use target_core::{StreamCheck, TaskAttr};

use crate::dataout::WriteTask;
use crate::session::Session;
use crate::txq::TxQueue;

/// Smallest piece handed to the backstore before the data's end: smaller
/// bursts (a small MaxBurstLength) gather up to it, so a write does not
/// become many tiny backstore writes.
pub const PIECE_MIN: usize = 64 * 1024;

/// Smallest WRITE a LU that only lands data (`Backstore::lands_writes`,
/// not `streams_writes`) or takes large writes in pieces
/// (`Backstore::streams_large_writes`: the ramdisk) streams: landing pays
/// per byte, a stream costs an
/// engine task and a completion per command, and a small write's data
/// mostly comes with its header anyway (`landed_write`).
pub const LAND_MIN: usize = 256 * 1024;

/// Whether a WRITE of `edtl` bytes to backstore `b` streams (when its
/// task attribute and checks let it).
pub(crate) fn streams(b: &dyn backstore::Backstore, edtl: usize) -> bool {
    b.streams_writes() || ((b.lands_writes() || b.streams_large_writes()) && edtl >= LAND_MIN)
}

/// What [`Session::try_stream`] did with a write task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Gathered as before.
    Gather,
    /// Streamed: its data goes to the backstore as it lands.
    Streaming,
    /// Refused by a check (or nothing to write): answered now; the task
    /// is done.
    Answered,
    /// Refused by a check while unsolicited Data-Out is still to come:
    /// answered once that is in (`refused_write`); the task waits for it.
    Refused,
}

impl Session {
    /// A new write task (its immediate data in, unsolicited Data-Out
    /// perhaps still to come): start streaming it if its LU wants that and
    /// its checks pass.
    pub(crate) fn try_stream(&mut self, t: &mut WriteTask, tx: &mut TxQueue) -> Start {
        if !matches!(t.cmd.attr, Attr::Simple | Attr::Untagged) {
            return Start::Gather;
        }
        self.refresh_luns();
        let lun = scsi::lun::decode(t.cmd.lun);
        let edtl = t.cmd.expected_data_len;
        // Above the maximum transfer length: refused before any R2T, on
        // every LU (a gathered write would draw all its data first).
        if let Some(out) = self.luns.check_oversized_write(
            &self.nexus,
            lun,
            t.cdb.as_slice(),
            TaskAttr::Simple,
            edtl,
        ) {
            return self.refuse(t, tx, out);
        }
        // Cheap refusals first: no check (and no unit attention consumed)
        // for a write that will not stream.
        if !self
            .luns
            .find(lun)
            .is_some_and(|l| streams(l.device.backstore.as_ref(), edtl as usize))
            || !self.offload.may_stream(lun)
        {
            return Start::Gather;
        }
        let cdb = t.cdb.as_slice();
        match self
            .luns
            .check_streamed_write(&self.nexus, lun, cdb, TaskAttr::Simple, edtl)
        {
            StreamCheck::Unsuited => Start::Gather,
            StreamCheck::Answer(out) => self.refuse(t, tx, out),
            StreamCheck::Stream(plan) => {
                let cdb = t.cdb.clone();
                match self
                    .offload
                    .start_stream(plan, u64::from(t.itt), lun, cdb, t.cmd)
                {
                    Some(s) => {
                        t.stream = Some(s);
                        // The immediate data is the first burst, written
                        // once the R2Ts are out (`feed_due`).
                        t.feed_due = true;
                        Start::Streaming
                    }
                    None => {
                        // `may_stream` saw the sink: cannot happen. The
                        // checks ran; answer rather than write unchecked.
                        let out = target_core::Outcome {
                            status: target_core::Status::Busy,
                            sense: None,
                        };
                        self.refuse(t, tx, out)
                    }
                }
            }
        }
    }

    /// Seal the streams of the write tasks `which` selects (as the engine
    /// sees them): they take no more data, and their engine tasks finish
    /// once their pieces in flight complete, so an abort can wait for
    /// them. The tasks themselves stay until their caller drops them,
    /// poisoned: data still arriving for one is dropped, and it never runs
    /// (its buffer holds only the data after the pieces already written).
    pub(crate) fn seal_streams(&mut self, which: &impl Fn(&TaskInfo) -> bool) {
        for t in self.tasks.iter_mut() {
            if t.stream.is_none() {
                continue;
            }
            let info = TaskInfo {
                tag: u64::from(t.itt),
                lun: scsi::lun::decode(t.cmd.lun),
                attr: TaskAttr::Simple,
                long: false,
            };
            if which(&info) {
                t.stream = None;
                t.poisoned = true;
            }
        }
    }
}

impl Session {
    /// A streamed write whose Data-Out sequence broke (a wrong DataSN)
    /// ends as a gathered one does (`dataout`): it is never answered, none
    /// of its later data is written, and its task stays, poisoned, until
    /// ABORT TASK or the connection's end. Left open, its stream held an
    /// engine task that ORDERED commands waited behind; so it is sealed
    /// and its engine task aborted (its answer dropped), waited for as
    /// ABORT TASK waits, so no piece of it is in flight once this returns
    /// (a later ABORT TASK finds nothing of it to wait for). Its window
    /// slot passes to the poisoned task (`WriteTask::holds_slot`), as a
    /// gathered one holds it. False if the connection was killed
    /// meanwhile.
    pub(crate) fn end_broken_stream(&mut self, t: &mut WriteTask, tx: &mut TxQueue) -> bool {
        // Dropping the handle seals the stream.
        if t.stream.take().is_none() {
            return true;
        }
        let tag = u64::from(t.itt);
        self.abort_flights(tx, |i| i.tag == tag).is_some()
    }

    /// Hand the bursts that came in to their streams (the last one seals
    /// its stream): called after the connection sent the R2Ts those bursts
    /// earned, so the initiator sends the next ones while they are written.
    pub(crate) fn feed_due(&mut self, tx: &mut TxQueue) {
        let mut i = 0;
        while i < self.tasks.len() {
            if !self.tasks[i].feed_due {
                i += 1;
                continue;
            }
            let t = &mut self.tasks[i];
            t.feed_due = false;
            if t.stream.is_none() {
                // Sealed by an abort meanwhile: its caller drops it.
                continue;
            }
            let mut t = self.tasks.swap_remove(i);
            let all_in = t.all_in();
            feed(self, &mut t, tx, all_in);
            if all_in {
                // Sealed: the answer comes once its pieces completed.
                t.stream = None;
                tx.recycle(t.buf);
            } else {
                self.tasks.push(t);
            }
        }
    }
}

/// Hand the whole blocks gathered in `t.buf` to `t`'s stream as one piece
/// (everything when `last`), unless that is less than [`PIECE_MIN`]
/// before the end. A partial block stays for the next piece.
pub(crate) fn feed(sess: &Session, t: &mut WriteTask, tx: &mut TxQueue, last: bool) {
    let Some(s) = t.stream.as_ref() else { return };
    let have = t.buf.len();
    let cut = if last {
        have
    } else {
        have - have % s.block_size()
    };
    if cut == 0 || (!last && cut < PIECE_MIN) {
        return;
    }
    let mut piece = std::mem::take(&mut t.buf);
    // A partial block's bytes wait for the next piece in a buffer of
    // their own (rare: bursts are whole blocks).
    let rest = (cut < have).then(|| {
        let mut rest = tx.take_buf();
        rest.extend_from_slice(&piece[cut..]);
        piece.truncate(cut);
        rest
    });
    let at = t.base;
    t.base += cut;
    give(sess, t, at, piece, tx);
    // Taken after the piece was written: on a memory backstore that is
    // the buffer it was written from, still in the cache, and the next
    // burst is received into it (`WriteStream::take_spare`).
    t.buf = rest.unwrap_or_else(|| tx.take_buf());
}

/// Hand `piece`, the Data-Out bytes from `at` on, to `t`'s stream. One the
/// stream does not take because a unit attention was raised on the LU
/// since its checks ran has them run again first (`WriteStream::fenced`).
pub(crate) fn give(sess: &Session, t: &mut WriteTask, at: usize, piece: Vec<u8>, tx: &mut TxQueue) {
    let Some(s) = t.stream.as_mut() else {
        tx.recycle(piece);
        return;
    };
    let mut piece = piece;
    loop {
        match s.piece(at, piece) {
            None => {
                // Written already (a memory backstore): its buffer goes
                // back to the pool now, the next one taken (LIFO).
                if let Some(b) = s.take_spare() {
                    tx.recycle(b);
                }
                return;
            }
            Some(back) if s.fenced() && !s.failed() => {
                let (lun, edtl) = (t.cmd.lun, t.cmd.expected_data_len);
                recheck(sess, lun, t.cdb.as_slice(), edtl, s);
                piece = back;
            }
            Some(back) => {
                tx.recycle(back);
                return;
            }
        }
    }
}

/// Run a fenced stream's checks again: it goes on, or its answer is the
/// refusal and none of its remaining data reaches the medium.
pub(crate) fn recheck(sess: &Session, lun: [u8; 8], cdb: &[u8], edtl: u32, s: &mut WriteStream) {
    let lun = scsi::lun::decode(lun);
    match sess
        .luns
        .recheck_streamed_write(&sess.nexus, lun, cdb, edtl)
    {
        Ok(fence) => s.checked(fence),
        Err(out) => {
            tracing::debug!(status = ?out.status, "a streamed write refused by its checks run again");
            s.refuse(out);
        }
    }
}
