//! The worker pool that runs commands off their connection thread: block
//! I/O of LUs whose `io_engine` is `pool` (O_DIRECT files, NBD-based
//! backstores: an I/O there can block for long) and commands the core says
//! may run for minutes (`target_core::may_run_long`, SANITIZE without IMMED).
//!
//! A fixed set of workers (started on first use, process-wide) pops [`Job`]s
//! from one queue, runs `LunTable::execute` and posts a [`Done`] into the
//! connection's [`Sink`], whose eventfd wakes the connection thread. Only the
//! connection thread builds and sends PDUs, so StatSN, ExpCmdSN/MaxCmdSN and
//! the order of what leaves the socket stay single-threaded. Long commands
//! get a thread of their own so they never starve the workers.
//!
//! A sink outlives its connection while jobs still run: once closed, late
//! completions are dropped (never sent on a dead or new connection) and the
//! last one runs the session's deferred end (`nexus_gone`, and the end of
//! the session's drain that a reinstating login waits for). Jobs of a
//! closed sink that have not started yet never run: `close` takes them out
//! of the queue (and a worker that popped one just before checks again), so
//! no stale WRITE of a dead or reinstated session lands after the
//! initiator logged in again and retried it.
//!
//! Memory: every job is charged the bytes it may hold (its data buffers;
//! [`Job::charge`]) against a process-wide total ([`pool_bytes`]); each
//! connection also keeps its own total below a budget (`offload`). A job
//! whose Data-In outgrew its charge (a READ whose CDB asks for more than the
//! Expected Data Transfer Length: the excess is never sent) gives the
//! excess back before it waits for its connection.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use iscsi_wire::request::ScsiCommand;
use scsi::sense::{Asc, Sense, SenseKey};
use target_core::{Command, LunTable, Nexus, Outcome, Status};

use crate::dataout::CdbStore;

/// One command handed to the pool, with the buffers it needs (both taken
/// from the connection's buffer pool and given back in [`Done`]).
pub struct Job {
    pub seq: u64,
    pub sink: Arc<Sink>,
    pub luns: Arc<LunTable>,
    pub nexus: Arc<Nexus>,
    pub lun: u64,
    pub cmd: ScsiCommand,
    pub cdb: CdbStore,
    pub attr: target_core::TaskAttr,
    pub data_out: Vec<u8>,
    pub data_in: Vec<u8>,
    /// The LU's key for [`wait_lus_idle`] (0: not tracked, as for long
    /// commands, which resets do not wait for).
    pub lu_key: usize,
    /// Bytes charged to the pool's total ([`pool_bytes`]) while the job is
    /// queued or running: at least the capacity of both buffers and the
    /// Expected Data Transfer Length.
    pub charge: usize,
    /// May run for minutes (`target_core::may_run_long`): gets a thread of
    /// its own, and a session's drain does not wait for it.
    pub long: bool,
}

/// A finished job, back on its connection.
pub struct Done {
    pub seq: u64,
    pub cmd: ScsiCommand,
    pub cdb: CdbStore,
    pub out: Outcome,
    pub data_out: Vec<u8>,
    pub data_in: Vec<u8>,
    /// Data-In bytes the command produced beyond `data_in` (dropped, past
    /// the Expected Data Transfer Length): they count for the residual.
    pub overflow: usize,
}

/// What a session must do once its jobs have finished.
pub type EndAction = Box<dyn FnOnce() + Send>;

/// The actions a closed sink runs as its jobs finish.
#[derive(Default)]
pub struct Ends {
    /// After the last job, long ones included (the nexus may go).
    pub all: Option<EndAction>,
    /// After the last short job: nothing the session sent can still change
    /// data, but a long command (SANITIZE) that goes on by design.
    pub short: Option<EndAction>,
}

#[derive(Default)]
struct SinkState {
    done: Vec<Done>,
    /// Jobs submitted and not yet finished.
    running: usize,
    /// Of those, the short ones.
    running_short: usize,
    /// The connection is gone: drop completions.
    closed: bool,
    /// The connection thread is (about to be) asleep in poll: the next
    /// completion must write the eventfd. While it is awake it reaps
    /// without being told, which saves a syscall per completion.
    sleeping: bool,
    end: Ends,
}

