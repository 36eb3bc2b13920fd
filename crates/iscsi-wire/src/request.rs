//! Views of the PDUs an initiator sends (RFC 7143 §11): SCSI Command,
//! Data-Out, NOP-Out, Login, Text, Logout, Task Management and SNACK
//! requests. Each view parses from and writes to a [`Bhs`]; parsing is
//! infallible (reserved bits are ignored) and writing sets the opcode.

use crate::bhs::{set_bit, Bhs, Opcode};

/// SCSI task attribute as carried in the SCSI Command PDU (ATTR field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attr {
    Untagged,
    Simple,
    Ordered,
    HeadOfQueue,
    Aca,
    /// Reserved values 5..7, kept so callers can reject them.
    Reserved(u8),
}

impl Attr {
    pub fn from_bits(v: u8) -> Attr {
        match v & 7 {
            0 => Attr::Untagged,
            1 => Attr::Simple,
            2 => Attr::Ordered,
            3 => Attr::HeadOfQueue,
            4 => Attr::Aca,
            n => Attr::Reserved(n),
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Attr::Untagged => 0,
            Attr::Simple => 1,
            Attr::Ordered => 2,
            Attr::HeadOfQueue => 3,
            Attr::Aca => 4,
            Attr::Reserved(n) => n & 7,
        }
    }
}

/// SCSI Command (opcode 0x01).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiCommand {
    pub immediate: bool,
    pub final_bit: bool,
    pub read: bool,
    pub write: bool,
    pub attr: Attr,
    pub lun: [u8; 8],
    pub itt: u32,
    pub expected_data_len: u32,
    pub cmdsn: u32,
    pub exp_statsn: u32,
    pub cdb: [u8; 16],
}

impl ScsiCommand {
    pub fn parse(b: &Bhs) -> ScsiCommand {
        let mut cdb = [0u8; 16];
        cdb.copy_from_slice(&b.0[32..48]);
        ScsiCommand {
            immediate: b.immediate(),
            final_bit: b.final_bit(),
            read: b.flags() & 0x40 != 0,
            write: b.flags() & 0x20 != 0,
            attr: Attr::from_bits(b.flags()),
            lun: b.lun(),
            itt: b.itt(),
            expected_data_len: b.u32_at(20),
            cmdsn: b.u32_at(24),
            exp_statsn: b.u32_at(28),
            cdb,
        }
    }

    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::SCSI_COMMAND.0;
        b.set_immediate(self.immediate);
        let mut f = self.attr.bits();
        set_bit(&mut f, 0x80, self.final_bit);
        set_bit(&mut f, 0x40, self.read);
        set_bit(&mut f, 0x20, self.write);
        b.set_flags(f);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.expected_data_len);
        b.set_u32_at(24, self.cmdsn);
        b.set_u32_at(28, self.exp_statsn);
        b.0[32..48].copy_from_slice(&self.cdb);
    }
}

/// SCSI Data-Out (opcode 0x05).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataOut {
    pub final_bit: bool,
    pub lun: [u8; 8],
    pub itt: u32,
    pub ttt: u32,
    pub exp_statsn: u32,
    pub datasn: u32,
    pub buffer_offset: u32,
}

impl DataOut {
    pub fn parse(b: &Bhs) -> DataOut {
        DataOut {
            final_bit: b.final_bit(),
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            exp_statsn: b.u32_at(28),
            datasn: b.u32_at(36),
            buffer_offset: b.u32_at(40),
        }
    }

    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::DATA_OUT.0;
        b.set_flags(if self.final_bit { 0x80 } else { 0 });
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(28, self.exp_statsn);
        b.set_u32_at(36, self.datasn);
        b.set_u32_at(40, self.buffer_offset);
    }
}

/// NOP-Out (opcode 0x00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NopOut {
    pub immediate: bool,
    pub lun: [u8; 8],
    pub itt: u32,
    pub ttt: u32,
    pub cmdsn: u32,
    pub exp_statsn: u32,
}

impl NopOut {
    pub fn parse(b: &Bhs) -> NopOut {
        NopOut {
            immediate: b.immediate(),
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            cmdsn: b.u32_at(24),
            exp_statsn: b.u32_at(28),
        }
    }

    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::NOP_OUT.0;
        b.set_immediate(self.immediate);
        b.set_flags(0x80);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(24, self.cmdsn);
        b.set_u32_at(28, self.exp_statsn);
    }
}

/// Login Request (opcode 0x03).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest {
    pub transit: bool,
    pub cont: bool,
    /// Current stage (0 security, 1 operational, 3 full feature).
    pub csg: u8,
    /// Next stage, meaningful only with `transit`.
    pub nsg: u8,
    pub version_max: u8,
    pub version_min: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub cid: u16,
    pub cmdsn: u32,
    pub exp_statsn: u32,
}

