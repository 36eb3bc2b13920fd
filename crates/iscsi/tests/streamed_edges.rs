//! Streamed writes (`streamed_write`) at their edges: the command window
//! while one gathers its data, and a logout for connection recovery
//! (refused at ERL 0) while one is cut off.

mod common;

use std::time::Duration;

use common::*;
use iscsi_wire::request::LogoutRequest;
use iscsi_wire::response::LogoutResponse;
use iscsi_wire::{Bhs, Opcode};

const MIB: usize = 1 << 20;
const BURST: usize = 256 * 1024;

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
    c.sock
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(c.recv().is_err(), "logout answered with pieces in flight");
    c.sock
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
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
