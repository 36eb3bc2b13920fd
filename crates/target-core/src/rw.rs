//! The block data path (SBC-3): READ/WRITE 6/10/12/16, VERIFY and WRITE AND
//! VERIFY 10/12/16, SYNCHRONIZE CACHE 10/16, PRE-FETCH 10/16. READ fills
//! `data_in` straight from the backstore; VERIFY borrows `data_in` as its
//! scratch buffer (it returns no data), so nothing here allocates.

use std::ops::Range;

use scsi::RwCdb;

use crate::device::MAX_TRANSFER_BYTES;
use crate::dispatch::{Ctx, HandlerResult};
use crate::error::CmdError;
use crate::{Device, Status};

/// Block Limits: MAXIMUM COMPARE AND WRITE LENGTH.
pub(crate) const MAX_COMPARE_AND_WRITE_BLOCKS: u8 = 255;
/// Block Limits: MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT.
pub(crate) const MAX_UNMAP_DESCRIPTORS: u32 = 4096;

/// Byte offset of the transfer length field, for INVALID FIELD pointers.
fn len_field(cdb_len: usize) -> u16 {
    match cdb_len {
        6 => 4,
        10 => 7,
        12 => 6,
        _ => 10,
    }
}

/// Check that `lba..lba+blocks` lies on the medium (SBC-3 4.5: also for a
/// zero-length transfer the LBA itself must not pass the capacity) and
/// return the byte range.
pub(crate) fn byte_range(dev: &Device, lba: u64, blocks: u64) -> Result<Range<u64>, CmdError> {
    let end = lba.checked_add(blocks).ok_or(CmdError::LbaOutOfRange)?;
    if end > dev.num_blocks() {
        return Err(CmdError::LbaOutOfRange);
    }
    let bs = dev.block_size();
    Ok(lba * bs..end * bs)
}

/// Range check plus the transfer size limit for commands that move data.
fn transfer_range(ctx: &Ctx<'_>, rw: &RwCdb) -> Result<Range<u64>, CmdError> {
    let r = byte_range(ctx.dev, rw.lba, u64::from(rw.blocks))?;
    if r.end - r.start > MAX_TRANSFER_BYTES {
        return Err(CmdError::cdb_field(len_field(ctx.cdb.len())));
    }
    Ok(r)
}

fn check_protect(rw: &RwCdb) -> Result<(), CmdError> {
    // No protection information is ever formatted (PROT_EN = 0).
    if rw.protect() != 0 {
        return Err(CmdError::cdb_bit(1, 5));
    }
    Ok(())
}

/// The Data-Out bytes a command needs; too few is an iSCSI/FCP residual
/// overflow answered by transferring nothing (FCP-4 9.4.2 option b).
pub(crate) fn data_out<'a>(ctx: &Ctx<'a>, len: u64) -> Result<&'a [u8], CmdError> {
    let len = usize::try_from(len).map_err(|_| CmdError::InvalidFieldInCommandIu)?;
    ctx.data_out
        .get(..len)
        .ok_or(CmdError::InvalidFieldInCommandIu)
}

pub(crate) fn read(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let rw = ctx.cdb.rw();
    check_protect(&rw)?;
    let r = transfer_range(ctx, &rw)?;
    let len = (r.end - r.start) as usize;
    // Reuse whatever the buffer holds; only growth is zero-filled.
    if data_in.len() > len {
        data_in.truncate(len);
    } else {
        data_in.resize(len, 0);
    }
    if len == 0 {
        return Ok(Status::Good);
    }
    let _order = ctx.dev.io_shared();
    ctx.dev
        .backstore
        .read_at(data_in, r.start)
        .map_err(CmdError::ReadError)?;
    Ok(Status::Good)
}

/// Write `buf` at `offset`, durable before returning when FUA is asked or
/// the write cache is off.
pub(crate) fn write_buf(ctx: &Ctx<'_>, fua: bool, buf: &[u8], offset: u64) -> Result<(), CmdError> {
    write_to(ctx.dev, fua, buf, offset)
}

/// [`write_buf`] on any device (EXTENDED COPY writes to another LU). A
/// durable write is refused once a flush failed: it cannot vouch for the
/// writes before it.
pub(crate) fn write_to(dev: &Device, fua: bool, buf: &[u8], offset: u64) -> Result<(), CmdError> {
    let bs = &dev.backstore;
    let res = if fua || !dev.wce() {
        dev.state
            .flush_fault
            .check()
            .and_then(|()| bs.write_at_fua(buf, offset))
    } else {
        bs.write_at(buf, offset)
    };
    res.map_err(CmdError::WriteError)
}

