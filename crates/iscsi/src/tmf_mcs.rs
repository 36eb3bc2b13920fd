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

use crate::dataout::WriteTask;
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
                    let mine = |t: &WriteTask| t.itt == itt;
                    let gathering = gathering(&self.tasks, mine);
                    if let Some(i) = self.tasks.iter().position(mine) {
                        self.drop_task(i, tx);
                    }
                    let Some(f) = self.abort_flights(tx, |t| t.tag == u64::from(itt)) else {
                        return false;
                    };
                    gathering + f
                }
                AbortWhat::Lun(lun) => {
                    let l = scsi::lun::decode(lun);
                    let gathering = gathering(&self.tasks, |t| t.lun() == lun);
                    self.drop_lun_tasks(lun, tx);
                    let Some(f) = self.abort_flights(tx, |t| t.lun == l) else {
                        return false;
                    };
                    gathering + f
                }
                AbortWhat::All => {
                    let gathering = gathering(&self.tasks, |_| true);
                    self.drop_all_tasks(tx);
                    let Some(f) = self.abort_flights(tx, |_| true) else {
                        return false;
                    };
                    gathering + f
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

/// Write tasks `which` selects that are not streaming: a streaming one is
/// an engine task too, which `abort_flights` counts (once, as a task).
fn gathering(tasks: &[WriteTask], which: impl Fn(&WriteTask) -> bool) -> usize {
    tasks
        .iter()
        .filter(|t| t.stream.is_none() && which(t))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstore::testing::RecordsPieces;
    use iscsi_wire::request::ScsiCommand;
    use iscsi_wire::Bhs;
    use target_core::engine::Cdb;
    use target_core::{Device, DeviceOptions, Lun, LunTable, Nexus, StreamCheck, TaskAttr};

    /// A streamed write is a write task and an engine task at once: an
    /// abort counts it once (with its engine task), a gathering one as a
    /// write task.
    #[test]
    fn a_streamed_write_task_is_left_to_its_engine_task() {
        let dev = Device::new(
            DeviceOptions::new("s0", "5b3c9a2e-0000-4000-8000-0000000000a7"),
            RecordsPieces::new(1 << 20),
        );
        let luns = LunTable {
            luns: vec![Lun {
                id: 0,
                device: dev,
                write_protect: false,
            }],
        };
        let nexus = Nexus {
            id: 7,
            initiator_port: "iqn.2026-11.org.rtarget:i,i,0x1".into(),
            target_port: "iqn.2026-11.org.rtarget:t,t,0x1".into(),
            relative_port_id: 1,
            tpg_tag: 1,
        };
        let cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0];
        // The first check answers the power-on unit attention.
        let plan = (0..2)
            .find_map(|_| {
                match luns.check_streamed_write(&nexus, 0, &cdb, TaskAttr::Simple, 4096) {
                    StreamCheck::Stream(p) => Some(p),
                    _ => None,
                }
            })
            .expect("a WRITE that streams");
        let mut q = crate::offload::new_offload();
        let cmd = ScsiCommand::parse(&Bhs::default());
        let stream = q.start_stream(plan, 1, 0, Cdb::from_slice(&cdb), cmd);
        assert!(stream.is_some(), "a stream");
        let tasks = [WriteTask::for_test(1, stream), WriteTask::for_test(2, None)];
        assert_eq!(gathering(&tasks, |t| t.itt == 1), 0, "the streamed one");
        assert_eq!(gathering(&tasks, |t| t.itt == 2), 1, "the gathering one");
        assert_eq!(gathering(&tasks, |_| true), 1);
    }
}
