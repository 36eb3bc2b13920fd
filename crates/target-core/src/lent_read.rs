//! READs answered with memory the backstore lends ([`LunTable::execute_lent_read`]):
//! the fabric sends the Data-In from the backstore's own memory, with no
//! copy into a buffer of ours (`backstore::lent`: a snapshot, so a WRITE
//! that runs while the Data-In is still being sent cannot tear it).
//!
//! The command passes every gate [`LunTable::execute`] applies (the same
//! `prepare` the asynchronous and vhost paths use); only the backstore
//! call differs. Anything else, and a backstore that lends nothing, is
//! left to [`LunTable::execute`].

use backstore::LentRead;
use scsi::cdb::Cdb;
use scsi::opcode as op;

use crate::dispatch::{self, GOOD};
use crate::error::CmdError;
use crate::rw::Access;
use crate::{LunTable, Nexus, Outcome};

/// Whether `cdb` is a READ (6/10/12/16).
fn is_read(cdb: &[u8]) -> bool {
    cdb.first().is_some_and(|&o| op::is_read(o))
}

impl LunTable {
    /// Run `cdb` if it is a READ of a mapped LU whose backstore lends
    /// memory ([`backstore::Backstore::read_lent`]); `None` otherwise
    /// (nothing ran: use [`LunTable::execute`]). The [`LentRead`] holds
    /// the Data-In (empty unless GOOD).
    pub fn execute_lent_read(
        &self,
        nexus: &Nexus,
        lun_id: u64,
        cdb: &[u8],
    ) -> Option<(Outcome, LentRead)> {
        if !is_read(cdb) {
            return None;
        }
        let lun = self.find(lun_id)?;
        let dev = &lun.device;
        let cdb = Cdb::new(cdb).ok()?;
        // Ask before the gates, so that a backstore that lends nothing
        // costs one call that returns `None` and no command runs twice.
        let probe = dev.backstore.read_lent(0, 0)?;
        drop(probe);
        let stats = &dev.state.stats;
        let started = stats.begin(cdb.opcode());
        let (out, data) = match dispatch::prepare_rw(self, nexus, lun, cdb, 0) {
            Ok(Some(Access::Read { offset, len })) => {
                // Ordered against WRITE ATOMIC and COMPARE AND WRITE as
                // every READ is; the snapshot is taken inside.
                let _order = dev.io_shared();
                match dev.backstore.read_lent(offset, len) {
                    Some(Ok(d)) => (GOOD, d),
                    Some(Err(e)) => (
                        dispatch::outcome_for(&CmdError::ReadError(e)),
                        LentRead::new(),
                    ),
                    None => (
                        dispatch::outcome_for(&CmdError::ReadError(std::io::Error::other(
                            "backstore stopped lending reads",
                        ))),
                        LentRead::new(),
                    ),
                }
            }
            Ok(_) => (GOOD, LentRead::new()),
            Err(e) => (dispatch::outcome_for(&e), LentRead::new()),
        };
        started.end(&out, data.len(), 0);
        Some((out, data))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::testutil::*;
    use crate::{Command, Device, DeviceOptions, Lun, Status, TaskAttr};

    fn table_with(store: Arc<backstore::RamBackstore>) -> LunTable {
        let dev = Device::new(DeviceOptions::new("rd0", WWN), store);
        LunTable {
            luns: vec![Lun {
                id: 0,
                device: dev,
                write_protect: false,
            }],
        }
    }

    fn nexus() -> Nexus {
        Rig::new().nexus(1)
    }

    fn read10(lba: u32, blocks: u16) -> [u8; 10] {
        let mut c = [0u8; 10];
        c[0] = op::READ_10;
        c[2..6].copy_from_slice(&lba.to_be_bytes());
        c[7..9].copy_from_slice(&blocks.to_be_bytes());
        c
    }

    #[test]
    fn lent_read_answers_as_execute_does() {
        let store = Arc::new(backstore::RamBackstore::new(1 << 20).unwrap());
        let t = table_with(store.clone());
        let n = nexus();
        // The first command meets the power-on unit attention, like execute.
        let (out, d) = t.execute_lent_read(&n, 0, &read10(0, 1)).unwrap();
        assert_eq!(out.status, Status::CheckCondition);
        assert!(d.is_empty());
        backstore::Backstore::write_at(&*store, &[7u8; 4096], 4096).unwrap();
        let (out, d) = t.execute_lent_read(&n, 0, &read10(8, 8)).unwrap();
        assert_eq!(out.status, Status::Good);
        let mut got = Vec::new();
        d.copy_to(&mut got);
        let mut want = Vec::new();
        let c = Command {
            cdb: &read10(8, 8),
            data_out: &[],
            expected_len: 4096,
            attr: TaskAttr::Simple,
        };
        t.execute(&n, 0, &c, &mut want);
        assert_eq!(got, want);
        assert!(got.iter().all(|&b| b == 7));
        // Out of range: the same sense as execute; other commands and
        // unmapped LUNs are not taken.
        let (out, _) = t.execute_lent_read(&n, 0, &read10(1 << 20, 1)).unwrap();
        assert_eq!(out.status, Status::CheckCondition);
        assert!(t
            .execute_lent_read(&n, 0, &[0x12, 0, 0, 0, 36, 0])
            .is_none());
        assert!(t.execute_lent_read(&n, 5, &read10(0, 1)).is_none());
    }
}
