//! ALUA end to end: one LU served through two target ports (tpg1 and
//! tpg2 of one target, on two portals) whose LUNs sit in an
//! active/optimized and a standby group, set up with targetcli's verbs.
//! Checks that REPORT TARGET PORT GROUPS is the same through both paths,
//! that standby refuses media access but answers INQUIRY, that a
//! management state change reaches both paths as ASYMMETRIC ACCESS STATE
//! CHANGED, and that SET TARGET PORT GROUPS from one path moves the states
//! (and is what the saved configuration then holds).

mod common;

use std::net::SocketAddr;

use common::initiator::{self, Client};
use common::*;

const RTPG: [u8; 12] = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0];
const TUR: [u8; 6] = [0; 6];
const INQ: [u8; 6] = [0x12, 0, 0, 0, 96, 0];

/// One RTPG descriptor: (group id, state, preferred, status, relative
/// port ids).
type Group = (u16, u8, bool, u8, Vec<u16>);

/// RTPG's raw answer and its descriptors.
fn rtpg(c: &mut Client) -> (Vec<u8>, Vec<Group>) {
    let (st, data, _) = c.read_cmd(&RTPG, 1024);
    assert_eq!(st, 0, "RTPG: {:02x?}", c.last_sense);
    let len = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
    assert_eq!(len + 4, data.len());
    let mut groups = Vec::new();
    let mut i = 4;
    while i + 8 <= data.len() {
        let d = &data[i..];
        let n = usize::from(d[7]);
        let ports = (0..n)
            .map(|k| u16::from_be_bytes([d[8 + 4 * k + 2], d[8 + 4 * k + 3]]))
            .collect();
        groups.push((
            u16::from_be_bytes([d[2], d[3]]),
            d[0] & 0x0f,
            d[0] & 0x80 != 0,
            d[5],
            ports,
        ));
        i += 8 + 4 * n;
    }
    (data, groups)
}

fn login(port: u16, isid_tail: u8) -> Client {
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], port)));
    c.isid[5] = isid_tail;
    c.login(Some(IQN), &[]);
    // Consume the power-on UA (TEST UNIT READY on a standby path then
    // answers NOT READY, so the client's clear_ua would not do).
    for _ in 0..4 {
        let (st, _, _) = c.read_cmd(&TUR, 0);
        if st == 0 || sense(&c).0 != 6 {
            break;
        }
    }
    c
}

