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
    let pairs = c.login(
        Some(IQN),
        &[
            ("MaxBurstLength", "16776192"),
            ("FirstBurstLength", "16776192"),
        ],
    );
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
    let (r, pairs) = c.login_named(0, 1, &[("AuthMethod", "None")]);
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert!(pairs
        .iter()
        .any(|p| p.key == "TargetPortalGroupTag" && p.value == "1"));
    assert!(pairs
        .iter()
        .any(|p| p.key == "AuthMethod" && p.value == "None"));
    assert_eq!(r.sn.max_cmdsn.wrapping_sub(r.sn.exp_cmdsn) + 1, 128);
    srv.shutdown();
}

#[test]
fn tpg_parameters_override_offers() {
    let (srv, addr) = server(&[
        ("ImmediateData", "No"),
        ("MaxRecvDataSegmentLength", "8192"),
    ]);
    let mut c = Client::connect(addr);
    let pairs = c.login(Some(IQN), &[]);
    let get = |k: &str| pairs.iter().find(|p| p.key == k).map(|p| p.value.as_str());
    assert_eq!(get("ImmediateData"), Some("No"));
    assert_eq!(get("MaxRecvDataSegmentLength"), Some("8192"));
    srv.shutdown();
}

/// An initiator offering a FirstBurstLength above its MaxBurstLength is
/// answered the lowered value and may send that much unsolicited data: a
/// 1 MiB WRITE with a whole unsolicited first burst, then R2Ts, completes.
/// (Answered 262144 while the target held it to 131072, the 256 KiB
/// unsolicited burst closed the connection as a protocol error.)
#[test]
fn first_burst_above_max_burst_is_answered_lowered_and_honoured() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    let pairs = c.login(
        Some(IQN),
        &[
            ("ImmediateData", "No"),
            ("InitialR2T", "No"),
            ("FirstBurstLength", "262144"),
            ("MaxBurstLength", "131072"),
        ],
    );
    let get = |k: &str| pairs.iter().find(|p| p.key == k).map(|p| p.value.as_str());
    assert_eq!(get("FirstBurstLength"), Some("131072"));
    c.clear_ua();
    let data = pattern(1 << 20, 0x3c);
    assert_eq!(c.write_cmd(&write10(0, 2048), &data).status, 0);
    let (status, got, _) = c.read_cmd(&read10(0, 2048), 1 << 20);
    assert_eq!(status, 0);
    assert!(got == data, "the write read back");
    c.logout();
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
    type Case<'a> = (Vec<(&'a str, &'a str)>, u8, (u8, u8));
    let cases: Vec<Case> = vec![
        (
            vec![("InitiatorName", INITIATOR), ("TargetName", "iqn.nope")],
            0,
            (2, 3),
        ),
        (vec![("TargetName", IQN)], 0, (2, 7)),
        (vec![("InitiatorName", INITIATOR)], 0, (2, 7)),
        (
            vec![
                ("InitiatorName", INITIATOR),
                ("TargetName", IQN),
                ("SessionType", "Bogus"),
            ],
            0,
            (2, 0),
        ),
        (
            vec![("InitiatorName", INITIATOR), ("TargetName", IQN)],
            1,
            (2, 5),
        ),
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
    let (r, _) = c.login_named(0, 1, &[]);
    assert_eq!(r.status_class, 0);
    let (r, _) = c.login_pdu(
        1,
        3,
        true,
        &[("MaxBurstLength", "8192"), ("MaxBurstLength", "8192")],
    );
    assert_eq!((r.status_class, r.status_detail), (2, 0));
    srv.shutdown();
}

#[test]
fn bad_stage_transition_fails() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    // NSG 2 is reserved.
    let (r, _) = c.login_named(0, 2, &[]);
    assert_eq!((r.status_class, r.status_detail), (2, 0));
    srv.shutdown();
}

