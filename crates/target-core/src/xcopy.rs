//! Third-party copy (SPC-4 6.4 EXTENDED COPY (LID1), 6.18 RECEIVE COPY
//! RESULTS, 7.8.17 Third-party Copy VPD page): block-to-block copies between
//! the LUs of one LUN table, addressed by their NAA designators, done inside
//! the target so no data crosses the network.
//!
//! Access: the copy manager acts for the nexus that sent the command. Each
//! segment's source LU must let that nexus's own READ through, and its
//! destination LU that nexus's own WRITE: the same reservation (SPC-2 and
//! persistent), ALUA, sanitize, medium and write-protect checks, through
//! the mapping the nexus sees the LU by. When one refuses, the copy ends
//! with the answer the direct command would have got (RESERVATION CONFLICT
//! status; NOT READY, LOGICAL UNIT NOT ACCESSIBLE; DATA PROTECT, WRITE
//! PROTECTED; ...), not COPY ABORTED: the initiator learns the real reason,
//! and the host-side copy it falls back to would meet the same answer.
//! (LIO runs internal READ/WRITE commands on a session of its own and
//! reports any failure of them as COPY ABORTED, COPY TARGET DEVICE NOT
//! REACHABLE; SPC-4 leaves the copy manager's commands vendor specific.)

use std::sync::Mutex;

use scsi::cdb::Cdb;
use scsi::opcode as op;

use crate::commands::Gate;
use crate::dispatch::{self, truncate_to, Ctx, HandlerResult};
use crate::error::{CmdError, CopyAbort, CopyDescriptor};
use crate::{inquiry, Device, Lun, Status};

const MAX_TARGET_DESCRIPTORS: u16 = 2;
const MAX_SEGMENT_DESCRIPTORS: u16 = 16;
const MAX_DESCRIPTOR_LIST_LENGTH: u32 = 1024;
const MAX_SEGMENT_LENGTH: u32 = 16 << 20;
/// Identification descriptor CSCD (SPC-4 6.4.5.2).
const CSCD_ID: u8 = 0xe4;
/// Block device to block device segment descriptor (SPC-4 6.4.6.5).
const SEG_B2B: u8 = 0x02;
/// Bytes copied per backstore call; `data_in` is the reused buffer.
const CHUNK: u64 = 1 << 20;
/// Finished copies remembered for RECEIVE COPY RESULTS.
const MAX_RECORDS: usize = 16;

#[derive(Clone, Copy)]
struct Record {
    nexus: u64,
    list_id: u8,
    segments: u16,
    blocks: u32,
    ok: bool,
}

#[derive(Default)]
pub(crate) struct CopyResults {
    records: Mutex<Vec<Record>>,
}

impl CopyResults {
    fn put(&self, r: Record) {
        let mut v = self.records.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|x| !(x.nexus == r.nexus && x.list_id == r.list_id));
        if v.len() >= MAX_RECORDS {
            v.remove(0);
        }
        v.push(r);
    }

    fn get(&self, nexus: u64, list_id: u8) -> Option<Record> {
        let v = self.records.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .rev()
            .find(|x| x.nexus == nexus && x.list_id == list_id)
            .copied()
    }

    pub(crate) fn forget(&self, nexus: u64) {
        let mut v = self.records.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|x| x.nexus != nexus);
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be64(b: &[u8], at: usize) -> u64 {
    (u64::from(be32(b, at)) << 32) | u64::from(be32(b, at + 4))
}

/// The LU a CSCD identification descriptor names, if it is in this table.
fn resolve<'a>(ctx: &Ctx<'a>, desc: &[u8]) -> Option<&'a Lun> {
    let designator = &desc[4..24];
    // The CSCD holds 20 designator bytes: the 4-byte header and at most 16
    // of designator; a longer length names nothing (and must not index
    // past the descriptor).
    let len = usize::from(designator[3]);
    if len > 16 {
        return None;
    }
    let (assoc_type, body) = (designator[1] & 0x3f, &designator[4..4 + len]);
    // Only LU-associated NAA designators name an LU here.
    if assoc_type != 0x03 {
        return None;
    }
    ctx.table
        .luns
        .iter()
        .find(|l| inquiry::naa6(&l.device)[..] == *body)
}

