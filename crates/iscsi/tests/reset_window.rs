//! A reset's window (`tmf.rs`): a LOGICAL UNIT RESET waits for the LU's
//! tasks of every session, then the core raises its unit attention, which
//! fences streamed writes checked before it. A piece of another session's
//! streamed write that starts between the two read the fence before it
//! moved: the reset must still not be answered before that piece is done.
//! The test holds the reset in that window (`iscsi::test_hooks`, the only
//! user of the hook in this binary) while the piece starts.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

const MIB: usize = 1 << 20;
const BURST: usize = 256 * 1024;

#[test]
fn a_piece_started_in_the_resets_window_is_waited_for() {
    let (store, srv, addr, mut c) = stream_rig(8 * MIB, LIBISCSI);
    let data = pattern(MIB, 0x2d);
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let first = expect_r2t(&mut c);
    assert_eq!(pieces_reach(&store, 1), 1, "the immediate data is written");

    let mut other = other_initiator_session(addr, 0x68, LIBISCSI);

    // The reset stops in its window until told to go on.
    let (entered_tx, entered) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let go_rx = Mutex::new(go_rx);
    iscsi::test_hooks::on_reset_waited(Some(Arc::new(move || {
        let _ = entered_tx.lock().unwrap().send(());
        let _ = go_rx.lock().unwrap().recv();
    })));
    let reset = std::thread::spawn(move || {
        let code = other.tmf_code(5 /* LOGICAL UNIT RESET */);
        (code, other)
    });
    entered
        .recv_timeout(Duration::from_secs(10))
        .expect("the reset reaches its window");
    // In the window: the next burst becomes a piece, kept in flight.
    store.hold();
    c.answer_r2t(&first, &data);
    assert_eq!(pieces_reach(&store, 2), 2, "the burst's piece started");
    go.send(()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !reset.is_finished(),
        "the reset was answered with a piece in flight"
    );
    assert_eq!(store.release(), 1);
    let (code, mut other) = reset.join().unwrap();
    iscsi::test_hooks::on_reset_waited(None);
    assert_eq!(code, 0, "LOGICAL UNIT RESET");

    // The rest of the write comes after the reset: fenced, none of it is
    // written, and the write is answered with the reset's unit attention.
    loop {
        let p = c.recv().expect("a PDU");
        match p.bhs.opcode() {
            iscsi_wire::Opcode::R2T => {
                c.answer_r2t(&iscsi_wire::response::R2t::parse(&p.bhs), &data)
            }
            iscsi_wire::Opcode::SCSI_RESPONSE => {
                let r = iscsi_wire::response::ScsiResponse::parse(&p.bhs);
                c.exp_statsn += 1;
                assert_eq!(r.status, 2, "CHECK CONDITION");
                assert_eq!(p.data[2 + 2] & 0x0f, 6, "UNIT ATTENTION");
                assert_eq!(p.data[2 + 12], 0x29, "the reset's");
                break;
            }
            op => panic!("unexpected {op:?}"),
        }
    }
    assert_eq!(store.pieces().len(), 2, "nothing written after the reset");
    other.logout();
    c.logout();
    srv.shutdown();
}
