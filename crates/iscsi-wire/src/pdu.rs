//! PDU framing (RFC 7143 §11.1): BHS, AHS, optional header digest, data
//! segment padded to 4 bytes, optional data digest. [`parse_frame`] takes a
//! receive buffer and returns the first complete PDU it holds, borrowing its
//! AHS and data; every length is checked against the buffer and the
//! negotiated limit before it is used.

use thiserror::Error;

use crate::bhs::{padded, Bhs, BHS_LEN};
use crate::digest::{self, Digests};

/// Framing errors. Anything here means the byte stream can no longer be
/// trusted to be in sync, so the connection must be closed (except
/// `data_digest_ok == false` on a good frame, which is reported in the frame).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("data segment of {len} bytes exceeds the limit of {max}")]
    DataTooLong { len: u32, max: u32 },
    #[error("header digest mismatch")]
    HeaderDigest,
}

/// One complete PDU inside a receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub bhs: Bhs,
    pub ahs: &'a [u8],
    pub data: &'a [u8],
    /// False when a data digest was negotiated and did not match; the PDU is
    /// otherwise framed correctly and the next PDU starts after it.
    pub data_digest_ok: bool,
    /// Bytes this PDU occupies in the buffer.
    pub total_len: usize,
}

/// Bytes a PDU with this header occupies on the wire.
pub fn frame_len(bhs: &Bhs, digests: Digests) -> usize {
    let ahs = usize::from(bhs.total_ahs_words()) * 4;
    let data = bhs.data_segment_len() as usize;
    BHS_LEN
        + ahs
        + if digests.header { 4 } else { 0 }
        + padded(data)
        + if digests.data && data > 0 { 4 } else { 0 }
}

/// The first complete PDU in `buf`, `Ok(None)` if more bytes are needed.
/// `max_data` is the MaxRecvDataSegmentLength this side declared.
pub fn parse_frame(
    buf: &[u8],
    digests: Digests,
    max_data: u32,
) -> Result<Option<Frame<'_>>, FrameError> {
    let Some(bhs) = Bhs::from_slice(buf) else {
        return Ok(None);
    };
    let dsl = bhs.data_segment_len();
    if dsl > max_data {
        return Err(FrameError::DataTooLong {
            len: dsl,
            max: max_data,
        });
    }
    let total = frame_len(&bhs, digests);
    if buf.len() < total {
        return Ok(None);
    }
    let ahs_len = usize::from(bhs.total_ahs_words()) * 4;
    let mut pos = BHS_LEN + ahs_len;
    if digests.header {
        let want = digest::crc32c(&buf[..pos]);
        let got = digest::from_wire([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]);
        if want != got {
            return Err(FrameError::HeaderDigest);
        }
        pos += 4;
    }
    let data_len = dsl as usize;
    let data = &buf[pos..pos + data_len];
    let mut data_digest_ok = true;
    if digests.data && data_len > 0 {
        let pad_end = pos + padded(data_len);
        let want = digest::crc32c(&buf[pos..pad_end]);
        let got = digest::from_wire([
            buf[pad_end],
            buf[pad_end + 1],
            buf[pad_end + 2],
            buf[pad_end + 3],
        ]);
        data_digest_ok = want == got;
    }
    Ok(Some(Frame {
        bhs,
        ahs: &buf[BHS_LEN..BHS_LEN + ahs_len],
        data,
        data_digest_ok,
        total_len: total,
    }))
}

/// Serialize a whole PDU (header, digests, padded data) into `out`; used by
/// the login path, tests and tools. The data path uses scatter lists instead.
pub fn encode(out: &mut Vec<u8>, bhs: &Bhs, data: &[u8], digests: Digests) {
    let mut b = *bhs;
    b.set_data_segment_len(data.len() as u32);
    let start = out.len();
    out.extend_from_slice(&b.0);
    if digests.header {
        let crc = digest::crc32c(&out[start..]);
        out.extend_from_slice(&digest::to_wire(crc));
    }
    if !data.is_empty() {
        let dstart = out.len();
        out.extend_from_slice(data);
        out.resize(dstart + padded(data.len()), 0);
        if digests.data {
            let crc = digest::crc32c(&out[dstart..]);
            out.extend_from_slice(&digest::to_wire(crc));
        }
    }
}

/// One Additional Header Segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ahs<'a> {
    /// 1 extended CDB, 2 bidirectional read expected data length.
    pub ahs_type: u8,
    /// Type-specific bytes (after the reserved byte), `AHSLength` long.
    pub data: &'a [u8],
}

/// Errors in the AHS area.
#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum AhsError {
    #[error("AHS overruns TotalAHSLength")]
    Overrun,
}