impl LoginRequest {
    pub fn parse(b: &Bhs) -> LoginRequest {
        let mut isid = [0u8; 6];
        isid.copy_from_slice(&b.0[8..14]);
        LoginRequest {
            transit: b.flags() & 0x80 != 0,
            cont: b.flags() & 0x40 != 0,
            csg: (b.flags() >> 2) & 3,
            nsg: b.flags() & 3,
            version_max: b.0[2],
            version_min: b.0[3],
            isid,
            tsih: b.u16_at(14),
            itt: b.itt(),
            cid: b.u16_at(20),
            cmdsn: b.u32_at(24),
            exp_statsn: b.u32_at(28),
        }
    }

    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::LOGIN_REQUEST.0;
        // Login requests are always immediate (RFC 7143 §11.12).
        b.set_immediate(true);
        let mut f = ((self.csg & 3) << 2) | (self.nsg & 3);
        set_bit(&mut f, 0x80, self.transit);
        set_bit(&mut f, 0x40, self.cont);
        b.set_flags(f);
        b.0[2] = self.version_max;
        b.0[3] = self.version_min;
        b.0[8..14].copy_from_slice(&self.isid);
        b.set_u16_at(14, self.tsih);
        b.set_itt(self.itt);
        b.set_u16_at(20, self.cid);
        b.set_u32_at(24, self.cmdsn);
        b.set_u32_at(28, self.exp_statsn);
    }
}

/// Text Request (opcode 0x04).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextRequest {
    pub immediate: bool,
    pub final_bit: bool,
    pub cont: bool,
    pub lun: [u8; 8],
    pub itt: u32,
    pub ttt: u32,
    pub cmdsn: u32,
    pub exp_statsn: u32,
}

impl TextRequest {
    pub fn parse(b: &Bhs) -> TextRequest {
        TextRequest {
            immediate: b.immediate(),
            final_bit: b.final_bit(),
            cont: b.flags() & 0x40 != 0,
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            cmdsn: b.u32_at(24),
            exp_statsn: b.u32_at(28),
        }
    }

    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::TEXT_REQUEST.0;
        b.set_immediate(self.immediate);
        let mut f = 0;
        set_bit(&mut f, 0x80, self.final_bit);
        set_bit(&mut f, 0x40, self.cont);
        b.set_flags(f);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(24, self.cmdsn);
        b.set_u32_at(28, self.exp_statsn);
    }
}

/// Logout Request (opcode 0x06).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutRequest {
    pub immediate: bool,
    /// 0 close session, 1 close connection, 2 remove connection for recovery.
    pub reason: u8,
    pub itt: u32,
    pub cid: u16,
    pub cmdsn: u32,
    pub exp_statsn: u32,
}

impl LogoutRequest {
    pub fn parse(b: &Bhs) -> LogoutRequest {
        LogoutRequest {
            immediate: b.immediate(),
            reason: b.flags() & 0x7f,
            itt: b.itt(),
            cid: b.u16_at(20),
            cmdsn: b.u32_at(24),
            exp_statsn: b.u32_at(28),
        }
    }

    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::LOGOUT_REQUEST.0;
        b.set_immediate(self.immediate);
        b.set_flags(0x80 | (self.reason & 0x7f));
        b.set_itt(self.itt);
        b.set_u16_at(20, self.cid);
        b.set_u32_at(24, self.cmdsn);
        b.set_u32_at(28, self.exp_statsn);
    }
}

/// Task Management Function Request (opcode 0x02).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMgmtRequest {
    pub immediate: bool,
    /// Function code 1..=8 (and reserved values, kept for the response).
    pub function: u8,
    pub lun: [u8; 8],
    pub itt: u32,
    pub referenced_tag: u32,
    pub cmdsn: u32,
    pub exp_statsn: u32,
    pub ref_cmdsn: u32,
    pub exp_datasn: u32,
}

impl TaskMgmtRequest {
    pub fn parse(b: &Bhs) -> TaskMgmtRequest {
        TaskMgmtRequest {
            immediate: b.immediate(),
            function: b.flags() & 0x7f,
            lun: b.lun(),
            itt: b.itt(),
            referenced_tag: b.u32_at(20),
            cmdsn: b.u32_at(24),
            exp_statsn: b.u32_at(28),
            ref_cmdsn: b.u32_at(32),
            exp_datasn: b.u32_at(36),
        }
    }

    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::TASK_MGMT_REQUEST.0;
        b.set_immediate(self.immediate);
        b.set_flags(0x80 | (self.function & 0x7f));
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.referenced_tag);
        b.set_u32_at(24, self.cmdsn);
        b.set_u32_at(28, self.exp_statsn);
        b.set_u32_at(32, self.ref_cmdsn);
        b.set_u32_at(36, self.exp_datasn);
    }
}

