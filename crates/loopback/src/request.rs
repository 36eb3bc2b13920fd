//! Block requests (what ublk hands over) as SCSI commands for the core, and
//! the core's answers as the errno ublk completes a request with.
//!
//! Pure: no ublk, no I/O, so every mapping is tested on any kernel. The
//! fabric only builds CDBs here; the core owns their meaning (reservations,
//! write protection, ALUA, QoS and unit attentions all apply on the way).

use scsi::opcode;
use target_core::{Outcome, Status};

/// ublk's request operations (`UBLK_IO_OP_*` in the kernel's ublk_cmd.h).
pub const OP_READ: u8 = 0;
pub const OP_WRITE: u8 = 1;
pub const OP_FLUSH: u8 = 2;
pub const OP_DISCARD: u8 = 3;
pub const OP_WRITE_ZEROES: u8 = 5;
/// `UBLK_IO_F_FUA`: the write must be on stable media when it completes.
pub const F_FUA: u32 = 1 << 13;

/// One request from the block layer, in 512-byte sectors as ublk counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRequest {
    pub op: u8,
    pub flags: u32,
    pub start_sector: u64,
    pub nr_sectors: u32,
}

/// What to run on the core for one request.
#[derive(Debug, PartialEq, Eq)]
pub struct ScsiRequest {
    pub cdb: [u8; 16],
    pub cdb_len: usize,
    /// Data-Out that is not the request's own buffer (UNMAP's parameter
    /// list, WRITE SAME's one zero block); `None`: the request's buffer.
    pub param: Option<Vec<u8>>,
    /// Bytes the command moves (Data-In or Data-Out).
    pub expected_len: u32,
}

/// Why a request cannot become a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// An operation this device did not advertise (zones, ...).
    Op(u8),
    /// Not a whole number of logical blocks, or too long for one CDB.
    Geometry,
}

impl Unsupported {
    pub fn errno(self) -> i32 {
        match self {
            Unsupported::Op(_) => -libc::EOPNOTSUPP,
            Unsupported::Geometry => -libc::EINVAL,
        }
    }
}

