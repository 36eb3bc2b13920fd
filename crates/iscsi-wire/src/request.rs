//! Views of the PDUs an initiator sends (RFC 7143 §11): SCSI Command,
//! Data-Out, NOP-Out, Login, Text, Logout, Task Management and SNACK
//! requests. Each view parses from and writes to a [`Bhs`](crate::Bhs);
//! parsing is infallible (reserved bits are ignored) and writing sets the
//! opcode. The layouts are field tables for the `layout` module's `bhs_pdu!`.

use crate::bhs::Opcode;
use crate::layout::{
    bhs_pdu, At, BitValue, Bits, Flag, CID, CONTINUE, CSG, FINAL, IMMEDIATE, ISID, ITT, LUN, NSG,
    TRANSIT, TSIH, TTT,
};
use crate::tmf::TmfFunction;

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

impl BitValue for Attr {
    fn from_bits(v: u8) -> Attr {
        Attr::from_bits(v)
    }
    fn to_bits(self) -> u8 {
        self.bits()
    }
}

/// CmdSN and ExpStatSN: every request but Data-Out and SNACK carries both.
const CMDSN: At = At(24);
const EXP_STATSN: At = At(28);

bhs_pdu! {
    /// SCSI Command (opcode 0x01).
    pub struct ScsiCommand: Opcode::SCSI_COMMAND {
        pub immediate: bool = IMMEDIATE,
        pub final_bit: bool = FINAL,
        pub read: bool = Flag(1, 0x40),
        pub write: bool = Flag(1, 0x20),
        pub attr: Attr = Bits::low(1, 7),
        pub lun: [u8; 8] = LUN,
        pub itt: u32 = ITT,
        pub expected_data_len: u32 = At(20),
        pub cmdsn: u32 = CMDSN,
        pub exp_statsn: u32 = EXP_STATSN,
        pub cdb: [u8; 16] = At(32),
    }

    /// SCSI Data-Out (opcode 0x05).
    pub struct DataOut: Opcode::DATA_OUT {
        pub final_bit: bool = FINAL,
        pub lun: [u8; 8] = LUN,
        pub itt: u32 = ITT,
        pub ttt: u32 = TTT,
        pub exp_statsn: u32 = EXP_STATSN,
        pub datasn: u32 = At(36),
        pub buffer_offset: u32 = At(40),
    }

    /// NOP-Out (opcode 0x00).
    pub struct NopOut: Opcode::NOP_OUT [FINAL = true] {
        pub immediate: bool = IMMEDIATE,
        pub lun: [u8; 8] = LUN,
        pub itt: u32 = ITT,
        pub ttt: u32 = TTT,
        pub cmdsn: u32 = CMDSN,
        pub exp_statsn: u32 = EXP_STATSN,
    }

    /// Login Request (opcode 0x03). Login requests are always immediate
    /// (RFC 7143 §11.12), so the I bit is written but not kept.
    pub struct LoginRequest: Opcode::LOGIN_REQUEST [IMMEDIATE = true] {
        pub transit: bool = TRANSIT,
        pub cont: bool = CONTINUE,
        /// Current stage (0 security, 1 operational, 3 full feature).
        pub csg: u8 = CSG,
        /// Next stage, meaningful only with `transit`.
        pub nsg: u8 = NSG,
        pub version_max: u8 = At(2),
        pub version_min: u8 = At(3),
        pub isid: [u8; 6] = ISID,
        pub tsih: u16 = TSIH,
        pub itt: u32 = ITT,
        pub cid: u16 = CID,
        pub cmdsn: u32 = CMDSN,
        pub exp_statsn: u32 = EXP_STATSN,
    }

    /// Text Request (opcode 0x04).
    pub struct TextRequest: Opcode::TEXT_REQUEST {
        pub immediate: bool = IMMEDIATE,
        pub final_bit: bool = FINAL,
        pub cont: bool = CONTINUE,
        pub lun: [u8; 8] = LUN,
        pub itt: u32 = ITT,
        pub ttt: u32 = TTT,
        pub cmdsn: u32 = CMDSN,
        pub exp_statsn: u32 = EXP_STATSN,
    }

    /// Logout Request (opcode 0x06).
    pub struct LogoutRequest: Opcode::LOGOUT_REQUEST [FINAL = true] {
        pub immediate: bool = IMMEDIATE,
        /// 0 close session, 1 close connection, 2 remove connection for recovery.
        pub reason: u8 = Bits::low(1, 0x7f),
        pub itt: u32 = ITT,
        pub cid: u16 = CID,
        pub cmdsn: u32 = CMDSN,
        pub exp_statsn: u32 = EXP_STATSN,
    }

    /// Task Management Function Request (opcode 0x02).
    pub struct TaskMgmtRequest: Opcode::TASK_MGMT_REQUEST [FINAL = true] {
        pub immediate: bool = IMMEDIATE,
        pub function: TmfFunction = Bits::low(1, 0x7f),
        pub lun: [u8; 8] = LUN,
        pub itt: u32 = ITT,
        pub referenced_tag: u32 = TTT,
        pub cmdsn: u32 = CMDSN,
        pub exp_statsn: u32 = EXP_STATSN,
        pub ref_cmdsn: u32 = At(32),
        pub exp_datasn: u32 = At(36),
    }

    /// SNACK Request (opcode 0x10); ERL 0 targets reject it.
    pub struct SnackRequest: Opcode::SNACK_REQUEST [FINAL = true] {
        pub snack_type: u8 = Bits::low(1, 0x0f),
        pub lun: [u8; 8] = LUN,
        pub itt: u32 = ITT,
        pub ttt: u32 = TTT,
        pub exp_statsn: u32 = EXP_STATSN,
        pub beg_run: u32 = At(40),
        pub run_length: u32 = At(44),
    }
}

