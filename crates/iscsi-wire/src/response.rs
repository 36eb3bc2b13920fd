//! Views of the PDUs a target sends (RFC 7143 §11): SCSI Response, Data-In,
//! R2T, NOP-In, Login/Text/Logout responses, Task Management response,
//! Reject and Asynchronous Message. Each writes itself into a [`Bhs`] and
//! parses back (initiator-side tests use the parse half).

use crate::bhs::{set_bit, Bhs, Opcode};

/// The sequence numbers every target PDU carries at bytes 24..36.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnFields {
    pub statsn: u32,
    pub exp_cmdsn: u32,
    pub max_cmdsn: u32,
}

impl SnFields {
    fn parse(b: &Bhs) -> SnFields {
        SnFields {
            statsn: b.u32_at(24),
            exp_cmdsn: b.u32_at(28),
            max_cmdsn: b.u32_at(32),
        }
    }

    fn write(&self, b: &mut Bhs) {
        b.set_u32_at(24, self.statsn);
        b.set_u32_at(28, self.exp_cmdsn);
        b.set_u32_at(32, self.max_cmdsn);
    }
}

/// Residual flags shared by SCSI Response and Data-In.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Residual {
    pub overflow: bool,
    pub underflow: bool,
    pub count: u32,
}

impl Residual {
    /// Residual for a transfer of `actual` bytes when `expected` were expected.
    pub fn of(expected: u32, actual: u64) -> Residual {
        let exp = u64::from(expected);
        if actual > exp {
            Residual {
                overflow: true,
                underflow: false,
                count: u32::try_from(actual - exp).unwrap_or(u32::MAX),
            }
        } else if actual < exp {
            Residual {
                overflow: false,
                underflow: true,
                count: (exp - actual) as u32,
            }
        } else {
            Residual::default()
        }
    }
}

/// SCSI Response (opcode 0x21).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiResponse {
    /// 0x00 command completed at target, 0x01 target failure.
    pub response: u8,
    pub status: u8,
    pub residual: Residual,
    pub itt: u32,
    pub sn: SnFields,
    pub exp_datasn: u32,
}

impl ScsiResponse {
    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::SCSI_RESPONSE.0;
        let mut f = 0x80;
        set_bit(&mut f, 0x04, self.residual.overflow);
        set_bit(&mut f, 0x02, self.residual.underflow);
        b.set_flags(f);
        b.0[2] = self.response;
        b.0[3] = self.status;
        b.set_itt(self.itt);
        self.sn.write(b);
        b.set_u32_at(36, self.exp_datasn);
        b.set_u32_at(44, self.residual.count);
    }

    pub fn parse(b: &Bhs) -> ScsiResponse {
        ScsiResponse {
            response: b.0[2],
            status: b.0[3],
            residual: Residual {
                overflow: b.flags() & 0x04 != 0,
                underflow: b.flags() & 0x02 != 0,
                count: b.u32_at(44),
            },
            itt: b.itt(),
            sn: SnFields::parse(b),
            exp_datasn: b.u32_at(36),
        }
    }
}

/// SCSI Data-In (opcode 0x25). `status` is `Some` when the S bit is set
/// (then the F bit must be set too and StatSN is meaningful).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataIn {
    pub final_bit: bool,
    pub status: Option<u8>,
    pub residual: Residual,
    pub lun: [u8; 8],
    pub itt: u32,
    pub ttt: u32,
    pub sn: SnFields,
    pub datasn: u32,
    pub buffer_offset: u32,
}

impl DataIn {
    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::DATA_IN.0;
        let mut f = 0;
        set_bit(&mut f, 0x80, self.final_bit);
        set_bit(&mut f, 0x01, self.status.is_some());
        if self.status.is_some() {
            set_bit(&mut f, 0x04, self.residual.overflow);
            set_bit(&mut f, 0x02, self.residual.underflow);
        }
        b.set_flags(f);
        b.0[3] = self.status.unwrap_or(0);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        self.sn.write(b);
        b.set_u32_at(36, self.datasn);
        b.set_u32_at(40, self.buffer_offset);
        b.set_u32_at(
            44,
            if self.status.is_some() {
                self.residual.count
            } else {
                0
            },
        );
    }

    pub fn parse(b: &Bhs) -> DataIn {
        let s = b.flags() & 0x01 != 0;
        DataIn {
            final_bit: b.final_bit(),
            status: s.then_some(b.0[3]),
            residual: Residual {
                overflow: b.flags() & 0x04 != 0,
                underflow: b.flags() & 0x02 != 0,
                count: b.u32_at(44),
            },
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            sn: SnFields::parse(b),
            datasn: b.u32_at(36),
            buffer_offset: b.u32_at(40),
        }
    }
}

