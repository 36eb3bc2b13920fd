//! Login, discovery, NOP, Text and Logout over real TCP.

mod common;

use common::*;
use iscsi_wire::response::LogoutResponse;
use iscsi_wire::text::parse_list as parse_pairs;
use iscsi_wire::Opcode;

#[test]
fn normal_login_negotiates_fast_defaults() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    let pairs = c.login(Some(IQN), &[("MaxBurstLength", "16776192"), ("FirstBurstLength", "16776192")]);
    let get = |k: &str| pairs.iter().find(|p| p.key == k).map(|p| p.value.as_str());
    assert_eq!(get("ImmediateData"), Some("Yes"));
    assert_eq!(get("InitialR2T"), Some("No"));
    assert_eq!(get("MaxBurstLength"), Some("1048576"));
    assert_eq!(get("FirstBurstLength"), Some("262144"));
    assert_eq!(get("MaxOutstandingR2T"), Some("4"));
    assert_eq!(get("MaxRecvDataSegmentLength"), Some("262144"));
    let p = c.logout();
    assert_eq!(LogoutResponse::parse(&p.bhs).response, 0);
    assert!(c.closed());
    srv.shutdown();
}

#[test]
fn first_login_response_has_tpgt_and_window() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    let (r, pairs) = c.login_pdu(
        0,
        1,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("TargetName", IQN),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert!(pairs.iter().any(|p| p.key == "TargetPortalGroupTag" && p.value == "1"));
    assert!(pairs.iter().any(|p| p.key == "AuthMethod" && p.value == "None"));
    assert_eq!(r.sn.max_cmdsn.wrapping_sub(r.sn.exp_cmdsn) + 1, 128);
    srv.shutdown();
}

#[test]
fn tpg_parameters_override_offers() {
    let (srv, addr) = server(&[("ImmediateData", "No"), ("MaxRecvDataSegmentLength", "8192")]);
    let mut c = Client::connect(addr);
    let pairs = c.login(Some(IQN), &[]);
    let get = |k: &str| pairs.iter().find(|p| p.key == k).map(|p| p.value.as_str());
    assert_eq!(get("ImmediateData"), Some("No"));
    assert_eq!(get("MaxRecvDataSegmentLength"), Some("8192"));
    srv.shutdown();
}

fn login_status(addr: std::net::SocketAddr, pairs: &[(&str, &str)], version_min: u8) -> (u8, u8) {
    let mut c = Client::connect(addr);
    if version_min == 0 {
        let (r, _) = c.login_pdu(0, 1, true, pairs);
        let st = (r.status_class, r.status_detail);
        if st != (0, 0) {
            assert!(c.closed(), "connection closes after a failed login");
        }
        return st;
    }
    let req = iscsi_wire::request::LoginRequest {
        transit: true,
        cont: false,
        csg: 0,
        nsg: 1,
        version_max: version_min,
        version_min,
        isid: c.isid,
        tsih: 0,
        itt: 1,
        cid: 0,
        cmdsn: 1,
        exp_statsn: 0,
    };
    let mut b = iscsi_wire::Bhs::default();
    req.write_to(&mut b);
    c.send(&b, b"InitiatorName=iqn.x\0TargetName=iqn.y\0");
    let p = c.recv().unwrap();
    (p.bhs.0[36], p.bhs.0[37])
}

#[test]
fn login_failures_have_the_right_status() {
    let (srv, addr) = server(&[]);
    let cases: Vec<(Vec<(&str, &str)>, u8, (u8, u8))> = vec![
        (vec![("InitiatorName", INITIATOR), ("TargetName", "iqn.nope")], 0, (2, 3)),
        (vec![("TargetName", IQN)], 0, (2, 7)),
        (vec![("InitiatorName", INITIATOR)], 0, (2, 7)),
        (
            vec![("InitiatorName", INITIATOR), ("TargetName", IQN), ("SessionType", "Bogus")],
            0,
            (2, 0),
        ),
        (vec![("InitiatorName", INITIATOR), ("TargetName", IQN)], 1, (2, 5)),
    ];
    for (pairs, v, want) in cases {
        assert_eq!(login_status(addr, &pairs, v), want, "{pairs:?}");
    }
    // The server still serves.
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    srv.shutdown();
}

#[test]
fn duplicate_key_fails_login() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    let (r, _) = c.login_pdu(0, 1, true, &[("InitiatorName", INITIATOR), ("TargetName", IQN)]);
    assert_eq!(r.status_class, 0);
    let (r, _) = c.login_pdu(1, 3, true, &[("MaxBurstLength", "8192"), ("MaxBurstLength", "8192")]);
    assert_eq!((r.status_class, r.status_detail), (2, 0));
    srv.shutdown();
}

