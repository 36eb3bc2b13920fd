//! Commands that must be atomic with respect to other commands (SBC-3/4):
//! COMPARE AND WRITE, ORWRITE(16) and WRITE ATOMIC(16).
//! Both read the medium into `data_in` (used as scratch: neither returns
//! data) holding the device's I/O order lock exclusively, so no other
//! command's read or write lands between their read and their write.

use crate::dispatch::{Ctx, HandlerResult};
use crate::error::CmdError;
use crate::rw::{byte_range, data_out, write_buf, MAX_COMPARE_AND_WRITE_BLOCKS};
use crate::Status;

fn read_into(ctx: &Ctx<'_>, buf: &mut Vec<u8>, offset: u64, len: usize) -> Result<(), CmdError> {
    buf.clear();
    buf.resize(len, 0);
    ctx.dev
        .backstore
        .read_at(buf, offset)
        .map_err(CmdError::ReadError)
}

/// COMPARE AND WRITE (SBC-3 5.2): Data-Out holds the verify data then the
/// write data, NUMBER OF LOGICAL BLOCKS each.
pub(crate) fn compare_and_write(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let dev = ctx.dev;
    let flags = cdb.b(1);
    if flags >> 5 != 0 {
        return Err(CmdError::cdb_bit(1, 5));
    }
    let lba = cdb.be64(2);
    let blocks = cdb.b(13);
    // MAX_COMPARE_AND_WRITE_BLOCKS is the whole byte range, so any count fits.
    const _: () = assert!(MAX_COMPARE_AND_WRITE_BLOCKS == u8::MAX);
    if dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    let r = byte_range(dev, lba, u64::from(blocks))?;
    if r.is_empty() {
        // Data-Out with zero blocks means the length field was misread
        // (e.g. 256 truncated to a byte): refuse instead of ignoring it.
        if !ctx.data_out.is_empty() {
            return Err(CmdError::cdb_field(13));
        }
        return Ok(Status::Good);
    }
    let len = (r.end - r.start) as usize;
    if ctx.data_out.len() != 2 * len {
        return Err(CmdError::InvalidFieldInCommandIu);
    }
    let all = data_out(ctx, 2 * len as u64)?;
    let (verify, write) = all.split_at(len);
    let _guard = dev.io_exclusive();
    read_into(ctx, data_in, r.start, len)?;
    let mismatch = data_in.iter().zip(verify).position(|(a, b)| a != b);
    data_in.clear();
    if let Some(offset) = mismatch {
        return Err(CmdError::Miscompare {
            offset: offset as u64,
        });
    }
    write_buf(ctx, flags & 0x08 != 0, write, r.start)?;
    Ok(Status::Good)
}

/// ORWRITE(16) (SBC-3 5.9): OR the Data-Out into the medium.
pub(crate) fn orwrite(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let dev = ctx.dev;
    let rw = ctx.cdb.rw();
    if rw.protect() != 0 {
        return Err(CmdError::cdb_bit(1, 5));
    }
    if dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    let r = byte_range(dev, rw.lba, u64::from(rw.blocks))?;
    if r.end - r.start > crate::device::MAX_TRANSFER_BYTES {
        return Err(CmdError::cdb_field(10));
    }
    if r.is_empty() {
        return Ok(Status::Good);
    }
    let len = (r.end - r.start) as usize;
    let src = data_out(ctx, len as u64)?;
    let _guard = dev.io_exclusive();
    read_into(ctx, data_in, r.start, len)?;
    for (d, s) in data_in.iter_mut().zip(src) {
        *d |= s;
    }
    let res = write_buf(ctx, rw.fua(), data_in, r.start);
    data_in.clear();
    res?;
    Ok(Status::Good)
}

