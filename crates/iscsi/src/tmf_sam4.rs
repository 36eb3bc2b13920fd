//! The task management functions RFC 7144 §4.1 adds from SAM-4/5: QUERY
//! TASK, QUERY TASK SET, I_T NEXUS RESET and QUERY ASYNC EVENT. The queries
//! look at this session's tasks (waiting for Data-Out or in the I/O engine)
//! and the core's unit attentions without changing anything; the nexus
//! reset ends every task of the session, then the core does the LU side.

use iscsi_wire::request::TaskMgmtRequest;
use iscsi_wire::tmf::{TmfFunction as Wire, TmfResponse};
use target_core::{AsyncEvent, TmfFunction};

use crate::session::{Action, Session};
use crate::txq::TxQueue;

impl Session {
    /// Answer `r` if it is one of RFC 7144's functions (`lun` decoded);
    /// `None` for the others.
    pub(crate) fn sam4_tmf(
        &mut self,
        r: &TaskMgmtRequest,
        lun: u64,
        tx: &mut TxQueue,
    ) -> Option<Action> {
        // RFC 7144: only QUERY ASYNC EVENT fills the Additional Response
        // Information (SAM-5 7.6: UADE DEPTH, then the sense key, ASC and
        // ASCQ of the condition reported next); zero for the others.
        let mut additional = [0u8; 3];
        let response = match r.function {
            Wire::QueryTask => {
                let tag = r.referenced_tag;
                self.query(lun, |itt, l| itt == tag && l == lun)
            }
            Wire::QueryTaskSet => self.query(lun, |_, l| l == lun),
            // SAM-5 7.6: FUNCTION SUCCEEDED while a unit attention (or a
            // deferred error, which rtarget never holds) is pending. The
            // condition stays pending for the next command to report.
            Wire::QueryAsyncEvent => match self.luns.query_async_event(&self.nexus, lun) {
                AsyncEvent::UnitAttention(asc, pending) => {
                    // UADE DEPTH (bits 5-4): 01b this one, 10b more behind.
                    let depth = if pending > 1 { 0x20 } else { 0x10 };
                    let key = scsi::SenseKey::UnitAttention as u8;
                    additional = [depth | key, asc.0, asc.1];
                    TmfResponse::Succeeded
                }
                AsyncEvent::Nothing => TmfResponse::Complete,
                AsyncEvent::NoLun => TmfResponse::LunDoesNotExist,
            },
            // Every task of the nexus ends (on every LU: the LUN field is
            // reserved), engine tasks waited for, so that the answer is the
            // last word about them; then the UA and reservation side. The
            // session stays: SAM-5 7.7 resets the nexus's LU-side state
            // (as an I_T nexus loss would leave it) without ending the
            // nexus, which the initiator may log out of itself.
            Wire::ITNexusReset => {
                if self.abort_flights(tx, |_| true).is_none() {
                    return Some(Action::Close);
                }
                self.drop_all_tasks(tx);
                let core = self
                    .luns
                    .task_management(&self.nexus, TmfFunction::ITNexusReset, lun);
                crate::tmf::response_code(core)
            }
            _ => return None,
        };
        tracing::info!(initiator = %self.initiator_name, function = ?r.function, lun, ?response,
            ?additional, "task management");
        self.tmf_response_info(r.itt, response, additional, tx);
        Some(Action::Continue)
    }

    /// FUNCTION SUCCEEDED when a task of this session that `which` picks
    /// (by ITT and LUN) is in the task set, FUNCTION COMPLETE when none is
    /// (SAM-5 7.8, 7.9).
    fn query(&self, lun: u64, which: impl Fn(u32, u64) -> bool) -> TmfResponse {
        let waiting = self
            .tasks
            .iter()
            .any(|t| which(t.itt, scsi::lun::decode(t.lun())));
        if waiting || self.offload.has_task(|t| which(t.tag as u32, t.lun)) {
            TmfResponse::Succeeded
        } else if self.luns.find(lun).is_none() {
            TmfResponse::LunDoesNotExist
        } else {
            TmfResponse::Complete
        }
    }
}