/// Per-connection completion mailbox.
pub struct Sink {
    efd: OwnedFd,
    state: Mutex<SinkState>,
    /// `state.closed`, readable without the lock by a worker about to run
    /// one of this sink's jobs.
    closed: AtomicBool,
}

impl Sink {
    pub fn new() -> std::io::Result<Sink> {
        // SAFETY: eventfd(2) with valid flags returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Sink {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            efd: unsafe { OwnedFd::from_raw_fd(fd) },
            state: Mutex::new(SinkState::default()),
            closed: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The descriptor that becomes readable when completions are waiting.
    pub fn fd(&self) -> RawFd {
        self.efd.as_raw_fd()
    }

    /// Move every waiting completion into `into` (which should be empty:
    /// the two vectors swap, so neither side allocates in steady state).
    pub fn take(&self, into: &mut Vec<Done>) {
        std::mem::swap(&mut self.lock().done, into);
    }

    /// Before sleeping on `fd`: false if completions are already waiting
    /// (reap them instead). Otherwise the next completion signals.
    pub fn prepare_sleep(&self) -> bool {
        let mut s = self.lock();
        if !s.done.is_empty() {
            return false;
        }
        s.sleeping = true;
        true
    }

    /// After the sleep: reset the eventfd if it fired (`signalled`) and
    /// stop asking for signals.
    pub fn woke(&self, signalled: bool) {
        self.lock().sleeping = false;
        if signalled {
            let mut v = 0u64;
            // SAFETY: reading 8 bytes into a u64 from our own (non-blocking)
            // eventfd.
            unsafe { libc::read(self.fd(), (&mut v as *mut u64).cast(), 8) };
        }
    }

    fn started(&self, long: bool) {
        let mut s = self.lock();
        s.running += 1;
        s.running_short += usize::from(!long);
    }

    /// The end actions that are due: the sink is closed and their jobs
    /// have finished.
    fn due(s: &mut SinkState) -> [Option<EndAction>; 2] {
        if !s.closed {
            return [None, None];
        }
        let short = if s.running_short == 0 {
            s.end.short.take()
        } else {
            None
        };
        let all = if s.running == 0 {
            s.end.all.take()
        } else {
            None
        };
        [short, all]
    }

    /// A job finished (`Some`) or was dropped unstarted (`None`).
    fn complete(&self, d: Option<Done>, long: bool) {
        let (signal, ends) = {
            let mut s = self.lock();
            s.running -= 1;
            s.running_short -= usize::from(!long);
            let signal = !s.closed && s.sleeping && d.is_some();
            s.sleeping &= !signal;
            if let (false, Some(d)) = (s.closed, d) {
                s.done.push(d);
            }
            (signal, Self::due(&mut s))
        };
        if signal {
            let one = 1u64;
            // SAFETY: writing 8 bytes from a u64 to our own eventfd.
            unsafe { libc::write(self.fd(), (&one as *const u64).cast(), 8) };
        }
        ends.into_iter().flatten().for_each(|f| f());
    }

    /// The connection is gone. Its jobs that have not started are dropped;
    /// each of `ends` runs now if none of its jobs runs, else after the
    /// last one finishes; completions are dropped from now on.
    pub fn close(&self, ends: Ends) {
        self.closed.store(true, Ordering::SeqCst);
        let (cancelled, cancelled_short) = cancel_queued(self);
        let now = {
            let mut s = self.lock();
            s.closed = true;
            s.done.clear();
            s.running -= cancelled;
            s.running_short -= cancelled_short;
            // A second close (Drop after end) keeps the first one's actions.
            if ends.all.is_some() {
                s.end.all = ends.all;
            }
            if ends.short.is_some() {
                s.end.short = ends.short;
            }
            Self::due(&mut s)
        };
        now.into_iter().flatten().for_each(|f| f());
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    /// Workers waiting for a job: only then is a wake-up needed.
    idle: usize,
}

struct Pool {
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Threads running long commands right now.
    long: AtomicUsize,
}

/// Most long commands with a thread of their own at a time; more queue up
/// on the workers.
const MAX_LONG: usize = 16;

/// Worker count: enough blocking I/O in flight to keep a device busy,
/// bounded so a small machine does not drown in threads. Settable with
/// `RTARGET_IO_WORKERS` for measurements.
pub fn worker_count() -> usize {
    if let Some(n) = std::env::var("RTARGET_IO_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=256).contains(n))
    {
        return n;
    }
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cpus * 8).clamp(8, 64)
}

static POOL: OnceLock<Arc<Pool>> = OnceLock::new();

/// Bytes charged by all jobs queued or running (see [`Job::charge`]).
static POOL_BYTES: AtomicUsize = AtomicUsize::new(0);

/// What all queued and running jobs of every connection hold now.
pub fn pool_bytes() -> usize {
    POOL_BYTES.load(Ordering::Relaxed)
}

/// Move the pool's byte total (unit tests of the budget).
#[cfg(test)]
pub(crate) fn charge_for_test(n: isize) {
    if n >= 0 {
        POOL_BYTES.fetch_add(n as usize, Ordering::Relaxed);
    } else {
        POOL_BYTES.fetch_sub(n.unsigned_abs(), Ordering::Relaxed);
    }
}

fn pool() -> &'static Arc<Pool> {
    POOL.get_or_init(|| {
        let p = Arc::new(Pool {
            queue: Mutex::new(Queue {
                jobs: VecDeque::with_capacity(256),
                idle: 0,
            }),
            ready: Condvar::new(),
            long: AtomicUsize::new(0),
        });
        let n = worker_count();
        for i in 0..n {
            let p2 = Arc::clone(&p);
            if let Err(e) = std::thread::Builder::new()
                .name(format!("iscsi-io-{i}"))
                .spawn(move || worker(&p2))
            {
                tracing::error!(error = %e, "cannot start an I/O worker");
            }
        }
        tracing::info!(workers = n, "I/O worker pool started");
        p
    })
}

/// Short jobs queued or running per LU, from every session: a reset waits
/// until its LUs have none left, so no I/O of any initiator follows its
/// answer.
struct LuBusy {
    count: Mutex<HashMap<usize, usize>>,
    idle: Condvar,
}

fn lu_busy() -> &'static LuBusy {
    static BUSY: OnceLock<LuBusy> = OnceLock::new();
    BUSY.get_or_init(|| LuBusy {
        count: Mutex::new(HashMap::new()),
        idle: Condvar::new(),
    })
}

