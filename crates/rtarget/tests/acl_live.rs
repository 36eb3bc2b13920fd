//! Access of sessions already logged in when ACLs, credentials, LUN
//! mappings or the TPG change under them (issue 9, item 7 and the "removed
//! ACL keeps access" item): a session never gains access through an ACL
//! whose authentication it did not pass, and access that was taken away
//! ends with the API call, not after the logout grace period. Driven with
//! the iscsi crate's raw-PDU initiator (which can issue a command the very
//! moment the API call returned) and libiscsi's iscsi-inq where installed.

mod common;

use std::cell::Cell;
use std::io;
use std::time::{Duration, Instant};

use common::initiator::{self as client, Client};
use common::{report_luns, sense, tool, Served};
use iscsi_wire::response::ScsiResponse;
use iscsi_wire::{Bhs, Opcode};

const IQN: &str = "iqn.2026-11.org.example:acllive";
const INIT: &str = "iqn.2026-11.org.example:host1";
const SECRET: &str = "host1secret99";

thread_local! {
    /// An Async Message asking for logout arrived (seen by `try_cmd` or
    /// `logged_out`).
    static ASKED: Cell<bool> = const { Cell::new(false) };
}

/// What a command on a session that may be going away got.
#[derive(Debug, PartialEq)]
enum Got {
    /// SCSI status (sense key, ASC, ASCQ when CHECK CONDITION).
    Status(u8, Option<(u8, u8, u8)>),
    /// The target closed the connection.
    Closed,
}

/// Send one command (a write carries `data` as immediate data) and wait for
/// its SCSI Response, skipping Async Messages (a logout request may come
/// first). Unlike the client's own helpers this tolerates the connection
/// going away.
fn try_cmd(c: &mut Client, cdb: &[u8], data: &[u8], edtl: u32) -> Got {
    let cmd = c.scsi_cmd_header(cdb, data.is_empty() && edtl > 0, !data.is_empty(), edtl);
    let mut b = Bhs::default();
    cmd.write_to(&mut b);
    let mut out = Vec::new();
    iscsi_wire::pdu::encode(&mut out, &b, data, c.digests);
    if c.send_raw(&out).is_err() {
        return Got::Closed;
    }
    loop {
        match c.recv() {
            Ok(p) if p.bhs.opcode() == Opcode::SCSI_RESPONSE => {
                let r = ScsiResponse::parse(&p.bhs);
                c.exp_statsn = r.sn.statsn.wrapping_add(1);
                c.last_sense = p.data.get(2..).unwrap_or_default().to_vec();
                let s = (r.status == 2).then(|| sense(c));
                return Got::Status(r.status, s);
            }
            Ok(p) if p.bhs.opcode() == Opcode::DATA_IN => {
                // Status in the last Data-In (a READ that succeeded).
                let d = iscsi_wire::response::DataIn::parse(&p.bhs);
                if let Some(s) = d.status {
                    c.exp_statsn = d.sn.statsn.wrapping_add(1);
                    return Got::Status(s, None);
                }
            }
            Ok(p) if p.bhs.opcode() == Opcode::ASYNC_MESSAGE => ASKED.with(|a| a.set(true)),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => panic!("no answer"),
            Err(_) => return Got::Closed,
        }
    }
}

fn try_write(c: &mut Client) -> Got {
    try_cmd(c, &client::write10(0, 1), &client::pattern(512, 5), 512)
}

fn try_read(c: &mut Client) -> Got {
    try_cmd(c, &client::read10(0, 1), &[], 512)
}

/// The session got an Async Message asking for logout and was closed
/// after the grace period (3 s).
fn logged_out(c: &mut Client) {
    let t0 = Instant::now();
    loop {
        match c.recv() {
            Ok(p) if p.bhs.opcode() == Opcode::ASYNC_MESSAGE => {
                assert_eq!(p.bhs.0[36], 1, "AsyncEvent 1: logout requested");
                ASKED.with(|a| a.set(true));
            }
            Ok(_) => {}
            Err(e) => {
                assert_ne!(e.kind(), io::ErrorKind::WouldBlock, "never closed");
                break;
            }
        }
    }
    assert!(ASKED.with(Cell::get), "no logout request before the close");
    assert!(t0.elapsed() < Duration::from_secs(8));
}

