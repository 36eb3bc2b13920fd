//! Live changes through the daemon's API reaching the iSCSI fabric: a LUN
//! created while an initiator is logged in (unit attention, REPORT LUNS),
//! `sessions detail`, deleted portals, node ACLs with mapped LUNs,
//! write protection and per-ACL CHAP, discovery authentication, and a
//! disabled TPG logging its sessions out. Checked with a raw-PDU initiator
//! (the iscsi crate's test client) and libiscsi's tools where installed.

mod common;

use std::time::Duration;

use common::initiator::{self as client, Client};
use common::{report_luns, sense, tool, Served};

const IQN: &str = "iqn.2026-11.org.example:live";
const INIT: &str = "iqn.2026-11.org.example:host1";

/// A daemon with two ramdisks and a target whose tpg1 exports r0 in demo mode.
fn with_target() -> Served {
    let d = Served::start();
    d.ok(&["/backstores/ramdisk", "create", "r0", "4M"]);
    d.ok(&["/backstores/ramdisk", "create", "r1", "4M"]);
    d.demo_target(IQN, &["/backstores/ramdisk/r0"]);
    d
}

#[test]
fn lun_created_through_the_api_reaches_a_logged_in_session() {
    let d = with_target();
    let mut c = Client::connect(d.addr());
    c.login(Some(IQN), &[]);
    c.clear_ua();
    assert_eq!(report_luns(&mut c), vec![0]);
    d.ok(&[
        &format!("/iscsi/{IQN}/tpg1/luns"),
        "create",
        "/backstores/ramdisk/r1",
    ]);
    let (st, _, _) = c.read_cmd(&[0; 6], 0);
    assert_eq!(st, 2);
    assert_eq!(sense(&c), (6, 0x3f, 0x0e), "REPORTED LUNS DATA HAS CHANGED");
    assert_eq!(report_luns(&mut c), vec![0, 1]);
    c.lun = 1;
    c.clear_ua();
    let r = c.write_cmd(&client::write10(0, 1), &client::pattern(512, 3));
    assert_eq!(r.status, 0);

    let out = d.ok(&["sessions", "detail"]);
    assert!(out.contains(client::INITIATOR), "{out}");
    assert!(
        out.contains("mapped-lun: 1 backstore: r1 mode: rw"),
        "{out}"
    );
    assert!(out.contains("write: 512 B"), "{out}");
    assert!(out.contains("MaxBurstLength="), "{out}");
    assert!(out.contains("(NOT AUTHENTICATED)"), "{out}");

    // A deleted LUN disappears from the session's REPORT LUNS.
    d.ok(&[&format!("/iscsi/{IQN}/tpg1/luns"), "delete", "lun1"]);
    c.lun = 0;
    let (st, _, _) = c.read_cmd(&[0; 6], 0);
    assert_eq!((st, sense(&c)), (2, (6, 0x3f, 0x0e)));
    assert_eq!(report_luns(&mut c), vec![0]);
}

#[test]
fn deleted_portal_stops_listening_and_disabled_tpg_logs_out() {
    let d = with_target();
    let mut c = Client::connect(d.addr());
    c.login(Some(IQN), &[]);
    let port = d.port().to_string();
    d.ok(&[
        &format!("/iscsi/{IQN}/tpg1/portals"),
        "delete",
        "127.0.0.1",
        &port,
    ]);
    assert!(std::net::TcpStream::connect_timeout(&d.addr(), Duration::from_secs(2)).is_err());
    // The established session continues.
    c.clear_ua();
    // A new portal on the same port listens again.
    d.ok(&[
        &format!("/iscsi/{IQN}/tpg1/portals"),
        "create",
        "127.0.0.1",
        &port,
    ]);
    let mut c2 = Client::connect(d.addr());
    c2.isid[5] = 0x77;
    c2.login(Some(IQN), &[]);
    // Disabling the TPG asks both sessions to log out, then closes them.
    d.ok(&[&format!("/iscsi/{IQN}/tpg1"), "disable"]);
    for cl in [&mut c, &mut c2] {
        let p = cl.recv().expect("async message");
        assert_eq!(p.bhs.opcode(), iscsi_wire::Opcode::ASYNC_MESSAGE);
        assert_eq!(p.bhs.0[36], 1, "AsyncEvent 1: logout requested");
        assert!(cl.closed());
    }
}

