//! Landed writes (`crates/iscsi/src/landed_write.rs`): the data of a large
//! WRITE to a fileio LU on tmpfs (its immediate data and its R2T'd bursts)
//! goes from the socket straight into the file's pages; a write its checks
//! refuse, or a Data-Out that fails its own, never touches them; a write
//! that cannot stream (ORDERED) still gets its data; a reset from another
//! session stops the landing of a write under way.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use backstore::{Backstore, FileBackstore, FileOptions};
use common::*;
use iscsi_wire::request::{Attr, DataOut, ScsiCommand};
use iscsi_wire::response::{R2t, ScsiResponse};
use iscsi_wire::Opcode;
use target_core::{Device, DeviceOptions};

const MIB: usize = 1 << 20;
const BURST: usize = 256 * 1024;

/// A fileio LU of 8 MiB on tmpfs (and the directory holding its file).
fn rig() -> (
    Arc<FileBackstore>,
    Arc<iscsi::IscsiServer>,
    SocketAddr,
    Client,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir_in("/dev/shm").unwrap();
    let file = FileBackstore::open(&FileOptions {
        size: Some(8 * MIB as u64),
        ..FileOptions::new(dir.path().join("lu.img"))
    })
    .unwrap();
    assert!(file.lands_writes(), "a file on tmpfs lands writes");
    let ram = Arc::new(file);
    let dev = Device::new(
        DeviceOptions::new("land0", "5b3c9a2e-0000-4000-8000-0000000000d1"),
        Arc::clone(&ram) as Arc<dyn Backstore>,
    );
    let (srv, addr) = serve_device(dev);
    let c = session(addr, LIBISCSI);
    (ram, srv, addr, c, dir)
}

fn expect(c: &mut Client, op: Opcode) -> common::Pdu {
    let p = c.recv().expect("a PDU");
    assert_eq!(p.bhs.opcode(), op, "{:?}", p.bhs);
    p
}