/// Log `c` in to IQN as `c.initiator` with CHAP (userid `u`, `secret`);
/// returns the login status of the security stage.
fn chap_login(c: &mut Client, u: &str, secret: &str) -> (u8, u8) {
    use iscsi_wire::chap::{decode_binary, encode_hex, response};
    let name = c.initiator.clone();
    let (r, pairs) = c.login_pdu(
        0,
        1,
        false,
        &[
            ("InitiatorName", name.as_str()),
            ("SessionType", "Normal"),
            ("TargetName", IQN),
            ("AuthMethod", "CHAP,None"),
        ],
    );
    if r.status_class != 0 {
        return (r.status_class, r.status_detail);
    }
    let (r, pairs2) = c.login_pdu(0, 1, false, &[("CHAP_A", "5")]);
    assert_eq!(r.status_class, 0, "{pairs:?}");
    let get = |k: &str| pairs2.iter().find(|p| p.key == k).unwrap().value.clone();
    let id: u8 = get("CHAP_I").parse().unwrap();
    let ch = decode_binary(&get("CHAP_C")).unwrap();
    let resp = encode_hex(&response(id, secret.as_bytes(), &ch));
    let (r, _) = c.login_pdu(0, 1, true, &[("CHAP_N", u), ("CHAP_R", resp.as_str())]);
    if r.status_class != 0 {
        return (r.status_class, r.status_detail);
    }
    let (r, _) = c.login_pdu(
        1,
        3,
        true,
        &[
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "65536"),
            ("ImmediateData", "Yes"),
            ("InitialR2T", "No"),
            ("FirstBurstLength", "65536"),
        ],
    );
    assert_eq!((r.status_class, r.status_detail), (0, 0));
    c.tsih = r.tsih;
    (0, 0)
}

/// A login without CHAP as `who`: the status class of the first answer.
fn plain_login_class(d: &Served, who: &str) -> u8 {
    let mut c = Client::connect(d.addr());
    c.isid[5] = 0x55;
    let (r, _) = c.login_pdu(
        0,
        1,
        true,
        &[
            ("InitiatorName", who),
            ("SessionType", "Normal"),
            ("TargetName", IQN),
            ("AuthMethod", "None"),
        ],
    );
    r.status_class
}

/// A daemon with ramdisks r0 and r1 and IQN's tpg1 exporting r0 as LUN 0
/// in demo mode (no authentication); `wp`: demo_mode_write_protect.
fn demo(wp: bool) -> (Served, String) {
    let d = Served::start();
    d.ok(&["/backstores/ramdisk", "create", "r0", "4M"]);
    d.ok(&["/backstores/ramdisk", "create", "r1", "4M"]);
    let tpg = d.demo_target(IQN, &["/backstores/ramdisk/r0"]);
    if wp {
        d.ok(&[&tpg, "set", "attribute", "demo_mode_write_protect=1"]);
    }
    (d, tpg)
}

/// A demo-mode session of INIT whose WRITEs are refused (write-protected
/// demo mode).
fn refused_demo_session(d: &Served) -> Client {
    let mut c = Client::connect(d.addr());
    c.initiator = INIT.into();
    c.login(Some(IQN), &[]);
    c.clear_ua();
    assert_eq!(
        try_write(&mut c),
        Got::Status(2, Some((7, 0x27, 0))),
        "demo mode is write-protected"
    );
    c
}

/// The old session must not write: refused, or gone.
fn cannot_write(c: &mut Client) {
    // The first answer may be a unit attention (the LUN table changed).
    for _ in 0..2 {
        match try_write(c) {
            Got::Status(2, Some((6, ..))) => continue,
            Got::Status(0, _) => {
                panic!("WRITE succeeded through an ACL it did not authenticate to")
            }
            _ => return,
        }
    }
}

