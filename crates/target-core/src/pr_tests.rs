//! Tests of PERSISTENT RESERVE IN/OUT through the public command path
//! (kept apart from `pr_out.rs` so each file stays readable).

use crate::testutil::*;
use crate::{Nexus, Status};

fn prout(sa: u8, rtype: u8, key: u64, sa_key: u64) -> (Vec<u8>, Vec<u8>) {
    let cdb = vec![0x5f, sa, rtype, 0, 0, 0, 0, 0, 24, 0];
    let mut p = key.to_be_bytes().to_vec();
    p.extend_from_slice(&sa_key.to_be_bytes());
    p.resize(24, 0);
    (cdb, p)
}

fn out(t: &Rig, n: &Nexus, sa: u8, rtype: u8, key: u64, sa_key: u64) -> crate::Outcome {
    let (c, p) = prout(sa, rtype, key, sa_key);
    t.run_as(n, &c, &p).0
}

fn prin(t: &Rig, n: &Nexus, sa: u8) -> Vec<u8> {
    let (o, d) = t.run_as(n, &[0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    assert_eq!(o.status, Status::Good, "{:?}", sense_of(&o));
    d
}

fn two() -> (Rig, Nexus) {
    let t = Rig::new();
    let b = t.nexus(2);
    t.run_as(&b, &[0, 0, 0, 0, 0, 0], &[]);
    (t, b)
}

#[test]
fn register_read_keys_and_unregister() {
    let (t, b) = two();
    let a = t.me.clone();
    assert_eq!(out(&t, &a, 0, 0, 0, 0xaa).status, Status::Good);
    assert_eq!(out(&t, &b, 6, 0, 0, 0xbb).status, Status::Good);
    let d = prin(&t, &a, 0);
    assert_eq!(&d[4..8], &16u32.to_be_bytes());
    assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
    assert_eq!(&d[16..24], &0xbbu64.to_be_bytes());
    let gen = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    assert_eq!(gen, 2);
    assert_eq!(
        out(&t, &a, 0, 0, 0x11, 0).status,
        Status::ReservationConflict,
        "wrong key"
    );
    assert_eq!(out(&t, &a, 0, 0, 0xaa, 0).status, Status::Good);
    let d = prin(&t, &a, 0);
    assert_eq!(&d[4..8], &8u32.to_be_bytes());
}

#[test]
fn write_exclusive_blocks_writes_of_others_only() {
    let (t, b) = two();
    let a = t.me.clone();
    out(&t, &a, 0, 0, 0, 0xaa);
    assert_eq!(out(&t, &a, 1, 1, 0xaa, 0).status, Status::Good);
    let d = prin(&t, &b, 1);
    assert_eq!(&d[4..8], &16u32.to_be_bytes());
    assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
    assert_eq!(d[21], 1);
    let (o, _) = t.run_as(&b, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]);
    assert_eq!(o.status, Status::Good);
    let (o, _) = t.run_as(&b, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512]);
    assert_eq!(o.status, Status::ReservationConflict);
    let (o, _) = t.run(&[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512]);
    assert_eq!(o.status, Status::Good);
    assert_eq!(
        out(&t, &a, 2, 3, 0xaa, 0).status,
        Status::CheckCondition,
        "wrong type"
    );
    assert_eq!(out(&t, &a, 2, 1, 0xaa, 0).status, Status::Good);
    let (o, _) = t.run_as(&b, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[0u8; 512]);
    assert_eq!(o.status, Status::Good);
}

#[test]
fn exclusive_access_registrants_only() {
    let (t, b) = two();
    let a = t.me.clone();
    let c = t.nexus(3);
    t.run_as(&c, &[0, 0, 0, 0, 0, 0], &[]);
    out(&t, &a, 0, 0, 0, 0xaa);
    out(&t, &b, 0, 0, 0, 0xbb);
    assert_eq!(out(&t, &a, 1, 6, 0xaa, 0).status, Status::Good);
    let (o, _) = t.run_as(&b, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]);
    assert_eq!(o.status, Status::Good, "registrant");
    let (o, _) = t.run_as(&c, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], &[]);
    assert_eq!(o.status, Status::ReservationConflict, "not registered");
    let (o, _) = t.run_as(&c, &[0x00, 0, 0, 0, 0, 0], &[]);
    assert_eq!(o.status, Status::Good, "TUR always allowed");
    assert_eq!(
        out(&t, &b, 1, 6, 0xbb, 0).status,
        Status::ReservationConflict
    );
}

