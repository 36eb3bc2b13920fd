//! Small SPC/SBC commands: TEST UNIT READY, REPORT LUNS, READ CAPACITY
//! (10/16), REQUEST SENSE, START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL,
//! READ DEFECT DATA.

use scsi::cdb::Cdb;
use scsi::{lun, Sense, SenseKey};

use crate::dispatch::{truncate_to, Ctx, HandlerResult};
use crate::error::CmdError;
use crate::ua::UaPolicy;
use crate::{Device, LunTable, Nexus, Status};

pub(crate) fn test_unit_ready(_ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    Ok(Status::Good)
}

pub(crate) fn report_luns(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    report_luns_for(ctx.table, &ctx.cdb, data_in)
}

/// REPORT LUNS (SPC-4 6.33); also answered for unmapped LUNs.
pub(crate) fn report_luns_for(table: &LunTable, cdb: &Cdb, data_in: &mut Vec<u8>) -> HandlerResult {
    let alloc = cdb.be32(6) as usize;
    if alloc < 16 {
        return Err(CmdError::cdb_field(6));
    }
    let include_luns = match cdb.b(2) {
        0x00 | 0x02 => true,
        // Well known LUs only: rtarget has none (REPORT LUNS works on any LUN).
        0x01 => false,
        _ => return Err(CmdError::cdb_field(2)),
    };
    data_in.clear();
    data_in.extend_from_slice(&[0u8; 8]);
    if include_luns {
        let mut ids: Vec<u64> = table.luns.iter().map(|l| l.id).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            data_in.extend_from_slice(&lun::encode(id));
        }
    }
    let list_len = u32::try_from(data_in.len() - 8).unwrap_or(u32::MAX);
    data_in[..4].copy_from_slice(&list_len.to_be_bytes());
    truncate_to(alloc, data_in)
}

pub(crate) fn read_capacity10(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    // PMI (byte 8 bit 0) is obsolete; a nonzero LBA without it is invalid.
    if cdb.b(8) & 0x01 == 0 && cdb.be32(2) != 0 {
        return Err(CmdError::cdb_field(2));
    }
    let last = ctx.dev.num_blocks().saturating_sub(1);
    let last = u32::try_from(last).unwrap_or(u32::MAX);
    data_in.extend_from_slice(&last.to_be_bytes());
    data_in.extend_from_slice(&ctx.dev.options.block_size.to_be_bytes());
    Ok(Status::Good)
}

pub(crate) fn read_capacity16(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    if cdb.b(14) & 0x01 == 0 && cdb.be64(2) != 0 {
        return Err(CmdError::cdb_field(2));
    }
    let alloc = cdb.be32(10) as usize;
    let dev = ctx.dev;
    let mut d = [0u8; 32];
    d[..8].copy_from_slice(&dev.num_blocks().saturating_sub(1).to_be_bytes());
    d[8..12].copy_from_slice(&dev.options.block_size.to_be_bytes());
    d[13] = dev.lbppb_exponent();
    if dev.thin() {
        d[14] = 0x80 | 0x40; // LBPME, LBPRZ
    }
    data_in.extend_from_slice(&d);
    truncate_to(alloc, data_in)
}

/// REQUEST SENSE (SPC-4 6.39): the oldest pending unit attention for this
/// nexus (which it clears), else NO SENSE.
pub(crate) fn request_sense(
    dev: &Device,
    nexus: &Nexus,
    cdb: &Cdb,
    data_in: &mut Vec<u8>,
) -> HandlerResult {
    if cdb.b(1) & 0x01 != 0 {
        // Descriptor format sense is not implemented.
        return Err(CmdError::cdb_bit(1, 0));
    }
    let sense = match dev.state.ua.check(nexus.id, UaPolicy::Report) {
        Some(asc) => Sense::new(SenseKey::UnitAttention, asc),
        None => dev.state.sanitize.request_sense().unwrap_or(Sense::new(
            SenseKey::NoSense,
            scsi::Asc::NO_ADDITIONAL_SENSE,
        )),
    };
    put_sense(cdb, sense, data_in)
}

/// Return `sense` as REQUEST SENSE parameter data.
pub(crate) fn put_sense(cdb: &Cdb, sense: Sense, data_in: &mut Vec<u8>) -> HandlerResult {
    if cdb.b(1) & 0x01 != 0 {
        return Err(CmdError::cdb_bit(1, 0));
    }
    data_in.clear();
    data_in.extend_from_slice(&sense.to_fixed());
    truncate_to(usize::from(cdb.b(4)), data_in)
}

/// REQUEST SENSE is handled before the table's handler runs (it needs the
/// UA queue untouched); this entry only exists for the table.
pub(crate) fn unreachable_request_sense(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    request_sense(ctx.dev, ctx.nexus, &ctx.cdb, data_in)
}

