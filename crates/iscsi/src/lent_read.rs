//! Large READs sent from the backstore's own memory: when the LU's
//! backstore lends its bytes (`Backstore::read_lent`, the ramdisk), the
//! Data-In PDUs point straight at them and the one `writev` of the flush
//! copies them into the socket: no user-space copy. The lent pieces are a
//! snapshot (the backstore copies a chunk on write while one is lent),
//! so a WRITE that runs before the flush cannot tear the READ.
//!
//! Small READs keep the copy: 4 KiB costs less to copy than to lend, and
//! a lent chunk makes a concurrent writer of that chunk copy all of it.

use iscsi_wire::request::ScsiCommand;

use crate::session::Session;
use crate::txq::TxQueue;

/// READs shorter than this are copied (see the module comment).
pub const LENT_MIN: u32 = 64 << 10;

impl Session {
    /// Answer `c` (a command without Data-Out) with lent memory if it is a
    /// READ of at least [`LENT_MIN`] bytes from a lending backstore; false
    /// when nothing ran (the caller executes it as usual).
    pub fn execute_lent(&mut self, tx: &mut TxQueue, c: &ScsiCommand, cdb: &[u8]) -> bool {
        if !c.read || c.expected_data_len < LENT_MIN {
            return false;
        }
        let lun = scsi::lun::decode(c.lun);
        let Some((out, data)) = self.luns.execute_lent_read(&self.nexus, lun, cdb) else {
            return false;
        };
        self.count_io(lun, c, data.len(), 0);
        self.respond(tx, c, cdb, 0, out, data, 0);
        true
    }
}
