//! Logical block provisioning (SBC-3 4.7, 5.42-5.44, 5.16): WRITE SAME 10/16
//! (with UNMAP and NDOB), UNMAP and GET LBA STATUS. Thin LUs deallocate
//! through `Backstore::discard` and read back zeroes (LBPRZ=1); when the
//! backstore cannot discard, zeroes are written instead so LBPRZ stays true.

use scsi::opcode as op;

use crate::dispatch::{truncate_to, Ctx, HandlerResult};
use crate::error::CmdError;
use crate::rw::{byte_range, data_out, MAX_UNMAP_DESCRIPTORS};
use crate::{Device, Status};

/// Deallocate (or at least zero) a byte range.
pub(crate) fn deallocate(dev: &Device, offset: u64, len: u64) -> Result<(), CmdError> {
    if len == 0 {
        return Ok(());
    }
    let bs = &dev.backstore;
    if dev.state.caps.discard {
        match bs.discard(offset, len) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(e) => return Err(CmdError::WriteError(e)),
        }
    }
    bs.write_zeroes(offset, len).map_err(CmdError::WriteError)
}

/// Most bytes one WRITE SAME pattern write covers (the pattern buffer is
/// `data_in`, reused, so this bounds its growth).
const PATTERN_CHUNK: usize = 1 << 20;

pub(crate) fn write_same(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let dev = ctx.dev;
    let sixteen = cdb.opcode() == op::WRITE_SAME_16;
    let rw = cdb.rw();
    let flags = cdb.b(1);
    let unmap = flags & 0x08 != 0;
    let anchor = flags & 0x10 != 0;
    let ndob = sixteen && flags & 0x01 != 0;
    if rw.protect() != 0 {
        return Err(CmdError::cdb_bit(1, 5));
    }
    // ANC_SUP = 0: anchored state is not supported.
    if anchor {
        return Err(CmdError::cdb_bit(1, 4));
    }
    // A write-protected medium refuses every change first, unmapping
    // included, whether or not this LU could unmap.
    if dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    // A fully provisioned LU (LBPME=0, LBPWS=LBPWS10=0) offers no unmap
    // operation: refuse the UNMAP bit rather than silently ignore it. LIO
    // answers INVALID COMMAND OPERATION CODE here (the WRITE SAME-with-
    // UNMAP "command" is unsupported), which initiators, libiscsi's
    // conformance suite among them, read as "not available"; do the same.
    if unmap && !dev.thin() {
        return Err(CmdError::InvalidOpcode);
    }
    let num_blocks = dev.num_blocks();
    if rw.lba > num_blocks {
        return Err(CmdError::LbaOutOfRange);
    }
    // WSNZ = 0: zero blocks means "through the last LBA".
    let blocks = if rw.blocks == 0 {
        num_blocks - rw.lba
    } else {
        u64::from(rw.blocks)
    };
    let r = byte_range(dev, rw.lba, blocks)?;
    if blocks > u64::from(dev.max_transfer_blocks()) {
        return Err(CmdError::cdb_field(if sixteen { 10 } else { 7 }));
    }
    let bs = dev.block_size() as usize;
    let zero_pattern;
    let pattern: &[u8] = if ndob {
        zero_pattern = true;
        &[]
    } else {
        if ctx.data_out.len() != bs {
            return Err(CmdError::InvalidFieldInCommandIu);
        }
        let p = data_out(ctx, bs as u64)?;
        zero_pattern = p.iter().all(|&b| b == 0);
        p
    };
    if r.is_empty() {
        return Ok(Status::Good);
    }
    let _order = dev.io_shared();
    // UNMAP on a thin LU deallocates whatever the pattern (SBC-3 5.45: the
    // device server may unmap; LBPRZ=1 then makes the blocks read zero).
    if unmap && dev.thin() {
        deallocate(dev, r.start, r.end - r.start)?;
        crate::rw::sync_if_write_through(dev)?;
        return Ok(Status::Good);
    }
    if zero_pattern {
        dev.backstore
            .write_zeroes(r.start, r.end - r.start)
            .map_err(CmdError::WriteError)?;
        crate::rw::sync_if_write_through(dev)?;
        return Ok(Status::Good);
    }
    // Repeat the block into a reusable chunk and write it out.
    let total = (r.end - r.start) as usize;
    let chunk = total.min(PATTERN_CHUNK / bs * bs).max(bs);
    data_in.clear();
    while data_in.len() < chunk {
        data_in.extend_from_slice(pattern);
    }
    let mut off = r.start;
    while off < r.end {
        let n = ((r.end - off) as usize).min(chunk);
        crate::rw::write_buf(ctx, false, &data_in[..n], off)?;
        off += n as u64;
    }
    data_in.clear();
    Ok(Status::Good)
}