/// Ready To Transfer (opcode 0x31). `sn.statsn` carries the next StatSN
/// without advancing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    pub lun: [u8; 8],
    pub itt: u32,
    pub ttt: u32,
    pub sn: SnFields,
    pub r2tsn: u32,
    pub buffer_offset: u32,
    pub desired_len: u32,
}

impl R2t {
    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::R2T.0;
        b.set_flags(0x80);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        self.sn.write(b);
        b.set_u32_at(36, self.r2tsn);
        b.set_u32_at(40, self.buffer_offset);
        b.set_u32_at(44, self.desired_len);
    }

    pub fn parse(b: &Bhs) -> R2t {
        R2t {
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            sn: SnFields::parse(b),
            r2tsn: b.u32_at(36),
            buffer_offset: b.u32_at(40),
            desired_len: b.u32_at(44),
        }
    }
}

/// NOP-In (opcode 0x20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NopIn {
    pub lun: [u8; 8],
    pub itt: u32,
    pub ttt: u32,
    pub sn: SnFields,
}

impl NopIn {
    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::NOP_IN.0;
        b.set_flags(0x80);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        self.sn.write(b);
    }

    pub fn parse(b: &Bhs) -> NopIn {
        NopIn {
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            sn: SnFields::parse(b),
        }
    }
}

/// Login Response (opcode 0x23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginResponse {
    pub transit: bool,
    pub cont: bool,
    pub csg: u8,
    pub nsg: u8,
    pub version_max: u8,
    pub version_active: u8,
    pub isid: [u8; 6],
    pub tsih: u16,
    pub itt: u32,
    pub sn: SnFields,
    pub status_class: u8,
    pub status_detail: u8,
}

impl LoginResponse {
    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::LOGIN_RESPONSE.0;
        let mut f = ((self.csg & 3) << 2) | (self.nsg & 3);
        set_bit(&mut f, 0x80, self.transit);
        set_bit(&mut f, 0x40, self.cont);
        b.set_flags(f);
        b.0[2] = self.version_max;
        b.0[3] = self.version_active;
        b.0[8..14].copy_from_slice(&self.isid);
        b.set_u16_at(14, self.tsih);
        b.set_itt(self.itt);
        self.sn.write(b);
        b.0[36] = self.status_class;
        b.0[37] = self.status_detail;
    }

    pub fn parse(b: &Bhs) -> LoginResponse {
        let mut isid = [0u8; 6];
        isid.copy_from_slice(&b.0[8..14]);
        LoginResponse {
            transit: b.flags() & 0x80 != 0,
            cont: b.flags() & 0x40 != 0,
            csg: (b.flags() >> 2) & 3,
            nsg: b.flags() & 3,
            version_max: b.0[2],
            version_active: b.0[3],
            isid,
            tsih: b.u16_at(14),
            itt: b.itt(),
            sn: SnFields::parse(b),
            status_class: b.0[36],
            status_detail: b.0[37],
        }
    }
}

/// Text Response (opcode 0x24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextResponse {
    pub final_bit: bool,
    pub cont: bool,
    pub lun: [u8; 8],
    pub itt: u32,
    pub ttt: u32,
    pub sn: SnFields,
}

impl TextResponse {
    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::TEXT_RESPONSE.0;
        let mut f = 0;
        set_bit(&mut f, 0x80, self.final_bit);
        set_bit(&mut f, 0x40, self.cont);
        b.set_flags(f);
        b.set_lun(self.lun);
        b.set_itt(self.itt);
        b.set_u32_at(20, self.ttt);
        self.sn.write(b);
    }

    pub fn parse(b: &Bhs) -> TextResponse {
        TextResponse {
            final_bit: b.final_bit(),
            cont: b.flags() & 0x40 != 0,
            lun: b.lun(),
            itt: b.itt(),
            ttt: b.u32_at(20),
            sn: SnFields::parse(b),
        }
    }
}

/// Logout Response (opcode 0x26).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutResponse {
    /// 0 closed successfully, 1 CID not found, 2 recovery not supported,
    /// 3 cleanup failed.
    pub response: u8,
    pub itt: u32,
    pub sn: SnFields,
    pub time2wait: u16,
    pub time2retain: u16,
}

