//! What the connections of one session share (multiple connections per
//! session, MC/S, RFC 7143 §4.2.2 and §6.3): the CmdSN window (ExpCmdSN,
//! the MaxCmdSN high-water mark, the commands outstanding on every
//! connection), the I_T nexus, the session-wide negotiated parameters and
//! the list of connections (CID, addresses).
//!
//! Each connection keeps its own thread, StatSN, digests, write tasks and
//! pool commands (ERL 0: a task lives and is answered on the connection
//! that carried its command, "connection allegiance"). Commands are
//! delivered to the SCSI layer in CmdSN order across connections: a
//! command that arrives ahead of ExpCmdSN waits here until the commands
//! before it, carried by other connections, have been taken.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use iscsi_wire::bhs::sn_lt;
use iscsi_wire::negotiate::SessionParams;
use target_core::Nexus;

use crate::server::next_nexus_id;

/// How long a command waits for the commands before it (CmdSN order)
/// to arrive on the other connections. At ERL 0 a gap that never fills
/// cannot be recovered: the waiting connection then closes.
pub const GAP_WAIT: Duration = Duration::from_secs(30);
/// How often a waiting command looks at its connection's stop flag.
const GAP_TICK: Duration = Duration::from_millis(200);

/// One connection of a session, as the session lists it.
#[derive(Debug, Clone)]
pub struct ConnSlot {
    pub cid: u16,
    /// The server's connection id (`ConnHandle::id`).
    pub conn_id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Commands accepted on it and not answered yet (last reported).
    outstanding: u32,
}

impl ConnSlot {
    pub fn new(cid: u16, conn_id: u64, peer: SocketAddr, local: SocketAddr) -> ConnSlot {
        ConnSlot {
            cid,
            conn_id,
            peer,
            local,
            outstanding: 0,
        }
    }
}

struct State {
    exp_cmdsn: u32,
    /// Highest MaxCmdSN announced: it never moves back (RFC 7143 §4.2.2.1
    /// has initiators ignore a smaller one).
    max_cmdsn_sent: u32,
    /// The connection that took ExpCmdSN - 1 and has not handed it to
    /// the SCSI layer yet (`delivered`): the next command waits for that
    /// too, so commands reach the core in CmdSN order, not just leave
    /// the window in order. Only with several connections.
    pending: Option<u64>,
    conns: Vec<ConnSlot>,
    /// Task management of one connection reaching the tasks of the others.
    aborts: Vec<AbortReq>,
    next_abort: u64,
}

/// Which tasks of the other connections a TMF ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortWhat {
    /// ABORT TASK: the task with this ITT.
    Task(u32),
    /// ABORT/CLEAR TASK SET, LUN RESET: the tasks of this LUN.
    Lun([u8; 8]),
    /// TARGET WARM RESET: every task.
    All,
}

/// An abort request waiting for the connections that hold tasks.
struct AbortReq {
    id: u64,
    what: AbortWhat,
    /// Connections that have not answered yet.
    waiting: Vec<u64>,
    /// Tasks they ended.
    found: usize,
}

/// Outcome of `SessionCore::accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// In order and in the window: ExpCmdSN moved past it.
    Take,
    /// `Take` while other connections exist: call `delivered` once the
    /// command is in the SCSI layer (run, submitted, or waiting for its
    /// Data-Out), which lets the next CmdSN go.
    Ordered,
    /// Outside the window, a duplicate, or a gap no other connection can
    /// fill: dropped silently (RFC 7143 §3.2.2.1).
    Drop,
    /// The gap before it did not fill in time, or the connection is
    /// stopping: the connection closes.
    GiveUp,
}

pub struct SessionCore {
    pub tsih: u16,
    /// Commands the session may hold (the TPG's `default_cmdsn_depth`).
    pub window: u32,
    /// Negotiated MaxConnections of the leading login.
    pub max_conns: u16,
    /// One I_T nexus for every connection of the session.
    pub nexus: Arc<Nexus>,
    /// Session-wide negotiated parameters (the leading login's).
    pub params: SessionParams,
    state: Mutex<State>,
    /// Signalled whenever ExpCmdSN advances (or a waiter must look at its
    /// stop flag), and when an abort request is answered.
    advanced: Condvar,
    /// Some abort request waits for an answer: the connections' loops
    /// look at this flag, not at the mutex.
    aborting: AtomicBool,
}

