//! THE SEAM between the vhost fabric and target-core: everything the
//! virtio-scsi side needs from the core goes through [`GuestNexus`], and
//! nothing else in this crate names a target-core execution call.
//!
//! One guest connection is one I_T nexus with one engine [`TaskQueue`]
//! (`target_core::engine`), shared by the request queues' threads behind a
//! lock: SAM task ordering, ABORT TASK and friends are the engine's, for
//! the whole nexus (a guest's queues are one task set, as on tcm_vhost).
//!
//! Where a command runs:
//! - an `io_engine=inline` LU, SIMPLE / HEAD OF QUEUE, nothing ordering it:
//!   on the virtqueue's thread, to completion (the page-cache fast path;
//!   no hand-off). These are tracked here only by tag (overlap, QUERY
//!   TASK, TMFs wait for them: they are short);
//! - everything else (pool LUs, ORDERED, SANITIZE & co.) is submitted to
//!   the engine with a [`Respond`] context, and answered later: the
//!   engine's completion eventfd is registered with the epoll loop of the
//!   control-queue thread ([`GuestNexus::set_waker`]), which reaps and
//!   writes each answer into the chain it belongs to, on the virtqueue it
//!   came from.
//!
//! An ORDERED task first waits for the inline commands of its LU still
//! running on other queue threads, so it is ordered after them too; while
//! it is in the engine the LU's newer commands go to the engine as well.
//!
//! Copies: none for READ and WRITE. The guest's buffers are lent to the
//! core as raw segments of the mapped guest memory (`SgBufs`, built by
//! `queue`), and the backstore reads into / writes from them (fileio:
//! `preadv` / `pwritev`); other commands bounce through the core's own
//! buffers (`target_core::LunTable::execute_sg`). A READ or WRITE of at
//! least [`offload_bytes`] goes to the engine's workers even on an inline
//! LU: its copy dominates, and several run in parallel there.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use target_core::engine::{Cdb, Ends, Limits, SgBufs, Task as EngineTask, TaskQueue};
use target_core::{
    IoEngine, LunTable, Nexus, Outcome, SgCommand, SgOutcome, TaskAttr, TmfFunction, TmfResult,
};

/// One SCSI command from the guest, as the core needs it.
pub struct Task<'a> {
    /// Request id: the task tag of this nexus.
    pub tag: u64,
    /// LUN number (first level, as `scsi::lun::decode` gives it).
    pub lun: u64,
    pub cdb: &'a [u8],
    pub attr: TaskAttr,
    /// The guest's Data-Out and Data-In buffers, lent (moved into the
    /// engine when submitted).
    pub bufs: SgBufs,
    /// Bytes the guest can take (Data-In) or sent (Data-Out).
    pub expected_len: u32,
}

/// Transfers of at least this many bytes run on the engine's workers
/// even for an inline LU (`RTARGET_VHOST_OFFLOAD_BYTES` overrides it for
/// measurements; 0 sends everything to the workers).
pub fn offload_bytes() -> usize {
    static V: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("RTARGET_VHOST_OFFLOAD_BYTES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_OFFLOAD_BYTES)
    })
}

const DEFAULT_OFFLOAD_BYTES: usize = 128 << 10;

/// How a submitted command's answer reaches the guest: called once, on
/// whichever thread reaps it (never with the nexus' lock released midway).
pub trait Respond: Send + 'static {
    /// `data_in`: Data-In bytes already placed in the guest's buffers.
    /// `aborted`: ended by a TMF or an overlapped command; the guest gets
    /// its buffer back with an ABORTED response.
    fn respond(self, out: &Outcome, data_in: usize, aborted: bool);

    /// After a batch of answers (one reap): send what `respond` deferred
    /// (one used-buffer notification per virtqueue, not one per answer).
    fn batch_done() {}
}

/// What a TMF did, in virtio terms the caller maps to a response byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfAnswer {
    /// FUNCTION COMPLETE.
    Complete,
    /// QUERY TASK / QUERY TASK SET: a task is there (FUNCTION SUCCEEDED).
    Succeeded,
    /// The LUN is not mapped.
    IncorrectLun,
    Rejected,
}

