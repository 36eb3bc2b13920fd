//! RFC 7144's task management functions over real TCP: QUERY TASK, QUERY
//! TASK SET, I_T NEXUS RESET and QUERY ASYNC EVENT.

mod common;

use common::*;
use iscsi_wire::Opcode;

const SUCCEEDED: u8 = 7;
const COMPLETE: u8 = 0;
const NO_LUN: u8 = 2;

/// Send one TMF (`lun` as a single-level LUN) and return its response code.
fn tmf(c: &mut Client, function: u8, lun: u8, referenced_tag: u32) -> u8 {
    c.tmf(function, lun, referenced_tag).response.code()
}

/// A WRITE that waits for Data-Out (R2T received): a task in the task set
/// until it gets its data or is aborted. Returns its ITT.
fn waiting_write(c: &mut Client) -> u32 {
    let cmd = c.scsi_cmd_header(&write10(0, 8), false, true, 4096);
    c.send_cmd(&cmd, &[]);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::R2T);
    cmd.itt
}

const SLOW_DATA: &[(&str, &str)] = &[("ImmediateData", "No"), ("InitialR2T", "Yes")];

#[test]
fn query_task_and_task_set() {
    let (srv, addr) = server(&[]);
    let mut c = session(addr, SLOW_DATA);
    assert_eq!(tmf(&mut c, 10, 0, 0xffff_ffff), COMPLETE, "empty task set");
    let itt = waiting_write(&mut c);
    assert_eq!(tmf(&mut c, 9, 0, itt), SUCCEEDED, "the task is there");
    assert_eq!(tmf(&mut c, 9, 0, itt + 100), COMPLETE, "no such task");
    assert_eq!(tmf(&mut c, 9, 5, itt + 100), NO_LUN);
    assert_eq!(tmf(&mut c, 10, 0, 0xffff_ffff), SUCCEEDED);
    assert_eq!(tmf(&mut c, 10, 5, 0xffff_ffff), NO_LUN);
    // Queries change nothing: the task is still there, then aborted.
    assert_eq!(tmf(&mut c, 9, 0, itt), SUCCEEDED);
    assert_eq!(tmf(&mut c, 1, 0, itt), COMPLETE, "ABORT TASK");
    assert_eq!(tmf(&mut c, 9, 0, itt), COMPLETE);
    assert_eq!(tmf(&mut c, 10, 0, 0xffff_ffff), COMPLETE);
    srv.shutdown();
}

#[test]
fn query_async_event_reports_a_pending_unit_attention() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    // A new nexus owes the power-on condition; the query leaves it. RFC
    // 7144's Additional Response Information names it: UADE DEPTH 01b (the
    // only one) with sense key 6, ASC 29h, ASCQ 00h.
    let r = c.tmf(12, 0, 0xffff_ffff);
    assert_eq!(
        (r.response.code(), r.additional),
        (SUCCEEDED, [0x16, 0x29, 0])
    );
    assert_eq!(tmf(&mut c, 12, 0, 0xffff_ffff), SUCCEEDED);
    let (st, _, _) = c.read_cmd(&[0; 6], 0);
    assert_eq!(st, 2);
    assert_eq!(c.last_sense.get(12..14), Some(&[0x29, 0x00][..]));
    let r = c.tmf(12, 0, 0xffff_ffff);
    assert_eq!((r.response.code(), r.additional), (COMPLETE, [0; 3]));
    assert_eq!(tmf(&mut c, 12, 5, 0xffff_ffff), NO_LUN);
    // A LUN reset queues another.
    assert_eq!(tmf(&mut c, 5, 0, 0xffff_ffff), COMPLETE);
    let r = c.tmf(12, 0, 0xffff_ffff);
    assert_eq!(
        (r.response.code(), r.additional),
        (SUCCEEDED, [0x16, 0x29, 0])
    );
    srv.shutdown();
}

#[test]
fn it_nexus_reset_ends_tasks_and_reservations_with_a_unit_attention() {
    let (srv, addr) = server(&[]);
    let mut c = session(addr, SLOW_DATA);
    let mut other = Client::connect(addr);
    other.isid[5] = 0x42;
    other.login(Some(IQN), &[]);
    other.clear_ua();
    // RESERVE(6): the other nexus now conflicts.
    assert_eq!(c.read_cmd(&[0x16, 0, 0, 0, 0, 0], 0).0, 0);
    assert_eq!(other.read_cmd(&[0; 6], 0).0, 0x18);
    let itt = waiting_write(&mut c);
    assert_eq!(tmf(&mut c, 11, 0, 0xffff_ffff), COMPLETE);
    assert_eq!(tmf(&mut c, 9, 0, itt), COMPLETE, "the write is gone");
    let r = c.tmf(12, 0, 0xffff_ffff);
    assert_eq!(
        (r.response.code(), r.additional),
        (SUCCEEDED, [0x16, 0x29, 7])
    );
    let (st, _, _) = c.read_cmd(&[0; 6], 0);
    assert_eq!(st, 2);
    assert_eq!(c.last_sense[2] & 0xf, 6);
    assert_eq!(
        c.last_sense.get(12..14),
        Some(&[0x29, 0x07][..]),
        "I_T NEXUS LOSS OCCURRED"
    );
    // The reservation went with the reset; the other nexus was not reset.
    assert_eq!(other.read_cmd(&[0; 6], 0).0, 0);
    assert_eq!(tmf(&mut other, 12, 0, 0xffff_ffff), COMPLETE);
    // The session goes on.
    assert_eq!(c.read_cmd(&[0; 6], 0).0, 0);
    srv.shutdown();
}
