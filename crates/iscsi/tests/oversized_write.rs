//! A WRITE above the maximum transfer length (8 MiB, the Block Limits VPD's)
//! on an LU that gathers its writes (no streaming, no landing) is refused
//! when it arrives: no R2T draws its data only for it to be dropped (three
//! 16 MiB WRITEs used to draw ~190 R2Ts first), and a unit attention still
//! comes first, as it would for the gathered write.

mod common;

use common::*;
use iscsi::IscsiServer;

const MIB: usize = 1 << 20;
const SEG: usize = 64 * 1024;

fn gathered_lu() -> (std::sync::Arc<IscsiServer>, std::net::SocketAddr) {
    let s = IscsiServer::new();
    s.set_target(target(IQN, 32 * MIB, &[]));
    let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    (s, addr)
}

fn send_oversized(c: &mut Client, len: usize) -> u32 {
    let cmd = c.scsi_cmd_header(&write10(0, (len / 512) as u16), false, true, len as u32);
    // Immediate data only (InitialR2T=Yes): the rest would be solicited.
    c.send_cmd(&cmd, &pattern(SEG, 7));
    cmd.itt
}

#[test]
fn an_oversized_write_is_refused_before_any_r2t() {
    let (srv, addr) = gathered_lu();
    let mut c = session(
        addr,
        &[("InitialR2T", "Yes"), ("FirstBurstLength", "65536")],
    );
    let itt = send_oversized(&mut c, 16 * MIB);
    // Without the check on arrival an R2T comes here, not the answer.
    let r = expect_response(&mut c);
    assert_eq!(r.itt, itt);
    assert_eq!(r.status, 2);
    assert_eq!(sense(&c), (5, 0x24, 0));
    // In step, and a WRITE of the maximum length still works.
    c.nop(&[]);
    let data = pattern(8 * MIB, 3);
    assert_eq!(
        c.write_cmd(&write10(0, (8 * MIB / 512) as u16), &data)
            .status,
        0
    );
    let (st, got, _) = c.read_cmd(&read10(0, 128), 65536);
    assert_eq!(st, 0);
    assert!(got == data[..65536]);
    c.logout();
    srv.shutdown();
}

#[test]
fn a_pending_unit_attention_still_comes_before_the_length() {
    let (srv, addr) = gathered_lu();
    let mut c = session(
        addr,
        &[("InitialR2T", "Yes"), ("FirstBurstLength", "65536")],
    );
    // Another initiator's LOGICAL UNIT RESET raises a UA for this nexus.
    let mut o = other_initiator_session(addr, 1, &[]);
    assert_eq!(o.tmf_code(5), 0);
    send_oversized(&mut c, 16 * MIB);
    let r = expect_response(&mut c);
    assert_eq!(r.status, 2);
    assert_eq!(sense(&c).0, 6, "the unit attention first: {:?}", sense(&c));
    send_oversized(&mut c, 16 * MIB);
    expect_response(&mut c);
    assert_eq!(sense(&c), (5, 0x24, 0));
    o.logout();
    c.logout();
    srv.shutdown();
}
