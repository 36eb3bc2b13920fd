//! The 48-byte Basic Header Segment (RFC 7143 §11.2.1): the opcode newtype,
//! a copyable header value with the fields every PDU shares, and the
//! big-endian field helpers the per-opcode views in `request` and `response`
//! are built from. Parsing a header cannot fail: every 48-byte pattern is a
//! header; it is the dispatcher that decides whether its fields make sense.

use core::fmt;

/// Length of the Basic Header Segment.
pub const BHS_LEN: usize = 48;

/// Reserved tag value meaning "no task tag" / "no transfer tag".
pub const RESERVED_TAG: u32 = 0xffff_ffff;

/// A PDU opcode (6 bits). Open newtype: unknown values survive a parse and
/// serialize round trip so they can be reported in a Reject.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Opcode(pub u8);

impl Opcode {
    pub const NOP_OUT: Opcode = Opcode(0x00);
    pub const SCSI_COMMAND: Opcode = Opcode(0x01);
    pub const TASK_MGMT_REQUEST: Opcode = Opcode(0x02);
    pub const LOGIN_REQUEST: Opcode = Opcode(0x03);
    pub const TEXT_REQUEST: Opcode = Opcode(0x04);
    pub const DATA_OUT: Opcode = Opcode(0x05);
    pub const LOGOUT_REQUEST: Opcode = Opcode(0x06);
    pub const SNACK_REQUEST: Opcode = Opcode(0x10);
    pub const NOP_IN: Opcode = Opcode(0x20);
    pub const SCSI_RESPONSE: Opcode = Opcode(0x21);
    pub const TASK_MGMT_RESPONSE: Opcode = Opcode(0x22);
    pub const LOGIN_RESPONSE: Opcode = Opcode(0x23);
    pub const TEXT_RESPONSE: Opcode = Opcode(0x24);
    pub const DATA_IN: Opcode = Opcode(0x25);
    pub const LOGOUT_RESPONSE: Opcode = Opcode(0x26);
    pub const R2T: Opcode = Opcode(0x31);
    pub const ASYNC_MESSAGE: Opcode = Opcode(0x32);
    pub const REJECT: Opcode = Opcode(0x3f);

    /// Name for logs; `None` for opcodes RFC 7143 does not define.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Opcode::NOP_OUT => "NOP-Out",
            Opcode::SCSI_COMMAND => "SCSI Command",
            Opcode::TASK_MGMT_REQUEST => "Task Management Request",
            Opcode::LOGIN_REQUEST => "Login Request",
            Opcode::TEXT_REQUEST => "Text Request",
            Opcode::DATA_OUT => "SCSI Data-Out",
            Opcode::LOGOUT_REQUEST => "Logout Request",
            Opcode::SNACK_REQUEST => "SNACK Request",
            Opcode::NOP_IN => "NOP-In",
            Opcode::SCSI_RESPONSE => "SCSI Response",
            Opcode::TASK_MGMT_RESPONSE => "Task Management Response",
            Opcode::LOGIN_RESPONSE => "Login Response",
            Opcode::TEXT_RESPONSE => "Text Response",
            Opcode::DATA_IN => "SCSI Data-In",
            Opcode::LOGOUT_RESPONSE => "Logout Response",
            Opcode::R2T => "R2T",
            Opcode::ASYNC_MESSAGE => "Asynchronous Message",
            Opcode::REJECT => "Reject",
            _ => return None,
        })
    }

    /// True for opcodes an initiator may send (bit 5 clear).
    pub fn is_initiator(self) -> bool {
        self.0 & 0x20 == 0
    }
}

impl fmt::Debug for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}(0x{:02x})", self.0),
            None => write!(f, "Unknown(0x{:02x})", self.0),
        }
    }
}

/// One Basic Header Segment.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bhs(pub [u8; BHS_LEN]);

impl Default for Bhs {
    fn default() -> Self {
        Bhs([0; BHS_LEN])
    }
}

impl fmt::Debug for Bhs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bhs")
            .field("opcode", &self.opcode())
            .field("immediate", &self.immediate())
            .field("flags", &format_args!("0x{:02x}", self.flags()))
            .field("ahs_words", &self.total_ahs_words())
            .field("dsl", &self.data_segment_len())
            .field("itt", &format_args!("0x{:08x}", self.itt()))
            .finish()
    }
}

impl Bhs {
    /// Copy the first 48 bytes of `buf`; `None` if shorter.
    pub fn from_slice(buf: &[u8]) -> Option<Bhs> {
        let raw: [u8; BHS_LEN] = buf.get(..BHS_LEN)?.try_into().ok()?;
        Some(Bhs(raw))
    }

    /// A zeroed header with `opcode` set.
    pub fn with_opcode(op: Opcode) -> Bhs {
        let mut b = Bhs::default();
        b.0[0] = op.0 & 0x3f;
        b
    }