/// Task management functions as virtio-scsi names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tmf {
    AbortTask(u64),
    AbortTaskSet,
    ClearTaskSet,
    ClearAca,
    ItNexusReset,
    LogicalUnitReset,
    QueryTask(u64),
    QueryTaskSet,
}

/// Why a command did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its tag is already in the task set (SAM-5 5.9: overlapped command;
    /// the engine's tasks of that LU were aborted).
    Overlapped,
}

/// Run one command on this thread, its data in the lent buffers.
fn run_here(luns: &LunTable, nexus: &Nexus, task: &Task<'_>) -> SgOutcome {
    let cmd = SgCommand {
        cdb: task.cdb,
        expected_len: task.expected_len,
        attr: task.attr,
        data_out: &task.bufs.data_out,
        data_in: &task.bufs.data_in,
    };
    luns.execute_sg(nexus, task.lun, &cmd)
}

/// Registers the engine's completion eventfd with the thread that reaps.
pub type Waker = Box<dyn Fn(RawFd) + Send + Sync>;

/// The engine's context of one task: the tag (with a generation, so an
/// aborted task's late answer cannot clear a newer task of the same tag)
/// and the fabric's reply.
struct Ctx<R> {
    tag: u64,
    gen: u64,
    reply: R,
}

struct State<R> {
    q: TaskQueue<Ctx<R>>,
    /// Engine tasks not answered nor aborted: tag -> (LUN, generation).
    queued: HashMap<u64, (u64, u64)>,
    /// Commands running inline on a queue thread: tag -> LUN.
    inline: HashMap<u64, u64>,
    /// Threads waiting on `inline_done` (std's `notify_all` is a futex
    /// syscall even with nobody waiting: skipped when this is 0, which is
    /// nearly always, instead of paying it on every inline command).
    inline_waiters: usize,
    next_gen: u64,
    /// The completion eventfd went to the waker.
    registered: bool,
}

/// How long a detaching guest waits for its commands still running.
const GONE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Memory the nexus' engine tasks may hold: a guest's rings bound the
/// number of tasks, so these only stop runaway Data-In charges.
const LIMITS: Limits = Limits {
    queue_bytes: 1 << 30,
    total_bytes: 4 << 30,
};

/// One guest's I_T nexus and its task set.
pub struct GuestNexus<R: Respond = crate::queue::Reply> {
    nexus: Arc<Nexus>,
    state: Mutex<State<R>>,
    /// An inline command finished.
    inline_done: Condvar,
    waker: Mutex<Option<Waker>>,
}

impl<R: Respond> GuestNexus<R> {
    pub fn new(nexus: Nexus) -> Arc<GuestNexus<R>> {
        Arc::new(GuestNexus {
            nexus: Arc::new(nexus),
            state: Mutex::new(State {
                q: TaskQueue::new(LIMITS),
                queued: HashMap::new(),
                inline: HashMap::new(),
                inline_waiters: 0,
                next_gen: 0,
                registered: false,
            }),
            inline_done: Condvar::new(),
            waker: Mutex::new(None),
        })
    }

    pub fn nexus(&self) -> &Nexus {
        &self.nexus
    }

    fn lock(&self) -> MutexGuard<'_, State<R>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleep until an inline command finishes (counted, see
    /// `State::inline_waiters`).
    fn wait_inline<'a>(&'a self, mut st: MutexGuard<'a, State<R>>) -> MutexGuard<'a, State<R>> {
        st.inline_waiters += 1;
        let mut st = self.inline_done.wait(st).unwrap_or_else(|e| e.into_inner());
        st.inline_waiters -= 1;
        st
    }

    /// Who is told the engine's completion eventfd once it exists (the
    /// server: thread 0's epoll loop, which then calls [`Self::reap`]).
    pub fn set_waker(&self, w: Waker) {
        *self.waker.lock().unwrap() = Some(w);
        let mut st = self.lock();
        if let (Some(fd), false) = (st.q.completion_fd(), st.registered) {
            st.registered = true;
            (self.waker.lock().unwrap().as_ref().unwrap())(fd);
        }
    }

