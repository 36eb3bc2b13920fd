//! Command dispatch: LUN lookup, the unit attention and reservation gates,
//! then the handler from the command table. This is the per-command fast
//! path: no allocation, no lock unless a UA or a reservation is pending.

use scsi::cdb::Cdb;
use scsi::{opcode as op, Asc, Sense, SenseKey};

use crate::commands::{self, Gate};
use crate::error::CmdError;
use crate::ua::UaPolicy;
use crate::{inquiry, medium, misc, Command, Device, Lun, LunTable, Nexus, Outcome, Status};

/// Everything a handler may look at for one command.
pub(crate) struct Ctx<'a> {
    pub table: &'a LunTable,
    pub nexus: &'a Nexus,
    pub lun: &'a Lun,
    pub dev: &'a Device,
    pub cdb: Cdb,
    pub data_out: &'a [u8],
}

pub(crate) type HandlerResult = Result<Status, CmdError>;

fn outcome_of(err: &CmdError) -> Outcome {
    let (status, sense) = err.answer();
    if let CmdError::ReadError(e) | CmdError::WriteError(e) = err {
        tracing::warn!("backstore I/O failed: {e}");
    }
    Outcome {
        status,
        sense: sense.map(|s| s.to_fixed().to_vec()),
    }
}

pub(crate) const GOOD: Outcome = Outcome {
    status: Status::Good,
    sense: None,
};

pub(crate) fn execute(
    table: &LunTable,
    nexus: &Nexus,
    lun_id: u64,
    cmd: &Command<'_>,
    data_in: &mut Vec<u8>,
) -> Outcome {
    let cdb = match Cdb::new(cmd.cdb) {
        Ok(c) => c,
        Err(_) => {
            data_in.clear();
            return outcome_of(&CmdError::InvalidOpcode);
        }
    };
    // READs fill data_in themselves (reusing its bytes, no memset); every
    // other command starts from an empty buffer.
    if !matches!(
        cdb.opcode(),
        op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16
    ) {
        data_in.clear();
    }
    let result = match table.find(lun_id) {
        Some(lun) => run(table, nexus, lun, cdb, cmd, data_in),
        None => no_such_lun(table, cdb, data_in),
    };
    match result {
        Ok(Status::Good) => GOOD,
        Ok(status) => Outcome {
            status,
            sense: None,
        },
        Err(e) => {
            data_in.clear();
            outcome_of(&e)
        }
    }
}

fn run(
    table: &LunTable,
    nexus: &Nexus,
    lun: &Lun,
    cdb: Cdb,
    cmd: &Command<'_>,
    data_in: &mut Vec<u8>,
) -> HandlerResult {
    let dev = &*lun.device;
    let entry = commands::lookup(&cdb);
    let gate = entry.map_or(Gate::Normal, |e| e.gate);
    let policy = match gate {
        Gate::UaExempt | Gate::RequestSense => UaPolicy::Ignore,
        Gate::Normal | Gate::ReservationExempt => UaPolicy::Report,
    };
    if gate == Gate::RequestSense {
        return misc::request_sense(dev, nexus, &cdb, data_in);
    }
    if let Some(asc) = dev.state.ua.check(nexus.id, policy) {
        // Every nexus meets a UA (its power-on one) with its first command:
        // the moment persistent reservations learn who it is (`pr`). UAs
        // are rare, so the lock costs nothing on the data path.
        dev.state.res.lock().pr.note_nexus(nexus);
        return Err(CmdError::UnitAttention(asc));
    }
    // ALUA access state of the port (SPC-4 5.15.2): after the UA check,
    // as LIO orders them; one atomic load while every group is optimized.
    dev.state.alua.gate(nexus, &cdb)?;
    let Some(entry) = entry else {
        // An implemented opcode with an unknown service action is an invalid
        // field, not an invalid opcode (SPC-4 4.2.5.2).
        if commands::has_service_actions(cdb.opcode()) {
            return Err(CmdError::cdb_field(1));
        }
        return Err(CmdError::InvalidOpcode);
    };
    dev.state.sanitize.gate(&cdb)?;
    // NACA (ACA) is not supported (SAM-5 5.9.1.2).
    if cdb.control() & 0x04 != 0 {
        return Err(CmdError::cdb_bit(cdb.len() as u16 - 1, 2));
    }
    if gate == Gate::Normal && dev.state.res.conflicts(dev, nexus, &cdb) {
        return Err(CmdError::ReservationConflict);
    }
    if !dev.state.medium.loaded() && medium::needs_medium(&cdb) {
        return Err(CmdError::MediumNotPresent);
    }
    let ctx = Ctx {
        table,
        nexus,
        lun,
        dev,
        cdb,
        data_out: cmd.data_out,
    };
    (entry.handler)(&ctx, data_in)
}