/// SNACK Request (opcode 0x10); ERL 0 targets reject it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnackRequest {
    pub snack_type: u8,
    pub lun: [u8; 8],
    pub itt: u32,
    pub ttt: u32,
    pub exp_statsn: u32,
    pub beg_run: u32,
    pub run_length: u32,
}

impl SnackRequest {
    pub fn parse(b: &Bhs) -> SnackRequest {
        SnackRequest {
            snack_type: b.flags() & 0x0f,
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            exp_statsn: b.u32_at(28),
            beg_run: b.u32_at(40),
            run_length: b.u32_at(44),
        }
    }

    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::SNACK_REQUEST.0;
        b.set_flags(0x80 | (self.snack_type & 0x0f));
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        b.set_u32_at(28, self.exp_statsn);
        b.set_u32_at(40, self.beg_run);
        b.set_u32_at(44, self.run_length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scsi_command_round_trip_and_layout() {
        let c = ScsiCommand {
            immediate: false,
            final_bit: true,
            read: true,
            write: false,
            attr: Attr::Simple,
            lun: [0, 1, 0, 0, 0, 0, 0, 0],
            itt: 0x11223344,
            expected_data_len: 4096,
            cmdsn: 7,
            exp_statsn: 9,
            cdb: [0x28, 0, 0, 0, 0, 1, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0],
        };
        let mut b = Bhs::default();
        c.write_to(&mut b);
        assert_eq!(b.0[0], 0x01);
        assert_eq!(b.0[1], 0xc1);
        assert_eq!(&b.0[20..24], &4096u32.to_be_bytes());
        assert_eq!(b.0[32], 0x28);
        assert_eq!(ScsiCommand::parse(&b), c);
    }

    #[test]
    fn login_request_round_trip_and_layout() {
        let l = LoginRequest {
            transit: true,
            cont: false,
            csg: 1,
            nsg: 3,
            version_max: 0,
            version_min: 0,
            isid: [0x23, 0xd0, 0, 0, 0, 1],
            tsih: 0,
            itt: 1,
            cid: 0,
            cmdsn: 1,
            exp_statsn: 0,
        };
        let mut b = Bhs::default();
        l.write_to(&mut b);
        assert_eq!(b.0[0], 0x43);
        assert_eq!(b.0[1], 0x87);
        assert_eq!(LoginRequest::parse(&b), l);
    }

    #[test]
    fn other_requests_round_trip() {
        let mut b = Bhs::default();
        let d = DataOut {
            final_bit: true,
            lun: [0; 8],
            itt: 3,
            ttt: 4,
            exp_statsn: 5,
            datasn: 6,
            buffer_offset: 8192,
        };
        d.write_to(&mut b);
        assert_eq!(DataOut::parse(&b), d);
        let n = NopOut {
            immediate: true,
            lun: [0; 8],
            itt: 1,
            ttt: 0xffff_ffff,
            cmdsn: 2,
            exp_statsn: 3,
        };
        let mut b = Bhs::default();
        n.write_to(&mut b);
        assert_eq!(NopOut::parse(&b), n);
        let t = TextRequest {
            immediate: true,
            final_bit: true,
            cont: false,
            lun: [0; 8],
            itt: 9,
            ttt: 0xffff_ffff,
            cmdsn: 1,
            exp_statsn: 2,
        };
        let mut b = Bhs::default();
        t.write_to(&mut b);
        assert_eq!(TextRequest::parse(&b), t);
        let lo = LogoutRequest {
            immediate: true,
            reason: 1,
            itt: 5,
            cid: 0,
            cmdsn: 3,
            exp_statsn: 4,
        };
        let mut b = Bhs::default();
        lo.write_to(&mut b);
        assert_eq!(LogoutRequest::parse(&b), lo);
        let tm = TaskMgmtRequest {
            immediate: true,
            function: 5,
            lun: [0, 2, 0, 0, 0, 0, 0, 0],
            itt: 6,
            referenced_tag: 0xffff_ffff,
            cmdsn: 1,
            exp_statsn: 1,
            ref_cmdsn: 0,
            exp_datasn: 0,
        };
        let mut b = Bhs::default();
        tm.write_to(&mut b);
        assert_eq!(TaskMgmtRequest::parse(&b), tm);
        let s = SnackRequest {
            snack_type: 1,
            lun: [0; 8],
            itt: 1,
            ttt: 2,
            exp_statsn: 3,
            beg_run: 4,
            run_length: 5,
        };
        let mut b = Bhs::default();
        s.write_to(&mut b);
        assert_eq!(SnackRequest::parse(&b), s);
    }

    #[test]
    fn reserved_attr_survives() {
        assert_eq!(Attr::from_bits(6), Attr::Reserved(6));
        assert_eq!(Attr::Reserved(6).bits(), 6);
    }
}
