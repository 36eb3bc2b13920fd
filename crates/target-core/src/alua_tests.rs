//! Unit tests of `alua`: RTPG, STPG, the access-state gate, INQUIRY
//! TPGS and VPD 0x83 per port, UAs of implicit and explicit transitions.
use super::*;
use crate::testutil::*;

const RTPG: [u8; 12] = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
const RTPG_EXT: [u8; 12] = [0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
const READ10: [u8; 10] = [0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0];
const TUR: [u8; 6] = [0; 6];
const INQ: [u8; 6] = [0x12, 0, 0, 0, 96, 0];

fn stpg(descs: &[(u8, u16)]) -> (Vec<u8>, Vec<u8>) {
    let mut data = vec![0u8; 4];
    for (state, id) in descs {
        let i = id.to_be_bytes();
        data.extend_from_slice(&[*state, 0, i[0], i[1]]);
    }
    let l = (data.len() as u32).to_be_bytes();
    let cdb = vec![0xa4, 0x0a, 0, 0, 0, 0, l[0], l[1], l[2], l[3], 0, 0];
    (cdb, data)
}

/// Two ports: the rig's own (rel 1, group `ao` id 1) and a second
/// target port (rel 2, group `sb` id 2).
fn two_groups(t: &Rig, sb_state: AccessState) -> Nexus {
    let mut ao = AluaGroup::new("ao", 1);
    ao.preferred = true;
    let mut sb = AluaGroup::new("sb", 2);
    sb.state = sb_state;
    sb.nonop_delay_msecs = 0;
    let other = Nexus {
        id: 77,
        target_port: "iqn.2026-01.test:tgt,t,0x0002".into(),
        relative_port_id: 2,
        tpg_tag: 2,
        ..t.nexus(77)
    };
    t.dev.alua_configure(
        &[AluaGroup::new(DEFAULT_GROUP, 0), ao, sb],
        &[
            AluaPort {
                target_port: t.me.target_port.clone(),
                relative_port_id: 1,
                group: 1,
            },
            AluaPort {
                target_port: other.target_port.clone(),
                relative_port_id: 2,
                group: 2,
            },
        ],
    );
    other
}

fn sense_full(t: &Rig, n: &Nexus, cdb: &[u8], data: &[u8]) -> Option<(u8, u8, u8)> {
    let (o, _) = t.run_as(n, cdb, data);
    sense_of(&o)
}

#[test]
fn rtpg_lists_every_group_identically_on_every_path() {
    let t = Rig::new();
    let other = two_groups(&t, AccessState::Standby);
    // The configuration change is a UA for `me`; the other nexus is new.
    assert_eq!(sense_full(&t, &t.me, &TUR, &[]), Some((6, 0x2a, 0x06)));
    t.run_as(&other, &TUR, &[]); // its power-on UA
    let (_, a) = t.ok(&RTPG);
    let (o, b) = t.run_as(&other, &RTPG, &[]);
    assert_eq!(o.status, Status::Good);
    assert_eq!(a, b, "same answer through both ports");
    // Header + 3 groups: default (0 ports), ao (1), sb (1).
    assert_eq!(a.len(), 4 + 8 + 12 + 12);
    assert_eq!(&a[..4], &((a.len() - 4) as u32).to_be_bytes());
    assert_eq!((a[4], &a[6..8], a[11]), (0x00, &[0u8, 0][..], 0));
    assert_eq!((a[12], a[13], &a[14..16]), (0x80, 0xcf, &[0u8, 1][..]));
    assert_eq!((a[19], &a[22..24]), (1, &[0u8, 1][..]));
    assert_eq!((a[24], &a[26..28], a[31]), (0x02, &[0u8, 2][..], 1));
    assert_eq!(&a[34..36], &[0, 2]);
    let (_, e) = t.ok(&RTPG_EXT);
    assert_eq!((e[4], e.len()), (0x10, a.len() + 4));
    // Allocation length cuts without error.
    let (_, s) = t.ok(&[0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0]);
    assert_eq!(s.len(), 6);
}

#[test]
fn standby_refuses_media_access_but_answers_reports() {
    let t = Rig::new();
    let other = two_groups(&t, AccessState::Standby);
    t.run(&TUR, &[]); // consume 2A/06
    t.run_as(&other, &TUR, &[]); // power-on UA
    assert_eq!(sense_full(&t, &other, &READ10, &[]), Some((2, 0x04, 0x0b)));
    assert_eq!(sense_full(&t, &other, &TUR, &[]), Some((2, 0x04, 0x0b)));
    for ok in [
        &INQ[..],
        &RTPG[..],
        &[0x5a, 0, 0x3f, 0, 0, 0, 0, 0, 255, 0][..],
        // READ CAPACITY 10 and 16: Linux probes the size of standby paths.
        &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
        &[0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0][..],
    ] {
        let (o, _) = t.run_as(&other, ok, &[]);
        assert_eq!(o.status, Status::Good, "{ok:02x?}");
    }
    // The optimized path is not affected.
    t.ok(&READ10);
}

#[test]
fn other_states_answer_their_ascq() {
    for (state, ascq) in [
        (AccessState::Unavailable, 0x0c),
        (AccessState::Offline, 0x12),
        (AccessState::Transitioning, 0x0a),
    ] {
        let t = Rig::new();
        let other = two_groups(&t, state);
        t.run_as(&other, &TUR, &[]);
        assert_eq!(
            sense_full(&t, &other, &READ10, &[]),
            Some((2, 0x04, ascq)),
            "{state:?}"
        );
        let (o, _) = t.run_as(&other, &INQ, &[]);
        assert_eq!(o.status, Status::Good);
        // Only standby lets READ CAPACITY through.
        assert_eq!(
            sense_full(&t, &other, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]),
            Some((2, 0x04, ascq)),
            "{state:?}"
        );
    }
}

