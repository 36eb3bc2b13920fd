//! The command table: which opcodes (and service actions) the core
//! implements, how each passes the unit attention / reservation gates, its
//! handler, and the CDB usage bitmap REPORT SUPPORTED OPERATION CODES returns.
//! One table drives both dispatch and RSOC, so they cannot disagree.

use scsi::cdb::Cdb;
use scsi::opcode as op;

use crate::dispatch::{Ctx, HandlerResult};
use crate::{
    alua, inquiry, medium, misc, mode, opcodes, pr, pr_out, provisioning, reservation, rmw, rw,
    sanitize, xcopy,
};

/// How a command passes the unit attention and reservation checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Reports UAs, conflicts with another nexus's reservation.
    Normal,
    /// Neither reports nor clears UAs and is allowed under reservations
    /// (INQUIRY, REPORT LUNS; SPC-4 5.9 / SAM-5 5.14).
    UaExempt,
    /// Reports UAs but never conflicts (RELEASE, PR IN/OUT, RSOC, ...).
    ReservationExempt,
    /// REQUEST SENSE: returns the pending UA as its data.
    RequestSense,
}

pub(crate) type Handler = fn(&Ctx<'_>, &mut Vec<u8>) -> HandlerResult;

pub(crate) struct Entry {
    pub opcode: u8,
    /// Service action, for opcodes that carry one.
    pub sa: Option<u8>,
    pub gate: Gate,
    pub handler: Handler,
    /// CDB usage data (SPC-4 6.35.3): byte 0 is the opcode, then the bits
    /// the device server looks at; its length is the CDB length.
    pub usage: &'static [u8],
}

const fn e(opcode: u8, gate: Gate, handler: Handler, usage: &'static [u8]) -> Entry {
    Entry {
        opcode,
        sa: None,
        gate,
        handler,
        usage,
    }
}

const fn sa(opcode: u8, sa: u8, gate: Gate, handler: Handler, usage: &'static [u8]) -> Entry {
    Entry {
        opcode,
        sa: Some(sa),
        gate,
        handler,
        usage,
    }
}

use Gate::*;

/// Ordered by how often initiators send them: the scan stops early for I/O.
#[rustfmt::skip]
pub(crate) static TABLE: &[Entry] = &[
    e(op::READ_10, Normal, rw::read, &[op::READ_10, 0x18, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04]),
    e(op::WRITE_10, Normal, rw::write, &[op::WRITE_10, 0x18, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04]),
    e(op::READ_16, Normal, rw::read, &[op::READ_16, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::WRITE_16, Normal, rw::write, &[op::WRITE_16, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::READ_6, Normal, rw::read, &[op::READ_6, 0x1f, 0xff, 0xff, 0xff, 0x04]),
    e(op::WRITE_6, Normal, rw::write, &[op::WRITE_6, 0x1f, 0xff, 0xff, 0xff, 0x04]),
    e(op::READ_12, Normal, rw::read, &[op::READ_12, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::WRITE_12, Normal, rw::write, &[op::WRITE_12, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::SYNCHRONIZE_CACHE_10, Normal, rw::sync_cache, &[op::SYNCHRONIZE_CACHE_10, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04]),
    e(op::SYNCHRONIZE_CACHE_16, Normal, rw::sync_cache, &[op::SYNCHRONIZE_CACHE_16, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::TEST_UNIT_READY, Normal, misc::test_unit_ready, &[op::TEST_UNIT_READY, 0, 0, 0, 0, 0x04]),
    e(op::INQUIRY, UaExempt, inquiry::inquiry, &[op::INQUIRY, 0x01, 0xff, 0xff, 0xff, 0x04]),
    e(op::REPORT_LUNS, UaExempt, misc::report_luns, &[op::REPORT_LUNS, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x04]),
    e(op::REQUEST_SENSE, RequestSense, misc::unreachable_request_sense, &[op::REQUEST_SENSE, 0x01, 0, 0, 0xff, 0x04]),
    e(op::READ_CAPACITY_10, Normal, misc::read_capacity10, &[op::READ_CAPACITY_10, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0x04]),
    sa(op::SERVICE_ACTION_IN_16, op::SAI_READ_CAPACITY_16, Normal, misc::read_capacity16, &[op::SERVICE_ACTION_IN_16, op::SAI_READ_CAPACITY_16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x04]),
    e(op::MODE_SENSE_6, Normal, mode::mode_sense, &[op::MODE_SENSE_6, 0x08, 0xff, 0xff, 0xff, 0x04]),
    e(op::MODE_SENSE_10, Normal, mode::mode_sense, &[op::MODE_SENSE_10, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0x04]),
    e(op::MODE_SELECT_6, Normal, mode::mode_select, &[op::MODE_SELECT_6, 0x11, 0, 0, 0xff, 0x04]),
    e(op::MODE_SELECT_10, Normal, mode::mode_select, &[op::MODE_SELECT_10, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0x04]),
    e(op::START_STOP_UNIT, Normal, medium::start_stop_unit, &[op::START_STOP_UNIT, 0x01, 0, 0x0f, 0xf7, 0x04]),
    e(op::PREVENT_ALLOW_MEDIUM_REMOVAL, Normal, medium::prevent_allow, &[op::PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0x03, 0x04]),
    e(op::VERIFY_10, Normal, rw::verify, &[op::VERIFY_10, 0x16, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04]),
    e(op::VERIFY_12, Normal, rw::verify, &[op::VERIFY_12, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::VERIFY_16, Normal, rw::verify, &[op::VERIFY_16, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::WRITE_AND_VERIFY_10, Normal, rw::write_verify, &[op::WRITE_AND_VERIFY_10, 0x16, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04]),
    e(op::WRITE_AND_VERIFY_12, Normal, rw::write_verify, &[op::WRITE_AND_VERIFY_12, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::WRITE_AND_VERIFY_16, Normal, rw::write_verify, &[op::WRITE_AND_VERIFY_16, 0x16, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::PRE_FETCH_10, Normal, rw::prefetch, &[op::PRE_FETCH_10, 0x02, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04]),
    e(op::PRE_FETCH_16, Normal, rw::prefetch, &[op::PRE_FETCH_16, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::RESERVE_6, Normal, reservation::reserve, &[op::RESERVE_6, 0, 0, 0, 0, 0x04]),
    e(op::RELEASE_6, ReservationExempt, reservation::release, &[op::RELEASE_6, 0, 0, 0, 0, 0x04]),
    e(op::RESERVE_10, Normal, reservation::reserve, &[op::RESERVE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0x04]),
    e(op::RELEASE_10, ReservationExempt, reservation::release, &[op::RELEASE_10, 0, 0, 0, 0, 0, 0, 0, 0, 0x04]),
    e(op::WRITE_SAME_10, Normal, provisioning::write_same, &[op::WRITE_SAME_10, 0xe8, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0x04]),
    e(op::WRITE_SAME_16, Normal, provisioning::write_same, &[op::WRITE_SAME_16, 0xe9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::UNMAP, Normal, provisioning::unmap, &[op::UNMAP, 0x01, 0, 0, 0, 0, 0x00, 0xff, 0xff, 0x04]),
    sa(op::SERVICE_ACTION_IN_16, op::SAI_GET_LBA_STATUS, Normal, provisioning::get_lba_status, &[op::SERVICE_ACTION_IN_16, op::SAI_GET_LBA_STATUS, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::COMPARE_AND_WRITE, Normal, rmw::compare_and_write, &[op::COMPARE_AND_WRITE, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0xff, 0x00, 0x04]),
    e(op::WRITE_ATOMIC_16, Normal, rmw::write_atomic, &[op::WRITE_ATOMIC_16, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff, 0x00, 0x04]),
    e(op::ORWRITE_16, Normal, rmw::orwrite, &[op::ORWRITE_16, 0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x04]),
    e(op::READ_DEFECT_DATA_10, Normal, misc::read_defect_data, &[op::READ_DEFECT_DATA_10, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0x04]),
    e(op::READ_DEFECT_DATA_12, Normal, misc::read_defect_data, &[op::READ_DEFECT_DATA_12, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x04]),
    sa(op::MAINTENANCE_IN, op::MI_REPORT_SUPPORTED_OPCODES, ReservationExempt, opcodes::maintenance_in_rsoc, &[op::MAINTENANCE_IN, op::MI_REPORT_SUPPORTED_OPCODES, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0x04]),
    sa(op::MAINTENANCE_IN, op::MI_REPORT_SUPPORTED_TMFS, ReservationExempt, opcodes::maintenance_in_rstmf, &[op::MAINTENANCE_IN, op::MI_REPORT_SUPPORTED_TMFS, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x04]),
    sa(op::PERSISTENT_RESERVE_IN, 0, ReservationExempt, pr::persistent_reserve_in, &[op::PERSISTENT_RESERVE_IN, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_IN, 1, ReservationExempt, pr::persistent_reserve_in, &[op::PERSISTENT_RESERVE_IN, 1, 0, 0, 0, 0, 0, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_IN, 2, ReservationExempt, pr::persistent_reserve_in, &[op::PERSISTENT_RESERVE_IN, 2, 0, 0, 0, 0, 0, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_IN, 3, ReservationExempt, pr::persistent_reserve_in, &[op::PERSISTENT_RESERVE_IN, 3, 0, 0, 0, 0, 0, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_OUT, 0, ReservationExempt, pr_out::persistent_reserve_out, &[op::PERSISTENT_RESERVE_OUT, 0, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_OUT, 1, ReservationExempt, pr_out::persistent_reserve_out, &[op::PERSISTENT_RESERVE_OUT, 1, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_OUT, 2, ReservationExempt, pr_out::persistent_reserve_out, &[op::PERSISTENT_RESERVE_OUT, 2, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_OUT, 3, ReservationExempt, pr_out::persistent_reserve_out, &[op::PERSISTENT_RESERVE_OUT, 3, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_OUT, 4, ReservationExempt, pr_out::persistent_reserve_out, &[op::PERSISTENT_RESERVE_OUT, 4, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_OUT, 5, ReservationExempt, pr_out::persistent_reserve_out, &[op::PERSISTENT_RESERVE_OUT, 5, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_OUT, 6, ReservationExempt, pr_out::persistent_reserve_out, &[op::PERSISTENT_RESERVE_OUT, 6, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x04]),
    sa(op::PERSISTENT_RESERVE_OUT, 7, ReservationExempt, pr_out::persistent_reserve_out, &[op::PERSISTENT_RESERVE_OUT, 7, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x04]),
    sa(op::EXTENDED_COPY, 0x00, Normal, xcopy::extended_copy, &[op::EXTENDED_COPY, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x04]),
    sa(op::RECEIVE_COPY_RESULTS, 0x00, Normal, xcopy::receive_copy_results, &[op::RECEIVE_COPY_RESULTS, 0x00, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x04]),
    sa(op::RECEIVE_COPY_RESULTS, 0x03, Normal, xcopy::receive_copy_results, &[op::RECEIVE_COPY_RESULTS, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x04]),
    sa(scsi::opcode::SANITIZE, sanitize::SA_OVERWRITE, Normal, sanitize::sanitize, &[scsi::opcode::SANITIZE, 0xa1, 0, 0, 0, 0, 0, 0xff, 0xff, 0x04]),
    sa(scsi::opcode::SANITIZE, sanitize::SA_BLOCK_ERASE, Normal, sanitize::sanitize, &[scsi::opcode::SANITIZE, 0xa2, 0, 0, 0, 0, 0, 0xff, 0xff, 0x04]),
    sa(scsi::opcode::SANITIZE, sanitize::SA_CRYPTO_ERASE, Normal, sanitize::sanitize, &[scsi::opcode::SANITIZE, 0xa3, 0, 0, 0, 0, 0, 0xff, 0xff, 0x04]),
    sa(scsi::opcode::SANITIZE, sanitize::SA_EXIT_FAILURE_MODE, Normal, sanitize::sanitize, &[scsi::opcode::SANITIZE, 0xbf, 0, 0, 0, 0, 0, 0xff, 0xff, 0x04]),
    sa(op::MAINTENANCE_IN, op::MI_REPORT_TARGET_PORT_GROUPS, ReservationExempt, opcodes::maintenance_in_rtpg, &[op::MAINTENANCE_IN, 0xea, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x04]),
    sa(op::MAINTENANCE_OUT, alua::MO_SET_TARGET_PORT_GROUPS, Normal, alua::set_target_port_groups, &[op::MAINTENANCE_OUT, 0x0a, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0x04]),
];

/// The table entry for a CDB, if the core implements it.
pub(crate) fn lookup(cdb: &Cdb) -> Option<&'static Entry> {
    let opcode = cdb.opcode();
    TABLE
        .iter()
        .find(|e| e.opcode == opcode && e.sa.is_none_or_matches(cdb.service_action()))
}

/// Whether the table knows `opcode` only together with service actions.
pub(crate) fn has_service_actions(opcode: u8) -> bool {
    TABLE.iter().any(|e| e.opcode == opcode && e.sa.is_some())
}

trait SaMatch {
    fn is_none_or_matches(&self, sa: u8) -> bool;
}

impl SaMatch for Option<u8> {
    fn is_none_or_matches(&self, sa: u8) -> bool {
        match self {
            None => true,
            Some(s) => *s == sa,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_data_matches_cdb_length_and_opcode() {
        for e in TABLE {
            assert_eq!(e.usage[0], e.opcode);
            assert_eq!(
                Some(e.usage.len()),
                op::cdb_len(e.opcode),
                "opcode {:#04x}",
                e.opcode
            );
            if let Some(sa) = e.sa {
                assert_eq!(e.usage[1] & 0x1f, sa, "service action in usage byte 1");
            }
        }
    }

    #[test]
    fn no_duplicate_entries() {
        for (i, a) in TABLE.iter().enumerate() {
            for b in &TABLE[i + 1..] {
                assert!(
                    !(a.opcode == b.opcode && a.sa == b.sa),
                    "dup {:#04x}",
                    a.opcode
                );
            }
        }
    }

    #[test]
    fn lookup_respects_service_action() {
        let rc16 = Cdb::new(&[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]).expect("cdb");
        assert!(lookup(&rc16).is_some());
        let bogus =
            Cdb::new(&[0x9e, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0]).expect("cdb");
        assert!(lookup(&bogus).is_none());
        let unknown = Cdb::new(&[0xd0, 0, 0, 0, 0, 0]).expect("cdb");
        assert!(lookup(&unknown).is_none());
    }
}
