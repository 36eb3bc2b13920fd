//! Task Management Function requests (RFC 7143 §11.5-11.6). The fabric
//! aborts its own tasks (writes waiting for Data-Out, and commands on the
//! I/O engine: those are waited for, see `offload`, so the TMF response is
//! the last word about them) and forwards the LU-side effects to the core;
//! the result maps to a TMF response code.

use iscsi_wire::bhs::{sn_le, sn_lt};
use iscsi_wire::request::TaskMgmtRequest;
use iscsi_wire::response::TaskMgmtResponse;
use iscsi_wire::{Bhs, Frame};
use target_core::{TmfFunction, TmfResult};

use crate::session::{Action, Session};
use crate::txq::TxQueue;

/// TMF response codes.
pub const COMPLETE: u8 = 0;
pub const TASK_DOES_NOT_EXIST: u8 = 1;
pub const LUN_DOES_NOT_EXIST: u8 = 2;
pub const REASSIGN_NOT_SUPPORTED: u8 = 4;
pub const NOT_SUPPORTED: u8 = 5;
/// "Task management function authorization failed": LIO's answer to a
/// target reset its node attributes do not allow.
pub const AUTH_FAILED: u8 = 6;
pub const REJECTED: u8 = 255;

/// Map a core result to the wire.
pub fn response_code(r: TmfResult) -> u8 {
    match r {
        TmfResult::Complete => COMPLETE,
        TmfResult::LunDoesNotExist => LUN_DOES_NOT_EXIST,
        TmfResult::NotSupported => NOT_SUPPORTED,
        TmfResult::Rejected => REJECTED,
    }
}

impl Session {
    pub fn task_mgmt(&mut self, f: &Frame<'_>, tx: &mut TxQueue) -> Action {
        let r = TaskMgmtRequest::parse(&f.bhs);
        if !self.accept_cmdsn(r.immediate, r.cmdsn) {
            return Action::Continue;
        }
        self.refresh_luns();
        // LIO checks the node attribute before anything is aborted.
        if matches!(r.function, 6 | 7) && !self.may_reset_target(r.function == 7) {
            tracing::warn!(initiator = %self.initiator_name, function = r.function,
                "target reset refused: the initiator's ACL does not allow it (tmr_warm_reset / tmr_cold_reset)");
            self.tmf_response(r.itt, AUTH_FAILED, tx);
            return Action::Continue;
        }
        let lun = scsi::lun::decode(r.lun);
        let mut close = false;
        let core = |s: &Session, func: TmfFunction| {
            response_code(s.luns.task_management(&s.nexus, func, lun))
        };
        // Pool tasks the function aborts: answered never, waited for now.
        let aborted = match r.function {
            1 => self.abort_flights(tx, |t| t.tag == u64::from(r.referenced_tag)),
            2 | 4 | 5 => self.abort_flights(tx, |t| t.lun == lun),
            6 | 7 => self.abort_flights(tx, |_| true),
            _ => Some(0),
        };
        let Some(aborted) = aborted else {
            return Action::Close;
        };
        // Functions for the whole task set of an LU (every initiator's):
        // other sessions' pool tasks there finish before the answer too.
        let settled = match r.function {
            4 | 5 => self.wait_lus_idle(Some(lun)),
            6 | 7 => self.wait_lus_idle(None),
            _ => true,
        };
        if !settled {
            return Action::Close;
        }
        let response = match r.function {
            1 => {
                if let Some(i) = self.tasks.iter().position(|t| t.itt == r.referenced_tag) {
                    self.drop_task(i, tx);
                    COMPLETE
                } else if aborted > 0 {
                    COMPLETE
                } else if sn_le(self.exp_cmdsn, r.ref_cmdsn) && sn_lt(r.ref_cmdsn, r.cmdsn) {
                    // In the window but never received: consider it
                    // received and aborted (RFC 7143 §11.5.1).
                    COMPLETE
                } else {
                    TASK_DOES_NOT_EXIST
                }
            }
            2 => {
                self.drop_lun_tasks(r.lun, tx);
                core(self, TmfFunction::AbortTaskSet)
            }
            3 => core(self, TmfFunction::ClearAca),
            4 => {
                self.drop_lun_tasks(r.lun, tx);
                core(self, TmfFunction::ClearTaskSet)
            }
            5 => {
                self.drop_lun_tasks(r.lun, tx);
                core(self, TmfFunction::LogicalUnitReset)
            }
            6 => {
                self.drop_all_tasks(tx);
                core(self, TmfFunction::TargetWarmReset)
            }
            7 => {
                self.drop_all_tasks(tx);
                close = true;
                core(self, TmfFunction::TargetColdReset)
            }
            // TASK REASSIGN needs ERL 2.
            8 => REASSIGN_NOT_SUPPORTED,
            _ => REJECTED,
        };
        tracing::info!(initiator = %self.initiator_name, function = r.function, lun, response,
            "task management");
        self.tmf_response(r.itt, response, tx);
        // A cold reset ends every connection to the target: the others now,
        // ours after the answer is sent.
        if close && response == COMPLETE {
            if let Some(t) = &self.target {
                self.shared.close_target_sessions(&t.iqn, self.conn_id);
            }
            Action::Close
        } else {
            Action::Continue
        }
    }
}

impl Session {
    fn tmf_response(&mut self, itt: u32, response: u8, tx: &mut TxQueue) {
        let resp = TaskMgmtResponse {
            response,
            itt,
            sn: self.sn_next(),
        };
        let mut b = Bhs::default();
        resp.write_to(&mut b);
        tx.push_pdu(&b, &[], self.digests);
    }

    /// TARGET WARM (`cold` false) or COLD RESET from this session: a reset
    /// reaches every initiator's LUs and a cold one ends their sessions, so
    /// as in LIO an ACL's initiator needs its `tmr_warm_reset` /
    /// `tmr_cold_reset` node attribute (LIO's value, 0, refuses). Sessions
    /// without an ACL (demo mode) keep SAM's behaviour. The configuration
    /// read is the current one: ACLs may have changed since login.
    fn may_reset_target(&self, cold: bool) -> bool {
        let Some(t) = &self.target else {
            return false;
        };
        let current = self.shared.target(&t.iqn).unwrap_or_else(|| t.clone());
        let Some(tpg) = current.tpgs.iter().find(|g| g.tag == self.nexus.tpg_tag) else {
            return false;
        };
        match crate::sessions::find_acl(tpg, &self.initiator_name) {
            Some(acl) if cold => acl.attributes.tmr_cold_reset,
            Some(acl) => acl.attributes.tmr_warm_reset,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_results_map_to_wire_codes() {
        let cases = [
            (TmfResult::Complete, 0),
            (TmfResult::LunDoesNotExist, 2),
            (TmfResult::NotSupported, 5),
            (TmfResult::Rejected, 255),
        ];
        for (r, c) in cases {
            assert_eq!(response_code(r), c, "{r:?}");
        }
    }
}
