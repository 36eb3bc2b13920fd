//! THE SEAM between the vhost fabric and target-core: everything the
//! virtio-scsi side needs from the core goes through [`GuestNexus`], and
//! nothing else in this crate names a target-core execution call.
//!
//! One guest connection is one I_T nexus. The fabric hands over
//! (LUN, CDB, task attribute, request id, Data-Out) and gets back
//! status + sense + Data-In; task management goes the same way.
//!
//! Today this runs [`LunTable::execute`] inline on the virtqueue's worker
//! thread (the core's "inline" path the iSCSI fabric uses), and keeps the
//! nexus' task set (which request ids are running) itself, so a TMF can
//! wait for the commands it affects and an overlapped id is detected.
//! When target-core's fabric-neutral engine lands, `execute` becomes a
//! submission with a completion callback and the task set moves into the
//! engine; callers (`queue.rs`) keep the same three calls.
//!
//! Copies: Data-Out is gathered from guest memory into one buffer (one
//! copy, because the core wants a contiguous `&[u8]`), Data-In is built by
//! the core into a reused `Vec` and copied once into the guest's buffers.
//! An engine that takes scatter-gather lists (guest memory slices) would
//! let the backstore read/write guest memory directly and drop both.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use target_core::{Command, LunTable, Nexus, Outcome, TaskAttr, TmfFunction, TmfResult};

/// One SCSI command from the guest, as the core needs it.
pub struct Task<'a> {
    /// Request id: the task tag of this nexus.
    pub tag: u64,
    /// LUN number (first level, as `scsi::lun::decode` gives it).
    pub lun: u64,
    pub cdb: &'a [u8],
    pub attr: TaskAttr,
    pub data_out: &'a [u8],
    /// Bytes the guest can take (Data-In) or sent (Data-Out).
    pub expected_len: u32,
}

/// What a TMF did, in virtio terms the caller maps to a response byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfAnswer {
    /// FUNCTION COMPLETE.
    Complete,
    /// QUERY TASK / QUERY TASK SET: a task is there (FUNCTION SUCCEEDED).
    Succeeded,
    /// The LUN is not mapped.
    IncorrectLun,
    Rejected,
}

/// Task management functions as virtio-scsi names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tmf {
    AbortTask(u64),
    AbortTaskSet,
    ClearTaskSet,
    ClearAca,
    ItNexusReset,
    LogicalUnitReset,
    QueryTask(u64),
    QueryTaskSet,
}

/// The running tasks of the nexus: tag -> LUN.
#[derive(Default)]
struct TaskSet {
    running: Mutex<HashMap<u64, u64>>,
    done: Condvar,
}

/// One guest's I_T nexus and its task set.
pub struct GuestNexus {
    nexus: Nexus,
    tasks: TaskSet,
}

/// Why a command did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its tag is already running (SAM-5 5.9: overlapped command).
    Overlapped,
}

impl GuestNexus {
    pub fn new(nexus: Nexus) -> Arc<GuestNexus> {
        Arc::new(GuestNexus {
            nexus,
            tasks: TaskSet::default(),
        })
    }

    pub fn nexus(&self) -> &Nexus {
        &self.nexus
    }

