//! Task Management Function requests (RFC 7143 §11.5-11.6). The fabric
//! aborts its own tasks (writes waiting for Data-Out, and commands on the
//! I/O engine: those are waited for, see `offload`, so the TMF response is
//! the last word about them) and forwards the LU-side effects to the core;
//! the core's result maps to a TMF response code.

use iscsi_wire::bhs::{sn_le, sn_lt};
use iscsi_wire::request::TaskMgmtRequest;
use iscsi_wire::response::TaskMgmtResponse;
use iscsi_wire::tmf::{TmfFunction as Wire, TmfResponse};
use iscsi_wire::{Bhs, Frame};
use target_core::{TmfFunction, TmfResult};

use crate::session::{Action, Session};
use crate::session_core::AbortWhat;
use crate::txq::TxQueue;

/// Map a core result to the wire.
pub fn response_code(r: TmfResult) -> TmfResponse {
    match r {
        TmfResult::Complete => TmfResponse::Complete,
        TmfResult::LunDoesNotExist => TmfResponse::LunDoesNotExist,
        TmfResult::NotSupported => TmfResponse::NotSupported,
        TmfResult::Rejected => TmfResponse::Rejected,
    }
}

/// Which tasks a function ends before it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Nothing,
    /// The referenced task.
    Task,
    /// This session's tasks on the LU.
    SessionLun,
    /// Every session's tasks on the LU (its whole task set).
    Lun,
    /// Every task on the target.
    Target,
}

/// What a function ends on the session's other connections.
fn elsewhere(reach: Reach, r: &TaskMgmtRequest) -> Option<AbortWhat> {
    match reach {
        Reach::Nothing => None,
        Reach::Task => Some(AbortWhat::Task(r.referenced_tag)),
        Reach::SessionLun | Reach::Lun => Some(AbortWhat::Lun(r.lun)),
        Reach::Target => Some(AbortWhat::All),
    }
}

fn reach(f: Wire) -> Reach {
    match f {
        Wire::AbortTask => Reach::Task,
        Wire::AbortTaskSet => Reach::SessionLun,
        Wire::ClearTaskSet | Wire::LogicalUnitReset => Reach::Lun,
        Wire::TargetWarmReset | Wire::TargetColdReset => Reach::Target,
        Wire::ClearAca
        | Wire::TaskReassign
        | Wire::QueryTask
        | Wire::QueryTaskSet
        | Wire::ITNexusReset
        | Wire::QueryAsyncEvent
        | Wire::Unknown(_) => Reach::Nothing,
    }
}

