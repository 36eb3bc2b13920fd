//! Reservations: SPC-2 RESERVE/RELEASE (6 and 10) and the access check
//! both they and persistent reservations ([`crate::pr`]) impose on other
//! nexuses. The per-command check costs one atomic load while nothing is
//! reserved.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use backstore::SharedState;

use scsi::cdb::Cdb;
use scsi::opcode as op;

use crate::dispatch::{Ctx, HandlerResult};
use crate::error::CmdError;
use crate::pr::PrState;
use crate::{Device, Nexus, Status};

#[derive(Default)]
pub(crate) struct Inner {
    /// SPC-2 reservation holder.
    pub holder: Option<Spc2>,
    pub pr: PrState,
    /// The stored version this state is a copy of, with a shared store.
    pub shared: crate::pr_shared::Cache,
}

/// The I_T nexus holding an SPC-2 reservation: its id when it reached this
/// process, its names (how other targets sharing the reservation tell it),
/// and the holder id of the target it reached (0 without a shared store).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Spc2 {
    pub nexus: Option<u64>,
    pub initiator: String,
    pub target: String,
    pub gateway: u64,
}

impl Spc2 {
    fn is(&self, n: &Nexus) -> bool {
        match self.nexus {
            Some(id) => id == n.id,
            None => self.initiator == n.initiator_port && self.target == n.target_port,
        }
    }
}

/// How a command is treated under a persistent reservation (SPC-4 5.9.1,
/// table 67, collapsed to the three behaviours it actually has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Allowed whatever the reservation (INQUIRY, TUR, READ CAPACITY, ...).
    Always,
    /// Conflicts only under the exclusive access types.
    Read,
    /// Conflicts under every type for nexuses without access.
    Write,
}

pub(crate) fn classify(cdb: &Cdb) -> Access {
    match cdb.opcode() {
        op::INQUIRY
        | op::REPORT_LUNS
        | op::REQUEST_SENSE
        | op::TEST_UNIT_READY
        | op::READ_CAPACITY_10
        | op::PERSISTENT_RESERVE_IN
        | op::PERSISTENT_RESERVE_OUT
        | op::MAINTENANCE_IN
        | op::LOG_SENSE => Access::Always,
        op::SERVICE_ACTION_IN_16 if cdb.service_action() == op::SAI_READ_CAPACITY_16 => {
            Access::Always
        }
        op::READ_6
        | op::READ_10
        | op::READ_12
        | op::READ_16
        | op::VERIFY_10
        | op::VERIFY_12
        | op::VERIFY_16
        | op::MODE_SENSE_6
        | op::MODE_SENSE_10
        | op::PRE_FETCH_10
        | op::PRE_FETCH_16
        | op::READ_DEFECT_DATA_10
        | op::READ_DEFECT_DATA_12
        | op::SERVICE_ACTION_IN_16 => Access::Read,
        _ => Access::Write,
    }
}

#[derive(Default)]
pub(crate) struct Reservations {
    /// Something is reserved: take the slow path.
    active: AtomicBool,
    inner: Mutex<Inner>,
    /// Where the reservations live when other targets share the medium
    /// ([`crate::pr_shared`]).
    pub shared: OnceLock<Arc<dyn SharedState>>,
    /// When the last reload from `shared` started ([`crate::pr_shared::now_ms`];
    /// 0: never): the cached copy is good for the store's `cache_for` after it.
    pub synced: AtomicU64,
}

impl Reservations {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refresh the fast-path flag; call with the lock held after a change.
    pub(crate) fn publish(&self, inner: &Inner) {
        let active = inner.holder.is_some() || inner.pr.reservation.is_some();
        self.active.store(active, Ordering::Release);
    }

    /// Whether `cdb` from `nexus` conflicts with a reservation held by
    /// another nexus (SPC-2 5.5.1; SPC-4 5.9.1 table 67).
    pub(crate) fn conflicts(&self, dev: &Device, nexus: &Nexus, cdb: &Cdb) -> bool {
        // A copy that may have missed an announcement (this process was
        // stopped past the announcer's wait) is reloaded before it decides.
        crate::pr_shared::ensure_fresh(dev);
        if !self.active.load(Ordering::Acquire) {
            return false;
        }
        // Shared with other targets: a conflict is only answered from the
        // stored state (a release made elsewhere whose announcement was
        // lost, or is still on its way, must not refuse the command).
        let conflict = self.cached_conflict(nexus, cdb);
        if conflict && self.shared.get().is_some() {
            crate::pr_shared::refresh(dev);
            return self.cached_conflict(nexus, cdb);
        }
        conflict
    }