/// Iterate the AHS entries of a PDU.
pub fn ahs_entries(mut ahs: &[u8]) -> impl Iterator<Item = Result<Ahs<'_>, AhsError>> {
    std::iter::from_fn(move || {
        if ahs.is_empty() {
            return None;
        }
        if ahs.len() < 4 {
            ahs = &[];
            return Some(Err(AhsError::Overrun));
        }
        let len = usize::from(u16::from_be_bytes([ahs[0], ahs[1]]));
        let ty = ahs[2];
        // AHSLength counts the type-specific bytes after byte 3; each AHS is
        // padded to a 4-byte boundary.
        let whole = padded(3 + len);
        if len == 0 || ahs.len() < whole {
            ahs = &[];
            return Some(Err(AhsError::Overrun));
        }
        let entry = Ahs {
            ahs_type: ty,
            data: &ahs[4..3 + len],
        };
        ahs = &ahs[whole..];
        Some(Ok(entry))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bhs::Opcode;

    fn nop(data: &[u8], d: Digests) -> Vec<u8> {
        let mut out = Vec::new();
        let b = Bhs::with_opcode(Opcode::NOP_OUT);
        encode(&mut out, &b, data, d);
        out
    }

    #[test]
    fn frames_with_and_without_digests() {
        for d in [
            Digests::default(),
            Digests {
                header: true,
                data: true,
            },
        ] {
            let mut buf = nop(b"hello", d);
            let second = nop(b"", d);
            buf.extend_from_slice(&second);
            let f = parse_frame(&buf, d, 8192).unwrap().unwrap();
            assert_eq!(f.data, b"hello");
            assert!(f.data_digest_ok);
            let f2 = parse_frame(&buf[f.total_len..], d, 8192).unwrap().unwrap();
            assert_eq!(f2.total_len, second.len());
            // Every truncation asks for more bytes, never panics.
            for cut in 0..f.total_len {
                assert!(parse_frame(&buf[..cut], d, 8192).unwrap().is_none());
            }
        }
    }

    #[test]
    fn too_long_is_error_before_data_arrives() {
        let mut b = Bhs::with_opcode(Opcode::NOP_OUT);
        b.set_data_segment_len(100_000);
        assert_eq!(
            parse_frame(&b.0, Digests::default(), 8192).unwrap_err(),
            FrameError::DataTooLong {
                len: 100_000,
                max: 8192
            }
        );
    }

    #[test]
    fn digest_errors() {
        let d = Digests {
            header: true,
            data: true,
        };
        let mut buf = nop(b"abcd", d);
        buf[52] ^= 1; // data byte (48 BHS + 4 header digest)
        let f = parse_frame(&buf, d, 8192).unwrap().unwrap();
        assert!(!f.data_digest_ok);
        buf[3] ^= 1; // header byte
        assert_eq!(
            parse_frame(&buf, d, 8192).unwrap_err(),
            FrameError::HeaderDigest
        );
    }

    #[test]
    fn ahs_iteration() {
        let mut ahs = vec![0u8, 17, 1, 0];
        ahs.extend_from_slice(&[9u8; 16]);
        let all: Vec<_> = ahs_entries(&ahs).collect();
        assert_eq!(all.len(), 1);
        let e = all[0].unwrap();
        assert_eq!(e.ahs_type, 1);
        assert_eq!(e.data, &[9u8; 16]);
        let bad = [0u8, 40, 1, 0];
        assert_eq!(
            ahs_entries(&bad).next().unwrap().unwrap_err(),
            AhsError::Overrun
        );
        assert!(ahs_entries(&[1, 2]).next().unwrap().is_err());
    }
}

#[cfg(test)]
mod robustness {
    use super::*;
    use crate::negotiate::{Negotiator, Stage, TargetOffer};
    use crate::text::parse_pairs;

    /// Random bytes through every parser: errors are fine, panics are not.
    #[test]
    fn random_input_never_panics() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for round in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 3 == 0 && buf.len() >= 8 {
                // Small lengths so complete frames are common.
                buf[4] &= 3;
                buf[5] = 0;
                buf[6] = 0;
                buf[7] &= 0x3f;
            }
            let d = Digests {
                header: round % 2 == 0,
                data: round % 4 == 0,
            };
            if let Ok(Some(f)) = parse_frame(&buf, d, 8192) {
                assert!(f.total_len <= buf.len());
                for a in ahs_entries(f.ahs) {
                    let _ = a;
                }
            }
            let _ = ahs_entries(&buf).count();
            if let Ok(pairs) = parse_pairs(&buf) {
                let mut n = Negotiator::new(TargetOffer::default());
                let _ = n.respond(&pairs, Stage::Operational);
            }
        }
    }
}