pub(crate) fn extended_copy(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    run_copy(ctx, data_in).map(|()| Status::Good)
}

fn run_copy(ctx: &Ctx<'_>, scratch: &mut Vec<u8>) -> Result<(), CmdError> {
    let cdb = &ctx.cdb;
    if cdb.service_action() != 0 {
        return Err(CmdError::cdb_field(1));
    }
    let plen = cdb.be32(10) as usize;
    if plen == 0 {
        return Ok(());
    }
    let p = ctx
        .data_out
        .get(..plen)
        .ok_or(CmdError::ParameterListLength)?;
    if p.len() < 16 {
        return Err(CmdError::ParameterListLength);
    }
    let list_id = p[0];
    let list_id_usage = (p[1] >> 3) & 0x03;
    let tdl = usize::from(be16(p, 2));
    let sdl = be32(p, 8) as usize;
    let inline = be32(p, 12) as usize;
    if tdl + sdl > MAX_DESCRIPTOR_LIST_LENGTH as usize {
        return Err(CmdError::ParameterListLength);
    }
    if inline != 0 {
        return Err(CmdError::param(12));
    }
    if p.len() < 16 + tdl + sdl {
        return Err(CmdError::ParameterListLength);
    }
    if tdl % 32 != 0 {
        return Err(CmdError::param(2));
    }
    let targets = &p[16..16 + tdl];
    if tdl / 32 > usize::from(MAX_TARGET_DESCRIPTORS) {
        return Err(CmdError::BadCopyDescriptor(CopyDescriptor::TooManyTargets));
    }
    for t in targets.chunks_exact(32) {
        if t[0] != CSCD_ID {
            return Err(CmdError::BadCopyDescriptor(
                CopyDescriptor::UnsupportedTargetType,
            ));
        }
    }
    // Parse segment descriptors (variable length) before doing anything.
    let mut segs = Vec::new();
    let mut at = 16 + tdl;
    let end = 16 + tdl + sdl;
    while at < end {
        let s = p.get(at..end).ok_or(CmdError::ParameterListLength)?;
        if s.len() < 4 {
            return Err(CmdError::ParameterListLength);
        }
        if s[0] != SEG_B2B {
            return Err(CmdError::BadCopyDescriptor(
                CopyDescriptor::UnsupportedSegmentType,
            ));
        }
        let len = 4 + usize::from(be16(s, 2));
        if len != 28 || s.len() < 28 {
            return Err(CmdError::param(at as u16 + 2));
        }
        segs.push(&s[..28]);
        if segs.len() > usize::from(MAX_SEGMENT_DESCRIPTORS) {
            return Err(CmdError::BadCopyDescriptor(CopyDescriptor::TooManySegments));
        }
        at += len;
    }
    let mut blocks_done = 0u32;
    let mut result = Ok(());
    for (i, s) in segs.iter().enumerate() {
        if let Err(e) = copy_segment(ctx, targets, s, scratch) {
            result = Err(e);
            if list_id_usage != 0x03 {
                ctx.dev.state.copies.put(Record {
                    nexus: ctx.nexus.id,
                    list_id,
                    segments: i as u16,
                    blocks: blocks_done,
                    ok: false,
                });
            }
            scratch.clear();
            return result;
        }
        blocks_done = blocks_done.saturating_add(u32::from(be16(s, 10)));
    }
    scratch.clear();
    if list_id_usage != 0x03 {
        ctx.dev.state.copies.put(Record {
            nexus: ctx.nexus.id,
            list_id,
            segments: segs.len() as u16,
            blocks: blocks_done,
            ok: true,
        });
    }
    result
}