/// READ DEFECT DATA 10/12 (SBC-3 5.11/5.12): a virtual medium has no
/// defects, so the lists are empty in whatever format was asked for.
pub(crate) fn read_defect_data(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    if cdb.opcode() == scsi::opcode::READ_DEFECT_DATA_10 {
        data_in.extend_from_slice(&[0, cdb.b(2) & 0x1f, 0, 0]);
        truncate_to(usize::from(cdb.be16(7)), data_in)
    } else {
        data_in.extend_from_slice(&[0, cdb.b(1) & 0x1f, 0, 0, 0, 0, 0, 0]);
        truncate_to(cdb.be32(6) as usize, data_in)
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::Status;

    #[test]
    fn tur_reports_power_on_first() {
        let t = Rig::fresh();
        t.expect_sense(&[0, 0, 0, 0, 0, 0], 6, 0x29, 0);
        let (st, _) = t.ok(&[0, 0, 0, 0, 0, 0]);
        assert_eq!(st, Status::Good);
    }

    #[test]
    fn inquiry_and_report_luns_do_not_consume_ua() {
        let t = Rig::fresh();
        t.ok(&[0x12, 0, 0, 0, 36, 0]);
        t.ok(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        t.expect_sense(&[0, 0, 0, 0, 0, 0], 6, 0x29, 0);
    }

    #[test]
    fn request_sense_returns_and_clears_ua() {
        let t = Rig::fresh();
        let (st, d) = t.ok(&[0x03, 0, 0, 0, 18, 0]);
        assert_eq!(st, Status::Good);
        assert_eq!((d[2], d[12], d[13]), (6, 0x29, 0));
        let (_, d) = t.ok(&[0x03, 0, 0, 0, 18, 0]);
        assert_eq!((d[2], d[12], d[13]), (0, 0, 0));
        t.expect_sense(&[0x03, 1, 0, 0, 18, 0], 5, 0x24, 0);
    }

    #[test]
    fn report_luns_lists_sorted_and_checks_fields() {
        let t = Rig::with_luns(&[3, 0, 300]);
        let (_, d) = t.ok(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&d[..4], &24u32.to_be_bytes());
        assert_eq!(&d[8..16], &[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&d[16..24], &[0, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&d[24..32], &[0x41, 0x2c, 0, 0, 0, 0, 0, 0]);
        let (_, d) = t.ok(&[0xa0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(d, vec![0u8; 8]);
        let (_, d) = t.ok(&[0xa0, 0, 2, 0, 0, 0, 0, 0, 0, 16, 0, 0]);
        assert_eq!(d.len(), 16, "truncated to allocation length");
        t.expect_sense(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 0, 0], 5, 0x24, 0);
        t.expect_sense(&[0xa0, 0, 0x13, 0, 0, 0, 0, 0, 1, 0, 0, 0], 5, 0x24, 0);
    }

    #[test]
    fn report_luns_and_request_sense_on_unmapped_lun() {
        let t = Rig::new();
        let (o, d) = t.run_lun(9, &[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::Good);
        assert_eq!(&d[..4], &8u32.to_be_bytes());
        let (o, d) = t.run_lun(9, &[0x03, 0, 0, 0, 18, 0], &[]);
        assert_eq!(o.status, Status::Good);
        assert_eq!((d[2], d[12]), (5, 0x25));
        let (o, _) = t.run_lun(9, &[0x00, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((5, 0x25, 0)));
    }

    #[test]
    fn read_capacity() {
        let t = Rig::new();
        let (_, d) = t.ok(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&d[..4], &(BLOCKS as u32 - 1).to_be_bytes());
        assert_eq!(&d[4..8], &512u32.to_be_bytes());
        t.expect_sense(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0], 5, 0x24, 0);
        let (_, d) = t.ok(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);
        assert_eq!(d.len(), 32);
        assert_eq!(&d[..8], &(BLOCKS - 1).to_be_bytes());
        assert_eq!(d[14], 0);
        assert_eq!(d[13], 3, "4 KiB physical blocks of 512-byte logical blocks");
        let (_, d) = t.ok(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0]);
        assert_eq!(d.len(), 12);
        let thin = Rig::thin();
        let (_, d) = thin.ok(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]);
        assert_eq!(d[14], 0xc0);
    }

    #[test]
    fn read_capacity10_saturates_for_huge_lus() {
        let t = Rig::sized(((1u64 << 32) + 10) * 512);
        let (_, d) = t.ok(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&d[..4], &[0xff; 4]);
    }

    #[test]
    fn unknown_opcode() {
        let t = Rig::new();
        t.expect_sense(&[0xd5, 0, 0, 0, 0, 0], 5, 0x20, 0);
        t.expect_sense(
            &[0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            5,
            0x24,
            0,
        );
    }

    #[test]
    fn read_defect_data_is_empty() {
        let t = Rig::new();
        let (_, d) = t.ok(&[0x37, 0, 0x18 | 5, 0, 0, 0, 0, 0, 255, 0]);
        assert_eq!(d, vec![0, 0x1d, 0, 0]);
        let (_, d) = t.ok(&[0xb7, 0x0c, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(d, vec![0, 0x0c, 0, 0, 0, 0, 0, 0]);
    }
}
