//! MODE SENSE / MODE SELECT 6 and 10 (SPC-4 6.11-6.14, SBC-3 6.4): the
//! read-write error recovery, caching, control and informational exceptions
//! pages with current / changeable / default values, the block descriptor,
//! and the few fields an initiator may change (WCE, SWP).

use std::sync::atomic::Ordering;

use scsi::opcode as op;
use scsi::Asc;

use crate::dispatch::{truncate_to, Ctx, HandlerResult};
use crate::error::CmdError;
use crate::{Device, Status};

const PAGE_RW_RECOVERY: u8 = 0x01;
const PAGE_CACHING: u8 = 0x08;
const PAGE_CONTROL: u8 = 0x0a;
const PAGE_INFO_EXCEPTIONS: u8 = 0x1c;
const ALL_PAGES: u8 = 0x3f;

/// Pages in the order MODE SENSE returns them for "all pages".
const PAGES: [u8; 4] = [
    PAGE_RW_RECOVERY,
    PAGE_CACHING,
    PAGE_CONTROL,
    PAGE_INFO_EXCEPTIONS,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PageControl {
    Current,
    Changeable,
    Default,
}

/// Caching page byte 2: write cache enable.
const WCE: u8 = 0x04;
/// Control page byte 4: software write protect.
const SWP: u8 = 0x08;

/// One page's bytes (header included) for the given page control.
fn page(dev: &Device, code: u8, pc: PageControl) -> Vec<u8> {
    let mut p = match code {
        PAGE_RW_RECOVERY => vec![0u8; 12],
        PAGE_CACHING => vec![0u8; 20],
        PAGE_CONTROL => vec![0u8; 12],
        _ => vec![0u8; 12],
    };
    p[0] = code;
    p[1] = (p.len() - 2) as u8;
    match (code, pc) {
        (PAGE_CACHING, PageControl::Changeable) => p[2] = WCE,
        (PAGE_CACHING, PageControl::Current) if dev.wce() => p[2] = WCE,
        (PAGE_CACHING, PageControl::Default) if dev.options.write_cache => p[2] = WCE,
        (PAGE_CONTROL, PageControl::Changeable) => p[4] = SWP,
        (PAGE_CONTROL, pc) => {
            // Unrestricted reordering, QERR=0; TAS=1: aborted tasks of other
            // nexuses get TASK ABORTED status; busy timeout unlimited.
            p[3] = 0x10;
            if pc == PageControl::Current && dev.state.mode.swp.load(Ordering::Relaxed) {
                p[4] = SWP;
            }
            p[5] = 0x40;
            p[8] = 0xff;
            p[9] = 0xff;
        }
        (PAGE_INFO_EXCEPTIONS, PageControl::Changeable) => {}
        (PAGE_INFO_EXCEPTIONS, _) => p[2] = 0x08, // DEXCPT: no reporting
        _ => {}
    }
    p
}

pub(crate) fn mode_sense(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let dev = ctx.dev;
    let ten = cdb.opcode() == op::MODE_SENSE_10;
    let dbd = cdb.b(1) & 0x08 != 0;
    let llbaa = ten && cdb.b(1) & 0x10 != 0;
    let pc = match cdb.b(2) >> 6 {
        0 => PageControl::Current,
        1 => PageControl::Changeable,
        2 => PageControl::Default,
        _ => return Err(CmdError::SavingParametersNotSupported),
    };
    let code = cdb.b(2) & 0x3f;
    let subpage = cdb.b(3);
    let alloc = if ten {
        usize::from(cdb.be16(7))
    } else {
        usize::from(cdb.b(4))
    };
    let codes: &[u8] = match (code, subpage) {
        (ALL_PAGES, 0x00 | 0xff) => &PAGES,
        (c, 0x00) if PAGES.contains(&c) => {
            std::slice::from_ref(PAGES.iter().find(|&&p| p == c).unwrap_or(&PAGE_CACHING))
        }
        (_, 0x00) => return Err(CmdError::cdb_field(2)),
        _ => return Err(CmdError::cdb_field(3)),
    };

    let header_len = if ten { 8 } else { 4 };
    data_in.resize(header_len, 0);
    let mut dev_specific = 0x10; // DPOFUA
    if dev.write_protected(ctx.lun) {
        dev_specific |= 0x80;
    }
    if ten {
        data_in[3] = dev_specific;
    } else {
        data_in[2] = dev_specific;
    }
    if !dbd {
        let bs = dev.options.block_size;
        let blocks = dev.num_blocks();
        if llbaa {
            data_in[4] = 0x01; // LONGLBA
            data_in.extend_from_slice(&blocks.to_be_bytes());
            data_in.extend_from_slice(&[0, 0, 0, 0]);
            data_in.extend_from_slice(&bs.to_be_bytes());
        } else {
            let n = u32::try_from(blocks).unwrap_or(u32::MAX);
            data_in.extend_from_slice(&n.to_be_bytes());
            data_in.extend_from_slice(&bs.to_be_bytes());
            data_in[header_len + 4] = 0; // density code/reserved byte
        }
        let bd_len = data_in.len() - header_len;
        if ten {
            data_in[6..8].copy_from_slice(&(bd_len as u16).to_be_bytes());
        } else {
            data_in[3] = bd_len as u8;
        }
    }
    for &c in codes {
        data_in.extend_from_slice(&page(dev, c, pc));
    }
    if ten {
        let len = u16::try_from(data_in.len() - 2).unwrap_or(u16::MAX);
        data_in[..2].copy_from_slice(&len.to_be_bytes());
    } else {
        data_in[0] = u8::try_from(data_in.len() - 1).unwrap_or(u8::MAX);
    }
    truncate_to(alloc, data_in)
}

pub(crate) fn mode_select(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let dev = ctx.dev;
    let ten = cdb.opcode() == op::MODE_SELECT_10;
    if cdb.b(1) & 0x01 != 0 {
        // SP: pages are not saveable.
        return Err(CmdError::cdb_bit(1, 0));
    }
    let plen = if ten {
        usize::from(cdb.be16(7))
    } else {
        usize::from(cdb.b(4))
    };
    if plen == 0 {
        return Ok(Status::Good);
    }
    if cdb.b(1) & 0x10 == 0 {
        // PF=0: vendor-specific page format is not supported.
        return Err(CmdError::cdb_bit(1, 4));
    }
    let data = ctx
        .data_out
        .get(..plen)
        .ok_or(CmdError::ParameterListLength)?;
    let header_len = if ten { 8 } else { 4 };
    if data.len() < header_len {
        return Err(CmdError::ParameterListLength);
    }
    let bd_len = if ten {
        usize::from(u16::from_be_bytes([data[6], data[7]]))
    } else {
        usize::from(data[3])
    };
    let pages_at = header_len + bd_len;
    if pages_at > data.len() {
        return Err(CmdError::ParameterListLength);
    }
    check_block_descriptors(
        dev,
        &data[header_len..pages_at],
        ten && data[4] & 1 != 0,
        header_len,
    )?;

    // Validate every page before applying any (all-or-nothing).
    let mut new_wce = dev.wce();
    let mut new_swp = dev.state.mode.swp.load(Ordering::Relaxed);
    let mut at = pages_at;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < 2 {
            return Err(CmdError::ParameterListLength);
        }
        let code = rest[0] & 0x3f;
        if rest[0] & 0x40 != 0 {
            // SPF: no subpages are implemented.
            return Err(CmdError::param(at as u16));
        }
        if !PAGES.contains(&code) {
            return Err(CmdError::param(at as u16));
        }
        let cur = page(dev, code, PageControl::Current);
        let changeable = page(dev, code, PageControl::Changeable);
        let len = usize::from(rest[1]) + 2;
        if len != cur.len() {
            return Err(CmdError::param(at as u16 + 1));
        }
        let sent = rest.get(..len).ok_or(CmdError::ParameterListLength)?;
        for i in 2..len {
            if (sent[i] ^ cur[i]) & !changeable[i] != 0 {
                return Err(CmdError::param((at + i) as u16));
            }
        }
        match code {
            PAGE_CACHING => new_wce = sent[2] & WCE != 0,
            PAGE_CONTROL => new_swp = sent[4] & SWP != 0,
            _ => {}
        }
        at += len;
    }
    let changed = new_wce != dev.wce() || new_swp != dev.state.mode.swp.load(Ordering::Relaxed);
    dev.state.mode.wce.store(new_wce, Ordering::Relaxed);
    dev.state.mode.swp.store(new_swp, Ordering::Relaxed);
    if changed {
        dev.state
            .ua
            .queue_others(Some(ctx.nexus.id), Asc::MODE_PARAMETERS_CHANGED);
    }
    Ok(Status::Good)
}

