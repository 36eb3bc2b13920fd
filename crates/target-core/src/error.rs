//! Command failures and their one wire answer each. Every handler returns a
//! [`CmdError`]; [`CmdError::answer`] is the single exhaustive mapping to
//! SCSI status plus fixed-format sense (SPC-4 4.5), tested table-driven.

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
    /// A sense code used by a single command family (EXTENDED COPY's
    /// descriptor errors, COPY ABORTED), answered as-is.
    #[error("{0:?}")]
    Sense(Sense),
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
        let cc = |key, asc| (Status::CheckCondition, Some(Sense::new(key, asc)));
        match self {
            CmdError::InvalidOpcode => cc(IllegalRequest, Asc::INVALID_COMMAND_OPERATION_CODE),
            CmdError::InvalidFieldInCdb { byte, bit } => (
                Status::CheckCondition,
                Some(
                    Sense::new(IllegalRequest, Asc::INVALID_FIELD_IN_CDB)
                        .with_field_pointer(true, *byte, *bit),
                ),
            ),
            CmdError::LbaOutOfRange => cc(IllegalRequest, Asc::LBA_OUT_OF_RANGE),
            CmdError::LunNotSupported => cc(IllegalRequest, Asc::LOGICAL_UNIT_NOT_SUPPORTED),
            CmdError::WriteProtected => cc(DataProtect, Asc::WRITE_PROTECTED),
            CmdError::ReadError(_) => cc(MediumError, Asc::UNRECOVERED_READ_ERROR),
            CmdError::WriteError(_) => cc(MediumError, Asc::WRITE_ERROR),
            CmdError::ParameterListLength => cc(IllegalRequest, Asc::PARAMETER_LIST_LENGTH_ERROR),
            CmdError::InvalidFieldInParamList { byte } => (
                Status::CheckCondition,
                Some(
                    Sense::new(IllegalRequest, Asc::INVALID_FIELD_IN_PARAMETER_LIST)
                        .with_field_pointer(false, *byte, None),
                ),
            ),
            CmdError::InvalidFieldInCommandIu => cc(IllegalRequest, Asc(0x0e, 0x03)),
            CmdError::Miscompare { offset } => (
                Status::CheckCondition,
                Some(Sense::new(Miscompare, Asc::MISCOMPARE_DURING_VERIFY).with_info(*offset)),
            ),
            CmdError::SavingParametersNotSupported => {
                cc(IllegalRequest, Asc::SAVING_PARAMETERS_NOT_SUPPORTED)
            }
            CmdError::UnitAttention(asc) => cc(UnitAttention, *asc),
            CmdError::ReservationConflict => (Status::ReservationConflict, None),
            CmdError::InvalidReleaseOfPr => cc(
                IllegalRequest,
                Asc::INVALID_RELEASE_OF_PERSISTENT_RESERVATION,
            ),
            CmdError::InsufficientRegistrationResources => {
                cc(IllegalRequest, Asc::INSUFFICIENT_REGISTRATION_RESOURCES)
            }
            CmdError::MediumRemovalPrevented => cc(IllegalRequest, Asc::MEDIUM_REMOVAL_PREVENTED),
            CmdError::MediumNotPresent => cc(NotReady, Asc::MEDIUM_NOT_PRESENT),
            CmdError::Sense(s) => (Status::CheckCondition, Some(*s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_sense() {
        let io = || io::Error::other("boom");
        type Case = (CmdError, Status, Option<(u8, u8, u8)>);
        let cases: Vec<Case> = vec![
            (
                CmdError::InvalidOpcode,
                Status::CheckCondition,
                Some((5, 0x20, 0)),
            ),
            (
                CmdError::cdb_field(1),
                Status::CheckCondition,
                Some((5, 0x24, 0)),
            ),
            (
                CmdError::LbaOutOfRange,
                Status::CheckCondition,
                Some((5, 0x21, 0)),
            ),
            (
                CmdError::LunNotSupported,
                Status::CheckCondition,
                Some((5, 0x25, 0)),
            ),
            (
                CmdError::WriteProtected,
                Status::CheckCondition,
                Some((7, 0x27, 0)),
            ),
            (
                CmdError::ReadError(io()),
                Status::CheckCondition,
                Some((3, 0x11, 0)),
            ),
            (
                CmdError::WriteError(io()),
                Status::CheckCondition,
                Some((3, 0x0c, 0)),
            ),
            (
                CmdError::ParameterListLength,
                Status::CheckCondition,
                Some((5, 0x1a, 0)),
            ),
            (
                CmdError::param(2),
                Status::CheckCondition,
                Some((5, 0x26, 0)),
            ),
            (
                CmdError::InvalidFieldInCommandIu,
                Status::CheckCondition,
                Some((5, 0x0e, 3)),
            ),
            (
                CmdError::Miscompare { offset: 7 },
                Status::CheckCondition,
                Some((0xe, 0x1d, 0)),
            ),
            (
                CmdError::SavingParametersNotSupported,
                Status::CheckCondition,
                Some((5, 0x39, 0)),
            ),
            (
                CmdError::UnitAttention(Asc::MODE_PARAMETERS_CHANGED),
                Status::CheckCondition,
                Some((6, 0x2a, 1)),
            ),
            (
                CmdError::ReservationConflict,
                Status::ReservationConflict,
                None,
            ),
            (
                CmdError::InvalidReleaseOfPr,
                Status::CheckCondition,
                Some((5, 0x26, 4)),
            ),
            (
                CmdError::InsufficientRegistrationResources,
                Status::CheckCondition,
                Some((5, 0x55, 4)),
            ),
            (
                CmdError::MediumRemovalPrevented,
                Status::CheckCondition,
                Some((5, 0x53, 2)),
            ),
            (
                CmdError::MediumNotPresent,
                Status::CheckCondition,
                Some((2, 0x3a, 0)),
            ),
            (
                CmdError::Sense(Sense::new(SenseKey::CopyAborted, Asc(0x0d, 0x02))),
                Status::CheckCondition,
                Some((0x0a, 0x0d, 2)),
            ),
        ];
        for (err, status, sense) in cases {
            let (st, se) = err.answer();
            assert_eq!(st, status, "{err:?}");
            let got = se.map(|s| {
                let b = s.to_fixed();
                (b[2], b[12], b[13])
            });
            assert_eq!(got, sense, "{err:?}");
        }
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