/// Make every completed write durable. A failure sticks: the kernel reports
/// a writeback error to one fsync only, and a backstore may not remember it,
/// so the next SYNCHRONIZE CACHE must not answer GOOD for data that was lost.
pub(crate) fn flush(dev: &Device) -> Result<(), CmdError> {
    let fault = &dev.state.flush_fault;
    fault.check().map_err(CmdError::WriteError)?;
    dev.backstore
        .flush()
        .map_err(|e| CmdError::WriteError(fault.record(&dev.options.name, &e.to_string())))
}

/// After a change that does not go through `write_at_fua` (deallocation,
/// zeroing, copies): with the write cache off it must be durable before
/// GOOD, like a WRITE. A backstore without a volatile cache already is.
pub(crate) fn sync_if_write_through(dev: &Device) -> Result<(), CmdError> {
    if dev.wce() || !dev.state.caps.write_cache {
        return Ok(());
    }
    flush(dev)
}

/// The Data-Out of a write and the range it covers. When the initiator's
/// Expected Data Transfer Length is shorter than the CDB asks (residual
/// overflow), only the whole blocks it sent are written (FCP-4 9.4.2
/// option a: "data beyond the FCP_DL count shall not be transferred"); a
/// partial block cannot be written, so that case is refused (option b).
fn write_extent<'a>(ctx: &Ctx<'a>, r: Range<u64>) -> Result<(&'a [u8], Range<u64>), CmdError> {
    let r = extent_of(ctx, r, ctx.data_out.len() as u64)?;
    Ok((&ctx.data_out[..(r.end - r.start) as usize], r))
}

/// [`write_extent`]'s rule on a Data-Out length alone (the zero-copy
/// path's bytes are lent memory the core does not look at).
fn extent_of(ctx: &Ctx<'_>, r: Range<u64>, have: u64) -> Result<Range<u64>, CmdError> {
    if have >= r.end - r.start {
        return Ok(r);
    }
    if !have.is_multiple_of(ctx.dev.block_size()) {
        return Err(CmdError::InvalidFieldInCommandIu);
    }
    Ok(r.start..r.start + have)
}

pub(crate) fn write(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let rw = ctx.cdb.rw();
    check_protect(&rw)?;
    if ctx.dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    let r = transfer_range(ctx, &rw)?;
    let (buf, r) = write_extent(ctx, r)?;
    if r.is_empty() {
        return Ok(Status::Good);
    }
    let _order = ctx.dev.io_shared();
    write_buf(ctx, rw.fua(), buf, r.start)?;
    Ok(Status::Good)
}

/// A READ or WRITE reduced to the medium access it makes, for the
/// asynchronous path (`submit`).
pub(crate) enum Access {
    Read {
        offset: u64,
        len: usize,
    },
    /// `data_out[..len]` at `offset`; `fua`: durable before GOOD.
    Write {
        offset: u64,
        len: usize,
        fua: bool,
    },
}

/// Every check [`read`] / [`write`] make before the backstore call, in the
/// same order; `None`: nothing to transfer (GOOD). `data_out_len`: the
/// Data-Out bytes the initiator sent.
pub(crate) fn prepare(ctx: &Ctx<'_>, data_out_len: usize) -> Result<Option<Access>, CmdError> {
    use scsi::opcode as op;
    let rw = ctx.cdb.rw();
    check_protect(&rw)?;
    let write = matches!(
        ctx.cdb.opcode(),
        op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16
    );
    if !write {
        let r = transfer_range(ctx, &rw)?;
        let len = (r.end - r.start) as usize;
        return Ok((len > 0).then_some(Access::Read {
            offset: r.start,
            len,
        }));
    }
    if ctx.dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    let r = transfer_range(ctx, &rw)?;
    let r = extent_of(ctx, r, data_out_len as u64)?;
    if r.is_empty() {
        return Ok(None);
    }
    let fua = rw.fua() || !ctx.dev.wce();
    if fua {
        // As `write_to`: no durable write after a failed flush.
        ctx.dev
            .state
            .flush_fault
            .check()
            .map_err(CmdError::WriteError)?;
    }
    Ok(Some(Access::Write {
        offset: r.start,
        len: (r.end - r.start) as usize,
        fua,
    }))
}

