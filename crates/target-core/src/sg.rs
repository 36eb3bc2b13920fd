//! Commands whose data lives in memory the fabric lends ([`IoVecs`]): the
//! zero-copy path of vhost-user, where the Data-Out and Data-In buffers
//! are the guest's own, mapped into this process ([`LunTable::execute_sg`]).
//!
//! A READ or WRITE passes every gate [`LunTable::execute`] applies (the
//! same `prepare` the asynchronous path uses), then the backstore reads
//! into / writes from the lent segments (`Backstore::read_vectored_at`,
//! `write_vectored_at`: fileio hands them to `preadv`/`pwritev`; other
//! backstores bounce). Every other command bounces: Data-Out is copied
//! into a buffer of ours first and only that copy is parsed (the guest can
//! change its memory at any time; a parameter list checked in guest
//! memory could change between the check and the use), and its Data-In is
//! copied out afterwards. The bytes of a READ or WRITE are never looked at.

use std::cell::RefCell;

use backstore::IoVecs;
use scsi::cdb::Cdb;
use scsi::opcode as op;

use crate::dispatch::{self, GOOD};
use crate::error::CmdError;
use crate::rw::Access;
use crate::{Command, LunTable, Nexus, Outcome, TaskAttr};

/// One command with lent buffers.
pub struct SgCommand<'a> {
    pub cdb: &'a [u8],
    /// The fabric's Expected Data Transfer Length.
    pub expected_len: u32,
    pub attr: TaskAttr,
    /// All Data-Out the initiator sent.
    pub data_out: &'a IoVecs,
    /// Where Data-In goes (its length bounds what is returned).
    pub data_in: &'a IoVecs,
}

/// The answer of an [`SgCommand`].
pub struct SgOutcome {
    pub out: Outcome,
    /// Data-In bytes placed at the start of `data_in`.
    pub data_in: usize,
}

/// Whether `cdb` is a READ or WRITE (6/10/12/16): the commands the lent
/// buffers carry without a copy. A fabric may check this before it
/// builds segment lists.
pub fn is_read_write(cdb: &[u8]) -> bool {
    cdb.first().is_some_and(|&o| op::is_read_write(o))
}

