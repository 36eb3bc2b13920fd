//! Large data segments received straight from the socket into the write
//! task's buffer (`crates/iscsi/src/direct.rs`): immediate data of a SCSI
//! Command as well as Data-Out. The data must land exactly, a command the
//! checks refuse must change nothing, and a connection lost in the middle
//! of the data must write nothing.

mod common;

use std::time::{Duration, Instant};

use common::*;
use iscsi_wire::Opcode;

/// bench.sh's session: 256 KiB immediate data, then one R2T at a time.
const KEYS: &[(&str, &str)] = &[
    ("FirstBurstLength", "262144"),
    ("MaxBurstLength", "262144"),
    ("MaxOutstandingR2T", "1"),
];

fn big_segment_server() -> (std::sync::Arc<iscsi::IscsiServer>, std::net::SocketAddr) {
    server(&[("MaxRecvDataSegmentLength", "262144")])
}

/// A session of its own (another ISID: no reinstatement of the first).
fn session_with_isid(addr: std::net::SocketAddr, id: u8, keys: &[(&str, &str)]) -> Client {
    let mut c = Client::connect(addr);
    c.isid[5] = id;
    c.login(Some(IQN), keys);
    c.clear_ua();
    c
}

fn write_ok(c: &mut Client, lba: u32, data: &[u8]) {
    let r = c.write_cmd(&write10(lba, (data.len() / 512) as u16), data);
    assert_eq!(r.status, 0, "write at {lba}: sense {:02x?}", c.last_sense);
}

fn read_back(c: &mut Client, lba: u32, len: usize) -> Vec<u8> {
    let (st, got, _) = c.read_cmd(&read10(lba, (len / 512) as u16), len as u32);
    assert_eq!(st, 0, "read at {lba}");
    got
}

#[test]
fn large_immediate_data_is_received_straight_into_the_task_buffer() {
    let (srv, addr) = big_segment_server();
    let mut c = session(addr, KEYS);
    // 1 MiB: 256 KiB immediate + R2Ts; 256 KiB: all immediate (executed
    // from the placed buffer); 300 KiB: immediate + a short R2T.
    let writes: &[(u32, usize)] = &[
        (0, 1 << 20),
        (2048, 1 << 20),
        (4096, 256 << 10),
        (5000, 1 << 20),
        (8000, 300 << 10),
        (9000, 256 << 10),
    ];
    for (i, &(lba, len)) in writes.iter().enumerate() {
        write_ok(&mut c, lba, &pattern(len, i as u8 + 1));
    }
    for (i, &(lba, len)) in writes.iter().enumerate() {
        assert!(
            read_back(&mut c, lba, len) == pattern(len, i as u8 + 1),
            "data at {lba}"
        );
    }
    // Once large writes stream in, the connection reads a command's header
    // with little of its data: the rest of each immediate segment goes
    // straight into the task buffer (without this path: 0).
    let (data_out, immediate) = srv.direct_receives();
    assert!(immediate >= 3, "direct immediate segments: {immediate}");
    assert!(data_out >= 3, "direct Data-Out segments: {data_out}");
    c.logout();
    srv.shutdown();
}

#[test]
fn a_refused_write_with_directly_received_data_changes_nothing() {
    let (srv, addr) = big_segment_server();
    let mut c = session(addr, KEYS);
    let end = (8u32 << 20) / 512;
    write_ok(&mut c, end - 2048, &pattern(1 << 20, 7));
    let before = srv.direct_receives().1;
    // Past the end of the LU: all data gathered (directly), then refused
    // with LBA OUT OF RANGE by the core's checks.
    let r = c.write_cmd(&write10(end - 100, 2048), &pattern(1 << 20, 8));
    assert_eq!(r.status, 2, "CHECK CONDITION");
    assert_eq!(
        c.last_sense.get(12..14),
        Some(&[0x21, 0x00][..]),
        "LBA out of range"
    );
    assert!(
        srv.direct_receives().1 > before,
        "the refused write took the direct path"
    );
    assert!(read_back(&mut c, end - 2048, 1 << 20) == pattern(1 << 20, 7));

    // Immediate data beyond FirstBurstLength (a protocol error): Reject,
    // nothing written, the connection goes on.
    let mut c2 = session_with_isid(addr, 1, &[("FirstBurstLength", "65536")]);
    write_ok(&mut c2, 0, &pattern(1 << 20, 9));
    let before = srv.direct_receives().1;
    let cmd = c2.scsi_cmd_header(&write10(0, 256), false, true, 128 << 10);
    c2.send_cmd(&cmd, &pattern(128 << 10, 10));
    let p = c2.recv().expect("reject");
    assert_eq!(p.bhs.opcode(), Opcode::REJECT);
    c2.exp_statsn += 1;
    assert!(
        srv.direct_receives().1 > before,
        "the refused command took the direct path"
    );
    assert!(read_back(&mut c2, 0, 1 << 20) == pattern(1 << 20, 9));
    c2.logout();
    c.logout();
    srv.shutdown();
}

#[test]
fn a_connection_lost_inside_immediate_data_writes_nothing() {
    let (srv, addr) = big_segment_server();
    let mut c = session(addr, KEYS);
    write_ok(&mut c, 0, &pattern(1 << 20, 3));
    let before = srv.direct_receives().1;
    // A 256 KiB write whose immediate data stops after 100 KiB: the PDU
    // never completes, the connection ends.
    let cmd = c.scsi_cmd_header(&write10(0, 512), false, true, 256 << 10);
    let pdu = c.encode_cmd(&cmd, &pattern(256 << 10, 4));
    c.send_raw(&pdu[..48 + (100 << 10)]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.direct_receives().1 == before {
        assert!(
            Instant::now() < deadline,
            "the target never started the direct receive"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    let mut c = session_with_isid(addr, 2, KEYS);
    assert!(read_back(&mut c, 0, 1 << 20) == pattern(1 << 20, 3));
    c.logout();
    srv.shutdown();
}