#[test]
fn skipping_security_goes_straight_to_operational() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    let (r, pairs) = c.login_named(1, 3, &[("ImmediateData", "Yes")]);
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
    assert!(pairs
        .iter()
        .any(|p| p.key == "InitialR2T" && p.value == "Irrelevant"));
    let all = parse_pairs(&c.text(&[("SendTargets", "All")])).unwrap();
    let names: Vec<_> = all
        .iter()
        .filter(|p| p.key == "TargetName")
        .map(|p| p.value.as_str())
        .collect();
    assert_eq!(names, vec!["iqn.2026-11.org.rtarget:second", IQN]);
    // Wildcard portal: the connection's local address is advertised.
    assert!(all
        .iter()
        .any(|p| p.key == "TargetAddress" && p.value == "127.0.0.1:3260,1"));
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
        srv.set_target(target(
            &format!("iqn.2026-11.org.rtarget:many-targets-with-long-names-{i:04}"),
            4096,
            &[],
        ));
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
    // A new CID: MaxConnections is 1 (LIO's default). The same CID would
    // be a connection reinstatement (tests/mcs.rs).
    b.cid = 1;
    let (r, _) = b.login_named(0, 1, &[]);
    assert_eq!((r.status_class, r.status_detail), (2, 6));
    let mut d = Client::connect(addr);
    d.tsih = a.tsih.wrapping_add(100);
    let (r, _) = d.login_named(0, 1, &[]);
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

#[test]
fn login_text_continued_across_pdus() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    let text = format!("InitiatorName={INITIATOR}\0TargetName={IQN}\0AuthMethod=None\0");
    let (a, b) = text.as_bytes().split_at(20); // split inside a pair
    for (i, part) in [a, b].iter().enumerate() {
        let last = i == 1;
        let req = iscsi_wire::request::LoginRequest {
            transit: last,
            cont: !last,
            csg: 0,
            nsg: if last { 1 } else { 0 },
            version_max: 0,
            version_min: 0,
            isid: c.isid,
            tsih: 0,
            itt: 1,
            cid: 0,
            cmdsn: 1,
            exp_statsn: 0,
        };
        let mut bh = iscsi_wire::Bhs::default();
        req.write_to(&mut bh);
        c.send(&bh, part);
        let p = c.recv().unwrap();
        let r = iscsi_wire::response::LoginResponse::parse(&p.bhs);
        assert_eq!((r.status_class, r.status_detail), (0, 0));
        if last {
            assert!(r.transit && r.nsg == 1);
            let pairs = parse_pairs(&p.data).unwrap();
            assert!(pairs.iter().any(|p| p.key == "TargetPortalGroupTag"));
        } else {
            assert!(!r.transit && p.data.is_empty(), "asks for the rest");
        }
    }
    srv.shutdown();
}

#[test]
fn idle_connection_is_pinged_then_closed() {
    let s = iscsi::IscsiServer::new();
    let mut t = target(IQN, 1 << 20, &[]);
    t.tpgs[0].attributes.nopin_timeout = 1;
    t.tpgs[0].attributes.nopin_response_timeout = 1;
    s.set_target(t);
    let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    // First ping: answer it.
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::NOP_IN);
    let ttt = p.bhs.u32_at(20);
    assert_ne!(ttt, 0xffff_ffff);
    assert_eq!(p.bhs.itt(), 0xffff_ffff);
    let n = iscsi_wire::request::NopOut {
        immediate: true,
        lun: [0; 8],
        itt: 0xffff_ffff,
        ttt,
        cmdsn: c.cmdsn,
        exp_statsn: c.exp_statsn,
    };
    let mut b = iscsi_wire::Bhs::default();
    n.write_to(&mut b);
    c.send(&b, &[]);
    // Second ping: ignore it; the target gives up and closes.
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::NOP_IN);
    assert_ne!(p.bhs.u32_at(20), ttt);
    assert!(c.closed());
    s.shutdown();
}

fn chap_server(mutual: bool) -> (std::sync::Arc<iscsi::IscsiServer>, std::net::SocketAddr) {
    let s = iscsi::IscsiServer::new();
    let mut t = target(IQN, 1 << 20, &[]);
    t.tpgs[0].attributes.authentication = Some(true);
    t.tpgs[0].chap = Some(iscsi::ChapCredentials {
        userid: "alice".into(),
        password: "wonderland12".into(),
        mutual_userid: mutual.then(|| "tgt".into()),
        mutual_password: mutual.then(|| "lookingglass".into()),
    });
    s.set_target(t);
    let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    (s, addr)
}