#[test]
fn inquiry_and_vpd83_follow_the_port_group() {
    let t = Rig::new();
    let other = two_groups(&t, AccessState::Standby);
    let (_, d) = t.ok(&INQ);
    assert_eq!(d[5] & 0x30, 0x30, "implicit and explicit");
    let vpd = [0x12, 1, 0x83, 0, 255, 0];
    let tpg_of = |d: &[u8]| -> u16 {
        let mut i = 4;
        while i + 4 <= d.len() {
            let len = usize::from(d[i + 3]);
            if d[i + 1] & 0x0f == 0x05 {
                return u16::from_be_bytes([d[i + 6], d[i + 7]]);
            }
            i += 4 + len;
        }
        panic!("no target port group designator");
    };
    let (_, d) = t.ok(&vpd);
    assert_eq!(tpg_of(&d), 1);
    let (_, d) = t.run_as(&other, &vpd, &[]);
    assert_eq!(tpg_of(&d), 2);
    // An implicit-only group reports TPGS=01 and refuses STPG.
    let mut g = AluaGroup::new("ao", 1);
    g.access_type = ALUA_IMPLICIT;
    t.dev.alua_configure(
        &[g],
        &[AluaPort {
            target_port: t.me.target_port.clone(),
            relative_port_id: 1,
            group: 1,
        }],
    );
    t.run(&TUR, &[]);
    let (_, d) = t.ok(&INQ);
    assert_eq!(d[5] & 0x30, 0x10);
    let (cdb, data) = stpg(&[(0x01, 1)]);
    assert_eq!(sense_full(&t, &t.me, &cdb, &data), Some((5, 0x20, 0)));
}

#[test]
fn stpg_moves_states_and_tells_the_other_nexuses() {
    let t = Rig::new();
    let other = two_groups(&t, AccessState::Standby);
    t.run(&TUR, &[]);
    t.run_as(&other, &TUR, &[]);
    // Swap: ao -> standby, sb -> active/optimized, sent through `other`.
    let (cdb, data) = stpg(&[(0x02, 1), (0x00, 2)]);
    let (o, _) = t.run_as(&other, &cdb, &data);
    assert_eq!(o.status, Status::Good, "{:?}", sense_of(&o));
    assert_eq!(sense_full(&t, &other, &TUR, &[]), None, "sender: no UA");
    assert_eq!(sense_full(&t, &t.me, &TUR, &[]), Some((6, 0x2a, 0x06)));
    assert_eq!(sense_full(&t, &t.me, &READ10, &[]), Some((2, 0x04, 0x0b)));
    let (o, _) = t.run_as(&other, &READ10, &[]);
    assert_eq!(o.status, Status::Good);
    let (_, d) = t.run_as(&other, &RTPG, &[]);
    assert_eq!((d[12] & 0x0f, d[17]), (0x02, STATUS_EXPLICIT));
    // Reconfiguring with the same management state keeps STPG's.
    let _ = two_groups(&t, AccessState::Standby);
    let g = t.dev.alua_groups();
    assert_eq!(g[1].state, AccessState::Standby);
    assert_eq!(g[2].state, AccessState::ActiveOptimized);
}

