//! Live reconfiguration seen by logged-in initiators: LUN tables changed
//! under a session, node ACLs (access, mapped LUNs, write protection,
//! per-ACL CHAP), discovery authentication, closing portals, sessions of
//! disabled TPGs, and `sessions_detail`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use iscsi::{AclConfig, ChapCredentials, IscsiServer, TargetConfig};
use iscsi_wire::Opcode;
use target_core::{Device, DeviceOptions, Lun, LunTable};

fn device(name: &str) -> Arc<Device> {
    Device::new(
        DeviceOptions::new(name, "5b3c9a2e-0000-4000-8000-0000000000aa"),
        MemStore::new(1 << 20),
    )
}

fn table(luns: &[(u64, &Arc<Device>, bool)]) -> Arc<LunTable> {
    Arc::new(LunTable {
        luns: luns
            .iter()
            .map(|(id, d, wp)| Lun {
                id: *id,
                device: Arc::clone(d),
                write_protect: *wp,
            })
            .collect(),
    })
}

fn start(t: TargetConfig) -> (Arc<IscsiServer>, SocketAddr) {
    let s = IscsiServer::new();
    s.set_target(t);
    let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    (s, addr)
}

/// REPORT LUNS: the LUN numbers listed.
fn report_luns(c: &mut Client) -> Vec<u64> {
    let (st, data, _) = c.read_cmd(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0], 4096);
    assert_eq!(st, 0, "REPORT LUNS status, sense {:02x?}", c.last_sense);
    let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
    data[8..8 + len]
        .chunks(8)
        .map(|e| scsi::lun::decode(e.try_into().unwrap()))
        .collect()
}

/// (sense key, ASC, ASCQ) of the last CHECK CONDITION.
fn sense(c: &Client) -> (u8, u8, u8) {
    let s = &c.last_sense;
    assert!(s.len() >= 14, "no sense data: {s:02x?}");
    (s[2] & 0x0f, s[12], s[13])
}

fn login_status(addr: SocketAddr, initiator: &str, target: &str) -> (u8, u8) {
    let mut c = Client::connect(addr);
    let (r, _) = c.login_pdu(
        0,
        1,
        true,
        &[
            ("InitiatorName", initiator),
            ("TargetName", target),
            ("AuthMethod", "None"),
        ],
    );
    (r.status_class, r.status_detail)
}

