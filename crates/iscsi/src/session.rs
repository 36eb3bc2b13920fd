//! One connection of a logged-in session: its StatSN (the CmdSN window is
//! the session's, in `session_core`), the PDU dispatcher of the full-feature phase, SCSI command
//! admission, NOP-Out/NOP-In, Logout, Reject and the Async logout request.
//! Running a command and its Data-In/SCSI Response live in `respond`.
//! Data-Out gathering lives in `dataout`, task management in `tmf`, Text and
//! SendTargets in `discovery`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iscsi_wire::negotiate::{Negotiator, SessionParams};
use iscsi_wire::pdu::ahs_entries;
use iscsi_wire::request::{Attr, NopOut, ScsiCommand};
use iscsi_wire::response::{AsyncMessage, NopIn, Reject, RejectReason, SnFields};
use iscsi_wire::{Bhs, Digests, Frame, Opcode, RESERVED_TAG};
use scsi::sense::{Asc, Sense, SenseKey};
use target_core::{LunTable, Nexus, Outcome, Status, TaskAttr};

use crate::dataout::{CdbStore, Imm, WriteTask};
use crate::discovery::TextState;
use crate::login::LoginOutcome;
use crate::offload::Offload;
use crate::server::{ConnHandle, SessionKey, Shared};
use crate::session_core::{nexus_for, Accept, SessionCore};
use crate::sessions::{LunCounters, SessionLive};
use crate::txq::TxQueue;
use crate::TargetConfig;

mod respond;
use target_core::engine::{Ends, Finished};

/// Immediate data the connection received outside the frame: into a
/// task buffer (`direct`), or not yet (still on the socket: `landed_write`).
pub(crate) enum Placed {
    Buf(Vec<u8>),
    Pending(usize),
}

/// What the connection loop does after a PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Close,
}

const DEFAULT_NOPIN_TIMEOUT: u64 = 15;
const DEFAULT_NOPIN_RESPONSE_TIMEOUT: u64 = 30;
/// Largest write we gather (peer-controlled EDTL must not size our memory).
pub const MAX_WRITE_LEN: u32 = 256 << 20;
/// Immediate SCSI commands that may be outstanding beyond the command
/// window (RFC 7143 §3.2.2.1 asks a target to take at least one at any
/// time; more get Reject "too many immediate commands").
pub const IMMEDIATE_SLOTS: u32 = 4;

pub struct Session {
    pub shared: Arc<Shared>,
    pub key: Option<SessionKey>,
    pub conn_id: u64,
    pub target: Option<Arc<TargetConfig>>,
    pub tsih: u16,
    pub luns: Arc<LunTable>,
    /// Whether `luns` takes prefetch hints (`prefetch::hints_for`).
    pub(crate) prefetch_hints: bool,
    /// Counters parallel to `luns.luns`.
    counters: Arc<[Arc<LunCounters>]>,
    /// Shared with the registry: LUN table updates, counters for `sessions detail`.
    live: Option<Arc<SessionLive>>,
    /// The `live.epoch` whose table `luns` is.
    seen_epoch: u64,
    pub discovery: bool,
    pub nexus: Nexus,
    pub initiator_name: String,
    pub params: SessionParams,
    pub neg: Negotiator,
    pub digests: Digests,
    pub cid: u16,
    pub statsn: u32,
    /// What the session's connections share: CmdSN window, nexus, CIDs.
    pub core: Arc<SessionCore>,
    pub local: SocketAddr,
    /// Our declared MaxRecvDataSegmentLength: the frame size limit.
    pub max_recv: u32,
    pub tasks: Vec<WriteTask>,
    next_ttt: u32,
    ping: Option<(u32, Instant)>,
    nopin_timeout: Duration,
    nopin_response_timeout: Duration,
    /// The TPG's `busy_poll_us` (`crate::busypoll`); `None`: off.
    pub busy_poll: Option<crate::busypoll::Poller>,
    /// The TPG's `follow_flow_cpu` (`crate::flow_cpu`); `None`: off.
    pub flow_cpu: Option<crate::flow_cpu::FlowCpu>,
    pub text: TextState,
    /// Commands in the I/O engine.
    pub offload: Offload,
    /// Answers being processed (capacity kept).
    pub finished: Vec<Finished<ScsiCommand>>,
    /// `nexus`, shared with pool jobs.
    pub nexus_arc: Arc<Nexus>,
    /// Our connection's handle (stop flag), for waits on the pool.
    pub conn: Option<Arc<ConnHandle>>,
    /// The PDU being handled took a CmdSN other connections wait for
    /// (`Accept::Ordered`).
    ordered: bool,
}