/// Item 7: restoreconfig brings an ACL with CHAP for INIT (mapping LUN 0
/// writable) in one step while INIT has a demo-mode session without CHAP.
#[test]
fn acl_with_chap_created_for_a_demo_session_gives_it_no_access() {
    let (d, _) = demo(true);
    let mut c = refused_demo_session(&d);
    let mut cfg: serde_json::Value = serde_json::from_str(&d.saved()).unwrap();
    cfg["targets"][0]["tpgs"][0]["node_acls"] = serde_json::json!([{
        "node_wwn": INIT,
        "chap_userid": "host1",
        "chap_password": SECRET,
        "mapped_luns": [{"index": 0, "tpg_lun": 0, "write_protect": false}],
    }]);
    let file = d.path("with_acl.json");
    std::fs::write(&file, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    d.ok(&["restoreconfig", &file]);
    cannot_write(&mut c);
    logged_out(&mut c);
    // A fresh login without CHAP is refused; with the ACL's CHAP it works
    // and gets the ACL's writable LUN.
    assert_eq!(plain_login_class(&d, INIT), 2);
    let mut c = Client::connect(d.addr());
    c.initiator = INIT.into();
    assert_eq!(chap_login(&mut c, "host1", SECRET), (0, 0));
    c.clear_ua();
    assert_eq!(try_write(&mut c), Got::Status(0, None));
    if let Some(out) = tool(&[
        "iscsi-inq",
        "-i",
        INIT,
        &format!("iscsi://host1%{SECRET}@127.0.0.1:{}/{IQN}/0", d.port()),
    ]) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Item 7 the way targetcli does it: `acls create` (no credentials yet: a
/// fresh login without CHAP gets the same, so the session may follow the
/// new mapping), then `set auth`: from then on the session that never did
/// CHAP has no access.
#[test]
fn set_auth_on_the_acl_of_a_session_without_chap_ends_its_access() {
    let (d, tpg) = demo(true);
    let mut c = refused_demo_session(&d);
    d.ok(&[&format!("{tpg}/acls"), "create", INIT]);
    // Same view as a fresh login without CHAP: the ACL's writable LUN 0.
    let got = try_write(&mut c);
    assert_eq!(got, Got::Status(2, Some((6, 0x3f, 0x0e))));
    assert_eq!(try_write(&mut c), Got::Status(0, None));
    d.ok(&[
        &format!("{tpg}/acls/{INIT}"),
        "set",
        "auth",
        "userid=host1",
        &format!("password={SECRET}"),
    ]);
    cannot_write(&mut c);
    assert_ne!(try_read(&mut c), Got::Status(0, None));
    logged_out(&mut c);
    assert_eq!(plain_login_class(&d, INIT), 2);
}

/// A session that did CHAP with the ACL's credentials: unrelated ACL
/// changes (a new mapping) reach it, new credentials end it.
#[test]
fn changed_acl_credentials_end_a_chap_session() {
    let (d, tpg) = demo(false);
    d.ok(&[&tpg, "set", "attribute", "generate_node_acls=0"]);
    d.ok(&[&format!("{tpg}/acls"), "create", INIT]);
    d.ok(&[
        &format!("{tpg}/acls/{INIT}"),
        "set",
        "auth",
        "userid=host1",
        &format!("password={SECRET}"),
    ]);
    let mut c = Client::connect(d.addr());
    c.initiator = INIT.into();
    assert_eq!(chap_login(&mut c, "host1", SECRET), (0, 0));
    c.clear_ua();
    assert_eq!(try_write(&mut c), Got::Status(0, None));
    // Same credentials, one more LUN (mapped to the ACL too): the session
    // sees it.
    d.ok(&[&format!("{tpg}/luns"), "create", "/backstores/ramdisk/r1"]);
    assert_eq!(try_write(&mut c), Got::Status(2, Some((6, 0x3f, 0x0e))));
    assert_eq!(report_luns(&mut c), vec![0, 1]);
    // Setting the same password again changes nothing.
    d.ok(&[
        &format!("{tpg}/acls/{INIT}"),
        "set",
        "auth",
        &format!("password={SECRET}"),
    ]);
    assert_eq!(try_write(&mut c), Got::Status(0, None));
    // A new password: what the session proved no longer opens this ACL.
    d.ok(&[
        &format!("{tpg}/acls/{INIT}"),
        "set",
        "auth",
        "password=anothersecret1",
    ]);
    cannot_write(&mut c);
    logged_out(&mut c);
    let mut c = Client::connect(d.addr());
    c.initiator = INIT.into();
    assert_eq!(chap_login(&mut c, "host1", SECRET), (2, 1));
    let mut c = Client::connect(d.addr());
    c.initiator = INIT.into();
    assert_eq!(chap_login(&mut c, "host1", "anothersecret1"), (0, 0));
}

/// Likely item: a removed ACL kept its access for the logout grace time.
#[test]
fn removed_acl_serves_no_command_after_the_api_call() {
    let (d, tpg) = demo(false);
    d.ok(&[&tpg, "set", "attribute", "generate_node_acls=0"]);
    d.ok(&[&format!("{tpg}/acls"), "create", INIT]);
    let mut c = Client::connect(d.addr());
    c.initiator = INIT.into();
    c.login(Some(IQN), &[]);
    c.clear_ua();
    assert_eq!(try_write(&mut c), Got::Status(0, None));
    d.ok(&[&format!("{tpg}/acls"), "delete", INIT]);
    let got = try_read(&mut c);
    assert_eq!(
        got,
        Got::Status(2, Some((5, 0x25, 0))),
        "LUN gone with the ACL"
    );
    cannot_write(&mut c);
    logged_out(&mut c);
}

/// A removed ACL with demo mode to fall back on: the session gets what a
/// fresh login would, the TPG's write-protected LUNs.
#[test]
fn removed_acl_falls_back_to_demo_mode_at_once() {
    let (d, tpg) = demo(true);
    d.ok(&[&format!("{tpg}/acls"), "create", INIT]);
    let mut c = Client::connect(d.addr());
    c.initiator = INIT.into();
    c.login(Some(IQN), &[]);
    c.clear_ua();
    assert_eq!(try_write(&mut c), Got::Status(0, None));
    d.ok(&[&format!("{tpg}/acls"), "delete", INIT]);
    cannot_write(&mut c);
    assert_eq!(try_write(&mut c), Got::Status(2, Some((7, 0x27, 0))));
}

/// A demo-mode session of INIT (writable LUN 0, unit attentions cleared).
fn demo_session(d: &Served) -> Client {
    let mut c = Client::connect(d.addr());
    c.initiator = INIT.into();
    c.login(Some(IQN), &[]);
    c.clear_ua();
    c
}

/// A deleted LUN is not served to the next command of a running session.
#[test]
fn deleted_lun_is_gone_for_the_next_command() {
    let (d, tpg) = demo(false);
    d.ok(&[&format!("{tpg}/luns"), "create", "/backstores/ramdisk/r1"]);
    let mut c = demo_session(&d);
    c.lun = 1;
    c.clear_ua();
    assert_eq!(try_write(&mut c), Got::Status(0, None));
    d.ok(&[&format!("{tpg}/luns"), "delete", "lun1"]);
    assert_eq!(try_write(&mut c), Got::Status(2, Some((5, 0x25, 0))));
}

/// Write protection (of demo mode, of an ACL mapping) applies to the next
/// WRITE of a running session.
#[test]
fn write_protect_applies_to_the_next_write() {
    let (d, tpg) = demo(false);
    let mut c = demo_session(&d);
    assert_eq!(try_write(&mut c), Got::Status(0, None));
    d.ok(&[&tpg, "set", "attribute", "demo_mode_write_protect=1"]);
    cannot_write(&mut c);
    assert_eq!(try_write(&mut c), Got::Status(2, Some((7, 0x27, 0))));
    // An ACL mapping made write-protected (restoreconfig flips it).
    d.ok(&[&format!("{tpg}/acls"), "create", INIT]);
    c.clear_ua();
    assert_eq!(try_write(&mut c), Got::Status(0, None));
    let mut cfg: serde_json::Value = serde_json::from_str(&d.saved()).unwrap();
    cfg["targets"][0]["tpgs"][0]["node_acls"][0]["mapped_luns"][0]["write_protect"] =
        serde_json::Value::Bool(true);
    let file = d.path("wp.json");
    std::fs::write(&file, serde_json::to_string_pretty(&cfg).unwrap()).unwrap();
    d.ok(&["restoreconfig", &file]);
    cannot_write(&mut c);
    assert_eq!(try_write(&mut c), Got::Status(2, Some((7, 0x27, 0))));
}

/// A disabled TPG serves nothing while its sessions are asked to log out.
#[test]
fn disabled_tpg_serves_no_command_during_the_logout_grace() {
    let (d, tpg) = demo(false);
    let mut c = demo_session(&d);
    assert_eq!(try_read(&mut c), Got::Status(0, None));
    d.ok(&[&tpg, "disable"]);
    assert_eq!(try_read(&mut c), Got::Status(2, Some((5, 0x25, 0))));
    logged_out(&mut c);
}
