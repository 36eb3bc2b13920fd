//! Tests of the key negotiation (kept apart from `negotiate.rs` so each
//! file stays readable).

use super::*;

fn one(n: &mut Negotiator, k: &str, v: &str, stage: Stage) -> Option<String> {
    let out = n.respond(&[Pair::new(k, v)], stage).unwrap();
    out.into_iter().find(|p| p.key == k).map(|p| p.value)
}

#[test]
fn answers_table() {
    // (key, offered value, expected answer)
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("HeaderDigest", "CRC32C,None", Some("CRC32C")),
        ("HeaderDigest", "None", Some("None")),
        ("DataDigest", "Foo,None", Some("None")),
        ("DataDigest", "Foo", Some("Reject")),
        ("MaxConnections", "8", Some("1")),
        ("MaxConnections", "0", Some("Reject")),
        ("InitialR2T", "Yes", Some("Yes")),
        ("InitialR2T", "No", Some("No")),
        ("InitialR2T", "maybe", Some("Reject")),
        ("ImmediateData", "Yes", Some("Yes")),
        ("ImmediateData", "No", Some("No")),
        ("MaxRecvDataSegmentLength", "65536", None),
        ("MaxRecvDataSegmentLength", "100", Some("Reject")),
        ("MaxBurstLength", "16776192", Some("1048576")),
        ("MaxBurstLength", "65536", Some("65536")),
        ("MaxBurstLength", "0x10000", Some("65536")),
        ("MaxBurstLength", "16777216", Some("Reject")),
        ("FirstBurstLength", "1048576", Some("262144")),
        ("DefaultTime2Wait", "0", Some("2")),
        ("DefaultTime2Wait", "5", Some("5")),
        ("DefaultTime2Wait", "3601", Some("Reject")),
        ("DefaultTime2Retain", "20", Some("0")),
        ("MaxOutstandingR2T", "1", Some("1")),
        ("MaxOutstandingR2T", "64", Some("16")),
        ("DataPDUInOrder", "No", Some("Yes")),
        ("DataSequenceInOrder", "Yes", Some("Yes")),
        ("ErrorRecoveryLevel", "2", Some("0")),
        ("ErrorRecoveryLevel", "3", Some("Reject")),
        ("OFMarker", "Yes", Some("No")),
        ("IFMarker", "No", Some("No")),
        ("OFMarkInt", "2048~8192", Some("Irrelevant")),
        ("IFMarkInt", "2048", Some("Irrelevant")),
        ("X-com.example.foo", "1", Some("NotUnderstood")),
        ("X#vendor", "1", Some("NotUnderstood")),
        ("NoSuchKey", "1", Some("NotUnderstood")),
        ("TargetAlias", "x", Some("Reject")),
        ("TargetAddress", "1.2.3.4", Some("Reject")),
        ("TargetPortalGroupTag", "1", Some("Reject")),
        ("InitiatorName", "iqn.x", None),
        ("InitiatorAlias", "host", None),
        ("TargetName", "iqn.t", None),
        ("SessionType", "Normal", None),
        ("SendTargets", "All", Some("Irrelevant")),
        ("TaskReporter", "RFC3720", Some("RFC3720")),
    ];
    for (k, v, want) in cases {
        let mut n = Negotiator::new(TargetOffer::default());
        let got = one(&mut n, k, v, Stage::Operational);
        assert_eq!(got.as_deref(), *want, "{k}={v}");
    }
}

#[test]
fn results_are_recorded() {
    let mut n = Negotiator::new(TargetOffer::default());
    let pairs = [
        Pair::new("HeaderDigest", "CRC32C"),
        Pair::new("ImmediateData", "Yes"),
        Pair::new("InitialR2T", "No"),
        Pair::new("MaxRecvDataSegmentLength", "65536"),
        Pair::new("MaxBurstLength", "131072"),
        Pair::new("FirstBurstLength", "262144"),
    ];
    n.respond(&pairs, Stage::Operational).unwrap();
    let p = &n.params;
    assert!(p.header_digest && !p.data_digest);
    assert!(p.immediate_data && !p.initial_r2t);
    assert_eq!(p.initiator_mrdsl, 65536);
    assert_eq!(p.max_burst_length, 131072);
    // FirstBurstLength never exceeds MaxBurstLength.
    assert_eq!(p.first_burst_length, 131072);
}

