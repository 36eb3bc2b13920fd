//! Consistency of a SCSI Command PDU's F, R and W bits with its Expected
//! Data Transfer Length and immediate data (RFC 7143 11.3.1), checked before
//! the command is run. The policy is LIO's (`iscsit_setup_scsi_cmd`), the
//! target Linux initiators are tested against:
//!
//! - refused with a Reject (Invalid PDU Field): F clear without W (only a
//!   write may have more PDUs, its unsolicited Data-Out, after the command);
//!   neither R nor W while EDTL is not 0 (no direction for the data); both R
//!   and W (a bidirectional command, which no LU here implements);
//! - refused with a Reject (Protocol Error): F clear when the immediate data
//!   already is the whole EDTL (the Data-Out the initiator announces has no
//!   room left);
//! - accepted: R or W with EDTL 0 (RFC 7143 allows it); W on a command whose
//!   CDB moves data in (a READ): it answers GOOD after taking the Data-Out,
//!   as LIO and tgt do and libiscsi's iSCSIResiduals.Read10Invalid expects,
//!   and the core runs the CDB for what it is, so the Data-Out never reaches
//!   the medium (LIO's backends would write it) and no Data-In is sent.
//!
//! The other immediate-data checks (ImmediateData=No, a non-write, beyond
//! EDTL or FirstBurstLength) stay where the data is taken (`session.rs`).

use iscsi_wire::request::ScsiCommand;
use iscsi_wire::response::RejectReason;

/// Why `c`, carrying `imm_len` bytes of immediate data, must be rejected.
pub fn fault(c: &ScsiCommand, imm_len: usize) -> Option<RejectReason> {
    let edtl = c.expected_data_len;
    if !c.final_bit && !c.write {
        return Some(RejectReason::INVALID_PDU_FIELD);
    }
    if edtl != 0 && !c.read && !c.write {
        return Some(RejectReason::INVALID_PDU_FIELD);
    }
    if edtl != 0 && c.read && c.write {
        return Some(RejectReason::INVALID_PDU_FIELD);
    }
    if !c.final_bit && edtl != 0 && imm_len as u64 == u64::from(edtl) {
        return Some(RejectReason::PROTOCOL_ERROR);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(final_bit: bool, read: bool, write: bool, edtl: u32) -> ScsiCommand {
        ScsiCommand {
            final_bit,
            read,
            write,
            expected_data_len: edtl,
            immediate: false,
            attr: iscsi_wire::request::Attr::Simple,
            lun: [0; 8],
            itt: 1,
            cmdsn: 1,
            exp_statsn: 1,
            cdb: [0; 16],
        }
    }

    #[test]
    fn consistent_flags_pass() {
        assert_eq!(fault(&cmd(true, true, false, 512), 0), None);
        assert_eq!(fault(&cmd(true, false, true, 512), 512), None);
        // More Data-Out follows.
        assert_eq!(fault(&cmd(false, false, true, 4096), 512), None);
        assert_eq!(fault(&cmd(true, false, false, 0), 0), None);
        // R or W with nothing to move: allowed.
        assert_eq!(fault(&cmd(true, true, false, 0), 0), None);
        assert_eq!(fault(&cmd(true, false, true, 0), 0), None);
        assert_eq!(fault(&cmd(true, true, true, 0), 0), None);
    }

    #[test]
    fn inconsistent_flags_are_refused() {
        let invalid = Some(RejectReason::INVALID_PDU_FIELD);
        assert_eq!(fault(&cmd(false, true, false, 512), 0), invalid);
        assert_eq!(fault(&cmd(false, false, false, 0), 0), invalid);
        assert_eq!(fault(&cmd(true, false, false, 512), 0), invalid);
        assert_eq!(fault(&cmd(true, true, true, 512), 0), invalid);
        assert_eq!(
            fault(&cmd(false, false, true, 512), 512),
            Some(RejectReason::PROTOCOL_ERROR)
        );
    }
}
