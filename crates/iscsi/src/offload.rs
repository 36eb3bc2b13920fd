//! The connection side of commands that run on the worker pool (`pool`):
//! which commands go there, the tasks in flight, turning completions into
//! Data-In/SCSI Response on the connection thread (so StatSN and the order
//! of PDUs stay single-threaded), and the waits that task attributes, task
//! management and logout need.
//!
//! Rules kept here:
//! - A pool task counts against the command window until it is answered or
//!   aborted, so MaxCmdSN never offers more than the connection can hold.
//! - Memory: each task is charged the bytes its buffers may hold (at least
//!   its Expected Data Transfer Length) until its answer is queued for
//!   sending. While a connection's tasks hold [`CONN_POOL_BYTES`], or the
//!   pool as a whole holds [`POOL_TOTAL_BYTES`] and this connection has
//!   tasks of its own, the connection is congested: it stops reading and
//!   handling PDUs (back-pressure through TCP) until its tasks complete.
//!   Its own tasks always complete without the socket, so this cannot
//!   deadlock, and one initiator cannot make the pool hold more than the
//!   budget however many large READs it pipelines without reading the
//!   answers (docs/io-engines-and-qos.md, "Memory bounds").
//! - ORDERED waits for every task before it and runs alone; HEAD OF QUEUE
//!   jumps the pool's queue; SIMPLE does neither.
//! - An aborted task's response is never sent. A TMF waits for the aborted
//!   tasks that will finish soon before it answers (they cannot be stopped
//!   mid-I/O), so no effect of theirs follows the TMF response; long ones
//!   (SANITIZE) are detached instead: they go on, by design, through resets.
//!   Functions on a whole LU (CLEAR TASK SET, resets) also wait for other
//!   sessions' pool tasks there (`pool::wait_lus_idle`).

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use iscsi_wire::request::ScsiCommand;
use target_core::{IoEngine, TaskAttr};

use crate::dataout::CdbStore;
use crate::pool::{self, Done, Ends, Job, Sink};
use crate::server::STOP_KILL;
use crate::session::Session;
use crate::txq::TxQueue;

/// Bytes the pool tasks of one connection may hold before it stops taking
/// new commands (back-pressure): 8 READs of 8 MiB, or 64 of 1 MiB, in flight.
pub const CONN_POOL_BYTES: usize = 64 << 20;
/// Bytes all queued and running pool tasks may hold before connections
/// with tasks of their own stop taking new ones (a connection without any
/// still gets one task at a time, so no initiator is locked out).
pub const POOL_TOTAL_BYTES: usize = 1 << 30;

/// Most of a task's Expected Data Transfer Length charged for its Data-In
/// (more than the core ever returns; see `pool::run` for the rare excess).
const MAX_DATA_IN_CHARGE: usize = 16 << 20;

/// A task running on the pool.
pub struct Flight {
    seq: u64,
    pub itt: u32,
    pub lun: [u8; 8],
    /// May run for minutes (SANITIZE): never waited for by TMFs.
    long: bool,
    /// Aborted (TMF, logout): its completion is dropped.
    aborted: bool,
    /// Bytes charged against the connection's budget until completion.
    charge: usize,
}

/// Per-connection state of pool tasks.
#[derive(Default)]
pub struct Offload {
    sink: Option<Arc<Sink>>,
    flights: Vec<Flight>,
    /// Flights not aborted: they hold command window slots.
    live: u32,
    /// Sum of the flights' charges.
    bytes: usize,
    next_seq: u64,
    /// Completions being processed (capacity kept).
    done: Vec<Done>,
}

impl Offload {
    /// Whether any task is in flight (the connection must watch the sink).
    pub fn active(&self) -> bool {
        !self.flights.is_empty()
    }

    /// Tasks holding a command window slot.
    pub fn live(&self) -> u32 {
        self.live
    }

    /// The connection's tasks hold all the memory they may (see the module
    /// comment): take no new PDU until some complete.
    pub fn congested(&self) -> bool {
        self.bytes >= CONN_POOL_BYTES || (self.bytes > 0 && pool::pool_bytes() >= POOL_TOTAL_BYTES)
    }

    /// A task with this ITT is still running and not aborted.
    pub fn has_itt(&self, itt: u32) -> bool {
        self.flights.iter().any(|f| f.itt == itt && !f.aborted)
    }

