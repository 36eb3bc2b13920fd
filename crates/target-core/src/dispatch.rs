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
    let Some(lun) = table.find(lun_id) else {
        return answer(no_such_lun(table, cdb, data_in), data_in);
    };
    // Counted per LU for monitoring (`stats`): a mapped LUN's commands only.
    let stats = &lun.device.state.stats;
    let started = stats.begin(cdb.opcode());
    let out = answer(run(table, nexus, lun, cdb, cmd, data_in), data_in);
    started.end(&out, data_in.len(), cmd.data_out.len());
    out
}

#[inline(always)]
fn answer(result: HandlerResult, data_in: &mut Vec<u8>) -> Outcome {
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
    let entry = commands::lookup(&cdb);
    if entry.is_some_and(|e| e.gate == Gate::RequestSense) {
        return misc::request_sense(&lun.device, nexus, &cdb, data_in);
    }
    gated(table, nexus, lun, cdb, cmd.data_out, entry, |ctx, e| {
        (e.handler)(ctx, data_in)
    })
}

/// The checks every command (but REQUEST SENSE) passes before its
/// handler: unit attention, access ([`access_gate`] with the opcode's
/// validation), write protection of the mapping; then `then` with the
/// command's context and table entry. A continuation rather than a
/// returned entry, and inlined, so the per-command fast path compiles as
/// one function (a call returning the large `Result` cost measurable
/// instructions per 4 KiB read under callgrind).
#[inline(always)]
fn gated<'a, R>(
    table: &'a LunTable,
    nexus: &'a Nexus,
    lun: &'a Lun,
    cdb: Cdb,
    data_out: &'a [u8],
    entry: Option<&'static commands::Entry>,
    then: impl FnOnce(&Ctx<'a>, &'static commands::Entry) -> Result<R, CmdError>,
) -> Result<R, CmdError> {
    let dev = &*lun.device;
    let gate = entry.map_or(Gate::Normal, |e| e.gate);
    let policy = match gate {
        Gate::UaExempt | Gate::RequestSense => UaPolicy::Ignore,
        Gate::Normal | Gate::ReservationExempt => UaPolicy::Report,
    };
    if let Some(asc) = dev.state.ua.check(nexus.id, policy) {
        // Every nexus meets a UA (its power-on one) with its first command:
        // the moment persistent reservations learn who it is (`pr`). UAs
        // are rare, so the lock costs nothing on the data path.
        dev.state.res.lock().pr.note_nexus(nexus);
        return Err(CmdError::UnitAttention(asc));
    }
    access_gate(dev, nexus, &cdb, gate, || {
        if entry.is_none() {
            // An implemented opcode with an unknown service action is an
            // invalid field, not an invalid opcode (SPC-4 4.2.5.2).
            if commands::has_service_actions(cdb.opcode()) {
                return Err(CmdError::cdb_field(1));
            }
            return Err(CmdError::InvalidOpcode);
        }
        // NACA (ACA) is not supported (SAM-5 5.9.1.2).
        if cdb.control() & 0x04 != 0 {
            return Err(CmdError::cdb_bit(cdb.len() as u16 - 1, 2));
        }
        Ok(())
    })
    .map_err(|e| unit_attention_first(dev, nexus, policy, e))?;
    let Some(entry) = entry else {
        // Refused by the validation above already.
        return Err(CmdError::InvalidOpcode);
    };
    if lun.write_protect && changes_shared_state(&cdb) {
        return Err(CmdError::WriteProtected);
    }
    let ctx = Ctx {
        table,
        nexus,
        lun,
        dev,
        cdb,
        data_out,
    };
    then(&ctx, entry)
}

/// SAM-5 5.14: a pending unit attention is reported before the command
/// runs, so before a RESERVATION CONFLICT. The check above can miss one
/// raised by the very change that now refuses the command: a PREEMPT
/// made meanwhile (its unit attentions are queued before the change is
/// visible, `pr_shared::deliver`), or learnt by the reload of shared
/// reservations the conflict check made. Looked at again, on this rare
/// path only.
#[cold]
fn unit_attention_first(dev: &Device, nexus: &Nexus, policy: UaPolicy, e: CmdError) -> CmdError {
    if matches!(e, CmdError::ReservationConflict) {
        if let Some(asc) = dev.state.ua.check(nexus.id, policy) {
            return CmdError::UnitAttention(asc);
        }
    }
    e
}

/// For the asynchronous path (`submit`): a READ or WRITE that passed every
/// gate, as the medium access it asks for (`None`: nothing to transfer,
/// GOOD). Answers exactly what [`execute`] would up to the backstore call.
pub(crate) fn prepare_rw(
    table: &LunTable,
    nexus: &Nexus,
    lun: &Lun,
    cdb: Cdb,
    data_out_len: usize,
) -> Result<Option<crate::rw::Access>, CmdError> {
    let entry = commands::lookup(&cdb);
    // The bytes are not looked at before the backstore call, only counted.
    gated(table, nexus, lun, cdb, &[], entry, |ctx, _| {
        crate::rw::prepare(ctx, data_out_len)
    })
}

