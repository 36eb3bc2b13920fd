//! Landed writes (`crates/iscsi/src/landed_write.rs`): the R2T'd data of a
//! large WRITE to a fileio LU on tmpfs goes from the socket straight into
//! the file's pages; a Data-Out that fails its checks never touches them;
//! a reset from another session stops the landing of a write under way.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use backstore::{Backstore, FileBackstore, FileOptions};
use common::*;
use iscsi_wire::request::DataOut;
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

fn medium(ram: &FileBackstore, at: usize, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    ram.read_at(&mut b, at as u64).unwrap();
    b
}

#[test]
fn a_large_writes_r2td_data_lands_in_the_file() {
    let (ram, srv, _, mut c, _dir) = rig();
    let data = pattern(MIB, 0x31);
    let r = c.write_cmd(&write10(2048, (MIB / 512) as u16), &data);
    assert_eq!(r.status, 0);
    let (pdus, bytes) = srv.landed_receives();
    // The 256 KiB of immediate data go as a piece; the three R2T'd bursts
    // land, but for what came with each header.
    assert_eq!(pdus, 3, "three Data-Out PDUs landed");
    assert!(
        bytes >= (3 * BURST - 3 * 64 * 1024) as u64,
        "landed {bytes} bytes"
    );
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
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let r = R2t::parse(&expect(&mut c, Opcode::R2T).bhs);
    let d = DataOut {
        final_bit: true,
        lun: [0; 8],
        itt: r.itt,
        ttt: r.ttt,
        exp_statsn: c.exp_statsn,
        datasn: 5,
        buffer_offset: r.buffer_offset,
    };
    let (off, len) = (r.buffer_offset as usize, r.desired_len as usize);
    c.send_data_out(&d, &data[off..off + len]);
    // The connection goes on (the task is poisoned, its data dropped).
    c.nop(&[]);
    assert_eq!(srv.landed_receives().0, 0, "nothing landed");
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
    let cmd = c.scsi_cmd_header(&write10(0, (MIB / 512) as u16), false, true, MIB as u32);
    c.send_cmd(&cmd, &data[..BURST]);
    let first = R2t::parse(&expect(&mut c, Opcode::R2T).bhs);
    // Another initiator resets the LU while this write waits for its data.
    let mut other = Client::connect(addr);
    other.initiator = "iqn.2026-11.org.rtarget:other".into();
    other.isid = [0x80, 0, 0, 0, 0x55, 0x67];
    other.login(Some(IQN), LIBISCSI);
    other.clear_ua();
    assert_eq!(other.tmf_code(5 /* LOGICAL UNIT RESET */), 0);
    // The write's remaining data arrives after the reset: none of it
    // lands, and the write is answered with the reset's unit attention
    // (as a gathered write, checked once its data is in, would be).
    c.answer_r2t(&first, &data);
    let mut sense = Vec::new();
    let mut st = 0xff;
    while st == 0xff {
        let p = c.recv().expect("a PDU");
        match p.bhs.opcode() {
            Opcode::R2T => c.answer_r2t(&R2t::parse(&p.bhs), &data),
            Opcode::SCSI_RESPONSE => {
                let r = ScsiResponse::parse(&p.bhs);
                c.exp_statsn += 1;
                st = r.status;
                sense = p.data.get(2..).unwrap_or_default().to_vec();
            }
            op => panic!("unexpected {op:?}"),
        }
    }
    assert_eq!(st, 2, "CHECK CONDITION");
    assert_eq!(
        (sense[2] & 0x0f, sense[12]),
        (6, 0x29),
        "the reset's unit attention"
    );
    assert_eq!(srv.landed_receives().1, 0, "nothing landed after the reset");
    assert!(
        medium(&ram, BURST, MIB - BURST).iter().all(|&b| b == 0),
        "the data sent after the reset is not on the medium"
    );
    other.logout();
    c.logout();
    srv.shutdown();
}