impl LogoutResponse {
    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::LOGOUT_RESPONSE.0;
        b.set_flags(0x80);
        b.0[2] = self.response;
        b.set_itt(self.itt);
        self.sn.write(b);
        b.set_u16_at(40, self.time2wait);
        b.set_u16_at(42, self.time2retain);
    }

    pub fn parse(b: &Bhs) -> LogoutResponse {
        LogoutResponse {
            response: b.0[2],
            itt: b.itt(),
            sn: SnFields::parse(b),
            time2wait: b.u16_at(40),
            time2retain: b.u16_at(42),
        }
    }
}

/// Task Management Function Response (opcode 0x22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskMgmtResponse {
    /// 0 complete, 1 task does not exist, 2 LUN does not exist, 3 task still
    /// allegiant, 4 reassignment not supported, 5 not supported,
    /// 6 authorization failed, 255 rejected.
    pub response: u8,
    pub itt: u32,
    pub sn: SnFields,
}

impl TaskMgmtResponse {
    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::TASK_MGMT_RESPONSE.0;
        b.set_flags(0x80);
        b.0[2] = self.response;
        b.set_itt(self.itt);
        self.sn.write(b);
    }

    pub fn parse(b: &Bhs) -> TaskMgmtResponse {
        TaskMgmtResponse {
            response: b.0[2],
            itt: b.itt(),
            sn: SnFields::parse(b),
        }
    }
}

/// Reject reasons (RFC 7143 §11.17.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectReason(pub u8);

impl RejectReason {
    pub const DATA_DIGEST_ERROR: RejectReason = RejectReason(0x02);
    pub const SNACK_REJECT: RejectReason = RejectReason(0x03);
    pub const PROTOCOL_ERROR: RejectReason = RejectReason(0x04);
    pub const COMMAND_NOT_SUPPORTED: RejectReason = RejectReason(0x05);
    pub const IMMEDIATE_COMMAND_REJECT: RejectReason = RejectReason(0x06);
    pub const TASK_IN_PROGRESS: RejectReason = RejectReason(0x07);
    pub const INVALID_DATA_ACK: RejectReason = RejectReason(0x08);
    pub const INVALID_PDU_FIELD: RejectReason = RejectReason(0x09);
    pub const LONG_OPERATION_REJECT: RejectReason = RejectReason(0x0a);
    pub const WAITING_FOR_LOGOUT: RejectReason = RejectReason(0x0c);
}

/// Reject (opcode 0x3f); its data segment is the rejected PDU's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub reason: RejectReason,
    pub sn: SnFields,
    pub datasn_r2tsn: u32,
}

impl Reject {
    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::REJECT.0;
        b.set_flags(0x80);
        b.0[2] = self.reason.0;
        b.set_itt(0xffff_ffff);
        self.sn.write(b);
        b.set_u32_at(36, self.datasn_r2tsn);
    }

    pub fn parse(b: &Bhs) -> Reject {
        Reject {
            reason: RejectReason(b.0[2]),
            sn: SnFields::parse(b),
            datasn_r2tsn: b.u32_at(36),
        }
    }
}

/// Asynchronous Message (opcode 0x32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncMessage {
    pub lun: [u8; 8],
    pub sn: SnFields,
    /// 0 SCSI async event, 1 logout request, 2 connection drop,
    /// 3 session drop, 4 parameter negotiation request, 255 vendor.
    pub event: u8,
    pub vcode: u8,
    pub param1: u16,
    pub param2: u16,
    pub param3: u16,
}

impl AsyncMessage {
    pub const EVENT_LOGOUT_REQUEST: u8 = 1;

    pub fn write_to(&self, b: &mut Bhs) {
        b.0[0] = Opcode::ASYNC_MESSAGE.0;
        b.set_flags(0x80);
        b.set_lun(self.lun);
        b.set_itt(0xffff_ffff);
        self.sn.write(b);
        b.0[36] = self.event;
        b.0[37] = self.vcode;
        b.set_u16_at(38, self.param1);
        b.set_u16_at(40, self.param2);
        b.set_u16_at(42, self.param3);
    }