/// A FirstBurstLength lowered to the MaxBurstLength of the same request is
/// answered lowered: the initiator sends no more unsolicited data than the
/// target takes (answered 262144 while held to 131072, a 256 KiB unsolicited
/// burst closed the connection as a protocol error).
#[test]
fn a_first_burst_lowered_to_the_max_burst_is_answered_so() {
    for order in [
        ["FirstBurstLength", "MaxBurstLength"],
        ["MaxBurstLength", "FirstBurstLength"],
    ] {
        let mut n = Negotiator::new(TargetOffer::default());
        let value = |k: &str| {
            if k == "MaxBurstLength" {
                "131072"
            } else {
                "262144"
            }
        };
        let pairs: Vec<Pair> = order.iter().map(|k| Pair::new(*k, value(k))).collect();
        let out = n.respond(&pairs, Stage::Operational).unwrap();
        let answer = |k: &str| out.iter().find(|p| p.key == k).map(|p| p.value.clone());
        assert_eq!(
            answer("MaxBurstLength").as_deref(),
            Some("131072"),
            "{order:?}"
        );
        assert_eq!(
            answer("FirstBurstLength").as_deref(),
            Some("131072"),
            "{order:?}"
        );
        assert_eq!(n.params.first_burst_length, 131072);
    }
    // Answered in an earlier request, it stays what both sides were told.
    let mut n = Negotiator::new(TargetOffer::default());
    n.respond(
        &[Pair::new("FirstBurstLength", "262144")],
        Stage::Operational,
    )
    .unwrap();
    n.respond(&[Pair::new("MaxBurstLength", "131072")], Stage::Operational)
        .unwrap();
    assert_eq!(n.params.first_burst_length, 262144);
}

#[test]
fn discovery_irrelevant_keys() {
    let mut n = Negotiator::new(TargetOffer::default());
    let out = n
        .respond(
            &[
                Pair::new("SessionType", "Discovery"),
                Pair::new("InitialR2T", "No"),
                Pair::new("MaxBurstLength", "1024"),
                Pair::new("HeaderDigest", "None"),
            ],
            Stage::Operational,
        )
        .unwrap();
    assert_eq!(
        out,
        vec![
            Pair::new("InitialR2T", "Irrelevant"),
            Pair::new("MaxBurstLength", "Irrelevant"),
            Pair::new("HeaderDigest", "None"),
        ]
    );
    assert_eq!(n.session_type, Some(SessionType::Discovery));
}

#[test]
fn joining_login_negotiates_only_connection_keys() {
    let mut n = Negotiator::new(TargetOffer::default());
    n.joining = true;
    let out = n
        .respond(
            &[
                Pair::new("MaxConnections", "2"),
                Pair::new("ImmediateData", "No"),
                Pair::new("MaxBurstLength", "1024"),
                Pair::new("HeaderDigest", "None"),
            ],
            Stage::Operational,
        )
        .unwrap();
    assert_eq!(
        out,
        vec![
            Pair::new("MaxConnections", "Irrelevant"),
            Pair::new("ImmediateData", "Irrelevant"),
            Pair::new("MaxBurstLength", "Irrelevant"),
            Pair::new("HeaderDigest", "None"),
        ]
    );
}

#[test]
fn duplicate_across_pdus_is_error() {
    let mut n = Negotiator::new(TargetOffer::default());
    n.respond(&[Pair::new("MaxBurstLength", "1024")], Stage::Operational)
        .unwrap();
    assert_eq!(
        n.respond(&[Pair::new("MaxBurstLength", "1024")], Stage::Operational),
        Err(NegError::Duplicate("MaxBurstLength".into()))
    );
}

#[test]
fn repeated_declaration_with_same_value_is_accepted() {
    // libiscsi after `AuthMethod=CHAP,None` was answered None.
    let mut n = Negotiator::new(TargetOffer::default());
    let first = [
        Pair::new("InitiatorName", "iqn.2026-11.org.example:host"),
        Pair::new("InitiatorAlias", "host"),
        Pair::new("TargetName", "iqn.2026-11.org.example:t"),
        Pair::new("SessionType", "Normal"),
        Pair::new("AuthMethod", "CHAP,None"),
    ];
    n.respond(&first, Stage::Security).unwrap();
    let mut again = first[..4].to_vec();
    again.push(Pair::new("HeaderDigest", "None"));
    let out = n.respond(&again, Stage::Operational).unwrap();
    assert_eq!(out, vec![Pair::new("HeaderDigest", "None")]);
    assert_eq!(
        n.initiator_name.as_deref(),
        Some("iqn.2026-11.org.example:host")
    );
    assert_eq!(n.session_type, Some(SessionType::Normal));
}