/// WRITE ATOMIC(16) (SBC-4 5.48): the blocks are written all or nothing as
/// far as every other command can observe. The write runs holding the
/// device's I/O order lock exclusively, and every other read or write of
/// the medium holds it shared, so no command sees (or interleaves with)
/// a partial atomic write, whatever the ranges.
///
/// Across a crash or power loss only what one `pwrite(2)` of the whole
/// range gives holds (a single backstore write call, durable before GOOD
/// with FUA or WCE=0): the file system may persist part of it, so no
/// torn-write protection against power failure is claimed beyond that.
pub(crate) fn write_atomic(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let dev = ctx.dev;
    let flags = cdb.b(1);
    // WRPROTECT: no protection information is ever formatted.
    if flags >> 5 != 0 {
        return Err(CmdError::cdb_bit(1, 5));
    }
    let lba = cdb.be64(2);
    // MAXIMUM ATOMIC BOUNDARY SIZE is 0: boundaries are not supported.
    if cdb.be16(10) != 0 {
        return Err(CmdError::cdb_field(10));
    }
    let blocks = u64::from(cdb.be16(12));
    if dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    let r = byte_range(dev, lba, blocks)?;
    if blocks > u64::from(dev.max_atomic_blocks()) {
        return Err(CmdError::cdb_field(12));
    }
    // Whole, aligned physical blocks only (ATOMIC ALIGNMENT and ATOMIC
    // TRANSFER LENGTH GRANULARITY in VPD B0): a partial physical block
    // would be a read-modify-write of a page underneath, which a crash can
    // leave half rewritten.
    let per_physical = dev.atomic_granularity();
    if !lba.is_multiple_of(per_physical) {
        return Err(CmdError::cdb_field(2));
    }
    if !blocks.is_multiple_of(per_physical) {
        return Err(CmdError::cdb_field(12));
    }
    if r.is_empty() {
        return Ok(Status::Good);
    }
    // All or nothing: a short Data-Out is refused, never partly written.
    let buf = data_out(ctx, r.end - r.start)?;
    let _guard = dev.io_exclusive();
    write_buf(ctx, flags & 0x08 != 0, buf, r.start)?;
    Ok(Status::Good)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::Status;

    fn caw(lba: u64, blocks: u8) -> Vec<u8> {
        let mut c = vec![0x89, 0];
        c.extend_from_slice(&lba.to_be_bytes());
        c.extend_from_slice(&[0, 0, 0, blocks, 0, 0]);
        c
    }

    #[test]
    fn compare_and_write_writes_on_match_only() {
        let t = Rig::new();
        let mut d = vec![0u8; 512];
        d.extend_from_slice(&[9u8; 512]);
        let (o, _) = t.run(&caw(3, 1), &d);
        assert_eq!(o.status, Status::Good);
        assert_eq!(t.store.bytes(3 * 512, 512), vec![9u8; 512]);
        let (o, data) = t.run(&caw(3, 1), &d);
        assert_eq!(sense_of(&o), Some((0x0e, 0x1d, 0)));
        assert!(data.is_empty());
        assert_eq!(&o.sense.expect("sense")[3..7], &0u32.to_be_bytes());
        let (o, _) = t.run(&caw(3, 1), &d[..512]);
        assert_eq!(o.status, Status::CheckCondition, "data-out size");
        let (o, _) = t.run(&caw(BLOCKS, 1), &d);
        assert_eq!(sense_of(&o), Some((5, 0x21, 0)));
        let (o, _) = t.run(&caw(0, 0), &[]);
        assert_eq!(o.status, Status::Good);
        let (o, _) = t.run(&caw(0, 0), &d);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "zero blocks with data");
    }

    #[test]
    fn orwrite_ors() {
        let t = Rig::new();
        t.run(&[0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0], &[0xa5u8; 512]);
        let mut c = vec![0x8b, 0];
        c.extend_from_slice(&1u64.to_be_bytes());
        c.extend_from_slice(&1u32.to_be_bytes());
        c.extend_from_slice(&[0, 0]);
        let (o, _) = t.run(&c, &[0x5au8; 512]);
        assert_eq!(o.status, Status::Good);
        assert_eq!(t.store.bytes(512, 512), vec![0xffu8; 512]);
        c[1] = 0x20;
        let (o, _) = t.run(&c, &[0x5au8; 512]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)));
    }

    fn wa16(flags: u8, lba: u64, boundary: u16, blocks: u16) -> Vec<u8> {
        let mut c = vec![0x9c, flags];
        c.extend_from_slice(&lba.to_be_bytes());
        c.extend_from_slice(&boundary.to_be_bytes());
        c.extend_from_slice(&blocks.to_be_bytes());
        c.extend_from_slice(&[0, 0]);
        c
    }

    #[test]
    fn write_atomic_writes_and_checks() {
        let t = Rig::new();
        // 512-byte blocks in 4 KiB physical blocks: units of 8 blocks.
        let data: Vec<u8> = (0..8192u32).map(|i| (i / 7) as u8).collect();
        let (o, _) = t.run(&wa16(0, 8, 0, 16), &data);
        assert_eq!(o.status, Status::Good);
        assert_eq!(t.store.bytes(8 * 512, 8192), data);
        let (o, _) = t.run(&wa16(0x08, 32, 0, 8), &data[..4096]);
        assert_eq!(o.status, Status::Good, "FUA");
        assert_eq!(t.store.fua_writes(), 1);
        t.ok(&wa16(0, 0, 0, 0));
        t.ok(&wa16(0, BLOCKS, 0, 0));
        let (o, _) = t.run(&wa16(0, BLOCKS + 8, 0, 0), &[]);
        assert_eq!(sense_of(&o), Some((5, 0x21, 0)));
        let (o, _) = t.run(&wa16(0, u64::MAX - 7, 0, 8), &data[..4096]);
        assert_eq!(sense_of(&o), Some((5, 0x21, 0)));
        let (o, _) = t.run(&wa16(0, BLOCKS - 8, 0, 16), &data);
        assert_eq!(sense_of(&o), Some((5, 0x21, 0)));
        let (o, _) = t.run(&wa16(0, 1, 0, 8), &data[..4096]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "misaligned");
        let (o, _) = t.run(&wa16(0, 0, 0, 1), &data[..512]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "granularity");
        let (o, _) = t.run(&wa16(0x20, 0, 0, 8), &data[..4096]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "WRPROTECT");
        let (o, _) = t.run(&wa16(0, 0, 1, 8), &data[..4096]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "boundary");
        let before = t.store.bytes(64 * 512, 8192);
        let (o, _) = t.run(&wa16(0, 64, 0, 16), &data[..5000]);
        assert_eq!(o.status, Status::CheckCondition, "short data-out");
        assert_eq!(t.store.bytes(64 * 512, 8192), before, "nothing written");
        let ro = Rig::read_only();
        let (o, _) = ro.run(&wa16(0, 0, 0, 8), &data[..4096]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)));
        let big = Rig::sized(64 << 20);
        let too_many = big.dev.max_atomic_blocks() as u16 + 1;
        let (o, _) = big.run(&wa16(0, 0, 0, too_many), &[]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "beyond max atomic length");
    }

    /// While an atomic write holds the medium, a concurrent reader never
    /// sees half of it: every block read back is all old or all new.
    #[test]
    fn write_atomic_is_not_torn_for_readers() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let t = Arc::new(Rig::new());
        t.store.piecewise.store(true, Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(std::sync::Barrier::new(2));
        let reader = {
            let (t, stop, started) = (t.clone(), stop.clone(), started.clone());
            std::thread::spawn(move || {
                let me = t.nexus(2);
                t.run_as(&me, &[0, 0, 0, 0, 0, 0], &[]);
                started.wait();
                let mut seen = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (o, d) = t.run_as(&me, &[0x28, 0, 0, 0, 0, 0, 0, 0, 64, 0], &[]);
                    assert_eq!(o.status, Status::Good);
                    assert!(d.iter().all(|&b| b == d[0]), "torn atomic write seen");
                    seen += 1;
                }
                seen
            })
        };
        started.wait();
        for i in 0..200u32 {
            let data = vec![i as u8; 64 * 512];
            let (o, _) = t.run(&wa16(0, 0, 0, 64), &data);
            assert_eq!(o.status, Status::Good);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().expect("reader") > 0);
    }
}