/// Runs the CHAP security stage; returns the final login response status.
fn chap_login(c: &mut Client, secret: &str, mutual: Option<&str>) -> (u8, u8) {
    use iscsi_wire::chap::{decode_binary, encode_hex, response};
    let resp = c.chap_response(INITIATOR, secret);
    let my_ch = [0x5au8; 16];
    let my_ch_hex = encode_hex(&my_ch);
    let mut keys = vec![("CHAP_N", "alice"), ("CHAP_R", resp.as_str())];
    if mutual.is_some() {
        keys.push(("CHAP_I", "9"));
        keys.push(("CHAP_C", my_ch_hex.as_str()));
    }
    let (r, pairs) = c.login_pdu(0, 1, true, &keys);
    if let (Some(ms), 0) = (mutual, r.status_class) {
        let get = |k: &str| pairs.iter().find(|p| p.key == k).unwrap().value.clone();
        assert_eq!(get("CHAP_N"), "tgt");
        assert_eq!(
            decode_binary(&get("CHAP_R")).unwrap(),
            response(9, ms.as_bytes(), &my_ch)
        );
    }
    if r.status_class == 0 {
        assert!(r.transit && r.nsg == 1);
    }
    (r.status_class, r.status_detail)
}

#[test]
fn chap_authentication() {
    let (srv, addr) = chap_server(false);
    let mut c = Client::connect(addr);
    assert_eq!(chap_login(&mut c, "wonderland12", None), (0, 0));
    let (r, _) = c.login_pdu(1, 3, true, &[("MaxRecvDataSegmentLength", "65536")]);
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    assert!(r.transit && r.tsih != 0);
    // Wrong secret.
    let mut c = Client::connect(addr);
    c.isid[5] = 9;
    assert_eq!(chap_login(&mut c, "wrong-secret", None), (2, 1));
    // No authentication at all.
    let mut c = Client::connect(addr);
    c.isid[5] = 10;
    let (r, _) = c.login_named(0, 1, &[("AuthMethod", "None")]);
    assert_eq!((r.status_class, r.status_detail), (2, 1));
    // Skipping the security stage.
    let mut c = Client::connect(addr);
    c.isid[5] = 11;
    let (r, _) = c.login_named(1, 3, &[]);
    assert_eq!((r.status_class, r.status_detail), (2, 1));
    srv.shutdown();
}

#[test]
fn mutual_chap_authentication() {
    let (srv, addr) = chap_server(true);
    let mut c = Client::connect(addr);
    assert_eq!(
        chap_login(&mut c, "wonderland12", Some("lookingglass")),
        (0, 0)
    );
    srv.shutdown();
}

#[test]
fn sessions_are_listed_and_removed_with_their_target() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    let s = srv.sessions();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].initiator, INITIATOR);
    assert_eq!(s[0].target, IQN);
    assert_eq!(s[0].tsih, c.tsih);
    assert_eq!(s[0].isid, c.isid);
    assert!(srv.remove_target(IQN));
    assert!(!srv.remove_target(IQN));
    assert!(c.closed());
    // Gone from the table: a new login finds no target.
    let mut d = Client::connect(addr);
    let (r, _) = d.login_named(0, 1, &[]);
    assert_eq!((r.status_class, r.status_detail), (2, 3));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !srv.sessions().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(srv.sessions().is_empty());
    srv.shutdown();
}

#[test]
fn logout_reason_codes() {
    use iscsi_wire::request::LogoutRequest;
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    // (reason, cid, expected response); the last one closes.
    for (reason, cid, want) in [(2u8, 0u16, 2u8), (1, 7, 1), (1, 0, 0)] {
        let l = LogoutRequest {
            immediate: true,
            reason,
            itt: 0x900 + u32::from(reason),
            cid,
            cmdsn: c.cmdsn,
            exp_statsn: c.exp_statsn,
        };
        let mut b = iscsi_wire::Bhs::default();
        l.write_to(&mut b);
        c.send(&b, &[]);
        let p = c.recv().unwrap();
        assert_eq!(p.bhs.opcode(), Opcode::LOGOUT_RESPONSE);
        let r = LogoutResponse::parse(&p.bhs);
        assert_eq!(r.response, want, "reason {reason} cid {cid}");
        assert_eq!(r.sn.statsn, c.exp_statsn);
        c.exp_statsn += 1;
    }
    assert!(c.closed());
    srv.shutdown();
}