#[test]
fn bad_stage_transition_fails() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    // NSG 2 is reserved.
    let (r, _) = c.login_pdu(0, 2, true, &[("InitiatorName", INITIATOR), ("TargetName", IQN)]);
    assert_eq!((r.status_class, r.status_detail), (2, 0));
    srv.shutdown();
}

#[test]
fn skipping_security_goes_straight_to_operational() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    let (r, pairs) = c.login_pdu(
        1,
        3,
        true,
        &[("InitiatorName", INITIATOR), ("TargetName", IQN), ("ImmediateData", "Yes")],
    );
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert!(r.tsih != 0);
    assert!(pairs.iter().any(|p| p.key == "TargetPortalGroupTag"));
    srv.shutdown();
}

#[test]
fn discovery_send_targets() {
    let (srv, addr) = server(&[]);
    srv.set_target(target("iqn.2026-11.org.rtarget:second", 1 << 20, &[]));
    let mut c = Client::connect(addr);
    let pairs = c.login(None, &[("InitialR2T", "No")]);
    assert!(pairs.iter().any(|p| p.key == "InitialR2T" && p.value == "Irrelevant"));
    let all = parse_pairs(&c.text(&[("SendTargets", "All")])).unwrap();
    let names: Vec<_> = all.iter().filter(|p| p.key == "TargetName").map(|p| p.value.as_str()).collect();
    assert_eq!(names, vec!["iqn.2026-11.org.rtarget:second", IQN]);
    // Wildcard portal: the connection's local address is advertised.
    let addr_s = format!("127.0.0.1:3260,1");
    assert!(all.iter().any(|p| p.key == "TargetAddress" && p.value == addr_s));
    let one = parse_pairs(&c.text(&[("SendTargets", IQN)])).unwrap();
    assert_eq!(one.iter().filter(|p| p.key == "TargetName").count(), 1);
    // SCSI commands are not allowed in a discovery session.
    let cmd = c.scsi_cmd_header(&[0; 6], false, false, 0);
    let mut b = iscsi_wire::Bhs::default();
    cmd.write_to(&mut b);
    c.send(&b, &[]);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::REJECT);
    c.logout();
    srv.shutdown();
}

#[test]
fn long_send_targets_answer_is_continued() {
    let (srv, addr) = server(&[]);
    for i in 0..300 {
        srv.set_target(target(&format!("iqn.2026-11.org.rtarget:many-targets-with-long-names-{i:04}"), 4096, &[]));
    }
    let mut c = Client::connect(addr);
    c.login(None, &[("MaxRecvDataSegmentLength", "4096")]);
    let all = parse_pairs(&c.text(&[("SendTargets", "All")])).unwrap();
    assert_eq!(all.iter().filter(|p| p.key == "TargetName").count(), 301);
    srv.shutdown();
}

#[test]
fn nop_echoes_data() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    let p = c.nop(b"ping-data");
    assert_eq!(p.data, b"ping-data");
    assert_eq!(p.bhs.u32_at(20), 0xffff_ffff);
    srv.shutdown();
}

#[test]
fn session_reinstatement_closes_old_connection() {
    let (srv, addr) = server(&[]);
    let mut a = Client::connect(addr);
    a.login(Some(IQN), &[]);
    let mut b = Client::connect(addr);
    b.login(Some(IQN), &[]); // same InitiatorName + ISID, TSIH 0
    assert!(a.closed(), "old session closed");
    b.clear_ua();
    let (st, data, _) = b.read_cmd(&read10(0, 1), 512);
    assert_eq!(st, 0);
    assert_eq!(data.len(), 512);
    srv.shutdown();
}

#[test]
fn adding_a_connection_is_refused() {
    let (srv, addr) = server(&[]);
    let mut a = Client::connect(addr);
    a.login(Some(IQN), &[]);
    let mut b = Client::connect(addr);
    b.tsih = a.tsih;
    let (r, _) = b.login_pdu(0, 1, true, &[("InitiatorName", INITIATOR), ("TargetName", IQN)]);
    assert_eq!((r.status_class, r.status_detail), (2, 6));
    let mut d = Client::connect(addr);
    d.tsih = a.tsih.wrapping_add(100);
    let (r, _) = d.login_pdu(0, 1, true, &[("InitiatorName", INITIATOR), ("TargetName", IQN)]);
    assert_eq!((r.status_class, r.status_detail), (2, 10));
    srv.shutdown();
}

#[test]
fn shutdown_requests_logout() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    let t = std::thread::spawn(move || srv.shutdown());
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::ASYNC_MESSAGE);
    assert_eq!(p.bhs.0[36], 1, "logout request event");
    c.logout();
    t.join().unwrap();
}
