//! Reads and writes over real TCP through every Data-Out path (immediate,
//! unsolicited, R2T with several outstanding), digests, Data-In splitting,
//! residuals and task management.

mod common;

use common::*;
use iscsi_wire::response::{ScsiResponse, TaskMgmtResponse};
use iscsi_wire::Opcode;

fn roundtrip(c: &mut Client, lba: u32, len: usize, seed: u8) {
    let data = pattern(len, seed);
    let blocks = (len / 512) as u16;
    let r = c.write_cmd(&write10(lba, blocks), &data);
    assert_eq!(r.status, 0, "write status");
    assert!(!r.residual.overflow && !r.residual.underflow);
    let (st, got, _) = c.read_cmd(&read10(lba, blocks), len as u32);
    assert_eq!(st, 0, "read status");
    assert!(got == data, "read back {len} bytes at {lba}");
}

#[test]
fn write_read_all_data_out_paths() {
    let (srv, addr) = server(&[]);
    // (extra login keys, description)
    let configs: &[&[(&str, &str)]] = &[
        &[],                                                // immediate + unsolicited + R2T
        &[("ImmediateData", "No"), ("InitialR2T", "Yes")],  // R2T only
        &[("ImmediateData", "Yes"), ("InitialR2T", "Yes")], // immediate + R2T
        &[("ImmediateData", "No"), ("InitialR2T", "No")],   // unsolicited + R2T
        &[
            ("MaxOutstandingR2T", "1"),
            ("MaxBurstLength", "65536"),
            ("ImmediateData", "No"),
        ],
        &[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")],
        &[("MaxRecvDataSegmentLength", "4096")],
    ];
    for (i, extra) in configs.iter().enumerate() {
        let mut c = Client::connect(addr);
        c.isid[5] = i as u8;
        c.login(Some(IQN), extra);
        c.clear_ua();
        for (n, len) in [512usize, 4096, 65536, 300 * 1024, 1 << 20, 3 << 20]
            .iter()
            .enumerate()
        {
            roundtrip(&mut c, (n as u32) * 2048, *len, i as u8 + n as u8);
        }
        c.logout();
    }
    srv.shutdown();
}

#[test]
fn read_residuals() {
    let (srv, addr) = server(&[]);
    let mut c = session(addr, &[]);
    // EDTL smaller than the transfer: overflow, data truncated.
    let (st, data, _) = c.read_cmd(&read10(0, 2), 512);
    assert_eq!(st, 0);
    assert_eq!(data.len(), 512);
    // Check the flags through a raw response: status in the last Data-In.
    let cmd = c.scsi_cmd_header(&read10(0, 1), true, false, 1024);
    c.send_cmd(&cmd, &[]);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::DATA_IN);
    let d = iscsi_wire::response::DataIn::parse(&p.bhs);
    assert_eq!(d.status, Some(0));
    assert!(d.residual.underflow);
    assert_eq!(d.residual.count, 512);
    c.exp_statsn += 1;
    srv.shutdown();
}

#[test]
fn write_residuals() {
    let (srv, addr) = server(&[]);
    let mut c = session(addr, &[]);
    // One block in the CDB, two blocks of EDTL: underflow of one block.
    let r: ScsiResponse = c.write_cmd(&write10(0, 1), &pattern(1024, 1));
    assert!(r.residual.underflow, "{r:?}");
    assert_eq!(r.residual.count, 512);
    // Two blocks in the CDB, one block of EDTL: overflow of one block.
    let r = c.write_cmd(&write10(0, 2), &pattern(512, 1));
    assert!(r.residual.overflow, "{r:?}");
    assert_eq!(r.residual.count, 512);
    srv.shutdown();
}

#[test]
fn many_commands_in_one_send_are_all_answered() {
    let (srv, addr) = server(&[]);
    let mut c = session(addr, &[]);
    let mut bytes = Vec::new();
    let mut itts = Vec::new();
    for i in 0..64u32 {
        let cmd = c.scsi_cmd_header(&read10(i, 1), true, false, 512);
        itts.push(cmd.itt);
        bytes.extend(c.encode_cmd(&cmd, &[]));
    }
    c.send_raw(&bytes).unwrap();
    for itt in itts {
        let p = c.recv().unwrap();
        assert_eq!(p.bhs.opcode(), Opcode::DATA_IN);
        assert_eq!(p.bhs.itt(), itt);
        assert_eq!(p.bhs.flags() & 0x81, 0x81, "final with status");
        assert_eq!(p.bhs.u32_at(24), c.exp_statsn);
        c.exp_statsn += 1;
    }
    srv.shutdown();
}

