//! READs announced ahead ([`LunTable::prefetch_read`]): a fabric that has
//! the next command at hand while it runs the current one tells the
//! backstore which bytes it will read ([`backstore::Backstore::prefetch`]).

use scsi::cdb::Cdb;
use scsi::opcode as op;

use crate::LunTable;

impl LunTable {
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
    use std::io;
    use std::sync::{Arc, Mutex};

    use backstore::{Backstore, Capabilities};

    use crate::testutil::WWN;
    use crate::{Device, DeviceOptions, Lun, LunTable};

    /// Records the prefetch hints it gets.
    #[derive(Default)]
    struct Hints(Mutex<Vec<(u64, usize)>>);

    impl Backstore for Hints {
        fn size(&self) -> u64 {
            1 << 30
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
        fn prefetch(&self, offset: u64, len: usize) {
            self.0.lock().unwrap().push((offset, len));
        }
    }

    #[test]
    fn reads_of_a_mapped_lu_are_announced_to_its_backstore() {
        let store = Arc::new(Hints::default());
        let table = LunTable {
            luns: vec![Lun {
                id: 3,
                device: Device::new(DeviceOptions::new("h0", WWN), store.clone()),
                write_protect: false,
            }],
        };
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
            *store.0.lock().unwrap(),
            vec![(1000 * 512, 4096), ((1 << 33) * 512, 1024)]
        );
    }
}
