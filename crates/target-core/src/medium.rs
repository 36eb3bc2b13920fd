//! Removable medium emulation (SBC-3 5.25 START STOP UNIT, SPC-4 6.13
//! PREVENT ALLOW MEDIUM REMOVAL): a fixed LU ignores power conditions and
//! refuses eject; a removable one (`Device::set_removable`) can be ejected
//! and loaded, and while unloaded every medium access fails with NOT READY,
//! MEDIUM NOT PRESENT. Prevention is held per I_T nexus (SPC-4 6.13: any
//! nexus preventing blocks removal; nexus loss and resets drop it).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use scsi::cdb::Cdb;
use scsi::opcode as op;

use crate::dispatch::{Ctx, HandlerResult};
use crate::error::CmdError;
use crate::Status;

pub(crate) struct MediumState {
    removable: AtomicBool,
    loaded: AtomicBool,
    /// Nexuses with PREVENT set.
    preventers: Mutex<Vec<u64>>,
}

impl Default for MediumState {
    fn default() -> Self {
        MediumState {
            removable: AtomicBool::new(false),
            loaded: AtomicBool::new(true),
            preventers: Mutex::new(Vec::new()),
        }
    }
}

impl MediumState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u64>> {
        self.preventers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn removable(&self) -> bool {
        self.removable.load(Ordering::Relaxed)
    }

    pub(crate) fn set_removable(&self, on: bool) {
        self.removable.store(on, Ordering::Relaxed);
        if !on {
            self.loaded.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Relaxed)
    }

    fn prevented(&self) -> bool {
        !self.lock().is_empty()
    }

    /// Drop one nexus's prevention (I_T nexus loss).
    pub(crate) fn allow(&self, nexus: u64) {
        self.lock().retain(|&n| n != nexus);
    }

    /// Drop every prevention (LOGICAL UNIT RESET, target reset).
    pub(crate) fn allow_all(&self) {
        self.lock().clear();
    }
}

/// Whether a command touches the medium (fails while it is ejected).
pub(crate) fn needs_medium(cdb: &Cdb) -> bool {
    !matches!(
        cdb.opcode(),
        op::INQUIRY
            | op::REPORT_LUNS
            | op::REQUEST_SENSE
            | op::START_STOP_UNIT
            | op::PREVENT_ALLOW_MEDIUM_REMOVAL
            | op::MODE_SENSE_6
            | op::MODE_SENSE_10
            | op::MODE_SELECT_6
            | op::MODE_SELECT_10
            | op::PERSISTENT_RESERVE_IN
            | op::PERSISTENT_RESERVE_OUT
            | op::RESERVE_6
            | op::RELEASE_6
            | op::RESERVE_10
            | op::RELEASE_10
            | op::MAINTENANCE_IN
            | op::LOG_SENSE
    )
}

pub(crate) fn start_stop_unit(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let cdb = &ctx.cdb;
    let loej = cdb.b(4) & 0x02 != 0;
    let start = cdb.b(4) & 0x01 != 0;
    let power_condition = cdb.b(4) >> 4;
    // Power conditions and START without LOEJ: nothing to spin.
    if !loej || power_condition != 0 {
        return Ok(Status::Good);
    }
    let m = &ctx.dev.state.medium;
    if !m.removable() {
        return Err(CmdError::cdb_bit(4, 1));
    }
    if m.prevented() {
        return Err(CmdError::MediumRemovalPrevented);
    }
    m.loaded.store(start, Ordering::Relaxed);
    Ok(Status::Good)
}

pub(crate) fn prevent_allow(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    let prevent = ctx.cdb.b(4) & 0x03;
    if prevent > 1 {
        // Medium changer prevention does not apply to a disk.
        return Err(CmdError::cdb_field(4));
    }
    let mut p = ctx.dev.state.medium.lock();
    let id = ctx.nexus.id;
    p.retain(|&n| n != id);
    if prevent == 1 {
        p.push(id);
    }
    Ok(Status::Good)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;

    const EJECT: [u8; 6] = [0x1b, 0, 0, 0, 0x02, 0];
    const LOAD: [u8; 6] = [0x1b, 0, 0, 0, 0x03, 0];
    const PREVENT: [u8; 6] = [0x1e, 0, 0, 0, 0x01, 0];
    const ALLOW: [u8; 6] = [0x1e, 0, 0, 0, 0x00, 0];
    const TUR: [u8; 6] = [0, 0, 0, 0, 0, 0];

    #[test]
    fn fixed_lu_refuses_eject_but_accepts_power_and_prevent() {
        let t = Rig::new();
        t.ok(&[0x1b, 0, 0, 0, 0x01, 0]);
        t.ok(&PREVENT);
        t.expect_sense(&EJECT, 5, 0x24, 0);
        t.ok(&ALLOW);
        let (_, d) = t.ok(&[0x12, 0, 0, 0, 36, 0]);
        assert_eq!(d[1] & 0x80, 0);
    }

    #[test]
    fn removable_eject_load_and_prevention() {
        let t = Rig::new();
        t.dev.set_removable(true);
        let (_, d) = t.ok(&[0x12, 0, 0, 0, 36, 0]);
        assert_eq!(d[1] & 0x80, 0x80, "RMB");
        t.ok(&PREVENT);
        t.expect_sense(&EJECT, 5, 0x53, 2);
        let other = t.nexus(2);
        t.run_as(&other, &TUR, &[]);
        let (o, _) = t.run_as(&other, &EJECT, &[]);
        assert_eq!(
            sense_of(&o),
            Some((5, 0x53, 2)),
            "prevention seen by other nexuses"
        );
        t.ok(&ALLOW);
        t.ok(&EJECT);
        t.expect_sense(&TUR, 2, 0x3a, 0);
        t.expect_sense(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 2, 0x3a, 0);
        t.ok(&[0x12, 0, 0, 0, 36, 0]);
        t.ok(&LOAD);
        t.ok(&TUR);
    }

    #[test]
    fn nexus_loss_and_reset_drop_prevention() {
        let t = Rig::new();
        t.dev.set_removable(true);
        t.ok(&PREVENT);
        t.table.nexus_gone(&t.me);
        t.run(&TUR, &[]);
        t.ok(&EJECT);
        t.ok(&LOAD);
        t.ok(&PREVENT);
        t.table
            .task_management(&t.me, crate::TmfFunction::LogicalUnitReset, 0);
        t.run(&TUR, &[]);
        t.ok(&EJECT);
    }
}
