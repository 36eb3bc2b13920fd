//! Views of the PDUs a target sends (RFC 7143 §11): SCSI Response, Data-In,
//! R2T, NOP-In, Login/Text/Logout responses, Task Management response,
//! Reject and Asynchronous Message. Each writes itself into a [`Bhs`] and
//! parses back (initiator-side tests use the parse half). The layouts are
//! field tables for the `layout` module's `bhs_pdu!`; the places only target
//! PDUs have (sequence numbers, residual, Data-In status) are defined here.

use crate::bhs::{Bhs, Opcode, RESERVED_TAG};
use crate::layout::{
    bhs_pdu, At, Flag, Place, Wire, CONTINUE, CSG, FINAL, ISID, ITT, LUN, NSG, TRANSIT, TSIH, TTT,
};
use crate::tmf::TmfResponse;

/// The sequence numbers every target PDU carries at bytes 24..36.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnFields {
    pub statsn: u32,
    pub exp_cmdsn: u32,
    pub max_cmdsn: u32,
}

/// StatSN, ExpCmdSN and MaxCmdSN in a row from `off` (always 24, see `SN`).
impl Wire for SnFields {
    fn read(b: &Bhs, off: usize) -> SnFields {
        SnFields {
            statsn: b.u32_at(off),
            exp_cmdsn: b.u32_at(off + 4),
            max_cmdsn: b.u32_at(off + 8),
        }
    }