#[test]
fn all_registrants_reports_key_zero() {
    let (t, b) = two();
    let a = t.me.clone();
    out(&t, &a, 0, 0, 0, 0xaa);
    out(&t, &b, 0, 0, 0, 0xbb);
    assert_eq!(out(&t, &a, 1, 7, 0xaa, 0).status, Status::Good);
    let d = prin(&t, &b, 1);
    assert_eq!(&d[8..16], &0u64.to_be_bytes());
    assert_eq!(d[21], 7);
    // b is a registrant, hence a holder: it may release.
    assert_eq!(out(&t, &b, 2, 7, 0xbb, 0).status, Status::Good);
    let (o, _) = t.run(&[0x00, 0, 0, 0, 0, 0], &[]);
    assert_eq!(sense_of(&o), Some((6, 0x2a, 4)), "reservations released");
    let d = prin(&t, &a, 1);
    assert_eq!(&d[4..8], &0u32.to_be_bytes());
}

#[test]
fn preempt_and_clear() {
    let (t, b) = two();
    let a = t.me.clone();
    out(&t, &a, 0, 0, 0, 0xaa);
    out(&t, &b, 0, 0, 0, 0xbb);
    out(&t, &b, 1, 3, 0xbb, 0);
    assert_eq!(out(&t, &a, 4, 1, 0xaa, 0xbb).status, Status::Good);
    let d = prin(&t, &a, 1);
    assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
    assert_eq!(d[21], 1);
    let (o, _) = t.run_as(&b, &[0x00, 0, 0, 0, 0, 0], &[]);
    assert_eq!(sense_of(&o), Some((6, 0x2a, 5)), "registrations preempted");
    let d = prin(&t, &a, 0);
    assert_eq!(&d[4..8], &8u32.to_be_bytes());
    out(&t, &b, 0, 0, 0, 0xbb);
    assert_eq!(out(&t, &b, 3, 0, 0xbb, 0).status, Status::Good);
    let (o, _) = t.run(&[0x00, 0, 0, 0, 0, 0], &[]);
    assert_eq!(sense_of(&o), Some((6, 0x2a, 3)), "reservations preempted");
    let d = prin(&t, &a, 0);
    assert_eq!(&d[4..8], &0u32.to_be_bytes());
}