impl Session {
    pub fn new(shared: Arc<Shared>, l: LoginOutcome, local: SocketAddr, conn_id: u64) -> Session {
        let core = l.core.clone().unwrap_or_else(|| {
            // A discovery session: a core of its own, listed nowhere.
            let nexus = nexus_for(&l.initiator_name, [0; 6], "", 0, 0);
            let params = l.neg.params.clone();
            Arc::new(SessionCore::new(
                l.tsih,
                nexus,
                params,
                l.exp_cmdsn,
                l.window,
            ))
        });
        // Session-wide keys are the leading login's; digests and data
        // segment lengths are this connection's own.
        let mut params = core.params.clone();
        let own = &l.neg.params;
        params.header_digest = own.header_digest;
        params.data_digest = own.data_digest;
        params.initiator_mrdsl = own.initiator_mrdsl;
        params.target_mrdsl = own.target_mrdsl;
        let nexus = (*core.nexus).clone();
        let (nopin_timeout, nopin_response_timeout) = l.tpg.as_ref().map_or(
            (DEFAULT_NOPIN_TIMEOUT, DEFAULT_NOPIN_RESPONSE_TIMEOUT),
            |t| {
                let a = &t.attributes;
                (
                    u64::from(a.nopin_timeout),
                    u64::from(a.nopin_response_timeout),
                )
            },
        );
        let busy_poll =
            crate::busypoll::budget(l.tpg.as_ref().map_or(0, |t| t.attributes.busy_poll_us))
                .map(|b| crate::busypoll::Poller::new(b, Arc::clone(&shared.busy_polls)));
        let flow_cpu = l
            .tpg
            .as_ref()
            .is_some_and(|t| t.attributes.follow_flow_cpu)
            .then(|| crate::flow_cpu::FlowCpu::new(Arc::clone(&shared.flow_cpu)));
        let nopin_timeout = Duration::from_secs(nopin_timeout);
        let nopin_response_timeout = Duration::from_secs(nopin_response_timeout);
        // Load the epoch before the view: an update racing with login is
        // then seen on the first command.
        let seen_epoch = l
            .live
            .as_ref()
            .map_or(0, |v| v.epoch.load(Ordering::Acquire));
        let view = l.live.as_ref().map(|v| v.view());
        let luns = view
            .as_ref()
            .map_or_else(|| Arc::new(LunTable::default()), |v| Arc::clone(&v.table));
        let nexus_arc = Arc::clone(&core.nexus);
        Session {
            shared,
            conn_id,
            target: l.target,
            tsih: l.tsih,
            prefetch_hints: crate::prefetch::hints_for(l.discovery, &luns),
            luns,
            counters: view.map_or_else(|| Arc::from(Vec::new()), |v| v.counters),
            seen_epoch,
            live: l.live,
            discovery: l.discovery,
            nexus,
            initiator_name: l.initiator_name,
            digests: Digests {
                header: params.header_digest,
                data: params.data_digest,
            },
            max_recv: params.target_mrdsl,
            params,
            neg: l.neg,
            cid: l.cid,
            statsn: l.statsn,
            core,
            local,
            tasks: Vec::new(),
            next_ttt: 1,
            ping: None,
            nopin_timeout,
            nopin_response_timeout,
            busy_poll,
            flow_cpu,
            text: TextState::default(),
            key: l.key,
            offload: crate::offload::new_offload(),
            finished: Vec::new(),
            nexus_arc,
            conn: None,
            ordered: false,
        }
    }

