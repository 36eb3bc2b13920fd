//! READs announced ahead ([`LunTable::prefetch_read`]): a fabric that has
//! the next command at hand while it runs the current one tells the
//! backstore which bytes it will read ([`backstore::Backstore::prefetch`]).

use scsi::cdb::Cdb;
use scsi::opcode as op;

use crate::LunTable;

impl LunTable {
    /// Whether any LU of the table uses [`LunTable::prefetch_read`]'s
    /// hints (its backstore's [`backstore::Backstore::takes_prefetch_hints`]):
    /// a fabric asks once per table and otherwise skips looking at the
    /// next command at all.
    pub fn takes_prefetch_hints(&self) -> bool {
        self.luns
            .iter()
            .any(|l| l.device.backstore.takes_prefetch_hints())
    }

    /// If `cdb` is a READ of LU `lun_id`, hint its backstore that those
    /// bytes are read next. Nothing is checked beyond what the hint needs:
    /// the command itself runs later with every check.
    pub fn prefetch_read(&self, lun_id: u64, cdb: &[u8]) {
        if !cdb.first().is_some_and(|&o| op::is_read(o)) {
            return;
        }
        let (Some(lun), Ok(cdb)) = (self.find(lun_id), Cdb::new(cdb)) else {
            return;
        };
        let rw = cdb.rw();
        let dev = &lun.device;
        let bs = dev.block_size();
        let (Some(off), Some(len)) = (rw.lba.checked_mul(bs), u64::from(rw.blocks).checked_mul(bs))
        else {
            return;
        };
        dev.backstore
            .prefetch(off, usize::try_from(len).unwrap_or(usize::MAX));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use backstore::testing::RecordsHints;
    use backstore::NullBackstore;

    use crate::testutil::WWN;
    use crate::{Device, DeviceOptions, Lun, LunTable};

    fn table(stores: &[(u64, Arc<dyn backstore::Backstore>)]) -> LunTable {
        LunTable {
            luns: stores
                .iter()
                .map(|(id, s)| Lun {
                    id: *id,
                    device: Device::new(DeviceOptions::new("h0", WWN), Arc::clone(s)),
                    write_protect: false,
                })
                .collect(),
        }
    }

    #[test]
    fn reads_of_a_mapped_lu_are_announced_to_its_backstore() {
        let store = RecordsHints::new(true);
        let table = table(&[(3, store.clone())]);
        // READ(10) of 8 blocks at LBA 1000, READ(16) of 2 at 2^33.
        table.prefetch_read(3, &[0x28, 0, 0, 0, 0x03, 0xe8, 0, 0, 8, 0]);
        let mut r16 = [0u8; 16];
        r16[0] = 0x88;
        r16[2..10].copy_from_slice(&(1u64 << 33).to_be_bytes());
        r16[13] = 2;
        table.prefetch_read(3, &r16);
        // Not announced: a WRITE(10), another LUN, an empty CDB.
        table.prefetch_read(3, &[0x2a, 0, 0, 0, 0, 1, 0, 0, 8, 0]);
        table.prefetch_read(4, &[0x28, 0, 0, 0, 0, 1, 0, 0, 8, 0]);
        table.prefetch_read(3, &[]);
        assert_eq!(
            store.hints(),
            vec![(1000 * 512, 4096), ((1 << 33) * 512, 1024)]
        );
    }

    /// A table takes hints when one of its LUs does (a RAM disk), not when
    /// none does (files, wrappers, an empty table).
    #[test]
    fn a_table_takes_hints_when_one_of_its_backstores_does() {
        let null: Arc<dyn backstore::Backstore> = Arc::new(NullBackstore::new(1 << 20));
        let ram: Arc<dyn backstore::Backstore> =
            Arc::new(backstore::RamBackstore::new(1 << 20).unwrap());
        assert!(!LunTable::default().takes_prefetch_hints());
        assert!(!table(&[(0, null.clone())]).takes_prefetch_hints());
        assert!(!table(&[(0, RecordsHints::new(false))]).takes_prefetch_hints());
        assert!(table(&[(0, null), (1, ram)]).takes_prefetch_hints());
    }
}