pub(crate) fn unmap(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let dev = ctx.dev;
    let cdb = &ctx.cdb;
    // Write protection first, as for WRITE SAME with UNMAP: a read-only
    // medium answers DATA PROTECT to anything that would change it.
    if dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    if !dev.thin() {
        return Err(CmdError::InvalidOpcode);
    }
    if cdb.b(1) & 0x01 != 0 {
        return Err(CmdError::cdb_bit(1, 0)); // ANCHOR
    }
    let plen = usize::from(cdb.be16(7));
    if plen == 0 {
        return Ok(Status::Good);
    }
    if plen < 8 {
        return Err(CmdError::ParameterListLength);
    }
    let data = ctx
        .data_out
        .get(..plen)
        .ok_or(CmdError::ParameterListLength)?;
    let bd_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let descs = data.get(8..8 + bd_len.min(plen - 8)).unwrap_or(&[]);
    let descs = &descs[..descs.len() / 16 * 16];
    if descs.len() / 16 > MAX_UNMAP_DESCRIPTORS as usize {
        return Err(CmdError::param(2));
    }
    let _order = dev.io_shared();
    // Validate every descriptor before touching the medium.
    for d in descs.chunks_exact(16) {
        let lba = u64::from_be_bytes(d[..8].try_into().unwrap_or([0xff; 8]));
        let n = u32::from_be_bytes(d[8..12].try_into().unwrap_or([0; 4]));
        byte_range(dev, lba, u64::from(n))?;
    }
    for d in descs.chunks_exact(16) {
        let lba = u64::from_be_bytes(d[..8].try_into().unwrap_or([0xff; 8]));
        let n = u32::from_be_bytes(d[8..12].try_into().unwrap_or([0; 4]));
        let r = byte_range(dev, lba, u64::from(n))?;
        deallocate(dev, r.start, r.end - r.start)?;
    }
    crate::rw::sync_if_write_through(dev)?;
    Ok(Status::Good)
}

/// LBA status descriptors returned at most per GET LBA STATUS.
const MAX_LBA_STATUS_DESCRIPTORS: usize = 64;

