//! SCSI Command PDUs whose F, R and W bits disagree with their Expected Data
//! Transfer Length or their CDB (the policy is in src/cmd_flags.rs): the
//! inconsistent ones get a Reject and the session goes on; a READ flagged
//! as a write answers GOOD without its Data-Out reaching the medium.

mod common;

use common::*;
use iscsi_wire::response::{Reject, ScsiResponse};
use iscsi_wire::Opcode;

/// Send `c` with `imm` as immediate data; expect a Reject with `reason`
/// that carries the header.
fn expect_reject(c: &mut Client, cmd: &iscsi_wire::request::ScsiCommand, imm: &[u8], reason: u8) {
    let b = c.send_cmd(cmd, imm);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::REJECT, "{cmd:?}");
    let r = Reject::parse(&p.bhs);
    assert_eq!(r.reason.0, reason, "{cmd:?}");
    // The header as sent (DataSegmentLength, bytes 5..8, is set by `send`).
    assert_eq!(p.data.len(), 48);
    assert_eq!((&p.data[..4], &p.data[8..]), (&b.0[..4], &b.0[8..]));
    c.exp_statsn = r.sn.statsn + 1;
}

#[test]
fn inconsistent_flags_are_rejected_and_the_session_goes_on() {
    let (srv, addr) = server(&[]);
    let mut c = session(addr, &[]);
    c.clear_ua();
    // F clear without W: nothing may follow a non-write command.
    let mut cmd = c.scsi_cmd_header(&read10(0, 1), true, false, 512);
    cmd.final_bit = false;
    expect_reject(&mut c, &cmd, &[], 0x09);
    // Data to move but no direction for it.
    let cmd = c.scsi_cmd_header(&read10(0, 1), false, false, 512);
    expect_reject(&mut c, &cmd, &[], 0x09);
    // Bidirectional: no LU implements one.
    let cmd = c.scsi_cmd_header(&read10(0, 1), true, true, 512);
    expect_reject(&mut c, &cmd, &[], 0x09);
    // More Data-Out announced although the immediate data is all of it.
    let mut cmd = c.scsi_cmd_header(&write10(0, 1), false, true, 512);
    cmd.final_bit = false;
    expect_reject(&mut c, &cmd, &pattern(512, 3), 0x04);
    // The session (CmdSN window included) still works.
    c.nop(b"alive");
    let (st, data, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!((st, data.len()), (0, 512));
    c.logout();
    srv.shutdown();
}

#[test]
fn read_flagged_as_write_answers_good_and_leaves_the_medium_alone() {
    let (srv, addr) = server(&[]);
    let mut c = session(addr, &[]);
    c.clear_ua();
    let old = pattern(512, 1);
    assert_eq!(c.write_cmd(&write10(0, 1), &old).status, 0);
    // libiscsi's iSCSIResiduals.Read10Invalid: READ(10) of one block sent as
    // a write with one block of immediate data.
    let cmd = c.scsi_cmd_header(&read10(0, 1), false, true, 512);
    c.send_cmd(&cmd, &pattern(512, 0xa6));
    let p = c.recv().unwrap();
    assert_eq!(
        p.bhs.opcode(),
        Opcode::SCSI_RESPONSE,
        "no Data-In for a write"
    );
    let r = ScsiResponse::parse(&p.bhs);
    assert_eq!((r.itt, r.status), (cmd.itt, 0));
    c.exp_statsn = r.sn.statsn + 1;
    let (st, data, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!(st, 0);
    assert_eq!(data, old, "the Data-Out of a READ must not be written");
    c.logout();
    srv.shutdown();
}
