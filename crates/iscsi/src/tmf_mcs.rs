//! Task management across the connections of one session (MC/S, ERL 0):
//! a TMF runs on the connection it arrived on, but the tasks it ends may
//! sit on another one (a write waiting for its Data-Out, a pool command,
//! each answered only on its own connection). The TMF's connection posts
//! an abort request in the session core and waits until every other
//! connection has ended what it holds of it (`serve_aborts`, called from
//! each connection's loop), so the TMF response is still the last word
//! about those tasks.

use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::server::{REINSTATE_WAIT, STOP_NONE};
use crate::session::Session;
use crate::session_core::AbortWhat;
use crate::txq::TxQueue;

impl Session {
    /// End `what` on the session's other connections; how many tasks they
    /// ended. Nothing to do (and no lock) with one connection.
    pub(crate) fn abort_elsewhere(&mut self, what: AbortWhat) -> usize {
        // A non-immediate TMF took its CmdSN: let the next command go, or
        // a connection waiting for its turn could not answer.
        self.release_cmdsn();
        let conn = self.conn.clone();
        let stopping = || {
            conn.as_ref()
                .is_some_and(|h| h.stop.load(Ordering::SeqCst) != STOP_NONE)
        };
        let deadline = Instant::now() + REINSTATE_WAIT;
        self.core
            .abort_elsewhere(self.conn_id, what, deadline, &stopping)
    }

    /// Answer other connections' abort requests: end the matching write
    /// tasks and pool commands of this connection (their answers are never
    /// sent). False when the connection was killed meanwhile.
    pub fn serve_aborts(&mut self, tx: &mut TxQueue) -> bool {
        for (id, what) in self.core.aborts_for(self.conn_id) {
            let found = match what {
                AbortWhat::Task(itt) => {
                    let mut n = 0;
                    if let Some(i) = self.tasks.iter().position(|t| t.itt == itt) {
                        self.drop_task(i, tx);
                        n += 1;
                    }
                    let Some(f) = self.abort_flights(tx, |t| t.tag == u64::from(itt)) else {
                        return false;
                    };
                    n + f
                }
                AbortWhat::Lun(lun) => {
                    let l = scsi::lun::decode(lun);
                    let before = self.tasks.len();
                    self.drop_lun_tasks(lun, tx);
                    let Some(f) = self.abort_flights(tx, |t| t.lun == l) else {
                        return false;
                    };
                    before - self.tasks.len() + f
                }
                AbortWhat::All => {
                    let before = self.tasks.len();
                    self.drop_all_tasks(tx);
                    let Some(f) = self.abort_flights(tx, |_| true) else {
                        return false;
                    };
                    before + f
                }
            };
            tracing::debug!(
                ?what,
                found,
                cid = self.cid,
                "aborted for another connection"
            );
            self.core.abort_done(self.conn_id, id, found);
        }
        true
    }
}