fn cdb16(op: u8, byte1: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[1] = byte1;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

/// The command for `req` on an LU of `block_size`-byte blocks.
pub fn to_scsi(req: &BlockRequest, block_size: u32) -> Result<ScsiRequest, Unsupported> {
    if req.op == OP_FLUSH {
        // The whole medium: a flush carries no range (its sector field is
        // not meaningful).
        return Ok(ScsiRequest {
            cdb: cdb16(opcode::SYNCHRONIZE_CACHE_16, 0, 0, 0),
            cdb_len: 16,
            param: None,
            expected_len: 0,
        });
    }
    let bs = u64::from(block_size);
    let start = req
        .start_sector
        .checked_mul(512)
        .ok_or(Unsupported::Geometry)?;
    let bytes = u64::from(req.nr_sectors) * 512;
    if !start.is_multiple_of(bs) || !bytes.is_multiple_of(bs) {
        return Err(Unsupported::Geometry);
    }
    let lba = start / bs;
    let blocks = u32::try_from(bytes / bs).map_err(|_| Unsupported::Geometry)?;
    let len = u32::try_from(bytes).map_err(|_| Unsupported::Geometry)?;
    // FUA bit of READ(16)/WRITE(16), byte 1 bit 3 (SBC-3 5.8, 5.40).
    let fua = if req.flags & F_FUA != 0 { 0x08 } else { 0 };
    let simple = |cdb, expected_len| ScsiRequest {
        cdb,
        cdb_len: 16,
        param: None,
        expected_len,
    };
    match req.op {
        OP_READ => Ok(simple(cdb16(opcode::READ_16, fua, lba, blocks), len)),
        OP_WRITE => Ok(simple(cdb16(opcode::WRITE_16, fua, lba, blocks), len)),
        OP_DISCARD => {
            if blocks == 0 {
                return Err(Unsupported::Geometry);
            }
            // UNMAP with one block descriptor (SBC-3 5.28).
            let mut p = vec![0u8; 24];
            p[0..2].copy_from_slice(&22u16.to_be_bytes());
            p[2..4].copy_from_slice(&16u16.to_be_bytes());
            p[8..16].copy_from_slice(&lba.to_be_bytes());
            p[16..20].copy_from_slice(&blocks.to_be_bytes());
            let mut cdb = [0u8; 16];
            cdb[0] = opcode::UNMAP;
            cdb[7..9].copy_from_slice(&24u16.to_be_bytes());
            Ok(ScsiRequest {
                cdb,
                cdb_len: 10,
                param: Some(p),
                expected_len: 24,
            })
        }
        OP_WRITE_ZEROES => {
            // Zero blocks would mean "to the end of the medium".
            if blocks == 0 {
                return Err(Unsupported::Geometry);
            }
            // WRITE SAME(16) of one zero block, UNMAP=0: the blocks stay
            // allocated (REQ_NOUNMAP or not, zeroes read back either way).
            Ok(ScsiRequest {
                cdb: cdb16(opcode::WRITE_SAME_16, 0, lba, blocks),
                cdb_len: 16,
                param: Some(vec![0u8; block_size as usize]),
                expected_len: block_size,
            })
        }
        op => Err(Unsupported::Op(op)),
    }
}

/// Sense key, ASC and ASCQ of fixed (70h/71h) or descriptor (72h/73h) sense.
pub fn sense_fields(sense: &[u8]) -> Option<(u8, u8, u8)> {
    match sense.first().map(|b| b & 0x7f) {
        Some(0x70 | 0x71) if sense.len() >= 14 => Some((sense[2] & 0x0f, sense[12], sense[13])),
        Some(0x72 | 0x73) if sense.len() >= 4 => Some((sense[1] & 0x0f, sense[2], sense[3])),
        _ => None,
    }
}

const UNIT_ATTENTION: u8 = 0x6;

/// A unit attention: the command did not run, and running it again is what
/// the kernel's SCSI midlayer would do (the condition is reported once).
pub fn is_unit_attention(o: &Outcome) -> bool {
    o.status == Status::CheckCondition
        && o.sense.as_deref().and_then(sense_fields).map(|f| f.0) == Some(UNIT_ATTENTION)
}

/// The errno a finished command completes its block request with; the
/// kernel turns it into a `blk_status_t` (errno_to_blk_status), so each
/// class of SCSI failure surfaces as the block layer's nearest status.
pub fn errno(o: &Outcome) -> i32 {
    match o.status {
        Status::Good | Status::ConditionMet => 0,
        // BLK_STS_RESV_CONFLICT.
        Status::ReservationConflict => -libc::EBADE,
        Status::Busy | Status::TaskSetFull => -libc::EBUSY,
        Status::CheckCondition => match o.sense.as_deref().and_then(sense_fields) {
            // MEDIUM ERROR: BLK_STS_MEDIUM.
            Some((0x3, ..)) => -libc::ENODATA,
            // DATA PROTECT / SPACE ALLOCATION FAILED WRITE PROTECT: out of space.
            Some((0x7, 0x27, 0x07)) => -libc::ENOSPC,
            // ILLEGAL REQUEST / DATA PROTECT: the target refused (BLK_STS_TARGET).
            Some((0x5 | 0x7, ..)) => -libc::EREMOTEIO,
            _ => -libc::EIO,
        },
        _ => -libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: u8, flags: u32, start_sector: u64, nr_sectors: u32) -> BlockRequest {
        BlockRequest {
            op,
            flags,
            start_sector,
            nr_sectors,
        }
    }

    #[test]
    fn read_write_fua_map_to_16_byte_cdbs_in_logical_blocks() {
        let r = to_scsi(&req(OP_READ, 0, 16, 8), 4096).unwrap();
        assert_eq!(r.cdb[0], 0x88);
        assert_eq!(u64::from_be_bytes(r.cdb[2..10].try_into().unwrap()), 2);
        assert_eq!(u32::from_be_bytes(r.cdb[10..14].try_into().unwrap()), 1);
        assert_eq!((r.expected_len, r.param, r.cdb[1]), (4096, None, 0));
        let w = to_scsi(&req(OP_WRITE, F_FUA, 3, 2), 512).unwrap();
        assert_eq!((w.cdb[0], w.cdb[1], w.expected_len), (0x8a, 0x08, 1024));
        assert_eq!(u64::from_be_bytes(w.cdb[2..10].try_into().unwrap()), 3);
    }

    #[test]
    fn flush_discard_write_zeroes() {
        let f = to_scsi(&req(OP_FLUSH, 0, 0, 0), 512).unwrap();
        assert_eq!((f.cdb[0], f.expected_len), (0x91, 0));
        // The kernel leaves a flush's sector field meaningless.
        let f = to_scsi(&req(OP_FLUSH, 0, u64::MAX, 0), 4096).unwrap();
        assert_eq!(f.cdb[0], 0x91);
        let d = to_scsi(&req(OP_DISCARD, 0, 8, 16), 4096).unwrap();
        assert_eq!((d.cdb[0], d.cdb_len, d.cdb[8]), (0x42, 10, 24));
        let p = d.param.unwrap();
        assert_eq!(u64::from_be_bytes(p[8..16].try_into().unwrap()), 1);
        assert_eq!(u32::from_be_bytes(p[16..20].try_into().unwrap()), 2);
        let z = to_scsi(&req(OP_WRITE_ZEROES, 0, 0, 8), 512).unwrap();
        assert_eq!((z.cdb[0], z.cdb[1], z.expected_len), (0x93, 0, 512));
        assert_eq!(u32::from_be_bytes(z.cdb[10..14].try_into().unwrap()), 8);
        assert!(z.param.unwrap().iter().all(|&b| b == 0));
        assert_eq!(
            to_scsi(&req(OP_WRITE_ZEROES, 0, 0, 0), 512),
            Err(Unsupported::Geometry)
        );
    }

    #[test]
    fn misaligned_and_unknown_requests_are_refused() {
        assert_eq!(
            to_scsi(&req(OP_READ, 0, 1, 8), 4096),
            Err(Unsupported::Geometry)
        );
        assert_eq!(to_scsi(&req(13, 0, 0, 8), 512), Err(Unsupported::Op(13)));
        assert_eq!(
            to_scsi(&req(OP_READ, 0, u64::MAX / 2, 8), 512),
            Err(Unsupported::Geometry)
        );
        assert_eq!(Unsupported::Op(13).errno(), -libc::EOPNOTSUPP);
    }

    #[test]
    fn outcomes_map_to_errnos() {
        let cc = |key: u8, asc: u8, ascq: u8| {
            let mut s = vec![0u8; 18];
            s[0] = 0x70;
            s[2] = key;
            s[12] = asc;
            s[13] = ascq;
            Outcome {
                status: Status::CheckCondition,
                sense: Some(s),
            }
        };
        let st = |status| Outcome {
            status,
            sense: None,
        };
        assert_eq!(errno(&st(Status::Good)), 0);
        assert_eq!(errno(&st(Status::ReservationConflict)), -libc::EBADE);
        assert_eq!(errno(&cc(0x3, 0x11, 0)), -libc::ENODATA);
        assert_eq!(errno(&cc(0x7, 0x27, 0)), -libc::EREMOTEIO);
        assert_eq!(errno(&cc(0x7, 0x27, 7)), -libc::ENOSPC);
        assert_eq!(errno(&cc(0x2, 0x04, 0x0a)), -libc::EIO);
        assert!(is_unit_attention(&cc(0x6, 0x29, 0)));
        assert!(!is_unit_attention(&cc(0x5, 0x24, 0)));
        // Descriptor format.
        assert_eq!(
            sense_fields(&[0x72, 0x06, 0x3f, 0x0e]),
            Some((6, 0x3f, 0x0e))
        );
    }
}
