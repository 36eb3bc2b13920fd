//! LUN encoding (SAM-5 4.6): the 8-byte LUN field of REPORT LUNS data and of
//! fabric PDUs, and the flat `u64` LUN number the rest of rtarget uses.

/// Encode a LUN number: peripheral device addressing below 256, flat space
/// addressing up to 16383, extended flat space (8 bytes) beyond that is not
/// used by rtarget, so larger numbers are truncated to 14 bits.
pub fn encode(lun: u64) -> [u8; 8] {
    let mut out = [0u8; 8];
    if lun < 256 {
        out[1] = lun as u8;
    } else {
        let l = (lun & 0x3fff) as u16;
        out[0] = 0x40 | (l >> 8) as u8;
        out[1] = l as u8;
    }
    out
}

/// Decode the first level of an 8-byte LUN field (peripheral or flat space
/// addressing). Other address methods are returned verbatim as a u64 so they
/// never match a configured LUN.
pub fn decode(raw: [u8; 8]) -> u64 {
    match raw[0] >> 6 {
        0 if raw[0] == 0 && raw[2..] == [0; 6] => u64::from(raw[1]),
        1 if raw[2..] == [0; 6] => (u64::from(raw[0] & 0x3f) << 8) | u64::from(raw[1]),
        _ => u64::from_be_bytes(raw) | (1 << 63),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let cases: &[(u64, [u8; 8])] = &[
            (0, [0, 0, 0, 0, 0, 0, 0, 0]),
            (5, [0, 5, 0, 0, 0, 0, 0, 0]),
            (255, [0, 255, 0, 0, 0, 0, 0, 0]),
            (256, [0x41, 0, 0, 0, 0, 0, 0, 0]),
            (0x3fff, [0x7f, 0xff, 0, 0, 0, 0, 0, 0]),
        ];
        for &(lun, raw) in cases {
            assert_eq!(encode(lun), raw, "encode {lun}");
            assert_eq!(decode(raw), lun, "decode {raw:02x?}");
        }
    }

    #[test]
    fn odd_addressing_never_matches_a_small_lun() {
        assert!(decode([0x80, 1, 0, 0, 0, 0, 0, 0]) > 0x3fff);
        assert!(decode([0x00, 1, 0, 0, 0, 0, 0, 1]) > 0x3fff);
    }
}
