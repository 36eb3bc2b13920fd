//! Hostile and broken peers: garbage, bad opcodes, oversized segments, data
//! beyond the burst, bad DataSN, digest errors, random headers. Each case
//! must end in a Reject or a closed connection, never a crash, and a fresh
//! session must work afterwards.

mod common;

use common::*;
use iscsi_wire::request::{DataOut, NopOut, SnackRequest};
use iscsi_wire::response::Reject;
use iscsi_wire::{Bhs, Digests, Opcode};

fn still_serves(addr: std::net::SocketAddr) {
    let mut c = Client::connect(addr);
    c.isid[0] = 0x81; // a different I_T nexus from the broken one
    c.login(Some(IQN), &[]);
    c.clear_ua();
    let (st, data, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!((st, data.len()), (0, 512));
    c.logout();
}

fn logged_in(addr: std::net::SocketAddr, extra: &[(&str, &str)]) -> Client {
    let mut c = Client::connect(addr);
    c.login(Some(IQN), extra);
    c
}

#[test]
fn garbage_before_login_closes() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    c.send_raw(&pattern(4096, 7)).unwrap();
    assert!(c.closed());
    still_serves(addr);
    srv.shutdown();
}

#[test]
fn non_login_first_pdu_closes() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    c.send(&Bhs::with_opcode(Opcode::NOP_OUT), &[]);
    assert!(c.closed());
    still_serves(addr);
    srv.shutdown();
}

#[test]
fn truncated_header_then_hangup() {
    let (srv, addr) = server(&[]);
    for cut in [1usize, 20, 47] {
        let mut c = logged_in(addr, &[]);
        let b = Bhs::with_opcode(Opcode::NOP_OUT);
        c.send_raw(&b.0[..cut]).unwrap();
        drop(c);
    }
    still_serves(addr);
    srv.shutdown();
}

#[test]
fn unknown_opcode_is_rejected_and_session_continues() {
    let (srv, addr) = server(&[]);
    let mut c = logged_in(addr, &[]);
    for op in [0x07u8, 0x1c, 0x21, 0x3f] {
        let mut b = Bhs::with_opcode(Opcode(op));
        b.set_immediate(true);
        c.send(&b, &[]);
        let p = c.recv().unwrap();
        assert_eq!(p.bhs.opcode(), Opcode::REJECT, "opcode {op:#x}");
        let r = Reject::parse(&p.bhs);
        assert_eq!(r.reason.0, 0x05);
        assert_eq!(&p.data[..], &b.0[..], "reject carries the header");
        c.exp_statsn = r.sn.statsn + 1;
    }
    c.nop(b"alive");
    srv.shutdown();
}

#[test]
fn snack_is_rejected() {
    let (srv, addr) = server(&[]);
    let mut c = logged_in(addr, &[]);
    let s = SnackRequest {
        snack_type: 0,
        lun: [0; 8],
        itt: 5,
        ttt: 0xffff_ffff,
        exp_statsn: c.exp_statsn,
        beg_run: 0,
        run_length: 0,
    };
    let mut b = Bhs::default();
    s.write_to(&mut b);
    c.send(&b, &[]);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::REJECT);
    assert_eq!(p.bhs.0[2], 0x04);
    srv.shutdown();
}

#[test]
fn oversized_data_segment_closes() {
    let (srv, addr) = server(&[]);
    let mut c = logged_in(addr, &[]);
    let mut b = Bhs::with_opcode(Opcode::NOP_OUT);
    b.set_immediate(true);
    b.set_data_segment_len(0x00ff_ffff);
    c.send_raw(&b.0).unwrap();
    assert!(c.closed());
    still_serves(addr);
    srv.shutdown();
}

#[test]
fn data_beyond_burst_closes() {
    let (srv, addr) = server(&[]);
    let mut c = logged_in(addr, &[("ImmediateData", "No"), ("InitialR2T", "Yes")]);
    c.clear_ua();
    let cmd = c.scsi_cmd_header(&write10(0, 8), false, true, 4096);
    c.send_cmd(&cmd, &[]);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::R2T);
    let ttt = p.bhs.u32_at(20);
    let d = DataOut {
        final_bit: true,
        lun: [0; 8],
        itt: cmd.itt,
        ttt,
        exp_statsn: c.exp_statsn,
        datasn: 0,
        buffer_offset: 0,
    };
    c.send_data_out(&d, &vec![0u8; 8192]); // twice what the R2T asked for
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::REJECT);
    assert!(c.closed());
    still_serves(addr);
    srv.shutdown();
}

