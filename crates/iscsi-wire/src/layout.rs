//! BHS field layouts: the one mechanism every PDU view in `request` and
//! `response` is built from. A [`Place`] says where a field lives in the
//! 48-byte header and how its value is encoded there (a big-endian integer or
//! byte array at an offset, one flag bit, a small bit field); the
//! [`bhs_pdu!`] macro turns a struct whose fields are each tagged with a place
//! into that struct plus its `parse` and `write_to`, so each PDU states its
//! layout exactly once. Every place is a constant chosen here, never a peer
//! value, so the fixed-size indexing below cannot be steered by the wire; the
//! round-trip tests in `request` and `response` touch every place of every
//! PDU, so a wrong offset fails a test rather than a connection.

use crate::bhs::{set_bit, Bhs};

/// Where one field lives in a BHS and how a `T` is encoded there.
pub(crate) trait Place<T> {
    fn get(self, b: &Bhs) -> T;
    fn put(self, b: &mut Bhs, v: T);
}

/// A value stored whole at a byte offset (big-endian for integers).
#[derive(Clone, Copy)]
pub(crate) struct At(pub usize);

/// One bit of a byte: `Flag(byte, mask)` reads as `bool`.
#[derive(Clone, Copy)]
pub(crate) struct Flag(pub usize, pub u8);

/// A bit field of a byte: the value is `(byte >> shift) & mask`.
#[derive(Clone, Copy)]
pub(crate) struct Bits {
    pub byte: usize,
    pub shift: u8,
    pub mask: u8,
}

impl Bits {
    /// The low bits of `byte` selected by `mask` (the common case).
    pub const fn low(byte: usize, mask: u8) -> Bits {
        Bits {
            byte,
            shift: 0,
            mask,
        }
    }
}

/// The I bit (immediate delivery) of byte 0, initiator PDUs only.
pub(crate) const IMMEDIATE: Flag = Flag(0, 0x40);
/// The F bit (final) of byte 1.
pub(crate) const FINAL: Flag = Flag(1, 0x80);
/// The C bit (continue) of byte 1 in Login and Text PDUs.
pub(crate) const CONTINUE: Flag = Flag(1, 0x40);
/// Login T bit (transit); same position as F in other PDUs.
pub(crate) const TRANSIT: Flag = Flag(1, 0x80);
/// Login current and next stage, bits 3..2 and 1..0 of byte 1.
pub(crate) const CSG: Bits = Bits {
    byte: 1,
    shift: 2,
    mask: 3,
};
pub(crate) const NSG: Bits = Bits::low(1, 3);
/// Bytes 8..16: the LUN (most PDUs).
pub(crate) const LUN: At = At(8);
/// Login PDUs put ISID and TSIH where other PDUs have the LUN.
pub(crate) const ISID: At = At(8);
pub(crate) const TSIH: At = At(14);
/// Initiator Task Tag.
pub(crate) const ITT: At = At(16);
/// Target Transfer Tag (ReferencedTaskTag in Task Management requests).
pub(crate) const TTT: At = At(20);
/// Connection ID (u16) of Login and Logout requests, where others have TTT.
pub(crate) const CID: At = At(20);

/// A value with a fixed big-endian encoding at a byte offset.
pub(crate) trait Wire: Copy {
    fn read(b: &Bhs, off: usize) -> Self;
    fn write(self, b: &mut Bhs, off: usize);
}

/// Byte strings (LUN, ISID, CDB) are copied as they are.
impl<const N: usize> Wire for [u8; N] {
    #[inline]
    fn read(b: &Bhs, off: usize) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&b.0[off..off + N]);
        a
    }
    #[inline]
    fn write(self, b: &mut Bhs, off: usize) {
        b.0[off..off + N].copy_from_slice(&self);
    }
}

/// Integers are their big-endian bytes.
macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            #[inline]
            fn read(b: &Bhs, off: usize) -> $t {
                <$t>::from_be_bytes(Wire::read(b, off))
            }
            #[inline]
            fn write(self, b: &mut Bhs, off: usize) {
                self.to_be_bytes().write(b, off)
            }
        }
    )*};
}
wire_int!(u8, u16, u32);

impl<T: Wire> Place<T> for At {
    #[inline]
    fn get(self, b: &Bhs) -> T {
        T::read(b, self.0)
    }
    #[inline]
    fn put(self, b: &mut Bhs, v: T) {
        v.write(b, self.0)
    }
}