    fn write(self, b: &mut Bhs, off: usize) {
        b.set_u32_at(off, self.statsn);
        b.set_u32_at(off + 4, self.exp_cmdsn);
        b.set_u32_at(off + 8, self.max_cmdsn);
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

/// The StatSN/ExpCmdSN/MaxCmdSN triple of every target PDU.
const SN: At = At(24);

/// O and U bits of byte 1 plus the ResidualCount at bytes 44..48, shared by
/// SCSI Response and Data-In.
#[derive(Clone, Copy)]
struct ResidualPlace;

impl Place<Residual> for ResidualPlace {
    fn get(self, b: &Bhs) -> Residual {
        Residual {
            overflow: Flag(1, 0x04).get(b),
            underflow: Flag(1, 0x02).get(b),
            count: b.u32_at(44),
        }
    }

    fn put(self, b: &mut Bhs, v: Residual) {
        Flag(1, 0x04).put(b, v.overflow);
        Flag(1, 0x02).put(b, v.underflow);
        b.set_u32_at(44, v.count);
    }
}

/// Data-In's S bit (byte 1, 0x01) and the status byte it makes valid.
#[derive(Clone, Copy)]
struct DataInStatus;

impl Place<Option<u8>> for DataInStatus {
    fn get(self, b: &Bhs) -> Option<u8> {
        S_BIT.get(b).then_some(b.0[3])
    }

    fn put(self, b: &mut Bhs, v: Option<u8>) {
        S_BIT.put(b, v.is_some());
        b.0[3] = v.unwrap_or(0);
    }
}

const S_BIT: Flag = Flag(1, 0x01);

/// Data-In carries a residual only with the S bit (RFC 7143 §11.7): without
/// it the O/U bits and ResidualCount are written as zero. Relies on the
/// `status` field (which sets S) being written first.
#[derive(Clone, Copy)]
struct DataInResidual;

impl Place<Residual> for DataInResidual {
    fn get(self, b: &Bhs) -> Residual {
        ResidualPlace.get(b)
    }

    fn put(self, b: &mut Bhs, v: Residual) {
        let v = if S_BIT.get(b) { v } else { Residual::default() };
        ResidualPlace.put(b, v);
    }
}

impl Wire for RejectReason {
    fn read(b: &Bhs, off: usize) -> RejectReason {
        RejectReason(b.0[off])
    }

    fn write(self, b: &mut Bhs, off: usize) {
        b.0[off] = self.0;
    }
}

bhs_pdu! {
    /// SCSI Response (opcode 0x21).
    pub struct ScsiResponse: Opcode::SCSI_RESPONSE [FINAL = true] {
        /// 0x00 command completed at target, 0x01 target failure.
        pub response: u8 = At(2),
        pub status: u8 = At(3),
        pub residual: Residual = ResidualPlace,
        pub itt: u32 = ITT,
        pub sn: SnFields = SN,
        pub exp_datasn: u32 = At(36),
    }

    /// SCSI Data-In (opcode 0x25). `status` is `Some` when the S bit is set
    /// (then the F bit must be set too and StatSN is meaningful).
    pub struct DataIn: Opcode::DATA_IN {
        pub final_bit: bool = FINAL,
        pub status: Option<u8> = DataInStatus,
        pub residual: Residual = DataInResidual,
        pub lun: [u8; 8] = LUN,
        pub itt: u32 = ITT,
        pub ttt: u32 = TTT,
        pub sn: SnFields = SN,
        pub datasn: u32 = At(36),
        pub buffer_offset: u32 = At(40),
    }

    /// Ready To Transfer (opcode 0x31). `sn.statsn` carries the next StatSN
    /// without advancing it.
    pub struct R2t: Opcode::R2T [FINAL = true] {
        pub lun: [u8; 8] = LUN,
        pub itt: u32 = ITT,
        pub ttt: u32 = TTT,
        pub sn: SnFields = SN,
        pub r2tsn: u32 = At(36),
        pub buffer_offset: u32 = At(40),
        pub desired_len: u32 = At(44),
    }

    /// NOP-In (opcode 0x20).
    pub struct NopIn: Opcode::NOP_IN [FINAL = true] {
        pub lun: [u8; 8] = LUN,
        pub itt: u32 = ITT,
        pub ttt: u32 = TTT,
        pub sn: SnFields = SN,
    }

    /// Login Response (opcode 0x23).
    pub struct LoginResponse: Opcode::LOGIN_RESPONSE {
        pub transit: bool = TRANSIT,
        pub cont: bool = CONTINUE,
        pub csg: u8 = CSG,
        pub nsg: u8 = NSG,
        pub version_max: u8 = At(2),
        pub version_active: u8 = At(3),
        pub isid: [u8; 6] = ISID,
        pub tsih: u16 = TSIH,
        pub itt: u32 = ITT,
        pub sn: SnFields = SN,
        pub status_class: u8 = At(36),
        pub status_detail: u8 = At(37),
    }

    /// Text Response (opcode 0x24).
    pub struct TextResponse: Opcode::TEXT_RESPONSE {
        pub final_bit: bool = FINAL,
        pub cont: bool = CONTINUE,
        pub lun: [u8; 8] = LUN,
        pub itt: u32 = ITT,
        pub ttt: u32 = TTT,
        pub sn: SnFields = SN,
    }

    /// Logout Response (opcode 0x26).
    pub struct LogoutResponse: Opcode::LOGOUT_RESPONSE [FINAL = true] {
        /// 0 closed successfully, 1 CID not found, 2 recovery not supported,
        /// 3 cleanup failed.
        pub response: u8 = At(2),
        pub itt: u32 = ITT,
        pub sn: SnFields = SN,
        pub time2wait: u16 = At(40),
        pub time2retain: u16 = At(42),
    }

    /// Task Management Function Response (opcode 0x22).
    pub struct TaskMgmtResponse: Opcode::TASK_MGMT_RESPONSE [FINAL = true] {
        pub response: TmfResponse = At(2),
        /// RFC 7144's Additional Response Information (bytes 8-10, SAM-5's
        /// 3 bytes): for QUERY ASYNC EVENT the UADE DEPTH and sense key,
        /// ASC and ASCQ of the pending unit attention; zero otherwise.
        pub additional: [u8; 3] = At(8),
        pub itt: u32 = ITT,
        pub sn: SnFields = SN,
    }

    /// Reject (opcode 0x3f); its data segment is the rejected PDU's header.
    /// Its ITT is always the reserved tag.
    pub struct Reject: Opcode::REJECT [FINAL = true, ITT = RESERVED_TAG] {
        pub reason: RejectReason = At(2),
        pub sn: SnFields = SN,
        pub datasn_r2tsn: u32 = At(36),
    }

    /// Asynchronous Message (opcode 0x32); its ITT is always the reserved tag.
    pub struct AsyncMessage: Opcode::ASYNC_MESSAGE [FINAL = true, ITT = RESERVED_TAG] {
        pub lun: [u8; 8] = LUN,
        pub sn: SnFields = SN,
        /// 0 SCSI async event, 1 logout request, 2 connection drop,
        /// 3 session drop, 4 parameter negotiation request, 255 vendor.
        pub event: u8 = At(36),
        pub vcode: u8 = At(37),
        pub param1: u16 = At(38),
        pub param2: u16 = At(40),
        pub param3: u16 = At(42),
    }
}

impl AsyncMessage {
    pub const EVENT_LOGOUT_REQUEST: u8 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::testing::assert_round_trip;

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
            response: TmfResponse::TaskDoesNotExist,
            additional: [6, 0x29, 7],
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

    /// Distinct, non-zero values in every field of every response.
    #[test]
    fn every_response_round_trips() {
        let lun = [1, 2, 3, 4, 5, 6, 7, 8];
        let sn = SnFields {
            statsn: 0x6061_6263,
            exp_cmdsn: 0x7071_7273,
            max_cmdsn: 0x8081_8283,
        };
        let residual = Residual {
            overflow: true,
            underflow: false,
            count: 0x9091_9293,
        };
        let r = ScsiResponse {
            response: 0x01,
            status: 0x02,
            residual,
            itt: 0x1011_1213,
            sn,
            exp_datasn: 0x2021_2223,
        };
        assert_round_trip(
            &r,
            Opcode::SCSI_RESPONSE,
            ScsiResponse::write_to,
            ScsiResponse::parse,
            "21840102 00000000 00000000 00000000 10111213 00000000 \
             60616263 70717273 80818283 20212223 00000000 90919293",
        );
        // Data-In without status carries no residual, so only the default one
        // survives a round trip.
        let layouts = [
            (
                Some(0x08),
                residual,
                "25850008 00000000 01020304 05060708 10111213 20212223 \
                 60616263 70717273 80818283 30313233 40414243 90919293",
            ),
            (
                None,
                Residual::default(),
                "25800000 00000000 01020304 05060708 10111213 20212223 \
                 60616263 70717273 80818283 30313233 40414243 00000000",
            ),
        ];
        for (status, residual, golden) in layouts {
            let d = DataIn {
                final_bit: true,
                status,
                residual,
                lun,
                itt: 0x1011_1213,
                ttt: 0x2021_2223,
                sn,
                datasn: 0x3031_3233,
                buffer_offset: 0x4041_4243,
            };
            assert_round_trip(&d, Opcode::DATA_IN, DataIn::write_to, DataIn::parse, golden);
        }
        let r2t = R2t {
            lun,
            itt: 0x1011_1213,
            ttt: 0x2021_2223,
            sn,
            r2tsn: 0x3031_3233,
            buffer_offset: 0x4041_4243,
            desired_len: 0x5051_5253,
        };
        assert_round_trip(
            &r2t,
            Opcode::R2T,
            R2t::write_to,
            R2t::parse,
            "31800000 00000000 01020304 05060708 10111213 20212223 \
             60616263 70717273 80818283 30313233 40414243 50515253",
        );
        let n = NopIn {
            lun,
            itt: 0x1011_1213,
            ttt: 0x2021_2223,
            sn,
        };
        assert_round_trip(
            &n,
            Opcode::NOP_IN,
            NopIn::write_to,
            NopIn::parse,
            "20800000 00000000 01020304 05060708 10111213 20212223 \
             60616263 70717273 80818283 00000000 00000000 00000000",
        );
        let l = LoginResponse {
            transit: true,
            cont: true,
            csg: 1,
            nsg: 2,
            version_max: 3,
            version_active: 4,
            isid: [0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5],
            tsih: 0xb0b1,
            itt: 0x1011_1213,
            sn,
            status_class: 5,
            status_detail: 6,
        };
        assert_round_trip(
            &l,
            Opcode::LOGIN_RESPONSE,
            LoginResponse::write_to,
            LoginResponse::parse,
            "23c60304 00000000 a0a1a2a3 a4a5b0b1 10111213 00000000 \
             60616263 70717273 80818283 05060000 00000000 00000000",
        );
        let t = TextResponse {
            final_bit: true,
            cont: true,
            lun,
            itt: 0x1011_1213,
            ttt: 0x2021_2223,
            sn,
        };
        assert_round_trip(
            &t,
            Opcode::TEXT_RESPONSE,
            TextResponse::write_to,
            TextResponse::parse,
            "24c00000 00000000 01020304 05060708 10111213 20212223 \
             60616263 70717273 80818283 00000000 00000000 00000000",
        );
        let lo = LogoutResponse {
            response: 3,
            itt: 0x1011_1213,
            sn,
            time2wait: 0xc0c1,
            time2retain: 0xd0d1,
        };
        assert_round_trip(
            &lo,
            Opcode::LOGOUT_RESPONSE,
            LogoutResponse::write_to,
            LogoutResponse::parse,
            "26800300 00000000 00000000 00000000 10111213 00000000 \
             60616263 70717273 80818283 00000000 c0c1d0d1 00000000",
        );
        let tm = TaskMgmtResponse {
            response: TmfResponse::Rejected,
            additional: [0x06, 0x2a, 0x05],
            itt: 0x1011_1213,
            sn,
        };
        assert_round_trip(
            &tm,
            Opcode::TASK_MGMT_RESPONSE,
            TaskMgmtResponse::write_to,
            TaskMgmtResponse::parse,
            "2280ff00 00000000 062a0500 00000000 10111213 00000000 \
             60616263 70717273 80818283 00000000 00000000 00000000",
        );
        let rj = Reject {
            reason: RejectReason::WAITING_FOR_LOGOUT,
            sn,
            datasn_r2tsn: 0x3031_3233,
        };
        assert_round_trip(
            &rj,
            Opcode::REJECT,
            Reject::write_to,
            Reject::parse,
            "3f800c00 00000000 00000000 00000000 ffffffff 00000000 \
             60616263 70717273 80818283 30313233 00000000 00000000",
        );
        let a = AsyncMessage {
            lun,
            sn,
            event: 4,
            vcode: 0xe0,
            param1: 0xe1e2,
            param2: 0xe3e4,
            param3: 0xe5e6,
        };
        assert_round_trip(
            &a,
            Opcode::ASYNC_MESSAGE,
            AsyncMessage::write_to,
            AsyncMessage::parse,
            "32800000 00000000 01020304 05060708 ffffffff 00000000 \
             60616263 70717273 80818283 04e0e1e2 e3e4e5e6 00000000",
        );
    }

    /// Bits and tags a response always carries, whatever was in the buffer.
    #[test]
    fn constant_header_fields() {
        let rj = Reject::parse(&Bhs::default());
        let mut b = Bhs::default();
        rj.write_to(&mut b);
        assert_eq!((b.0[1], b.itt()), (0x80, crate::RESERVED_TAG));
        let a = AsyncMessage::parse(&Bhs::default());
        let mut b = Bhs::default();
        a.write_to(&mut b);
        assert_eq!((b.0[1], b.itt()), (0x80, crate::RESERVED_TAG));
        // Stale residual bits and count from a reused header are cleared when
        // the Data-In has no status.
        let mut b = Bhs([0xff; 48]);
        let mut d = DataIn::parse(&b);
        d.status = None;
        d.final_bit = false;
        d.write_to(&mut b);
        assert_eq!((b.0[1], b.0[3], b.u32_at(44)), (0x00, 0, 0));
    }

    /// Reserved flag bits are ignored on parse; an all-ones header still
    /// yields well-formed values.
    #[test]
    fn malformed_fields_are_ignored_not_fatal() {
        let all = Bhs([0xff; 48]);
        let l = LoginResponse::parse(&all);
        assert_eq!((l.csg, l.nsg), (3, 3));
        let d = DataIn::parse(&all);
        assert_eq!(d.status, Some(0xff));
        assert!(d.residual.overflow && d.residual.underflow);
        assert_eq!(Reject::parse(&all).reason, RejectReason(0xff));
    }
}