    /// Orderly session end: the core forgets the nexus. (The registry entry
    /// goes in `Drop`, which also runs if a core call panicked.)
    /// Pool tasks still running keep the nexus until the last one ends;
    /// their responses are dropped, and queued ones never start. A login
    /// of the same I_T nexus waits until the short ones have finished
    /// (`Shared::drain_begin`): no stale command of this session runs
    /// after the new one is admitted.
    /// With several connections, only the last one to end takes the nexus
    /// with it (RFC 7143 §6.3.6: the session fails when its last
    /// connection does; at ERL 0 the tasks of a connection that drops
    /// earlier just end with it).
    pub fn end(&mut self) {
        let mut ends = Ends::default();
        if let Some(key) = self.key.clone() {
            if self.shared.leave_session(&key, &self.core, self.conn_id) {
                let luns = Arc::clone(&self.luns);
                let nexus = Arc::clone(&self.nexus_arc);
                ends.all = Some(Box::new(move || luns.nexus_gone(&nexus)));
            }
            // A SANITIZE goes on by design: a new login does not wait.
            let shared = Arc::clone(&self.shared);
            shared.drain_begin(&key);
            ends.short = Some(Box::new(move || shared.drain_end(&key)));
        }
        self.offload.close(ends);
        tracing::info!(initiator = %self.initiator_name,
            target = self.target.as_ref().map_or("(discovery)", |t| t.iqn.as_str()),
            tsih = self.tsih, "session ended");
    }

    /// Commands accepted and not answered yet: engine tasks (streamed
    /// writes included) and other writes waiting for Data-Out. (Inline
    /// commands are answered before the next PDU is read.)
    fn outstanding(&self) -> u32 {
        self.offload.live() + self.tasks.iter().filter(|t| t.holds_slot()).count() as u32
    }

    /// The session's ExpCmdSN.
    pub fn exp_cmdsn(&self) -> u32 {
        self.core.exp_cmdsn()
    }

    /// Sequence fields without consuming a StatSN (R2T, NOP-In ping, Data-In).
    pub fn sn_peek(&self) -> SnFields {
        let (exp_cmdsn, max_cmdsn) = self.core.sn(self.conn_id, self.outstanding());
        SnFields {
            statsn: self.statsn,
            exp_cmdsn,
            max_cmdsn,
        }
    }

    /// Sequence fields consuming the next StatSN (responses).
    pub fn sn_next(&mut self) -> SnFields {
        let s = self.sn_peek();
        self.statsn = self.statsn.wrapping_add(1);
        s
    }

    pub fn alloc_ttt(&mut self) -> u32 {
        let t = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG || self.next_ttt == 0 {
            self.next_ttt = 1;
        }
        t
    }

    /// CmdSN acceptance for a non-immediate request: in order and within
    /// the window it advances ExpCmdSN; anything else is dropped silently
    /// (RFC 7143 §3.2.2.1 and §4.2.2.1; with one connection a gap can only
    /// come from a broken initiator). With several connections a command
    /// ahead of ExpCmdSN waits for the ones before it (`SessionCore::accept`);
    /// if they never come, this connection closes. The window is what
    /// bounds the commands a session holds: a command past MaxCmdSN never
    /// runs, even in order (the initiator ignored the MaxCmdSN it was given).
    pub fn accept_cmdsn(&mut self, immediate: bool, cmdsn: u32) -> bool {
        if immediate {
            return true;
        }
        let conn = self.conn.as_deref();
        let stopping =
            || conn.is_some_and(|h| h.stop.load(Ordering::SeqCst) != crate::server::STOP_NONE);
        match self
            .core
            .accept(self.conn_id, self.outstanding(), cmdsn, &stopping)
        {
            Accept::Take => true,
            Accept::Ordered => {
                self.ordered = true;
                true
            }
            Accept::Drop => false,
            Accept::GiveUp => {
                // ERL 0: the session cannot recover the gap on this
                // connection; the loop sees the stop flag and closes.
                if let Some(h) = &self.conn {
                    h.kill();
                }
                false
            }
        }
    }