/// The key of an LU for [`Job::lu_key`]: the address of its device.
pub fn lu_key(dev: &Arc<target_core::Device>) -> usize {
    Arc::as_ptr(dev) as usize
}

fn lu_enter(key: usize) {
    if key != 0 {
        let mut c = lu_busy().count.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry(key).or_insert(0) += 1;
    }
}

fn lu_leave(key: usize) {
    if key == 0 {
        return;
    }
    let b = lu_busy();
    let mut c = b.count.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = c.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            c.remove(&key);
            b.idle.notify_all();
        }
    }
}

/// Wait until no short job of these LUs is queued or running. Gives up
/// (false) when `give_up` says so, checked every `tick`.
pub fn wait_lus_idle(keys: &[usize], tick: Duration, give_up: impl Fn() -> bool) -> bool {
    let b = lu_busy();
    let mut c = b.count.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if !keys.iter().any(|k| c.contains_key(k)) {
            return true;
        }
        if give_up() {
            return false;
        }
        let deadline = Instant::now() + tick;
        c = b
            .idle
            .wait_timeout(c, deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// Take the jobs of `sink` that no worker has started out of the queue;
/// returns how many, and how many of them are short. Their LU and byte
/// accounting ends here.
fn cancel_queued(sink: &Sink) -> (usize, usize) {
    let Some(p) = POOL.get() else {
        return (0, 0);
    };
    let mine: VecDeque<Job> = {
        let mut q = p.queue.lock().unwrap_or_else(|e| e.into_inner());
        if !q
            .jobs
            .iter()
            .any(|j| std::ptr::eq(Arc::as_ptr(&j.sink), sink))
        {
            return (0, 0);
        }
        let (mine, rest): (VecDeque<Job>, VecDeque<Job>) = std::mem::take(&mut q.jobs)
            .into_iter()
            .partition(|j| std::ptr::eq(Arc::as_ptr(&j.sink), sink));
        q.jobs = rest;
        mine
    };
    for j in &mine {
        lu_leave(j.lu_key);
        POOL_BYTES.fetch_sub(j.charge, Ordering::Relaxed);
    }
    if !mine.is_empty() {
        tracing::info!(
            jobs = mine.len(),
            "connection ended: its queued commands are dropped unstarted"
        );
    }
    (mine.len(), mine.iter().filter(|j| !j.long).count())
}

/// Queue a job (a long one gets its own thread when one can be started).
pub fn submit(job: Job) {
    let long = job.long;
    job.sink.started(long);
    lu_enter(job.lu_key);
    POOL_BYTES.fetch_add(job.charge, Ordering::Relaxed);
    let p = pool();
    if long && p.long.fetch_add(1, Ordering::AcqRel) < MAX_LONG {
        // The job waits in a slot the thread takes it from, so a failed
        // spawn can still hand it to the workers.
        let slot = Arc::new(Mutex::new(Some(job)));
        let mine = Arc::clone(&slot);
        let p2 = Arc::clone(p);
        let spawned = std::thread::Builder::new()
            .name("iscsi-long".into())
            .spawn(move || {
                let job = mine.lock().unwrap_or_else(|e| e.into_inner()).take();
                if let Some(job) = job {
                    run(job);
                }
                p2.long.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a thread for a long command");
            p.long.fetch_sub(1, Ordering::AcqRel);
            if let Some(j) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                enqueue(p, j);
            }
        }
        return;
    }
    if long {
        p.long.fetch_sub(1, Ordering::AcqRel);
    }
    enqueue(p, job);
}

fn enqueue(p: &Pool, job: Job) {
    let wake = {
        let mut q = p.queue.lock().unwrap_or_else(|e| e.into_inner());
        // HEAD OF QUEUE goes before every task still waiting (SAM-5 8.6).
        if job.attr == target_core::TaskAttr::HeadOfQueue {
            q.jobs.push_front(job);
        } else {
            q.jobs.push_back(job);
        }
        q.idle > 0
    };
    // Busy workers take the next job without being woken.
    if wake {
        p.ready.notify_one();
    }
}

fn worker(p: &Pool) {
    loop {
        let job = {
            let mut q = p.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(j) = q.jobs.pop_front() {
                    break j;
                }
                q.idle += 1;
                q = p.ready.wait(q).unwrap_or_else(|e| e.into_inner());
                q.idle -= 1;
            }
        };
        run(job);
    }
}

fn run(mut job: Job) {
    if job.sink.closed.load(Ordering::SeqCst) {
        // Its connection ended before it started: never run it.
        lu_leave(job.lu_key);
        POOL_BYTES.fetch_sub(job.charge, Ordering::Relaxed);
        job.sink.complete(None, job.long);
        return;
    }
    let cmd = Command {
        cdb: job.cdb.as_slice(),
        data_out: &job.data_out,
        expected_len: job.cmd.expected_data_len,
        attr: job.attr,
    };
    // A panic in the core must not kill the worker nor leave the
    // connection waiting forever for this completion.
    let out = catch_unwind(AssertUnwindSafe(|| {
        job.luns
            .execute(&job.nexus, job.lun, &cmd, &mut job.data_in)
    }))
    .unwrap_or_else(|_| {
        tracing::error!(lun = job.lun, "command panicked in the I/O pool");
        job.data_in.clear();
        Outcome {
            status: Status::CheckCondition,
            sense: Some(
                Sense::new(SenseKey::HardwareError, Asc::INTERNAL_TARGET_FAILURE)
                    .to_fixed()
                    .to_vec(),
            ),
        }
    });
    lu_leave(job.lu_key);
    // Bytes past the Expected Data Transfer Length are never sent: do not
    // keep them (beyond the charge) while the answer waits to be sent.
    let edtl = job.cmd.expected_data_len as usize;
    let mut overflow = 0;
    if job.data_in.len() > edtl && job.data_in.capacity() + job.data_out.capacity() > job.charge {
        overflow = job.data_in.len() - edtl;
        job.data_in.truncate(edtl);
        job.data_in.shrink_to_fit();
    }
    POOL_BYTES.fetch_sub(job.charge, Ordering::Relaxed);
    let sink = Arc::clone(&job.sink);
    let long = job.long;
    sink.complete(
        Some(Done {
            seq: job.seq,
            cmd: job.cmd,
            cdb: job.cdb,
            out,
            data_out: job.data_out,
            data_in: job.data_in,
            overflow,
        }),
        long,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use iscsi_wire::Bhs;
    use std::sync::atomic::AtomicBool;

    fn done(seq: u64) -> Done {
        Done {
            seq,
            cmd: ScsiCommand::parse(&Bhs::default()),
            cdb: CdbStore::Short([0; 16]),
            out: Outcome {
                status: Status::Good,
                sense: None,
            },
            data_out: Vec::new(),
            data_in: Vec::new(),
            overflow: 0,
        }
    }

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn completions_signal_only_a_sleeping_connection() {
        let s = Sink::new().unwrap();
        s.started(false);
        s.complete(Some(done(1)), false);
        assert!(!readable(s.fd()), "awake: no syscall, it reaps anyway");
        // Completions waiting: do not sleep.
        assert!(!s.prepare_sleep());
        let mut v = Vec::new();
        s.take(&mut v);
        assert_eq!(v.len(), 1);
        assert!(s.prepare_sleep());
        s.started(false);
        s.complete(Some(done(2)), false);
        assert!(readable(s.fd()), "asleep: woken");
        s.woke(true);
        assert!(!readable(s.fd()));
    }

    #[test]
    fn closed_sink_drops_completions_and_ends_after_the_last_job() {
        let s = Sink::new().unwrap();
        s.started(false);
        s.started(false);
        let ended = Arc::new(AtomicBool::new(false));
        let e2 = Arc::clone(&ended);
        s.close(Ends {
            all: Some(Box::new(move || e2.store(true, Ordering::SeqCst))),
            short: None,
        });
        s.complete(Some(done(1)), false);
        assert!(!ended.load(Ordering::SeqCst), "one job still runs");
        // A second close (Drop after end) must not lose the end action.
        s.close(Ends::default());
        s.complete(Some(done(2)), false);
        assert!(ended.load(Ordering::SeqCst));
        let mut v = Vec::new();
        s.take(&mut v);
        assert!(v.is_empty(), "nothing is answered on a closed connection");
    }

    #[test]
    fn short_end_waits_only_for_short_jobs() {
        let s = Sink::new().unwrap();
        s.started(true);
        s.started(false);
        let flag = |b: &Arc<AtomicBool>| {
            let b = Arc::clone(b);
            Some(Box::new(move || b.store(true, Ordering::SeqCst)) as EndAction)
        };
        let (all, short) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        s.close(Ends {
            all: flag(&all),
            short: flag(&short),
        });
        assert!(!short.load(Ordering::SeqCst) && !all.load(Ordering::SeqCst));
        s.complete(Some(done(1)), false);
        assert!(
            short.load(Ordering::SeqCst),
            "the short job was the last short one"
        );
        assert!(!all.load(Ordering::SeqCst), "the long one still runs");
        s.complete(None, true);
        assert!(all.load(Ordering::SeqCst));
    }

    #[test]
    fn close_without_jobs_ends_at_once() {
        let s = Sink::new().unwrap();
        let ended = Arc::new(AtomicBool::new(false));
        let e2 = Arc::clone(&ended);
        s.close(Ends {
            all: Some(Box::new(move || e2.store(true, Ordering::SeqCst))),
            short: None,
        });
        assert!(ended.load(Ordering::SeqCst));
    }

    #[test]
    fn worker_count_is_bounded() {
        let n = worker_count();
        assert!((1..=256).contains(&n));
    }
}