impl Session {
    pub fn task_mgmt(&mut self, f: &Frame<'_>, tx: &mut TxQueue) -> Action {
        let r = TaskMgmtRequest::parse(&f.bhs);
        if !self.accept_cmdsn(r.immediate, r.cmdsn) {
            return Action::Continue;
        }
        self.refresh_luns();
        let func = r.function;
        // LIO checks the node attribute before anything is aborted.
        let reset = matches!(func, Wire::TargetWarmReset | Wire::TargetColdReset);
        if reset && !self.may_reset_target(func == Wire::TargetColdReset) {
            tracing::warn!(initiator = %self.initiator_name, function = ?func,
                "target reset refused: the initiator's ACL does not allow it (tmr_warm_reset / tmr_cold_reset)");
            self.tmf_response(r.itt, TmfResponse::AuthorizationFailed, tx);
            return Action::Continue;
        }
        let lun = scsi::lun::decode(r.lun);
        if let Some(action) = self.sam4_tmf(&r, lun, tx) {
            return action;
        }
        let mut close = false;
        let core = |s: &Session, func: TmfFunction| {
            response_code(s.luns.task_management(&s.nexus, func, lun))
        };
        // Pool tasks the function aborts: answered never, waited for now.
        let aborted = match reach(func) {
            Reach::Nothing => Some(0),
            Reach::Task => self.abort_flights(tx, |t| t.tag == u64::from(r.referenced_tag)),
            Reach::SessionLun | Reach::Lun => self.abort_flights(tx, |t| t.lun == lun),
            Reach::Target => self.abort_flights(tx, |_| true),
        };
        let Some(aborted) = aborted else {
            return Action::Close;
        };
        // The session's other connections end theirs too (MC/S).
        let aborted = aborted + elsewhere(reach(func), &r).map_or(0, |w| self.abort_elsewhere(w));
        // Functions for the whole task set of an LU (every initiator's):
        // other sessions' pool tasks there finish before the answer too.
        let settled = match reach(func) {
            Reach::Lun => self.wait_lus_idle(Some(lun)),
            Reach::Target => self.wait_lus_idle(None),
            Reach::Nothing | Reach::Task | Reach::SessionLun => true,
        };
        if !settled {
            return Action::Close;
        }
        #[cfg(feature = "testing")]
        if matches!(reach(func), Reach::Lun | Reach::Target) {
            crate::test_hooks::reset_waited();
        }
        let response = match func {
            Wire::AbortTask => self.abort_task(&r, aborted, tx),
            Wire::AbortTaskSet => {
                self.drop_lun_tasks(r.lun, tx);
                core(self, TmfFunction::AbortTaskSet)
            }
            Wire::ClearAca => core(self, TmfFunction::ClearAca),
            Wire::ClearTaskSet => {
                self.drop_lun_tasks(r.lun, tx);
                core(self, TmfFunction::ClearTaskSet)
            }
            Wire::LogicalUnitReset => {
                self.drop_lun_tasks(r.lun, tx);
                core(self, TmfFunction::LogicalUnitReset)
            }
            Wire::TargetWarmReset => {
                self.drop_all_tasks(tx);
                core(self, TmfFunction::TargetWarmReset)
            }
            Wire::TargetColdReset => {
                self.drop_all_tasks(tx);
                close = true;
                core(self, TmfFunction::TargetColdReset)
            }
            // TASK REASSIGN needs ERL 2.
            Wire::TaskReassign => TmfResponse::ReassignNotSupported,
            // Codes that name no function are rejected (RFC 7144's are
            // answered by `sam4_tmf`).
            Wire::QueryTask
            | Wire::QueryTaskSet
            | Wire::ITNexusReset
            | Wire::QueryAsyncEvent
            | Wire::Unknown(_) => TmfResponse::Rejected,
        };
        // A piece of another session's streamed write that started after
        // the wait above read the fence before the reset raised its unit
        // attention: it was neither waited for nor fenced. Every piece
        // that starts from now on is fenced, so wait once more for those
        // already under way: none lands after the answer.
        let fenced = matches!(
            func,
            Wire::LogicalUnitReset | Wire::TargetWarmReset | Wire::TargetColdReset
        );
        if fenced && response == TmfResponse::Complete {
            let lun = (func == Wire::LogicalUnitReset).then_some(lun);
            if !self.wait_lus_idle(lun) {
                return Action::Close;
            }
        }
        tracing::info!(initiator = %self.initiator_name, function = ?func, lun, ?response,
            "task management");
        self.tmf_response(r.itt, response, tx);
        // A cold reset ends every connection to the target: the others now,
        // ours after the answer is sent.
        if close && response == TmfResponse::Complete {
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
    /// ABORT TASK's answer, once its engine tasks (`aborted` of them) are
    /// gone: the write task waiting for Data-Out goes too.
    fn abort_task(&mut self, r: &TaskMgmtRequest, aborted: usize, tx: &mut TxQueue) -> TmfResponse {
        if let Some(i) = self.tasks.iter().position(|t| t.itt == r.referenced_tag) {
            self.drop_task(i, tx);
            TmfResponse::Complete
        } else if aborted > 0 {
            TmfResponse::Complete
        } else if sn_le(self.exp_cmdsn(), r.ref_cmdsn) && sn_lt(r.ref_cmdsn, r.cmdsn) {
            // In the window but never received: consider it received and
            // aborted (RFC 7143 §11.5.1).
            TmfResponse::Complete
        } else {
            TmfResponse::TaskDoesNotExist
        }
    }

    pub(crate) fn tmf_response(&mut self, itt: u32, response: TmfResponse, tx: &mut TxQueue) {
        self.tmf_response_info(itt, response, [0; 3], tx);
    }

    /// A response with RFC 7144's Additional Response Information.
    pub(crate) fn tmf_response_info(
        &mut self,
        itt: u32,
        response: TmfResponse,
        additional: [u8; 3],
        tx: &mut TxQueue,
    ) {
        let resp = TaskMgmtResponse {
            response,
            additional,
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
            assert_eq!(response_code(r).code(), c, "{r:?}");
        }
    }

    #[test]
    fn what_each_function_ends() {
        let cases = [
            (1, Reach::Task),
            (2, Reach::SessionLun),
            (3, Reach::Nothing),
            (4, Reach::Lun),
            (5, Reach::Lun),
            (6, Reach::Target),
            (7, Reach::Target),
            (8, Reach::Nothing),
            (9, Reach::Nothing),
            (12, Reach::Nothing),
            (0x55, Reach::Nothing),
        ];
        for (code, want) in cases {
            assert_eq!(reach(Wire::from_code(code)), want, "{code}");
        }
    }
}
