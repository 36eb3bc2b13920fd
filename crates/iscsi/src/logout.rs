//! Logout (RFC 7143 §11.14-11.15) on a session that may have several
//! connections: reason 0 closes the session (every connection, the others
//! before the answer), reason 1 closes the connection with the given CID
//! (this one after the answer, another one before it) while the session
//! goes on with the rest, reason 2 (recovery) needs ERL 2.
//!
//! At ERL 0 a logout for recovery is refused ("connection recovery is not
//! supported") and changes nothing: the connection and its tasks go on,
//! and are answered, until a logout of reason 0 or 1, a TMF or the
//! connection's end ends them (as LIO does). RFC 7143 §11.15.3-4: after
//! that response the target keeps the connection's state and "waits for
//! a new implicit or explicit logout"; its tasks are not yet terminated.
//! Aborting them here (as this did) left a streamed write sealed but
//! unanswered, its write task holding a window slot for ever, and
//! aborted engine tasks silently while writes still gathering went on.

use std::time::Instant;

use iscsi_wire::request::LogoutRequest;
use iscsi_wire::response::{LogoutResponse, RejectReason};
use iscsi_wire::{Bhs, Frame};

use crate::server::REINSTATE_WAIT;
use crate::session::{Action, Session};
use crate::txq::TxQueue;

/// Logout Response codes.
const CLOSED: u8 = 0;
const CID_NOT_FOUND: u8 = 1;
const RECOVERY_NOT_SUPPORTED: u8 = 2;
const CLEANUP_FAILED: u8 = 3;

impl Session {
    pub(crate) fn logout(&mut self, f: &Frame<'_>, tx: &mut TxQueue) -> Action {
        let l = LogoutRequest::parse(&f.bhs);
        if !self.accept_cmdsn(l.immediate, l.cmdsn) {
            return Action::Continue;
        }
        if !matches!(l.reason, 0..=2) {
            self.reject(tx, RejectReason::PROTOCOL_ERROR, &f.bhs);
            return Action::Continue;
        }
        let other = l.reason == 1 && l.cid != self.cid;
        // Tasks of this connection still running answer before the
        // Logout Response; a long one (SANITIZE) goes on without an
        // answer; the others (streamed writes still fed, writes waiting
        // for data) end now. (Closing another connection, or a refused
        // recovery, leaves ours alone.)
        if !other && l.reason != 2 {
            if !self.settle(tx) || self.abort_flights(tx, |_| true).is_none() {
                return Action::Close;
            }
            self.drop_all_tasks(tx);
        }
        let response = match l.reason {
            0 => self.close_others(None),
            1 if other => self.close_others(Some(l.cid)),
            1 => CLOSED,
            _ => RECOVERY_NOT_SUPPORTED,
        };
        if response == CLOSED && l.reason == 0 {
            // The session's nexus ends here, before the response: what it
            // releases (an SPC-2 reservation) is released everywhere, other
            // gateways sharing the LU included, by the time the initiator
            // sees its logout done. `end` repeats it harmlessly.
            self.luns.nexus_gone(&self.nexus);
        }
        let r = LogoutResponse {
            response,
            itt: l.itt,
            sn: self.sn_next(),
            time2wait: self.params.default_time2wait,
            time2retain: self.params.default_time2retain,
        };
        let mut b = Bhs::default();
        r.write_to(&mut b);
        tx.push_pdu(&b, &[], self.digests);
        if response == CLOSED && !other {
            tracing::info!(initiator = %self.initiator_name, reason = l.reason, cid = self.cid,
                "logout");
            Action::Close
        } else {
            Action::Continue
        }
    }

    /// Close the session's other connections (`None`: all of them) or the
    /// one with this CID, and wait until their threads (and so their
    /// tasks, ERL 0) have ended. The Logout Response code.
    fn close_others(&self, cid: Option<u16>) -> u8 {
        let victims: Vec<u64> = self
            .core
            .conns()
            .into_iter()
            .filter(|c| c.conn_id != self.conn_id && cid.is_none_or(|x| x == c.cid))
            .map(|c| c.conn_id)
            .collect();
        if cid.is_some() && victims.is_empty() {
            return CID_NOT_FOUND;
        }
        if victims.is_empty() {
            return CLOSED;
        }
        tracing::info!(initiator = %self.initiator_name, ?cid, connections = victims.len(),
            "logout closes other connections of the session");
        let deadline = Instant::now() + REINSTATE_WAIT;
        if self.shared.stop_conns(&self.core, &victims, deadline) {
            CLOSED
        } else {
            CLEANUP_FAILED
        }
    }
}