/// The ExpStatSN of any request, whatever its opcode: every PDU an
/// initiator sends carries it in the same place, so a receive loop can
/// read it without parsing each view.
pub fn exp_statsn(b: &crate::Bhs) -> u32 {
    crate::layout::Place::get(EXP_STATSN, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digests;
    use crate::layout::testing::assert_round_trip;
    use crate::pdu::{encode, parse_frame};
    use crate::Bhs;

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
            function: TmfFunction::LogicalUnitReset,
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

    /// Distinct, non-zero values in every field so a place that overlaps
    /// another (or is read from the wrong offset) cannot go unnoticed.
    #[test]
    fn every_request_round_trips() {
        let lun = [1, 2, 3, 4, 5, 6, 7, 8];
        let layouts = [
            (
                Attr::Untagged,
                "41e00000 00000000 01020304 05060708 10111213 20212223 \
                 30313233 40414243 50515253 54555657 58595a5b 5c5d5e5f",
            ),
            (
                Attr::HeadOfQueue,
                "41e30000 00000000 01020304 05060708 10111213 20212223 \
                 30313233 40414243 50515253 54555657 58595a5b 5c5d5e5f",
            ),
            (
                Attr::Reserved(7),
                "41e70000 00000000 01020304 05060708 10111213 20212223 \
                 30313233 40414243 50515253 54555657 58595a5b 5c5d5e5f",
            ),
        ];
        for (attr, golden) in layouts {
            let c = ScsiCommand {
                immediate: true,
                final_bit: true,
                read: true,
                write: true,
                attr,
                lun,
                itt: 0x1011_1213,
                expected_data_len: 0x2021_2223,
                cmdsn: 0x3031_3233,
                exp_statsn: 0x4041_4243,
                cdb: core::array::from_fn(|i| 0x50 + i as u8),
            };
            let (op, w, p) = (
                Opcode::SCSI_COMMAND,
                ScsiCommand::write_to,
                ScsiCommand::parse,
            );
            assert_round_trip(&c, op, w, p, golden);
        }
        let d = DataOut {
            final_bit: true,
            lun,
            itt: 0x1011_1213,
            ttt: 0x2021_2223,
            exp_statsn: 0x3031_3233,
            datasn: 0x4041_4243,
            buffer_offset: 0x5051_5253,
        };
        assert_round_trip(
            &d,
            Opcode::DATA_OUT,
            DataOut::write_to,
            DataOut::parse,
            "05800000 00000000 01020304 05060708 10111213 20212223 \
             00000000 30313233 00000000 40414243 50515253 00000000",
        );
        let n = NopOut {
            immediate: true,
            lun,
            itt: 0x1011_1213,
            ttt: 0x2021_2223,
            cmdsn: 0x3031_3233,
            exp_statsn: 0x4041_4243,
        };
        assert_round_trip(
            &n,
            Opcode::NOP_OUT,
            NopOut::write_to,
            NopOut::parse,
            "40800000 00000000 01020304 05060708 10111213 20212223 \
             30313233 40414243 00000000 00000000 00000000 00000000",
        );
        let l = LoginRequest {
            transit: true,
            cont: true,
            csg: 1,
            nsg: 2,
            version_max: 3,
            version_min: 4,
            isid: [0x80, 0x81, 0x82, 0x83, 0x84, 0x85],
            tsih: 0x9091,
            itt: 0x1011_1213,
            cid: 0xa0a1,
            cmdsn: 0x3031_3233,
            exp_statsn: 0x4041_4243,
        };
        assert_round_trip(
            &l,
            Opcode::LOGIN_REQUEST,
            LoginRequest::write_to,
            LoginRequest::parse,
            "43c60304 00000000 80818283 84859091 10111213 a0a10000 \
             30313233 40414243 00000000 00000000 00000000 00000000",
        );
        let t = TextRequest {
            immediate: true,
            final_bit: true,
            cont: true,
            lun,
            itt: 0x1011_1213,
            ttt: 0x2021_2223,
            cmdsn: 0x3031_3233,
            exp_statsn: 0x4041_4243,
        };
        assert_round_trip(
            &t,
            Opcode::TEXT_REQUEST,
            TextRequest::write_to,
            TextRequest::parse,
            "44c00000 00000000 01020304 05060708 10111213 20212223 \
             30313233 40414243 00000000 00000000 00000000 00000000",
        );
        let lo = LogoutRequest {
            immediate: true,
            reason: 2,
            itt: 0x1011_1213,
            cid: 0xa0a1,
            cmdsn: 0x3031_3233,
            exp_statsn: 0x4041_4243,
        };
        assert_round_trip(
            &lo,
            Opcode::LOGOUT_REQUEST,
            LogoutRequest::write_to,
            LogoutRequest::parse,
            "46820000 00000000 00000000 00000000 10111213 a0a10000 \
             30313233 40414243 00000000 00000000 00000000 00000000",
        );
        let tm = TaskMgmtRequest {
            immediate: true,
            function: TmfFunction::Unknown(0x7e),
            lun,
            itt: 0x1011_1213,
            referenced_tag: 0x2021_2223,
            cmdsn: 0x3031_3233,
            exp_statsn: 0x4041_4243,
            ref_cmdsn: 0x5051_5253,
            exp_datasn: 0x6061_6263,
        };
        assert_round_trip(
            &tm,
            Opcode::TASK_MGMT_REQUEST,
            TaskMgmtRequest::write_to,
            TaskMgmtRequest::parse,
            "42fe0000 00000000 01020304 05060708 10111213 20212223 \
             30313233 40414243 50515253 60616263 00000000 00000000",
        );
        let sn = SnackRequest {
            snack_type: 0x0e,
            lun,
            itt: 0x1011_1213,
            ttt: 0x2021_2223,
            exp_statsn: 0x3031_3233,
            beg_run: 0x4041_4243,
            run_length: 0x5051_5253,
        };
        assert_round_trip(
            &sn,
            Opcode::SNACK_REQUEST,
            SnackRequest::write_to,
            SnackRequest::parse,
            "108e0000 00000000 01020304 05060708 10111213 20212223 \
             00000000 30313233 00000000 00000000 40414243 50515253",
        );
    }

    /// The constant bits each request sets whatever its fields say.
    #[test]
    fn constant_header_bits() {
        let mut b = Bhs([0xff; 48]);
        let l = LoginRequest::parse(&Bhs::default());
        l.write_to(&mut b);
        assert_eq!((b.0[0], b.0[1]), (0x43, 0x00), "login is always immediate");
        NopOut::parse(&Bhs::default()).write_to(&mut b);
        assert_eq!((b.0[0], b.0[1]), (0x00, 0x80));
        DataOut::parse(&Bhs([0xff; 48])).write_to(&mut b);
        assert_eq!(b.0[0], 0x05, "Data-Out has no I bit");
        for (f, byte1) in [(0u8, 0x80u8), (0x7f, 0xff)] {
            let mut tm = TaskMgmtRequest::parse(&Bhs::default());
            tm.function = TmfFunction::from_code(f);
            tm.write_to(&mut b);
            assert_eq!(b.0[1], byte1);
        }
    }

    /// Out-of-range field values are masked to their width on write and
    /// reserved bits are dropped on parse; neither panics.
    #[test]
    fn malformed_fields_are_masked_not_fatal() {
        let all = Bhs([0xff; 48]);
        assert_eq!(ScsiCommand::parse(&all).attr, Attr::Reserved(7));
        let l = LoginRequest::parse(&all);
        assert_eq!((l.csg, l.nsg), (3, 3));
        assert_eq!(LogoutRequest::parse(&all).reason, 0x7f);
        assert_eq!(
            TaskMgmtRequest::parse(&all).function,
            TmfFunction::Unknown(0x7f)
        );
        assert_eq!(SnackRequest::parse(&all).snack_type, 0x0f);
        let mut b = Bhs::default();
        let mut lo = LogoutRequest::parse(&b);
        lo.reason = 0xff;
        lo.write_to(&mut b);
        assert_eq!(b.0[1], 0xff);
        let mut lr = LoginRequest::parse(&b);
        lr.csg = 0xfd;
        lr.nsg = 0xfe;
        lr.write_to(&mut b);
        assert_eq!(b.0[1] & 0x0f, 0x06);
    }

    /// `exp_statsn` reads every request's ExpStatSN field.
    #[test]
    fn exp_statsn_of_every_request() {
        let sn = 0x0102_0304;
        // Each request type with only ExpStatSN set, written over 0x5a.
        macro_rules! written {
            ($($view:ty),*) => {
                [$({
                    let mut v = <$view>::parse(&Bhs::default());
                    v.exp_statsn = sn;
                    let mut b = Bhs([0x5a; 48]);
                    v.write_to(&mut b);
                    b
                }),*]
            };
        }
        let all = written!(
            ScsiCommand,
            DataOut,
            NopOut,
            LoginRequest,
            TextRequest,
            LogoutRequest,
            TaskMgmtRequest,
            SnackRequest
        );
        assert_eq!(all.len(), 8);
        for b in &all {
            assert_eq!(exp_statsn(b), sn, "opcode {:?}", b.opcode());
        }
    }

    /// Views only ever see a whole 48-byte header: every shorter buffer, and
    /// every truncation of a framed PDU, is "need more bytes", not a view.
    #[test]
    fn truncated_requests_never_reach_a_view() {
        let mut b = Bhs::default();
        let c = ScsiCommand::parse(&Bhs([0x11; 48]));
        c.write_to(&mut b);
        let mut wire = Vec::new();
        encode(&mut wire, &b, b"payload", Digests::default());
        for cut in 0..wire.len() {
            assert!(Bhs::from_slice(&wire[..cut.min(47)]).is_none());
            assert!(parse_frame(&wire[..cut], Digests::default(), 8192)
                .unwrap()
                .is_none());
        }
        let f = parse_frame(&wire, Digests::default(), 8192)
            .unwrap()
            .unwrap();
        assert_eq!(ScsiCommand::parse(&f.bhs), c);
        assert_eq!(f.data, b"payload");
    }
}
