//! Large READs of inline LUs overlap with the connection's sends.
//!
//! A 1 MiB READ from the page cache costs the connection thread its
//! `pread` (a copy and the page-cache walk, ~30% of its CPU per I/O
//! measured) plus the `writev` of the Data-In (the copy into the socket
//! and, over loopback, the peer's receive path: ~70%). Run inline, one
//! thread does both in turn and is saturated while the machine's other
//! core idles (BENCHMARKS.md, "1 MiB reads: overlap"). So when the
//! connection already has sending to do (Data-In queued, or engine tasks
//! in flight whose answers it will send), a large READ goes to the worker
//! pool: its `pread` runs on another core while this thread sends.
//!
//! Everything else stays inline: small I/O (a 4 KiB hand-off costs more
//! than the copy), a READ when the connection has nothing else to do (QD1:
//! overlap has nothing to hide behind, the hand-off would only add
//! latency), and backstores that lend their memory (the ramdisk: no
//! `pread` to move). Task ordering is the engine's as for any pool task
//! (SIMPLE tasks may run concurrently, ORDERED ones wait), and the READ
//! takes the LU's `io_order` lock on the worker like every READ, so WRITE
//! ATOMIC and COMPARE AND WRITE still never tear it.

use iscsi_wire::request::ScsiCommand;

use crate::session::Session;
use crate::txq::TxQueue;

/// READs at least this long may be overlapped (a 256 KiB `pread` is
/// ~20 µs: an order above the hand-off's cost).
pub const OVERLAP_MIN: u32 = 256 << 10;

impl Session {
    /// Whether the READ `c` (of an inline LU, runnable now) should go to
    /// the worker pool so that its `pread` overlaps the connection's sends.
    pub fn overlap_read(&self, tx: &TxQueue, c: &ScsiCommand, lun: u64) -> bool {
        if !c.read || c.write || c.expected_data_len < OVERLAP_MIN {
            return false;
        }
        // Only when there is sending to overlap with.
        if tx.queued() == 0 && !self.offload.active() {
            return false;
        }
        // A lent READ has no `pread` to move (`lent_read`).
        self.pool_pays_for(lun) && !self.lends(lun, c.expected_data_len)
    }

    /// Whether moving a large copy of LU `lun` to the pool pays (for a
    /// READ here, a WRITE in `write_overlap`): the engine is not congested
    /// and the LU's backstore copies. One that lends snapshots of its
    /// memory (the ramdisk) has no `pread` to move on a READ, and copies into its
    /// chunks on a WRITE faster than the hand-off costs (measured 0.75x on
    /// 1 MiB writes QD8 when they went to the pool).
    pub(crate) fn pool_pays_for(&self, lun: u64) -> bool {
        if self.offload.congested() {
            return false;
        }
        let Some(l) = self.luns.find(lun) else {
            return false;
        };
        !matches!(l.device.backstore.read_lent(0, 0), Some(Ok(r)) if !r.is_live())
    }
}
