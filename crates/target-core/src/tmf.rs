//! Task management side effects in the core (SAM-5 7): resets restore LU
//! state, release SPC-2 reservations and queue unit attentions; aborts are
//! the fabric's business (it owns the task queues), so they just complete.
//! Also the end of an I_T nexus.

use scsi::Asc;

use crate::{Device, LunTable, Nexus, TmfFunction, TmfResult};

/// Reset one LU: every nexus, the issuing one included, gets the unit
/// attention (SAM-5 6.3.3; multipath initiators rely on seeing it on
/// every path).
fn reset_device(dev: &Device) {
    dev.state.reset_mode(&dev.options);
    // The generic 29/00 rather than 29/03: SAM-5 allows it for any reset, and
    // initiators (libiscsi among them) retry on exactly 29/00. Other targets
    // sharing the LU raise it too (`pr_shared`).
    crate::pr_shared::lu_reset(dev, Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET);
    dev.state
        .ua
        .reset_all(Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET);
}

pub(crate) fn task_management(
    table: &LunTable,
    _nexus: &Nexus,
    func: TmfFunction,
    lun: u64,
) -> TmfResult {
    match func {
        TmfFunction::AbortTask
        | TmfFunction::AbortTaskSet
        | TmfFunction::ClearTaskSet
        | TmfFunction::ClearAca => {
            if table.find(lun).is_some() {
                TmfResult::Complete
            } else {
                TmfResult::LunDoesNotExist
            }
        }
        TmfFunction::LogicalUnitReset => match table.find(lun) {
            Some(l) => {
                reset_device(&l.device);
                TmfResult::Complete
            }
            None => TmfResult::LunDoesNotExist,
        },
        TmfFunction::TargetWarmReset | TmfFunction::TargetColdReset => {
            for l in &table.luns {
                reset_device(&l.device);
            }
            TmfResult::Complete
        }
        // The task sets these ask about (or, for an I_T nexus reset, end)
        // are still the fabric's: not implemented in the core.
        TmfFunction::ITNexusReset
        | TmfFunction::QueryTask
        | TmfFunction::QueryTaskSet
        | TmfFunction::QueryAsyncEvent => TmfResult::NotSupported,
    }
}

pub(crate) fn nexus_gone(table: &LunTable, nexus: &Nexus) {
    for l in &table.luns {
        let dev = &l.device;
        dev.state.ua.forget(nexus.id);
        dev.state.res.clear_spc2(dev, Some(nexus.id));
        dev.state.res.lock().pr.forget_nexus(nexus.id);
        dev.state.copies.forget(nexus.id);
        dev.state.medium.allow(nexus.id);
    }
}

#[cfg(test)]
mod tests {
    use crate::testutil::*;
    use crate::{TmfFunction, TmfResult};

    #[test]
    fn lun_reset_queues_ua_for_every_nexus_and_restores_mode() {
        let t = Rig::new();
        let other = t.nexus(2);
        t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        t.dev
            .state
            .mode
            .wce
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let r = t
            .table
            .task_management(&t.me, TmfFunction::LogicalUnitReset, 0);
        assert_eq!(r, TmfResult::Complete);
        assert!(t.dev.wce());
        t.expect_sense(&[0, 0, 0, 0, 0, 0], 6, 0x29, 0);
        let (o, _) = t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((6, 0x29, 0)));
        assert_eq!(
            t.table
                .task_management(&t.me, TmfFunction::LogicalUnitReset, 5),
            TmfResult::LunDoesNotExist
        );
    }

    #[test]
    fn target_reset_releases_reservations() {
        let t = Rig::new();
        let other = t.nexus(2);
        t.ok(&[0x16, 0, 0, 0, 0, 0]);
        t.table
            .task_management(&other, TmfFunction::TargetWarmReset, 0);
        let (o, _) = t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(
            sense_of(&o),
            Some((6, 0x29, 0)),
            "fresh nexus: power on first"
        );
        let (o, _) = t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, crate::Status::Good);
    }

    #[test]
    fn functions_the_core_does_not_implement() {
        let t = Rig::new();
        for f in [
            TmfFunction::ITNexusReset,
            TmfFunction::QueryTask,
            TmfFunction::QueryTaskSet,
            TmfFunction::QueryAsyncEvent,
        ] {
            assert_eq!(
                t.table.task_management(&t.me, f, 0),
                TmfResult::NotSupported,
                "{f:?}"
            );
        }
    }

    #[test]
    fn aborts_complete() {
        let t = Rig::new();
        assert_eq!(
            t.table.task_management(&t.me, TmfFunction::AbortTask, 0),
            TmfResult::Complete
        );
    }
}
