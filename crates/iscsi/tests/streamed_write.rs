//! Streamed writes (`streamed_write`): on an LU whose backstore takes
//! writes piece by piece, each burst of a WRITE reaches the backstore as
//! soon as it is in, before the initiator sent the rest; the command is
//! answered once all pieces completed (one CHECK CONDITION if one failed);
//! a write its checks refuse is answered at once, before any R2T, and the
//! backstore sees nothing of it; ABORT TASK mid-transfer waits for the
//! pieces in flight and answers nothing for the task.

mod common;

use std::sync::Arc;

use backstore::testing::RecordsPieces;
use common::*;
use iscsi_wire::response::TaskMgmtResponse;
use iscsi_wire::Opcode;

const MIB: usize = 1 << 20;
const BURST: usize = 256 * 1024;

fn rig(size: usize) -> (Arc<RecordsPieces>, Arc<iscsi::IscsiServer>, Client) {
    let (store, srv, _, c) = stream_rig(size, LIBISCSI);
    (store, srv, c)
}

#[test]
fn each_burst_reaches_the_backstore_before_the_last_data_out() {
    let (store, srv, mut c) = rig(8 * MIB);
    let data = pattern(MIB, 0x3c);
    let lba = 2048u32;
    let cmd = c.scsi_cmd_header(&write10(lba, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = expect_r2t(&mut c);
        seen.push(pieces_reach(&store, seen.len() + 1));
        if r.buffer_offset as usize + r.desired_len as usize == MIB {
            // The last burst: what the backstore has before it is sent.
            let before = store.pieces();
            assert!(
                before.len() >= 2,
                "pieces before the last Data-Out: {before:?}"
            );
        }
        c.answer_r2t(&r, &data);
    }
    let r = expect_response(&mut c);
    assert_eq!(r.status, 0, "GOOD");
    let pieces = store.pieces();
    let offsets: Vec<u64> = pieces.iter().map(|p| p.offset).collect();
    let base = u64::from(lba) * 512;
    assert_eq!(
        offsets,
        [0, 1, 2, 3].map(|i| base + i * BURST as u64),
        "one piece per burst, in order: {pieces:?}"
    );
    assert!(pieces.iter().all(|p| p.len == BURST && !p.fua));
    assert_eq!(seen, [1, 2, 3], "each burst written before the next R2T");
    let (st, got, _) = c.read_cmd(&read10(lba, (MIB / 512) as u16), MIB as u32);
    assert_eq!(st, 0);
    assert!(got == data, "data read back");
    c.logout();
    srv.shutdown();
}

#[test]
fn a_failed_piece_fails_the_write_with_one_check_condition() {
    let (store, srv, mut c) = rig(8 * MIB);
    store.fail_at(2 * BURST as u64 + 512);
    let data = pattern(MIB, 0x11);
    let r = c.write_cmd(&write10(0, (MIB / 512) as u16), &data);
    assert_eq!(r.status, 2, "CHECK CONDITION");
    assert_eq!(sense(&c), (3, 0x0c, 0), "MEDIUM ERROR, WRITE ERROR");
    // The LU goes on: the next write succeeds.
    store.fail_at(u64::MAX);
    let r = c.write_cmd(&write10(0, (MIB / 512) as u16), &data);
    assert_eq!(r.status, 0);
    c.logout();
    srv.shutdown();
}

#[test]
fn a_write_its_checks_refuse_is_answered_at_once_and_writes_nothing() {
    let (store, srv, addr, mut c) = stream_rig(4 * MIB, LIBISCSI);
    let data = pattern(MIB, 0x77);
    // Past the capacity: LOGICAL BLOCK ADDRESS OUT OF RANGE, no R2T.
    let lba = (4 * MIB / 512 - 1024) as u32;
    let cmd = c.scsi_cmd_header(&write10(lba, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let r = expect_response(&mut c);
    assert_eq!(r.itt, cmd.itt);
    assert_eq!(r.status, 2);
    assert_eq!(sense(&c), (5, 0x21, 0));
    // Another initiator's SPC-2 reservation: RESERVATION CONFLICT, no R2T.
    let mut other = other_initiator_session(addr, 0x66, LIBISCSI);
    let (st, _, _) = other.read_cmd(&[0x16, 0, 0, 0, 0, 0], 0);
    assert_eq!(st, 0, "RESERVE(6)");
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let r = expect_response(&mut c);
    assert_eq!(r.status, 0x18, "RESERVATION CONFLICT");
    // The connection is in step: a NOP-Out is answered next.
    c.nop(&[]);
    assert!(store.pieces().is_empty(), "{:?}", store.pieces());
    let (st, _, _) = other.read_cmd(&[0x17, 0, 0, 0, 0, 0], 0);
    assert_eq!(st, 0, "RELEASE(6)");
    other.logout();
    c.logout();
    srv.shutdown();
}

#[test]
fn abort_task_mid_transfer_waits_for_the_pieces_in_flight() {
    let (store, srv, mut c) = rig(8 * MIB);
    let data = pattern(MIB, 0x42);
    store.hold();
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let r = expect_r2t(&mut c);
    c.answer_r2t(&r, &data);
    let _ = expect_r2t(&mut c);
    assert_eq!(pieces_reach(&store, 2), 2, "two bursts in flight");
    let tm = c.abort_task(0x4001, &cmd);
    c.send_tmf(&tm);
    // Its pieces are still in the backstore: no answer yet.
    assert_quiet(&mut c, "TMF answered with pieces in flight");
    assert_eq!(store.release(), 2);
    let p = c.recv().expect("TMF response");
    assert_eq!(
        p.bhs.opcode(),
        Opcode::TASK_MGMT_RESPONSE,
        "nothing for the task"
    );
    c.exp_statsn += 1;
    assert_eq!(TaskMgmtResponse::parse(&p.bhs).response.code(), 0);
    // Late data for the aborted task is dropped; the session goes on.
    c.answer_r2t(&r, &data);
    c.nop(&[]);
    let r = c.write_cmd(&write10(4096, (MIB / 512) as u16), &data);
    assert_eq!(r.status, 0);
    assert_eq!(store.pieces().len(), 6);
    c.logout();
    srv.shutdown();
}

/// The R2T a burst earns is sent before that burst is written: the
/// initiator sends the next burst while the backstore takes this one
/// (`Session::feed_due`). Here the backstore's write of the immediate
/// data blocks the connection thread, and the R2T still comes.
#[test]
fn the_r2t_goes_out_before_its_burst_is_written() {
    let (store, srv, mut c) = rig(8 * MIB);
    store.block_writes();
    let data = pattern(MIB, 0x6e);
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    let t0 = std::time::Instant::now();
    c.send_cmd(&cmd, &data[..BURST]);
    let r = expect_r2t(&mut c);
    let took = t0.elapsed();
    assert_eq!(r.buffer_offset as usize, BURST);
    assert_eq!(
        pieces_reach(&store, 1),
        1,
        "the immediate data is being written"
    );
    store.unblock_writes();
    assert!(
        took < std::time::Duration::from_secs(3),
        "the R2T waited {took:?} for the write"
    );
    c.answer_r2t(&r, &data);
    for _ in 0..2 {
        let r = expect_r2t(&mut c);
        c.answer_r2t(&r, &data);
    }
    assert_eq!(expect_response(&mut c).status, 0, "GOOD");
    c.logout();
    srv.shutdown();
}