thread_local! {
    /// The bounce buffers of non-READ/WRITE commands (Data-Out, Data-In).
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

pub(crate) fn execute_sg(
    table: &LunTable,
    nexus: &Nexus,
    lun_id: u64,
    cmd: &SgCommand<'_>,
) -> SgOutcome {
    let lun = table.find(lun_id);
    let (lun, cdb) = match (lun, Cdb::new(cmd.cdb)) {
        (Some(lun), Ok(c)) if is_read_write(cmd.cdb) => (lun, c),
        _ => return bounce(table, nexus, lun_id, cmd),
    };
    // Counted like every other command (`stats`; `bounce` goes through
    // `dispatch::execute`, which counts).
    let stats = &lun.device.state.stats;
    let started = stats.begin(cdb.opcode());
    let out = read_write(table, nexus, lun, cdb, cmd);
    started.end(&out.out, out.data_in, cmd.data_out.len());
    out
}

fn read_write(
    table: &LunTable,
    nexus: &Nexus,
    lun: &crate::Lun,
    cdb: Cdb,
    cmd: &SgCommand<'_>,
) -> SgOutcome {
    let access = match dispatch::prepare_rw(table, nexus, lun, cdb, cmd.data_out.len()) {
        Ok(Some(a)) => a,
        Ok(None) => return answer(Ok(()), 0),
        Err(e) => return answer(Err(e), 0),
    };
    let dev = &lun.device;
    let _order = dev.io_shared();
    match access {
        Access::Read { offset, len } => {
            // Past the guest's buffers nothing would be returned (a
            // residual overflow): read only what fits.
            let n = len.min(cmd.data_in.len());
            let r = with_prefix(cmd.data_in, n, |b| {
                dev.backstore.read_vectored_at(b, offset)
            });
            answer(r.map_err(CmdError::ReadError), n)
        }
        Access::Write { offset, len, fua } => {
            let r = with_prefix(cmd.data_out, len, |b| {
                dev.backstore.write_vectored_at(b, offset, fua)
            });
            answer(r.map_err(CmdError::WriteError), 0)
        }
    }
}

/// Run `f` on the first `n` bytes of `bufs` (a copy of the segment list
/// only when that is shorter than the whole).
fn with_prefix<R>(bufs: &IoVecs, n: usize, f: impl FnOnce(&IoVecs) -> R) -> R {
    if n >= bufs.len() {
        return f(bufs);
    }
    let mut p = bufs.clone();
    p.truncate(n);
    f(&p)
}

fn answer(r: Result<(), CmdError>, n: usize) -> SgOutcome {
    match r {
        Ok(()) => SgOutcome {
            out: GOOD,
            data_in: n,
        },
        Err(e) => SgOutcome {
            out: dispatch::outcome_for(&e),
            data_in: 0,
        },
    }
}

/// Any other command: through [`LunTable::execute`] on copies.
fn bounce(table: &LunTable, nexus: &Nexus, lun_id: u64, cmd: &SgCommand<'_>) -> SgOutcome {
    let (mut dout, mut din) = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    cmd.data_out.copy_to(&mut dout);
    let c = Command {
        cdb: cmd.cdb,
        data_out: &dout,
        expected_len: cmd.expected_len,
        attr: cmd.attr,
    };
    let out = dispatch::execute(table, nexus, lun_id, &c, &mut din);
    let n = cmd.data_in.copy_from(&din);
    // Keep the capacity for the next one, within reason.
    if dout.capacity() + din.capacity() <= 16 << 20 {
        SCRATCH.with(|s| *s.borrow_mut() = (dout, din));
    }
    SgOutcome { out, data_in: n }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testutil::*;
    use crate::Status;

    fn lend(mem: &mut [u8]) -> IoVecs {
        let (p, n) = (mem.as_mut_ptr(), mem.len());
        // SAFETY: two segments inside `mem`, which outlives the value in
        // each use below.
        unsafe { IoVecs::new([(p, n / 2), (p.add(n / 2), n - n / 2)], Arc::new(())) }
    }

    fn rw10(op: u8, lba: u32, blocks: u16) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = op;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    /// WRITE from lent memory, READ into lent memory (shorter than the
    /// transfer: only what fits), INQUIRY bounced into lent memory; the
    /// gates apply (the power-on unit attention comes first, an LBA out
    /// of range is refused without touching the buffers).
    #[test]
    fn read_write_through_lent_buffers_and_others_bounce() {
        let t = Rig::fresh();
        let run = |cdb: &[u8], dout: &mut [u8], din: &mut [u8]| {
            let (o, i) = (lend(dout), lend(din));
            let c = SgCommand {
                cdb,
                expected_len: i.len().max(o.len()) as u32,
                attr: TaskAttr::Simple,
                data_out: &o,
                data_in: &i,
            };
            t.table.execute_sg(&t.me, 0, &c)
        };
        let first = run(&[0, 0, 0, 0, 0, 0], &mut [], &mut []);
        assert_eq!(first.out.status, Status::CheckCondition, "power-on UA");
        let mut data: Vec<u8> = (0..1024u32).map(|i| (i % 253) as u8).collect();
        let w = run(&rw10(0x2a, 4, 2), &mut data, &mut []);
        assert_eq!((w.out.status, w.data_in), (Status::Good, 0));
        let mut back = vec![0u8; 700];
        let r = run(&rw10(0x28, 4, 2), &mut [], &mut back);
        assert_eq!((r.out.status, r.data_in), (Status::Good, 700));
        assert_eq!(back, data[..700]);
        let (_, d) = t.ok(&rw10(0x28, 4, 2));
        assert_eq!(d, data, "on the medium");
        let mut inq = vec![0u8; 36];
        let i = run(&[0x12, 0, 0, 0, 36, 0], &mut [], &mut inq);
        assert_eq!((i.out.status, i.data_in), (Status::Good, 36));
        assert_eq!(&inq[8..16], b"RTARGET ");
        let mut untouched = vec![0x5au8; 512];
        let oob = run(&rw10(0x28, BLOCKS as u32, 1), &mut [], &mut untouched);
        assert_eq!(sense_of(&oob.out), Some((5, 0x21, 0)));
        assert!(untouched.iter().all(|&b| b == 0x5a));
        // The monitoring counters see the lent-buffer READs and WRITE too.
        let s = t.dev.stats();
        assert_eq!(s.write_bytes, 1024, "the WRITE from lent memory");
        assert_eq!(s.read_bytes, 700 + 1024, "the lent READ and the copied one");
        assert_eq!(s.sense[5], 1, "the out-of-range READ");
    }
}
