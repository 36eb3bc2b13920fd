//! The iSCSI side of the I/O engine (`target_core::engine`): which
//! commands leave the connection thread, turning their answers into
//! Data-In/SCSI Response on the connection thread (so StatSN and the order
//! of PDUs stay single-threaded), and the waits that task management and
//! logout need. Task ordering, the worker pool and completions are the
//! engine's; this file only adapts PDUs to engine tasks.
//!
//! Rules kept here:
//! - An engine task counts against the command window until it is
//!   answered or aborted, so MaxCmdSN never offers more than the
//!   connection can hold.
//! - Memory: the connection's engine queue is bounded by [`LIMITS`]; once
//!   congested the connection stops reading and handling PDUs
//!   (back-pressure through TCP) until its tasks complete. Its own tasks
//!   always complete without the socket, so this cannot deadlock, and one
//!   initiator cannot make the pool hold more than the budget however many
//!   large READs it pipelines without reading the answers
//!   (docs/io-engines-and-qos.md, "Memory bounds").
//! - An aborted task's response is never sent. A TMF waits for the aborted
//!   tasks that will finish soon before it answers (they cannot be stopped
//!   mid-I/O), so no effect of theirs follows the TMF response; long ones
//!   (SANITIZE) are detached instead: they go on, by design, through resets.
//!   Functions on a whole LU (CLEAR TASK SET, resets) also wait for other
//!   sessions' tasks there (`engine::wait_lus_idle`).

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use iscsi_wire::request::ScsiCommand;
use target_core::engine::{self, Cdb, Finished, Limits, Task, TaskInfo, TaskQueue};
use target_core::IoEngine;

use crate::server::STOP_KILL;
use crate::session::Session;
use crate::txq::TxQueue;

/// Bytes the engine tasks of one connection may hold before it stops taking
/// new commands (back-pressure): 8 READs of 8 MiB, or 64 of 1 MiB, in flight.
pub const CONN_POOL_BYTES: usize = 64 << 20;
/// Bytes all engine tasks may hold before connections with tasks of their
/// own stop taking new ones (a connection without any still gets one task
/// at a time, so no initiator is locked out).
pub const POOL_TOTAL_BYTES: usize = 1 << 30;

/// The engine's memory bounds for an iSCSI connection.
pub const LIMITS: Limits = Limits {
    queue_bytes: CONN_POOL_BYTES,
    total_bytes: POOL_TOTAL_BYTES,
};

/// A connection's engine queue; each task carries its command header.
pub type Offload = TaskQueue<ScsiCommand>;

/// A connection's engine queue. The connection thread submits and reaps
/// (after each batch of PDUs it handled), so io_uring requests of one
/// wake-up go to the kernel together.
pub fn new_offload() -> Offload {
    let mut q = Offload::new(LIMITS);
    q.batch_submissions();
    q
}

/// What `poll_conn` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub socket: bool,
    pub sink: bool,
}

/// Wait up to `timeout` for the socket (`None`: not for it, the
/// connection is congested) or a completion. Returns at once (sink ready)
/// when completions are already waiting.
pub fn wait(q: &Offload, sock: Option<RawFd>, timeout: Duration) -> Ready {
    let Some(fd) = q.completion_fd() else {
        return poll_conn(sock, None, timeout);
    };
    if !q.prepare_sleep() {
        return Ready {
            socket: false,
            sink: true,
        };
    }
    let r = poll_conn(sock, Some(fd), timeout);
    q.woke(r.sink);
    r
}