pub(crate) fn outcome_for(err: &CmdError) -> Outcome {
    outcome_of(err)
}

/// The access checks an LU makes of one command from `nexus`, after the
/// unit attention check: the ALUA access state of the nexus's port (SPC-4
/// 5.15.2, right after the UA check as LIO orders them), then `validate`
/// (the CDB checks a direct command makes at that point), sanitize in
/// progress or failed, reservations (SPC-2 RESERVE and persistent, for
/// [`Gate::Normal`] commands), and a removable medium that is not loaded.
///
/// Every direct command goes through it in [`run`]; EXTENDED COPY sends
/// the READ and WRITE it performs on its source and destination LUs
/// through it too (`xcopy`), so a copy reaches an LU only where the same
/// nexus's own READ or WRITE would. Costs a few atomic loads while nothing
/// is reserved, restricted, sanitizing or ejected.
pub(crate) fn access_gate(
    dev: &Device,
    nexus: &Nexus,
    cdb: &Cdb,
    gate: Gate,
    validate: impl FnOnce() -> Result<(), CmdError>,
) -> Result<(), CmdError> {
    dev.state.alua.gate(nexus, cdb)?;
    validate()?;
    dev.state.sanitize.gate(cdb)?;
    if gate == Gate::Normal && dev.state.res.conflicts(dev, nexus, cdb) {
        return Err(CmdError::ReservationConflict);
    }
    if !dev.state.medium.loaded() && medium::needs_medium(cdb) {
        return Err(CmdError::MediumNotPresent);
    }
    Ok(())
}