/// The nexus of a session: the initiator port (name and ISID) and the
/// target port (name and TPGT).
pub fn nexus_for(
    initiator: &str,
    isid: [u8; 6],
    iqn: &str,
    tpg_tag: u16,
    relative_port_id: u16,
) -> Nexus {
    let isid_hex: String = isid.iter().map(|b| format!("{b:02x}")).collect();
    Nexus {
        id: next_nexus_id(),
        initiator_port: format!("{initiator},i,0x{isid_hex}"),
        target_port: format!("{iqn},t,0x{tpg_tag:04x}"),
        relative_port_id,
        tpg_tag,
    }
}

impl SessionCore {
    pub fn new(
        tsih: u16,
        nexus: Nexus,
        params: SessionParams,
        exp_cmdsn: u32,
        window: u32,
    ) -> SessionCore {
        SessionCore {
            tsih,
            window,
            max_conns: params.max_connections.max(1),
            nexus: Arc::new(nexus),
            params,
            state: Mutex::new(State {
                exp_cmdsn,
                max_cmdsn_sent: exp_cmdsn.wrapping_add(window).wrapping_sub(1),
                pending: None,
                conns: Vec::new(),
                aborts: Vec::new(),
                next_abort: 1,
            }),
            advanced: Condvar::new(),
            aborting: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record what connection `conn_id` holds and compute MaxCmdSN: the
    /// window less the commands outstanding on every connection, never
    /// below what was already announced.
    fn max_locked(&self, s: &mut State, conn_id: u64, own: u32) -> u32 {
        let mut total = 0u32;
        for c in s.conns.iter_mut() {
            if c.conn_id == conn_id {
                c.outstanding = own;
            }
            total = total.saturating_add(c.outstanding);
        }
        if !s.conns.iter().any(|c| c.conn_id == conn_id) {
            // Not (or no longer) listed: a discovery session, or a
            // connection on its way out.
            total = total.saturating_add(own);
        }
        let room = self.window.saturating_sub(total);
        let cap = s.exp_cmdsn.wrapping_add(room).wrapping_sub(1);
        if sn_lt(s.max_cmdsn_sent, cap) {
            s.max_cmdsn_sent = cap;
        }
        s.max_cmdsn_sent
    }

    /// ExpCmdSN and MaxCmdSN for a PDU of connection `conn_id`, which
    /// holds `own` commands.
    pub fn sn(&self, conn_id: u64, own: u32) -> (u32, u32) {
        let mut s = self.lock();
        let max = self.max_locked(&mut s, conn_id, own);
        (s.exp_cmdsn, max)
    }

    pub fn exp_cmdsn(&self) -> u32 {
        self.lock().exp_cmdsn
    }

    /// CmdSN acceptance of a non-immediate request of connection
    /// `conn_id`. In order and within the window it advances ExpCmdSN. A
    /// command ahead of ExpCmdSN, inside the window, while other
    /// connections exist, waits for the commands before it: they can only
    /// come on another connection (one connection carries its commands in
    /// CmdSN order), whose thread never waits for this one. `stopping`
    /// is polled while waiting.
    pub fn accept(
        &self,
        conn_id: u64,
        own: u32,
        cmdsn: u32,
        stopping: &dyn Fn() -> bool,
    ) -> Accept {
        // Read the clock only once a command has to wait: the in-order
        // case (every command of a one-connection session) never does.
        let mut deadline: Option<Instant> = None;
        let mut s = self.lock();
        loop {
            let max = self.max_locked(&mut s, conn_id, own);
            let in_window = !sn_lt(cmdsn, s.exp_cmdsn) && !sn_lt(max, cmdsn);
            let others = s.conns.iter().any(|c| c.conn_id != conn_id);
            if cmdsn == s.exp_cmdsn && in_window && s.pending.is_none() {
                s.exp_cmdsn = s.exp_cmdsn.wrapping_add(1);
                if !others {
                    return Accept::Take;
                }
                s.pending = Some(conn_id);
                return Accept::Ordered;
            }
            let turn_coming = cmdsn != s.exp_cmdsn || s.pending.is_some();
            if !in_window || !turn_coming || !others {
                tracing::debug!(
                    cmdsn,
                    exp = s.exp_cmdsn,
                    in_window,
                    "dropping out-of-order command"
                );
                return Accept::Drop;
            }
            let now = Instant::now();
            if stopping() || now >= *deadline.get_or_insert(now + GAP_WAIT) {
                tracing::warn!(
                    cmdsn,
                    exp = s.exp_cmdsn,
                    "the commands before this one never arrived on the other connections"
                );
                return Accept::GiveUp;
            }
            s = self
                .advanced
                .wait_timeout(s, GAP_TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The command `accept` answered `Ordered` is in the SCSI layer: the
    /// next CmdSN may go.
    pub fn delivered(&self, conn_id: u64) {
        let mut s = self.lock();
        if s.pending == Some(conn_id) {
            s.pending = None;
            self.advanced.notify_all();
        }
    }

    /// A rejected request still uses up its CmdSN, if it is the next one,
    /// so the window keeps moving.
    pub fn consume(&self, cmdsn: u32) {
        let mut s = self.lock();
        if cmdsn == s.exp_cmdsn {
            s.exp_cmdsn = s.exp_cmdsn.wrapping_add(1);
            self.advanced.notify_all();
        }
    }

    /// Wake commands waiting for their turn (a connection is being
    /// stopped: its waiter must see its stop flag).
    pub fn wake(&self) {
        let _s = self.lock();
        self.advanced.notify_all();
    }

    pub fn attach(&self, slot: ConnSlot) {
        self.lock().conns.push(slot);
    }

    /// Put `slot` in place of the connection with its CID (connection
    /// reinstatement); returns the connection replaced.
    pub fn replace(&self, slot: ConnSlot) -> Option<u64> {
        let mut s = self.lock();
        let c = s.conns.iter_mut().find(|c| c.cid == slot.cid)?;
        let old = c.conn_id;
        *c = slot;
        Some(old)
    }

    /// Remove connection `conn_id`; `Some(connections left)` if it was
    /// listed.
    pub fn detach(&self, conn_id: u64) -> Option<usize> {
        let mut s = self.lock();
        let i = s.conns.iter().position(|c| c.conn_id == conn_id)?;
        s.conns.remove(i);
        if s.pending == Some(conn_id) {
            s.pending = None;
        }
        // Its tasks end with it: it answers no abort request.
        for r in s.aborts.iter_mut() {
            r.waiting.retain(|c| *c != conn_id);
        }
        self.advanced.notify_all();
        Some(s.conns.len())
    }

    /// End `what` on every other connection of the session (a TMF of
    /// connection `from`, RFC 7143 §11.5.1: the task may be on any
    /// connection): post the request, wait until each has answered (or
    /// `deadline`, or `stopping`). How many tasks they ended.
    pub fn abort_elsewhere(
        &self,
        from: u64,
        what: AbortWhat,
        deadline: Instant,
        stopping: &dyn Fn() -> bool,
    ) -> usize {
        let mut s = self.lock();
        let waiting: Vec<u64> = s
            .conns
            .iter()
            .map(|c| c.conn_id)
            .filter(|c| *c != from)
            .collect();
        if waiting.is_empty() {
            return 0;
        }
        let id = s.next_abort;
        s.next_abort += 1;
        s.aborts.push(AbortReq {
            id,
            what,
            waiting,
            found: 0,
        });
        self.aborting.store(true, Ordering::SeqCst);
        loop {
            let i = s.aborts.iter().position(|r| r.id == id).unwrap_or(0);
            if s.aborts[i].waiting.is_empty() || stopping() || Instant::now() >= deadline {
                let r = s.aborts.remove(i);
                if r.waiting.is_empty() {
                    tracing::debug!(?what, found = r.found, "abort answered by every connection");
                } else {
                    tracing::warn!(
                        ?what,
                        missing = r.waiting.len(),
                        "abort not answered by every connection of the session"
                    );
                }
                self.aborting.store(
                    s.aborts.iter().any(|r| !r.waiting.is_empty()),
                    Ordering::SeqCst,
                );
                return r.found;
            }
            s = self
                .advanced
                .wait_timeout(s, GAP_TICK)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Abort requests connection `conn_id` has to answer (one atomic load
    /// when there are none).
    pub fn aborts_for(&self, conn_id: u64) -> Vec<(u64, AbortWhat)> {
        if !self.aborting.load(Ordering::SeqCst) {
            return Vec::new();
        }
        let s = self.lock();
        s.aborts
            .iter()
            .filter(|r| r.waiting.contains(&conn_id))
            .map(|r| (r.id, r.what))
            .collect()
    }

    /// Connection `conn_id` ended `found` tasks for request `id`.
    pub fn abort_done(&self, conn_id: u64, id: u64, found: usize) {
        let mut s = self.lock();
        if let Some(r) = s.aborts.iter_mut().find(|r| r.id == id) {
            r.waiting.retain(|c| *c != conn_id);
            r.found += found;
        }
        let left = s.aborts.iter().any(|r| !r.waiting.is_empty());
        self.aborting.store(left, Ordering::SeqCst);
        self.advanced.notify_all();
    }

    pub fn conns(&self) -> Vec<ConnSlot> {
        self.lock().conns.clone()
    }

    pub fn conn_ids(&self) -> Vec<u64> {
        self.lock().conns.iter().map(|c| c.conn_id).collect()
    }

    /// The connection with this CID.
    pub fn conn_of_cid(&self, cid: u16) -> Option<u64> {
        self.lock()
            .conns
            .iter()
            .find(|c| c.cid == cid)
            .map(|c| c.conn_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn core(window: u32, conns: &[u64]) -> Arc<SessionCore> {
        let p = SessionParams {
            max_connections: 2,
            ..Default::default()
        };
        let c = SessionCore::new(1, nexus_for("i", [0; 6], "t", 1, 1), p, 10, window);
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for (i, id) in conns.iter().enumerate() {
            c.attach(ConnSlot::new(i as u16, *id, a, a));
        }
        Arc::new(c)
    }

    #[test]
    fn window_counts_every_connection() {
        let c = core(8, &[1, 2]);
        assert_eq!(c.sn(1, 3), (10, 17), "never below what was announced");
        assert_eq!(c.accept(1, 3, 10, &|| false), Accept::Ordered);
        c.delivered(1);
        assert_eq!(c.sn(2, 2), (11, 17));
        // 5 outstanding of 8 on two connections: room for 3 more.
        for n in 11..=15 {
            assert_eq!(c.accept(1, 0, n, &|| false), Accept::Ordered);
            c.delivered(1);
        }
        assert_eq!(c.sn(2, 0), (16, 23));
    }

    #[test]
    fn one_connection_drops_a_gap_at_once() {
        let c = core(8, &[1]);
        assert_eq!(c.accept(1, 0, 11, &|| false), Accept::Drop);
        assert_eq!(c.accept(1, 0, 9, &|| false), Accept::Drop);
        assert_eq!(c.accept(1, 0, 10, &|| false), Accept::Take);
    }

    #[test]
    fn a_later_command_waits_for_the_earlier_one() {
        let c = core(8, &[1, 2]);
        let c2 = Arc::clone(&c);
        let waiter = std::thread::spawn(move || c2.accept(2, 0, 11, &|| false));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.exp_cmdsn(), 10, "11 must not pass before 10");
        assert_eq!(c.accept(1, 0, 10, &|| false), Accept::Ordered);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.exp_cmdsn(), 11, "nor before 10 is delivered");
        c.delivered(1);
        assert_eq!(waiter.join().unwrap(), Accept::Ordered);
        assert_eq!(c.exp_cmdsn(), 12);
    }

    #[test]
    fn a_stopping_waiter_gives_up() {
        let c = core(8, &[1, 2]);
        let stop = Arc::new(AtomicBool::new(false));
        let (c2, s2) = (Arc::clone(&c), Arc::clone(&stop));
        let waiter = std::thread::spawn(move || c2.accept(2, 0, 12, &|| s2.load(Ordering::SeqCst)));
        stop.store(true, Ordering::SeqCst);
        c.wake();
        assert_eq!(waiter.join().unwrap(), Accept::GiveUp);
        assert_eq!(c.exp_cmdsn(), 10);
    }

    #[test]
    fn an_abort_waits_for_the_other_connections() {
        let c = core(8, &[1, 2]);
        assert!(c.aborts_for(2).is_empty());
        let c2 = Arc::clone(&c);
        let far = Instant::now() + Duration::from_secs(10);
        let tmf =
            std::thread::spawn(move || c2.abort_elsewhere(1, AbortWhat::Task(7), far, &|| false));
        let reqs = loop {
            let r = c.aborts_for(2);
            if !r.is_empty() {
                break r;
            }
            std::thread::yield_now();
        };
        assert_eq!(reqs[0].1, AbortWhat::Task(7));
        assert!(
            c.aborts_for(1).is_empty(),
            "not asked of its own connection"
        );
        c.abort_done(2, reqs[0].0, 1);
        assert_eq!(tmf.join().unwrap(), 1);
        assert!(c.aborts_for(2).is_empty());
    }
}