#[test]
fn acls_mapped_luns_write_protect_and_acl_chap() {
    let d = with_target();
    let tpg = format!("/iscsi/{IQN}/tpg1");
    d.ok(&[&format!("{tpg}/luns"), "create", "/backstores/ramdisk/r1"]);
    d.ok(&[&tpg, "set", "attribute", "generate_node_acls=0"]);
    d.ok(&[
        &format!("{tpg}/acls"),
        "create",
        INIT,
        "add_mapped_luns=false",
    ]);
    d.ok(&[
        &format!("{tpg}/acls/{INIT}"),
        "create",
        "3",
        "1",
        "write_protect=1",
    ]);
    // Not listed: refused with "initiator not authorized".
    let mut c = Client::connect(d.addr());
    let (r, _) = c.login_pdu(
        0,
        1,
        true,
        &[
            ("InitiatorName", client::INITIATOR),
            ("TargetName", IQN),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!((r.status_class, r.status_detail), (2, 2));
    // Listed: sees only its mapped LUN 3, which refuses writes.
    let mut c = Client::connect(d.addr());
    c.initiator = INIT.into();
    c.login(Some(IQN), &[]);
    c.lun = 3;
    c.clear_ua();
    assert_eq!(report_luns(&mut c), vec![3]);
    let r = c.write_cmd(&client::write10(0, 1), &client::pattern(512, 9));
    assert_eq!(r.status, 2);
    assert_eq!(sense(&c), (7, 0x27, 0x00), "DATA PROTECT / WRITE PROTECTED");
    let out = d.ok(&["sessions", "detail"]);
    assert!(
        out.contains("acl: explicit") && out.contains("mode: r "),
        "{out}"
    );
    c.logout();

    if let Some(out) = tool(&[
        "iscsi-ls",
        "-s",
        "-i",
        INIT,
        &format!("iscsi://127.0.0.1:{}", d.port()),
    ]) {
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && s.contains("Lun:3") && !s.contains("Lun:0"),
            "{s}"
        );
        let out = tool(&[
            "iscsi-inq",
            &format!("iscsi://127.0.0.1:{}/{IQN}/0", d.port()),
        ])
        .unwrap();
        assert!(
            !out.status.success(),
            "default initiator name must be refused"
        );
    }

    // One TPG mixing an ACL with CHAP and one without.
    const INIT2: &str = "iqn.2026-11.org.example:host2";
    d.ok(&[&format!("{tpg}/acls"), "create", INIT2]);
    let out = d.ok(&[
        &format!("{tpg}/acls/{INIT2}"),
        "set",
        "auth",
        "userid=h2",
        "password=host2secret99",
    ]);
    assert!(!out.contains("host2secret99"), "{out}");
    let Some(_) = tool(&["iscsi-inq", "--help"]) else {
        return;
    };
    let inq = |who: &str, creds: &str| {
        tool(&[
            "iscsi-inq",
            "-i",
            who,
            &format!("iscsi://{creds}127.0.0.1:{}/{IQN}/0", d.port()),
        ])
        .unwrap()
    };
    let good = inq(INIT2, "h2%host2secret99@");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let bad = inq(INIT2, "h2%wrongsecret99@");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Authentication failure"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(!inq(INIT2, "").status.success(), "CHAP ACL without CHAP");
    // Mutual CHAP on the ACL: the target proves itself too.
    d.ok(&[
        &format!("{tpg}/acls/{INIT2}"),
        "set",
        "auth",
        "mutual_userid=tgt2",
        "mutual_password=target2secret",
    ]);
    let mutual = |tp: &str| {
        let url = format!(
            "iscsi://h2%host2secret99@127.0.0.1:{}/{IQN}/0?target_user=tgt2&target_password={tp}",
            d.port()
        );
        tool(&["iscsi-inq", "-i", INIT2, &url]).unwrap()
    };
    let ok = mutual("target2secret");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!mutual("wrongsecret12").status.success());
    // The ACL without credentials still logs in without CHAP (LUN 0 is not
    // mapped for it, so use its LUN 3).
    let out = tool(&[
        "iscsi-inq",
        "-i",
        INIT,
        &format!("iscsi://127.0.0.1:{}/{IQN}/3", d.port()),
    ])
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn discovery_auth_is_set_saved_and_enforced() {
    let d = with_target();
    d.ok(&[
        "/iscsi",
        "set",
        "discovery_auth",
        "enable=1",
        "userid=disc",
        "password=discsecret123",
    ]);
    let saved = d.saved();
    assert!(saved.contains("\"discovery_enable_auth\": true"), "{saved}");
    assert!(saved.contains("\"discovery_userid\": \"disc\""), "{saved}");
    let got = d.ok(&["/iscsi", "get", "discovery_auth", "enable", "userid"]);
    assert!(
        got.contains("enable=true") && got.contains("userid=disc"),
        "{got}"
    );
    // A discovery session without CHAP is refused.
    let mut c = Client::connect(d.addr());
    let (r, _) = c.login_pdu(
        0,
        1,
        true,
        &[
            ("InitiatorName", client::INITIATOR),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!((r.status_class, r.status_detail), (2, 1));
    if let Some(out) = tool(&[
        "iscsi-ls",
        &format!("iscsi://disc%discsecret123@127.0.0.1:{}", d.port()),
    ]) {
        let s = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && s.contains(IQN),
            "{s}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = tool(&["iscsi-ls", &format!("iscsi://127.0.0.1:{}", d.port())]).unwrap();
        assert!(!out.status.success());
    }
    d.ok(&["/iscsi", "set", "discovery_auth", "enable=0"]);
    let mut c = Client::connect(d.addr());
    c.login(None, &[]);
}
