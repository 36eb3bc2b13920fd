//! The fabric-neutral I/O engine: how a fabric hands the core tasks that
//! do not run to completion on its own thread, and gets their answers.
//!
//! A fabric keeps one [`TaskQueue`] per I_T nexus (an iSCSI connection, a
//! vhost queue, a loopback device). It [`TaskQueue::submit`]s a [`Task`]
//! (nexus, LUN, CDB, task attribute, the buffers it owns) with a context
//! of its own (`C`: the fabric's command header), and takes the answers
//! back on its own thread with [`TaskQueue::reap`], woken by the queue's
//! eventfd ([`TaskQueue::completion_fd`]). Only that thread builds
//! answers, so a fabric's sequence numbers stay single-threaded.
//!
//! The queue owns SAM-5's task set rules, per logical unit:
//! - SIMPLE runs at once unless an older ORDERED task of the LU has not
//!   finished; ORDERED waits for every older task of the LU and blocks
//!   every newer one until it finished; HEAD OF QUEUE runs at once, ahead
//!   of everything still waiting (also in the pool's queue). A task held
//!   back waits inside the queue, without a thread.
//! - ABORT TASK / ABORT TASK SET ([`TaskQueue::abort`]): a task not yet
//!   started is dropped at once; a started one cannot be stopped mid-I/O
//!   and is waited for ([`TaskQueue::aborting`]), then its answer is
//!   dropped, or becomes TASK ABORTED when the abort asks for TAS (a task
//!   aborted by another nexus, SAM-5 5.6).
//! - Long commands (`may_run_long`: SANITIZE) get a thread of their own,
//!   are not waited for by task ordering nor by resets, and go on through
//!   them by design.
//!
//! Where a task runs: the fabric asks [`TaskQueue::may_run_inline`] and,
//! for an LU whose `io_engine` is [`crate::IoEngine::Inline`], runs the
//! command on its own thread with [`crate::LunTable::execute`]: the page
//! cache fast path costs one branch. Everything else goes to the worker
//! pool, which starts it with [`crate::LunTable::submit`]: a READ or WRITE
//! goes to the backstore's asynchronous path (`Backstore::submit`), which
//! may complete later on any thread (librbd, io_uring) without a worker
//! waiting; the completion posts the answer to the queue's [`Sink`].
//!
//! Memory bounds are the fabric's choice ([`Limits`]): each task is
//! charged the bytes its buffers may hold until its answer is reaped;
//! over `queue_bytes` (or, holding any, once every queue together holds
//! `total_bytes`) the queue is [`TaskQueue::congested`] and the fabric
//! stops taking commands (back-pressure) until some complete.

mod pool;
mod queue;
mod sink;
mod stream;

pub use pool::{pool_bytes, wait_lus_idle, worker_count};
pub use queue::{Finished, Limits, TaskInfo, TaskQueue};
pub use sink::{EndAction, Ends, Sink};
pub use stream::{Land, WriteStream};

use crate::{Outcome, TaskAttr};

/// A CDB: 16 bytes inline, longer ones (extended CDBs) on the heap.
#[derive(Debug, Clone)]
pub enum Cdb {
    Short([u8; 16]),
    Long(Vec<u8>),
}

impl Cdb {
    pub fn from_slice(cdb: &[u8]) -> Cdb {
        if cdb.len() <= 16 {
            let mut b = [0u8; 16];
            b[..cdb.len()].copy_from_slice(cdb);
            Cdb::Short(b)
        } else {
            Cdb::Long(cdb.to_vec())
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            Cdb::Short(c) => c,
            Cdb::Long(v) => v,
        }
    }
}

/// One command as a fabric hands it to the engine.
pub struct Task {
    /// The fabric's name for the task (iSCSI's ITT): what ABORT TASK
    /// matches ([`TaskInfo::tag`]).
    pub tag: u64,
    pub lun: u64,
    pub cdb: Cdb,
    pub attr: TaskAttr,
    /// The fabric's Expected Data Transfer Length: bounds the Data-In kept.
    pub expected_len: u32,
    /// All Data-Out, gathered.
    pub data_out: Vec<u8>,
    /// A buffer for Data-In (its capacity is reused; see `execute`).
    pub data_in: Vec<u8>,
    /// May run for minutes (`crate::may_run_long`).
    pub long: bool,
}

/// Buffers a fabric lends for one task ([`TaskQueue::submit_sg`]): the
/// task runs with [`crate::LunTable::execute_sg`] on a worker, READ and
/// WRITE without a copy. The fabric keeps the memory behind them valid
/// until the task's answer is reaped (the `IoVecs` contract); the engine
/// drops them when the task ends, started or not.
#[derive(Default)]
pub struct SgBufs {
    pub data_out: backstore::IoVecs,
    pub data_in: backstore::IoVecs,
}

/// A finished task as the pool posts it (see [`Finished`] for what the
/// fabric gets).
pub struct Done {
    pub(crate) seq: u64,
    pub cdb: Cdb,
    pub out: Outcome,
    pub data_out: Vec<u8>,
    pub data_in: Vec<u8>,
    /// Data-In bytes the command produced beyond `data_in` (dropped, past
    /// the Expected Data Transfer Length): they count for the residual.
    pub overflow: usize,
    /// Data-In bytes placed in the task's lent buffers (an `SgBufs` task).
    pub sg_in: usize,
    /// Data-Out bytes a streamed write wrote in pieces (their buffers
    /// went to the backstore, not back in `data_out`).
    pub streamed: usize,
    /// The buffers of those pieces, back for reuse.
    pub spares: Vec<Vec<u8>>,
}

impl Done {
    /// The answer for a task that can no longer finish normally (it
    /// panicked, or its handle was dropped unanswered): CHECK CONDITION,
    /// HARDWARE ERROR / INTERNAL TARGET FAILURE, so the fabric never waits
    /// for ever.
    pub(crate) fn internal_failure(seq: u64, cdb: Cdb) -> Done {
        use scsi::sense::{Asc, Sense, SenseKey};
        Done {
            seq,
            cdb,
            out: Outcome {
                status: crate::Status::CheckCondition,
                sense: Some(
                    Sense::new(SenseKey::HardwareError, Asc::INTERNAL_TARGET_FAILURE)
                        .to_fixed()
                        .to_vec(),
                ),
            },
            data_out: Vec::new(),
            data_in: Vec::new(),
            overflow: 0,
            sg_in: 0,
            streamed: 0,
            spares: Vec::new(),
        }
    }
}
