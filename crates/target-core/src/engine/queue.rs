//! [`TaskQueue`]: one nexus's tasks in the engine (see the module comment
//! of `engine` for the rules). Owned and driven by the fabric's thread;
//! the pool and backstores only reach its [`Sink`].

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::Arc;

use super::pool::{self, Job};
use super::sink::{Ends, Sink};
use super::stream::{self, WriteStream};
use super::{Cdb, Done, SgBufs, Task};
use crate::{IoEngine, LunTable, Nexus, Outcome, Status, TaskAttr};

/// The memory a fabric lets tasks hold (see `engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes one queue's tasks may hold before it is congested.
    pub queue_bytes: usize,
    /// Bytes all queues' tasks may hold before every queue holding any
    /// is congested (a queue without tasks still gets one at a time, so
    /// no initiator is locked out).
    pub total_bytes: usize,
}

/// Most of a task's Expected Data Transfer Length charged for its Data-In
/// (more than the core ever returns, 8 MiB; the pool gives back the rare
/// excess of a CDB asking for more than the EDTL).
const MAX_DATA_IN_CHARGE: usize = 16 << 20;

/// What a fabric may select tasks on (ABORT TASK, ABORT TASK SET, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskInfo {
    pub tag: u64,
    pub lun: u64,
    pub attr: TaskAttr,
    pub long: bool,
}

struct Flight<C> {
    seq: u64,
    info: TaskInfo,
    ctx: C,
    /// Handed to the pool (else held back by task ordering).
    started: bool,
    aborted: bool,
    /// Aborted with TAS: answered TASK ABORTED instead of dropped.
    tas: bool,
    /// Bytes charged until completion.
    charge: usize,
    /// A streamed write ([`TaskQueue::start_stream`]).
    stream: Option<Arc<stream::Shared>>,
}

impl<C> Flight<C> {
    /// Will be answered (holds a slot of the fabric's command window).
    fn answers(&self) -> bool {
        !self.aborted || self.tas
    }
}

/// A finished task, back on the fabric's thread.
pub struct Finished<C> {
    pub ctx: C,
    pub cdb: Cdb,
    pub out: Outcome,
    pub data_out: Vec<u8>,
    pub data_in: Vec<u8>,
    /// Data-In produced beyond `data_in` (for the residual).
    pub overflow: usize,
    /// Data-In bytes placed in the lent buffers of a `submit_sg` task.
    pub sg_in: usize,
    /// Data-Out bytes a streamed write wrote (its buffers are in `spares`).
    pub streamed: usize,
    /// A streamed write's piece buffers, for the fabric to reuse.
    pub spares: Vec<Vec<u8>>,
    /// Aborted: send nothing, only take the buffers back.
    pub aborted: bool,
}

/// The tasks of one nexus (see `engine`).
pub struct TaskQueue<C> {
    limits: Limits,
    sink: Option<Arc<Sink>>,
    flights: Vec<Flight<C>>,
    /// Tasks held back by ordering, oldest first.
    held: VecDeque<Job>,
    /// Tasks finished without running (aborted while held).
    ready: Vec<Finished<C>>,
    /// Flights that will be answered.
    live: u32,
    /// Sum of the flights' charges.
    bytes: usize,
    /// Flights that are short ORDERED tasks: while there is none, a SIMPLE
    /// task starts without a look at the others.
    ordered: usize,
    next_seq: u64,
    /// Completions being processed (capacity kept).
    done: Vec<Done>,
    /// The fabric reaps on the thread that submits (`batch_submissions`):
    /// io_uring requests wait queued until the next `reap`/`prepare_sleep`.
    batch: bool,
}

/// Whether READ and WRITE of `dev` start on the fabric's thread: on an
/// io_uring LU, and on a pool LU whose backstore's submit never blocks
/// (librbd AIO): no worker is woken for them, which on a small machine is
/// a good part of a request's CPU (BENCHMARKS.md, RBD). Other commands
/// still run on the pool.
fn starts_here(dev: &crate::Device) -> bool {
    match dev.options.io_engine {
        IoEngine::Uring => true,
        IoEngine::Pool => dev.state.caps.async_submit && dev.backstore.submit_never_blocks(),
        IoEngine::Inline => false,
    }
}