fn copy_segment(
    ctx: &Ctx<'_>,
    targets: &[u8],
    s: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), CmdError> {
    let unreachable = CmdError::CopyAborted(CopyAbort::TargetNotReachable);
    let dc = s[1] & 0x02 != 0;
    let src_i = usize::from(be16(s, 4));
    let dst_i = usize::from(be16(s, 6));
    let src_desc = targets
        .get(src_i * 32..src_i * 32 + 32)
        .ok_or(CmdError::CopyAborted(CopyAbort::TargetNotReachable))?;
    let dst_desc = targets
        .get(dst_i * 32..dst_i * 32 + 32)
        .ok_or(CmdError::CopyAborted(CopyAbort::TargetNotReachable))?;
    let src = resolve(ctx, src_desc).ok_or(CmdError::CopyAborted(CopyAbort::TargetNotReachable))?;
    let dst = resolve(ctx, dst_desc).ok_or(unreachable)?;
    let (sdev, ddev): (&Device, &Device) = (&src.device, &dst.device);
    let blocks = u64::from(be16(s, 10));
    let src_lba = be64(s, 12);
    let dst_lba = be64(s, 20);
    // The copy reads the source and writes the destination on behalf of
    // this nexus: each LU must let the same nexus's own READ / WRITE of
    // those blocks through (reservations, ALUA, sanitize, medium), else
    // the copy fails with exactly the answer that READ / WRITE would get.
    gate_as_direct(ctx, sdev, op::READ_16, src_lba, blocks)?;
    gate_as_direct(ctx, ddev, op::WRITE_16, dst_lba, blocks)?;
    if ddev.write_protected(dst) {
        return Err(CmdError::WriteProtected);
    }
    if sdev.block_size() != ddev.block_size() {
        return Err(CmdError::CopyAborted(CopyAbort::BlockSizeMismatch));
    }
    let bs = sdev.block_size();
    let _ = dc; // equal block sizes: source and destination units agree
    if blocks * bs > u64::from(MAX_SEGMENT_LENGTH) {
        return Err(CmdError::CopyAborted(CopyAbort::SegmentTooLong));
    }
    let sr = crate::rw::byte_range(sdev, src_lba, blocks)
        .map_err(|_| CmdError::CopyAborted(CopyAbort::OutOfRange))?;
    let dr = crate::rw::byte_range(ddev, dst_lba, blocks)
        .map_err(|_| CmdError::CopyAborted(CopyAbort::OutOfRange))?;
    let mut off = 0;
    let total = sr.end - sr.start;
    while off < total {
        let n = (total - off).min(CHUNK) as usize;
        scratch.clear();
        scratch.resize(n, 0);
        // One shared hold at a time: source and destination may be the
        // same device (see `Device::io_shared`).
        {
            let _order = sdev.io_shared();
            sdev.backstore
                .read_at(scratch, sr.start + off)
                .map_err(CmdError::ReadError)?;
        }
        let _order = ddev.io_shared();
        // Durable before GOOD when the destination's write cache is off.
        crate::rw::write_to(ddev, false, scratch, dr.start + off)?;
        off += n as u64;
    }
    Ok(())
}

/// Pass the checks a direct READ(16) / WRITE(16) (`opcode`) of `blocks`
/// blocks at `lba` from this nexus would pass on `dev` (see
/// [`dispatch::access_gate`]). Unit attentions are left alone: they belong
/// to that LU's own commands, and a copy must not consume them. Done once
/// per segment and LU, so an active/non-optimized port's delay is paid
/// once, not per chunk.
fn gate_as_direct(
    ctx: &Ctx<'_>,
    dev: &Device,
    opcode: u8,
    lba: u64,
    blocks: u64,
) -> Result<(), CmdError> {
    let mut raw = [0u8; 16];
    raw[0] = opcode;
    raw[2..10].copy_from_slice(&lba.to_be_bytes());
    raw[10..14].copy_from_slice(&(blocks as u32).to_be_bytes());
    let cdb = Cdb::new(&raw).map_err(|_| CmdError::InvalidOpcode)?;
    dispatch::access_gate(dev, ctx.nexus, &cdb, Gate::Normal, || Ok(()))
}

