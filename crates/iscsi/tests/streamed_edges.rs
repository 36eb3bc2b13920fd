//! Streamed writes (`streamed_write`) at their edges: the command window
//! while one gathers its data, a logout for connection recovery (refused
//! at ERL 0) while one is cut off, and writes with unsolicited Data-Out
//! still to come (InitialR2T=No), streamed or refused by their checks.

mod common;

use std::time::Duration;

use common::*;
use iscsi_wire::request::{DataOut, LogoutRequest};
use iscsi_wire::response::LogoutResponse;
use iscsi_wire::{Bhs, Opcode};

const MIB: usize = 1 << 20;
const BURST: usize = 256 * 1024;
const UNSOL_SEG: usize = 64 * 1024;

/// Linux's session shape: unsolicited Data-Out after the immediate data
/// up to a 256 KiB first burst, then R2Ts (one at a time here).
const UNSOLICITED: &[(&str, &str)] = &[
    ("ImmediateData", "Yes"),
    ("InitialR2T", "No"),
    ("FirstBurstLength", "262144"),
    ("MaxBurstLength", "262144"),
    ("MaxRecvDataSegmentLength", "262144"),
    ("MaxOutstandingR2T", "1"),
];

/// MaxCmdSN - ExpCmdSN of the answer to a TEST UNIT READY sent now.
fn room_after_tur(c: &mut Client) -> u32 {
    let (st, _, r) = c.read_cmd(&[0; 6], 0);
    assert_eq!(st, 0);
    let sn = r.expect("SCSI Response").sn;
    sn.max_cmdsn.wrapping_sub(sn.exp_cmdsn)
}

/// Send a Logout Request without waiting for its answer.
fn send_logout(c: &mut Client, reason: u8, cid: u16) {
    let l = LogoutRequest {
        immediate: true,
        reason,
        itt: 0x7001,
        cid,
        cmdsn: c.cmdsn,
        exp_statsn: c.exp_statsn,
    };
    let mut b = Bhs::default();
    l.write_to(&mut b);
    c.send(&b, &[]);
}

fn expect_logout_response(c: &mut Client) -> LogoutResponse {
    let p = c.recv().expect("Logout Response");
    assert_eq!(
        p.bhs.opcode(),
        Opcode::LOGOUT_RESPONSE,
        "nothing for the write"
    );
    let r = LogoutResponse::parse(&p.bhs);
    c.exp_statsn = r.sn.statsn.wrapping_add(1);
    r
}

/// Send `data[from..to]` as unsolicited Data-Out PDUs of at most
/// [`UNSOL_SEG`] bytes (DataSN from `datasn`), the last one final.
fn send_unsolicited(c: &mut Client, itt: u32, data: &[u8], from: usize, to: usize) {
    let mut off = from;
    let mut datasn = 0;
    while off < to {
        let n = (to - off).min(UNSOL_SEG);
        let d = DataOut {
            final_bit: off + n == to,
            lun: [0; 8],
            itt,
            ttt: 0xffff_ffff,
            exp_statsn: c.exp_statsn,
            datasn,
            buffer_offset: off as u32,
        };
        c.send_data_out(&d, &data[off..off + n]);
        off += n;
        datasn += 1;
    }
}

#[test]
fn a_streamed_write_gathering_its_data_holds_one_window_slot() {
    let (_store, srv, _, mut c) = stream_rig(8 * MIB, LIBISCSI);
    // Nothing outstanding: the whole window less the TUR's own CmdSN
    // (taken) is offered.
    let idle = room_after_tur(&mut c);
    let data = pattern(MIB, 0x21);
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let r = expect_r2t(&mut c);
    // The write gathers its data: one command outstanding, one slot less.
    assert_eq!(
        room_after_tur(&mut c),
        idle - 1,
        "a streamed write in progress counts once"
    );
    c.answer_r2t(&r, &data);
    for _ in 0..2 {
        let r = expect_r2t(&mut c);
        c.answer_r2t(&r, &data);
    }
    assert_eq!(expect_response(&mut c).status, 0);
    assert_eq!(room_after_tur(&mut c), idle, "the slot is back");
    c.logout();
    srv.shutdown();
}