#[test]
fn two_paths_standby_implicit_and_explicit_transitions() {
    let s = setup();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let sock = &s.socket;
    let port2 = free_port();
    let t = format!("/iscsi/{IQN}");
    ok(sock, &["/backstores/ramdisk", "create", "r0", "4M"]);
    ok(sock, &["/iscsi", "create", IQN]);
    ok(sock, &[&t, "create", "2"]);
    ok(
        sock,
        &[
            &format!("{t}/tpg2/portals"),
            "create",
            "127.0.0.1",
            &port2.to_string(),
        ],
    );
    for tpg in ["tpg1", "tpg2"] {
        let p = format!("{t}/{tpg}");
        demo_mode(sock, &p);
        ok(
            sock,
            &[&format!("{p}/luns"), "create", "/backstores/ramdisk/r0"],
        );
    }
    let _ = cli(sock, &[&format!("{t}/tpg2"), "enable"]);
    let alua = "/backstores/ramdisk/r0/alua";
    ok(sock, &[alua, "create", "ao", "1"]);
    ok(sock, &[alua, "create", "sb", "2"]);
    ok(sock, &[&format!("{alua}/ao"), "set", "alua", "preferred=1"]);
    ok(
        sock,
        &[
            &format!("{alua}/sb"),
            "set",
            "alua",
            "alua_access_state=2",
            "nonop_delay_msecs=0",
        ],
    );
    ok(
        sock,
        &[
            &format!("{t}/tpg1/luns/lun0"),
            "set",
            "alua",
            "alua_tg_pt_gp_name=ao",
        ],
    );
    ok(
        sock,
        &[
            &format!("{t}/tpg2/luns/lun0"),
            "set",
            "alua",
            "alua_tg_pt_gp_name=sb",
        ],
    );
    // Refused with a clear error: no such group, default cannot go.
    let bad = cli(
        sock,
        &[
            &format!("{t}/tpg1/luns/lun0"),
            "set",
            "alua",
            "alua_tg_pt_gp_name=zz",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an ALUA group"));
    assert!(!cli(sock, &[alua, "delete", "default_tg_pt_gp"])
        .status
        .success());

    let ls = ok(sock, &["ls", "/backstores/ramdisk/r0"]);
    assert!(
        ls.contains("o- alua ") && ls.contains("[ALUA Groups: 3]"),
        "{ls}"
    );
    assert!(
        ls.contains("o- sb ") && ls.contains("[ALUA state: Standby]"),
        "{ls}"
    );
    let ls = ok(sock, &["ls", &format!("{t}/tpg2/luns")]);
    assert!(ls.contains("[ramdisk/r0 (sb)]"), "{ls}");
    let got = ok(
        sock,
        &[&format!("{alua}/ao"), "get", "alua", "preferred", "members"],
    );
    assert!(
        got.contains("preferred=1") && got.contains(&format!("iscsi/{IQN}/tpgt_1/lun_0")),
        "{got}"
    );

    let mut a = login(s.port, 0x01);
    let mut b = login(port2, 0x02);
    let (ra, ga) = rtpg(&mut a);
    let (rb, _) = rtpg(&mut b);
    assert_eq!(ra, rb, "RTPG is the same through both ports");
    assert_eq!(
        ga,
        vec![
            (0, 0, false, 0, vec![]),
            (1, 0, true, 0, vec![1]),
            (2, 2, false, 2, vec![2]),
        ]
    );
    // Standby: media access refused, INQUIRY answered; the other path reads.
    let (st, _, _) = b.read_cmd(&initiator::read10(0, 1), 512);
    assert_eq!((st, sense(&b)), (2, (2, 0x04, 0x0b)));
    let (st, inq, _) = b.read_cmd(&INQ, 96);
    assert_eq!(st, 0);
    assert_eq!(inq[5] & 0x30, 0x30, "TPGS: implicit and explicit");
    let (st, _, _) = a.read_cmd(&initiator::read10(0, 1), 512);
    assert_eq!(st, 0);

    // Management moves sb to active/non-optimized: both paths are told.
    ok(
        sock,
        &[&format!("{alua}/sb"), "set", "alua", "alua_access_state=1"],
    );
    for c in [&mut a, &mut b] {
        let (st, _, _) = c.read_cmd(&TUR, 0);
        assert_eq!((st, sense(c)), (2, (6, 0x2a, 0x06)));
    }
    let (st, _, _) = b.read_cmd(&initiator::read10(0, 1), 512);
    assert_eq!(st, 0, "non-optimized reads");

    // STPG through path b: ao -> standby, sb -> active/optimized.
    let data = [0, 0, 0, 0, 0x02, 0, 0, 1, 0x00, 0, 0, 2];
    let r = b.write_cmd(&[0xa4, 0x0a, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0], &data);
    assert_eq!(r.status, 0, "STPG: {:02x?}", b.last_sense);
    let (st, _, _) = b.read_cmd(&TUR, 0);
    assert_eq!(st, 0, "the sender gets no unit attention");
    let (st, _, _) = a.read_cmd(&TUR, 0);
    assert_eq!((st, sense(&a)), (2, (6, 0x2a, 0x06)));
    let (st, _, _) = a.read_cmd(&initiator::read10(0, 1), 512);
    assert_eq!((st, sense(&a)), (2, (2, 0x04, 0x0b)));
    let (ra, ga) = rtpg(&mut a);
    let (rb, _) = rtpg(&mut b);
    assert_eq!(ra, rb);
    assert_eq!((ga[1].1, ga[1].3, ga[2].1, ga[2].3), (2, 1, 0, 1), "{ga:?}");

    // The tree and the saved file follow what the initiator did.
    let ls = ok(sock, &["ls", alua]);
    assert!(
        ls.contains("o- ao ") && ls.contains("[ALUA state: Standby]"),
        "{ls}"
    );
    ok(sock, &["saveconfig"]);
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&s.config).unwrap()).unwrap();
    let groups = saved["storage_objects"][0]["alua_tpgs"].as_array().unwrap();
    let ao = groups.iter().find(|g| g["name"] == "ao").unwrap();
    assert_eq!(
        (&ao["alua_access_state"], &ao["alua_access_status"]),
        (&2.into(), &1.into())
    );
    // A restart serves the saved groups and states.
    drop((a, b));
    d.stop();
    let d = Daemon::start(&s.config, &s.socket, s.port);
    let mut a = login(s.port, 0x03);
    let (_, ga) = rtpg(&mut a);
    assert_eq!(
        (ga[1].1, ga[1].4.clone(), ga[2].1),
        (2, vec![1], 0),
        "{ga:?}"
    );
    let (st, _, _) = a.read_cmd(&initiator::read10(0, 1), 512);
    assert_eq!((st, sense(&a)), (2, (2, 0x04, 0x0b)));
    // Deleting a group moves its LUNs back to the default group.
    ok(sock, &[alua, "delete", "sb"]);
    let ls = ok(sock, &["ls", &format!("{t}/tpg2/luns")]);
    assert!(ls.contains("[ramdisk/r0 (default_tg_pt_gp)]"), "{ls}");
    drop(d);
}
