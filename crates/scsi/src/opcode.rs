//! SCSI operation codes and service actions (SPC-4, SBC-3) as plain
//! constants: unknown opcodes are just bytes the core answers with INVALID
//! COMMAND OPERATION CODE, so no closed enum is needed on the wire side.

pub const TEST_UNIT_READY: u8 = 0x00;
pub const REQUEST_SENSE: u8 = 0x03;
pub const READ_6: u8 = 0x08;
pub const WRITE_6: u8 = 0x0a;
pub const INQUIRY: u8 = 0x12;
pub const MODE_SELECT_6: u8 = 0x15;
pub const RESERVE_6: u8 = 0x16;
pub const RELEASE_6: u8 = 0x17;
pub const MODE_SENSE_6: u8 = 0x1a;
pub const START_STOP_UNIT: u8 = 0x1b;
pub const SEND_DIAGNOSTIC: u8 = 0x1d;
pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
pub const READ_CAPACITY_10: u8 = 0x25;
pub const READ_10: u8 = 0x28;
pub const WRITE_10: u8 = 0x2a;
pub const WRITE_AND_VERIFY_10: u8 = 0x2e;
pub const VERIFY_10: u8 = 0x2f;
pub const PRE_FETCH_10: u8 = 0x34;
pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
pub const READ_DEFECT_DATA_10: u8 = 0x37;
pub const WRITE_BUFFER: u8 = 0x3b;
pub const READ_BUFFER: u8 = 0x3c;
pub const WRITE_SAME_10: u8 = 0x41;
pub const UNMAP: u8 = 0x42;
pub const SANITIZE: u8 = 0x48;
pub const LOG_SELECT: u8 = 0x4c;
pub const LOG_SENSE: u8 = 0x4d;
pub const MODE_SELECT_10: u8 = 0x55;
pub const RESERVE_10: u8 = 0x56;
pub const RELEASE_10: u8 = 0x57;
pub const MODE_SENSE_10: u8 = 0x5a;
pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
pub const EXTENDED_COPY: u8 = 0x83;
pub const RECEIVE_COPY_RESULTS: u8 = 0x84;
pub const READ_16: u8 = 0x88;
pub const COMPARE_AND_WRITE: u8 = 0x89;
pub const WRITE_16: u8 = 0x8a;
pub const ORWRITE_16: u8 = 0x8b;
pub const WRITE_AND_VERIFY_16: u8 = 0x8e;
pub const VERIFY_16: u8 = 0x8f;
pub const PRE_FETCH_16: u8 = 0x90;
pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
pub const WRITE_SAME_16: u8 = 0x93;
pub const WRITE_ATOMIC_16: u8 = 0x9c;
pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
pub const REPORT_LUNS: u8 = 0xa0;
pub const MAINTENANCE_IN: u8 = 0xa3;
pub const MAINTENANCE_OUT: u8 = 0xa4;
pub const READ_12: u8 = 0xa8;
pub const WRITE_12: u8 = 0xaa;
pub const WRITE_AND_VERIFY_12: u8 = 0xae;
pub const VERIFY_12: u8 = 0xaf;
pub const READ_DEFECT_DATA_12: u8 = 0xb7;

/// SERVICE ACTION IN(16) service actions.
pub const SAI_READ_CAPACITY_16: u8 = 0x10;
pub const SAI_GET_LBA_STATUS: u8 = 0x12;

/// MAINTENANCE IN service actions.
pub const MI_REPORT_TARGET_PORT_GROUPS: u8 = 0x0a;
pub const MI_REPORT_SUPPORTED_OPCODES: u8 = 0x0c;
pub const MI_REPORT_SUPPORTED_TMFS: u8 = 0x0d;

/// CDB length implied by the opcode's group code (SPC-4 4.2.5.1), or `None`
/// for variable-length and vendor-specific groups.
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        _ => None,
    }
}

/// READ (6/10/12/16): the block reads every fast path special-cases.
pub fn is_read(opcode: u8) -> bool {
    matches!(opcode, READ_6 | READ_10 | READ_12 | READ_16)
}

/// READ or WRITE (6/10/12/16).
pub fn is_read_write(opcode: u8) -> bool {
    is_read(opcode) || matches!(opcode, WRITE_6 | WRITE_10 | WRITE_12 | WRITE_16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_codes_give_cdb_lengths() {
        let cases = [
            (TEST_UNIT_READY, Some(6)),
            (MODE_SENSE_6, Some(6)),
            (READ_10, Some(10)),
            (MODE_SENSE_10, Some(10)),
            (READ_16, Some(16)),
            (REPORT_LUNS, Some(12)),
            (READ_12, Some(12)),
            (0x7f, None),
            (0xc0, None),
        ];
        for (op, want) in cases {
            assert_eq!(cdb_len(op), want, "opcode {op:#04x}");
        }
    }

    #[test]
    fn reads_and_writes_are_told_apart() {
        for op in [READ_6, READ_10, READ_12, READ_16] {
            assert!(is_read(op) && is_read_write(op), "{op:#04x}");
        }
        for op in [WRITE_6, WRITE_10, WRITE_12, WRITE_16] {
            assert!(!is_read(op) && is_read_write(op), "{op:#04x}");
        }
        assert!(!is_read_write(0x00) && !is_read_write(0x35));
    }
}