    /// Queue a Reject carrying the offending header.
    pub fn reject(&mut self, tx: &mut TxQueue, reason: RejectReason, bad: &Bhs) {
        tracing::debug!(reason = reason.0, opcode = ?bad.opcode(), "reject");
        let r = Reject {
            reason,
            sn: self.sn_next(),
            datasn_r2tsn: 0,
        };
        let mut b = Bhs::default();
        r.write_to(&mut b);
        tx.push_pdu(&b, &bad.0, self.digests);
    }

    /// Reject a request that carries a CmdSN: a non-immediate one still uses
    /// up its CmdSN so the window keeps moving.
    fn reject_cmd(&mut self, tx: &mut TxQueue, reason: RejectReason, bad: &Bhs) {
        if !bad.immediate() {
            self.core.consume(bad.u32_at(24));
        }
        self.reject(tx, reason, bad);
    }

    /// Handle one full-feature PDU. A command other connections wait for
    /// (CmdSN order) is in the SCSI layer when `dispatch` returns.
    pub fn handle(&mut self, f: &Frame<'_>, tx: &mut TxQueue) -> Action {
        let action = self.dispatch(f, tx);
        self.release_cmdsn();
        action
    }

    /// The command that took a CmdSN other connections wait for is in the
    /// SCSI layer (or will not be): the next CmdSN may go.
    pub(crate) fn release_cmdsn(&mut self) {
        if self.ordered {
            self.ordered = false;
            self.core.delivered(self.conn_id);
        }
    }