/// Wait up to `timeout` for the socket and/or the sink to become readable.
pub fn poll_conn(sock: Option<RawFd>, sink: Option<RawFd>, timeout: Duration) -> Ready {
    let mut fds = [
        libc::pollfd {
            fd: sock.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: sink.unwrap_or(-1),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `fds` is a valid array of two pollfd for the whole call
    // (a negative fd is ignored by poll(2)).
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
    if n <= 0 {
        return Ready {
            socket: false,
            sink: false,
        };
    }
    Ready {
        // Errors and hang-ups count as readable: the read reports them.
        socket: fds[0].revents != 0,
        sink: fds[1].revents != 0,
    }
}

impl Session {
    /// Whether a command for `lun` goes to the engine, and if so whether it
    /// is a long one: long commands, LUs whose `io_engine` is pool or uring, and
    /// commands that task ordering holds behind older engine tasks. One
    /// LUN lookup and one branch for inline LUs.
    pub fn pool_choice(&self, lun: u64, c: &ScsiCommand, cdb: &[u8]) -> Option<bool> {
        if target_core::may_run_long(cdb) {
            return Some(true);
        }
        match self.luns.find(lun) {
            Some(l) if l.device.options.io_engine != IoEngine::Inline => Some(false),
            _ if !self
                .offload
                .may_run_inline(lun, crate::session::task_attr(c.attr)) =>
            {
                Some(false)
            }
            _ => None,
        }
    }

    /// Hand a command whose Data-Out is complete to the engine. `data_out`
    /// is a pooled buffer that comes back with the completion.
    pub fn submit(
        &mut self,
        tx: &mut TxQueue,
        c: &ScsiCommand,
        cdb: &[u8],
        data_out: Vec<u8>,
        long: bool,
    ) {
        let task = Task {
            tag: u64::from(c.itt),
            lun: scsi::lun::decode(c.lun),
            cdb: Cdb::from_slice(cdb),
            attr: crate::session::task_attr(c.attr),
            expected_len: c.expected_data_len,
            data_out,
            data_in: tx.take_filled(), // the core overwrites or clears it (see TxQueue::take_filled)
            long,
        };
        if let Err((task, _)) = self.offload.submit(&self.luns, &self.nexus_arc, task, *c) {
            // No eventfd: run it here rather than fail it.
            self.execute_inline(tx, c, cdb, &task.data_out);
            tx.recycle(task.data_out);
            tx.recycle(task.data_in);
        }
    }

    /// Queue the responses of every finished engine task.
    pub fn reap(&mut self, tx: &mut TxQueue) {
        let mut fin = std::mem::take(&mut self.finished);
        self.offload.reap(|f| fin.push(f));
        for f in fin.drain(..) {
            self.finish(tx, f);
        }
        self.finished = fin;
    }

    fn finish(&mut self, tx: &mut TxQueue, mut f: Finished<ScsiCommand>) {
        for b in f.spares.drain(..) {
            tx.recycle(b);
        }
        if f.aborted {
            tx.recycle(f.data_in);
            tx.recycle(f.data_out);
            return;
        }
        let c = f.ctx;
        let lun = scsi::lun::decode(c.lun);
        // A streamed write's data went to the backstore in pieces.
        let data_out_len = f.data_out.len() + f.streamed;
        self.count_io(lun, &c, f.data_in.len(), data_out_len);
        self.respond(
            tx,
            &c,
            f.cdb.as_slice(),
            data_out_len,
            f.out,
            f.data_in,
            f.overflow,
        );
        tx.recycle(f.data_out);
    }

    /// Process completions until `pred` holds. False if the connection was
    /// killed meanwhile (the caller then closes it).
    pub fn wait_until(&mut self, tx: &mut TxQueue, pred: impl Fn(&Offload) -> bool) -> bool {
        loop {
            self.reap(tx);
            if pred(&self.offload) {
                return true;
            }
            if self
                .conn
                .as_ref()
                .is_some_and(|h| h.stop.load(Ordering::SeqCst) == STOP_KILL)
            {
                return false;
            }
            if let Some(fd) = self.offload.completion_fd() {
                if self.offload.prepare_sleep() {
                    let fired = wait_fd(fd, crate::conn::TICK);
                    self.offload.woke(fired);
                }
            }
        }
    }

    /// Wait until no session has a short engine task on the LU `lun` (every
    /// LU of the table when `None`) unfinished: a reset answers only after
    /// them. False if the connection was killed meanwhile.
    pub fn wait_lus_idle(&self, lun: Option<u64>) -> bool {
        let ids: Vec<u64> = self
            .luns
            .luns
            .iter()
            .filter(|l| lun.is_none_or(|n| n == l.id))
            .map(|l| l.device.id())
            .collect();
        let conn = self.conn.clone();
        engine::wait_lus_idle(&ids, crate::conn::TICK, || {
            conn.as_ref()
                .is_some_and(|h| h.stop.load(Ordering::SeqCst) == STOP_KILL)
        })
    }

    /// Wait until only long tasks remain, their responses queued.
    pub fn settle(&mut self, tx: &mut TxQueue) -> bool {
        if !self.offload.active() {
            return true;
        }
        self.wait_until(tx, |o| o.only_long_left())
    }

    /// Abort the engine tasks `which` selects: none of their responses will
    /// be sent; wait for the short ones to finish. Returns how many were
    /// aborted, `None` if the connection was killed while waiting.
    pub fn abort_flights(
        &mut self,
        tx: &mut TxQueue,
        which: impl Fn(&TaskInfo) -> bool,
    ) -> Option<usize> {
        // Streamed writes among them take no more data: they finish once
        // their pieces in flight complete.
        self.seal_streams(&which);
        let n = self.offload.abort(which, false);
        if n > 0 && !self.wait_until(tx, |o| !o.aborting()) {
            return None;
        }
        // Held tasks aborted now have their buffers waiting.
        self.reap(tx);
        Some(n)
    }
}

/// Sleep until `fd` is readable (true) or `timeout` passes.
fn wait_fd(fd: RawFd, timeout: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut p, 1, ms) };
    n > 0 && p.revents != 0
}