#[test]
fn logout_for_recovery_changes_nothing_and_a_cut_off_stream_ends_with_the_session() {
    let (store, srv, addr, mut c) = stream_rig(8 * MIB, LIBISCSI);
    let data = pattern(MIB, 0x5a);
    store.hold();
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let r = expect_r2t(&mut c);
    c.answer_r2t(&r, &data);
    // Cut off: the third burst's R2T stays unanswered.
    let _ = expect_r2t(&mut c);
    assert_eq!(pieces_reach(&store, 2), 2, "two bursts in flight");
    // Refused at once (ERL 0): nothing is aborted, so nothing waits for
    // the pieces in flight.
    c.sock
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let cid = c.cid;
    send_logout(&mut c, 2, cid);
    let lr = expect_logout_response(&mut c);
    assert_eq!(lr.response, 2, "connection recovery not supported (ERL 0)");
    // A session logout ends the write: it waits for the pieces in flight,
    // answers nothing for the write, and closes.
    send_logout(&mut c, 0, cid);
    assert_quiet(&mut c, "logout answered with pieces in flight");
    assert_eq!(store.release(), 2);
    assert_eq!(expect_logout_response(&mut c).response, 0);
    assert!(c.closed());
    // Nothing of it waits: a new session writes, the server stops.
    let mut c2 = session(addr, LIBISCSI);
    let r = c2.write_cmd(&write10(4096, (MIB / 512) as u16), &data);
    assert_eq!(r.status, 0);
    c2.logout();
    srv.shutdown();
}

#[test]
fn a_stream_goes_on_through_a_refused_logout_for_recovery() {
    // For this connection and for another one.
    for other in [0, 7] {
        let (store, srv, _, mut c) = stream_rig(8 * MIB, LIBISCSI);
        let data = pattern(MIB, 0x6b);
        let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
        c.send_cmd(&cmd, &data[..BURST]);
        let r = expect_r2t(&mut c);
        let cid = c.cid.wrapping_add(other);
        send_logout(&mut c, 2, cid);
        assert_eq!(expect_logout_response(&mut c).response, 2);
        // The write goes on and is answered.
        c.sock
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        c.answer_r2t(&r, &data);
        for _ in 0..2 {
            let r = expect_r2t(&mut c);
            c.answer_r2t(&r, &data);
        }
        assert_eq!(expect_response(&mut c).status, 0, "the write is answered");
        assert_eq!(store.pieces().len(), 4);
        c.logout();
        srv.shutdown();
    }
}

#[test]
fn writes_with_unsolicited_data_out_to_come_stream_too() {
    let (store, srv, _, mut c) = stream_rig(8 * MIB, UNSOLICITED);
    assert!(c.target_mrdsl as usize >= UNSOL_SEG);
    let base = 2048u64 * 512;
    // With 64 KiB of immediate data, and with none.
    for (i, imm) in [UNSOL_SEG, 0].into_iter().enumerate() {
        let data = pattern(MIB, 0x30 + i as u8);
        let lba = 2048 + (i * MIB / 512) as u32;
        let mut cmd = c.scsi_cmd_header(&write10(lba, (MIB / 512) as u16), false, true, MIB as u32);
        cmd.final_bit = false;
        let before = store.pieces().len();
        c.send_cmd(&cmd, &data[..imm]);
        send_unsolicited(&mut c, cmd.itt, &data, imm, BURST);
        let mut r = expect_r2t(&mut c);
        assert_eq!(r.buffer_offset as usize, BURST);
        // The first burst is on the medium before any solicited data is
        // sent (it is written right after the R2T it earned went out).
        let t0 = std::time::Instant::now();
        let written_since = |before| {
            store.pieces()[before..]
                .iter()
                .map(|p| p.len)
                .sum::<usize>()
        };
        while written_since(before) < BURST && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let first = &store.pieces()[before..];
        let written: usize = first.iter().map(|p| p.len).sum();
        assert_eq!(written, BURST, "first burst: {first:?}");
        assert_eq!(first[0].offset, base + (i * MIB) as u64);
        loop {
            c.answer_r2t(&r, &data);
            if r.buffer_offset as usize + r.desired_len as usize == MIB {
                break;
            }
            r = expect_r2t(&mut c);
        }
        assert_eq!(expect_response(&mut c).status, 0);
        let (st, got, _) = c.read_cmd(&read10(lba, (MIB / 512) as u16), MIB as u32);
        assert_eq!(st, 0);
        assert!(got == data, "data read back");
    }
    c.logout();
    srv.shutdown();
}

