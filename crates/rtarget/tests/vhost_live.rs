//! The vhost fabric through the daemon: `/vhost create`, `tpg1/luns
//! create` typed into the CLI serve a vhost-user socket that a frontend
//! (rust-vmm's, with the vhost crate's test driver as the guest) attaches
//! to; `ls` and `sessions` show the guest, whose target is deleted only
//! when forced; LUNs created later arrive as hotplug events;
//! the same LU over iSCSI and vhost shares its persistent reservations; the
//! target is saved as rtslib writes it and served again after a restart.

mod common;

#[path = "../../vhost/tests/common/mod.rs"]
mod vguest;

use common::initiator::Client;
use common::Served;
use vguest::{wait_until, Guest};
use vhost_scsi::virtio::*;

const IQN: &str = "iqn.2026-11.org.example:both";
const WWN: &str = "naa.5001405abcdef012";
const TUR: [u8; 6] = [0; 6];

fn pr_out(sa: u8, ty: u8, key: u64, sa_key: u64) -> ([u8; 10], [u8; 24]) {
    let cdb = [0x5f, sa, ty, 0, 0, 0, 0, 0, 24, 0];
    let mut p = [0u8; 24];
    p[..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    (cdb, p)
}

fn lun(l: u64) -> [u8; 8] {
    encode_lun(1, l)
}

/// The API's `stats` entry of `object`.
fn stats(d: &Served, object: &str) -> serde_json::Value {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.s.socket).unwrap();
    s.write_all(b"{\"op\":\"stats\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let all = v["storage_objects"].as_array().unwrap();
    let o = all.iter().find(|o| o["storage_object"] == object);
    o.unwrap_or_else(|| panic!("{line}")).clone()
}

#[test]
fn vhost_target_through_the_cli_shares_the_lu_with_iscsi() {
    let d = Served::start();
    let sock = d.path("vhost.sock");
    d.ok(&["/backstores/ramdisk", "create", "r0", "4M"]);
    d.ok(&["/backstores/ramdisk", "create", "r1", "1M"]);
    d.demo_target(IQN, &["/backstores/ramdisk/r0"]);
    let out = d.ok(&["/vhost", "create", WWN, &format!("socket={sock}")]);
    assert!(out.contains(&format!("Created target {WWN}")), "{out}");
    let tpg = format!("/vhost/{WWN}/tpg1");
    d.ok(&[&format!("{tpg}/luns"), "create", "/backstores/ramdisk/r0"]);
    let ls = d.ok(&["ls", "/vhost"]);
    assert!(ls.contains(&format!("socket {sock}, no guest")), "{ls}");

    let mut g = Guest::connect(std::path::Path::new(&sock), 4);
    let ls = d.ok(&["ls", "/vhost"]);
    assert!(ls.contains("guest attached (naa.5001405"), "{ls}");
    let r = g.scsi(0, lun(0), 1, &[0x12, 0, 0, 0, 36, 0], &[], 36, false);
    assert_eq!(
        (r.response, r.status, &r.data[8..15]),
        (0, 0, &b"RTARGET"[..])
    );
    let r = g.scsi(0, lun(0), 2, &TUR, &[], 0, false);
    assert_eq!(r.sense_triple(), Some((6, 0x29, 0)), "power-on UA");

    // REPORT TARGET PORT GROUPS, over either fabric: the vhost port (0x8001,
    // vhost's range) is in the default group next to the iSCSI port (1).
    let ports = |data: &[u8]| -> Vec<u16> {
        data[12..12 + 4 * usize::from(data[11])]
            .chunks(4)
            .map(|p| u16::from_be_bytes([p[2], p[3]]))
            .collect()
    };
    let rtpg = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
    let r = g.scsi(0, lun(0), 7, &rtpg, &[], 256, false);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(ports(&r.data), [1, 0x8001], "over vhost");
    // The core counted the guest's commands like any fabric's: INQUIRY,
    // TEST UNIT READY (its unit attention) and RTPG.
    let st = stats(&d, "/backstores/ramdisk/r0");
    assert_eq!(st["other"]["commands"], 3, "{st}");
    assert_eq!(st["check_conditions"]["unit_attention"], 1, "{st}");
    let mut c = Client::connect(d.addr());
    c.login(Some(IQN), &[]);
    c.clear_ua();
    let (st, data, _) = c.read_cmd(&rtpg, 256);
    assert_eq!(st, 0);
    assert_eq!(ports(&data), [1, 0x8001], "over iSCSI");

    // A registration made over iSCSI is seen by the guest.
    let (cdb, p) = pr_out(0, 0, 0, 0x1111);
    assert_eq!(c.write_cmd(&cdb, &p).status, 0);
    let read_keys = [0x5e, 0, 0, 0, 0, 0, 0, 0x01, 0, 0];
    let r = g.scsi(0, lun(0), 3, &read_keys, &[], 256, false);
    assert_eq!(r.status, 0, "{r:?}");
    assert_eq!(&r.data[4..8], &8u32.to_be_bytes(), "one key");
    assert_eq!(&r.data[8..16], &0x1111u64.to_be_bytes());
    // The guest registers and reserves (WRITE EXCLUSIVE): the iSCSI
    // initiator's WRITE gets RESERVATION CONFLICT.
    let (cdb, p) = pr_out(0, 0, 0, 0x2222);
    assert_eq!(g.scsi(0, lun(0), 4, &cdb, &p, 0, false).status, 0);
    let (cdb, p) = pr_out(1, 0x01, 0x2222, 0);
    assert_eq!(g.scsi(0, lun(0), 5, &cdb, &p, 0, false).status, 0);
    let w = c.write_cmd(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512]);
    assert_eq!(w.status, 0x18, "RESERVATION CONFLICT over iSCSI");
    let (cdb, p) = pr_out(2, 0x01, 0x2222, 0); // RELEASE
    assert_eq!(g.scsi(0, lun(0), 6, &cdb, &p, 0, false).status, 0);

    // A LUN created while the guest runs: RESCAN event.
    let evbuf = g.post_event_buffer();
    d.ok(&[&format!("{tpg}/luns"), "create", "/backstores/ramdisk/r1"]);
    let ev = g.wait_event(&evbuf);
    assert_eq!(
        (ev.event, ev.reason, ev.lun),
        (
            VIRTIO_SCSI_T_TRANSPORT_RESET,
            VIRTIO_SCSI_EVT_RESET_RESCAN,
            event_lun(1, 1)
        )
    );

    // Saved as rtslib writes it (plus rtarget's socket key).
    let saved: serde_json::Value = serde_json::from_str(&d.saved()).unwrap();
    let t = saved["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["fabric"] == "vhost")
        .unwrap();
    assert_eq!(t["wwn"], WWN);
    assert_eq!(t["socket"], sock.as_str());
    assert_eq!(t["tpgs"][0]["luns"].as_array().unwrap().len(), 2);

    // Restart: the target serves again from the saved file.
    drop(g);
    drop(c);
    let s = d.stop();
    let d = Served::on(s);
    let mut g = Guest::connect(std::path::Path::new(&sock), 3);
    let r = g.scsi(
        0,
        lun(1),
        1,
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
        8,
        false,
    );
    assert_eq!(r.sense_triple(), Some((6, 0x29, 0)));
    let r = g.scsi(
        0,
        lun(1),
        2,
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        &[],
        8,
        false,
    );
    assert_eq!((r.status, &r.data[..4]), (0, &2047u32.to_be_bytes()[..]));
    // `sessions` lists the guest; deleting its target needs force=true,
    // then stops it: the guest's connection closes.
    let sessions = d.ok(&["sessions"]);
    assert!(
        sessions.contains(&format!("(vhost guest) -> {WWN} tpg1 on {sock}")),
        "{sessions}"
    );
    let e = d.fails(&["/vhost", "delete", WWN]);
    assert!(e.contains("has a guest attached"), "{e}");
    assert!(std::path::Path::new(&sock).exists());
    d.ok(&["/vhost", "delete", WWN, "force=true"]);
    assert!(!std::path::Path::new(&sock).exists());
    wait_until("guest connection closed", || g.frontend_queue_num_fails());
}
