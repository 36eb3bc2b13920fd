//! MAINTENANCE IN reports (SPC-4 6.35, 6.36, 6.27): REPORT SUPPORTED
//! OPERATION CODES, built from the command table, REPORT SUPPORTED TASK
//! MANAGEMENT FUNCTIONS, and REPORT TARGET PORT GROUPS (built by `alua`).

use scsi::opcode as op;

use crate::commands::{has_service_actions, Entry, TABLE};
use crate::dispatch::{truncate_to, Ctx, HandlerResult};
use crate::error::CmdError;
use crate::{Device, Status};

/// Whether `e` is offered on `dev` (UNMAP and SANITIZE BLOCK ERASE only
/// on thin LUs, SANITIZE CRYPTO ERASE only on an encrypted backstore).
fn offered(e: &Entry, dev: &Device) -> bool {
    if e.opcode == op::SANITIZE && e.sa == Some(crate::sanitize::SA_CRYPTO_ERASE) {
        return dev.state.caps.crypto_erase;
    }
    let thin_only = e.opcode == op::UNMAP
        || (e.opcode == op::SANITIZE && e.sa == Some(crate::sanitize::SA_BLOCK_ERASE));
    !thin_only || dev.thin()
}

/// Command timeouts descriptor (SPC-4 6.35.4): no timeouts are reported.
fn timeouts(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x00, 0x0a]);
    out.extend_from_slice(&[0; 10]);
}

pub(crate) fn maintenance_in_rsoc(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let rctd = cdb.b(2) & 0x80 != 0;
    let options = cdb.b(2) & 0x07;
    let req_op = cdb.b(3);
    let req_sa = cdb.be16(4);
    let alloc = cdb.be32(6) as usize;
    let ctdp = if rctd { 0x02 } else { 0 };
    match options {
        0 => {
            data_in.extend_from_slice(&[0; 4]);
            for e in TABLE.iter().filter(|e| offered(e, ctx.dev)) {
                data_in.push(e.opcode);
                data_in.push(0);
                data_in.extend_from_slice(&u16::from(e.sa.unwrap_or(0)).to_be_bytes());
                data_in.push(0);
                data_in.push(ctdp | u8::from(e.sa.is_some()));
                data_in.extend_from_slice(&(e.usage.len() as u16).to_be_bytes());
                if rctd {
                    timeouts(data_in);
                }
            }
            let len = u32::try_from(data_in.len() - 4).unwrap_or(u32::MAX);
            data_in[..4].copy_from_slice(&len.to_be_bytes());
        }
        1..=3 => {
            let with_sa = has_service_actions(req_op);
            match (options, with_sa) {
                (1, true) => return Err(CmdError::cdb_field(3)),
                (2, false) => return Err(CmdError::cdb_field(3)),
                _ => {}
            }
            let found = TABLE
                .iter()
                .filter(|e| offered(e, ctx.dev))
                .find(|e| e.opcode == req_op && (!with_sa || e.sa.map(u16::from) == Some(req_sa)));
            match found {
                Some(e) => {
                    data_in.push(0);
                    data_in.push(if rctd { 0x80 } else { 0 } | 0x03);
                    data_in.extend_from_slice(&(e.usage.len() as u16).to_be_bytes());
                    let at = data_in.len();
                    data_in.extend_from_slice(e.usage);
                    // WRITE SAME's UNMAP bit is only honoured on a thin LU.
                    if matches!(e.opcode, op::WRITE_SAME_10 | op::WRITE_SAME_16) && !ctx.dev.thin()
                    {
                        data_in[at + 1] &= !0x08;
                    }
                    if rctd {
                        timeouts(data_in);
                    }
                }
                None => data_in.extend_from_slice(&[0, 0x01, 0, 0]),
            }
        }
        _ => return Err(CmdError::cdb_field(2)),
    }
    truncate_to(alloc, data_in)
}

pub(crate) fn maintenance_in_rstmf(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let repd = cdb.b(2) & 0x80 != 0;
    let alloc = cdb.be32(6) as usize;
    // ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET.
    let mut d = [0u8; 16];
    d[0] = 0x80 | 0x40 | 0x10 | 0x08 | 0x02;
    let len = if repd {
        d[3] = 0x0c; // additional data length
        16
    } else {
        4
    };
    data_in.extend_from_slice(&d[..len]);
    truncate_to(alloc, data_in)?;
    Ok(Status::Good)
}