#[test]
fn new_lun_reaches_a_live_session_with_a_unit_attention() {
    let mut t = target(IQN, 1 << 20, &[]);
    let lun0 = t.tpgs[0].luns.luns[0].device.clone();
    let (s, addr) = start(t.clone());
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    c.clear_ua();
    assert_eq!(report_luns(&mut c), vec![0]);

    let extra = device("extra");
    t.tpgs[0].luns = table(&[(0, &lun0, false), (1, &extra, false)]);
    s.set_target(t.clone());
    // The next command reports REPORTED LUNS DATA HAS CHANGED...
    let (st, _, _) = c.read_cmd(&[0; 6], 0);
    assert_eq!(st, 2);
    assert_eq!(sense(&c), (6, 0x3f, 0x0e));
    // ...and REPORT LUNS lists the new LUN, without a relogin.
    assert_eq!(report_luns(&mut c), vec![0, 1]);
    c.lun = 1;
    c.clear_ua();
    let (st, data, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!((st, data.len()), (0, 512));

    // Re-pushing an equal configuration queues nothing.
    s.set_target(t.clone());
    let (st, _, _) = c.read_cmd(&[0; 6], 0);
    assert_eq!(st, 0);

    // Per-LUN counters of the session.
    let d = s.sessions_detail();
    assert_eq!(d.len(), 1);
    let io1 = d[0].luns.iter().find(|l| l.lun == 1).unwrap();
    assert_eq!(io1.device, "extra");
    assert!(io1.commands >= 3 && io1.read_bytes >= 512, "{io1:?}");
    assert!(!d[0].acl && !d[0].authenticated);
    assert_eq!(d[0].local, addr);
    assert!(d[0]
        .parameters
        .iter()
        .any(|(k, v)| k == "ImmediateData" && v == "Yes"));
    s.shutdown();
}

fn acl_target() -> (TargetConfig, Arc<Device>) {
    let mut t = target(IQN, 1 << 20, &[]);
    let dev = t.tpgs[0].luns.luns[0].device.clone();
    let tpg = &mut t.tpgs[0];
    tpg.attributes.generate_node_acls = false;
    tpg.acls = vec![
        AclConfig {
            initiator: "iqn.2026-11.org.rtarget:allowed".into(),
            luns: table(&[(5, &dev, true)]),
            chap: None,
            attributes: Default::default(),
        },
        AclConfig {
            initiator: "iqn.2026-11.org.rtarget:chap".into(),
            luns: table(&[(0, &dev, false)]),
            chap: Some(ChapCredentials {
                userid: "carol".into(),
                password: "carolsecret12".into(),
                mutual_userid: None,
                mutual_password: None,
            }),
            attributes: Default::default(),
        },
    ];
    (t, dev)
}

#[test]
fn acls_decide_who_logs_in_and_what_it_sees() {
    let (t, _) = acl_target();
    let (s, addr) = start(t.clone());
    // Not in the ACLs, no demo mode: initiator not authorized.
    assert_eq!(login_status(addr, INITIATOR, IQN), (2, 2));
    // The listed initiator sees only its mapped LUN, write-protected.
    let mut c = Client::connect(addr);
    c.initiator = "iqn.2026-11.org.rtarget:allowed".into();
    c.login(Some(IQN), &[]);
    c.lun = 5;
    c.clear_ua();
    assert_eq!(report_luns(&mut c), vec![5]);
    let r = c.write_cmd(&write10(0, 1), &pattern(512, 1));
    assert_eq!(r.status, 2);
    assert_eq!(sense(&c), (7, 0x27, 0x00));
    let (st, _, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!(st, 0);
    let d = s.sessions_detail();
    assert!(d[0].acl);
    assert!(d[0].luns[0].write_protect);
    // The ACL with CHAP refuses a login without it, in the same TPG.
    assert_eq!(
        login_status(addr, "iqn.2026-11.org.rtarget:chap", IQN),
        (2, 1)
    );

    // Demo mode: the others get the TPG's LUNs.
    let mut t2 = t.clone();
    t2.tpgs[0].attributes.generate_node_acls = true;
    s.set_target(t2);
    let mut d = Client::connect(addr);
    d.isid[5] = 0x44;
    d.login(Some(IQN), &[]);
    d.clear_ua();
    assert_eq!(report_luns(&mut d), vec![0]);
    d.logout();

    // Removing the ACL (demo mode off again) logs the session out.
    let mut t3 = t.clone();
    t3.tpgs[0].acls.truncate(0);
    s.set_target(t3);
    let p = c.recv().expect("async message");
    assert_eq!(p.bhs.opcode(), Opcode::ASYNC_MESSAGE);
    assert_eq!(p.bhs.0[36], 1, "AsyncEvent: logout request");
    assert!(c.closed());
    s.shutdown();
}

#[test]
fn acl_chap_credentials_are_checked() {
    let (t, _) = acl_target();
    let (s, addr) = start(t);
    for (secret, want) in [("wrong-secret", (2, 1)), ("carolsecret12", (0, 0))] {
        let mut c = Client::connect(addr);
        let resp = c.chap_response("iqn.2026-11.org.rtarget:chap", secret);
        let (r, _) = c.login_pdu(0, 1, true, &[("CHAP_N", "carol"), ("CHAP_R", &resp)]);
        assert_eq!((r.status_class, r.status_detail), want, "{secret}");
    }
    s.shutdown();
}

#[test]
fn discovery_authentication() {
    let (s, addr) = server(&[]);
    s.set_discovery_auth(Some(ChapCredentials {
        userid: "disc".into(),
        password: "discoverysecret".into(),
        mutual_userid: None,
        mutual_password: None,
    }));
    let mut c = Client::connect(addr);
    let (r, _) = c.login_pdu(
        0,
        1,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!((r.status_class, r.status_detail), (2, 1));
    // Normal sessions are not affected; switching it off lets discovery in.
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    s.set_discovery_auth(None);
    let mut d = Client::connect(addr);
    d.login(None, &[]);
    s.shutdown();
}

#[test]
fn stop_listening_keeps_established_sessions() {
    let (s, addr) = server(&[]);
    let other = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    assert!(s.stop_listening(addr));
    assert!(!s.stop_listening(addr));
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err());
    // The session on the closed portal continues; the other portal serves.
    c.clear_ua();
    let mut d = Client::connect(other);
    d.isid[5] = 0x55;
    d.login(Some(IQN), &[]);
    s.shutdown();
}

#[test]
fn disabling_the_tpg_logs_its_sessions_out() {
    let mut t = target(IQN, 1 << 20, &[]);
    let (s, addr) = start(t.clone());
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    t.tpgs[0].enable = false;
    s.set_target(t.clone());
    let p = c.recv().expect("async message");
    assert_eq!(p.bhs.opcode(), Opcode::ASYNC_MESSAGE);
    assert_eq!(p.bhs.0[36], 1);
    assert!(c.closed());
    assert_eq!(login_status(addr, INITIATOR, IQN), (2, 3));
    // Deleting the TPG (the target stays) does the same.
    t.tpgs[0].enable = true;
    s.set_target(t.clone());
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    t.tpgs.clear();
    s.set_target(t);
    let p = c.recv().expect("async message");
    assert_eq!(p.bhs.opcode(), Opcode::ASYNC_MESSAGE);
    assert!(c.closed());
    s.shutdown();
}

#[test]
fn removing_the_target_logs_its_sessions_out() {
    let (s, addr) = server(&[]);
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    assert!(s.remove_target(IQN));
    let p = c.recv().expect("async message");
    assert_eq!(p.bhs.opcode(), Opcode::ASYNC_MESSAGE);
    assert_eq!(p.bhs.0[36], 1);
    // The initiator logs out as asked.
    let r = c.logout();
    assert_eq!(r.bhs.opcode(), Opcode::LOGOUT_RESPONSE);
    assert!(c.closed());
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while !s.sessions().is_empty() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(s.sessions().is_empty());
    s.shutdown();
}