    /// The connection ends: late completions are dropped, queued jobs are
    /// dropped unstarted, and each of `ends` runs once its running jobs
    /// have finished (now if none runs).
    pub fn close(&mut self, ends: Ends) {
        self.flights.clear();
        self.live = 0;
        self.bytes = 0;
        match &self.sink {
            Some(s) => s.close(ends),
            None => {
                ends.short.into_iter().for_each(|f| f());
                ends.all.into_iter().for_each(|f| f());
            }
        }
    }
}

/// What `poll_conn` saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    pub socket: bool,
    pub sink: bool,
}

impl Offload {
    /// Wait up to `timeout` for the socket (`None`: not for it, the
    /// connection is congested) or a completion. Returns at once (sink
    /// ready) when completions are already waiting.
    pub fn wait(&self, sock: Option<RawFd>, timeout: Duration) -> Ready {
        let Some(sink) = &self.sink else {
            return poll_conn(sock, None, timeout);
        };
        if !sink.prepare_sleep() {
            return Ready {
                socket: false,
                sink: true,
            };
        }
        let r = poll_conn(sock, Some(sink.fd()), timeout);
        sink.woke(r.sink);
        r
    }
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
    /// Whether a command for `lun` goes to the pool, and if so whether it
    /// is a long one. One LUN lookup; nothing else for inline LUs.
    pub fn pool_choice(&self, lun: u64, cdb: &[u8]) -> Option<bool> {
        if target_core::may_run_long(cdb) {
            return Some(true);
        }
        match self.luns.find(lun) {
            Some(l) if l.device.options.io_engine == IoEngine::Pool => Some(false),
            _ => None,
        }
    }

    /// Hand a command whose Data-Out is complete to the pool. `data_out` is
    /// a pooled buffer that comes back with the completion.
    pub fn submit(
        &mut self,
        tx: &mut TxQueue,
        c: &ScsiCommand,
        cdb: &[u8],
        data_out: Vec<u8>,
        long: bool,
    ) {
        let lun = scsi::lun::decode(c.lun);
        let attr = crate::session::task_attr(c.attr);
        if attr == TaskAttr::Ordered {
            // Everything older finishes first (SAM-5 ordered task).
            if !self.settle(tx) {
                tx.recycle(data_out);
                return;
            }
        }
        let sink = match &self.offload.sink {
            Some(s) => Arc::clone(s),
            None => match Sink::new() {
                Ok(s) => {
                    let s = Arc::new(s);
                    self.offload.sink = Some(Arc::clone(&s));
                    s
                }
                Err(e) => {
                    // No eventfd: run it here rather than fail it.
                    tracing::warn!(error = %e, "cannot create a completion sink; running inline");
                    self.execute_inline(tx, c, cdb, &data_out);
                    tx.recycle(data_out);
                    return;
                }
            },
        };
        let seq = self.offload.next_seq;
        self.offload.next_seq += 1;
        let data_in = tx.take_filled(); // the core overwrites or clears it (see TxQueue::take_filled)
                                        // An absurd EDTL must not pin the pool's budget: no command yields
                                        // more Data-In than the core's MAXIMUM TRANSFER LENGTH (8 MiB).
        let edtl = (c.expected_data_len as usize).min(MAX_DATA_IN_CHARGE);
        let charge = data_in.capacity().max(edtl) + data_out.capacity();
        self.offload.flights.push(Flight {
            seq,
            itt: c.itt,
            lun: c.lun,
            long,
            aborted: false,
            charge,
        });
        self.offload.live += 1;
        self.offload.bytes += charge;
        let lu_key = match self.luns.find(lun) {
            Some(l) if !long => pool::lu_key(&l.device),
            _ => 0,
        };
        let cdb = if cdb.len() <= 16 {
            let mut b = [0u8; 16];
            b[..cdb.len()].copy_from_slice(cdb);
            CdbStore::Short(b)
        } else {
            CdbStore::Long(cdb.to_vec())
        };
        pool::submit(Job {
            seq,
            sink,
            luns: Arc::clone(&self.luns),
            nexus: Arc::clone(&self.nexus_arc),
            lun,
            cmd: *c,
            cdb,
            attr,
            data_out,
            data_in,
            lu_key,
            charge,
            long,
        });
        if attr == TaskAttr::Ordered && !long {
            // ...and nothing newer starts before it has finished.
            self.wait_until(tx, |o| !o.flights.iter().any(|f| f.seq == seq));
        }
    }