/// REPORT TARGET PORT GROUPS: the LU's ALUA groups (see `alua`).
pub(crate) fn maintenance_in_rtpg(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    crate::alua::report_target_port_groups(ctx, data_in)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    fn rsoc(options: u8, rctd: bool, opcode: u8, sa: u16) -> Vec<u8> {
        let s = sa.to_be_bytes();
        vec![
            0xa3,
            0x0c,
            options | if rctd { 0x80 } else { 0 },
            opcode,
            s[0],
            s[1],
            0,
            0,
            0x10,
            0,
            0,
            0,
        ]
    }

    #[test]
    fn all_commands_list_is_consistent() {
        let t = Rig::new();
        for rctd in [false, true] {
            let (_, d) = t.ok(&rsoc(0, rctd, 0, 0));
            let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
            assert_eq!(len, d.len() - 4);
            let step = if rctd { 20 } else { 8 };
            assert_eq!(len % step, 0);
            let mut ops = Vec::new();
            for desc in d[4..].chunks(step) {
                ops.push(desc[0]);
                assert_eq!(desc[5] & 0x02 != 0, rctd, "CTDP");
                if desc[5] & 0x01 == 0 {
                    assert_eq!(&desc[2..4], &[0, 0], "SA zero without SERVACTV");
                }
                if rctd {
                    assert_eq!(&desc[8..10], &[0, 0x0a]);
                }
            }
            assert!(ops.contains(&0x28) && ops.contains(&0xa3));
            assert!(!ops.contains(&0x42), "UNMAP not offered on a thick LU");
        }
    }

    #[test]
    fn one_command_forms() {
        let t = Rig::new();
        let (_, d) = t.ok(&rsoc(1, false, 0x28, 0));
        assert_eq!(d[1] & 0x07, 3);
        assert_eq!(&d[2..4], &[0, 10]);
        assert_eq!(d[4], 0x28);
        t.expect_sense(&rsoc(1, false, 0x9e, 0x10), 5, 0x24, 0);
        let (_, d) = t.ok(&rsoc(2, false, 0x9e, 0x10));
        assert_eq!(d[4], 0x9e);
        assert_eq!(d[5], 0x10);
        t.expect_sense(&rsoc(2, false, 0x28, 0), 5, 0x24, 0);
        let (_, d) = t.ok(&rsoc(1, false, 0xd7, 0));
        assert_eq!(d[1] & 0x07, 1, "not supported");
        let (_, d) = t.ok(&rsoc(1, false, 0x41, 0));
        assert_eq!(d[5] & 0x08, 0, "no UNMAP bit on a thick LU");
        let (_, d) = Rig::thin().ok(&rsoc(1, false, 0x41, 0));
        assert_eq!(d[5] & 0x08, 0x08, "UNMAP bit on a thin LU");
        let (_, d) = t.ok(&rsoc(1, false, 0x9c, 0));
        assert_eq!(
            (d[1] & 0x07, d[4], d[5] & 0x18),
            (3, 0x9c, 0x18),
            "WRITE ATOMIC(16), DPO/FUA"
        );
        let (_, d) = t.ok(&rsoc(2, false, 0x5f, 7));
        assert_eq!((d[1] & 0x07, d[5]), (3, 7), "REGISTER AND MOVE");
        let (_, d) = t.ok(&rsoc(2, false, 0x48, 3));
        assert_eq!(d[1] & 0x07, 1, "no CRYPTO ERASE");
        let (_, d) = t.ok(&rsoc(1, true, 0x28, 0));
        assert_eq!(d[1] & 0x80, 0x80);
        assert_eq!(d.len(), 4 + 10 + 12);
    }

    #[test]
    fn report_target_port_groups() {
        let t = Rig::new();
        let (_, d) = t.ok(&[0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&d[..4], &12u32.to_be_bytes());
        assert_eq!(d[4] & 0x0f, 0, "active/optimized");
        assert_eq!(&d[6..8], &[0, 0], "group 0 as in VPD 0x83");
        assert_eq!(&d[14..16], &1u16.to_be_bytes(), "relative port");
        let (_, d) = t.ok(&[0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(d[4], 0x10);
        assert_eq!(&d[..4], &16u32.to_be_bytes());
        let (_, d) = t.ok(&[0x12, 0, 0, 0, 36, 0]);
        assert_eq!(
            d[5] & 0x30,
            0x30,
            "TPGS: implicit and explicit ALUA (LIO's default)"
        );
    }

    #[test]
    fn task_management_functions() {
        let t = Rig::new();
        let (_, d) = t.ok(&[0xa3, 0x0d, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]);
        assert_eq!(d.len(), 4);
        assert_eq!(d[0], 0xda);
        let (_, d) = t.ok(&[0xa3, 0x0d, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0]);
        assert_eq!(d.len(), 16);
    }
}
