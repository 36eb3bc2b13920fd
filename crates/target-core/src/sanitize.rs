//! SANITIZE (SBC-3 5.23): OVERWRITE fills every block with the initiator's
//! pattern (INVERT alternates it between passes); BLOCK ERASE deallocates
//! every block of a thin LU (reads then return zeroes, GET LBA STATUS says
//! deallocated; WABEREQ=01 in VPD B1); EXIT FAILURE MODE is accepted.
//! Cryptographic erase is not offered: there is no key to destroy.
//! The overwrite runs to completion before the status is returned, IMMED or
//! not (the core answers each command synchronously).

use crate::dispatch::{Ctx, HandlerResult};
use crate::error::CmdError;
use crate::Status;

pub(crate) const SA_OVERWRITE: u8 = 0x01;
pub(crate) const SA_BLOCK_ERASE: u8 = 0x02;
pub(crate) const SA_EXIT_FAILURE_MODE: u8 = 0x1f;

/// Bytes written per backstore call (the pattern buffer is `data_in`).
const CHUNK: usize = 1 << 20;

fn check_reserved(ctx: &Ctx<'_>) -> Result<(), CmdError> {
    let cdb = &ctx.cdb;
    if cdb.b(1) & 0x40 != 0 {
        return Err(CmdError::cdb_bit(1, 6));
    }
    for i in 2..7 {
        if cdb.b(i) != 0 {
            return Err(CmdError::cdb_field(i as u16));
        }
    }
    Ok(())
}

pub(crate) fn sanitize(ctx: &Ctx<'_>, data_in: &mut Vec<u8>) -> HandlerResult {
    check_reserved(ctx)?;
    let plen = usize::from(ctx.cdb.be16(7));
    match ctx.cdb.service_action() {
        SA_EXIT_FAILURE_MODE => {
            if plen != 0 {
                return Err(CmdError::cdb_field(7));
            }
            Ok(Status::Good)
        }
        SA_OVERWRITE => overwrite(ctx, plen, data_in),
        SA_BLOCK_ERASE if ctx.dev.thin() => block_erase(ctx, plen),
        _ => Err(CmdError::cdb_field(1)),
    }
}

fn block_erase(ctx: &Ctx<'_>, plen: usize) -> HandlerResult {
    if plen != 0 {
        return Err(CmdError::cdb_field(7));
    }
    let dev = ctx.dev;
    if dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    let len = dev.num_blocks() * dev.block_size();
    crate::provisioning::deallocate(dev, 0, len)?;
    dev.backstore.flush().map_err(CmdError::WriteError)?;
    Ok(Status::Good)
}

fn overwrite(ctx: &Ctx<'_>, plen: usize, buf: &mut Vec<u8>) -> HandlerResult {
    let dev = ctx.dev;
    let bs = dev.block_size() as usize;
    if plen <= 4 || plen > bs + 4 {
        return Err(CmdError::cdb_field(7));
    }
    if dev.write_protected(ctx.lun) {
        return Err(CmdError::WriteProtected);
    }
    let p = ctx
        .data_out
        .get(..plen)
        .ok_or(CmdError::ParameterListLength)?;
    let invert = p[0] & 0x80 != 0;
    let count = p[0] & 0x1f;
    let pat_len = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if count == 0 {
        return Err(CmdError::param(0));
    }
    if pat_len == 0 || pat_len > bs || pat_len + 4 != plen {
        return Err(CmdError::param(2));
    }
    let pattern = &p[4..4 + pat_len];
    let total = dev.num_blocks() * dev.block_size();
    let chunk = (CHUNK / bs * bs).max(bs);
    for pass in 0..count {
        // Fill one chunk with the pattern repeated from each block start.
        buf.clear();
        while buf.len() < chunk {
            let start = buf.len();
            buf.extend(pattern.iter().cycle().take(bs));
            if invert && pass % 2 == 1 {
                for b in &mut buf[start..] {
                    *b = !*b;
                }
            }
        }
        let mut off = 0u64;
        while off < total {
            let n = ((total - off) as usize).min(chunk);
            dev.backstore
                .write_at(&buf[..n], off)
                .map_err(CmdError::WriteError)?;
            off += n as u64;
        }
    }
    buf.clear();
    dev.backstore.flush().map_err(CmdError::WriteError)?;
    Ok(Status::Good)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::Status;

    fn cdb(sa: u8, plen: u16) -> Vec<u8> {
        let l = plen.to_be_bytes();
        vec![0x48, sa, 0, 0, 0, 0, 0, l[0], l[1], 0]
    }

    #[test]
    fn overwrite_fills_every_block_with_the_pattern() {
        let t = Rig::new();
        let mut p = vec![0x01, 0, 0, 4];
        p.extend_from_slice(&[1, 2, 3, 4]);
        let (o, _) = t.run(&cdb(0x01, 8), &p);
        assert_eq!(o.status, Status::Good);
        let want: Vec<u8> = [1u8, 2, 3, 4].iter().copied().cycle().take(512).collect();
        assert_eq!(t.store.bytes(0, 512), want);
        assert_eq!(t.store.bytes((BLOCKS as usize - 1) * 512, 512), want);
    }

    #[test]
    fn overwrite_parameter_checks() {
        let t = Rig::new();
        for plen in [0u16, 4, 517] {
            let (o, _) = t.run(&cdb(0x01, plen), &vec![0x01u8; 600]);
            assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "plen {plen}");
        }
        let (o, _) = t.run(&cdb(0x01, 8), &[0x00, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((5, 0x26, 0)), "count 0");
        let (o, _) = t.run(&cdb(0x01, 8), &[0x01, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((5, 0x26, 0)), "pattern length 0");
        let mut c = cdb(0x01, 8);
        c[1] |= 0x40;
        let (o, _) = t.run(&c, &[0x01, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "reserved bit");
        let mut c = cdb(0x01, 8);
        c[4] = 1;
        let (o, _) = t.run(&c, &[0x01, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "reserved byte");
    }

    #[test]
    fn other_service_actions() {
        let t = Rig::new();
        t.ok(&cdb(0x1f, 0));
        t.expect_sense(&cdb(0x1f, 8), 5, 0x24, 0);
        t.expect_sense(&cdb(0x02, 0), 5, 0x24, 0);
        t.expect_sense(&cdb(0x03, 0), 5, 0x24, 0);
        let thin = Rig::thin();
        thin.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[7u8; 512]);
        thin.ok(&cdb(0x02, 0));
        assert_eq!(thin.store.bytes(0, 512), vec![0u8; 512]);
        thin.expect_sense(&cdb(0x02, 4), 5, 0x24, 0);
        let ro = Rig::read_only();
        let (o, _) = ro.run(&cdb(0x01, 8), &[0x01, 0, 0, 4, 1, 2, 3, 4]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)));
    }
}
