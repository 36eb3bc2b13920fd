//! The SCSI transfer length of write commands, which the fabric needs for
//! the residual of a write (EDTL vs what the CDB asks to transfer) but the
//! core contract does not report. Only the WRITE/WRITE AND VERIFY/COMPARE
//! AND WRITE families are known here; other commands count as "what was
//! sent". (Contract change requested: let `Outcome` carry it.)

use target_core::LunTable;

/// Bytes the CDB asks the initiator to send, for the known write CDBs.
pub fn write_transfer_len(luns: &LunTable, lun: u64, cdb: &[u8]) -> Option<u64> {
    let bs = u64::from(
        luns.luns
            .iter()
            .find(|l| l.id == lun)?
            .device
            .options
            .block_size,
    );
    let be16 = |i: usize| {
        Some(u64::from(u16::from_be_bytes([
            *cdb.get(i)?,
            *cdb.get(i + 1)?,
        ])))
    };
    let be32 = |i: usize| {
        Some(u64::from(u32::from_be_bytes([
            *cdb.get(i)?,
            *cdb.get(i + 1)?,
            *cdb.get(i + 2)?,
            *cdb.get(i + 3)?,
        ])))
    };
    let blocks = match *cdb.first()? {
        // WRITE(6): 0 means 256 blocks.
        0x0a => match *cdb.get(4)? {
            0 => 256,
            n => u64::from(n),
        },
        0x2a | 0x2e => be16(7)?,
        0xaa | 0xae => be32(6)?,
        0x8a | 0x8e => be32(10)?,
        // COMPARE AND WRITE sends the verify and the write data.
        0x89 => 2 * u64::from(*cdb.get(13)?),
        _ => return None,
    };
    Some(blocks * bs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use target_core::{Device, DeviceOptions, Lun};

    #[test]
    fn write_lengths_table() {
        let store = Arc::new(backstore::NullBackstore::new(1 << 20));
        let mut opts = DeviceOptions::new("n", "00000000-0000-4000-8000-000000000000");
        opts.block_size = 4096;
        let luns = LunTable {
            luns: vec![Lun {
                id: 3,
                device: Device::new(opts, store),
                write_protect: false,
            }],
        };
        let cases: &[(&[u8], Option<u64>)] = &[
            (&[0x0a, 0, 0, 0, 0, 0], Some(256 * 4096)),
            (&[0x0a, 0, 0, 0, 2, 0], Some(2 * 4096)),
            (&[0x2a, 0, 0, 0, 0, 0, 0, 0, 3, 0], Some(3 * 4096)),
            (&[0x2e, 0, 0, 0, 0, 0, 0, 1, 0, 0], Some(256 * 4096)),
            (&[0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0], Some(5 * 4096)),
            (
                &[0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0],
                Some(7 * 4096),
            ),
            (
                &[0x89, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0],
                Some(2 * 4096),
            ),
            (&[0x2a, 0, 0], None), // truncated CDB
            (&[0x12, 0, 0, 0, 36, 0], None),
            (&[], None),
        ];
        for (cdb, want) in cases {
            assert_eq!(write_transfer_len(&luns, 3, cdb), *want, "{cdb:02x?}");
        }
        assert_eq!(
            write_transfer_len(&luns, 9, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            None
        );
    }
}
