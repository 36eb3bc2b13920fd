//! Task management side effects in the core (SAM-5 7): resets restore LU
//! state, release SPC-2 reservations and queue unit attentions; aborts are
//! the fabric's business (it owns the task queues), so they just complete.
//! Also the end of an I_T nexus.

use scsi::Asc;

use crate::{Device, LunTable, Nexus, TmfFunction, TmfResult};

/// What QUERY ASYNCHRONOUS EVENT finds for an I_T_L nexus (SAM-5 7.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsyncEvent {
    /// The LUN is not mapped.
    NoLun,
    Nothing,
    /// This unit attention is reported next (sense key 6, ASC/ASCQ here),
    /// one of this many pending (SAM-5's UADE DEPTH tells one from more).
    UnitAttention(Asc, usize),
}

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
    nexus: &Nexus,
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
        // The fabric ended the nexus' tasks; the LU side is here.
        TmfFunction::ITNexusReset => {
            it_nexus_reset(table, nexus);
            TmfResult::Complete
        }
        // The tasks these ask about are the fabric's, which answers
        // FUNCTION SUCCEEDED when it finds one (and QUERY ASYNCHRONOUS EVENT
        // is `query_async_event`): the core only checks the LUN.
        TmfFunction::QueryTask | TmfFunction::QueryTaskSet | TmfFunction::QueryAsyncEvent => {
            if table.find(lun).is_some() {
                TmfResult::Complete
            } else {
                TmfResult::LunDoesNotExist
            }
        }
    }
}

/// I_T NEXUS RESET (SAM-5 7.7) after the fabric ended the nexus' tasks: on
/// every LU the nexus loses what an I_T nexus loss takes (its SPC-2
/// reservation, copy results, medium removal prevention; persistent
/// reservations stay) and gets I_T NEXUS LOSS OCCURRED in place of older
/// conditions. Unlike a logout the nexus goes on, so it is not forgotten.
pub(crate) fn it_nexus_reset(table: &LunTable, nexus: &Nexus) {
    for l in &table.luns {
        let dev = &l.device;
        dev.state.res.clear_spc2(dev, Some(nexus.id));
        dev.state.copies.forget(nexus.id);
        dev.state.medium.allow(nexus.id);
        dev.state
            .ua
            .reset_nexus(nexus.id, Asc::I_T_NEXUS_LOSS_OCCURRED);
    }
}

/// QUERY ASYNCHRONOUS EVENT (SAM-5 7.6): the unit attention pending for the
/// nexus on `lun`, left pending.
pub(crate) fn query_async_event(table: &LunTable, nexus: &Nexus, lun: u64) -> AsyncEvent {
    match table.find(lun) {
        None => AsyncEvent::NoLun,
        Some(l) => match l.device.state.ua.peek(nexus.id) {
            Some((asc, pending)) => AsyncEvent::UnitAttention(asc, pending),
            None => AsyncEvent::Nothing,
        },
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
    use super::AsyncEvent;
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
    fn queries_check_the_lun() {
        let t = Rig::new();
        for f in [
            TmfFunction::QueryTask,
            TmfFunction::QueryTaskSet,
            TmfFunction::QueryAsyncEvent,
        ] {
            assert_eq!(t.table.task_management(&t.me, f, 0), TmfResult::Complete);
            assert_eq!(
                t.table.task_management(&t.me, f, 9),
                TmfResult::LunDoesNotExist,
                "{f:?}"
            );
        }
    }

    #[test]
    fn query_async_event_reports_the_pending_ua_and_keeps_it() {
        let t = Rig::new();
        assert_eq!(t.table.query_async_event(&t.me, 0), AsyncEvent::Nothing);
        // A reset from another nexus queues 29/00 for this one.
        let other = t.nexus(2);
        t.table
            .task_management(&other, TmfFunction::LogicalUnitReset, 0);
        assert_eq!(
            t.table.query_async_event(&t.me, 0),
            AsyncEvent::UnitAttention(scsi::Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET, 1)
        );
        // Another behind it: the first is still the one reported next.
        t.dev
            .state
            .ua
            .queue_for(t.me.id, scsi::Asc::MODE_PARAMETERS_CHANGED);
        assert_eq!(
            t.table.query_async_event(&t.me, 0),
            AsyncEvent::UnitAttention(scsi::Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET, 2)
        );
        t.expect_sense(&[0, 0, 0, 0, 0, 0], 6, 0x29, 0);
        t.expect_sense(&[0, 0, 0, 0, 0, 0], 6, 0x2a, 0x01);
        assert_eq!(t.table.query_async_event(&t.me, 0), AsyncEvent::Nothing);
        assert_eq!(t.table.query_async_event(&t.me, 9), AsyncEvent::NoLun);
    }

    #[test]
    fn it_nexus_reset_releases_the_nexus_and_queues_29_07() {
        let t = Rig::new();
        let other = t.nexus(2);
        t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        t.run_as(&other, &[0, 0, 0, 0, 0, 0], &[]);
        t.run_as(&t.me, &[0, 0, 0, 0, 0, 0], &[]);
        t.ok(&[0x16, 0, 0, 0, 0, 0]);
        assert_eq!(
            t.table.task_management(&t.me, TmfFunction::ITNexusReset, 0),
            TmfResult::Complete
        );
        assert_eq!(
            t.table.query_async_event(&t.me, 0),
            AsyncEvent::UnitAttention(scsi::Asc::I_T_NEXUS_LOSS_OCCURRED, 1)
        );
        t.expect_sense(&[0, 0, 0, 0, 0, 0], 6, 0x29, 7);
        // The other nexus is untouched, and the reservation is gone: it
        // may reserve now.
        let (o, _) = t.run_as(&other, &[0x16, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, crate::Status::Good);
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