impl<C> TaskQueue<C> {
    pub fn new(limits: Limits) -> TaskQueue<C> {
        TaskQueue {
            limits,
            sink: None,
            flights: Vec::new(),
            held: VecDeque::new(),
            ready: Vec::new(),
            live: 0,
            bytes: 0,
            ordered: 0,
            next_seq: 0,
            done: Vec::new(),
            batch: false,
        }
    }

    /// Promise that the thread submitting tasks is the one that calls
    /// [`Self::reap`] or [`Self::prepare_sleep`] before it waits for them
    /// (an iSCSI connection): then the io_uring requests of the commands a
    /// fabric takes in one wake-up are submitted together, with one system
    /// call, at that `reap`. Without it each is submitted at once.
    pub fn batch_submissions(&mut self) {
        self.batch = true;
    }

    /// Hand a started job to where it runs: the ring from this thread, or
    /// the pool.
    fn start(&self, job: Job) {
        if !job.ring {
            return pool::submit(job);
        }
        if self.batch {
            backstore::file::uring::plug();
        }
        pool::start_here(job);
    }

    /// Tasks in the engine, or answers waiting: the fabric must reap.
    pub fn active(&self) -> bool {
        !self.flights.is_empty() || !self.ready.is_empty()
    }

    /// A task may finish on another thread (a worker, a backstore's
    /// completion): the fabric must wait for the sink as well as for its
    /// socket. Streamed writes still fed their data with no piece in
    /// flight (every piece of a memory backstore is written on the
    /// fabric's thread) finish only through the fabric's own calls.
    pub fn waits_elsewhere(&self) -> bool {
        !self.ready.is_empty()
            || self
                .flights
                .iter()
                .any(|f| !f.stream.as_ref().is_some_and(|s| s.idle()))
    }

    /// Tasks that will be answered (they hold command window slots).
    pub fn live(&self) -> u32 {
        self.live
    }

    /// The queue holds all the memory it may: take no new command until
    /// some complete.
    pub fn congested(&self) -> bool {
        self.bytes >= self.limits.queue_bytes
            || (self.bytes > 0 && pool::pool_bytes() >= self.limits.total_bytes)
    }

    /// A task with this tag is in the engine and will be answered.
    pub fn has_tag(&self, tag: u64) -> bool {
        self.flights
            .iter()
            .any(|f| f.info.tag == tag && f.answers())
    }

    /// A task `which` selects is in the engine and will be answered (QUERY
    /// TASK / QUERY TASK SET).
    pub fn has_task(&self, which: impl Fn(&TaskInfo) -> bool) -> bool {
        self.flights.iter().any(|f| f.answers() && which(&f.info))
    }

    /// Every task but long ones has finished. A streamed write still fed
    /// its data counts as not started, as a write still gathering its data
    /// does (the fabric ends it: seals it, then aborts or answers it).
    pub fn only_long_left(&self) -> bool {
        self.flights
            .iter()
            .all(|f| f.info.long || f.stream.as_ref().is_some_and(|s| s.open()))
    }

    /// Aborted short tasks still run: the abort is not over yet.
    pub fn aborting(&self) -> bool {
        self.flights
            .iter()
            .any(|f| f.aborted && f.started && !f.info.long)
    }

    /// Whether a task newer than every one in the queue may start now
    /// (SAM task set rules, per LU; long tasks are outside them).
    fn may_start(&self, seq: u64, lun: u64, attr: TaskAttr) -> bool {
        let older = |f: &&Flight<C>| f.seq < seq && f.info.lun == lun && !f.info.long;
        match attr {
            TaskAttr::HeadOfQueue => true,
            TaskAttr::Simple | TaskAttr::Aca if self.ordered == 0 => true,
            TaskAttr::Ordered => !self.flights.iter().any(|f| older(&f)),
            TaskAttr::Simple | TaskAttr::Aca => !self
                .flights
                .iter()
                .filter(older)
                .any(|f| f.info.attr == TaskAttr::Ordered),
        }
    }

    /// Whether a command may run now on the fabric's thread, to completion
    /// (an inline LU): nothing in the queue orders it after another task.
    /// One branch when the queue is empty.
    pub fn may_run_inline(&self, lun: u64, attr: TaskAttr) -> bool {
        self.flights.is_empty() || self.may_start(u64::MAX, lun, attr)
    }