#[test]
fn repeated_declaration_with_other_value_is_refused() {
    let base = || {
        let mut n = Negotiator::new(TargetOffer::default());
        n.respond(
            &[
                Pair::new("InitiatorName", "iqn.2026-11.org.example:a"),
                Pair::new("InitiatorAlias", "a"),
                Pair::new("TargetName", "iqn.2026-11.org.example:t"),
                Pair::new("SessionType", "Discovery"),
                Pair::new("MaxRecvDataSegmentLength", "8192"),
            ],
            Stage::Security,
        )
        .unwrap();
        n
    };
    let cases = [
        ("InitiatorName", "iqn.2026-11.org.example:b"),
        ("InitiatorAlias", "b"),
        ("TargetName", "iqn.2026-11.org.example:u"),
        ("SessionType", "Normal"),
        ("MaxRecvDataSegmentLength", "65536"),
    ];
    for (k, v) in cases {
        let mut n = base();
        assert_eq!(
            n.respond(&[Pair::new(k, v)], Stage::Operational),
            Err(NegError::Duplicate(k.into())),
            "{k}={v}"
        );
    }
    // Negotiated keys may not be repeated even with the same value.
    let mut n = Negotiator::new(TargetOffer::default());
    n.respond(&[Pair::new("AuthMethod", "None")], Stage::Security)
        .unwrap();
    assert!(n
        .respond(&[Pair::new("AuthMethod", "None")], Stage::Security)
        .is_err());
    // A session type the login layer fixed from the first request.
    let mut n = Negotiator::new(TargetOffer::default());
    n.session_type = Some(SessionType::Normal);
    assert!(n
        .respond(&[Pair::new("SessionType", "Discovery")], Stage::Operational)
        .is_err());
}

#[test]
fn auth_method() {
    let mut n = Negotiator::new(TargetOffer::default());
    assert_eq!(
        one(&mut n, "AuthMethod", "CHAP,None", Stage::Security).as_deref(),
        Some("None")
    );
    assert_eq!(n.auth_method, Some(AuthMethod::None));
    let mut n = Negotiator::new(TargetOffer::default());
    assert_eq!(
        one(&mut n, "AuthMethod", "CHAP", Stage::Security).as_deref(),
        Some("Reject")
    );
    let mut n = Negotiator::new(TargetOffer::default());
    assert!(n
        .respond(&[Pair::new("AuthMethod", "None")], Stage::Operational)
        .is_err());
}

#[test]
fn bad_session_type_is_error() {
    let mut n = Negotiator::new(TargetOffer::default());
    assert!(n
        .respond(&[Pair::new("SessionType", "Bogus")], Stage::Security)
        .is_err());
}

#[test]
fn full_feature_rejects_leading_only_keys() {
    let mut n = Negotiator::new(TargetOffer::default());
    assert!(n
        .respond(&[Pair::new("InitialR2T", "Yes")], Stage::FullFeature)
        .is_err());
    // MaxRecvDataSegmentLength may be renegotiated in full feature phase.
    n.respond(
        &[Pair::new("MaxRecvDataSegmentLength", "4096")],
        Stage::FullFeature,
    )
    .unwrap();
    assert_eq!(n.params.initiator_mrdsl, 4096);
}

#[test]
fn declarations_once() {
    let offer = TargetOffer {
        target_alias: Some("disk".into()),
        ..TargetOffer::default()
    };
    let mut n = Negotiator::new(offer);
    let d = n.declarations();
    assert_eq!(d[0], Pair::new("MaxRecvDataSegmentLength", "262144"));
    assert_eq!(d[1], Pair::new("TargetAlias", "disk"));
    assert!(n.declarations().is_empty());
}

#[test]
fn tpg_parameters_override() {
    let mut o = TargetOffer::default();
    o.apply_parameter("MaxRecvDataSegmentLength", "8192")
        .unwrap();
    o.apply_parameter("ImmediateData", "No").unwrap();
    o.apply_parameter("HeaderDigest", "CRC32C").unwrap();
    o.apply_parameter("OFMarker", "No").unwrap();
    assert!(o.apply_parameter("InitialR2T", "Maybe").is_err());
    assert!(o.apply_parameter("MaxBurstLength", "1").is_err());
    assert_eq!(o.max_recv_data_segment_length, 8192);
    assert!(!o.immediate_data);
    assert_eq!(o.header_digest, vec![DigestKind::Crc32c]);
    let mut n = Negotiator::new(o);
    assert_eq!(
        one(&mut n, "HeaderDigest", "None", Stage::Operational).as_deref(),
        Some("Reject")
    );
}

#[test]
fn a_login_with_too_many_keys_is_refused() {
    use crate::text::parse_pairs;
    use crate::text::scaling::many_keys;
    let pairs = parse_pairs(&many_keys(2 * MAX_LOGIN_KEYS)).unwrap();
    let (first, rest) = pairs.split_at(MAX_LOGIN_KEYS);
    let mut n = Negotiator::new(TargetOffer::default());
    // Up to the cap, each unknown key is answered.
    let out = n.respond(first, Stage::Security).unwrap();
    assert_eq!(out.len(), MAX_LOGIN_KEYS);
    // One more, in this or any later PDU, ends the login.
    assert_eq!(
        n.respond(&rest[..1], Stage::Operational),
        Err(NegError::TooManyKeys)
    );
    let mut n = Negotiator::new(TargetOffer::default());
    assert_eq!(
        n.respond(&pairs, Stage::Security),
        Err(NegError::TooManyKeys)
    );
    // Full feature phase Text requests are not login keys.
    let mut n = Negotiator::new(TargetOffer::default());
    let out = n.respond(&pairs, Stage::FullFeature).unwrap();
    assert_eq!(out.len(), pairs.len());
}
