//! READs answered with memory the backstore lends ([`LunTable::execute_lent_read`]):
//! the fabric sends the Data-In from the backstore's own memory, with no
//! copy into a buffer of ours. Usually a snapshot (`backstore::lent`: a
//! WRITE that runs while the Data-In is still being sent cannot tear it);
//! a *live* read (a tmpfs file's pages) shows the medium itself, so the
//! answer holds the LU's medium order ([`MediumOrder`]) until the fabric
//! has copied the bytes out: WRITE ATOMIC and COMPARE AND WRITE, which
//! take that order exclusively, wait for the copy and never tear the READ.
//!
//! The command passes every gate [`LunTable::execute`] applies (the same
//! `prepare` the asynchronous and vhost paths use); only the backstore
//! call differs. Anything else, and a backstore that lends nothing, is
//! left to [`LunTable::execute`].

use std::sync::RwLockReadGuard;

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

/// The LU's medium order held for a live lent read: drop it once its bytes
/// are copied out (sent, or copied into memory of the fabric's own), never
/// later than the command's handling, and take no other medium order of
/// the same LU while holding it (a waiting exclusive holder would deadlock
/// the second shared acquire).
pub struct MediumOrder<'a>(Option<RwLockReadGuard<'a, ()>>);

/// A READ answered with lent memory.
pub struct LentAnswer<'a> {
    out: Outcome,
    data: LentRead,
    order: MediumOrder<'a>,
}

impl<'a> LentAnswer<'a> {
    /// The status, the Data-In (empty unless GOOD) and the order to hold
    /// while a live Data-In is copied out.
    pub fn into_parts(self) -> (Outcome, LentRead, MediumOrder<'a>) {
        (self.out, self.data, self.order)
    }
}

impl LunTable {
    /// Run `cdb` if it is a READ of a mapped LU whose backstore lends
    /// memory ([`backstore::Backstore::read_lent`]); `None` otherwise
    /// (nothing ran: use [`LunTable::execute`]). `live_ok`: the caller
    /// can take a live read (copy it out with the kernel only, before its
    /// next command); without it a live lender's READ is left to `execute`.
    pub fn execute_lent_read(
        &self,
        nexus: &Nexus,
        lun_id: u64,
        cdb: &[u8],
        live_ok: bool,
    ) -> Option<LentAnswer<'_>> {
        if !is_read(cdb) {
            return None;
        }
        let lun = self.find(lun_id)?;
        let dev = &lun.device;
        let cdb = Cdb::new(cdb).ok()?;
        // Ask before the gates, so that a backstore that lends nothing
        // costs one call that returns `None` and no command runs twice.
        let probe = dev.backstore.read_lent(0, 0)?;
        if !live_ok && probe.as_ref().is_ok_and(LentRead::is_live) {
            return None;
        }
        drop(probe);
        let stats = &dev.state.stats;
        let started = stats.begin(cdb.opcode());
        let mut order = MediumOrder(None);
        let (out, data) = match dispatch::prepare_rw(self, nexus, lun, cdb, 0) {
            Ok(Some(Access::Read { offset, len })) => {
                // Ordered against WRITE ATOMIC and COMPARE AND WRITE as
                // every READ is; a snapshot is taken inside, a live read
                // keeps the order until the fabric copied it out.
                let guard = dev.io_shared();
                let r = match dev.backstore.read_lent(offset, len) {
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
                };
                if r.1.is_live() {
                    order.0 = Some(guard);
                }
                r
            }
            Ok(_) => (GOOD, LentRead::new()),
            Err(e) => (dispatch::outcome_for(&e), LentRead::new()),
        };
        started.end(&out, data.len(), 0);
        Some(LentAnswer { out, data, order })
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
        let (out, d, _) = t
            .execute_lent_read(&n, 0, &read10(0, 1), true)
            .unwrap()
            .into_parts();
        assert_eq!(out.status, Status::CheckCondition);
        assert!(d.is_empty());
        backstore::Backstore::write_at(&*store, &[7u8; 4096], 4096).unwrap();
        let (out, d, _) = t
            .execute_lent_read(&n, 0, &read10(8, 8), true)
            .unwrap()
            .into_parts();
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
        let (out, _, _) = t
            .execute_lent_read(&n, 0, &read10(1 << 20, 1), true)
            .unwrap()
            .into_parts();
        assert_eq!(out.status, Status::CheckCondition);
        assert!(t
            .execute_lent_read(&n, 0, &[0x12, 0, 0, 0, 36, 0], true)
            .is_none());
        assert!(t.execute_lent_read(&n, 5, &read10(0, 1), true).is_none());
    }

    /// A live lent read (a tmpfs file's pages) keeps the LU's medium order
    /// until its `MediumOrder` drops: an exclusive holder (COMPARE AND
    /// WRITE, WRITE ATOMIC) waits for the fabric's copy-out. A caller that
    /// cannot take live reads is declined before anything runs.
    #[test]
    fn a_live_lent_read_holds_the_medium_order_until_dropped() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let f = backstore::FileBackstore::open(&backstore::FileOptions {
            size: Some(1 << 20),
            ..backstore::FileOptions::new(dir.path().join("lu.img"))
        })
        .unwrap();
        backstore::Backstore::write_at(&f, &[3u8; 8192], 0).unwrap();
        let dev = Device::new(DeviceOptions::new("lent0", WWN), Arc::new(f));
        let t = LunTable {
            luns: vec![Lun {
                id: 0,
                device: dev.clone(),
                write_protect: false,
            }],
        };
        let n = nexus();
        let _ = t.execute_lent_read(&n, 0, &read10(0, 1), true); // the UA
        assert!(t.execute_lent_read(&n, 0, &read10(0, 8), false).is_none());
        let (out, d, order) = t
            .execute_lent_read(&n, 0, &read10(0, 16), true)
            .unwrap()
            .into_parts();
        assert_eq!(out.status, Status::Good);
        assert!(d.is_live() && d.len() == 8192);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let _g = dev.io_exclusive();
                tx.send(()).unwrap();
            });
            let wait = std::time::Duration::from_millis(200);
            assert!(rx.recv_timeout(wait).is_err(), "exclusive ran while lent");
            drop(order);
            rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        });
    }
}
