//! The completion-based command path ([`LunTable::submit`]): READ and WRITE
//! pass every gate here, then go to the backstore's asynchronous path
//! (`Backstore::submit`) with their buffers; the answer is built in the
//! backstore's completion, on whatever thread that runs. Only for a
//! backstore whose capabilities say `async_submit`: for the others (and
//! for every other command) this is [`LunTable::execute`] and `done` runs
//! before `submit` returns, with no allocation.
//!
//! Medium ordering: an asynchronous access counts as holding the LU's
//! shared order until it completes (`Device::io_async_begin`), so COMPARE
//! AND WRITE, WRITE ATOMIC and SANITIZE still exclude it.

use backstore::{Completion, IoOp};
use scsi::cdb::Cdb;
use scsi::opcode as op;

use crate::dispatch::{self, GOOD};
use crate::error::CmdError;
use crate::rw::Access;
use crate::{Command, LunTable, Nexus, Outcome, TaskAttr};

/// A command handed over with the buffers it owns.
pub struct Request<'a> {
    pub cdb: &'a [u8],
    pub expected_len: u32,
    pub attr: TaskAttr,
    /// All Data-Out the initiator sent.
    pub data_out: Vec<u8>,
    /// Reused for Data-In (see [`LunTable::execute`]).
    pub data_in: Vec<u8>,
}

/// The answer, with both buffers back.
pub struct Reply {
    pub out: Outcome,
    pub data_in: Vec<u8>,
    pub data_out: Vec<u8>,
    /// Data-Out bytes whose buffer the backstore kept (rbd hands a
    /// write's buffer to librbd): `data_out` came back empty.
    pub kept_out: usize,
}

pub(crate) fn submit(
    table: &LunTable,
    nexus: &Nexus,
    lun_id: u64,
    req: Request<'_>,
    done: impl FnOnce(Reply) + Send + 'static,
) {
    let Request {
        cdb,
        expected_len,
        attr,
        data_out,
        mut data_in,
    } = req;
    // Checked first: a synchronous backstore's command goes straight to
    // `execute` (one CDB parse, no allocation).
    let lun = table
        .find(lun_id)
        .filter(|l| l.device.state.caps.async_submit);
    let lun = match (lun, lun.map(|_| Cdb::new(cdb))) {
        (Some(lun), Some(Ok(c))) if op::is_read_write(c.opcode()) => {
            let started = lun.device.state.stats.begin(c.opcode());
            match dispatch::prepare_rw(table, nexus, lun, c, data_out.len()) {
                Ok(Some(access)) => (lun, access, started),
                Ok(None) => {
                    data_in.clear();
                    started.end(&GOOD, 0, data_out.len());
                    return done(Reply {
                        out: GOOD,
                        data_in,
                        data_out,
                        kept_out: 0,
                    });
                }
                Err(e) => {
                    data_in.clear();
                    let out = dispatch::outcome_for(&e);
                    started.end(&out, 0, 0);
                    return done(Reply {
                        out,
                        data_in,
                        data_out,
                        kept_out: 0,
                    });
                }
            }
        }
        _ => {
            let cmd = Command {
                cdb,
                data_out: &data_out,
                expected_len,
                attr,
            };
            let out = table.execute(nexus, lun_id, &cmd, &mut data_in);
            return done(Reply {
                out,
                data_in,
                data_out,
                kept_out: 0,
            });
        }
    };
    let (lun, access, started) = lun;
    // The completion owns the count through the device's I/O token: a
    // completion dropped uncalled still ends it (`stats::Started`).
    let started = started.hand_to(lun.device.io_async_begin());
    let mut sent_out = 0;
    let (op, spare) = match access {
        Access::Read { offset, len } => {
            // Reuse whatever the buffer holds; only growth is zero-filled.
            data_in.resize(len, 0);
            (
                IoOp::Read {
                    offset,
                    buf: data_in,
                },
                data_out,
            )
        }
        Access::Write { offset, len, fua } => {
            data_in.clear();
            sent_out = data_out.len();
            (
                IoOp::Write {
                    offset,
                    buf: data_out,
                    len,
                    fua,
                },
                data_in,
            )
        }
    };
    lun.device.backstore.submit(
        op,
        Completion::new(move |op, result| {
            let mut kept_out = 0;
            let (data_in, data_out, err) = match op {
                IoOp::Read { mut buf, .. } => {
                    let err = result.err().map(CmdError::ReadError);
                    if err.is_some() {
                        buf.clear();
                    }
                    (buf, spare, err)
                }
                IoOp::Write { buf, .. } => {
                    if buf.is_empty() {
                        kept_out = sent_out;
                    }
                    (spare, buf, result.err().map(CmdError::WriteError))
                }
                IoOp::Flush => (spare, Vec::new(), None),
            };
            let out = err.as_ref().map_or(GOOD, dispatch::outcome_for);
            // The LU's shared order (the token) ends after the answer is
            // counted, so an exclusive holder that waited sees nothing in
            // flight.
            started.end(&out, data_in.len(), data_out.len() + kept_out);
            done(Reply {
                out,
                data_in,
                data_out,
                kept_out,
            })
        }),
    );
}