    /// Dispatch one full-feature PDU.
    fn dispatch(&mut self, f: &Frame<'_>, tx: &mut TxQueue) -> Action {
        let op = f.bhs.opcode();
        tracing::trace!(opcode = ?op, itt = f.bhs.itt(), flags = f.bhs.flags(),
            dsl = f.data.len(), w20 = f.bhs.u32_at(20), w24 = f.bhs.u32_at(24),
            w36 = f.bhs.u32_at(36), w40 = f.bhs.u32_at(40), "pdu");
        if !f.data_digest_ok {
            tracing::warn!(opcode = ?op, "data digest error");
            self.reject(tx, RejectReason::DATA_DIGEST_ERROR, &f.bhs);
            // At ERL 0 lost write data cannot be recovered.
            return if matches!(op, Opcode::DATA_OUT | Opcode::SCSI_COMMAND) {
                Action::Close
            } else {
                Action::Continue
            };
        }
        match op {
            Opcode::NOP_OUT => self.nop_out(f, tx),
            Opcode::SCSI_COMMAND => self.command(f, None, tx),
            Opcode::DATA_OUT if self.discovery => {
                self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
                Action::Continue
            }
            Opcode::DATA_OUT => self.data_out(f, tx),
            Opcode::TASK_MGMT_REQUEST if self.discovery => {
                self.reject_cmd(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
                Action::Continue
            }
            Opcode::TASK_MGMT_REQUEST => self.task_mgmt(f, tx),
            Opcode::TEXT_REQUEST => self.text_request(f, tx),
            Opcode::LOGOUT_REQUEST => self.logout(f, tx),
            // ERL 0 has no SNACK; a login in full feature phase is an error.
            Opcode::SNACK_REQUEST | Opcode::LOGIN_REQUEST => {
                self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
                Action::Continue
            }
            _ => {
                self.reject_cmd(tx, RejectReason::COMMAND_NOT_SUPPORTED, &f.bhs);
                Action::Continue
            }
        }
    }

    fn nop_out(&mut self, f: &Frame<'_>, tx: &mut TxQueue) -> Action {
        let n = NopOut::parse(&f.bhs);
        if n.ttt != RESERVED_TAG {
            // The answer to our ping.
            if self.ping.is_some_and(|(t, _)| t == n.ttt) {
                self.ping = None;
            }
            return Action::Continue;
        }
        if !self.accept_cmdsn(n.immediate, n.cmdsn) {
            return Action::Continue;
        }
        if n.itt == RESERVED_TAG {
            return Action::Continue;
        }
        let r = NopIn {
            lun: n.lun,
            itt: n.itt,
            ttt: RESERVED_TAG,
            sn: self.sn_next(),
        };
        let mut b = Bhs::default();
        r.write_to(&mut b);
        let echo = &f.data[..f.data.len().min(self.params.initiator_mrdsl as usize)];
        tx.push_pdu(&b, echo, self.digests);
        Action::Continue
    }

    /// Called when the connection has been idle for a tick: send a NOP-In
    /// ping after `nopin_timeout`, close if it stays unanswered.
    pub fn nop_timer(&mut self, last_rx: Instant, tx: &mut TxQueue) -> Action {
        let now = Instant::now();
        if let Some((_, deadline)) = self.ping {
            if now > deadline {
                tracing::warn!(initiator = %self.initiator_name, "NOP-In ping unanswered, closing");
                return Action::Close;
            }
            return Action::Continue;
        }
        if self.nopin_timeout.is_zero() || now.duration_since(last_rx) < self.nopin_timeout {
            return Action::Continue;
        }
        let ttt = self.alloc_ttt();
        let p = NopIn {
            lun: [0; 8],
            itt: RESERVED_TAG,
            ttt,
            sn: self.sn_peek(),
        };
        let mut b = Bhs::default();
        p.write_to(&mut b);
        tx.push_pdu(&b, &[], self.digests);
        self.ping = Some((ttt, now + self.nopin_response_timeout));
        Action::Continue
    }

    /// Ask the initiator to log out (server shutdown).
    pub fn request_logout(&mut self, tx: &mut TxQueue) {
        let a = AsyncMessage {
            lun: [0; 8],
            sn: self.sn_next(),
            event: AsyncMessage::EVENT_LOGOUT_REQUEST,
            vcode: 0,
            param1: 0,
            param2: 0,
            param3: 3,
        };
        let mut b = Bhs::default();
        a.write_to(&mut b);
        tx.push_pdu(&b, &[], self.digests);
    }

    /// A SCSI Command PDU, refused on a discovery session. `placed`: its
    /// immediate data, received straight into a task buffer by the
    /// connection (`f.data` is then empty).
    pub(crate) fn command(
        &mut self,
        f: &Frame<'_>,
        placed: Option<Placed>,
        tx: &mut TxQueue,
    ) -> Action {
        if self.discovery {
            self.reject_cmd(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
            return Action::Continue;
        }
        self.scsi_command(f, placed, tx)
    }

    fn scsi_command(&mut self, f: &Frame<'_>, placed: Option<Placed>, tx: &mut TxQueue) -> Action {
        let c = ScsiCommand::parse(&f.bhs);
        if !self.accept_cmdsn(c.immediate, c.cmdsn) {
            return Action::Continue;
        }
        if c.immediate && self.outstanding() >= self.core.window.saturating_add(IMMEDIATE_SLOTS) {
            self.reject(tx, RejectReason::IMMEDIATE_COMMAND_REJECT, &f.bhs);
            return Action::Continue;
        }
        let mut cdb = CdbStore::Short(c.cdb);
        for a in ahs_entries(f.ahs) {
            match a {
                Ok(a) if a.ahs_type == 1 => {
                    let mut long = c.cdb.to_vec();
                    long.extend_from_slice(a.data);
                    cdb = CdbStore::Long(long);
                }
                // Bidirectional read length: no bidirectional commands yet.
                Ok(_) => {}
                Err(_) => {
                    self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
                    return Action::Continue;
                }
            }
        }
        let imm_len = match &placed {
            Some(Placed::Buf(b)) => b.len(),
            Some(Placed::Pending(n)) => *n,
            None => f.data.len(),
        };
        if let Some(reason) = crate::cmd_flags::fault(&c, imm_len) {
            self.reject(tx, reason, &f.bhs);
            return Action::Continue;
        }
        if imm_len != 0 && (!c.write || !self.params.immediate_data) {
            self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
            return Action::Continue;
        }
        if imm_len as u64 > u64::from(c.expected_data_len)
            || imm_len > self.params.first_burst_length as usize
        {
            self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
            return Action::Continue;
        }
        if self.tasks.iter().any(|t| t.itt == c.itt) || self.offload.has_tag(u64::from(c.itt)) {
            self.reject(tx, RejectReason::TASK_IN_PROGRESS, &f.bhs);
            return Action::Continue;
        }
        if c.write && (imm_len as u32) < c.expected_data_len {
            if c.expected_data_len > MAX_WRITE_LEN {
                let sense = Sense::new(SenseKey::IllegalRequest, Asc::INVALID_FIELD_IN_CDB);
                let out = Outcome {
                    status: Status::CheckCondition,
                    sense: Some(sense.to_fixed().to_vec()),
                };
                let buf = tx.take_buf();
                self.respond(tx, &c, cdb.as_slice(), 0, out, buf, 0);
                return Action::Continue;
            }
            let imm = match placed {
                Some(Placed::Buf(b)) => Imm::Placed(b),
                Some(Placed::Pending(n)) => Imm::Pending(n),
                None => Imm::Slice(f.data),
            };
            return self.start_write(c, cdb, imm, tx);
        }
        match placed {
            Some(Placed::Buf(buf)) => self.execute_owned(tx, &c, cdb.as_slice(), buf),
            // Only writes with more data to come are left pending.
            Some(Placed::Pending(_)) => self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs),
            None => self.execute(tx, &c, cdb.as_slice(), f.data),
        }
        Action::Continue
    }

    /// Pick up a LUN table the management side installed since the last
    /// command: one atomic load when nothing changed.
    pub fn refresh_luns(&mut self) {
        let Some(live) = &self.live else { return };
        let epoch = live.epoch.load(Ordering::Acquire);
        if epoch == self.seen_epoch {
            return;
        }
        self.seen_epoch = epoch;
        // The configuration of login time would keep the devices of the
        // LUNs taken away (their backstores open): the current one, or for
        // a removed target its own without LUNs.
        let old_target = self.target.take();
        self.target = old_target.as_ref().map(|old| {
            let now = self.shared.target(&old.iqn);
            now.unwrap_or_else(|| Arc::new(crate::sessions::without_luns(old)))
        });
        let view = live.view();
        // LUs this nexus no longer sees drop its per-nexus state there.
        let gone = LunTable {
            luns: self
                .luns
                .luns
                .iter()
                .filter(|o| {
                    !view
                        .table
                        .luns
                        .iter()
                        .any(|n| n.device.id() == o.device.id())
                })
                .cloned()
                .collect(),
        };
        if !gone.luns.is_empty() {
            gone.nexus_gone(&self.nexus);
        }
        view.table.luns_changed(&self.nexus);
        tracing::info!(initiator = %self.initiator_name, luns = view.table.luns.len(),
            "session now sees a changed LUN table");
        self.prefetch_hints = crate::prefetch::hints_for(self.discovery, &view.table);
        let old_luns = std::mem::replace(&mut self.luns, view.table);
        self.counters = view.counters;
        // Their last holder closes the devices they hold: not here.
        self.shared.closer.drop_later((old_target, old_luns, gone));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // After a panic `end` did not run: still stop pool completions.
        self.offload.close(Ends::default());
        if let Some(k) = &self.key {
            self.shared.leave_session(k, &self.core, self.conn_id);
        }
    }
}

pub(crate) fn task_attr(a: Attr) -> TaskAttr {
    match a {
        Attr::Ordered => TaskAttr::Ordered,
        Attr::HeadOfQueue => TaskAttr::HeadOfQueue,
        Attr::Aca => TaskAttr::Aca,
        Attr::Untagged | Attr::Simple | Attr::Reserved(_) => TaskAttr::Simple,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_mapping() {
        assert_eq!(task_attr(Attr::Untagged), TaskAttr::Simple);
        assert_eq!(task_attr(Attr::Ordered), TaskAttr::Ordered);
        assert_eq!(task_attr(Attr::HeadOfQueue), TaskAttr::HeadOfQueue);
        assert_eq!(task_attr(Attr::Aca), TaskAttr::Aca);
    }
}
