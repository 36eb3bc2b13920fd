//! CDB views. A [`Cdb`] copies the (untrusted) command bytes into a fixed
//! 16-byte array once, after checking the length its group code implies, so
//! every later field access is a constant-offset read that cannot panic.
//! [`RwCdb`] is the LBA / transfer-length / flags view shared by the block
//! commands (READ, WRITE, VERIFY, WRITE SAME, SYNCHRONIZE CACHE, ...).

use crate::opcode;

/// Why a CDB could not be viewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CdbError {
    #[error("empty CDB")]
    Empty,
    #[error("CDB of {got} bytes, opcode needs {need}")]
    TooShort { need: usize, got: usize },
}

/// A CDB of at most 16 bytes (longer variable-length CDBs keep their first 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cdb {
    bytes: [u8; 16],
    len: usize,
}

impl Cdb {
    pub fn new(raw: &[u8]) -> Result<Cdb, CdbError> {
        let op = *raw.first().ok_or(CdbError::Empty)?;
        let len = match opcode::cdb_len(op) {
            Some(need) if raw.len() < need => {
                return Err(CdbError::TooShort {
                    need,
                    got: raw.len(),
                })
            }
            Some(need) => need,
            None => raw.len().min(16),
        };
        let mut bytes = [0u8; 16];
        bytes[..len].copy_from_slice(&raw[..len]);
        Ok(Cdb { bytes, len })
    }

    pub fn opcode(&self) -> u8 {
        self.bytes[0]
    }

    /// Length implied by the group code (or given, for other groups).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Service action field (byte 1, bits 4..0) of 12/16-byte CDBs.
    pub fn service_action(&self) -> u8 {
        self.bytes[1] & 0x1f
    }

    /// CONTROL byte (last byte of the CDB).
    pub fn control(&self) -> u8 {
        self.b(self.len.saturating_sub(1))
    }

    pub fn b(&self, i: usize) -> u8 {
        self.bytes.get(i).copied().unwrap_or(0)
    }

    pub fn be16(&self, i: usize) -> u16 {
        u16::from_be_bytes([self.b(i), self.b(i + 1)])
    }

    pub fn be24(&self, i: usize) -> u32 {
        u32::from_be_bytes([0, self.b(i), self.b(i + 1), self.b(i + 2)])
    }

    pub fn be32(&self, i: usize) -> u32 {
        u32::from_be_bytes([self.b(i), self.b(i + 1), self.b(i + 2), self.b(i + 3)])
    }

    pub fn be64(&self, i: usize) -> u64 {
        (u64::from(self.be32(i)) << 32) | u64::from(self.be32(i + 4))
    }

    /// The LBA / length / flags view of a block command.
    pub fn rw(&self) -> RwCdb {
        match self.len {
            6 => {
                let blocks = u32::from(self.b(4));
                // READ(6)/WRITE(6): a zero length means 256 blocks (SBC-3 5.7).
                let blocks =
                    if blocks == 0 && matches!(self.opcode(), opcode::READ_6 | opcode::WRITE_6) {
                        256
                    } else {
                        blocks
                    };
                RwCdb {
                    lba: u64::from(self.be24(1) & 0x1f_ffff),
                    blocks,
                    flags: 0,
                }
            }
            10 => RwCdb {
                lba: u64::from(self.be32(2)),
                blocks: u32::from(self.be16(7)),
                flags: self.b(1),
            },
            12 => RwCdb {
                lba: u64::from(self.be32(2)),
                blocks: self.be32(6),
                flags: self.b(1),
            },
            _ => RwCdb {
                lba: self.be64(2),
                blocks: self.be32(10),
                flags: self.b(1),
            },
        }
    }
}

/// LBA, number of blocks and byte-1 flags of a block command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RwCdb {
    pub lba: u64,
    pub blocks: u32,
    /// Byte 1 of the CDB (zero for 6-byte CDBs).
    pub flags: u8,
}

impl RwCdb {
    /// RDPROTECT / WRPROTECT / VRPROTECT / ORPROTECT (bits 7..5).
    pub fn protect(&self) -> u8 {
        self.flags >> 5
    }

    pub fn dpo(&self) -> bool {
        self.flags & 0x10 != 0
    }

    pub fn fua(&self) -> bool {
        self.flags & 0x08 != 0
    }

    /// VERIFY / WRITE AND VERIFY BYTCHK (bits 2..1).
    pub fn bytchk(&self) -> u8 {
        (self.flags >> 1) & 0x03
    }

    /// One past the last LBA, or `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.lba.checked_add(u64::from(self.blocks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(raw: &[u8]) -> RwCdb {
        Cdb::new(raw).expect("valid cdb").rw()
    }

    #[test]
    fn rw_views_per_cdb_size() {
        let cases: &[(&[u8], RwCdb)] = &[
            (
                &[0x08, 0x1f, 0xff, 0xfe, 0, 0],
                RwCdb {
                    lba: 0x1f_fffe,
                    blocks: 256,
                    flags: 0,
                },
            ),
            (
                &[0x08, 0xe1, 0x02, 0x03, 7, 0],
                RwCdb {
                    lba: 0x01_0203,
                    blocks: 7,
                    flags: 0,
                },
            ),
            (
                // VERIFY(6)-style zero length stays zero for other 6-byte opcodes.
                &[0x13, 0, 0, 1, 0, 0],
                RwCdb {
                    lba: 1,
                    blocks: 0,
                    flags: 0,
                },
            ),
            (
                &[0x28, 0x18, 0x12, 0x34, 0x56, 0x78, 0, 0x01, 0x00, 0],
                RwCdb {
                    lba: 0x1234_5678,
                    blocks: 256,
                    flags: 0x18,
                },
            ),
            (
                &[0xa8, 0x20, 0, 0, 0, 9, 0, 1, 0, 0, 0, 0],
                RwCdb {
                    lba: 9,
                    blocks: 0x1_0000,
                    flags: 0x20,
                },
            ),
            (
                &[0x88, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 2, 0, 0],
                RwCdb {
                    lba: 0x0102_0304_0506_0708,
                    blocks: 2,
                    flags: 0,
                },
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(rw(raw), *want, "{raw:02x?}");
        }
    }

    #[test]
    fn flag_accessors() {
        let r = rw(&[0x2f, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r.protect(), 7);
        assert!(r.dpo());
        assert!(r.fua());
        assert_eq!(r.bytchk(), 3);
        let r = rw(&[
            0x88, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2, 0, 0,
        ]);
        assert_eq!(r.end(), None);
    }

    #[test]
    fn length_checked_against_group_code() {
        assert_eq!(Cdb::new(&[]), Err(CdbError::Empty));
        assert_eq!(
            Cdb::new(&[0x28, 0, 0]),
            Err(CdbError::TooShort { need: 10, got: 3 })
        );
        let c = Cdb::new(&[0x00, 0, 0, 0, 0, 0, 0xaa, 0xbb]).expect("longer is fine");
        assert_eq!(c.len(), 6);
        assert_eq!(c.b(6), 0, "bytes past the CDB length are not visible");
        assert_eq!(Cdb::new(&[0x7f, 1, 2]).map(|c| c.len()), Ok(3));
        assert_eq!(
            c.be64(14),
            0,
            "reads past the array yield zero, never panic"
        );
    }
}
