//! The completion mailbox of one task queue ([`Sink`]): finished tasks are
//! posted here from any thread (a worker, a backstore's completion thread)
//! and an eventfd wakes the fabric's thread, which alone builds answers.
//!
//! A sink outlives its queue while tasks still run: once closed, late
//! completions are dropped (never answered on a dead or new connection)
//! and the last one runs the session's deferred end ([`Ends`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::Done;

/// What a session must do once its tasks have finished.
pub type EndAction = Box<dyn FnOnce() + Send>;

/// The actions a closed sink runs as its tasks finish.
#[derive(Default)]
pub struct Ends {
    /// After the last task, long ones included (the nexus may go).
    pub all: Option<EndAction>,
    /// After the last short task: nothing the session sent can still
    /// change data, but a long command (SANITIZE) that goes on by design.
    pub short: Option<EndAction>,
}

#[derive(Default)]
struct SinkState {
    done: Vec<Done>,
    /// Tasks handed to the pool and not yet finished.
    running: usize,
    /// Of those, the short ones.
    running_short: usize,
    /// The queue is gone: drop completions.
    closed: bool,
    /// The fabric's thread is (about to be) asleep in poll: the next
    /// completion must write the eventfd. While it is awake it reaps
    /// without being told, which saves a syscall per completion.
    sleeping: bool,
    end: Ends,
}

/// Per-queue completion mailbox.
pub struct Sink {
    efd: OwnedFd,
    state: Mutex<SinkState>,
    /// `state.closed`, readable without the lock by a worker about to run
    /// one of this sink's tasks.
    pub(super) closed: AtomicBool,
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

    pub(super) fn started(&self, long: bool) {
        let mut s = self.lock();
        s.running += 1;
        s.running_short += usize::from(!long);
    }

    /// The end actions that are due: the sink is closed and their tasks
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

    /// A task finished (`Some`) or was dropped unstarted (`None`).
    pub(super) fn complete(&self, d: Option<Done>, long: bool) {
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

    /// The queue is gone. Its tasks that have not started are dropped;
    /// each of `ends` runs now if none of its tasks runs, else after the
    /// last one finishes; completions are dropped from now on.
    pub(super) fn close(&self, ends: Ends) {
        self.closed.store(true, Ordering::SeqCst);
        let (cancelled, cancelled_short) = super::pool::cancel_queued(self);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Cdb;
    use crate::{Outcome, Status};
    use std::sync::Arc;

    fn done(seq: u64) -> Done {
        Done {
            seq,
            cdb: Cdb::Short([0; 16]),
            out: Outcome {
                status: Status::Good,
                sense: None,
            },
            data_out: Vec::new(),
            data_in: Vec::new(),
            overflow: 0,
            sg_in: 0,
            streamed: 0,
            spares: Vec::new(),
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
    fn completions_signal_only_a_sleeping_queue() {
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
    fn closed_sink_drops_completions_and_ends_after_the_last_task() {
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
        assert!(!ended.load(Ordering::SeqCst), "one task still runs");
        // A second close (Drop after end) must not lose the end action.
        s.close(Ends::default());
        s.complete(Some(done(2)), false);
        assert!(ended.load(Ordering::SeqCst));
        let mut v = Vec::new();
        s.take(&mut v);
        assert!(v.is_empty(), "nothing is answered on a closed queue");
    }

    #[test]
    fn short_end_waits_only_for_short_tasks() {
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
            "the short task was the last short one"
        );
        assert!(!all.load(Ordering::SeqCst), "the long one still runs");
        s.complete(None, true);
        assert!(all.load(Ordering::SeqCst));
    }

    #[test]
    fn close_without_tasks_ends_at_once() {
        let s = Sink::new().unwrap();
        let ended = Arc::new(AtomicBool::new(false));
        let e2 = Arc::clone(&ended);
        s.close(Ends {
            all: Some(Box::new(move || e2.store(true, Ordering::SeqCst))),
            short: None,
        });
        assert!(ended.load(Ordering::SeqCst));
    }
}
