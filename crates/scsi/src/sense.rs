//! Sense data: sense keys, additional sense codes (ASC/ASCQ pairs) and the
//! fixed-format (0x70) sense layout of SPC-4 4.5.3. The target core picks the
//! code; this module only knows the names and the bytes.

/// Sense key (SPC-4 table 50).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SenseKey {
    NoSense = 0x0,
    RecoveredError = 0x1,
    NotReady = 0x2,
    MediumError = 0x3,
    HardwareError = 0x4,
    IllegalRequest = 0x5,
    UnitAttention = 0x6,
    DataProtect = 0x7,
    BlankCheck = 0x8,
    CopyAborted = 0xa,
    AbortedCommand = 0xb,
    VolumeOverflow = 0xd,
    Miscompare = 0xe,
}

/// An additional sense code and qualifier pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Asc(pub u8, pub u8);

impl Asc {
    pub const NO_ADDITIONAL_SENSE: Asc = Asc(0x00, 0x00);
    pub const LU_NOT_READY_CAUSE_NOT_REPORTABLE: Asc = Asc(0x04, 0x00);
    pub const LU_NOT_ACCESSIBLE_TRANSITIONING: Asc = Asc(0x04, 0x0a);
    pub const LU_NOT_ACCESSIBLE_TARGET_PORT_STANDBY: Asc = Asc(0x04, 0x0b);
    pub const LU_NOT_ACCESSIBLE_TARGET_PORT_UNAVAILABLE: Asc = Asc(0x04, 0x0c);
    pub const LU_NOT_READY_OFFLINE: Asc = Asc(0x04, 0x12);
    pub const LU_NOT_READY_SANITIZE_IN_PROGRESS: Asc = Asc(0x04, 0x1b);
    pub const WRITE_ERROR: Asc = Asc(0x0c, 0x00);
    pub const COPY_TARGET_DEVICE_NOT_REACHABLE: Asc = Asc(0x0d, 0x02);
    pub const INVALID_FIELD_IN_COMMAND_INFORMATION_UNIT: Asc = Asc(0x0e, 0x03);
    pub const UNRECOVERED_READ_ERROR: Asc = Asc(0x11, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: Asc = Asc(0x1a, 0x00);
    pub const MISCOMPARE_DURING_VERIFY: Asc = Asc(0x1d, 0x00);
    pub const INVALID_COMMAND_OPERATION_CODE: Asc = Asc(0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: Asc = Asc(0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: Asc = Asc(0x24, 0x00);
    pub const LOGICAL_UNIT_NOT_SUPPORTED: Asc = Asc(0x25, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Asc = Asc(0x26, 0x00);
    pub const INVALID_RELEASE_OF_PERSISTENT_RESERVATION: Asc = Asc(0x26, 0x04);
    pub const TOO_MANY_TARGET_DESCRIPTORS: Asc = Asc(0x26, 0x06);
    pub const UNSUPPORTED_TARGET_DESCRIPTOR_TYPE_CODE: Asc = Asc(0x26, 0x07);
    pub const TOO_MANY_SEGMENT_DESCRIPTORS: Asc = Asc(0x26, 0x08);
    pub const UNSUPPORTED_SEGMENT_DESCRIPTOR_TYPE_CODE: Asc = Asc(0x26, 0x09);
    pub const WRITE_PROTECTED: Asc = Asc(0x27, 0x00);
    pub const SPACE_ALLOCATION_FAILED_WRITE_PROTECT: Asc = Asc(0x27, 0x07);
    pub const POWER_ON_RESET_OR_BUS_DEVICE_RESET: Asc = Asc(0x29, 0x00);
    pub const POWER_ON_OCCURRED: Asc = Asc(0x29, 0x01);
    pub const SCSI_BUS_RESET_OCCURRED: Asc = Asc(0x29, 0x02);
    pub const BUS_DEVICE_RESET_FUNCTION_OCCURRED: Asc = Asc(0x29, 0x03);
    pub const I_T_NEXUS_LOSS_OCCURRED: Asc = Asc(0x29, 0x07);
    pub const MODE_PARAMETERS_CHANGED: Asc = Asc(0x2a, 0x01);
    pub const RESERVATIONS_PREEMPTED: Asc = Asc(0x2a, 0x03);
    pub const RESERVATIONS_RELEASED: Asc = Asc(0x2a, 0x04);
    pub const REGISTRATIONS_PREEMPTED: Asc = Asc(0x2a, 0x05);
    pub const ASYMMETRIC_ACCESS_STATE_CHANGED: Asc = Asc(0x2a, 0x06);
    pub const CAPACITY_DATA_HAS_CHANGED: Asc = Asc(0x2a, 0x09);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Asc = Asc(0x39, 0x00);
    pub const SANITIZE_COMMAND_FAILED: Asc = Asc(0x31, 0x03);
    pub const MEDIUM_NOT_PRESENT: Asc = Asc(0x3a, 0x00);
    pub const REPORTED_LUNS_DATA_HAS_CHANGED: Asc = Asc(0x3f, 0x0e);
    pub const INTERNAL_TARGET_FAILURE: Asc = Asc(0x44, 0x00);
    pub const MEDIUM_REMOVAL_PREVENTED: Asc = Asc(0x53, 0x02);
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: Asc = Asc(0x55, 0x04);
}

/// Length of the fixed-format sense data this module produces.
pub const FIXED_SENSE_LEN: usize = 18;

/// One sense data record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: Asc,
    /// INFORMATION field (sets VALID). Fixed format holds 32 bits; larger
    /// values are not representable and are dropped (VALID stays 0).
    pub info: Option<u64>,
    /// Sense-key specific bytes 15..18 (SKSV is bit 7 of the first byte).
    pub sks: Option<[u8; 3]>,
}

impl Sense {
    pub const fn new(key: SenseKey, asc: Asc) -> Sense {
        Sense {
            key,
            asc,
            info: None,
            sks: None,
        }
    }

    pub const fn with_info(mut self, info: u64) -> Sense {
        self.info = Some(info);
        self
    }

    /// Sense-key specific field pointer for ILLEGAL REQUEST (SPC-4 4.5.2.4.2):
    /// `cdb` says whether the bad field is in the CDB (C/D=1) or in the
    /// parameter list; `bit` is the bit number when known.
    pub const fn with_field_pointer(mut self, cdb: bool, byte: u16, bit: Option<u8>) -> Sense {
        let mut b0 = 0x80u8;
        if cdb {
            b0 |= 0x40;
        }
        if let Some(bit) = bit {
            b0 |= 0x08 | (bit & 0x07);
        }
        let be = byte.to_be_bytes();
        self.sks = Some([b0, be[0], be[1]]);
        self
    }

    /// Sense-key specific progress indication (SPC-4 4.5.2.4.4), for NOT
    /// READY while a long operation runs: `done` out of 65536.
    pub const fn with_progress(mut self, done: u16) -> Sense {
        let be = done.to_be_bytes();
        self.sks = Some([0x80, be[0], be[1]]);
        self
    }

    /// Fixed-format (response code 0x70, current error) sense bytes.
    pub fn to_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut s = [0u8; FIXED_SENSE_LEN];
        s[0] = 0x70;
        if let Some(info) = self.info {
            if let Ok(v) = u32::try_from(info) {
                s[0] |= 0x80;
                s[3..7].copy_from_slice(&v.to_be_bytes());
            }
        }
        s[2] = self.key as u8;
        s[7] = (FIXED_SENSE_LEN - 8) as u8;
        s[12] = self.asc.0;
        s[13] = self.asc.1;
        if let Some(sks) = self.sks {
            s[15..18].copy_from_slice(&sks);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_layout() {
        let cases: &[(Sense, [u8; 18])] =
            &[
                (
                    Sense::new(
                        SenseKey::IllegalRequest,
                        Asc::INVALID_COMMAND_OPERATION_CODE,
                    ),
                    [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0],
                ),
                (
                    Sense::new(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY)
                        .with_info(0x01020304),
                    [
                        0xf0, 0, 0x0e, 1, 2, 3, 4, 10, 0, 0, 0, 0, 0x1d, 0, 0, 0, 0, 0,
                    ],
                ),
                (
                    Sense::new(SenseKey::UnitAttention, Asc::MODE_PARAMETERS_CHANGED),
                    [0x70, 0, 6, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x2a, 1, 0, 0, 0, 0],
                ),
                (
                    Sense::new(SenseKey::IllegalRequest, Asc::INVALID_FIELD_IN_CDB)
                        .with_field_pointer(true, 2, Some(3)),
                    [
                        0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xcb, 0, 2,
                    ],
                ),
                (
                    Sense::new(SenseKey::NotReady, Asc::LU_NOT_READY_SANITIZE_IN_PROGRESS)
                        .with_progress(0x8000),
                    [
                        0x70, 0, 2, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x04, 0x1b, 0, 0x80, 0x80, 0,
                    ],
                ),
                (
                    // INFORMATION too large for fixed format: VALID stays clear.
                    Sense::new(SenseKey::Miscompare, Asc::MISCOMPARE_DURING_VERIFY)
                        .with_info(1 << 40),
                    [
                        0x70, 0, 0x0e, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x1d, 0, 0, 0, 0, 0,
                    ],
                ),
            ];
        for (sense, want) in cases {
            assert_eq!(&sense.to_fixed(), want, "{sense:?}");
        }
    }
}
