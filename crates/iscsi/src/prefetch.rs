//! While one PDU of a batch runs, the next one's READ is announced to its
//! backstore (`LunTable::prefetch_read`): a ramdisk then has that READ's
//! bytes in the CPU cache by the time it copies them (4 KiB random reads
//! at QD32, which arrive dozens per receive). Only for a LUN table with an
//! LU that takes hints: the others (files, block devices, RBD) skip looking
//! at the next PDU altogether.

use iscsi_wire::request::ScsiCommand;
use iscsi_wire::{Bhs, Opcode};
use target_core::LunTable;

use crate::session::Session;

/// Whether a session hints the next READ: asked once per LUN table it
/// takes (at login, on a LUN change), not per PDU.
pub(crate) fn hints_for(discovery: bool, luns: &LunTable) -> bool {
    !discovery && luns.takes_prefetch_hints()
}

impl Session {
    /// `next`: the bytes after the PDU about to run (the next PDU's header
    /// if it has arrived). Cheap when it is anything but a READ, and
    /// nothing when the session's LUs take no hints.
    pub fn prefetch_next(&self, next: &[u8]) {
        announce_next(self.prefetch_hints, &self.luns, next);
    }
}

/// With `hints` (from [`hints_for`]), hint the backstore of the READ whose
/// header starts `next`, if it is one.
fn announce_next(hints: bool, luns: &LunTable, next: &[u8]) {
    if !hints {
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
        luns.prefetch_read(scsi::lun::decode(c.lun), &c.cdb);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use backstore::testing::RecordsHints;
    use iscsi_wire::request::ScsiCommand;
    use iscsi_wire::Bhs;
    use target_core::{Device, DeviceOptions, Lun, LunTable};

    fn table(store: &Arc<RecordsHints>) -> LunTable {
        let opts = DeviceOptions::new("h", "5c1d2e3f-0000-4000-8000-0000000000c1");
        LunTable {
            luns: vec![Lun {
                id: 0,
                device: Device::new(opts, store.clone()),
                write_protect: false,
            }],
        }
    }

    /// The next PDU: a READ(10) of 8 blocks at LBA 16 of LUN 0.
    fn next_read() -> Vec<u8> {
        let mut c = ScsiCommand::parse(&Bhs::default());
        c.read = true;
        c.cdb[..10].copy_from_slice(&[0x28, 0, 0, 0, 0, 16, 0, 0, 8, 0]);
        let mut b = Bhs::default();
        c.write_to(&mut b);
        b.0.to_vec()
    }

    /// As the session does: the gate is taken from the table, then each
    /// PDU's successor is announced through it.
    fn run(discovery: bool, store: &Arc<RecordsHints>) {
        let t = table(store);
        super::announce_next(super::hints_for(discovery, &t), &t, &next_read());
    }

    #[test]
    fn only_lus_that_take_hints_get_them() {
        let takes = RecordsHints::new(true);
        run(false, &takes);
        assert_eq!(takes.hints(), vec![(16 * 512, 4096)]);
        // Neither a backstore that takes none nor a discovery session.
        let ignores = RecordsHints::new(false);
        run(false, &ignores);
        let discovery = RecordsHints::new(true);
        run(true, &discovery);
        assert_eq!((ignores.hints(), discovery.hints()), (vec![], vec![]));
    }
}
