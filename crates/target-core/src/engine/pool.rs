//! The process-wide worker pool: a fixed set of workers (started on first
//! use) pops [`Job`]s from one queue and starts them with
//! [`LunTable::submit`]. A backstore with an asynchronous path returns at
//! once and completes the job later from its own thread, so no worker
//! waits for it; a synchronous one completes on the worker. Either way the
//! completion goes to the job's [`Sink`]. Long commands (SANITIZE) get a
//! thread of their own so they never starve the workers.
//!
//! Jobs of a closed sink that have not started never run: `Sink::close`
//! takes them out of the queue (and a worker that popped one just before
//! checks again), so no stale WRITE of a dead or reinstated session lands
//! after the initiator logged in again and retried it.
//!
//! Accounting (done by the task queue when it takes a task, released
//! here): the bytes a job may hold ([`pool_bytes`]) and, per LU id, the
//! short jobs not finished ([`wait_lus_idle`]).

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::sink::Sink;
use super::{Cdb, Done, SgBufs};
use crate::{LunTable, Nexus, Reply, Request, SgCommand, TaskAttr};

/// One task handed to the pool, with the buffers it owns.
pub(super) struct Job {
    pub seq: u64,
    pub sink: Arc<Sink>,
    pub luns: Arc<LunTable>,
    pub nexus: Arc<Nexus>,
    pub lun: u64,
    pub cdb: Cdb,
    pub attr: TaskAttr,
    pub expected_len: u32,
    pub data_out: Vec<u8>,
    pub data_in: Vec<u8>,
    /// The LU's id for [`wait_lus_idle`] (0: not tracked, as for long
    /// commands, which resets do not wait for).
    pub lu_key: u64,
    /// Bytes charged to [`pool_bytes`] while the job is queued or running.
    pub charge: usize,
    /// May run for minutes: a thread of its own.
    pub long: bool,
    /// Lent buffers: run with `execute_sg` (data_out / data_in unused).
    pub sg: Option<SgBufs>,
    /// A READ/WRITE of an `io_engine=uring` LU: started on the fabric's
    /// thread ([`start_here`]).
    pub ring: bool,
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

/// Bytes charged by all tasks taken and not finished.
static POOL_BYTES: AtomicUsize = AtomicUsize::new(0);

/// What all taken tasks of every queue hold now.
pub fn pool_bytes() -> usize {
    POOL_BYTES.load(Ordering::Relaxed)
}

pub(super) fn charge(n: usize) {
    POOL_BYTES.fetch_add(n, Ordering::Relaxed);
}

pub(super) fn uncharge(n: usize) {
    POOL_BYTES.fetch_sub(n, Ordering::Relaxed);
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
                .name(format!("io-worker-{i}"))
                .spawn(move || worker(&p2))
            {
                tracing::error!(error = %e, "cannot start an I/O worker");
            }
        }
        tracing::info!(workers = n, "I/O worker pool started");
        p
    })
}

/// Short tasks taken and not finished per LU id, from every queue: a reset
/// waits until its LUs have none left, so no I/O of any initiator follows
/// its answer.
struct LuBusy {
    count: Mutex<HashMap<u64, usize>>,
    idle: Condvar,
}

fn lu_busy() -> &'static LuBusy {
    static BUSY: OnceLock<LuBusy> = OnceLock::new();
    BUSY.get_or_init(|| LuBusy {
        count: Mutex::new(HashMap::new()),
        idle: Condvar::new(),
    })
}

pub(super) fn lu_enter(key: u64) {
    if key != 0 {
        let mut c = lu_busy().count.lock().unwrap_or_else(|e| e.into_inner());
        *c.entry(key).or_insert(0) += 1;
    }
}