    pub fn opcode(&self) -> Opcode {
        Opcode(self.0[0] & 0x3f)
    }

    /// The I bit (immediate delivery), initiator PDUs only.
    pub fn immediate(&self) -> bool {
        self.0[0] & 0x40 != 0
    }

    pub fn set_immediate(&mut self, v: bool) {
        set_bit(&mut self.0[0], 0x40, v);
    }

    /// Byte 1: the opcode-specific flags (F bit is 0x80 for most PDUs).
    pub fn flags(&self) -> u8 {
        self.0[1]
    }

    pub fn set_flags(&mut self, v: u8) {
        self.0[1] = v;
    }

    pub fn final_bit(&self) -> bool {
        self.0[1] & 0x80 != 0
    }

    /// TotalAHSLength, in 4-byte words.
    pub fn total_ahs_words(&self) -> u8 {
        self.0[4]
    }

    pub fn set_total_ahs_words(&mut self, v: u8) {
        self.0[4] = v;
    }

    /// DataSegmentLength in bytes (without padding).
    pub fn data_segment_len(&self) -> u32 {
        u32::from_be_bytes([0, self.0[5], self.0[6], self.0[7]])
    }

    /// Set DataSegmentLength; values above 2^24-1 are clamped (callers never
    /// produce them because negotiated segment limits are below that).
    pub fn set_data_segment_len(&mut self, len: u32) {
        let l = len.min(0x00ff_ffff).to_be_bytes();
        self.0[5..8].copy_from_slice(&l[1..]);
    }

    /// Bytes 8..16: LUN for most PDUs, ISID+TSIH for login.
    pub fn lun(&self) -> [u8; 8] {
        let mut l = [0u8; 8];
        l.copy_from_slice(&self.0[8..16]);
        l
    }

    pub fn set_lun(&mut self, lun: [u8; 8]) {
        self.0[8..16].copy_from_slice(&lun);
    }

    /// Initiator Task Tag.
    pub fn itt(&self) -> u32 {
        self.u32_at(16)
    }

    pub fn set_itt(&mut self, v: u32) {
        self.set_u32_at(16, v);
    }

    /// Big-endian u32 at byte `off` (`off` is always a constant <= 44).
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_be_bytes([
            self.0[off],
            self.0[off + 1],
            self.0[off + 2],
            self.0[off + 3],
        ])
    }

    pub fn set_u32_at(&mut self, off: usize, v: u32) {
        self.0[off..off + 4].copy_from_slice(&v.to_be_bytes());
    }

    pub fn u16_at(&self, off: usize) -> u16 {
        u16::from_be_bytes([self.0[off], self.0[off + 1]])
    }

    pub fn set_u16_at(&mut self, off: usize, v: u16) {
        self.0[off..off + 2].copy_from_slice(&v.to_be_bytes());
    }
}

pub(crate) fn set_bit(byte: &mut u8, mask: u8, v: bool) {
    if v {
        *byte |= mask;
    } else {
        *byte &= !mask;
    }
}

/// Round a data segment length up to the 4-byte boundary it is padded to.
pub fn padded(len: usize) -> usize {
    (len + 3) & !3
}

/// Serial number arithmetic (RFC 1982, 32 bits) used for CmdSN/StatSN.
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && (b.wrapping_sub(a) as i32) > 0
}

/// `a <= b` in serial number arithmetic.
pub fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_opcode_round_trips() {
        let mut raw = [0u8; 48];
        raw[0] = 0x5b; // immediate + unknown 0x1b
        let b = Bhs::from_slice(&raw).unwrap();
        assert_eq!(b.opcode(), Opcode(0x1b));
        assert!(b.immediate());
        assert_eq!(b.opcode().name(), None);
        assert_eq!(b.0, raw);
    }

    #[test]
    fn data_segment_len_is_24_bits() {
        let mut b = Bhs::default();
        b.set_data_segment_len(0x0012_3456);
        assert_eq!(&b.0[4..8], &[0, 0x12, 0x34, 0x56]);
        assert_eq!(b.data_segment_len(), 0x12_3456);
        b.set_data_segment_len(u32::MAX);
        assert_eq!(b.data_segment_len(), 0xff_ffff);
    }

    #[test]
    fn short_slice_is_none() {
        assert!(Bhs::from_slice(&[0u8; 47]).is_none());
    }

    #[test]
    fn serial_numbers_wrap() {
        let cases = [
            (1u32, 2u32, true),
            (2, 1, false),
            (0xffff_fffe, 1, true),
            (1, 0xffff_fffe, false),
            (5, 5, false),
        ];
        for (a, b, lt) in cases {
            assert_eq!(sn_lt(a, b), lt, "{a} < {b}");
        }
        assert!(sn_le(5, 5));
    }

    #[test]
    fn padding() {
        for (l, p) in [(0, 0), (1, 4), (4, 4), (5, 8), (47, 48)] {
            assert_eq!(padded(l), p);
        }
    }
}