    /// Start one command. `Ok(Some)`: it ran inline (Data-In is in the
    /// guest's buffers). `Ok(None)`: it went to the engine with the reply
    /// `reply()` makes, which gets its answer later.
    pub fn execute(
        &self,
        luns: &Arc<LunTable>,
        task: Task<'_>,
        reply: impl FnOnce() -> R,
    ) -> Result<Option<SgOutcome>, Refused> {
        let big = task.bufs.data_in.len().max(task.bufs.data_out.len()) >= offload_bytes();
        let inline_lu = luns
            .find(task.lun)
            .is_none_or(|l| l.device.options.io_engine == IoEngine::Inline && !big);
        let long = target_core::may_run_long(task.cdb);
        let mut st = self.lock();
        if st.inline.contains_key(&task.tag) || st.queued.contains_key(&task.tag) {
            // SAM-5 5.9: the overlapped command is refused and the task
            // set it hit is aborted (inline commands cannot be stopped and
            // just finish).
            let lun = task.lun;
            st.queued.retain(|_, (l, _)| *l != lun);
            st.q.abort(|t| t.lun == lun, false);
            self.arm(&mut st);
            drop(st);
            R::batch_done();
            return Err(Refused::Overlapped);
        }
        if inline_lu
            && !long
            && task.attr != TaskAttr::Ordered
            && st.q.may_run_inline(task.lun, task.attr)
        {
            st.inline.insert(task.tag, task.lun);
            drop(st);
            // Remove the tag even if the core panics, so TMFs never wait
            // forever.
            struct Finish<'a, R: Respond>(&'a GuestNexus<R>, u64);
            impl<R: Respond> Drop for Finish<'_, R> {
                fn drop(&mut self) {
                    let mut st = self.0.lock();
                    st.inline.remove(&self.1);
                    let waiters = st.inline_waiters > 0;
                    drop(st);
                    if waiters {
                        self.0.inline_done.notify_all();
                    }
                }
            }
            let _finish = Finish(self, task.tag);
            return Ok(Some(run_here(luns, &self.nexus, &task)));
        }
        if task.attr == TaskAttr::Ordered && !long {
            // Ordered after the LU's inline commands on other threads too.
            while st.inline.values().any(|&l| l == task.lun) {
                st = self.wait_inline(st);
            }
        }
        let gen = st.next_gen;
        st.next_gen += 1;
        let t = EngineTask {
            tag: task.tag,
            lun: task.lun,
            cdb: Cdb::from_slice(task.cdb),
            attr: task.attr,
            expected_len: task.expected_len,
            data_out: Vec::new(),
            data_in: Vec::new(),
            long,
        };
        let ctx = Ctx {
            tag: task.tag,
            gen,
            reply: reply(),
        };
        let (tag, lun, cdb, attr) = (task.tag, task.lun, task.cdb, task.attr);
        match st.q.submit_sg(luns, &self.nexus, t, task.bufs, ctx) {
            Ok(()) => {
                st.queued.insert(tag, (lun, gen));
                if let (Some(fd), false) = (st.q.completion_fd(), st.registered) {
                    if let Some(w) = self.waker.lock().unwrap().as_ref() {
                        st.registered = true;
                        w(fd);
                    }
                }
                self.arm(&mut st);
                drop(st);
                R::batch_done();
                Ok(None)
            }
            // No eventfd to be told with: run it here, answered now.
            Err((t, bufs, ctx)) => {
                drop(st);
                let task = Task {
                    tag,
                    lun,
                    cdb,
                    attr,
                    bufs,
                    expected_len: t.expected_len,
                };
                let r = run_here(luns, &self.nexus, &task);
                ctx.reply.respond(&r.out, r.data_in, false);
                R::batch_done();
                Ok(None)
            }
        }
    }

    /// Answer every finished engine task (the completion eventfd fired).
    pub fn reap(&self) {
        let mut st = self.lock();
        st.q.woke(true);
        self.arm(&mut st);
        drop(st);
        R::batch_done();
    }

    /// Answer what finished until the engine promises to signal the
    /// eventfd for the next answer; with the lock held, so the reaper and
    /// the submitting threads keep the engine's sleep protocol between
    /// them.
    fn arm(&self, st: &mut State<R>) {
        loop {
            Self::answer(st);
            if st.q.prepare_sleep() {
                return;
            }
        }
    }

    fn answer(st: &mut State<R>) {
        let State { q, queued, .. } = st;
        q.reap(|f| {
            if queued.get(&f.ctx.tag).is_some_and(|&(_, g)| g == f.ctx.gen) {
                queued.remove(&f.ctx.tag);
            }
            f.ctx.reply.respond(&f.out, f.sg_in, f.aborted);
        });
    }

    /// Bytes of Data-Out a write CDB asks for (for the residual).
    pub fn data_out_len(&self, luns: &LunTable, lun: u64, cdb: &[u8]) -> Option<u64> {
        luns.data_out_len(lun, cdb)
    }

    /// A task management function: the engine aborts the tasks it affects
    /// (held ones at once, running ones when they finish), each of them is
    /// answered ABORTED to the guest before the TMF's own answer, then the
    /// core applies the LU side effects.
    pub fn task_management(&self, luns: &LunTable, lun: u64, tmf: Tmf) -> TmfAnswer {
        let mapped = luns.find(lun).is_some();
        let func = match tmf {
            Tmf::QueryTask(tag) => {
                let st = self.lock();
                let there = st.inline.get(&tag) == Some(&lun)
                    || st.queued.get(&tag).is_some_and(|&(l, _)| l == lun);
                return match () {
                    _ if there => TmfAnswer::Succeeded,
                    _ if !mapped => TmfAnswer::IncorrectLun,
                    _ => TmfAnswer::Complete,
                };
            }
            Tmf::QueryTaskSet => {
                let st = self.lock();
                let any = st.inline.values().any(|&l| l == lun)
                    || st.queued.values().any(|&(l, _)| l == lun);
                return if any {
                    TmfAnswer::Succeeded
                } else if !mapped {
                    TmfAnswer::IncorrectLun
                } else {
                    TmfAnswer::Complete
                };
            }
            Tmf::AbortTask(tag) => {
                self.abort_and_wait(|t, l| t == tag && l == lun);
                TmfFunction::AbortTask
            }
            Tmf::AbortTaskSet => {
                self.abort_and_wait(|_, l| l == lun);
                TmfFunction::AbortTaskSet
            }
            Tmf::ClearTaskSet => {
                self.abort_and_wait(|_, l| l == lun);
                TmfFunction::ClearTaskSet
            }
            Tmf::ClearAca => TmfFunction::ClearAca,
            Tmf::LogicalUnitReset => {
                self.abort_and_wait(|_, l| l == lun);
                TmfFunction::LogicalUnitReset
            }
            Tmf::ItNexusReset => {
                // Every task of the nexus ends, then the core forgets the
                // nexus' per-LU state (SPC-2 reservations, UA queues), as
                // on a nexus loss; its next command sees a fresh nexus.
                self.abort_and_wait(|_, _| true);
                luns.nexus_gone(&self.nexus);
                return TmfAnswer::Complete;
            }
        };
        match luns.task_management(&self.nexus, func, lun) {
            TmfResult::Complete => TmfAnswer::Complete,
            TmfResult::LunDoesNotExist => TmfAnswer::IncorrectLun,
            TmfResult::NotSupported | TmfResult::Rejected => TmfAnswer::Rejected,
        }
    }

    /// Abort the engine tasks `affected` selects (tag, LUN), wait for the
    /// started ones and the inline ones it selects, answering each. Runs on
    /// the thread that reaps (the control queue's), so it may sleep on the
    /// completion eventfd itself.
    fn abort_and_wait(&self, affected: impl Fn(u64, u64) -> bool) {
        let mut st = self.lock();
        st.queued.retain(|&t, (l, _)| !affected(t, *l));
        st.q.abort(|t| affected(t.tag, t.lun), false);
        while st.inline.iter().any(|(&t, &l)| affected(t, l)) {
            st = self.wait_inline(st);
        }
        loop {
            Self::answer(&mut st);
            if !st.q.aborting() {
                break;
            }
            let Some(fd) = st.q.completion_fd() else {
                break;
            };
            if !st.q.prepare_sleep() {
                continue;
            }
            drop(st);
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for the duration of the call.
            let fired = unsafe { libc::poll(&mut p, 1, -1) } == 1;
            st = self.lock();
            st.q.woke(fired);
        }
        self.arm(&mut st);
        drop(st);
        R::batch_done();
    }

    /// The guest went away: tasks not started never run, late answers are
    /// dropped, and the core drops the nexus' state once the running ones
    /// have finished.
    pub fn gone(&self, luns: &Arc<LunTable>) {
        *self.waker.lock().unwrap() = None;
        let mut st = self.lock();
        while !st.inline.is_empty() {
            st = self.wait_inline(st);
        }
        st.queued.clear();
        let (luns, nexus) = (Arc::clone(luns), Arc::clone(&self.nexus));
        let idle = Arc::new((Mutex::new(false), Condvar::new()));
        let i2 = Arc::clone(&idle);
        st.q.close(Ends {
            all: Some(Box::new(move || luns.nexus_gone(&nexus))),
            short: Some(Box::new(move || {
                *i2.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
                i2.1.notify_all();
            })),
        });
        st.registered = false;
        drop(st);
        // Engine tasks still running read into the guest's memory itself
        // (lent buffers): wait until they finished, so nothing writes it
        // once the guest is gone (its memory may be a new guest's next).
        // Bounded: a hung backstore must not hang the socket for good.
        let (m, c) = &*idle;
        let g = m.lock().unwrap_or_else(|e| e.into_inner());
        let timed_out = c
            .wait_timeout_while(g, GONE_WAIT, |done| !*done)
            .unwrap_or_else(|e| e.into_inner())
            .1
            .timed_out();
        if timed_out {
            tracing::warn!(
                "vhost guest gone with commands still running in its backstore after {GONE_WAIT:?}"
            );
        }
    }

    /// LUs the guest no longer sees (unmapped) forget its nexus, once its
    /// inline commands on them finished (engine tasks hold their LU and
    /// finish on it).
    pub fn lus_removed(&self, removed: &LunTable) {
        let mut st = self.lock();
        while st.inline.values().any(|&l| removed.find(l).is_some()) {
            st = self.wait_inline(st);
        }
        drop(st);
        removed.nexus_gone(&self.nexus);
    }

    /// Tell the nexus the LUN inventory changed (queues 3F/0E).
    pub fn luns_changed(&self, luns: &LunTable) {
        luns.luns_changed(&self.nexus);
    }

    /// Tasks in the task set now (for tests and `sessions`).
    pub fn running(&self) -> usize {
        let st = self.lock();
        st.inline.len() + st.queued.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    use backstore::{Backstore, Capabilities, IoVecs, RamBackstore};
    use target_core::{Device, DeviceOptions, Lun, Status};

    /// A RAM backstore whose reads wait at a gate, so a command can be
    /// held running while the test issues others.
    struct Gated {
        inner: RamBackstore,
        entered: Mutex<mpsc::Sender<()>>,
        open: (Mutex<bool>, Condvar),
    }

    impl Gated {
        fn set(&self, open: bool) {
            *self.open.0.lock().unwrap() = open;
            self.open.1.notify_all();
        }
    }

    impl Backstore for Gated {
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            let _ = self.entered.lock().unwrap().send(());
            let mut open = self.open.0.lock().unwrap();
            while !*open {
                open = self.open.1.wait(open).unwrap();
            }
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
            self.inner.write_at(buf, offset)
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// (tag, status, Data-In bytes, aborted)
    type Answer = (u64, Status, usize, bool);

    struct Chan(u64, mpsc::Sender<Answer>);

    impl Respond for Chan {
        fn respond(self, out: &Outcome, data_in: usize, aborted: bool) {
            self.1.send((self.0, out.status, data_in, aborted)).unwrap();
        }
    }

    const READ_1: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    const TUR: [u8; 6] = [0; 6];

    struct Rig {
        store: Arc<Gated>,
        entered: mpsc::Receiver<()>,
        luns: Arc<LunTable>,
        nexus: Arc<GuestNexus<Chan>>,
        fd: Arc<Mutex<Option<RawFd>>>,
        tx: mpsc::Sender<Answer>,
        rx: mpsc::Receiver<Answer>,
    }

    impl Rig {
        fn new(engine: IoEngine) -> Rig {
            let (etx, entered) = mpsc::channel();
            let store = Arc::new(Gated {
                inner: RamBackstore::new(1 << 20).unwrap(),
                entered: Mutex::new(etx),
                open: (Mutex::new(false), Condvar::new()),
            });
            let mut opts = DeviceOptions::new("g", "5a4b3c2d-0000-4000-8000-000000000001");
            opts.io_engine = engine;
            let dev = Device::new(opts, store.clone());
            let luns = Arc::new(LunTable {
                luns: vec![Lun {
                    id: 0,
                    device: dev,
                    write_protect: false,
                }],
            });
            let nexus = GuestNexus::new(Nexus {
                id: 1 << 48,
                initiator_port: "naa.5001405000000001".into(),
                target_port: "naa.5001405000000002,t,0x0001".into(),
                relative_port_id: 1,
                tpg_tag: 1,
            });
            let fd = Arc::new(Mutex::new(None));
            let f = fd.clone();
            nexus.set_waker(Box::new(move |d| *f.lock().unwrap() = Some(d)));
            let (tx, rx) = mpsc::channel();
            Rig {
                store,
                entered,
                luns,
                nexus,
                fd,
                tx,
                rx,
            }
        }

        /// Send one command; its answer if it ran inline.
        fn send(&self, tag: u64, cdb: &[u8], attr: TaskAttr) -> Result<Option<Status>, Refused> {
            // The memory owns itself: `keep` is the buffer the segment
            // points into, so it lives as long as the engine holds it.
            struct Owned(std::cell::UnsafeCell<[u8; 512]>);
            // SAFETY: only the kernel / volatile copies touch the bytes.
            unsafe impl Send for Owned {}
            // SAFETY: as above.
            unsafe impl Sync for Owned {}
            let mem = Arc::new(Owned(std::cell::UnsafeCell::new([0u8; 512])));
            let p = mem.0.get().cast::<u8>();
            // SAFETY: 512 bytes inside `mem`, kept alive by `keep`.
            let data_in = unsafe { IoVecs::new([(p, 512)], mem) };
            let task = Task {
                tag,
                lun: 0,
                cdb,
                attr,
                bufs: SgBufs {
                    data_out: IoVecs::empty(),
                    data_in,
                },
                expected_len: 512,
            };
            let tx = self.tx.clone();
            let r = self.nexus.execute(&self.luns, task, || Chan(tag, tx));
            r.map(|o| o.map(|o| o.out.status))
        }

        /// The next answer, reaped as the server's epoll loop does: on
        /// the completion eventfd.
        fn next(&self) -> Answer {
            loop {
                if let Ok(a) = self.rx.try_recv() {
                    return a;
                }
                let fd = self.fd.lock().unwrap().expect("registered");
                let mut p = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the duration of the call.
                assert_eq!(unsafe { libc::poll(&mut p, 1, 10_000) }, 1, "no answer");
                self.nexus.reap();
            }
        }
    }

    /// Pool LU: a READ held in the backstore, an ORDERED TUR behind it and
    /// a SIMPLE TUR behind that one wait in the engine (answered nothing);
    /// ABORT TASK of the ORDERED one answers it ABORTED before the TMF
    /// completes and lets the SIMPLE one run; the READ finishes last.
    #[test]
    fn pool_lu_ordered_then_abort_task_of_a_held_command() {
        let rig = Rig::new(IoEngine::Pool);
        assert_eq!(rig.send(1, &TUR, TaskAttr::Simple), Ok(None));
        assert_eq!(
            rig.next(),
            (1, Status::CheckCondition, 0, false),
            "power-on UA"
        );

        assert_eq!(rig.send(7, &READ_1, TaskAttr::Simple), Ok(None));
        rig.entered.recv().unwrap();
        assert_eq!(rig.send(8, &TUR, TaskAttr::Ordered), Ok(None));
        assert_eq!(rig.send(9, &TUR, TaskAttr::Simple), Ok(None));
        rig.nexus.reap();
        assert!(rig.rx.try_recv().is_err(), "8 waits for 7, 9 for 8");
        assert_eq!(rig.nexus.running(), 3);
        let q = |t| rig.nexus.task_management(&rig.luns, 0, Tmf::QueryTask(t));
        assert_eq!(q(8), TmfAnswer::Succeeded);
        assert_eq!(
            rig.nexus.task_management(&rig.luns, 3, Tmf::QueryTask(8)),
            TmfAnswer::IncorrectLun
        );

        let a = rig.nexus.task_management(&rig.luns, 0, Tmf::AbortTask(8));
        assert_eq!(a, TmfAnswer::Complete);
        assert_eq!(
            rig.rx.try_recv().unwrap(),
            (8, Status::TaskAborted, 0, true)
        );
        assert_eq!(q(8), TmfAnswer::Complete, "gone from the task set");
        assert_eq!(
            rig.next(),
            (9, Status::Good, 0, false),
            "released, 7 still runs"
        );
        rig.store.set(true);
        assert_eq!(rig.next(), (7, Status::Good, 512, false));
        assert_eq!(rig.nexus.running(), 0);
    }

    /// ABORT TASK of a running command waits until it finished and it is
    /// answered ABORTED first. A tag used twice while the first runs: the
    /// new command is refused (overlapped), the running one is aborted and
    /// answered ABORTED once it finished; then the tag is free again.
    #[test]
    fn abort_task_of_a_running_command_and_an_overlapped_tag() {
        let rig = Rig::new(IoEngine::Pool);
        assert_eq!(rig.send(1, &TUR, TaskAttr::Simple), Ok(None));
        rig.next();

        assert_eq!(rig.send(7, &READ_1, TaskAttr::Simple), Ok(None));
        rig.entered.recv().unwrap();
        let (n, l) = (rig.nexus.clone(), rig.luns.clone());
        let aborter = std::thread::spawn(move || n.task_management(&l, 0, Tmf::AbortTask(7)));
        // Out of the task set at once; the TMF waits for the READ.
        while rig.nexus.running() != 0 {
            std::thread::yield_now();
        }
        assert!(rig.rx.try_recv().is_err(), "not answered while it runs");
        rig.store.set(true);
        assert_eq!(aborter.join().unwrap(), TmfAnswer::Complete);
        assert_eq!(rig.rx.try_recv().unwrap(), (7, Status::Good, 512, true));

        rig.store.set(false);
        assert_eq!(rig.send(7, &READ_1, TaskAttr::Simple), Ok(None));
        rig.entered.recv().unwrap();
        assert_eq!(
            rig.send(7, &TUR, TaskAttr::Simple),
            Err(Refused::Overlapped)
        );
        assert_eq!(rig.nexus.running(), 0, "aborted: out of the task set");
        rig.store.set(true);
        assert_eq!(rig.next(), (7, Status::Good, 512, true));
        assert_eq!(rig.send(7, &TUR, TaskAttr::Simple), Ok(None));
        assert_eq!(
            rig.next(),
            (7, Status::Good, 0, false),
            "tag 7 is free again"
        );
    }

    /// An inline LU runs SIMPLE commands on the caller's thread (answered
    /// at once), ORDERED ones through the engine.
    #[test]
    fn inline_lu_runs_simple_here_and_ordered_in_the_engine() {
        let rig = Rig::new(IoEngine::Inline);
        rig.store.set(true);
        let r = rig.send(1, &TUR, TaskAttr::Simple);
        assert_eq!(r, Ok(Some(Status::CheckCondition)));
        assert_eq!(
            rig.send(2, &READ_1, TaskAttr::Simple),
            Ok(Some(Status::Good))
        );
        assert_eq!(rig.send(3, &READ_1, TaskAttr::Ordered), Ok(None));
        assert_eq!(rig.next(), (3, Status::Good, 512, false));
    }
}