    /// Run one command to completion. Data-In goes to `data_in` (the core
    /// clears it first; keep the Vec across calls to reuse its capacity).
    pub fn execute(
        &self,
        luns: &LunTable,
        task: &Task<'_>,
        data_in: &mut Vec<u8>,
    ) -> Result<Outcome, Refused> {
        {
            let mut running = self.tasks.running.lock().unwrap();
            if running.contains_key(&task.tag) {
                return Err(Refused::Overlapped);
            }
            running.insert(task.tag, task.lun);
        }
        // Remove the tag even if the core panics, so TMFs never wait forever.
        struct Finish<'a>(&'a TaskSet, u64);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                self.0.running.lock().unwrap().remove(&self.1);
                self.0.done.notify_all();
            }
        }
        let _finish = Finish(&self.tasks, task.tag);
        let cmd = Command {
            cdb: task.cdb,
            data_out: task.data_out,
            expected_len: task.expected_len,
            attr: task.attr,
        };
        Ok(luns.execute(&self.nexus, task.lun, &cmd, data_in))
    }

    /// Bytes of Data-Out a write CDB asks for (for the residual).
    pub fn data_out_len(&self, luns: &LunTable, lun: u64, cdb: &[u8]) -> Option<u64> {
        luns.data_out_len(lun, cdb)
    }

    /// A task management function: the commands it affects are completed
    /// first (they run to completion; nothing is queued behind them in this
    /// inline model), then the core applies the LU side effects.
    pub fn task_management(&self, luns: &LunTable, lun: u64, tmf: Tmf) -> TmfAnswer {
        let mapped = luns.find(lun).is_some();
        let func = match tmf {
            Tmf::QueryTask(tag) => {
                let running = self.tasks.running.lock().unwrap();
                return match running.get(&tag) {
                    Some(&l) if l == lun => TmfAnswer::Succeeded,
                    _ if !mapped => TmfAnswer::IncorrectLun,
                    _ => TmfAnswer::Complete,
                };
            }
            Tmf::QueryTaskSet => {
                let running = self.tasks.running.lock().unwrap();
                return if running.values().any(|&l| l == lun) {
                    TmfAnswer::Succeeded
                } else if !mapped {
                    TmfAnswer::IncorrectLun
                } else {
                    TmfAnswer::Complete
                };
            }
            Tmf::AbortTask(tag) => {
                self.wait_for(|t, l| t == tag && l == lun);
                TmfFunction::AbortTask
            }
            Tmf::AbortTaskSet => {
                self.wait_for(|_, l| l == lun);
                TmfFunction::AbortTaskSet
            }
            Tmf::ClearTaskSet => {
                self.wait_for(|_, l| l == lun);
                TmfFunction::ClearTaskSet
            }
            Tmf::ClearAca => TmfFunction::ClearAca,
            Tmf::LogicalUnitReset => {
                self.wait_for(|_, l| l == lun);
                TmfFunction::LogicalUnitReset
            }
            Tmf::ItNexusReset => {
                // Every task of the nexus ends, then the core forgets the
                // nexus' per-LU state (SPC-2 reservations, UA queues), as
                // on a nexus loss; its next command sees a fresh nexus.
                self.wait_for(|_, _| true);
                luns.nexus_gone(&self.nexus);
                return TmfAnswer::Complete;
            }
        };
        match luns.task_management(&self.nexus, func, lun) {
            TmfResult::Complete => TmfAnswer::Complete,
            TmfResult::LunDoesNotExist => TmfAnswer::IncorrectLun,
            TmfResult::NotSupported | TmfResult::Rejected => TmfAnswer::Rejected,
        }
    }

    /// The guest went away: the core drops the nexus' state.
    pub fn gone(&self, luns: &LunTable) {
        self.wait_for(|_, _| true);
        luns.nexus_gone(&self.nexus);
    }

    /// Tell the nexus the LUN inventory changed (queues 3F/0E).
    pub fn luns_changed(&self, luns: &LunTable) {
        luns.luns_changed(&self.nexus);
    }

    /// Tags running now (for tests and `sessions`).
    pub fn running(&self) -> usize {
        self.tasks.running.lock().unwrap().len()
    }

    fn wait_for(&self, affected: impl Fn(u64, u64) -> bool) {
        let mut running = self.tasks.running.lock().unwrap();
        while running.iter().any(|(&t, &l)| affected(t, l)) {
            running = self.tasks.done.wait(running).unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    use backstore::{Backstore, Capabilities, RamBackstore};
    use target_core::{Device, DeviceOptions, Lun, Status};

    /// A RAM backstore whose reads wait at a gate, so a command can be
    /// held running while the test issues others.
    struct Gated {
        inner: RamBackstore,
        entered: Mutex<Option<mpsc::Sender<()>>>,
        open: (Mutex<bool>, Condvar),
    }

    impl Backstore for Gated {
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn capabilities(&self) -> Capabilities {
            self.inner.capabilities()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
            if let Some(tx) = self.entered.lock().unwrap().take() {
                tx.send(()).unwrap();
            }
            let mut open = self.open.0.lock().unwrap();
            while !*open {
                open = self.open.1.wait(open).unwrap();
            }
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
            self.inner.write_at(buf, offset)
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const READ_1: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
    const TUR: [u8; 6] = [0; 6];

    fn task(tag: u64, cdb: &[u8]) -> Task<'_> {
        Task {
            tag,
            lun: 0,
            cdb,
            attr: TaskAttr::Simple,
            data_out: &[],
            expected_len: 512,
        }
    }

    /// While tag 7 runs: a second command with tag 7 is an overlapped
    /// command, QUERY TASK finds it, ABORT TASK waits until it completed;
    /// afterwards the tag is free again.
    #[test]
    fn task_set_overlap_query_and_abort_wait() {
        let (tx, entered) = mpsc::channel();
        let store = Arc::new(Gated {
            inner: RamBackstore::new(1 << 20).unwrap(),
            entered: Mutex::new(Some(tx)),
            open: (Mutex::new(false), Condvar::new()),
        });
        let dev = Device::new(
            DeviceOptions::new("g", "5a4b3c2d-0000-4000-8000-000000000001"),
            store.clone(),
        );
        let luns = Arc::new(LunTable {
            luns: vec![Lun {
                id: 0,
                device: dev,
                write_protect: false,
            }],
        });
        let nexus = GuestNexus::new(Nexus {
            id: 1 << 48,
            initiator_port: "naa.5001405000000001".into(),
            target_port: "naa.5001405000000002,t,0x0001".into(),
            relative_port_id: 1,
            tpg_tag: 1,
        });
        let mut buf = Vec::new();
        // The power-on unit attention first, so the READ reaches the store.
        let o = nexus.execute(&luns, &task(1, &TUR), &mut buf).unwrap();
        assert_eq!(o.status, Status::CheckCondition);

        let (n, l) = (nexus.clone(), luns.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let o = n.execute(&l, &task(7, &READ_1), &mut buf).unwrap();
            (o.status, buf.len())
        });
        entered.recv().unwrap();
        assert_eq!(nexus.running(), 1);
        assert_eq!(
            nexus.execute(&luns, &task(7, &TUR), &mut buf).unwrap_err(),
            Refused::Overlapped
        );
        assert_eq!(
            nexus.task_management(&luns, 0, Tmf::QueryTask(7)),
            TmfAnswer::Succeeded
        );
        assert_eq!(
            nexus.task_management(&luns, 0, Tmf::QueryTaskSet),
            TmfAnswer::Succeeded
        );
        assert_eq!(
            nexus.task_management(&luns, 3, Tmf::QueryTask(7)),
            TmfAnswer::IncorrectLun
        );
        let (n, l) = (nexus.clone(), luns.clone());
        let (done_tx, done) = mpsc::channel();
        let aborter = std::thread::spawn(move || {
            let a = n.task_management(&l, 0, Tmf::AbortTask(7));
            done_tx.send(a).unwrap();
        });
        // The abort cannot complete while the task runs.
        assert!(done.recv_timeout(Duration::from_millis(200)).is_err());
        *store.open.0.lock().unwrap() = true;
        store.open.1.notify_all();
        assert_eq!(reader.join().unwrap(), (Status::Good, 512));
        assert_eq!(done.recv().unwrap(), TmfAnswer::Complete);
        aborter.join().unwrap();
        assert_eq!(nexus.running(), 0);
        assert_eq!(
            nexus.task_management(&luns, 0, Tmf::QueryTask(7)),
            TmfAnswer::Complete
        );
        let o = nexus.execute(&luns, &task(7, &TUR), &mut buf).unwrap();
        assert_eq!(o.status, Status::Good, "tag 7 is free again");
    }
}
