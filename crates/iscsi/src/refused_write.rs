//! A streamed-write candidate its checks refused (`streamed_write`:
//! `LunTable::check_streamed_write` answered, e.g. LBA out of range or a
//! reservation conflict): none of its data ever reaches the medium.
//!
//! With no unsolicited Data-Out still to come it is answered at once. With
//! some still to come (InitialR2T=No and less immediate data than the
//! first burst), the answer waits until that data is in: the Data-Out
//! PDUs are checked as any (DataSN, offsets) and their data dropped, no
//! R2T is sent, and the final unsolicited Data-Out sends the answer. Not
//! at once, because an initiator that has its status stops sending the
//! task's data (Linux drops what it had not sent yet), so the target
//! could not know when its last Data-Out has come, and may reuse the tag
//! for a new command while the old one's data is still on the way: the
//! task would linger, or the new command would be refused as a task in
//! progress. Waiting costs only the first burst's own transfer time (at
//! most FirstBurstLength, already in flight).

use target_core::Outcome;

use crate::dataout::WriteTask;
use crate::session::Session;
use crate::streamed_write::Start;
use crate::txq::TxQueue;

impl Session {
    /// `t`'s checks refused it with `out`: answer now if no unsolicited
    /// Data-Out is still to come (`Start::Answered`: the task is done),
    /// else keep the answer until that data is in (`Start::Refused`).
    pub(crate) fn refuse(&mut self, t: &mut WriteTask, tx: &mut TxQueue, out: Outcome) -> Start {
        if t.unsol_done() {
            self.answer_refused(t, tx, out);
            Start::Answered
        } else {
            t.refusal = Some(out);
            Start::Refused
        }
    }

    /// A Data-Out (checked, its data in `t.buf`) for a refused task: once
    /// the unsolicited data is all in, answer it and drop the task.
    pub(crate) fn drain_refused(&mut self, mut t: WriteTask, tx: &mut TxQueue) {
        if !t.unsol_done() {
            // Nothing of it is used: hold no more than one PDU's worth.
            t.base += t.buf.len();
            t.buf.clear();
            self.tasks.push(t);
            return;
        }
        if let Some(out) = t.refusal.take() {
            self.answer_refused(&t, tx, out);
        }
        tx.recycle(t.buf);
        // Its R2T lane is free.
        self.resume_r2ts(tx);
    }

    fn answer_refused(&mut self, t: &WriteTask, tx: &mut TxQueue, out: Outcome) {
        let lun = scsi::lun::decode(t.cmd.lun);
        let buf = tx.take_buf();
        let cmd = t.cmd;
        self.count_io(lun, &cmd, 0, 0);
        self.respond(tx, &cmd, t.cdb.as_slice(), 0, out, buf, 0);
    }
}
