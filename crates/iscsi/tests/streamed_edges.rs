//! Streamed writes (`streamed_write`) at their edges: the command window
//! while one gathers its data.

mod common;

use common::*;

const MIB: usize = 1 << 20;
const BURST: usize = 256 * 1024;

/// MaxCmdSN - ExpCmdSN of the answer to a TEST UNIT READY sent now.
fn room_after_tur(c: &mut Client) -> u32 {
    let (st, _, r) = c.read_cmd(&[0; 6], 0);
    assert_eq!(st, 0);
    let sn = r.expect("SCSI Response").sn;
    sn.max_cmdsn.wrapping_sub(sn.exp_cmdsn)
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