pub(super) fn lu_leave(key: u64) {
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

/// Wait until no short task of these LUs (by [`crate::Device::id`]) is
/// taken and unfinished, in any queue. Gives up (false) when `give_up`
/// says so, checked every `tick`.
pub fn wait_lus_idle(ids: &[u64], tick: Duration, give_up: impl Fn() -> bool) -> bool {
    let b = lu_busy();
    let mut c = b.count.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if !ids.iter().any(|k| c.contains_key(k)) {
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
/// returns how many, and how many of them are short. Their accounting
/// ends here.
pub(super) fn cancel_queued(sink: &Sink) -> (usize, usize) {
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
        uncharge(j.charge);
    }
    if !mine.is_empty() {
        tracing::info!(
            jobs = mine.len(),
            "queue closed: its commands not started are dropped"
        );
    }
    (mine.len(), mine.iter().filter(|j| !j.long).count())
}

/// Queue a job (a long one gets its own thread when one can be started).
pub(super) fn submit(job: Job) {
    let long = job.long;
    job.sink.started(long);
    let p = pool();
    if long && p.long.fetch_add(1, Ordering::AcqRel) < MAX_LONG {
        // The job waits in a slot the thread takes it from, so a failed
        // spawn can still hand it to the workers.
        let slot = Arc::new(Mutex::new(Some(job)));
        let mine = Arc::clone(&slot);
        let p2 = Arc::clone(p);
        let spawned = std::thread::Builder::new()
            .name("io-long".into())
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

/// Start a job on the calling thread: for a request the backstore only
/// queues (an io_uring READ/WRITE), so the fabric's thread never blocks
/// and no worker is woken for it.
pub(super) fn start_here(job: Job) {
    job.sink.started(job.long);
    run(job);
}

fn enqueue(p: &Pool, job: Job) {
    let wake = {
        let mut q = p.queue.lock().unwrap_or_else(|e| e.into_inner());
        // HEAD OF QUEUE goes before every task still waiting (SAM-5 8.6).
        if job.attr == TaskAttr::HeadOfQueue {
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

/// What a started job still needs at its completion. Dropped without
/// finishing (the core or the backstore panicked and the completion never
/// ran), it completes the task with HARDWARE ERROR, so the fabric never
/// waits forever for it.
struct Pending {
    seq: u64,
    sink: Arc<Sink>,
    cdb: Option<Cdb>,
    lu_key: u64,
    charge: usize,
    expected_len: u32,
    long: bool,
}

impl Pending {
    fn finish(self, r: Reply) {
        self.finish_with(r, 0)
    }

    fn finish_with(mut self, r: Reply, sg_in: usize) {
        let Reply {
            out,
            mut data_in,
            data_out,
            kept_out,
        } = r;
        lu_leave(self.lu_key);
        // Bytes past the Expected Data Transfer Length are never sent: do
        // not keep them (beyond the charge) while the answer waits.
        let edtl = self.expected_len as usize;
        let mut overflow = 0;
        if data_in.len() > edtl && data_in.capacity() + data_out.capacity() > self.charge {
            overflow = data_in.len() - edtl;
            data_in.truncate(edtl);
            data_in.shrink_to_fit();
        }
        uncharge(self.charge);
        let d = Done {
            seq: self.seq,
            cdb: self.cdb.take().unwrap_or(Cdb::Short([0; 16])),
            out,
            data_out,
            data_in,
            overflow,
            sg_in,
            // As a streamed write's pieces: counted, not given back.
            streamed: kept_out,
            spares: Vec::new(),
        };
        self.sink.complete(Some(d), self.long);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(cdb) = self.cdb.take() else {
            return;
        };
        tracing::error!(seq = self.seq, "command panicked in the I/O engine");
        lu_leave(self.lu_key);
        uncharge(self.charge);
        let d = Done::internal_failure(self.seq, cdb);
        self.sink.complete(Some(d), self.long);
    }
}

fn run(job: Job) {
    if job.sink.closed.load(Ordering::SeqCst) {
        // Its queue closed before it started: never run it.
        lu_leave(job.lu_key);
        uncharge(job.charge);
        job.sink.complete(None, job.long);
        return;
    }
    let Job {
        seq,
        sink,
        luns,
        nexus,
        lun,
        cdb,
        attr,
        expected_len,
        data_out,
        data_in,
        lu_key,
        charge,
        long,
        sg,
        ring: _,
    } = job;
    let pending = |cdb: &Cdb| Pending {
        seq,
        sink,
        cdb: Some(cdb.clone()),
        lu_key,
        charge,
        expected_len,
        long,
    };
    if let Some(sg) = sg {
        // Lent memory: runs here, to completion (the backstore's blocking
        // vectored call is this worker's job, as q-s-d's thread pool does).
        let pending = pending(&cdb);
        let _ = catch_unwind(AssertUnwindSafe(|| {
            let cmd = SgCommand {
                cdb: cdb.as_slice(),
                expected_len,
                attr,
                data_out: &sg.data_out,
                data_in: &sg.data_in,
            };
            let r = luns.execute_sg(&nexus, lun, &cmd);
            let reply = Reply {
                out: r.out,
                data_in,
                data_out,
                kept_out: 0,
            };
            pending.finish_with(reply, r.data_in)
        }));
        return;
    }
    let req = Request {
        cdb: cdb.as_slice(),
        expected_len,
        attr,
        data_out,
        data_in,
    };
    // `req` borrows the CDB; the completion gets a copy (16 bytes inline
    // for nearly every command).
    let pending = pending(&cdb);
    // A panic in the core must not kill the worker; `Pending` answers.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        luns.submit(&nexus, lun, req, move |r| pending.finish(r))
    }));
}