#[test]
fn stpg_checks_every_descriptor_first() {
    let t = Rig::new();
    let other = two_groups(&t, AccessState::Standby);
    t.run(&TUR, &[]);
    t.run_as(&other, &TUR, &[]);
    for bad in [
        stpg(&[(0x00, 2), (0x0e, 1)]), // offline is not requestable
        stpg(&[(0x00, 2), (0x00, 9)]), // no such group
        stpg(&[(0x04, 2)]),            // LBA dependent unsupported
        stpg(&[(0x00, 2), (0x01, 2)]), // twice the same group
    ] {
        assert_eq!(
            sense_full(&t, &other, &bad.0, &bad.1).map(|s| (s.0, s.1)),
            Some((5, 0x26)),
            "{:02x?}",
            bad.1
        );
    }
    assert_eq!(t.dev.alua_groups()[2].state, AccessState::Standby);
    let (mut cdb, data) = stpg(&[(0x00, 2)]);
    cdb[9] = 6; // not a whole descriptor
    assert_eq!(
        sense_full(&t, &other, &cdb, &data),
        Some((5, 0x1a, 0)),
        "parameter list length"
    );
}

#[test]
fn management_change_is_an_implicit_transition_for_everyone() {
    let t = Rig::new();
    let other = two_groups(&t, AccessState::Standby);
    t.run(&TUR, &[]);
    t.run_as(&other, &TUR, &[]);
    let _ = two_groups(&t, AccessState::ActiveNonOptimized);
    assert_eq!(sense_full(&t, &t.me, &TUR, &[]), Some((6, 0x2a, 0x06)));
    assert_eq!(sense_full(&t, &other, &TUR, &[]), Some((6, 0x2a, 0x06)));
    let g = t.dev.alua_groups();
    assert_eq!(
        (g[2].state, g[2].status),
        (AccessState::ActiveNonOptimized, STATUS_IMPLICIT)
    );
    // Same config again: nothing changes, no UA.
    let _ = two_groups(&t, AccessState::ActiveNonOptimized);
    assert_eq!(sense_full(&t, &t.me, &TUR, &[]), None);
}

#[test]
fn all_optimized_keeps_the_fast_path() {
    let t = Rig::new();
    assert!(!t.dev.state.alua.restricted.load(Ordering::Relaxed));
    let _ = two_groups(&t, AccessState::ActiveOptimized);
    assert!(!t.dev.state.alua.restricted.load(Ordering::Relaxed));
    let _ = two_groups(&t, AccessState::Standby);
    assert!(t.dev.state.alua.restricted.load(Ordering::Relaxed));
}

/// Monitoring counts each group that changed state once: STPG's as
/// explicit, management's as implicit; new groups and repeats are none.
#[test]
fn transitions_are_counted_by_kind() {
    let t = Rig::new();
    let other = two_groups(&t, AccessState::Standby);
    let s = t.dev.stats();
    assert_eq!(
        (s.alua_explicit_transitions, s.alua_implicit_transitions),
        (0, 0)
    );
    t.run(&TUR, &[]);
    t.run_as(&other, &TUR, &[]);
    let (cdb, data) = stpg(&[(0x02, 1), (0x00, 2)]);
    assert_eq!(t.run_as(&other, &cdb, &data).0.status, Status::Good);
    let s = t.dev.stats();
    assert_eq!(
        (s.alua_explicit_transitions, s.alua_implicit_transitions),
        (2, 0)
    );
    // Management moves sb (active/optimized by STPG) to unavailable.
    let _ = two_groups(&t, AccessState::Unavailable);
    let s = t.dev.stats();
    assert_eq!(
        (s.alua_explicit_transitions, s.alua_implicit_transitions),
        (2, 1)
    );
    let _ = two_groups(&t, AccessState::Unavailable);
    assert_eq!(
        t.dev.stats().alua_implicit_transitions,
        1,
        "a repeat changes nothing"
    );
}