/// Send a command with its immediate data, the header first and the data
/// a moment later: the target has the header alone when it decides how to
/// receive the data (the way of a data segment depends on how much of it
/// came with its header).
fn send_cmd_split(c: &mut Client, cmd: &ScsiCommand, data: &[u8]) {
    let pdu = c.encode_cmd(cmd, data);
    c.send_raw(&pdu[..iscsi_wire::BHS_LEN]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    c.send_raw(&pdu[iscsi_wire::BHS_LEN..]).unwrap();
}

/// Start a 1 MiB WRITE of `data` at LBA 0, its first burst as immediate
/// data sent as [`send_cmd_split`] does: the command and its first R2T.
fn start_landing_write(c: &mut Client, data: &[u8]) -> (ScsiCommand, R2t) {
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    send_cmd_split(c, &cmd, &data[..BURST]);
    (cmd, R2t::parse(&expect(c, Opcode::R2T).bhs))
}

/// Answer an R2T as `Client::answer_r2t` does, the header first.
fn answer_r2t_split(c: &mut Client, r: &R2t, data: &[u8]) {
    let (d, part) = c.r2t_answer(r, data, 0);
    send_data_out_split(c, &d, part);
}

fn send_data_out_split(c: &mut Client, d: &DataOut, data: &[u8]) {
    let mut b = iscsi_wire::Bhs::default();
    d.write_to(&mut b);
    let mut pdu = Vec::new();
    iscsi_wire::pdu::encode(&mut pdu, &b, data, Default::default());
    c.send_raw(&pdu[..iscsi_wire::BHS_LEN]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    c.send_raw(&pdu[iscsi_wire::BHS_LEN..]).unwrap();
}

/// Answer R2Ts until the command's status: (status, sense).
fn run_to_status(c: &mut Client, data: &[u8]) -> (u8, Vec<u8>) {
    loop {
        let p = c.recv().expect("a PDU");
        match p.bhs.opcode() {
            Opcode::R2T => answer_r2t_split(c, &R2t::parse(&p.bhs), data),
            Opcode::SCSI_RESPONSE => {
                let r = ScsiResponse::parse(&p.bhs);
                assert_eq!(r.sn.statsn, c.exp_statsn, "StatSN in order");
                c.exp_statsn += 1;
                return (r.status, p.data.get(2..).unwrap_or_default().to_vec());
            }
            op => panic!("unexpected {op:?}"),
        }
    }
}

fn medium(ram: &FileBackstore, at: usize, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    ram.read_at(&mut b, at as u64).unwrap();
    b
}

/// Of a write stopped by `event` after its first burst (`before`: the
/// bytes landed until then), nothing more landed and the rest of its data
/// is not on the medium.
#[track_caller]
fn assert_nothing_landed_after(
    srv: &iscsi::IscsiServer,
    ram: &FileBackstore,
    before: u64,
    event: &str,
) {
    assert_eq!(
        srv.landed_receives().1,
        before,
        "nothing landed after {event}"
    );
    assert!(
        medium(ram, BURST, MIB - BURST).iter().all(|&b| b == 0),
        "the data sent after {event} is not on the medium"
    );
}

#[test]
fn a_large_writes_r2td_data_lands_in_the_file() {
    let (ram, srv, _, mut c, _dir) = rig();
    let data = pattern(MIB, 0x31);
    let cmd = c.scsi_cmd_header(&write10(2048, (MIB / 512) as u16), false, true, MIB as u32);
    send_cmd_split(&mut c, &cmd, &data[..BURST]);
    assert_eq!(run_to_status(&mut c, &data).0, 0);
    let (pdus, bytes) = srv.landed_receives();
    // The immediate data (handled before it was received) and the three
    // R2T'd bursts land: each came after its header.
    assert_eq!(pdus, 4, "four data segments landed");
    assert_eq!(bytes, MIB as u64, "landed {bytes} bytes");
    assert!(
        medium(&ram, 2048 * 512, MIB) == data,
        "the file holds the data"
    );
    let (st, got, _) = c.read_cmd(&read10(2048, (MIB / 512) as u16), MIB as u32);
    assert_eq!(st, 0);
    assert!(got == data);
    c.logout();
    srv.shutdown();
}

#[test]
fn a_data_out_with_a_wrong_datasn_never_touches_the_medium() {
    let (ram, srv, _, mut c, _dir) = rig();
    let data = pattern(MIB, 0x44);
    let (cmd, r) = start_landing_write(&mut c, &data);
    let (d, bad) = c.r2t_answer(&r, &data, 5);
    send_data_out_split(&mut c, &d, bad);
    let (off, len) = (r.buffer_offset as usize, r.desired_len as usize);
    // The connection goes on (the task is poisoned, its data dropped).
    c.nop(&[]);
    assert_eq!(srv.landed_receives().0, 1, "only the immediate data landed");
    assert!(
        medium(&ram, off, len).iter().all(|&b| b == 0),
        "the bad Data-Out's bytes are not on the medium"
    );
    assert_eq!(c.tmf(1 /* ABORT TASK */, 0, cmd.itt).response.code(), 0);
    c.logout();
    srv.shutdown();
}

#[test]
fn a_reset_from_another_session_stops_a_landing_write() {
    let (ram, srv, addr, mut c, _dir) = rig();
    let data = pattern(MIB, 0x5a);
    let (_, first) = start_landing_write(&mut c, &data);
    let before = srv.landed_receives().1;
    // Another initiator resets the LU while this write waits for its data.
    let mut other = other_initiator_session(addr, 0x67, LIBISCSI);
    assert_eq!(other.tmf_code(5 /* LOGICAL UNIT RESET */), 0);
    // The write's remaining data arrives after the reset: none of it
    // lands, and the write is answered with the reset's unit attention
    // (as a gathered write, checked once its data is in, would be).
    answer_r2t_split(&mut c, &first, &data);
    let (st, sense) = run_to_status(&mut c, &data);
    assert_eq!(st, 2, "CHECK CONDITION");
    assert_eq!(
        (sense[2] & 0x0f, sense[12]),
        (6, 0x29),
        "the reset's unit attention"
    );
    assert_nothing_landed_after(&srv, &ram, before, "the reset");
    other.logout();
    c.logout();
    srv.shutdown();
}

/// Another initiator takes a reservation (`take`, on its own session)
/// while a landing write of `c`'s waits for its data: the rest of that
/// data never lands, and the write is answered RESERVATION CONFLICT, as a
/// gathered write would be when executed once its data is in.
fn a_reservation_stops_a_landing_write(take: impl FnOnce(&mut Client)) {
    let (ram, srv, addr, mut c, _dir) = rig();
    let data = pattern(MIB, 0x5b);
    let (_, first) = start_landing_write(&mut c, &data);
    let before = srv.landed_receives().1;
    let mut other = other_initiator_session(addr, 0x69, LIBISCSI);
    take(&mut other);
    answer_r2t_split(&mut c, &first, &data);
    let (st, _) = run_to_status(&mut c, &data);
    assert_eq!(st, 0x18, "RESERVATION CONFLICT");
    assert_nothing_landed_after(&srv, &ram, before, "the reservation");
    other.logout();
    c.logout();
    srv.shutdown();
}

#[test]
fn an_spc2_reserve_from_another_session_stops_a_landing_write() {
    a_reservation_stops_a_landing_write(|other| {
        let (st, _, _) = other.read_cmd(&[0x16, 0, 0, 0, 0, 0], 0);
        assert_eq!(st, 0, "RESERVE(6)");
    });
}

/// PERSISTENT RESERVE OUT with service action `sa`, type `ty` and the
/// 24-byte parameter list of `key` and `sa_key`.
fn pr_out(c: &mut Client, sa: u8, ty: u8, key: u64, sa_key: u64) -> u8 {
    let cdb = [0x5f, sa, ty, 0, 0, 0, 0, 0, 24, 0];
    let mut params = [0u8; 24];
    params[..8].copy_from_slice(&key.to_be_bytes());
    params[8..16].copy_from_slice(&sa_key.to_be_bytes());
    c.write_cmd(&cdb, &params).status
}

#[test]
fn a_persistent_reservation_from_another_session_stops_a_landing_write() {
    a_reservation_stops_a_landing_write(|other| {
        assert_eq!(pr_out(other, 0 /* REGISTER */, 0, 0, 0xabc), 0);
        // WRITE EXCLUSIVE: writes of an unregistered nexus conflict.
        assert_eq!(pr_out(other, 1 /* RESERVE */, 1, 0xabc, 0), 0);
    });
}

#[test]
fn a_refused_write_with_pending_immediate_data_writes_nothing() {
    let (ram, srv, _, mut c, _dir) = rig();
    let data = pattern(MIB, 0x66);
    // Runs past the LU's end: refused at arrival, before its immediate
    // data was received; that data is dropped and the connection in step.
    let lba = (8 * MIB / 512 - 1024) as u32;
    let cmd = c.scsi_cmd_header(&write10(lba, (MIB / 512) as u16), false, true, MIB as u32);
    send_cmd_split(&mut c, &cmd, &data[..BURST]);
    let p = expect(&mut c, Opcode::SCSI_RESPONSE);
    let r = ScsiResponse::parse(&p.bhs);
    c.exp_statsn += 1;
    assert_eq!((r.itt, r.status), (cmd.itt, 2), "CHECK CONDITION");
    c.nop(&[]);
    assert_eq!(srv.landed_receives(), (0, 0));
    assert!(medium(&ram, 8 * MIB - BURST, BURST).iter().all(|&b| b == 0));
    // An ORDERED write does not stream: its immediate data goes to its
    // buffer (received after the command was handled), all of it arrives.
    let data = pattern(MIB, 0x67);
    let mut cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    cmd.attr = Attr::Ordered;
    send_cmd_split(&mut c, &cmd, &data[..BURST]);
    assert_eq!(run_to_status(&mut c, &data).0, 0);
    assert_eq!(srv.landed_receives(), (0, 0), "an ORDERED write gathers");
    assert_eq!(srv.direct_receives().1, 2, "both came the pending way");
    assert!(medium(&ram, 0, MIB) == data, "the ORDERED write's data");
    c.logout();
    srv.shutdown();
}
