//! Task management function and response codes on the wire (RFC 7143
//! §11.5.1 and §11.6.1; RFC 7144 §4.1 adds the SAM-4 functions 9-12).
//! These are the bytes only: what a function does is the core's business
//! (`target_core::TmfFunction`, shared with fabrics that carry other codes).
//! Unassigned values survive parsing as `Unknown`, so a target can answer
//! them and a header written back is the one read.

use crate::layout::{BitValue, Wire};
use crate::Bhs;

/// The Function field of a Task Management Function Request (7 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfFunction {
    AbortTask,
    AbortTaskSet,
    ClearAca,
    ClearTaskSet,
    LogicalUnitReset,
    TargetWarmReset,
    TargetColdReset,
    TaskReassign,
    QueryTask,
    QueryTaskSet,
    ITNexusReset,
    QueryAsyncEvent,
    /// 0 and 13..=127: no function.
    Unknown(u8),
}

impl TmfFunction {
    pub fn from_code(c: u8) -> TmfFunction {
        match c {
            1 => TmfFunction::AbortTask,
            2 => TmfFunction::AbortTaskSet,
            3 => TmfFunction::ClearAca,
            4 => TmfFunction::ClearTaskSet,
            5 => TmfFunction::LogicalUnitReset,
            6 => TmfFunction::TargetWarmReset,
            7 => TmfFunction::TargetColdReset,
            8 => TmfFunction::TaskReassign,
            9 => TmfFunction::QueryTask,
            10 => TmfFunction::QueryTaskSet,
            11 => TmfFunction::ITNexusReset,
            12 => TmfFunction::QueryAsyncEvent,
            n => TmfFunction::Unknown(n),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            TmfFunction::AbortTask => 1,
            TmfFunction::AbortTaskSet => 2,
            TmfFunction::ClearAca => 3,
            TmfFunction::ClearTaskSet => 4,
            TmfFunction::LogicalUnitReset => 5,
            TmfFunction::TargetWarmReset => 6,
            TmfFunction::TargetColdReset => 7,
            TmfFunction::TaskReassign => 8,
            TmfFunction::QueryTask => 9,
            TmfFunction::QueryTaskSet => 10,
            TmfFunction::ITNexusReset => 11,
            TmfFunction::QueryAsyncEvent => 12,
            TmfFunction::Unknown(n) => n,
        }
    }
}

impl BitValue for TmfFunction {
    fn from_bits(v: u8) -> TmfFunction {
        TmfFunction::from_code(v)
    }
    fn to_bits(self) -> u8 {
        self.code()
    }
}

/// The Response field of a Task Management Function Response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TmfResponse {
    /// 0: function complete.
    Complete,
    /// 1: task does not exist.
    TaskDoesNotExist,
    /// 2: LUN does not exist.
    LunDoesNotExist,
    /// 3: task still allegiant.
    TaskStillAllegiant,
    /// 4: task allegiance reassignment not supported.
    ReassignNotSupported,
    /// 5: task management function not supported.
    NotSupported,
    /// 6: function authorization failed.
    AuthorizationFailed,
    /// 7: function succeeded (RFC 7144 §4.2: QUERY TASK, QUERY TASK SET
    /// and QUERY ASYNC EVENT found what they ask about).
    Succeeded,
    /// 255: function rejected.
    Rejected,
    /// Any other value.
    Unknown(u8),
}

impl TmfResponse {
    pub fn from_code(c: u8) -> TmfResponse {
        match c {
            0 => TmfResponse::Complete,
            1 => TmfResponse::TaskDoesNotExist,
            2 => TmfResponse::LunDoesNotExist,
            3 => TmfResponse::TaskStillAllegiant,
            4 => TmfResponse::ReassignNotSupported,
            5 => TmfResponse::NotSupported,
            6 => TmfResponse::AuthorizationFailed,
            7 => TmfResponse::Succeeded,
            255 => TmfResponse::Rejected,
            n => TmfResponse::Unknown(n),
        }
    }

    pub fn code(self) -> u8 {
        match self {
            TmfResponse::Complete => 0,
            TmfResponse::TaskDoesNotExist => 1,
            TmfResponse::LunDoesNotExist => 2,
            TmfResponse::TaskStillAllegiant => 3,
            TmfResponse::ReassignNotSupported => 4,
            TmfResponse::NotSupported => 5,
            TmfResponse::AuthorizationFailed => 6,
            TmfResponse::Succeeded => 7,
            TmfResponse::Rejected => 255,
            TmfResponse::Unknown(n) => n,
        }
    }
}

impl Wire for TmfResponse {
    fn read(b: &Bhs, off: usize) -> TmfResponse {
        TmfResponse::from_code(b.0[off])
    }

    fn write(self, b: &mut Bhs, off: usize) {
        b.0[off] = self.code();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_codes() {
        use TmfFunction::*;
        let known = [
            (AbortTask, 1),
            (AbortTaskSet, 2),
            (ClearAca, 3),
            (ClearTaskSet, 4),
            (LogicalUnitReset, 5),
            (TargetWarmReset, 6),
            (TargetColdReset, 7),
            (TaskReassign, 8),
            (QueryTask, 9),
            (QueryTaskSet, 10),
            (ITNexusReset, 11),
            (QueryAsyncEvent, 12),
        ];
        for (f, c) in known {
            assert_eq!((f.code(), TmfFunction::from_code(c)), (c, f));
        }
        for c in [0, 13, 0x55, 0x7f] {
            assert_eq!(TmfFunction::from_code(c), Unknown(c));
            assert_eq!(Unknown(c).code(), c);
        }
    }

    #[test]
    fn response_codes() {
        use TmfResponse::*;
        let known = [
            (Complete, 0),
            (TaskDoesNotExist, 1),
            (LunDoesNotExist, 2),
            (TaskStillAllegiant, 3),
            (ReassignNotSupported, 4),
            (NotSupported, 5),
            (AuthorizationFailed, 6),
            (Succeeded, 7),
            (Rejected, 255),
        ];
        for (r, c) in known {
            assert_eq!((r.code(), TmfResponse::from_code(c)), (c, r));
        }
        for c in 8..=254 {
            assert_eq!(TmfResponse::from_code(c), Unknown(c));
            assert_eq!(Unknown(c).code(), c);
        }
    }
}