    /// Queue the responses of every finished pool task.
    pub fn reap(&mut self, tx: &mut TxQueue) {
        let Some(sink) = &self.offload.sink else {
            return;
        };
        let mut done = std::mem::take(&mut self.offload.done);
        sink.take(&mut done);
        for d in done.drain(..) {
            self.finish(tx, d);
        }
        self.offload.done = done;
    }

    fn finish(&mut self, tx: &mut TxQueue, d: Done) {
        let pos = self.offload.flights.iter().position(|f| f.seq == d.seq);
        let aborted = match pos {
            Some(i) => {
                let f = self.offload.flights.swap_remove(i);
                if !f.aborted {
                    self.offload.live -= 1;
                }
                self.offload.bytes -= f.charge;
                f.aborted
            }
            None => true,
        };
        if aborted {
            tx.recycle(d.data_in);
            tx.recycle(d.data_out);
            return;
        }
        let lun = scsi::lun::decode(d.cmd.lun);
        self.count_io(lun, &d.cmd, d.data_in.len(), d.data_out.len());
        self.respond(
            tx,
            &d.cmd,
            d.cdb.as_slice(),
            d.data_out.len(),
            d.out,
            d.data_in,
            d.overflow,
        );
        tx.recycle(d.data_out);
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
            if let Some(sink) = &self.offload.sink {
                if sink.prepare_sleep() {
                    let fired = wait_fd(sink.fd(), crate::conn::TICK);
                    sink.woke(fired);
                }
            }
        }
    }

    /// Wait until no session has a short pool task on the LU `lun` (every
    /// LU of the table when `None`) queued or running: a reset answers only
    /// after them. False if the connection was killed meanwhile.
    pub fn wait_lus_idle(&self, lun: Option<u64>) -> bool {
        let keys: Vec<usize> = self
            .luns
            .luns
            .iter()
            .filter(|l| lun.is_none_or(|n| n == l.id))
            .map(|l| pool::lu_key(&l.device))
            .collect();
        let conn = self.conn.clone();
        pool::wait_lus_idle(&keys, crate::conn::TICK, || {
            conn.as_ref()
                .is_some_and(|h| h.stop.load(Ordering::SeqCst) == STOP_KILL)
        })
    }

    /// Wait until only long tasks remain, their responses queued.
    pub fn settle(&mut self, tx: &mut TxQueue) -> bool {
        if !self.offload.active() {
            return true;
        }
        self.wait_until(tx, |o| o.flights.iter().all(|f| f.long))
    }

    /// Abort the pool tasks `which` selects: none of their responses will
    /// be sent; wait for the short ones to finish. Returns how many were
    /// aborted, `None` if the connection was killed while waiting.
    pub fn abort_flights(
        &mut self,
        tx: &mut TxQueue,
        which: impl Fn(&Flight) -> bool,
    ) -> Option<usize> {
        let mut n = 0;
        let mut wait = false;
        for f in self.offload.flights.iter_mut() {
            if !f.aborted && which(f) {
                f.aborted = true;
                self.offload.live -= 1;
                n += 1;
                wait |= !f.long;
            }
        }
        if wait && !self.wait_until(tx, |o| !o.flights.iter().any(|f| f.aborted && !f.long)) {
            return None;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn congested_by_own_budget_or_by_the_pool_total_when_holding_tasks() {
        let mut o = Offload::default();
        assert!(!o.congested());
        o.bytes = CONN_POOL_BYTES - 1;
        assert!(!o.congested());
        o.bytes = CONN_POOL_BYTES;
        assert!(o.congested(), "own budget reached");
        // The whole pool is full: a connection with tasks waits, one
        // without any still gets its first.
        pool::charge_for_test(POOL_TOTAL_BYTES as isize);
        o.bytes = 1;
        let with_tasks = o.congested();
        o.bytes = 0;
        let without = o.congested();
        pool::charge_for_test(-(POOL_TOTAL_BYTES as isize));
        assert!(with_tasks);
        assert!(!without);
    }
}