#[test]
fn cmdsn_outside_window_is_ignored() {
    let (srv, addr) = server(&[]);
    let mut c = session(addr, &[]);
    let mut cmd = c.scsi_cmd_header(&[0; 6], false, false, 0);
    cmd.cmdsn = cmd.cmdsn.wrapping_add(1000);
    c.cmdsn -= 1;
    c.send_cmd(&cmd, &[]);
    // The next in-window command is answered, and first.
    let (st, _, r) = c.read_cmd(&[0; 6], 0);
    assert_eq!(st, 0);
    assert!(r.is_some());
    srv.shutdown();
}

#[test]
fn abort_task_waiting_for_data() {
    let (srv, addr) = server(&[]);
    let mut c = session(addr, &[("ImmediateData", "No"), ("InitialR2T", "Yes")]);
    let cmd = c.scsi_cmd_header(&write10(0, 8), false, true, 4096);
    c.send_cmd(&cmd, &[]);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::R2T);
    let tm = c.abort_task(0x7777, &cmd);
    c.send_tmf(&tm);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::TASK_MGMT_RESPONSE);
    assert_eq!(TaskMgmtResponse::parse(&p.bhs).response.code(), 0);
    c.exp_statsn += 1;
    // Aborting it again: the task does not exist any more.
    let mut tm2 = tm;
    tm2.itt = 0x7778;
    c.send_tmf(&tm2);
    let p = c.recv().unwrap();
    assert_eq!(TaskMgmtResponse::parse(&p.bhs).response.code(), 1);
    c.exp_statsn += 1;
    // The session still works.
    let (st, _, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!(st, 0);
    srv.shutdown();
}

#[test]
fn resets_and_unknown_functions() {
    let (srv, addr) = server(&[]);
    let mut c = session(addr, &[]);
    assert_eq!(c.tmf_code(5), 0, "LUN RESET");
    assert_eq!(c.tmf_code(8), 4, "TASK REASSIGN at ERL 0");
    assert_eq!(c.tmf_code(0x55), 255, "unknown function");
    // Cold reset: every session of the target ends.
    let mut other = Client::connect(addr);
    other.isid[5] = 0x42;
    other.login(Some(IQN), &[]);
    assert_eq!(c.tmf_code(7), 0, "TARGET COLD RESET");
    assert!(c.closed());
    assert!(other.closed());
    srv.shutdown();
}

#[test]
fn busy_polling_connection_serves_every_data_out_path() {
    // busy_poll_us: the connection spins on non-blocking receives before
    // it blocks; every PDU must still be framed and answered the same
    // (immediate, unsolicited, R2T-solicited and directly received data).
    let srv = iscsi::IscsiServer::new();
    let mut t = target(IQN, 8 << 20, &[]);
    t.tpgs[0].attributes.busy_poll_us = 1000;
    srv.set_target(t);
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    for (i, extra) in [
        &[][..],
        &[("ImmediateData", "No"), ("InitialR2T", "Yes")][..],
    ]
    .iter()
    .enumerate()
    {
        let mut c = Client::connect(addr);
        c.isid[5] = i as u8;
        c.login(Some(IQN), extra);
        c.clear_ua();
        for (n, len) in [512usize, 4096, 65536, 1 << 20].iter().enumerate() {
            roundtrip(&mut c, (n as u32) * 2048, *len, i as u8 + n as u8);
        }
        c.logout();
    }
    srv.shutdown();
}

#[test]
fn an_idle_connection_stops_busy_polling() {
    // Busy polling is adaptive: it spins while requests come back to back
    // and stops when the initiator goes quiet. An idle connection wakes
    // every receive timeout (200 ms) and must not spin each time (a fixed
    // spin would: one budget per wake-up, for nothing).
    let srv = iscsi::IscsiServer::new();
    let mut t = target(IQN, 1 << 20, &[]);
    t.tpgs[0].attributes.busy_poll_us = 1000;
    srv.set_target(t);
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = session(addr, &[]);
    // Busy: an initiator that thinks 100 µs between reads (so that the
    // connection does wait, however the threads are scheduled).
    for i in 0..200 {
        let (st, _, _) = c.read_cmd(&read10(i % 64, 8), 4096);
        assert_eq!(st, 0);
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    // Idle: the first waits may still spin (and report); by now the
    // connection has blocked through one receive timeout.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = srv.busy_poll_counts();
    let spun = |s: &iscsi::PollStats| s.data + s.ran_out + s.yielded;
    assert!(
        spun(&before) > 0,
        "back-to-back requests are spun for: {before:?}"
    );
    // Five more receive timeouts of idleness: not one spin.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let after = srv.busy_poll_counts();
    assert_eq!(spun(&after), spun(&before), "{before:?} -> {after:?}");
    assert_eq!(after.spin_ns, before.spin_ns, "{before:?} -> {after:?}");
    assert!(
        after.skipped > before.skipped,
        "the idle waits are seen: {after:?}"
    );
    // Still served, and spinning may start again.
    assert_eq!(c.read_cmd(&read10(0, 8), 4096).0, 0);
    c.logout();
    srv.shutdown();
}