/// SPC-4 answers for a LUN that is not mapped (SPC-4 7.6.2 / SAM-5 5.8).
fn no_such_lun(table: &LunTable, cdb: Cdb, data_in: &mut Vec<u8>) -> HandlerResult {
    match cdb.opcode() {
        op::INQUIRY => inquiry::unmapped_lun(&cdb, data_in),
        op::REPORT_LUNS => misc::report_luns_for(table, &cdb, data_in),
        op::REQUEST_SENSE => {
            let sense = Sense::new(SenseKey::IllegalRequest, Asc::LOGICAL_UNIT_NOT_SUPPORTED);
            misc::put_sense(&cdb, sense, data_in)
        }
        _ => Err(CmdError::LunNotSupported),
    }
}

/// Truncate what a handler built in `data_in` to the allocation length.
pub(crate) fn truncate_to(alloc_len: usize, data_in: &mut Vec<u8>) -> HandlerResult {
    data_in.truncate(alloc_len);
    Ok(Status::Good)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::Status;

    /// xorshift64*: deterministic bytes for the robustness sweep.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    /// Garbage CDBs and parameter data for every opcode never panic and
    /// always answer GOOD or CHECK CONDITION-class statuses with sense.
    #[test]
    fn random_cdbs_never_panic() {
        let t = Rig::thin();
        t.dev.set_removable(true);
        let other = t.nexus(9);
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for i in 0..20_000u32 {
            let op = (i % 256) as u8;
            let len = (rng.next() % 20) as usize;
            let mut cdb = rng.bytes(len.max(1));
            cdb[0] = op;
            // Keep transfer sizes small so the sweep stays fast.
            if cdb.len() > 8 && rng.next().is_multiple_of(2) {
                for b in &mut cdb[2..] {
                    *b &= 0x03;
                }
            }
            let dlen = (rng.next() % 700) as usize;
            let data = rng.bytes(dlen);
            let nexus = if i % 3 == 0 { &other } else { &t.me };
            let (o, _) = t.run_as(nexus, &cdb, &data);
            match o.status {
                Status::Good | Status::ConditionMet | Status::ReservationConflict => {}
                Status::CheckCondition => assert!(o.sense.is_some(), "{cdb:02x?}"),
                s => panic!("unexpected status {s:?} for {cdb:02x?}"),
            }
        }
        // The LU still works afterwards.
        t.run(&[0x1e, 0, 0, 0, 0, 0], &[]);
        t.run(&[0x1b, 0, 0, 0, 0x03, 0], &[]);
        let (o, _) = t.run(&[0x00, 0, 0, 0, 0, 0], &[]);
        assert!(matches!(
            o.status,
            Status::Good | Status::CheckCondition | Status::ReservationConflict
        ));
    }

    #[test]
    fn empty_and_short_cdbs() {
        let t = Rig::new();
        let (o, _) = t.run(&[], &[]);
        assert_eq!(sense_of(&o), Some((5, 0x20, 0)));
        let (o, _) = t.run(&[0x28, 0, 0], &[]);
        assert_eq!(o.status, Status::CheckCondition);
        let (o, _) = t.run(&[0x00, 0, 0, 0, 0, 0x04], &[]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "NACA unsupported");
    }
}