/// Compare the medium at `r` with `expected` (one block repeated when
/// `per_block`), using `scratch` as the read buffer. Returns the byte offset
/// of the first difference.
fn compare_medium(
    ctx: &Ctx<'_>,
    r: Range<u64>,
    expected: &[u8],
    per_block: bool,
    scratch: &mut Vec<u8>,
) -> Result<Option<u64>, CmdError> {
    let len = (r.end - r.start) as usize;
    scratch.clear();
    scratch.resize(len, 0);
    ctx.dev
        .backstore
        .read_at(scratch, r.start)
        .map_err(CmdError::ReadError)?;
    let bs = ctx.dev.block_size() as usize;
    let found = if per_block {
        scratch.chunks(bs).enumerate().find_map(|(i, block)| {
            block
                .iter()
                .zip(expected)
                .position(|(a, b)| a != b)
                .map(|p| (i * bs + p) as u64)
        })
    } else {
        scratch
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .map(|p| p as u64)
    };
    scratch.clear();
    Ok(found)
}

/// VERIFY 10/12/16 (SBC-3 5.33): BYTCHK 0 only checks the range (the medium
/// has no separate verification), 1 compares with the Data-Out, 3 compares
/// every block with the single Data-Out block.
pub(crate) fn verify(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let rw = ctx.cdb.rw();
    check_protect(&rw)?;
    let bytchk = rw.bytchk();
    if bytchk == 2 {
        return Err(CmdError::cdb_bit(1, 1));
    }
    let r = transfer_range(ctx, &rw)?;
    if r.is_empty() || bytchk == 0 {
        return Ok(Status::Good);
    }
    let per_block = bytchk == 3;
    let want = if per_block {
        ctx.dev.block_size()
    } else {
        r.end - r.start
    };
    let expected = data_out(ctx, want)?;
    let _order = ctx.dev.io_shared();
    match compare_medium(ctx, r, expected, per_block, data_in)? {
        Some(offset) => Err(CmdError::Miscompare { offset }),
        None => Ok(Status::Good),
    }
}

/// WRITE AND VERIFY 10/12/16 (SBC-3 5.40): write, then with BYTCHK read the
/// blocks back and compare them with what was sent.
pub(crate) fn write_verify(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let rw = ctx.cdb.rw();
    check_protect(&rw)?;
    let bytchk = rw.bytchk();
    if bytchk > 1 {
        return Err(CmdError::cdb_bit(1, 1));
    }
    if ctx.dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    let r = transfer_range(ctx, &rw)?;
    let (buf, r) = write_extent(ctx, r)?;
    if r.is_empty() {
        return Ok(Status::Good);
    }
    let _order = ctx.dev.io_shared();
    // Verification must see the medium, not a volatile cache.
    write_buf(ctx, true, buf, r.start)?;
    if bytchk == 1 {
        if let Some(offset) = compare_medium(ctx, r, buf, false, data_in)? {
            return Err(CmdError::Miscompare { offset });
        }
    }
    Ok(Status::Good)
}

/// SYNCHRONIZE CACHE 10/16 (SBC-3 5.22): zero blocks means "to the end".
pub(crate) fn sync_cache(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let rw = ctx.cdb.rw();
    byte_range(ctx.dev, rw.lba, u64::from(rw.blocks))?;
    flush(ctx.dev)?;
    Ok(Status::Good)
}