    pub fn parse(b: &Bhs) -> AsyncMessage {
        AsyncMessage {
            lun: b.lun(),
            sn: SnFields::parse(b),
            event: b.0[36],
            vcode: b.0[37],
            param1: b.u16_at(38),
            param2: b.u16_at(40),
            param3: b.u16_at(42),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sn() -> SnFields {
        SnFields {
            statsn: 10,
            exp_cmdsn: 20,
            max_cmdsn: 147,
        }
    }

    #[test]
    fn residual_table() {
        let cases = [
            (512u32, 512u64, false, false, 0u32),
            (512, 256, false, true, 256),
            (256, 512, true, false, 256),
            (0, 36, true, false, 36),
        ];
        for (e, a, o, u, c) in cases {
            let r = Residual::of(e, a);
            assert_eq!((r.overflow, r.underflow, r.count), (o, u, c), "{e} {a}");
        }
    }

    #[test]
    fn data_in_with_status_layout() {
        let d = DataIn {
            final_bit: true,
            status: Some(0),
            residual: Residual::of(1024, 512),
            lun: [0; 8],
            itt: 7,
            ttt: 0xffff_ffff,
            sn: sn(),
            datasn: 2,
            buffer_offset: 512,
        };
        let mut b = Bhs::default();
        d.write_to(&mut b);
        assert_eq!(b.0[0], 0x25);
        assert_eq!(b.0[1], 0x83);
        assert_eq!(b.u32_at(44), 512);
        assert_eq!(DataIn::parse(&b), d);
    }

    #[test]
    fn data_in_without_status_has_no_residual() {
        let d = DataIn {
            final_bit: false,
            status: None,
            residual: Residual::of(1024, 512),
            lun: [0; 8],
            itt: 7,
            ttt: 0xffff_ffff,
            sn: sn(),
            datasn: 0,
            buffer_offset: 0,
        };
        let mut b = Bhs::default();
        d.write_to(&mut b);
        assert_eq!(b.0[1], 0x00);
        assert_eq!(b.u32_at(44), 0);
    }

    #[test]
    fn responses_round_trip() {
        let mut b = Bhs::default();
        let r = ScsiResponse {
            response: 0,
            status: 2,
            residual: Residual::of(10, 4),
            itt: 3,
            sn: sn(),
            exp_datasn: 0,
        };
        r.write_to(&mut b);
        assert_eq!(b.0[1], 0x82);
        assert_eq!(ScsiResponse::parse(&b), r);

        let mut b = Bhs::default();
        let r = R2t {
            lun: [0; 8],
            itt: 1,
            ttt: 2,
            sn: sn(),
            r2tsn: 3,
            buffer_offset: 4,
            desired_len: 5,
        };
        r.write_to(&mut b);
        assert_eq!(R2t::parse(&b), r);

        let mut b = Bhs::default();
        let l = LoginResponse {
            transit: true,
            cont: false,
            csg: 1,
            nsg: 3,
            version_max: 0,
            version_active: 0,
            isid: [1, 2, 3, 4, 5, 6],
            tsih: 9,
            itt: 1,
            sn: sn(),
            status_class: 2,
            status_detail: 3,
        };
        l.write_to(&mut b);
        assert_eq!(b.0[36], 2);
        assert_eq!(LoginResponse::parse(&b), l);

        let mut b = Bhs::default();
        let a = AsyncMessage {
            lun: [0; 8],
            sn: sn(),
            event: 1,
            vcode: 0,
            param1: 0,
            param2: 0,
            param3: 5,
        };
        a.write_to(&mut b);
        assert_eq!(b.itt(), 0xffff_ffff);
        assert_eq!(AsyncMessage::parse(&b), a);

        let mut b = Bhs::default();
        let rj = Reject {
            reason: RejectReason::PROTOCOL_ERROR,
            sn: sn(),
            datasn_r2tsn: 0,
        };
        rj.write_to(&mut b);
        assert_eq!(b.0[2], 4);
        assert_eq!(Reject::parse(&b), rj);

        let mut b = Bhs::default();
        let t = TaskMgmtResponse {
            response: 1,
            itt: 4,
            sn: sn(),
        };
        t.write_to(&mut b);
        assert_eq!(TaskMgmtResponse::parse(&b), t);

        let mut b = Bhs::default();
        let lo = LogoutResponse {
            response: 0,
            itt: 4,
            sn: sn(),
            time2wait: 2,
            time2retain: 0,
        };
        lo.write_to(&mut b);
        assert_eq!(LogoutResponse::parse(&b), lo);

        let mut b = Bhs::default();
        let n = NopIn {
            lun: [0; 8],
            itt: 0xffff_ffff,
            ttt: 5,
            sn: sn(),
        };
        n.write_to(&mut b);
        assert_eq!(NopIn::parse(&b), n);

        let mut b = Bhs::default();
        let tr = TextResponse {
            final_bit: false,
            cont: true,
            lun: [0; 8],
            itt: 1,
            ttt: 77,
            sn: sn(),
        };
        tr.write_to(&mut b);
        assert_eq!(TextResponse::parse(&b), tr);
    }
}
