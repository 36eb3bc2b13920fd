//! Command failures and their one wire answer each. Every handler returns a
//! [`CmdError`]; [`CmdError::answer`] is the single exhaustive mapping to
//! SCSI status plus fixed-format sense (SPC-4 4.5), tested table-driven.
//! Each variant names one failure and answers with exactly one status, sense
//! key, ASC/ASCQ and (where the variant carries it) INFORMATION or
//! sense-key specific field: there is no pass-through of raw sense, since
//! backstores answer with `io::Error`s and never with SCSI sense of their own.

use std::io;

use scsi::{Asc, Sense, SenseKey};

use crate::Status;

/// Why a command did not complete with GOOD status.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("invalid command operation code")]
    InvalidOpcode,
    /// A CDB field is invalid; `byte`/`bit` feed the sense-key specific
    /// field pointer when known.
    #[error("invalid field in CDB (byte {byte})")]
    InvalidFieldInCdb { byte: u16, bit: Option<u8> },
    #[error("logical block address out of range")]
    LbaOutOfRange,
    #[error("logical unit not supported")]
    LunNotSupported,
    #[error("write protected")]
    WriteProtected,
    #[error("read failed: {0}")]
    ReadError(io::Error),
    #[error("write failed: {0}")]
    WriteError(io::Error),
    #[error("parameter list length error")]
    ParameterListLength,
    #[error("invalid field in parameter list (byte {byte})")]
    InvalidFieldInParamList { byte: u16 },
    /// Data-Out does not match the Expected Data Transfer Length the CDB
    /// needs (FCP-4 / RFC 7143 residual handling, option b).
    #[error("invalid field in command information unit")]
    InvalidFieldInCommandIu,
    #[error("miscompare at byte offset {offset}")]
    Miscompare { offset: u64 },
    #[error("saving parameters not supported")]
    SavingParametersNotSupported,
    #[error("unit attention {0:?}")]
    UnitAttention(Asc),
    #[error("reservation conflict")]
    ReservationConflict,
    #[error("invalid release of persistent reservation")]
    InvalidReleaseOfPr,
    #[error("insufficient registration resources")]
    InsufficientRegistrationResources,
    #[error("medium removal prevented")]
    MediumRemovalPrevented,
    #[error("medium not present")]
    MediumNotPresent,
    /// The ALUA access state of the target port the command came in on
    /// does not let it through (NOT READY, LOGICAL UNIT NOT ACCESSIBLE).
    #[error("logical unit not accessible: {0:?}")]
    NotAccessible(Inaccessible),
    /// A SANITIZE runs (NOT READY, SANITIZE IN PROGRESS); `progress` is the
    /// completed fraction in 65536ths, sent as the progress indication.
    #[error("sanitize in progress")]
    SanitizeInProgress { progress: u16 },
    /// The last SANITIZE failed and medium access stays refused until a
    /// sanitize succeeds or EXIT FAILURE MODE is accepted (SBC-3 4.11.2).
    #[error("sanitize command failed")]
    SanitizeFailed,
    /// The target itself failed (e.g. a worker thread could not start).
    #[error("internal target failure")]
    InternalTargetFailure,
    /// EXTENDED COPY's parameter list names something the copy manager
    /// does not offer (ILLEGAL REQUEST).
    #[error("copy descriptor refused: {0:?}")]
    BadCopyDescriptor(CopyDescriptor),
    /// EXTENDED COPY stopped part way (COPY ABORTED).
    #[error("copy aborted: {0:?}")]
    CopyAborted(CopyAbort),
}

/// The ALUA state that refused a command; each has its own ASCQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inaccessible {
    Transitioning,
    Standby,
    Unavailable,
    Offline,
}

/// Which limit of the EXTENDED COPY parameter list was broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyDescriptor {
    TooManyTargets,
    UnsupportedTargetType,
    TooManySegments,
    UnsupportedSegmentType,
}

/// Why a segment of an EXTENDED COPY could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyAbort {
    /// A segment names a CSCD that is not in the list or not an LU here.
    TargetNotReachable,
    /// Source and destination block sizes differ.
    BlockSizeMismatch,
    /// The segment moves more than the copy manager's segment limit.
    SegmentTooLong,
    /// The segment's LBA range lies outside the source or destination.
    OutOfRange,
}

/// ENOSPC or EDQUOT: a write that failed for want of space, not of the medium.
fn out_of_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

impl CmdError {
    pub(crate) const fn cdb_field(byte: u16) -> CmdError {
        CmdError::InvalidFieldInCdb { byte, bit: None }
    }

    pub(crate) const fn cdb_bit(byte: u16, bit: u8) -> CmdError {
        CmdError::InvalidFieldInCdb {
            byte,
            bit: Some(bit),
        }
    }