pub(crate) fn receive_copy_results(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let alloc = cdb.be32(10) as usize;
    match cdb.service_action() {
        0x00 => {
            let rec = ctx
                .dev
                .state
                .copies
                .get(ctx.nexus.id, cdb.b(2))
                .ok_or(CmdError::cdb_field(2))?;
            data_in.extend_from_slice(&8u32.to_be_bytes());
            data_in.push(if rec.ok { 0x00 } else { 0x01 });
            data_in.extend_from_slice(&rec.segments.to_be_bytes());
            data_in.push(0xf1); // transfer count in logical blocks
            data_in.extend_from_slice(&rec.blocks.to_be_bytes());
        }
        0x03 => {
            let d = &mut *data_in;
            d.resize(44, 0);
            d[8..10].copy_from_slice(&MAX_TARGET_DESCRIPTORS.to_be_bytes());
            d[10..12].copy_from_slice(&MAX_SEGMENT_DESCRIPTORS.to_be_bytes());
            d[12..16].copy_from_slice(&MAX_DESCRIPTOR_LIST_LENGTH.to_be_bytes());
            d[16..20].copy_from_slice(&MAX_SEGMENT_LENGTH.to_be_bytes());
            d[34..36].copy_from_slice(&1u16.to_be_bytes()); // total concurrent copies
            d[36] = 1;
            d[37] = ctx.dev.block_size().trailing_zeros() as u8;
            let implemented = [SEG_B2B, CSCD_ID];
            d[43] = implemented.len() as u8;
            d.extend_from_slice(&implemented);
            let avail = (d.len() - 4) as u32;
            d[..4].copy_from_slice(&avail.to_be_bytes());
        }
        _ => return Err(CmdError::cdb_field(1)),
    }
    truncate_to(alloc, data_in)
}