#[test]
fn a_refused_write_is_answered_once_its_unsolicited_data_is_in_and_writes_nothing() {
    let (store, srv, _, mut c) = stream_rig(4 * MIB, UNSOLICITED);
    let data = pattern(MIB, 0x44);
    // Past the capacity: LOGICAL BLOCK ADDRESS OUT OF RANGE.
    let lba = (4 * MIB / 512 - 1024) as u32;
    let mut cmd = c.scsi_cmd_header(&write10(lba, (MIB / 512) as u16), false, true, MIB as u32);
    cmd.final_bit = false;
    c.send_cmd(&cmd, &data[..UNSOL_SEG]);
    // Neither an R2T nor the answer while unsolicited data is to come.
    assert_quiet(&mut c, "a PDU before the unsolicited data");
    send_unsolicited(&mut c, cmd.itt, &data, UNSOL_SEG, BURST);
    let r = expect_response(&mut c);
    assert_eq!(r.itt, cmd.itt);
    assert_eq!(r.status, 2);
    assert_eq!(sense(&c), (5, 0x21, 0));
    // In step: a NOP-Out is answered next, the tag is free again, and
    // the medium saw nothing.
    c.nop(&[]);
    assert!(store.pieces().is_empty(), "{:?}", store.pieces());
    let r = c.write_cmd(&write10(0, (MIB / 512) as u16), &data);
    assert_eq!(r.status, 0);
    c.logout();
    srv.shutdown();
}

/// A Data-Out of `r`'s burst with a wrong DataSN.
fn send_bad_datasn(c: &mut Client, r: &iscsi_wire::response::R2t, data: &[u8]) {
    let (d, part) = c.r2t_answer(r, data, 3);
    c.send_data_out(&d, part);
}

/// A wrong DataSN on a streamed write ends it as it ends a gathered one:
/// its stream is closed (nothing more is written, it holds no engine task:
/// an ORDERED command is not held behind it), it is never answered, it
/// keeps one window slot until ABORT TASK ends it.
#[test]
fn a_wrong_datasn_ends_a_streamed_write_as_a_gathered_one() {
    let (store, srv, _, mut c) = stream_rig(8 * MIB, LIBISCSI);
    let idle = room_after_tur(&mut c);
    let data = pattern(MIB, 0x3e);
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let r = expect_r2t(&mut c);
    assert_eq!(pieces_reach(&store, 1), 1, "the immediate data is written");
    send_bad_datasn(&mut c, &r, &data);
    // An ORDERED command waits for every older engine task: answered, so
    // the write holds none.
    let mut tur = c.scsi_cmd_header(&[0; 6], false, false, 0);
    tur.attr = iscsi_wire::request::Attr::Ordered;
    c.send_cmd(&tur, &[]);
    c.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let r = expect_response(&mut c);
    assert_eq!((r.itt, r.status), (tur.itt, 0), "the ORDERED TUR, GOOD");
    c.sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        room_after_tur(&mut c),
        idle - 1,
        "the broken write holds one slot"
    );
    assert_eq!(store.pieces().len(), 1, "nothing written after the error");
    assert_eq!(c.tmf(1 /* ABORT TASK */, 0, cmd.itt).response.code(), 0);
    assert_eq!(room_after_tur(&mut c), idle, "the slot is back");
    c.nop(&[]);
    c.logout();
    srv.shutdown();
}

/// ABORT TASK of a streamed write broken by a wrong DataSN is still the
/// last word about it: not answered while a piece of it is in flight.
#[test]
fn abort_task_of_a_broken_stream_waits_for_its_pieces() {
    let (store, srv, _, mut c) = stream_rig(8 * MIB, LIBISCSI);
    let data = pattern(MIB, 0x3f);
    store.hold();
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let r = expect_r2t(&mut c);
    assert_eq!(pieces_reach(&store, 1), 1, "the immediate data in flight");
    send_bad_datasn(&mut c, &r, &data);
    let tm = c.abort_task(0x4001, &cmd);
    c.send_tmf(&tm);
    assert_quiet(&mut c, "answered with a piece in flight");
    assert_eq!(store.release(), 1);
    let p = c.recv().expect("TMF response");
    assert_eq!(p.bhs.opcode(), Opcode::TASK_MGMT_RESPONSE, "nothing else");
    c.exp_statsn += 1;
    let code = iscsi_wire::response::TaskMgmtResponse::parse(&p.bhs)
        .response
        .code();
    assert_eq!(code, 0, "FUNCTION COMPLETE");
    c.nop(&[]);
    c.logout();
    srv.shutdown();
}