    fn cached_conflict(&self, nexus: &Nexus, cdb: &Cdb) -> bool {
        let inner = self.lock();
        if let Some(h) = &inner.holder {
            // SPC-2: everything but RELEASE (a no-op for non-holders) and the
            // UA-exempt commands, which never reach this check.
            return !h.is(nexus) && !matches!(cdb.opcode(), op::RELEASE_6 | op::RELEASE_10);
        }
        inner.pr.conflicts(nexus, classify(cdb))
    }

    /// LOGICAL UNIT RESET / target reset / I_T nexus loss of the holder
    /// release an SPC-2 reservation (everywhere, with a shared store; the
    /// store is only touched when this process holds or resets it).
    pub(crate) fn clear_spc2(&self, dev: &Device, only_nexus: Option<u64>) {
        let hit = |h: &Option<Spc2>| match only_nexus {
            None => h.is_some(),
            Some(id) => h.as_ref().is_some_and(|h| h.nexus == Some(id)),
        };
        if !hit(&self.lock().holder) {
            return;
        }
        let r = crate::pr_shared::update(dev, |inner, _| {
            let hit = hit(&inner.holder);
            if hit {
                inner.holder = None;
            }
            Ok(((), hit))
        });
        if let Err(e) = r {
            tracing::error!(lu = %dev.options.name, "SPC-2 reservation not released: {e:?}");
        }
    }
}

fn spc2_checks(ctx: &Ctx<'_>) -> Result<(), CmdError> {
    let cdb = &ctx.cdb;
    // 3RDPTY and LONGID (RESERVE(10)) and extents are not supported.
    if cdb.b(1) & 0x13 != 0 {
        return Err(CmdError::cdb_field(1));
    }
    Ok(())
}

pub(crate) fn reserve(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    spc2_checks(ctx)?;
    let n = ctx.nexus;
    let me = Spc2 {
        nexus: Some(n.id),
        initiator: n.initiator_port.clone(),
        target: n.target_port.clone(),
        gateway: ctx.dev.state.res.shared.get().map_or(0, |s| s.holder_id()),
    };
    crate::pr_shared::update(ctx.dev, |inner, _| {
        // SPC-3 5.6.3: RESERVE while a persistent reservation exists conflicts.
        if inner.pr.reservation.is_some() {
            return Err(CmdError::ReservationConflict);
        }
        match &inner.holder {
            Some(h) if !h.is(n) => Err(CmdError::ReservationConflict),
            Some(_) => Ok(((), false)),
            None => {
                inner.holder = Some(me.clone());
                Ok(((), true))
            }
        }
    })?;
    Ok(Status::Good)
}

pub(crate) fn release(ctx: &Ctx<'_>, _data_in: &mut Vec<u8>) -> HandlerResult {
    spc2_checks(ctx)?;
    crate::pr_shared::update(ctx.dev, |inner, _| {
        // Releasing someone else's reservation is a no-op that still succeeds.
        let mine = inner.holder.as_ref().is_some_and(|h| h.is(ctx.nexus));
        if mine {
            inner.holder = None;
        }
        Ok(((), mine))
    })?;
    Ok(Status::Good)
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::Status;

    #[test]
    fn reserve_conflicts_for_other_nexus_until_release() {
        let t = Rig::new();
        let other = t.nexus(2);
        t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        t.ok(&[0x16, 0, 0, 0, 0, 0]);
        let (o, _) = t.run_as(&other, &[0x1a, 0, 0x3f, 0, 255, 0], &[]);
        assert_eq!(o.status, Status::ReservationConflict);
        let (o, _) = t.run_as(&other, &[0x16, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::ReservationConflict);
        let (o, _) = t.run_as(&other, &[0x12, 0, 0, 0, 36, 0], &[]);
        assert_eq!(o.status, Status::Good, "INQUIRY allowed");
        let (o, _) = t.run_as(&other, &[0x17, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::Good, "RELEASE by non-holder is a no-op");
        let (o, _) = t.run_as(&other, &[0x00, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::ReservationConflict);
        t.ok(&[0x17, 0, 0, 0, 0, 0]);
        let (o, _) = t.run_as(&other, &[0x00, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::Good);
    }

    #[test]
    fn nexus_loss_releases() {
        let t = Rig::new();
        let other = t.nexus(2);
        t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        t.ok(&[0x56, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        t.table.nexus_gone(&t.me);
        let (o, _) = t.run_as(&other, &[0x00, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::Good);
    }
}