/// Third-party Copy VPD page body (after the 4-byte header).
pub(crate) fn vpd_page(out: &mut Vec<u8>) {
    // Supported Commands descriptor (SPC-4 7.8.17.3).
    let cmds: [&[u8]; 2] = [
        &[op::EXTENDED_COPY, 1, 0x00],
        &[op::RECEIVE_COPY_RESULTS, 2, 0x00, 0x03],
    ];
    let list_len: usize = cmds.iter().map(|c| c.len()).sum();
    let mut body = vec![list_len as u8];
    for c in cmds {
        body.extend_from_slice(c);
    }
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    out.extend_from_slice(&0x0001u16.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
}

#[cfg(test)]
mod tests {
    use crate::inquiry::naa6;
    use crate::testutil::*;
    use crate::Status;

    fn target_desc(t: &Rig) -> Vec<u8> {
        let mut d = vec![0xe4, 0, 0, 0, 0x01, 0x03, 0, 16];
        d.extend_from_slice(&naa6(&t.dev));
        d.resize(28, 0);
        d.extend_from_slice(&[0, 0, 2, 0]);
        d
    }

    fn seg(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
        let mut s = vec![0x02, 0, 0, 24];
        s.extend_from_slice(&src.to_be_bytes());
        s.extend_from_slice(&dst.to_be_bytes());
        s.extend_from_slice(&[0, 0]);
        s.extend_from_slice(&blocks.to_be_bytes());
        s.extend_from_slice(&src_lba.to_be_bytes());
        s.extend_from_slice(&dst_lba.to_be_bytes());
        s
    }

    fn params(list_id: u8, usage: u8, targets: &[Vec<u8>], segs: &[Vec<u8>]) -> Vec<u8> {
        let tdl: usize = targets.iter().map(Vec::len).sum();
        let sdl: usize = segs.iter().map(Vec::len).sum();
        let mut p = vec![list_id, usage << 3];
        p.extend_from_slice(&(tdl as u16).to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(&(sdl as u32).to_be_bytes());
        p.extend_from_slice(&[0; 4]);
        for t in targets {
            p.extend_from_slice(t);
        }
        for s in segs {
            p.extend_from_slice(s);
        }
        p
    }

    fn xcopy_cdb(len: usize) -> Vec<u8> {
        let mut c = vec![0x83, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        c.extend_from_slice(&(len as u32).to_be_bytes());
        c.extend_from_slice(&[0, 0]);
        c
    }

    #[test]
    fn copies_blocks_and_reports_status() {
        let t = Rig::new();
        t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 4, 0], &[0x41u8; 2048]);
        let p = params(7, 0, &[target_desc(&t)], &[seg(0, 0, 4, 0, 100)]);
        let (o, _) = t.run(&xcopy_cdb(p.len()), &p);
        assert_eq!(o.status, Status::Good, "{:?}", sense_of(&o));
        assert_eq!(t.store.bytes(100 * 512, 2048), vec![0x41u8; 2048]);
        let (_, d) = t.ok(&[0x84, 0x00, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0]);
        assert_eq!(d[4], 0, "completed without errors");
        assert_eq!(&d[8..12], &4u32.to_be_bytes());
        t.expect_sense(
            &[0x84, 0x00, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0],
            5,
            0x24,
            0,
        );
    }

    /// Write cache off: the copied blocks are durable before GOOD (each
    /// chunk goes to the destination as a FUA write, as a WRITE's would).
    #[test]
    fn write_through_copy_is_durable() {
        let t = Rig::new();
        let p = params(7, 0, &[target_desc(&t)], &[seg(0, 0, 4, 0, 100)]);
        for wce in [true, false] {
            t.dev
                .state
                .mode
                .wce
                .store(wce, std::sync::atomic::Ordering::Relaxed);
            let before = t.store.fua_writes() + t.store.flushes();
            let (o, _) = t.run(&xcopy_cdb(p.len()), &p);
            assert_eq!(o.status, Status::Good, "{:?}", sense_of(&o));
            let synced = t.store.fua_writes() + t.store.flushes() - before;
            assert_eq!(synced > 0, !wce, "wce={wce}: {synced} syncs");
        }
    }

    #[test]
    fn descriptor_errors() {
        let t = Rig::new();
        let td = target_desc(&t);
        let p = params(
            1,
            3,
            &[td.clone(), td.clone(), td.clone()],
            &[seg(0, 0, 1, 0, 1)],
        );
        let (o, _) = t.run(&xcopy_cdb(p.len()), &p);
        assert_eq!(sense_of(&o), Some((5, 0x26, 6)), "too many targets");
        let mut bad = td.clone();
        bad[0] = 0xe0;
        let p = params(1, 3, &[bad], &[seg(0, 0, 1, 0, 1)]);
        let (o, _) = t.run(&xcopy_cdb(p.len()), &p);
        assert_eq!(sense_of(&o), Some((5, 0x26, 7)), "unsupported target type");
        let p = params(1, 3, std::slice::from_ref(&td), &[seg(0, 1, 1, 0, 1)]);
        let (o, _) = t.run(&xcopy_cdb(p.len()), &p);
        assert_eq!(sense_of(&o), Some((0x0a, 0x0d, 2)), "bad index");
        let p = params(
            1,
            3,
            std::slice::from_ref(&td),
            &[seg(0, 0, 4, 0, BLOCKS - 1)],
        );
        let (o, _) = t.run(&xcopy_cdb(p.len()), &p);
        assert_eq!(o.sense.as_ref().map(|s| s[2]), Some(0x0a), "beyond end");
        let p = params(1, 3, &[td], &[seg(0, 0, 1, 0, 1)]);
        let (o, _) = t.run(&xcopy_cdb(p.len() + 1), &p);
        assert_eq!(sense_of(&o), Some((5, 0x1a, 0)), "truncated");
        t.ok(&xcopy_cdb(0));
    }

    /// Found by the xcopy fuzz target: a designator length over 16 (the
    /// CSCD has room for 16) indexed past the descriptor and panicked.
    #[test]
    fn designator_longer_than_the_descriptor_is_unreachable() {
        let t = Rig::new();
        for len in [17u8, 20, 0xff] {
            let mut td = target_desc(&t);
            td[7] = len;
            let p = params(1, 3, &[td], &[seg(0, 0, 1, 0, 1)]);
            let (o, _) = t.run(&xcopy_cdb(p.len()), &p);
            assert_eq!(o.status, Status::CheckCondition, "length {len}");
            assert_eq!(sense_of(&o), Some((0x0a, 0x0d, 2)), "length {len}");
        }
    }

    #[test]
    fn operating_parameters_and_vpd() {
        let t = Rig::new();
        let (_, d) = t.ok(&[0x84, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&d[8..10], &2u16.to_be_bytes());
        assert_eq!(d[43], 2);
        assert_eq!(usize::from(d[3]) + 4, d.len());
        let (_, d) = t.ok(&[0x12, 1, 0x8f, 0, 255, 0]);
        assert_eq!(&d[4..6], &[0, 1], "supported commands descriptor");
        assert_eq!(d[9], 0x83);
    }
}

#[cfg(test)]
#[path = "xcopy_tests.rs"]
mod access_tests;