/// PRE-FETCH 10/16 (SBC-3 5.8): nothing to stage in a page-cache backed
/// LU, so after the range check answer GOOD (allowed: "not all blocks are
/// guaranteed to be cached").
pub(crate) fn prefetch(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let rw = ctx.cdb.rw();
    byte_range(ctx.dev, rw.lba, u64::from(rw.blocks))?;
    Ok(Status::Good)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::Status;

    fn rw10(op: u8, flags: u8, lba: u32, blocks: u16) -> Vec<u8> {
        let mut c = vec![op, flags];
        c.extend_from_slice(&lba.to_be_bytes());
        c.push(0);
        c.extend_from_slice(&blocks.to_be_bytes());
        c.push(0);
        c
    }

    fn rw16(op: u8, flags: u8, lba: u64, blocks: u32) -> Vec<u8> {
        let mut c = vec![op, flags];
        c.extend_from_slice(&lba.to_be_bytes());
        c.extend_from_slice(&blocks.to_be_bytes());
        c.extend_from_slice(&[0, 0]);
        c
    }

    #[test]
    fn write_then_read_all_sizes() {
        let t = Rig::new();
        let data: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
        let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (vec![0x0a, 0, 0, 4, 2, 0], vec![0x08, 0, 0, 4, 2, 0]),
            (rw10(0x2a, 0, 6, 2), rw10(0x28, 0, 6, 2)),
            (
                vec![0xaa, 0, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0],
                vec![0xa8, 0, 0, 0, 0, 8, 0, 0, 0, 2, 0, 0],
            ),
            (rw16(0x8a, 0x08, 10, 2), rw16(0x88, 0x18, 10, 2)),
        ];
        for (w, r) in cases {
            let (o, _) = t.run(&w, &data);
            assert_eq!(o.status, Status::Good, "{w:02x?}");
            let (o, d) = t.run(&r, &[]);
            assert_eq!(o.status, Status::Good);
            assert_eq!(d, data, "{r:02x?}");
        }
    }

    #[test]
    fn read6_zero_means_256_blocks() {
        let t = Rig::new();
        let (_, d) = t.ok(&[0x08, 0, 0, 0, 0, 0]);
        assert_eq!(d.len(), 256 * 512);
    }

    #[test]
    fn read_reuses_buffer_contents_length() {
        let t = Rig::new();
        let mut buf = vec![0xaau8; 4096];
        let o = t.run_into(&rw10(0x28, 0, 0, 1), &[], &mut buf);
        assert_eq!(o.status, Status::Good);
        assert_eq!(buf, vec![0u8; 512]);
    }

    #[test]
    fn range_checks() {
        let t = Rig::new();
        let n = BLOCKS as u32;
        t.ok(&rw10(0x28, 0, n, 0));
        t.ok(&rw10(0x28, 0, n - 1, 1));
        t.expect_sense(&rw10(0x28, 0, n + 1, 0), 5, 0x21, 0);
        t.expect_sense(&rw10(0x28, 0, n, 1), 5, 0x21, 0);
        t.expect_sense(&rw10(0x28, 0, u32::MAX, 1), 5, 0x21, 0);
        t.expect_sense(&rw16(0x88, 0, u64::MAX, 2), 5, 0x21, 0);
        t.expect_sense(&rw10(0x2a, 0, n - 1, 2), 5, 0x21, 0);
        t.expect_sense(&rw10(0x2f, 0, n - 1, 2), 5, 0x21, 0);
        t.expect_sense(&rw10(0x35, 0, n - 1, 2), 5, 0x21, 0);
        t.expect_sense(&rw10(0x34, 0, n, 1), 5, 0x21, 0);
    }

    #[test]
    fn protect_fields_rejected() {
        let t = Rig::new();
        for p in 1..8u8 {
            t.expect_sense(&rw10(0x28, p << 5, 0, 1), 5, 0x24, 0);
            t.expect_sense(&rw10(0x2a, p << 5, 0, 1), 5, 0x24, 0);
            t.expect_sense(&rw10(0x2f, p << 5, 0, 1), 5, 0x24, 0);
        }
    }

    #[test]
    fn fua_goes_to_write_at_fua() {
        let t = Rig::new();
        t.run(&rw10(0x2a, 0x08, 0, 1), &[1u8; 512]);
        assert_eq!(t.store.fua_writes(), 1);
        t.run(&rw10(0x2a, 0x00, 0, 1), &[1u8; 512]);
        assert_eq!(t.store.fua_writes(), 1);
        t.ok(&rw10(0x35, 0, 0, 0));
        assert_eq!(t.store.flushes(), 1);
    }

    #[test]
    fn short_data_out_partial_block_writes_nothing() {
        let t = Rig::new();
        let (o, _) = t.run(&rw10(0x2a, 0, 0, 2), &[9u8; 700]);
        assert_eq!(sense_of(&o), Some((5, 0x0e, 3)));
        let (_, d) = t.ok(&rw10(0x28, 0, 0, 2));
        assert!(d.iter().all(|&b| b == 0));
    }

    #[test]
    fn short_data_out_whole_blocks_are_written() {
        let t = Rig::new();
        let (o, _) = t.run(&rw10(0x2a, 0, 0, 2), &[9u8; 512]);
        assert_eq!(o.status, Status::Good);
        let (_, d) = t.ok(&rw10(0x28, 0, 0, 2));
        assert_eq!(&d[..512], &[9u8; 512][..]);
        assert_eq!(&d[512..], &[0u8; 512][..], "second block untouched");
        let (o, _) = t.run(&rw10(0x2e, 0, 4, 1), &[]);
        assert_eq!(o.status, Status::Good, "EDTL 0: nothing written");
        let (o, _) = t.run(&rw10(0x2a, 0, 6, 1), &[3u8; 2048]);
        assert_eq!(o.status, Status::Good, "extra data-out ignored");
        assert_eq!(t.store.bytes(7 * 512, 512), vec![0u8; 512]);
    }

    #[test]
    fn write_protected_variants() {
        let ro = Rig::read_only();
        let (o, _) = ro.run(&rw10(0x2a, 0, 0, 1), &[0u8; 512]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)));
        let (o, _) = ro.run(&rw10(0x2e, 0, 0, 1), &[0u8; 512]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)));
        ro.ok(&rw10(0x28, 0, 0, 1));
    }

    #[test]
    fn io_errors_are_medium_errors() {
        let t = Rig::new();
        t.store.fail(true);
        t.expect_sense(&rw10(0x28, 0, 0, 1), 3, 0x11, 0);
        let (o, _) = t.run(&rw10(0x2a, 0, 0, 1), &[0u8; 512]);
        assert_eq!(sense_of(&o), Some((3, 0x0c, 0)));
        t.expect_sense(&rw10(0x35, 0, 0, 0), 3, 0x0c, 0);
    }

    /// A flush failure sticks to the LU: the kernel reports a writeback
    /// error to one fsync only, so a later SYNCHRONIZE CACHE that reached
    /// the backstore would answer GOOD for lost data.
    #[test]
    fn a_failed_flush_fails_every_later_sync_and_fua_write() {
        let t = Rig::new();
        t.run(&rw10(0x2a, 0, 0, 1), &[1u8; 512]);
        t.store.fail(true);
        t.expect_sense(&rw10(0x35, 0, 0, 0), 3, 0x0c, 0);
        t.store.fail(false);
        for _ in 0..2 {
            t.expect_sense(&rw10(0x35, 0, 0, 0), 3, 0x0c, 0);
            t.expect_sense(&rw16(0x91, 0, 0, 0), 3, 0x0c, 0);
            let (o, _) = t.run(&rw10(0x2a, 0x08, 0, 1), &[2u8; 512]);
            assert_eq!(sense_of(&o), Some((3, 0x0c, 0)), "FUA write");
        }
        // A LOGICAL UNIT RESET does not clear it; reads and cached writes go on.
        t.table
            .task_management(&t.me, crate::TmfFunction::LogicalUnitReset, 0);
        let (o, _) = t.run(&rw10(0x35, 0, 0, 0), &[]);
        assert_eq!(sense_of(&o), Some((6, 0x29, 0)), "reset UA first");
        t.expect_sense(&rw10(0x35, 0, 0, 0), 3, 0x0c, 0);
        t.ok(&rw10(0x28, 0, 0, 1));
        let (o, _) = t.run(&rw10(0x2a, 0, 0, 1), &[3u8; 512]);
        assert_eq!(o.status, Status::Good);
        // Write cache off: every write must be durable, so every write fails.
        t.dev
            .state
            .mode
            .wce
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let (o, _) = t.run(&rw10(0x2a, 0, 0, 1), &[4u8; 512]);
        assert_eq!(sense_of(&o), Some((3, 0x0c, 0)));
    }

    #[test]
    fn verify_bytchk_modes() {
        let t = Rig::new();
        let data = vec![5u8; 1024];
        t.run(&rw10(0x2a, 0, 0, 2), &data);
        let (o, _) = t.run(&rw10(0x2f, 0x02, 0, 2), &data);
        assert_eq!(o.status, Status::Good);
        let mut bad = data.clone();
        bad[600] = 6;
        let (o, _) = t.run(&rw10(0x2f, 0x02, 0, 2), &bad);
        assert_eq!(sense_of(&o), Some((0x0e, 0x1d, 0)));
        let s = o.sense.expect("sense");
        assert_eq!(&s[3..7], &600u32.to_be_bytes());
        let (o, _) = t.run(&rw10(0x2f, 0x00, 0, 2), &bad);
        assert_eq!(o.status, Status::Good, "BYTCHK 0 does not compare");
        let (o, _) = t.run(&rw10(0x2f, 0x06, 0, 2), &data[..512]);
        assert_eq!(o.status, Status::Good, "BYTCHK 3 single block");
        t.expect_sense(&rw10(0x2f, 0x04, 0, 1), 5, 0x24, 0);
    }

    #[test]
    fn write_and_verify_writes() {
        let t = Rig::new();
        let data = vec![0x3cu8; 512];
        let (o, _) = t.run(&rw10(0x2e, 0x02, 3, 1), &data);
        assert_eq!(o.status, Status::Good);
        let (_, d) = t.ok(&rw10(0x28, 0, 3, 1));
        assert_eq!(d, data);
    }

    #[test]
    fn oversized_transfer_rejected() {
        let t = Rig::sized(64 << 20);
        t.expect_sense(&rw16(0x88, 0, 0, (16 << 20) / 512), 5, 0x24, 0);
    }
}