/// A block descriptor may be sent back as read; only the block length
/// must match (the capacity field is ignored, as SBC-3 allows).
fn check_block_descriptors(
    dev: &Device,
    bds: &[u8],
    long: bool,
    base: usize,
) -> Result<(), CmdError> {
    let size = if long { 16 } else { 8 };
    if !bds.len().is_multiple_of(size) {
        return Err(CmdError::ParameterListLength);
    }
    for (i, bd) in bds.chunks(size).enumerate() {
        let bl = &bd[size - 3..];
        let bl = u32::from_be_bytes([0, bl[0], bl[1], bl[2]]);
        if bl != 0 && bl != dev.options.block_size {
            return Err(CmdError::param((base + i * size + size - 3) as u16));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::Status;

    fn sense6(pc_page: u8, alloc: u8) -> Vec<u8> {
        vec![0x1a, 0, pc_page, 0, alloc, 0]
    }

    #[test]
    fn mode_sense6_all_pages_layout() {
        let t = Rig::new();
        let (_, d) = t.ok(&sense6(0x3f, 255));
        assert_eq!(usize::from(d[0]), d.len() - 1);
        assert_eq!(d[2] & 0x10, 0x10, "DPOFUA");
        assert_eq!(d[3], 8, "block descriptor length");
        assert_eq!(&d[4..8], &(BLOCKS as u32).to_be_bytes());
        assert_eq!(&d[8..12], &512u32.to_be_bytes());
        let mut codes = Vec::new();
        let mut i = 12;
        while i < d.len() {
            codes.push(d[i]);
            i += 2 + usize::from(d[i + 1]);
        }
        assert_eq!(i, d.len());
        assert_eq!(codes, vec![0x01, 0x08, 0x0a, 0x1c]);
    }

    #[test]
    fn mode_sense10_long_lba_and_dbd() {
        let t = Rig::new();
        let (_, d) = t.ok(&[0x5a, 0x10, 0x08, 0, 0, 0, 0, 0, 255, 0]);
        assert_eq!(d[4] & 1, 1);
        assert_eq!(&d[6..8], &[0, 16]);
        assert_eq!(&d[8..16], &BLOCKS.to_be_bytes());
        let (_, d) = t.ok(&[0x5a, 0x08, 0x08, 0, 0, 0, 0, 0, 255, 0]);
        assert_eq!(&d[6..8], &[0, 0]);
        assert_eq!(d[8], 0x08);
    }

    #[test]
    fn page_control_and_errors() {
        let t = Rig::new();
        let (_, d) = t.ok(&[0x1a, 0x08, 0x48, 0, 255, 0]);
        assert_eq!(d[4 + 2], 0x04, "WCE changeable");
        t.expect_sense(&[0x1a, 0x08, 0xc8, 0, 255, 0], 5, 0x39, 0);
        t.expect_sense(&sense6(0x05, 255), 5, 0x24, 0);
        t.expect_sense(&[0x1a, 0, 0x08, 0x01, 255, 0], 5, 0x24, 0);
        let (_, d) = t.ok(&sense6(0x3f, 4));
        assert_eq!(d.len(), 4, "allocation length honoured");
    }

    #[test]
    fn write_protect_bit() {
        let t = Rig::read_only();
        let (_, d) = t.ok(&sense6(0x08, 255));
        assert_eq!(d[2] & 0x80, 0x80);
    }

    fn caching_select(wce: bool) -> Vec<u8> {
        let mut p = vec![0u8, 0, 0, 0, 0x08, 18];
        p.resize(4 + 20, 0);
        if wce {
            p[6] = 0x04;
        }
        p
    }

    #[test]
    fn mode_select_changes_wce_and_raises_ua_for_others() {
        let t = Rig::new();
        let other = t.nexus(2);
        t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        let (o, _) = t.run(&[0x15, 0x10, 0, 0, 24, 0], &caching_select(false));
        assert_eq!(o.status, Status::Good);
        let (_, d) = t.ok(&sense6(0x08, 255));
        assert_eq!(d[12 + 2] & 0x04, 0);
        let (o, _) = t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((6, 0x2a, 1)));
        t.ok(&[0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn mode_select_rejects_unchangeable_and_bad_lengths() {
        let t = Rig::new();
        let mut p = caching_select(true);
        p[7] = 0x01; // a non-changeable bit
        let (o, _) = t.run(&[0x15, 0x10, 0, 0, 24, 0], &p);
        assert_eq!(sense_of(&o), Some((5, 0x26, 0)));
        let (o, _) = t.run(&[0x15, 0x10, 0, 0, 24, 0], &p[..10]);
        assert_eq!(sense_of(&o), Some((5, 0x1a, 0)));
        let (o, _) = t.run(&[0x15, 0x11, 0, 0, 24, 0], &caching_select(true));
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)));
    }

    #[test]
    fn swp_makes_the_lu_write_protected() {
        let t = Rig::new();
        let mut p = vec![0u8, 0, 0, 0];
        let (_, cur) = t.ok(&[0x1a, 0x08, 0x0a, 0, 255, 0]);
        p.extend_from_slice(&cur[4..]);
        p[4 + 4] |= 0x08;
        let (o, _) = t.run(&[0x15, 0x10, 0, 0, p.len() as u8, 0], &p);
        assert_eq!(o.status, Status::Good);
        let (o, _) = t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)));
    }
}