/// The server counts logins by outcome (the metrics endpoint exports
/// them): successes by session type, refusals by reason, and logins the
/// initiator abandoned.
#[test]
fn logins_are_counted_by_outcome() {
    let (srv, addr) = server(&[]);
    let count = |reason: &str| {
        let c = srv.login_counts();
        c.iter().find(|c| c.1 == reason).unwrap().2
    };
    // A success is counted once its last response is sent: wait for it.
    let settle = |reason: &str, want: u64| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while count(reason) != want {
            assert!(
                std::time::Instant::now() < end,
                "{reason}: {:?}",
                srv.login_counts()
            );
            std::thread::yield_now();
        }
    };
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    settle("normal", 1);
    let mut d = Client::connect(addr);
    d.isid[5] = 2;
    d.login(None, &[]);
    settle("discovery", 1);
    for (pairs, version, reason) in [
        (
            vec![("InitiatorName", INITIATOR), ("TargetName", "iqn.nope")],
            0,
            "target_not_found",
        ),
        (vec![("TargetName", IQN)], 0, "missing_parameter"),
        (
            vec![("InitiatorName", "not a name"), ("TargetName", IQN)],
            0,
            "bad_initiator_name",
        ),
        (
            vec![
                ("InitiatorName", INITIATOR),
                ("TargetName", IQN),
                ("SessionType", "Bogus"),
            ],
            0,
            "protocol_error",
        ),
        (vec![], 1, "unsupported_version"),
    ] {
        assert_ne!(login_status(addr, &pairs, version), (0, 0), "{reason}");
        assert_eq!(count(reason), 1, "{reason}: {:?}", srv.login_counts());
    }
    // Connected, then gone without a word.
    drop(std::net::TcpStream::connect(addr).unwrap());
    settle("abandoned", 1);
    let failed: u64 = srv
        .login_counts()
        .iter()
        .filter(|c| c.0 == "failure")
        .map(|c| c.2)
        .sum();
    assert_eq!(failed, 6, "{:?}", srv.login_counts());
    srv.shutdown();
}

/// A wrong CHAP response is counted as an authentication failure.
#[test]
fn failed_chap_is_counted_as_auth_failed() {
    let (srv, addr) = chap_server(false);
    let mut c = Client::connect(addr);
    assert_eq!(chap_login(&mut c, "wrong-secret", None), (2, 1));
    let c = srv.login_counts();
    assert_eq!(
        c.iter().find(|c| c.1 == "auth_failed").unwrap().2,
        1,
        "{c:?}"
    );
    srv.shutdown();
}

/// A login answer over 8192 bytes (the login-phase MaxRecvDataSegmentLength)
/// comes in several Login Responses with C set, each fetched with an empty
/// request; the assembled answer is complete and the login goes on.
#[test]
fn long_login_answer_is_continued() {
    let (srv, addr) = server(&[]);
    let mut c = Client::connect(addr);
    let unknown: Vec<String> = (0..200)
        .map(|n| format!("X-org.example.{n:03}{}", "k".repeat(44)))
        .collect();
    let mut text = format!("InitiatorName={INITIATOR}\0TargetName={IQN}\0AuthMethod=None\0");
    for k in &unknown {
        text.push_str(&format!("{k}=v\0"));
    }
    let mut all = Vec::new();
    let mut data = text.into_bytes();
    let mut pieces = 0;
    loop {
        let req = iscsi_wire::request::LoginRequest {
            transit: true,
            cont: false,
            csg: 0,
            nsg: 1,
            version_max: 0,
            version_min: 0,
            isid: c.isid,
            tsih: 0,
            itt: 1,
            cid: 0,
            cmdsn: c.cmdsn,
            exp_statsn: c.exp_statsn,
        };
        let mut bh = iscsi_wire::Bhs::default();
        req.write_to(&mut bh);
        c.send(&bh, &data);
        data.clear();
        let p = c.recv().unwrap();
        let r = iscsi_wire::response::LoginResponse::parse(&p.bhs);
        assert_eq!((r.status_class, r.status_detail), (0, 0));
        assert!(p.data.len() <= 8192);
        c.exp_statsn = r.sn.statsn.wrapping_add(1);
        all.extend_from_slice(&p.data);
        pieces += 1;
        if !r.cont {
            assert!(r.transit && r.nsg == 1);
            break;
        }
        assert!(!r.transit);
    }
    assert!(pieces >= 2, "{pieces}");
    let pairs = parse_pairs(&all).unwrap();
    for k in &unknown {
        let v = pairs.iter().find(|p| &p.key == k).map(|p| p.value.as_str());
        assert_eq!(v, Some("NotUnderstood"), "{k}");
    }
    let (r, _) = c.login_pdu(1, 3, true, &[("HeaderDigest", "None")]);
    assert!(r.transit && r.status_class == 0 && r.tsih != 0);
    srv.shutdown();
}