/// GET LBA STATUS (SBC-3 5.16): mapped / deallocated extents from the
/// backstore's allocation map on thin LUs. A thick LU, or a backstore that
/// cannot tell, reports everything from the LBA on as mapped.
pub(crate) fn get_lba_status(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let dev = ctx.dev;
    let lba = cdb.be64(2);
    let alloc = cdb.be32(10) as usize;
    let n = dev.num_blocks();
    if lba >= n {
        return Err(CmdError::LbaOutOfRange);
    }
    let bs = dev.block_size();
    data_in.extend_from_slice(&[0; 8]);
    let room = alloc.saturating_sub(8) / 16;
    let wanted = room.clamp(1, MAX_LBA_STATUS_DESCRIPTORS);
    let mut at = lba;
    while at < n && (data_in.len() - 8) / 16 < wanted {
        let extent = if dev.thin() {
            dev.backstore
                .allocation_at(at * bs)
                .map_err(CmdError::ReadError)?
        } else {
            None
        };
        let (blocks, status) = match extent {
            Some(e) => ((e.len / bs).max(1), u8::from(!e.allocated)),
            None => (n - at, 0),
        };
        let blocks = blocks.min(n - at).min(u64::from(u32::MAX));
        data_in.extend_from_slice(&at.to_be_bytes());
        data_in.extend_from_slice(&(blocks as u32).to_be_bytes());
        // Provisioning status: 0 mapped, 1 deallocated (reads zero, LBPRZ).
        data_in.extend_from_slice(&[status, 0, 0, 0]);
        at += blocks;
    }
    let len = u32::try_from(data_in.len() - 4).unwrap_or(u32::MAX);
    data_in[..4].copy_from_slice(&len.to_be_bytes());
    truncate_to(alloc, data_in)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::Status;
    use std::sync::atomic::Ordering;

    fn ws10(flags: u8, lba: u32, blocks: u16) -> Vec<u8> {
        let mut c = vec![0x41, flags];
        c.extend_from_slice(&lba.to_be_bytes());
        c.push(0);
        c.extend_from_slice(&blocks.to_be_bytes());
        c.push(0);
        c
    }

    fn ws16(flags: u8, lba: u64, blocks: u32) -> Vec<u8> {
        let mut c = vec![0x93, flags];
        c.extend_from_slice(&lba.to_be_bytes());
        c.extend_from_slice(&blocks.to_be_bytes());
        c.extend_from_slice(&[0, 0]);
        c
    }

    #[test]
    fn write_same_repeats_the_block() {
        let t = Rig::new();
        let block: Vec<u8> = (0..512u32).map(|i| i as u8).collect();
        let (o, _) = t.run(&ws10(0, 5, 3), &block);
        assert_eq!(o.status, Status::Good);
        assert_eq!(t.store.bytes(5 * 512, 512), block);
        assert_eq!(t.store.bytes(7 * 512, 512), block);
        assert_eq!(t.store.bytes(8 * 512, 512), vec![0u8; 512]);
    }

    #[test]
    fn write_same_zero_blocks_means_to_the_end() {
        let t = Rig::new();
        let (o, _) = t.run(&ws16(0, BLOCKS - 4, 0), &[7u8; 512]);
        assert_eq!(o.status, Status::Good);
        assert_eq!(
            t.store.bytes((BLOCKS as usize - 1) * 512, 512),
            vec![7u8; 512]
        );
    }

    #[test]
    fn write_same_checks() {
        let t = Rig::new();
        let (o, _) = t.run(&ws10(0, BLOCKS as u32 + 1, 0), &[0u8; 512]);
        assert_eq!(sense_of(&o), Some((5, 0x21, 0)));
        let (o, _) = t.run(&ws10(0, BLOCKS as u32 - 1, 2), &[0u8; 512]);
        assert_eq!(sense_of(&o), Some((5, 0x21, 0)));
        let (o, _) = t.run(&ws10(0x10 | 0x08, 0, 1), &[0u8; 512]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "ANCHOR");
        let (o, _) = t.run(&ws10(0x20, 0, 1), &[0u8; 512]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "WRPROTECT");
        let (o, _) = t.run(&ws10(0, 0, 1), &[0u8; 256]);
        assert_eq!(o.status, Status::CheckCondition, "short data-out");
        let (o, _) = t.run(&ws10(0, 0, 1), &[0u8; 1024]);
        assert_eq!(o.status, Status::CheckCondition, "long data-out");
        let big = Rig::sized(64 << 20);
        let (o, _) = big.run(&ws10(0, 0, 0), &[0u8; 512]);
        assert_eq!(
            sense_of(&o),
            Some((5, 0x24, 0)),
            "beyond MAXIMUM WRITE SAME LENGTH"
        );
        let ro = Rig::read_only();
        let (o, _) = ro.run(&ws10(0, 0, 1), &[0u8; 512]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)));
        let (o, _) = ro.run(&ws10(0x08, 0, 1), &[0u8; 512]);
        assert_eq!(
            sense_of(&o),
            Some((7, 0x27, 0)),
            "UNMAP on a read-only thick LU"
        );
        let (o, _) = ro.run(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], &[0u8; 24]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "UNMAP command");
    }

    #[test]
    fn write_same_unmap_refused_on_thick() {
        let t = Rig::new();
        t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0xffu8; 512]);
        for c in [ws10(0x08, 0, 1), ws16(0x08, 0, 1), ws16(0x09, 0, 1)] {
            let data: &[u8] = if c[1] & 1 != 0 { &[] } else { &[0u8; 512] };
            let (o, _) = t.run(&c, data);
            assert_eq!(sense_of(&o), Some((5, 0x20, 0)), "{c:02x?}");
        }
        assert_eq!(t.store.bytes(0, 512), vec![0xffu8; 512], "nothing written");
        let (o, _) = t.run(&ws16(0x01, 0, 1), &[]);
        assert_eq!(o.status, Status::Good, "NDOB without UNMAP writes zeroes");
        assert_eq!(t.store.bytes(0, 512), vec![0u8; 512]);
    }

    #[test]
    fn write_same_unmap_discards_on_thin() {
        let t = Rig::thin();
        t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 4, 0], &[0xffu8; 2048]);
        let (o, _) = t.run(&ws16(0x08, 0, 4), &[0u8; 512]);
        assert_eq!(o.status, Status::Good);
        assert_eq!(t.store.discards.load(Ordering::SeqCst), 1);
        assert_eq!(t.store.bytes(0, 2048), vec![0u8; 2048]);
        let (o, _) = t.run(&ws16(0x09, 0, 4), &[]);
        assert_eq!(o.status, Status::Good, "NDOB");
        assert_eq!(t.store.discards.load(Ordering::SeqCst), 2);
        t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 4, 0], &[0xffu8; 2048]);
        let (o, _) = t.run(&ws10(0x08, 0, 4), &[0xffu8; 512]);
        assert_eq!(o.status, Status::Good);
        assert_eq!(
            t.store.bytes(0, 2048),
            vec![0u8; 2048],
            "UNMAP ignores the pattern"
        );
    }

    fn unmap_params(descs: &[(u64, u32)]) -> Vec<u8> {
        let mut p = vec![0u8; 8];
        let bd = (descs.len() * 16) as u16;
        p[0..2].copy_from_slice(&(bd + 6).to_be_bytes());
        p[2..4].copy_from_slice(&bd.to_be_bytes());
        for &(lba, n) in descs {
            p.extend_from_slice(&lba.to_be_bytes());
            p.extend_from_slice(&n.to_be_bytes());
            p.extend_from_slice(&[0; 4]);
        }
        p
    }

    fn unmap_cdb(len: usize) -> Vec<u8> {
        let l = (len as u16).to_be_bytes();
        vec![0x42, 0, 0, 0, 0, 0, 0, l[0], l[1], 0]
    }

    #[test]
    fn unmap_deallocates_and_validates_first() {
        let t = Rig::thin();
        t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 4, 0], &[0xffu8; 2048]);
        let p = unmap_params(&[(0, 1), (2, 2)]);
        let (o, _) = t.run(&unmap_cdb(p.len()), &p);
        assert_eq!(o.status, Status::Good);
        assert_eq!(t.store.bytes(0, 512), vec![0u8; 512]);
        assert_eq!(t.store.bytes(512, 512), vec![0xffu8; 512]);
        t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0xffu8; 512]);
        let p = unmap_params(&[(0, 1), (BLOCKS, 1)]);
        let (o, _) = t.run(&unmap_cdb(p.len()), &p);
        assert_eq!(sense_of(&o), Some((5, 0x21, 0)));
        assert_eq!(t.store.bytes(0, 512), vec![0xffu8; 512], "nothing unmapped");
        let p = unmap_params(&[]);
        let (o, _) = t.run(&unmap_cdb(p.len()), &p);
        assert_eq!(o.status, Status::Good);
        let (o, _) = t.run(&unmap_cdb(4), &[0u8; 4]);
        assert_eq!(sense_of(&o), Some((5, 0x1a, 0)));
        let thick = Rig::new();
        let (o, _) = thick.run(&unmap_cdb(8), &[0u8; 8]);
        assert_eq!(sense_of(&o), Some((5, 0x20, 0)));
    }

    /// With the write cache off (emulate_write_cache=0, or MODE SELECT
    /// WCE=0) a deallocation or zeroing is durable before GOOD, like a
    /// WRITE: the core flushes a backstore that has a volatile cache.
    #[test]
    fn write_through_deallocation_and_zeroing_are_flushed() {
        let t = Rig::thin();
        let p = unmap_params(&[(0, 1), (2, 2)]);
        let cases = [
            (unmap_cdb(p.len()), p),
            (ws10(0x08, 0, 4), vec![0u8; 512]),
            (ws16(0, 8, 4), vec![0u8; 512]),
            (ws16(0x01, 8, 4), vec![]),
        ];
        for wce in [true, false] {
            t.dev.state.mode.wce.store(wce, Ordering::Relaxed);
            for (cdb, data) in &cases {
                let before = t.store.flushes();
                let (o, _) = t.run(cdb, data);
                assert_eq!(o.status, Status::Good, "{cdb:02x?}");
                let want = usize::from(!wce);
                assert_eq!(t.store.flushes() - before, want, "wce={wce} {cdb:02x?}");
            }
        }
    }

    #[test]
    fn get_lba_status_reports_mapped() {
        let t = Rig::new();
        let mut c = vec![0x9e, 0x12];
        c.extend_from_slice(&10u64.to_be_bytes());
        c.extend_from_slice(&64u32.to_be_bytes());
        c.extend_from_slice(&[0, 0]);
        let (_, d) = t.ok(&c);
        assert_eq!(d.len(), 24);
        assert_eq!(&d[..4], &20u32.to_be_bytes());
        assert_eq!(&d[8..16], &10u64.to_be_bytes());
        assert_eq!(&d[16..20], &((BLOCKS - 10) as u32).to_be_bytes());
        assert_eq!(d[20], 0);
        c[2..10].copy_from_slice(&BLOCKS.to_be_bytes());
        t.expect_sense(&c, 5, 0x21, 0);
    }

    #[test]
    fn get_lba_status_follows_the_allocation_map() {
        let t = Rig::thin();
        // MemStore: blocks 0..8 allocated, the rest holes.
        t.store.set_allocated(0, 8 * 512);
        let mut c = vec![0x9e, 0x12];
        c.extend_from_slice(&4u64.to_be_bytes());
        c.extend_from_slice(&256u32.to_be_bytes());
        c.extend_from_slice(&[0, 0]);
        let (_, d) = t.ok(&c);
        assert_eq!(d.len(), 8 + 32);
        assert_eq!(&d[8..16], &4u64.to_be_bytes());
        assert_eq!(&d[16..20], &4u32.to_be_bytes());
        assert_eq!(d[20], 0, "mapped");
        assert_eq!(&d[24..32], &8u64.to_be_bytes());
        assert_eq!(&d[32..36], &((BLOCKS - 8) as u32).to_be_bytes());
        assert_eq!(d[36], 1, "deallocated");
    }
}
