//! While one PDU of a batch runs, the next one's READ is announced to its
//! backstore (`LunTable::prefetch_read`): a ramdisk then has that READ's
//! bytes in the CPU cache by the time it copies them (4 KiB random reads
//! at QD32, which arrive dozens per receive).

use iscsi_wire::request::ScsiCommand;
use iscsi_wire::{Bhs, Opcode};

use crate::session::Session;

impl Session {
    /// `next`: the bytes after the PDU about to run (the next PDU's header
    /// if it has arrived). Cheap when it is anything but a READ.
    pub fn prefetch_next(&self, next: &[u8]) {
        if self.discovery {
            return;
        }
        let Some(b) = Bhs::from_slice(next) else {
            return;
        };
        if b.opcode() != Opcode::SCSI_COMMAND {
            return;
        }
        let c = ScsiCommand::parse(&b);
        if c.read && !c.write {
            self.luns.prefetch_read(scsi::lun::decode(c.lun), &c.cdb);
        }
    }
}