    pub(crate) const fn param(byte: u16) -> CmdError {
        CmdError::InvalidFieldInParamList { byte }
    }

    /// The status and sense data this error is answered with.
    pub fn answer(&self) -> (Status, Option<Sense>) {
        use SenseKey::*;
        let cc = |sense| (Status::CheckCondition, Some(sense));
        let s = Sense::new;
        match self {
            CmdError::InvalidOpcode => cc(s(IllegalRequest, Asc::INVALID_COMMAND_OPERATION_CODE)),
            CmdError::InvalidFieldInCdb { byte, bit } => {
                cc(s(IllegalRequest, Asc::INVALID_FIELD_IN_CDB)
                    .with_field_pointer(true, *byte, *bit))
            }
            CmdError::LbaOutOfRange => cc(s(IllegalRequest, Asc::LBA_OUT_OF_RANGE)),
            CmdError::LunNotSupported => cc(s(IllegalRequest, Asc::LOGICAL_UNIT_NOT_SUPPORTED)),
            CmdError::WriteProtected => cc(s(DataProtect, Asc::WRITE_PROTECTED)),
            // This path lost the medium (a gateway fenced by another one):
            // retry, here after a reconnect or on another path
            // (backstore::ownership), not a defect of the medium.
            CmdError::ReadError(e) | CmdError::WriteError(e)
                if backstore::ownership::is_path_lost(e) =>
            {
                cc(s(NotReady, Asc::LU_NOT_ACCESSIBLE_TRANSITIONING))
            }
            CmdError::ReadError(_) => cc(s(MediumError, Asc::UNRECOVERED_READ_ERROR)),
            // The medium under the LU ran out of space (a thin or sparse file
            // on a full file system, a quota): SBC-4's answer for a thin LU
            // that cannot allocate, not a defect of the medium.
            CmdError::WriteError(e) if out_of_space(e) => {
                cc(s(DataProtect, Asc::SPACE_ALLOCATION_FAILED_WRITE_PROTECT))
            }
            CmdError::WriteError(_) => cc(s(MediumError, Asc::WRITE_ERROR)),
            CmdError::ParameterListLength => {
                cc(s(IllegalRequest, Asc::PARAMETER_LIST_LENGTH_ERROR))
            }
            CmdError::InvalidFieldInParamList { byte } => {
                cc(s(IllegalRequest, Asc::INVALID_FIELD_IN_PARAMETER_LIST)
                    .with_field_pointer(false, *byte, None))
            }
            CmdError::InvalidFieldInCommandIu => cc(s(
                IllegalRequest,
                Asc::INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT,
            )),
            CmdError::Miscompare { offset } => {
                cc(s(Miscompare, Asc::MISCOMPARE_DURING_VERIFY).with_info(*offset))
            }
            CmdError::SavingParametersNotSupported => {
                cc(s(IllegalRequest, Asc::SAVING_PARAMETERS_NOT_SUPPORTED))
            }
            CmdError::UnitAttention(asc) => cc(s(UnitAttention, *asc)),
            CmdError::ReservationConflict => (Status::ReservationConflict, None),
            CmdError::InvalidReleaseOfPr => cc(s(
                IllegalRequest,
                Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
            )),
            CmdError::InsufficientRegistrationResources => {
                cc(s(IllegalRequest, Asc::INSUFFICIENT_REGISTRATION_RESOURCES))
            }
            CmdError::MediumRemovalPrevented => {
                cc(s(IllegalRequest, Asc::MEDIUM_REMOVAL_PREVENTED))
            }
            CmdError::MediumNotPresent => cc(s(NotReady, Asc::MEDIUM_NOT_PRESENT)),
            CmdError::NotAccessible(why) => cc(s(
                NotReady,
                match why {
                    Inaccessible::Transitioning => Asc::LU_NOT_ACCESSIBLE_TRANSITIONING,
                    Inaccessible::Standby => Asc::LU_NOT_ACCESSIBLE_TARGET_PORT_STANDBY,
                    Inaccessible::Unavailable => Asc::LU_NOT_ACCESSIBLE_TARGET_PORT_UNAVAILABLE,
                    Inaccessible::Offline => Asc::LU_NOT_READY_OFFLINE,
                },
            )),
            CmdError::SanitizeInProgress { progress } => {
                cc(s(NotReady, Asc::LU_NOT_READY_SANITIZE_IN_PROGRESS).with_progress(*progress))
            }
            CmdError::SanitizeFailed => cc(s(MediumError, Asc::SANITIZE_COMMAND_FAILED)),
            CmdError::InternalTargetFailure => cc(s(HardwareError, Asc::INTERNAL_TARGET_FAILURE)),
            CmdError::BadCopyDescriptor(what) => cc(s(
                IllegalRequest,
                match what {
                    CopyDescriptor::TooManyTargets => Asc::TOO_MANY_TARGET_DESCRIPTORS,
                    CopyDescriptor::UnsupportedTargetType => {
                        Asc::UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE
                    }
                    CopyDescriptor::TooManySegments => Asc::TOO_MANY_SEGMENT_DESCRIPTORS,
                    CopyDescriptor::UnsupportedSegmentType => {
                        Asc::UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE
                    }
                },
            )),
            CmdError::CopyAborted(why) => cc(s(
                CopyAborted,
                match why {
                    CopyAbort::TargetNotReachable => Asc::COPY_TARGET_DEVICE_NOT_REACHABLE,
                    // No additional sense code names these causes.
                    CopyAbort::BlockSizeMismatch
                    | CopyAbort::SegmentTooLong
                    | CopyAbort::OutOfRange => Asc::NO_ADDITIONAL_SENSE,
                },
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every leaf of [`CmdError`] (sub-enums included) gets its own number.
    /// The match has no wildcard, so a new variant does not compile until
    /// it is numbered here, and then the table test fails until the table
    /// lists it.
    fn ordinal(e: &CmdError) -> usize {
        match e {
            CmdError::InvalidOpcode => 0,
            CmdError::InvalidFieldInCdb { .. } => 1,
            CmdError::LbaOutOfRange => 2,
            CmdError::LunNotSupported => 3,
            CmdError::WriteProtected => 4,
            CmdError::ReadError(_) => 5,
            CmdError::WriteError(_) => 6,
            CmdError::ParameterListLength => 7,
            CmdError::InvalidFieldInParamList { .. } => 8,
            CmdError::InvalidFieldInCommandIu => 9,
            CmdError::Miscompare { .. } => 10,
            CmdError::SavingParametersNotSupported => 11,
            CmdError::UnitAttention(_) => 12,
            CmdError::ReservationConflict => 13,
            CmdError::InvalidReleaseOfPr => 14,
            CmdError::InsufficientRegistrationResources => 15,
            CmdError::MediumRemovalPrevented => 16,
            CmdError::MediumNotPresent => 17,
            CmdError::NotAccessible(Inaccessible::Transitioning) => 18,
            CmdError::NotAccessible(Inaccessible::Standby) => 19,
            CmdError::NotAccessible(Inaccessible::Unavailable) => 20,
            CmdError::NotAccessible(Inaccessible::Offline) => 21,
            CmdError::SanitizeInProgress { .. } => 22,
            CmdError::SanitizeFailed => 23,
            CmdError::InternalTargetFailure => 24,
            CmdError::BadCopyDescriptor(CopyDescriptor::TooManyTargets) => 25,
            CmdError::BadCopyDescriptor(CopyDescriptor::UnsupportedTargetType) => 26,
            CmdError::BadCopyDescriptor(CopyDescriptor::TooManySegments) => 27,
            CmdError::BadCopyDescriptor(CopyDescriptor::UnsupportedSegmentType) => 28,
            CmdError::CopyAborted(CopyAbort::TargetNotReachable) => 29,
            CmdError::CopyAborted(CopyAbort::BlockSizeMismatch) => 30,
            CmdError::CopyAborted(CopyAbort::SegmentTooLong) => 31,
            CmdError::CopyAborted(CopyAbort::OutOfRange) => 32,
        }
    }
    const LEAVES: usize = 33;

    /// Expected answer: status, then (key, ASC, ASCQ, INFORMATION,
    /// sense-key specific bytes) when there is sense data.
    type Want = (Status, Option<(u8, u8, u8, Option<u32>, Option<[u8; 3]>)>);

    fn cc(key: u8, asc: u8, ascq: u8) -> Want {
        (Status::CheckCondition, Some((key, asc, ascq, None, None)))
    }

    fn cc_sks(key: u8, asc: u8, ascq: u8, sks: [u8; 3]) -> Want {
        (
            Status::CheckCondition,
            Some((key, asc, ascq, None, Some(sks))),
        )
    }

    #[test]
    fn every_error_maps_to_its_sense() {
        use CmdError as E;
        let io = || io::Error::other("boom");
        let cases: Vec<(CmdError, Want)> = vec![
            (E::InvalidOpcode, cc(5, 0x20, 0)),
            (E::cdb_field(1), cc_sks(5, 0x24, 0, [0xc0, 0, 1])),
            (E::cdb_bit(1, 5), cc_sks(5, 0x24, 0, [0xcd, 0, 1])),
            (E::LbaOutOfRange, cc(5, 0x21, 0)),
            (E::LunNotSupported, cc(5, 0x25, 0)),
            (E::WriteProtected, cc(7, 0x27, 0)),
            (E::ReadError(io()), cc(3, 0x11, 0)),
            (E::WriteError(io()), cc(3, 0x0c, 0)),
            (
                E::WriteError(io::ErrorKind::StorageFull.into()),
                cc(7, 0x27, 7),
            ),
            (
                E::WriteError(io::ErrorKind::QuotaExceeded.into()),
                cc(7, 0x27, 7),
            ),
            (E::ParameterListLength, cc(5, 0x1a, 0)),
            (E::param(258), cc_sks(5, 0x26, 0, [0x80, 1, 2])),
            (E::InvalidFieldInCommandIu, cc(5, 0x0e, 3)),
            (
                E::Miscompare { offset: 513 },
                (
                    Status::CheckCondition,
                    Some((0xe, 0x1d, 0, Some(513), None)),
                ),
            ),
            (E::SavingParametersNotSupported, cc(5, 0x39, 0)),
            (
                E::UnitAttention(Asc::MODE_PARAMETERS_CHANGED),
                cc(6, 0x2a, 1),
            ),
            (E::ReservationConflict, (Status::ReservationConflict, None)),
            (E::InvalidReleaseOfPr, cc(5, 0x26, 4)),
            (E::InsufficientRegistrationResources, cc(5, 0x55, 4)),
            (E::MediumRemovalPrevented, cc(5, 0x53, 2)),
            (E::MediumNotPresent, cc(2, 0x3a, 0)),
            (
                E::NotAccessible(Inaccessible::Transitioning),
                cc(2, 0x04, 0x0a),
            ),
            (E::NotAccessible(Inaccessible::Standby), cc(2, 0x04, 0x0b)),
            (
                E::NotAccessible(Inaccessible::Unavailable),
                cc(2, 0x04, 0x0c),
            ),
            (E::NotAccessible(Inaccessible::Offline), cc(2, 0x04, 0x12)),
            (
                E::SanitizeInProgress { progress: 0x8001 },
                cc_sks(2, 0x04, 0x1b, [0x80, 0x80, 0x01]),
            ),
            (E::SanitizeFailed, cc(3, 0x31, 3)),
            (E::InternalTargetFailure, cc(4, 0x44, 0)),
            (
                E::BadCopyDescriptor(CopyDescriptor::TooManyTargets),
                cc(5, 0x26, 6),
            ),
            (
                E::BadCopyDescriptor(CopyDescriptor::UnsupportedTargetType),
                cc(5, 0x26, 7),
            ),
            (
                E::BadCopyDescriptor(CopyDescriptor::TooManySegments),
                cc(5, 0x26, 8),
            ),
            (
                E::BadCopyDescriptor(CopyDescriptor::UnsupportedSegmentType),
                cc(5, 0x26, 9),
            ),
            (
                E::CopyAborted(CopyAbort::TargetNotReachable),
                cc(0xa, 0x0d, 2),
            ),
            (E::CopyAborted(CopyAbort::BlockSizeMismatch), cc(0xa, 0, 0)),
            (E::CopyAborted(CopyAbort::SegmentTooLong), cc(0xa, 0, 0)),
            (E::CopyAborted(CopyAbort::OutOfRange), cc(0xa, 0, 0)),
        ];
        let mut seen = [false; LEAVES];
        for (err, (status, want)) in cases {
            seen[ordinal(&err)] = true;
            let (st, se) = err.answer();
            assert_eq!(st, status, "{err:?}");
            let got = se.map(|s| {
                let b = s.to_fixed();
                let info = (b[0] & 0x80 != 0).then(|| u32::from_be_bytes([b[3], b[4], b[5], b[6]]));
                let sks = (b[15] & 0x80 != 0).then(|| [b[15], b[16], b[17]]);
                (b[2], b[12], b[13], info, sks)
            });
            assert_eq!(got, want, "{err:?}");
        }
        let missing: Vec<usize> = (0..LEAVES).filter(|&i| !seen[i]).collect();
        assert!(
            missing.is_empty(),
            "variants without a table row: {missing:?}"
        );
    }

    #[test]
    fn miscompare_carries_offset_in_information() {
        let (_, sense) = CmdError::Miscompare { offset: 513 }.answer();
        let b = sense.expect("sense").to_fixed();
        assert_eq!(b[0], 0xf0, "VALID bit set");
        assert_eq!(&b[3..7], &513u32.to_be_bytes());
    }

    #[test]
    fn invalid_field_in_cdb_points_at_the_byte() {
        let (_, sense) = CmdError::cdb_bit(1, 5).answer();
        let b = sense.expect("sense").to_fixed();
        assert_eq!(&b[15..18], &[0xcd, 0, 1]);
    }
}