#[test]
fn prin_capabilities_and_bad_actions() {
    let t = Rig::new();
    let d = prin(&t, &t.me, 2);
    assert_eq!(d.len(), 8);
    assert_eq!(&d[..2], &[0, 8]);
    for sa in 4..0x20u8 {
        let (o, _) = t.run(&[0x5e, sa, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((5, 0x24, 0)), "sa {sa}");
    }
    let (c, p) = prout(0, 0, 0, 1);
    let mut c2 = c.clone();
    c2[8] = 20;
    assert_eq!(sense_of(&t.run(&c2, &p).0), Some((5, 0x1a, 0)));
    let mut p2 = p.clone();
    p2[20] = 0x08;
    p2[8..16].copy_from_slice(&[0; 8]);
    let (c3, _) = prout(1, 1, 0, 0);
    assert_eq!(
        sense_of(&t.run(&c3, &p2).0),
        Some((5, 0x26, 0)),
        "SPEC_I_PT on RESERVE"
    );
    assert_eq!(
        sense_of(&t.run(&c, &p2).0),
        Some((5, 0x1a, 0)),
        "SPEC_I_PT without list"
    );
}

#[test]
fn read_full_status_describes_registrants() {
    let t = Rig::new();
    out(&t, &t.me, 0, 0, 0, 0xaa);
    out(&t, &t.me, 1, 1, 0xaa, 0);
    let d = prin(&t, &t.me, 3);
    assert_eq!(&d[8..16], &0xaau64.to_be_bytes());
    assert_eq!(d[20], 1, "R_HOLDER");
    assert_eq!(d[21], 1);
    let add = u32::from_be_bytes([d[28], d[29], d[30], d[31]]) as usize;
    assert_eq!(d.len(), 32 + add);
    assert_eq!(d[32], 0x45);
}

#[test]
fn spc2_reserve_conflicts_with_pr() {
    let t = Rig::new();
    out(&t, &t.me, 0, 0, 0, 0xaa);
    out(&t, &t.me, 1, 1, 0xaa, 0);
    let (o, _) = t.run(&[0x16, 0, 0, 0, 0, 0], &[]);
    assert_eq!(o.status, Status::ReservationConflict);
}

/// PROUT with a parameter list of any length.
fn prout_with(t: &Rig, n: &Nexus, sa: u8, rtype: u8, p: &[u8]) -> crate::Outcome {
    let l = (p.len() as u32).to_be_bytes();
    let cdb = [0x5f, sa, rtype, 0, 0, l[0], l[1], l[2], l[3], 0];
    t.run_as(n, &cdb, p).0
}

fn params(key: u64, sa_key: u64, flags: u8) -> Vec<u8> {
    let mut p = key.to_be_bytes().to_vec();
    p.extend_from_slice(&sa_key.to_be_bytes());
    p.resize(24, 0);
    p[20] = flags;
    p
}

fn tid(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    crate::pr::transport_id(name, &mut v);
    v
}

fn keys(t: &Rig, n: &Nexus) -> Vec<u64> {
    let d = prin(t, n, 0);
    d[8..]
        .chunks(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

const WRITE1: [u8; 10] = [0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0];

#[test]
fn spec_i_pt_registers_named_ports() {
    let (t, b) = two();
    let a = t.me.clone();
    let mut p = params(0, 0xaa, 0x08);
    let list = tid(&b.initiator_port);
    p.extend_from_slice(&(list.len() as u32).to_be_bytes());
    p.extend_from_slice(&list);
    assert_eq!(prout_with(&t, &a, 0, 0, &p).status, Status::Good);
    assert_eq!(keys(&t, &a), vec![0xaa, 0xaa]);
    // b is registered without having said anything: it may reserve.
    assert_eq!(out(&t, &b, 1, 1, 0xaa, 0).status, Status::Good);
    // Naming an already registered port fails and changes nothing.
    let c = t.nexus(3);
    t.run_as(&c, &[0, 0, 0, 0, 0, 0], &[]);
    let mut p = params(0, 0xcc, 0x08);
    let mut list = tid(&c.initiator_port);
    list.extend_from_slice(&tid(&b.initiator_port));
    p.extend_from_slice(&(list.len() as u32).to_be_bytes());
    p.extend_from_slice(&list);
    assert_eq!(sense_of(&prout_with(&t, &c, 0, 0, &p)), Some((5, 0x26, 0)));
    assert_eq!(keys(&t, &a).len(), 2);
    // Not iSCSI, or a bad length: refused.
    let mut bad = tid(&c.initiator_port);
    bad[0] = 0x41;
    let mut p = params(0, 0xcc, 0x08);
    p.extend_from_slice(&(bad.len() as u32).to_be_bytes());
    p.extend_from_slice(&bad);
    assert_eq!(sense_of(&prout_with(&t, &c, 0, 0, &p)), Some((5, 0x26, 0)));
    p.truncate(p.len() - 4);
    assert_eq!(sense_of(&prout_with(&t, &c, 0, 0, &p)), Some((5, 0x1a, 0)));
    // Device-name TransportID (format 00b) covers every port of c.
    let name = c.initiator_port.split(",i,").next().expect("name");
    let mut p = params(0, 0xcc, 0x08);
    let list = tid(name);
    p.extend_from_slice(&(list.len() as u32).to_be_bytes());
    p.extend_from_slice(&list);
    let d = t.nexus(4);
    t.run_as(&d, &[0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(prout_with(&t, &d, 0, 0, &p).status, Status::Good);
    assert_eq!(
        out(&t, &c, 0, 0, 0xcc, 0xc1).status,
        Status::Good,
        "c registered"
    );
}

#[test]
fn all_tg_pt_covers_every_target_port() {
    let t = Rig::new();
    let a = t.me.clone();
    let mut a2 = a.clone();
    a2.id = 7;
    a2.target_port = "iqn.2026-01.test:tgt,t,0x0002".to_string();
    a2.relative_port_id = 2;
    t.run_as(&a2, &[0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(
        prout_with(&t, &a, 0, 0, &params(0, 0xaa, 0x04)).status,
        Status::Good
    );
    assert_eq!(
        out(&t, &a2, 1, 1, 0xaa, 0).status,
        Status::Good,
        "same I, other port"
    );
    let d = prin(&t, &a, 3);
    assert_eq!(d[20], 0x03, "ALL_TG_PT and R_HOLDER");
    assert_eq!(&d[26..28], &[0, 0], "no relative port for ALL_TG_PT");
    // Without ALL_TG_PT the other port is not registered.
    let t = Rig::new();
    t.run_as(&a2, &[0, 0, 0, 0, 0, 0], &[]);
    out(&t, &a, 0, 0, 0, 0xaa);
    assert_eq!(
        out(&t, &a2, 1, 1, 0xaa, 0).status,
        Status::ReservationConflict
    );
}

fn move_params(key: u64, sa_key: u64, flags: u8, rel: u16, to: &str) -> Vec<u8> {
    let mut p = key.to_be_bytes().to_vec();
    p.extend_from_slice(&sa_key.to_be_bytes());
    p.extend_from_slice(&[0, flags]);
    p.extend_from_slice(&rel.to_be_bytes());
    let id = tid(to);
    p.extend_from_slice(&(id.len() as u32).to_be_bytes());
    p.extend_from_slice(&id);
    p
}

#[test]
fn register_and_move_hands_over_the_reservation() {
    let (t, b) = two();
    let a = t.me.clone();
    out(&t, &a, 0, 0, 0, 0xaa);
    let p = move_params(0xaa, 0xbb, 0x02, 1, &b.initiator_port);
    assert_eq!(
        prout_with(&t, &a, 7, 1, &p).status,
        Status::ReservationConflict,
        "not the holder"
    );
    out(&t, &a, 1, 1, 0xaa, 0);
    let me = move_params(0xaa, 0xbb, 0, 1, &a.initiator_port);
    assert_eq!(
        sense_of(&prout_with(&t, &a, 7, 1, &me)),
        Some((5, 0x26, 0)),
        "to itself"
    );
    let zero = move_params(0xaa, 0, 0, 1, &b.initiator_port);
    assert_eq!(
        sense_of(&prout_with(&t, &a, 7, 1, &zero)),
        Some((5, 0x26, 0))
    );
    assert_eq!(
        sense_of(&prout_with(&t, &a, 7, 7, &p)),
        Some((5, 0x24, 0)),
        "AR type"
    );
    assert_eq!(prout_with(&t, &a, 7, 3, &p).status, Status::Good);
    let d = prin(&t, &b, 1);
    assert_eq!(&d[8..16], &0xbbu64.to_be_bytes(), "b holds with the SA key");
    assert_eq!(d[21], 3, "new type");
    assert_eq!(keys(&t, &a), vec![0xbb], "UNREG dropped a");
    let (o, _) = t.run_as(&b, &WRITE1, &[0u8; 512]);
    assert_eq!(o.status, Status::Good);
    let (o, _) = t.run(&WRITE1, &[0u8; 512]);
    assert_eq!(o.status, Status::ReservationConflict);
}

mod aptpl {
    use super::*;
    use crate::{Device, DeviceOptions, Lun, LunTable};
    use std::sync::Arc;

    fn device(path: &std::path::Path) -> LunTable {
        let store = Arc::new(MemStore::new(BLOCKS * 512, false));
        let dev = Device::new(DeviceOptions::new("disk0", WWN), store);
        dev.set_pr_state_file(path.to_path_buf())
            .expect("state file");
        LunTable {
            luns: vec![Lun {
                id: 0,
                device: dev,
                write_protect: false,
            }],
        }
    }

    fn run(table: &LunTable, n: &Nexus, cdb: &[u8], data: &[u8]) -> (crate::Outcome, Vec<u8>) {
        let cmd = crate::Command {
            cdb,
            data_out: data,
            expected_len: data.len() as u32,
            attr: crate::TaskAttr::Simple,
        };
        let mut buf = Vec::new();
        let o = table.execute(n, 0, &cmd, &mut buf);
        (o, buf)
    }

    fn nexus(id: u64, who: u64) -> Nexus {
        Nexus {
            id,
            initiator_port: format!("iqn.2026-01.test:init{who},i,0x1"),
            target_port: "iqn.2026-01.test:tgt,t,0x0001".to_string(),
            relative_port_id: 1,
            tpg_tag: 1,
        }
    }

    fn prout10(t: &LunTable, n: &Nexus, sa: u8, rtype: u8, p: &[u8]) -> Status {
        let cdb = [0x5f, sa, rtype, 0, 0, 0, 0, 0, p.len() as u8, 0];
        run(t, n, &cdb, p).0.status
    }

    fn read_keys(t: &LunTable, n: &Nexus) -> Vec<u8> {
        run(t, n, &[0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]).1
    }

    #[test]
    fn state_survives_a_new_device_on_the_same_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pr").join("aptpl_disk0");
        let t = device(&path);
        let (a, b) = (nexus(1, 1), nexus(2, 2));
        for n in [&a, &b] {
            run(&t, n, &[0, 0, 0, 0, 0, 0], &[]);
        }
        assert_eq!(prout10(&t, &a, 0, 0, &params(0, 0xaa, 0x01)), Status::Good);
        assert_eq!(prout10(&t, &b, 0, 0, &params(0, 0xbb, 0x01)), Status::Good);
        assert_eq!(prout10(&t, &a, 1, 3, &params(0xaa, 0, 0)), Status::Good);
        assert!(path.exists(), "written with APTPL");
        let caps = run(&t, &a, &[0x5e, 2, 0, 0, 0, 0, 0, 0, 8, 0], &[]).1;
        assert_eq!(caps[2] & 0x01, 0x01, "PTPL_C");
        assert_eq!(caps[3] & 0x01, 0x01, "PTPL_A");
        let before = read_keys(&t, &a);
        drop(t);

        // "Restart": a new device, new nexus ids, same I_T names.
        let t = device(&path);
        let (a, c) = (nexus(11, 1), nexus(13, 3));
        for n in [&a, &c] {
            run(&t, n, &[0, 0, 0, 0, 0, 0], &[]);
        }
        assert_eq!(read_keys(&t, &a), before, "keys and generation restored");
        let r = run(&t, &a, &[0x5e, 1, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]).1;
        assert_eq!(&r[8..16], &0xaau64.to_be_bytes());
        assert_eq!(r[21], 3, "EXCLUSIVE ACCESS restored");
        let (o, _) = run(&t, &c, &WRITE1, &[0u8; 512]);
        assert_eq!(o.status, Status::ReservationConflict, "unregistered c");
        let (o, _) = run(&t, &a, &WRITE1, &[0u8; 512]);
        assert_eq!(o.status, Status::Good, "a still holds it");

        // APTPL=0 from now on: the file goes, nothing is restored.
        assert_eq!(prout10(&t, &a, 0, 0, &params(0xaa, 0xa1, 0)), Status::Good);
        assert!(!path.exists());
        drop(t);
        let t = device(&path);
        let a = nexus(21, 1);
        run(&t, &a, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(&read_keys(&t, &a)[4..8], &[0, 0, 0, 0], "no registrations");
    }

    /// After a restart, a restored registrant that has only sent TEST UNIT
    /// READY (no PERSISTENT RESERVE command) is still found by its I_T
    /// identity: preempted, it gets REGISTRATIONS PREEMPTED; and after it
    /// logs out and back in (new nexus id), RESERVATIONS RELEASED too.
    #[test]
    fn restored_registrants_get_unit_attentions_before_any_pr_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aptpl_disk0");
        let t = device(&path);
        let (a, b, c) = (nexus(1, 1), nexus(2, 2), nexus(3, 3));
        for n in [&a, &b, &c] {
            run(&t, n, &[0, 0, 0, 0, 0, 0], &[]);
        }
        for (n, k) in [(&a, 0xaa), (&b, 0xbb), (&c, 0xcc)] {
            assert_eq!(prout10(&t, n, 0, 0, &params(0, k, 0x01)), Status::Good);
        }
        // WRITE EXCLUSIVE - REGISTRANTS ONLY: releasing it tells registrants.
        assert_eq!(prout10(&t, &a, 1, 5, &params(0xaa, 0, 0)), Status::Good);
        drop(t);

        let t = device(&path);
        let (a, b, c) = (nexus(11, 1), nexus(12, 2), nexus(13, 3));
        for n in [&a, &b, &c] {
            let (o, _) = run(&t, n, &[0, 0, 0, 0, 0, 0], &[]);
            assert_eq!(sense_of(&o), Some((6, 0x29, 0)), "power on");
        }
        // a preempts b's registration (b never sent a PR command).
        let preempt = params(0xaa, 0xbb, 0);
        assert_eq!(prout10(&t, &a, 4, 5, &preempt), Status::Good);
        let (o, _) = run(&t, &b, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(
            sense_of(&o),
            Some((6, 0x2a, 0x05)),
            "REGISTRATIONS PREEMPTED"
        );
        let (o, _) = run(&t, &c, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(o.status, Status::Good, "c is still registered");

        // c logs out and in again: the new nexus is found too.
        t.nexus_gone(&c);
        let c2 = Nexus {
            id: 23,
            ..c.clone()
        };
        let (o, _) = run(&t, &c2, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((6, 0x29, 0)));
        assert_eq!(prout10(&t, &a, 2, 5, &params(0xaa, 0, 0)), Status::Good);
        let (o, _) = run(&t, &c2, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((6, 0x2a, 0x04)), "RESERVATIONS RELEASED");
        // The old id is forgotten: nothing is queued for it.
        let (o, _) = run(&t, &c, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(sense_of(&o), Some((6, 0x29, 0)), "a new nexus to the LU");
    }

    #[test]
    fn without_aptpl_nothing_is_persisted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aptpl_disk0");
        let t = device(&path);
        let a = nexus(1, 1);
        run(&t, &a, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(prout10(&t, &a, 0, 0, &params(0, 0xaa, 0)), Status::Good);
        assert_eq!(prout10(&t, &a, 1, 1, &params(0xaa, 0, 0)), Status::Good);
        assert!(!path.exists());
        drop(t);
        let t = device(&path);
        run(&t, &a, &[0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(&read_keys(&t, &a)[4..8], &[0, 0, 0, 0]);
    }

    #[test]
    fn unwritable_state_file_refuses_the_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Its directory turns out to be a file: the write cannot happen.
        let sub = dir.path().join("pr");
        let t = device(&sub.join("aptpl_disk0"));
        std::fs::write(&sub, b"not a directory").expect("write");
        let a = nexus(1, 1);
        run(&t, &a, &[0, 0, 0, 0, 0, 0], &[]);
        let cdb = [0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0];
        let (o, _) = run(&t, &a, &cdb, &params(0, 0xaa, 0x01));
        assert_eq!(sense_of(&o), Some((5, 0x55, 4)));
        assert_eq!(&read_keys(&t, &a)[4..8], &[0, 0, 0, 0], "rolled back");
    }

    #[test]
    fn corrupt_state_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aptpl_disk0");
        std::fs::write(&path, b"garbage\n").expect("write");
        let store = Arc::new(MemStore::new(BLOCKS * 512, false));
        let dev = Device::new(DeviceOptions::new("disk0", WWN), store);
        assert!(dev.set_pr_state_file(path).is_err());
    }
}

/// A vhost guest's nexus (a bare naa. port name: SAS, as LIO's tcm_vhost)
/// registered by an iSCSI initiator through a SAS TransportID (SPEC_I_PT,
/// ALL_TG_PT) may reserve; READ FULL STATUS names it with a SAS TransportID and the
/// iSCSI one with an iSCSI TransportID.
#[test]
fn sas_transport_ids_for_vhost_nexuses() {
    let t = Rig::new();
    let guest = Nexus {
        id: 1 << 48,
        initiator_port: "naa.5001405f00d00001".into(),
        target_port: "naa.5001405abcdef012,t,0x0001".into(),
        relative_port_id: 1,
        tpg_tag: 1,
    };
    t.run_as(&guest, &[0, 0, 0, 0, 0, 0], &[]);
    let sas = tid(&guest.initiator_port);
    assert_eq!((sas.len(), sas[0]), (24, 0x06));
    // ALL_TG_PT: the guest reaches the LU through another target port.
    let mut p = params(0, 0x5a5, 0x0c);
    p.extend_from_slice(&(sas.len() as u32).to_be_bytes());
    p.extend_from_slice(&sas);
    let a = t.me.clone();
    assert_eq!(prout_with(&t, &a, 0, 0, &p).status, Status::Good);
    assert_eq!(out(&t, &guest, 1, 1, 0x5a5, 0).status, Status::Good);
    let (o, d) = t.run_as(&guest, &[0x5e, 3, 0, 0, 0, 0, 0, 0x10, 0, 0], &[]);
    assert_eq!(o.status, Status::Good);
    assert!(d.windows(24).any(|w| w == &sas[..]), "SAS TransportID");
    assert!(d.windows(4).any(|w| w == b"iqn."), "the iSCSI registrant");
    // A SAS TransportID shorter than 24 bytes is refused.
    let mut p = params(0, 0x5a6, 0x08);
    p.extend_from_slice(&20u32.to_be_bytes());
    p.extend_from_slice(&sas[..20]);
    assert_ne!(prout_with(&t, &t.nexus(3), 0, 0, &p).status, Status::Good);
}
