//! Large READs sent from the backstore's own memory: when the LU's
//! backstore lends its bytes (`Backstore::read_lent`), the Data-In PDUs
//! point straight at them and the kernel's copy into the socket is the
//! only one.
//!
//! Two kinds of lenders:
//! - the ramdisk lends snapshots (it copies a chunk on write while one is
//!   lent): a WRITE that runs before the flush cannot tear its READs. Those
//!   of [`EARLY_MIN`] or more are still sent as soon as they are answered,
//!   as far as the socket takes them without waiting (`send_early`; the
//!   rest goes with the batch): the initiator starts taking the first
//!   READ's data while the next one is answered, where the batch's one
//!   `writev` made it wait for all of them (ab.sh, 4 rounds: ramdisk 1 MiB
//!   reads QD8/QD32 1.05-1.10x IOPS at equal CPU in both slot orders, 512
//!   KiB QD8 1.12x; but 256 KiB reads at QD32 0.69x at 1.47x the CPU, so
//!   not those);
//! - a fileio LU on tmpfs lends the file's pages themselves, *live*: their
//!   Data-In is sent at once, while the core still holds the LU's medium
//!   order (`target_core::MediumOrder`), and what the socket does not take
//!   within `txq::live::LIVE_WAIT` is copied (`TxQueue::send_live`). So the
//!   next command of the connection, and an exclusive one (WRITE ATOMIC,
//!   COMPARE AND WRITE) of any session, sees the READ's bytes out of the
//!   file. Only READs of [`AT_ONCE_MIN`] or more (one send each is no cost
//!   there), and not with DataDigest (its CRC would read the pages in user
//!   space before the send: a concurrent write would make it wrong, a
//!   truncated file would be SIGBUS).
//!
//! Small READs keep the copy: 4 KiB costs less to copy than to lend, and
//! a lent ramdisk chunk makes a concurrent writer of that chunk copy all
//! of it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use iscsi_wire::request::ScsiCommand;

use crate::session::Session;
use crate::txq::TxQueue;

/// READs shorter than this are copied (see the module comment).
pub const LENT_MIN: u32 = 64 << 10;
/// Live lent READs (tmpfs pages) start here: each is sent on its own.
pub const AT_ONCE_MIN: u32 = 256 << 10;
/// Snapshot lent READs this long are sent early (see the module comment).
pub const EARLY_MIN: usize = 512 << 10;

/// Live lent READs since the server started (monitoring, tests): their
/// bytes, and those of them copied because the socket had no room.
#[derive(Default)]
pub struct LentCounters {
    pub live_bytes: AtomicU64,
    pub copied_bytes: AtomicU64,
}

impl Session {
    /// Answer `c` (a command without Data-Out) with lent memory if it is a
    /// READ of at least [`LENT_MIN`] bytes from a lending backstore; false
    /// when nothing ran (the caller executes it as usual).
    pub fn execute_lent(&mut self, tx: &mut TxQueue, c: &ScsiCommand, cdb: &[u8]) -> bool {
        if !c.read || c.expected_data_len < LENT_MIN {
            return false;
        }
        let lun = scsi::lun::decode(c.lun);
        let live_ok = self.takes_live(c.expected_data_len);
        // The answer borrows the table, not the session (which responds).
        let luns = Arc::clone(&self.luns);
        let Some(answer) = luns.execute_lent_read(&self.nexus, lun, cdb, live_ok) else {
            return false;
        };
        let (out, data, order) = answer.into_parts();
        let (live, data_len) = (data.is_live(), data.len());
        self.count_io(lun, c, data_len, 0);
        self.respond(tx, c, cdb, 0, out, data, 0);
        if live {
            let len = data_len as u64;
            let copied = tx.send_live() as u64;
            let n = &self.shared.lent_tx;
            n.live_bytes.fetch_add(len, Ordering::Relaxed);
            n.copied_bytes.fetch_add(copied, Ordering::Relaxed);
        } else if data_len >= EARLY_MIN {
            tx.send_early();
        }
        drop(order);
        true
    }

    /// Whether a READ of `len` bytes may be answered with live pages.
    fn takes_live(&self, len: u32) -> bool {
        len >= AT_ONCE_MIN && !self.digests.data
    }

    /// Whether LU `lun` answers a READ of `len` bytes (of at least
    /// [`LENT_MIN`]) on this connection with lent memory.
    pub(crate) fn lends(&self, lun: u64, len: u32) -> bool {
        let Some(l) = self.luns.find(lun) else {
            return false;
        };
        match l.device.backstore.read_lent(0, 0) {
            Some(Ok(probe)) => !probe.is_live() || self.takes_live(len),
            _ => false,
        }
    }
}
