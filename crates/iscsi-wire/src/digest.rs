//! CRC32C header and data digests (RFC 7143 §12.1). The `crc32c` crate uses
//! the SSE4.2 / ARMv8 CRC instructions when present. iSCSI sends the digest
//! least significant byte first.

/// CRC32C of `data` as iSCSI computes it.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Continue a CRC32C over another piece (for data segments plus padding).
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    crc32c::crc32c_append(crc, data)
}

/// Digest as the 4 bytes on the wire.
pub fn to_wire(crc: u32) -> [u8; 4] {
    crc.to_le_bytes()
}

/// Digest from the 4 bytes on the wire.
pub fn from_wire(b: [u8; 4]) -> u32 {
    u32::from_le_bytes(b)
}

/// Which digests a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3720 B.4 test vectors (bytes as they appear on the wire).
    #[test]
    fn rfc_vectors() {
        let zeros = [0u8; 32];
        assert_eq!(to_wire(crc32c(&zeros)), [0xaa, 0x36, 0x91, 0x8a]);
        let ones = [0xffu8; 32];
        assert_eq!(to_wire(crc32c(&ones)), [0x43, 0xab, 0xa8, 0x62]);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(to_wire(crc32c(&inc)), [0x4e, 0x79, 0xdd, 0x46]);
    }

    #[test]
    fn append_matches_whole() {
        let data: Vec<u8> = (0..100u8).collect();
        let split = crc32c_append(crc32c(&data[..37]), &data[37..]);
        assert_eq!(split, crc32c(&data));
        assert_eq!(from_wire(to_wire(split)), split);
    }
}