    /// Hand a task to the engine; its answer comes back from [`Self::reap`]
    /// with `ctx`. Gives both back if the queue cannot get a completion
    /// eventfd (the fabric then runs the command itself).
    pub fn submit(
        &mut self,
        luns: &Arc<LunTable>,
        nexus: &Arc<Nexus>,
        task: Task,
        ctx: C,
    ) -> Result<(), (Task, C)> {
        self.submit_with(luns, nexus, task, None, ctx)
            .map_err(|(t, _, c)| (t, c))
    }

    /// [`Self::submit`] for a task whose data lives in buffers the fabric
    /// lends (`task`'s own buffers stay empty): it runs with
    /// [`LunTable::execute_sg`] on a worker. Gives all back if the queue
    /// cannot get a completion eventfd.
    #[allow(clippy::result_large_err)]
    pub fn submit_sg(
        &mut self,
        luns: &Arc<LunTable>,
        nexus: &Arc<Nexus>,
        task: Task,
        bufs: SgBufs,
        ctx: C,
    ) -> Result<(), (Task, SgBufs, C)> {
        self.submit_with(luns, nexus, task, Some(bufs), ctx)
            .map_err(|(t, b, c)| (t, b.unwrap_or_default(), c))
    }

    #[allow(clippy::result_large_err, clippy::type_complexity)]
    fn submit_with(
        &mut self,
        luns: &Arc<LunTable>,
        nexus: &Arc<Nexus>,
        task: Task,
        sg: Option<SgBufs>,
        ctx: C,
    ) -> Result<(), (Task, Option<SgBufs>, C)> {
        let Some(sink) = self.sink() else {
            return Err((task, sg, ctx));
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        // An absurd EDTL must not pin the budget: no command yields more
        // Data-In than the core's MAXIMUM TRANSFER LENGTH.
        let edtl = (task.expected_len as usize).min(MAX_DATA_IN_CHARGE);
        // Lent buffers are not ours: only owned ones count.
        let edtl = if sg.is_some() { 0 } else { edtl };
        let charge = task.data_in.capacity().max(edtl) + task.data_out.capacity();
        let lu = luns.find(task.lun);
        let lu_key = match lu {
            Some(l) if !task.long => l.device.id(),
            _ => 0,
        };
        // Only READ and WRITE are sure not to block this thread on a ring
        // (or in a backstore whose submit only queues).
        let ring = !task.long
            && sg.is_none()
            && lu.is_some_and(|l| starts_here(&l.device))
            && task
                .cdb
                .as_slice()
                .first()
                .is_some_and(|&o| scsi::opcode::is_read_write(o));
        pool::lu_enter(lu_key);
        pool::charge(charge);
        let info = TaskInfo {
            tag: task.tag,
            lun: task.lun,
            attr: task.attr,
            long: task.long,
        };
        let start = self.may_start(seq, task.lun, task.attr);
        self.flights.push(Flight {
            seq,
            info,
            ctx,
            started: start,
            aborted: false,
            tas: false,
            charge,
            stream: None,
        });
        self.live += 1;
        self.bytes += charge;
        self.ordered += usize::from(is_ordered(&info));
        let job = Job {
            seq,
            sink,
            luns: Arc::clone(luns),
            nexus: Arc::clone(nexus),
            lun: task.lun,
            cdb: task.cdb,
            attr: task.attr,
            expected_len: task.expected_len,
            data_out: task.data_out,
            data_in: task.data_in,
            lu_key,
            charge,
            long: task.long,
            sg,
            ring,
        };
        if start {
            self.start(job);
        } else {
            self.held.push_back(job);
        }
        Ok(())
    }

    /// The completion sink, made on first use (`None`: no eventfd).
    fn sink(&mut self) -> Option<Arc<Sink>> {
        if let Some(s) = &self.sink {
            return Some(Arc::clone(s));
        }
        match Sink::new() {
            Ok(s) => {
                let s = Arc::new(s);
                self.sink = Some(Arc::clone(&s));
                Some(s)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a completion sink");
                None
            }
        }
    }

    /// Whether a streamed write could start now: the queue has its
    /// completion sink, and no older ORDERED task of the LU holds a SIMPLE
    /// one back (a streamed write starts writing at once). Asked before
    /// the write's checks, which a `false` leaves undone.
    pub fn may_stream(&mut self, lun: u64) -> bool {
        self.sink().is_some() && self.may_start(u64::MAX, lun, TaskAttr::Simple)
    }

    /// Take a streamed write (`LunTable::check_streamed_write`) as a task,
    /// started: the fabric feeds it its data with [`WriteStream::piece`]
    /// and drops the handle once all data is in (or the task is dropped);
    /// the answer comes back from [`Self::reap`] with `ctx` once its last
    /// piece completed. `None` only without a sink, which
    /// [`Self::may_stream`] rules out (the fabric then answers itself).
    pub fn start_stream(
        &mut self,
        plan: crate::WritePlan,
        tag: u64,
        lun: u64,
        cdb: Cdb,
        ctx: C,
    ) -> Option<WriteStream> {
        let sink = self.sink()?;
        let seq = self.next_seq;
        self.next_seq += 1;
        // Not charged to the memory budget (its flight's charge is 0): a
        // stream holds no more than the burst being received (its pieces
        // go to the backstore as they come), like a write still gathering
        // its data, which is not charged either. Charged its whole length,
        // a few large streamed writes made the connection "congested", so
        // it stopped reading the socket their own data had to come from:
        // 8 MiB WRITEs at QD8 to a tmpfs or ramdisk LU never completed.
        sink.started(false);
        let (ws, shared) = stream::new_stream(plan, seq, sink, cdb);
        self.flights.push(Flight {
            seq,
            info: TaskInfo {
                tag,
                lun,
                attr: TaskAttr::Simple,
                long: false,
            },
            ctx,
            started: true,
            aborted: false,
            tas: false,
            charge: 0,
            stream: Some(shared),
        });
        self.live += 1;
        Some(ws)
    }

    /// Hand every finished task to `f` (aborted ones flagged), then start
    /// the held tasks that ordering now lets run.
    pub fn reap(&mut self, mut f: impl FnMut(Finished<C>)) {
        // The ring requests this wake-up queued: one system call for all.
        backstore::file::uring::unplug();
        self.ready.drain(..).for_each(&mut f);
        let Some(sink) = &self.sink else {
            return;
        };
        let mut done = std::mem::take(&mut self.done);
        sink.take(&mut done);
        let any = !done.is_empty();
        for d in done.drain(..) {
            let Some(i) = self.flights.iter().position(|x| x.seq == d.seq) else {
                continue;
            };
            let fl = self.flights.swap_remove(i);
            if fl.answers() {
                self.live -= 1;
            }
            self.bytes -= fl.charge;
            self.ordered -= usize::from(is_ordered(&fl.info));
            let mut fin = Finished {
                ctx: fl.ctx,
                cdb: d.cdb,
                out: d.out,
                data_out: d.data_out,
                data_in: d.data_in,
                overflow: d.overflow,
                sg_in: d.sg_in,
                streamed: d.streamed,
                spares: d.spares,
                aborted: fl.aborted && !fl.tas,
            };
            if fl.tas {
                fin.out = task_aborted();
                fin.data_in.clear();
                fin.overflow = 0;
                fin.sg_in = 0;
            }
            f(fin);
        }
        self.done = done;
        if any && !self.held.is_empty() {
            self.release();
        }
    }

    /// Start the held tasks whose turn has come, oldest first.
    fn release(&mut self) {
        let mut held = std::mem::take(&mut self.held);
        for job in held.drain(..) {
            if self.may_start(job.seq, job.lun, job.attr) {
                if let Some(fl) = self.flights.iter_mut().find(|f| f.seq == job.seq) {
                    fl.started = true;
                }
                self.start(job);
            } else {
                self.held.push_back(job);
            }
        }
    }

    /// Abort the tasks `which` selects, answered never (`tas` false) or
    /// with TASK ABORTED (`tas`). Held tasks end now; started ones end
    /// when they finish ([`Self::aborting`] says whether any short one
    /// still runs). Returns how many were aborted.
    pub fn abort(&mut self, which: impl Fn(&TaskInfo) -> bool, tas: bool) -> usize {
        let mut n = 0;
        let mut dropped = Vec::new();
        for fl in self.flights.iter_mut() {
            if fl.aborted || !which(&fl.info) {
                continue;
            }
            fl.aborted = true;
            fl.tas = tas;
            if !tas {
                self.live -= 1;
            }
            n += 1;
            if !fl.started {
                dropped.push(fl.seq);
            }
        }
        for seq in dropped {
            let Some(j) = self.held.iter().position(|j| j.seq == seq) else {
                continue;
            };
            let job = self.held.remove(j).expect("held job");
            let i = self.flights.iter().position(|f| f.seq == seq);
            let Some(fl) = i.map(|i| self.flights.swap_remove(i)) else {
                continue;
            };
            pool::lu_leave(job.lu_key);
            pool::uncharge(job.charge);
            self.bytes -= fl.charge;
            self.ordered -= usize::from(is_ordered(&fl.info));
            if tas {
                self.live -= 1;
            }
            let mut data_in = job.data_in;
            data_in.clear();
            self.ready.push(Finished {
                ctx: fl.ctx,
                cdb: job.cdb,
                out: task_aborted(),
                data_out: job.data_out,
                data_in,
                overflow: 0,
                sg_in: 0,
                streamed: 0,
                spares: Vec::new(),
                aborted: !tas,
            });
        }
        // An aborted ORDERED task no longer holds the ones behind it.
        if n > 0 && !self.held.is_empty() {
            self.release();
        }
        n
    }

    /// The eventfd that becomes readable when answers wait (none before
    /// the first task).
    pub fn completion_fd(&self) -> Option<RawFd> {
        self.sink.as_ref().map(|s| s.fd())
    }

    /// Before the fabric sleeps on [`Self::completion_fd`]: false if
    /// answers already wait (reap instead); else the next one signals.
    pub fn prepare_sleep(&self) -> bool {
        backstore::file::uring::unplug();
        if !self.ready.is_empty() {
            return false;
        }
        self.sink.as_ref().is_none_or(|s| s.prepare_sleep())
    }

    /// After that sleep: `signalled` if the eventfd fired.
    pub fn woke(&self, signalled: bool) {
        if let Some(s) = &self.sink {
            s.woke(signalled);
        }
    }

    /// The nexus is gone: held and queued tasks never run, late answers
    /// are dropped, and each of `ends` runs once the tasks still running
    /// have finished (now if none runs).
    pub fn close(&mut self, ends: Ends) {
        backstore::file::uring::unplug();
        for job in self.held.drain(..) {
            pool::lu_leave(job.lu_key);
            pool::uncharge(job.charge);
        }
        self.flights.clear();
        self.ready.clear();
        self.live = 0;
        self.bytes = 0;
        self.ordered = 0;
        match &self.sink {
            Some(s) => s.close(ends),
            None => {
                ends.short.into_iter().for_each(|f| f());
                ends.all.into_iter().for_each(|f| f());
            }
        }
    }
}

/// A task that orders the ones around it (long ones stay outside).
fn is_ordered(t: &TaskInfo) -> bool {
    t.attr == TaskAttr::Ordered && !t.long
}

fn task_aborted() -> Outcome {
    Outcome {
        status: Status::TaskAborted,
        sense: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congested_by_own_budget_or_by_the_total_when_holding_tasks() {
        let limits = Limits {
            queue_bytes: 64 << 20,
            // Above anything other tests of this process hold.
            total_bytes: 1 << 40,
        };
        let mut q: TaskQueue<()> = TaskQueue::new(limits);
        assert!(!q.congested());
        q.bytes = limits.queue_bytes - 1;
        assert!(!q.congested());
        q.bytes = limits.queue_bytes;
        assert!(q.congested(), "own budget reached");
        // The whole pool is full: a queue with tasks waits, one without
        // any still gets its first.
        pool::charge(limits.total_bytes);
        q.bytes = 1;
        let with_tasks = q.congested();
        q.bytes = 0;
        let without = q.congested();
        pool::uncharge(limits.total_bytes);
        assert!(with_tasks);
        assert!(!without);
    }
}
