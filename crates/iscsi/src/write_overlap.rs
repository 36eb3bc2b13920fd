//! Large WRITEs of inline LUs overlap with the connection's receives.
//!
//! A 1 MiB WRITE to a page-cache file costs the connection thread the
//! receive of its data (a copy out of the socket) and then the `pwrite`
//! (a second copy, into the page cache, and the page-cache walk). Run
//! inline, one thread does both in turn while the initiator's next bursts
//! wait in the socket; at QD8 on two cores the machine was far from
//! saturated (fileio on /dev/shm: ~1950 IOPS at ~590 µs of target plus
//! initiator CPU per write, a ceiling of ~3400). So when the connection
//! has other writes still gathering data, or engine tasks in flight, a
//! large WRITE goes to the worker pool: its `pwrite` runs on another core
//! while this thread receives the next data. The mirror of
//! `read_overlap`, with the same limits: small I/O, a lone command (QD1:
//! nothing to hide behind) and memory backstores stay inline; ordering is the engine's as
//! for any pool task, and the WRITE takes the LU's `io_order` lock on the
//! worker like every WRITE.

use iscsi_wire::request::ScsiCommand;

use crate::read_overlap::OVERLAP_MIN;
use crate::session::Session;

impl Session {
    /// Whether the WRITE `c` (of an inline LU, runnable now, its data all
    /// in: `len` bytes) should go to the worker pool so that its backstore
    /// write overlaps the connection's receives.
    pub fn overlap_write(&self, c: &ScsiCommand, lun: u64, len: usize) -> bool {
        if !c.write || c.read || len < OVERLAP_MIN as usize {
            return false;
        }
        // Only when there is receiving (or answering) to overlap with.
        if self.tasks.is_empty() && !self.offload.active() {
            return false;
        }
        self.pool_pays_for(lun)
    }
}