/// Whether `cdb` changes LU state that every other initiator sees, other
/// than the medium's blocks (whose write commands check write protection
/// themselves): mode parameters (MODE SELECT with a parameter list),
/// loading or ejecting the medium (START STOP UNIT with LOEJ), preventing
/// its removal, reservations (SPC-2 RESERVE, PERSISTENT RESERVE OUT) and
/// ALUA states (SET TARGET PORT GROUPS). A write-protected mapping (ACL
/// `write_protect`, `demo_mode_write_protect`) refuses them with DATA
/// PROTECT, WRITE PROTECTED, as LIO refuses every command with Data-Out
/// through a read-only LUN (`transport_lookup_cmd_lun`); START STOP UNIT
/// and PREVENT, which carry no data, are refused for the same reason: an
/// initiator allowed only to read must not eject or pin the medium under
/// the others. ALLOW, RELEASE, power conditions and an empty MODE SELECT
/// change nothing and stay allowed.
fn changes_shared_state(cdb: &Cdb) -> bool {
    match cdb.opcode() {
        op::MODE_SELECT_6 => cdb.b(4) != 0,
        op::MODE_SELECT_10 => cdb.be16(7) != 0,
        op::START_STOP_UNIT => cdb.b(4) & 0x02 != 0 && cdb.b(4) >> 4 == 0,
        op::PREVENT_ALLOW_MEDIUM_REMOVAL => cdb.b(4) & 0x03 != 0,
        op::RESERVE_6 | op::RESERVE_10 | op::PERSISTENT_RESERVE_OUT => true,
        op::MAINTENANCE_OUT => cdb.service_action() == crate::alua::MO_SET_TARGET_PORT_GROUPS,
        _ => false,
    }
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

    /// The rig's device seen through a write-protected mapping (LUN 0 of
    /// another table, as an ACL with `write_protect=1` maps it).
    fn read_only_view(t: &Rig) -> crate::LunTable {
        crate::LunTable {
            luns: vec![crate::Lun {
                id: 0,
                device: t.dev.clone(),
                write_protect: true,
            }],
        }
    }

    fn run_ro(
        table: &crate::LunTable,
        n: &crate::Nexus,
        cdb: &[u8],
        data_out: &[u8],
    ) -> crate::Outcome {
        let cmd = crate::Command {
            cdb,
            data_out,
            expected_len: data_out.len().max(255) as u32,
            attr: crate::TaskAttr::Simple,
        };
        table.execute(n, 0, &cmd, &mut Vec::new())
    }

    const TUR: [u8; 6] = [0; 6];

    /// MODE SELECT through a write-protected mapping changes nothing for
    /// anybody (WCE, SWP): DATA PROTECT, WRITE PROTECTED, as LIO refuses
    /// every Data-Out command through a read-only LUN. An empty parameter
    /// list and MODE SENSE stay allowed.
    #[test]
    fn write_protected_mapping_cannot_change_mode_parameters() {
        let t = Rig::new();
        let ro = read_only_view(&t);
        let a = t.nexus(2);
        let o = run_ro(&ro, &a, &TUR, &[]);
        assert_eq!(sense_of(&o), Some((6, 0x29, 0)));
        // Caching page with WCE=0, control page with SWP=1.
        let mut caching = vec![0u8, 0, 0, 0, 0x08, 18];
        caching.resize(24, 0);
        let o = run_ro(&ro, &a, &[0x15, 0x10, 0, 0, 24, 0], &caching);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "WCE");
        let (_, cur) = t.ok(&[0x1a, 0x08, 0x0a, 0, 255, 0]);
        let mut control = vec![0u8, 0, 0, 0];
        control.extend_from_slice(&cur[4..]);
        control[4 + 4] |= 0x08;
        let cdb = [0x15, 0x10, 0, 0, control.len() as u8, 0];
        let o = run_ro(&ro, &a, &cdb, &control);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "SWP");
        let cdb10 = [0x55, 0x10, 0, 0, 0, 0, 0, 0, 24, 0];
        let mut caching10 = vec![0u8; 8];
        caching10.extend_from_slice(&caching[4..]);
        caching10.resize(28, 0);
        let o = run_ro(&ro, &a, &cdb10, &caching10);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "MODE SELECT(10)");
        // Nothing changed for the writable nexus: no UA, WCE on, writable.
        let (_, d) = t.ok(&[0x1a, 0x08, 0x08, 0, 255, 0]);
        assert_eq!(d[4 + 2] & 0x04, 0x04, "WCE still set");
        t.ok(&TUR);
        let (o, _) = t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512]);
        assert_eq!(o.status, Status::Good, "SWP not set");
        let o = run_ro(&ro, &a, &[0x15, 0x10, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::Good, "empty MODE SELECT");
        let o = run_ro(&ro, &a, &[0x1a, 0x08, 0x3f, 0, 255, 0], &[]);
        assert_eq!(o.status, Status::Good, "MODE SENSE");
        // The writable mapping still may.
        let (o, _) = t.run(&[0x15, 0x10, 0, 0, 24, 0], &caching);
        assert_eq!(o.status, Status::Good);
    }

    /// Through a write-protected mapping the medium can be neither ejected,
    /// loaded nor pinned (PREVENT); ALLOW and power conditions still work.
    #[test]
    fn write_protected_mapping_cannot_eject_load_or_prevent() {
        const EJECT: [u8; 6] = [0x1b, 0, 0, 0, 0x02, 0];
        const LOAD: [u8; 6] = [0x1b, 0, 0, 0, 0x03, 0];
        const PREVENT: [u8; 6] = [0x1e, 0, 0, 0, 0x01, 0];
        const ALLOW: [u8; 6] = [0x1e, 0, 0, 0, 0x00, 0];
        let t = Rig::new();
        t.dev.set_removable(true);
        let ro = read_only_view(&t);
        let a = t.nexus(2);
        run_ro(&ro, &a, &TUR, &[]);
        let o = run_ro(&ro, &a, &EJECT, &[]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "eject");
        t.ok(&TUR);
        let o = run_ro(&ro, &a, &PREVENT, &[]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "prevent");
        assert_eq!(run_ro(&ro, &a, &ALLOW, &[]).status, Status::Good);
        let start = [0x1b, 0, 0, 0, 0x01, 0];
        assert_eq!(run_ro(&ro, &a, &start, &[]).status, Status::Good);
        // The writable nexus is not pinned and may eject; loading back
        // through the read-only mapping is refused too.
        t.ok(&EJECT);
        let o = run_ro(&ro, &a, &LOAD, &[]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "load");
        t.expect_sense(&TUR, 2, 0x3a, 0);
        t.ok(&LOAD);
    }

    /// Reservations and ALUA states bind every initiator: a write-protected
    /// mapping can take neither (RESERVE, PERSISTENT RESERVE OUT, SET
    /// TARGET PORT GROUPS); RELEASE and PERSISTENT RESERVE IN stay allowed.
    #[test]
    fn write_protected_mapping_cannot_reserve_or_set_port_groups() {
        let t = Rig::new();
        let ro = read_only_view(&t);
        let a = t.nexus(2);
        run_ro(&ro, &a, &TUR, &[]);
        let o = run_ro(&ro, &a, &[0x16, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "RESERVE(6)");
        let o = run_ro(&ro, &a, &[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "RESERVE(10)");
        let mut reg = vec![0u8; 24];
        reg[8..16].copy_from_slice(&0xaau64.to_be_bytes());
        let o = run_ro(&ro, &a, &[0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0], &reg);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "PR OUT REGISTER");
        let stpg = [0xa4, 0x0a, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0];
        let o = run_ro(&ro, &a, &stpg, &[0, 0, 0, 0, 0x02, 0, 0, 0]);
        assert_eq!(sense_of(&o), Some((7, 0x27, 0)), "STPG");
        let o = run_ro(&ro, &a, &[0x17, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::Good, "RELEASE");
        let o = run_ro(&ro, &a, &[0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
        assert_eq!(o.status, Status::Good, "PR IN");
        // Nothing reserved, nothing in standby: the writable nexus writes.
        let (o, _) = t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512]);
        assert_eq!(o.status, Status::Good);
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