impl Place<bool> for Flag {
    #[inline]
    fn get(self, b: &Bhs) -> bool {
        b.0[self.0] & self.1 != 0
    }
    #[inline]
    fn put(self, b: &mut Bhs, v: bool) {
        set_bit(&mut b.0[self.0], self.1, v);
    }
}

/// A value kept in a few bits of one byte.
pub(crate) trait BitValue: Copy {
    fn from_bits(v: u8) -> Self;
    fn to_bits(self) -> u8;
}

impl BitValue for u8 {
    #[inline]
    fn from_bits(v: u8) -> u8 {
        v
    }
    #[inline]
    fn to_bits(self) -> u8 {
        self
    }
}

impl<T: BitValue> Place<T> for Bits {
    #[inline]
    fn get(self, b: &Bhs) -> T {
        T::from_bits((b.0[self.byte] >> self.shift) & self.mask)
    }
    #[inline]
    fn put(self, b: &mut Bhs, v: T) {
        // Values wider than the field are truncated, as the wire requires.
        let byte = &mut b.0[self.byte];
        *byte = (*byte & !(self.mask << self.shift)) | ((v.to_bits() & self.mask) << self.shift);
    }
}

/// Declare PDU views: each struct names its opcode, the header bits it always
/// sets (`[FINAL = true]`), and for each field the [`Place`] it lives at. The
/// macro emits the struct (with the usual derives) and its
///
/// - `parse(&Bhs) -> Self`: infallible, reads every field, ignores reserved
///   bits (a `Bhs` is always 48 bytes, so there is no length to check here);
/// - `write_to(&self, &mut Bhs)`: sets byte 0 to the opcode and clears byte
///   1, then writes the constant bits and every field; bytes no field covers
///   (TotalAHSLength, DataSegmentLength, reserved bytes) are left as they
///   are, so a caller may set the data segment length before or after.
///
/// Fields are written in declaration order, so a place may depend on bits an
/// earlier field set (Data-In's residual only exists with its S bit).
macro_rules! bhs_pdu {
    ($(
        $(#[$meta:meta])*
        $vis:vis struct $name:ident: $op:path $([$($cp:ident = $cv:expr),* $(,)?])? {
            $(
                $(#[$fmeta:meta])*
                $fvis:vis $field:ident: $ty:ty = $place:expr
            ),* $(,)?
        }
    )*) => {$(
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis struct $name {
            $($(#[$fmeta])* $fvis $field: $ty,)*
        }

        impl $name {
            /// Read this PDU's fields from a header; reserved bits are ignored.
            pub fn parse(b: &$crate::bhs::Bhs) -> $name {
                $name {
                    $($field: $crate::layout::Place::<$ty>::get($place, b),)*
                }
            }

            /// Write the opcode and every field into `b`, leaving the bytes
            /// no field covers (DataSegmentLength, reserved) untouched.
            pub fn write_to(&self, b: &mut $crate::bhs::Bhs) {
                b.0[0] = $op.0;
                b.0[1] = 0;
                $($($crate::layout::Place::put($cp, b, $cv);)*)?
                $($crate::layout::Place::<$ty>::put($place, b, self.$field);)*
            }
        }
    )*};
}
pub(crate) use bhs_pdu;

/// Checks shared by the round-trip tests of `request` and `response`.
#[cfg(test)]
pub(crate) mod testing {
    use crate::bhs::{Bhs, Opcode};
    use core::fmt::Debug;

    /// `parse(write_to(x)) == x` on headers pre-filled with several byte
    /// patterns: the view reads only what it writes, writes the opcode, and
    /// leaves TotalAHSLength and DataSegmentLength (bytes 4..8) alone.
    /// `golden` pins the layout itself (a consistent but wrong offset would
    /// still round-trip): the header written over zeros, as 4-byte words in
    /// hex, checked against RFC 7143 §11 when it was recorded.
    pub(crate) fn assert_round_trip<T: PartialEq + Debug>(
        x: &T,
        op: Opcode,
        write_to: fn(&T, &mut Bhs),
        parse: fn(&Bhs) -> T,
        golden: &str,
    ) {
        let mut b = Bhs::default();
        write_to(x, &mut b);
        let words: Vec<String> =
            b.0.chunks(4)
                .map(|w| w.iter().map(|x| format!("{x:02x}")).collect())
                .collect();
        assert_eq!(words.join(" "), golden, "layout of {x:?}");
        for fill in [0x00u8, 0xa5, 0xff] {
            let mut b = Bhs([fill; 48]);
            write_to(x, &mut b);
            assert_eq!(b.opcode(), op, "{x:?} over 0x{fill:02x}");
            assert_eq!(&b.0[4..8], &[fill; 4], "{x:?} touched AHS/DSL");
            assert_eq!(&parse(&b), x, "over 0x{fill:02x}");
        }
    }

    /// For any 48 bytes `b`: parsing never panics, and the value parsed from
    /// `b` written back out is a fixed point (writing what it parses to gives
    /// the same bytes, and parsing those gives the same value).
    pub(crate) fn assert_fixed_point<T: PartialEq + Debug>(
        raw: &[u8; 48],
        write_to: fn(&T, &mut Bhs),
        parse: fn(&Bhs) -> T,
    ) {
        let mut once = Bhs::default();
        write_to(&parse(&Bhs(*raw)), &mut once);
        let canonical = parse(&once);
        let mut twice = Bhs::default();
        write_to(&canonical, &mut twice);
        assert_eq!(once, twice, "from {raw:02x?}");
        assert_eq!(parse(&twice), canonical);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_insert_without_touching_neighbours() {
        let mut b = Bhs::default();
        b.0[1] = 0xff;
        CSG.put(&mut b, 0u8);
        assert_eq!(b.0[1], 0xf3);
        CSG.put(&mut b, 0xffu8); // truncated to the 2-bit field
        assert_eq!(b.0[1], 0xff);
        assert_eq!(Place::<u8>::get(CSG, &b), 3);
        Bits::low(1, 0x7f).put(&mut b, 5u8);
        assert_eq!(b.0[1], 0x85);
    }

    #[test]
    fn flags_set_and_clear() {
        let mut b = Bhs::default();
        FINAL.put(&mut b, true);
        IMMEDIATE.put(&mut b, true);
        assert_eq!((b.0[0], b.0[1]), (0x40, 0x80));
        assert!(FINAL.get(&b));
        FINAL.put(&mut b, false);
        assert_eq!(b.0[1], 0);
    }

    #[test]
    fn at_is_big_endian() {
        let mut b = Bhs::default();
        ITT.put(&mut b, 0x0102_0304u32);
        TSIH.put(&mut b, 0x0506u16);
        At(2).put(&mut b, 7u8);
        assert_eq!(&b.0[16..20], &[1, 2, 3, 4]);
        assert_eq!(&b.0[14..16], &[5, 6]);
        assert_eq!(b.0[2], 7);
        // Login's ISID and TSIH share the bytes of other PDUs' LUN.
        LUN.put(&mut b, [1u8, 2, 3, 4, 5, 6, 7, 8]);
        let isid: [u8; 6] = ISID.get(&b);
        assert_eq!(isid, [1, 2, 3, 4, 5, 6]);
        assert_eq!(Place::<u16>::get(TSIH, &b), 0x0708);
        At(44).put(&mut b, [9u8; 4]);
        assert_eq!(Place::<u32>::get(At(44), &b), 0x0909_0909);
    }

    /// Every view of both directions over random and extreme headers.
    #[test]
    fn every_view_parses_any_header_to_a_fixed_point() {
        use crate::request::*;
        use crate::response::*;
        use testing::assert_fixed_point as fp;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut headers = vec![[0u8; 48], [0xff; 48]];
        for _ in 0..2_000 {
            let mut h = [0u8; 48];
            for byte in h.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *byte = x as u8;
            }
            headers.push(h);
        }
        for h in &headers {
            fp(h, ScsiCommand::write_to, ScsiCommand::parse);
            fp(h, DataOut::write_to, DataOut::parse);
            fp(h, NopOut::write_to, NopOut::parse);
            fp(h, LoginRequest::write_to, LoginRequest::parse);
            fp(h, TextRequest::write_to, TextRequest::parse);
            fp(h, LogoutRequest::write_to, LogoutRequest::parse);
            fp(h, TaskMgmtRequest::write_to, TaskMgmtRequest::parse);
            fp(h, SnackRequest::write_to, SnackRequest::parse);
            fp(h, ScsiResponse::write_to, ScsiResponse::parse);
            fp(h, DataIn::write_to, DataIn::parse);
            fp(h, R2t::write_to, R2t::parse);
            fp(h, NopIn::write_to, NopIn::parse);
            fp(h, LoginResponse::write_to, LoginResponse::parse);
            fp(h, TextResponse::write_to, TextResponse::parse);
            fp(h, LogoutResponse::write_to, LogoutResponse::parse);
            fp(h, TaskMgmtResponse::write_to, TaskMgmtResponse::parse);
            fp(h, Reject::write_to, Reject::parse);
            fp(h, AsyncMessage::write_to, AsyncMessage::parse);
        }
    }
}