#[test]
fn unsolicited_data_without_permission_closes() {
    let (srv, addr) = server(&[]);
    let mut c = logged_in(addr, &[("InitialR2T", "Yes"), ("ImmediateData", "No")]);
    c.clear_ua();
    let cmd = c.scsi_cmd_header(&write10(0, 8), false, true, 4096);
    c.send_cmd(&cmd, &[]);
    let _r2t = c.recv().unwrap();
    let d = DataOut {
        final_bit: true,
        lun: [0; 8],
        itt: cmd.itt,
        ttt: 0xffff_ffff,
        exp_statsn: c.exp_statsn,
        datasn: 0,
        buffer_offset: 0,
    };
    c.send_data_out(&d, &[0u8; 512]);
    assert!(c.closed());
    still_serves(addr);
    srv.shutdown();
}

#[test]
fn digest_errors() {
    let (srv, addr) = server(&[]);
    let mut c = logged_in(
        addr,
        &[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")],
    );
    // Data digest error on a NOP-Out: Reject, session continues.
    let n = NopOut {
        immediate: true,
        lun: [0; 8],
        itt: 99,
        ttt: 0xffff_ffff,
        cmdsn: c.cmdsn,
        exp_statsn: c.exp_statsn,
    };
    let mut b = Bhs::default();
    n.write_to(&mut b);
    let mut bytes = Vec::new();
    iscsi_wire::pdu::encode(&mut bytes, &b, b"abcd", c.digests);
    let len = bytes.len();
    bytes[len - 1] ^= 0xff;
    c.send_raw(&bytes).unwrap();
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::REJECT);
    assert_eq!(p.bhs.0[2], 0x02);
    c.exp_statsn = p.bhs.u32_at(24) + 1;
    c.nop(b"ok");
    // Header digest error: the stream cannot be trusted; closed.
    let mut bytes = Vec::new();
    iscsi_wire::pdu::encode(&mut bytes, &b, &[], c.digests);
    bytes[48] ^= 1;
    c.send_raw(&bytes).unwrap();
    assert!(c.closed());
    still_serves(addr);
    srv.shutdown();
}

#[test]
fn random_headers_never_crash_the_server() {
    let (srv, addr) = server(&[]);
    // Deterministic xorshift so failures reproduce.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..40 {
        let mut c = logged_in(addr, &[]);
        c.digests = Digests::default();
        let mut bytes = Vec::new();
        for _ in 0..20 {
            let mut b = Bhs::default();
            for chunk in b.0.chunks_mut(8) {
                let v = rnd().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            // Keep some PDUs small so several are parsed per round.
            if round % 2 == 0 {
                b.set_data_segment_len((rnd() % 600) as u32);
                b.set_total_ahs_words((rnd() % 4) as u8);
            }
            let len = b.data_segment_len().min(4096) as usize;
            bytes.extend_from_slice(&b.0);
            bytes.extend(std::iter::repeat_n(
                0u8,
                len + usize::from(b.total_ahs_words()) * 4,
            ));
        }
        let _ = c.send_raw(&bytes);
        drop(c);
    }
    still_serves(addr);
    srv.shutdown();
}

#[test]
fn wrong_datasn_poisons_the_task_only() {
    let (srv, addr) = server(&[]);
    let mut c = logged_in(addr, &[("ImmediateData", "No"), ("InitialR2T", "Yes")]);
    c.clear_ua();
    let before = pattern(1024, 9);
    assert_eq!(c.write_cmd(&write10(0, 2), &before).status, 0);
    let cmd = c.scsi_cmd_header(&write10(0, 2), false, true, 1024);
    c.send_cmd(&cmd, &[]);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::R2T);
    let ttt = p.bhs.u32_at(20);
    for (sn, off, fin) in [(0u32, 0usize, false), (0, 512, true)] {
        let d = DataOut {
            final_bit: fin,
            lun: [0; 8],
            itt: cmd.itt,
            ttt,
            exp_statsn: c.exp_statsn,
            datasn: sn,
            buffer_offset: off as u32,
        };
        c.send_data_out(&d, &[0xee; 512]);
    }
    // No response for the poisoned write; the session keeps working and
    // the medium was not touched.
    let (st, got, _) = c.read_cmd(&read10(0, 2), 1024);
    assert_eq!(st, 0);
    assert!(got == before);
    srv.shutdown();
}
