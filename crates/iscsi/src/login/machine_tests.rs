//! The login machine driven with PDUs only: no socket, no server, a fixed
//! CHAP challenge and a clock the test moves.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iscsi_wire::chap::{decode_binary, encode_hex, ChapAlgorithm, ChapCredentials, CHALLENGE_LEN};
use iscsi_wire::request::{LoginRequest, NopOut};
use iscsi_wire::response::LoginResponse;
use iscsi_wire::text::{encode_pairs, parse_pairs, Pair};
use iscsi_wire::Bhs;

use super::machine::{Accepted, Directory, LoginMachine, LoginStatus, Step};
use crate::server::SessionKey;
use crate::{AclConfig, TargetConfig, TpgConfig};

const IQN: &str = "iqn.2026-11.org.example:disk";
const INITIATOR: &str = "iqn.2026-11.org.example:host";
const CHALLENGE: (u8, [u8; CHALLENGE_LEN]) = (42, [0xc3; CHALLENGE_LEN]);
const EXP_STATSN: u32 = 1000;
const CMDSN: u32 = 77;

/// The server state a login reads.
#[derive(Default)]
struct Dir {
    targets: Vec<Arc<TargetConfig>>,
    sessions: Vec<(SessionKey, u16)>,
    discovery: Option<ChapCredentials>,
}

impl Directory for Dir {
    fn target(&self, iqn: &str) -> Option<Arc<TargetConfig>> {
        self.targets.iter().find(|t| t.iqn == iqn).cloned()
    }

    fn session_exists(&self, key: &SessionKey, tsih: u16) -> bool {
        self.sessions.iter().any(|(k, t)| k == key && *t == tsih)
    }

    fn discovery_auth(&self) -> Option<ChapCredentials> {
        self.discovery.clone()
    }
}

fn creds(mutual: bool) -> ChapCredentials {
    ChapCredentials {
        userid: "alice".into(),
        password: "wonderland12".into(),
        mutual_userid: mutual.then(|| "tgt".into()),
        mutual_password: mutual.then(|| "lookingglass".into()),
    }
}

/// One target with TPG 1 in demo mode (`authentication` and TPG
/// credentials as given), login timeout 30 s, window 64.
fn dir(auth: Option<bool>, chap: Option<ChapCredentials>) -> Dir {
    let tpg = TpgConfig {
        tag: 1,
        relative_port_id: 1,
        enable: true,
        portals: vec![],
        luns: Arc::new(target_core::LunTable::default()),
        acls: vec![],
        attributes: config::TpgAttributes {
            authentication: auth,
            generate_node_acls: true,
            login_timeout: 30,
            default_cmdsn_depth: 64,
            ..Default::default()
        },
        chap,
        offer: crate::tpg_offer([("AuthMethod", "CHAP,None")]).unwrap(),
    };
    Dir {
        targets: vec![Arc::new(TargetConfig {
            iqn: IQN.into(),
            tpgs: vec![tpg],
        })],
        ..Dir::default()
    }
}

fn local() -> SocketAddr {
    "127.0.0.1:3260".parse().unwrap()
}

fn get(pairs: &[Pair], k: &str) -> Option<String> {
    pairs.iter().find(|p| p.key == k).map(|p| p.value.clone())
}

/// The initiator's side: builds login requests and feeds them to the
/// machine at a clock of its own.
struct Initiator<'a> {
    m: LoginMachine<'a>,
    start: Instant,
    now: Instant,
    isid: [u8; 6],
    tsih: u16,
    version_min: u8,
}

impl<'a> Initiator<'a> {
    fn new(d: &'a Dir) -> Initiator<'a> {
        let start = Instant::now();
        Initiator {
            m: LoginMachine::new(d, local(), Box::new(|| CHALLENGE), start),
            start,
            now: start,
            isid: [0x80, 0, 0, 0x12, 0x34, 0],
            tsih: 0,
            version_min: 0,
        }
    }

    fn request(&self, csg: u8, nsg: u8, transit: bool, cont: bool) -> Bhs {
        let req = LoginRequest {
            transit,
            cont,
            csg,
            nsg,
            version_max: 0,
            version_min: self.version_min,
            isid: self.isid,
            tsih: self.tsih,
            itt: 5,
            cid: 1,
            cmdsn: CMDSN,
            exp_statsn: EXP_STATSN,
        };
        let mut b = Bhs::default();
        req.write_to(&mut b);
        b
    }

    fn send(&mut self, csg: u8, nsg: u8, transit: bool, pairs: &[(&str, &str)]) -> Step {
        let bhs = self.request(csg, nsg, transit, false);
        let data = encode_pairs(
            &pairs
                .iter()
                .map(|(k, v)| Pair::new(*k, *v))
                .collect::<Vec<_>>(),
        );
        self.m.handle(self.now, &bhs, &data)
    }

    /// A request the target answers (status 0) without ending the login.
    fn ok(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        pairs: &[(&str, &str)],
    ) -> (LoginResponse, Vec<Pair>) {
        match self.send(csg, nsg, transit, pairs) {
            Step::Respond(r) => {
                assert_eq!((r.response.status_class, r.response.status_detail), (0, 0));
                (r.response, parse_pairs(&r.data).unwrap())
            }
            Step::Done(_) => panic!("login ended early"),
            Step::Fail(f) => panic!("login refused: {:?}", f.status),
        }
    }

    /// The request that ends the login successfully.
    fn done(&mut self, csg: u8, pairs: &[(&str, &str)]) -> Accepted {
        match self.send(csg, 3, true, pairs) {
            Step::Done(a) => *a,
            Step::Respond(r) => panic!("login goes on: {:?}", r.response),
            Step::Fail(f) => panic!("login refused: {:?}", f.status),
        }
    }

    /// A request the target refuses; the reply carries the status.
    fn refused(&mut self, csg: u8, nsg: u8, transit: bool, pairs: &[(&str, &str)]) -> LoginStatus {
        match self.send(csg, nsg, transit, pairs) {
            Step::Fail(f) => {
                let r = f.reply.expect("a login response").response;
                assert_eq!((r.status_class, r.status_detail), f.status.code());
                assert!(!r.transit);
                assert_eq!((r.tsih, r.isid, r.itt), (0, self.isid, 5));
                f.status
            }
            Step::Done(_) => panic!("login accepted"),
            Step::Respond(r) => panic!("login goes on: {:?}", r.response),
        }
    }
}

fn security(target: &str) -> Vec<(&str, &str)> {
    vec![
        ("InitiatorName", INITIATOR),
        ("SessionType", "Normal"),
        ("TargetName", target),
        ("AuthMethod", "CHAP,None"),
    ]
}

const OPERATIONAL: &[(&str, &str)] = &[
    ("HeaderDigest", "None"),
    ("DataDigest", "None"),
    ("MaxRecvDataSegmentLength", "65536"),
];

#[test]
fn none_login_reaches_full_feature() {
    let d = dir(None, None);
    let mut i = Initiator::new(&d);
    assert_eq!(i.m.deadline(), i.start + Duration::from_secs(15));
    i.now += Duration::from_secs(1);
    let (r, pairs) = i.ok(0, 1, true, &security(IQN));
    assert!(r.transit);
    assert_eq!((r.csg, r.nsg, r.tsih), (0, 1, 0));
    assert_eq!(get(&pairs, "AuthMethod").as_deref(), Some("None"));
    assert_eq!(get(&pairs, "TargetPortalGroupTag").as_deref(), Some("1"));
    assert_eq!(r.sn.statsn, EXP_STATSN);
    assert_eq!((r.sn.exp_cmdsn, r.sn.max_cmdsn), (CMDSN, CMDSN + 63));
    // The TPG's login_timeout runs from its first request.
    assert_eq!(i.m.deadline(), i.start + Duration::from_secs(31));
    let a = i.done(1, OPERATIONAL);
    let r = a.reply.response;
    assert!(r.transit);
    assert_eq!((r.csg, r.nsg, r.sn.statsn), (1, 3, EXP_STATSN + 1));
    // The TSIH is the driver's, once it registered the session.
    assert_eq!(r.tsih, 0);
    let pairs = parse_pairs(&a.reply.data).unwrap();
    assert_eq!(get(&pairs, "HeaderDigest").as_deref(), Some("None"));
    assert_eq!(a.target.as_ref().map(|t| t.iqn.as_str()), Some(IQN));
    assert_eq!(a.tpg.as_ref().map(|g| g.tag), Some(1));
    assert!(!a.discovery && !a.acl);
    assert_eq!((a.isid, a.cid), (i.isid, 1));
    assert_eq!(a.initiator_name, INITIATOR);
    assert_eq!(
        (a.statsn, a.exp_cmdsn, a.window),
        (EXP_STATSN + 2, CMDSN, 64)
    );
    assert_eq!((&a.proved, a.chap), (&None, None));
    assert_eq!(
        a.neg.params.target_mrdsl,
        d.targets[0].tpgs[0].offer.max_recv_data_segment_length
    );
    // The driver may still refuse it (a reinstated session's commands
    // still running): the same request answered with 03/01.
    let no = a.refusal(LoginStatus::ServiceUnavailable).response;
    assert_eq!((no.status_class, no.status_detail), (3, 1));
    assert!(!no.transit);
    assert_eq!((no.tsih, no.itt, no.csg), (0, 5, 1));
    assert_eq!(no.sn.statsn, r.sn.statsn);
    assert_eq!((no.sn.exp_cmdsn, no.sn.max_cmdsn), (CMDSN, CMDSN));
    // The login is over: a further PDU gets no answer.
    assert!(matches!(i.send(1, 3, true, &[]), Step::Fail(f) if f.reply.is_none()));
}

#[test]
fn security_stage_may_be_skipped_without_auth() {
    let d = dir(Some(false), None);
    let mut i = Initiator::new(&d);
    let mut keys = security(IQN);
    keys.pop();
    keys.extend_from_slice(OPERATIONAL);
    let a = i.done(1, &keys);
    assert_eq!(a.reply.response.sn.statsn, EXP_STATSN);
    assert_eq!(a.statsn, EXP_STATSN + 1);
}

/// The CHAP exchange up to the security stage's transit; `mutual`: the
/// initiator's identifier and challenge. Returns the step of the response
/// request.
fn chap_exchange(i: &mut Initiator, password: &str, mutual: Option<(u8, [u8; 16])>) -> Step {
    let (r, pairs) = i.ok(0, 1, false, &security(IQN));
    assert!(!r.transit);
    assert_eq!(get(&pairs, "AuthMethod").as_deref(), Some("CHAP"));
    // A transit asked for while CHAP is under way is held back.
    let (r, pairs) = i.ok(0, 1, true, &[("CHAP_A", "5")]);
    assert!(!r.transit);
    assert_eq!(get(&pairs, "CHAP_A").as_deref(), Some("5"));
    assert_eq!(get(&pairs, "CHAP_I").as_deref(), Some("42"));
    let challenge = decode_binary(&get(&pairs, "CHAP_C").unwrap()).unwrap();
    assert_eq!(challenge, CHALLENGE.1);
    let resp =
        encode_hex(&ChapAlgorithm::Md5.response(CHALLENGE.0, password.as_bytes(), &challenge));
    let mine = mutual.map(|(id, c)| (id.to_string(), encode_hex(&c)));
    let mut keys = vec![("CHAP_N", "alice"), ("CHAP_R", resp.as_str())];
    if let Some((id, c)) = &mine {
        keys.extend([("CHAP_I", id.as_str()), ("CHAP_C", c.as_str())]);
    }
    i.send(0, 1, true, &keys)
}

#[test]
fn one_way_chap_login() {
    let d = dir(Some(true), Some(creds(false)));
    let mut i = Initiator::new(&d);
    let Step::Respond(r) = chap_exchange(&mut i, "wonderland12", None) else {
        panic!("CHAP refused");
    };
    assert!(r.response.transit && r.response.nsg == 1);
    assert!(parse_pairs(&r.data).unwrap().is_empty());
    let a = i.done(1, OPERATIONAL);
    assert_eq!(a.proved, Some(creds(false)));
    assert_eq!(a.chap, Some(ChapAlgorithm::Md5));
    assert_eq!(a.statsn, EXP_STATSN + 4);
}

#[test]
fn mutual_chap_login() {
    let d = dir(Some(true), Some(creds(true)));
    let mut i = Initiator::new(&d);
    let mine = (9, [0x5a; 16]);
    let Step::Respond(r) = chap_exchange(&mut i, "wonderland12", Some(mine)) else {
        panic!("CHAP refused");
    };
    assert!(r.response.transit);
    let pairs = parse_pairs(&r.data).unwrap();
    assert_eq!(get(&pairs, "CHAP_N").as_deref(), Some("tgt"));
    assert_eq!(
        decode_binary(&get(&pairs, "CHAP_R").unwrap()).unwrap(),
        ChapAlgorithm::Md5.response(9, b"lookingglass", &mine.1)
    );
    assert_eq!(i.done(1, OPERATIONAL).proved, Some(creds(true)));
}

#[test]
fn wrong_chap_password_fails() {
    let d = dir(Some(true), Some(creds(false)));
    let mut i = Initiator::new(&d);
    let Step::Fail(f) = chap_exchange(&mut i, "wrong-secret", None) else {
        panic!("login goes on");
    };
    assert_eq!(f.status, LoginStatus::AuthFailed);
    let r = f.reply.unwrap().response;
    assert_eq!((r.status_class, r.status_detail, r.tsih), (2, 1, 0));
    // Mutual CHAP asked of a target without mutual credentials.
    let mut i = Initiator::new(&d);
    let Step::Fail(f) = chap_exchange(&mut i, "wonderland12", Some((9, [1; 16]))) else {
        panic!("login goes on");
    };
    assert_eq!(f.status, LoginStatus::AuthFailed);
}

#[test]
fn chap_required_refuses_none_and_skipping_security() {
    let d = dir(Some(true), Some(creds(false)));
    let mut i = Initiator::new(&d);
    let mut keys = security(IQN);
    keys[3].1 = "None";
    assert_eq!(i.refused(0, 1, true, &keys), LoginStatus::AuthFailed);
    let mut i = Initiator::new(&d);
    assert_eq!(i.refused(1, 3, true, &keys[..3]), LoginStatus::AuthFailed);
    // CHAP keys outside a CHAP exchange are an initiator error.
    let d = dir(None, None);
    let mut i = Initiator::new(&d);
    keys.push(("CHAP_A", "5"));
    assert_eq!(i.refused(0, 1, false, &keys), LoginStatus::InitiatorError);
}

#[test]
fn discovery_session() {
    let d = dir(None, None);
    let mut i = Initiator::new(&d);
    let keys = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Discovery"),
        ("AuthMethod", "None"),
    ];
    let (r, pairs) = i.ok(0, 1, true, &keys);
    assert!(r.transit);
    assert_eq!(get(&pairs, "TargetPortalGroupTag"), None);
    // The session type may be repeated, never changed.
    let a = i.done(1, &[("SessionType", "Discovery"), ("HeaderDigest", "None")]);
    assert!(a.discovery);
    assert!(a.target.is_none() && a.tpg.is_none());
    assert_eq!(a.window, 128);
    // With discovery credentials, SendTargets needs CHAP.
    let mut d = dir(None, None);
    d.discovery = Some(creds(false));
    let mut i = Initiator::new(&d);
    assert_eq!(i.refused(0, 1, true, &keys), LoginStatus::AuthFailed);
    // A discovery session is never added to.
    let d = dir(None, None);
    let mut i = Initiator::new(&d);
    i.tsih = 3;
    assert_eq!(
        i.refused(0, 1, true, &keys),
        LoginStatus::SessionDoesNotExist
    );
}

#[test]
fn repeated_declarations_as_libiscsi_sends_them() {
    let d = dir(None, None);
    let mut i = Initiator::new(&d);
    let mut keys = security(IQN);
    keys.insert(1, ("InitiatorAlias", "host"));
    let (r, pairs) = i.ok(0, 1, true, &keys);
    assert!(r.transit);
    assert_eq!(get(&pairs, "AuthMethod").as_deref(), Some("None"));
    // libiscsi states who logs in to what again in its first operational
    // PDU; the same values change nothing.
    let mut again = keys[..4].to_vec();
    again.extend_from_slice(OPERATIONAL);
    let a = i.done(1, &again);
    assert_eq!(a.initiator_name, INITIATOR);
    // Another value would change who logs in: refused.
    let mut i = Initiator::new(&d);
    i.ok(0, 1, true, &keys);
    let other = [("InitiatorName", "iqn.2026-11.org.example:other")];
    assert_eq!(i.refused(1, 3, true, &other), LoginStatus::InitiatorError);
}

#[test]
fn initiator_name_is_checked() {
    let d = dir(None, None);
    let mut keys = security(IQN);
    for bad in ["not a name", "iqn.bogus", ""] {
        let mut i = Initiator::new(&d);
        keys[0].1 = bad;
        let want = match bad {
            "" => LoginStatus::MissingParameter,
            _ => LoginStatus::BadInitiatorName,
        };
        assert_eq!(i.refused(0, 1, true, &keys), want, "{bad:?}");
        assert_eq!(want.code().0, 2, "an initiator error on the wire");
        assert_eq!(i.m.initiator(), "");
    }
    let mut i = Initiator::new(&d);
    assert_eq!(
        i.refused(0, 1, true, &keys[1..]),
        LoginStatus::MissingParameter
    );
}

/// The status the first request of a login with this TSIH and
/// VersionMin gets.
fn first_refused(d: &Dir, tsih: u16, version_min: u8, keys: &[(&str, &str)]) -> LoginStatus {
    let mut i = Initiator::new(d);
    i.tsih = tsih;
    i.version_min = version_min;
    i.refused(0, 1, true, keys)
}

#[test]
fn who_logs_in_to_what_is_checked() {
    use LoginStatus::*;
    let mut d = dir(None, None);
    let nope = security("iqn.2026-11.org.example:nope");
    assert_eq!(first_refused(&d, 0, 0, &nope), TargetNotFound);
    let keys = security(IQN);
    assert_eq!(first_refused(&d, 0, 0, &keys[..2]), MissingParameter);
    assert_eq!(first_refused(&d, 0, 1, &keys), UnsupportedVersion);
    // A TSIH adds a connection to a session: refused either way.
    assert_eq!(first_refused(&d, 7, 0, &keys), SessionDoesNotExist);
    let key = SessionKey {
        initiator: INITIATOR.into(),
        isid: Initiator::new(&d).isid,
        target: IQN.into(),
        tpgt: 1,
    };
    d.sessions.push((key, 7));
    assert_eq!(first_refused(&d, 7, 0, &keys), TooManyConnections);
    // Demo mode off: only initiators with an ACL get in.
    let mut t = (*d.targets[0]).clone();
    t.tpgs[0].attributes.generate_node_acls = false;
    d.targets = vec![Arc::new(t.clone())];
    assert_eq!(first_refused(&d, 0, 0, &keys), NotAuthorized);
    t.tpgs[0].acls.push(AclConfig {
        initiator: INITIATOR.into(),
        luns: Arc::new(target_core::LunTable::default()),
        chap: None,
        attributes: Default::default(),
    });
    d.targets = vec![Arc::new(t)];
    let mut i = Initiator::new(&d);
    i.ok(0, 1, true, &keys);
    assert!(i.done(1, OPERATIONAL).acl);
}

#[test]
fn stage_rules() {
    let d = dir(None, None);
    // Transit to the stage it is in, and transit with continue.
    for (csg, nsg, cont) in [(0, 0, false), (1, 1, false), (0, 2, false), (0, 1, true)] {
        let mut i = Initiator::new(&d);
        let bhs = i.request(csg, nsg, true, cont);
        let Step::Fail(f) = i.m.handle(i.now, &bhs, &[]) else {
            panic!("{csg} {nsg} {cont}");
        };
        assert_eq!(f.status, LoginStatus::InitiatorError);
    }
    // Back to the security stage after leaving it.
    let mut i = Initiator::new(&d);
    i.ok(0, 1, true, &security(IQN));
    assert_eq!(i.refused(0, 1, true, &[]), LoginStatus::InitiatorError);
    // Another ISID in the middle of a login.
    let mut i = Initiator::new(&d);
    i.ok(0, 1, false, &security(IQN));
    i.isid[5] = 1;
    assert_eq!(i.refused(0, 1, true, &[]), LoginStatus::InitiatorError);
}

#[test]
fn continued_text_is_joined() {
    let d = dir(None, None);
    let mut i = Initiator::new(&d);
    let all = security(IQN);
    let data = encode_pairs(
        &all.iter()
            .map(|(k, v)| Pair::new(*k, *v))
            .collect::<Vec<_>>(),
    );
    let (a, b) = data.split_at(20);
    let Step::Respond(r) = i.m.handle(i.now, &i.request(0, 1, false, true), a) else {
        panic!("first part refused");
    };
    assert!(r.data.is_empty() && !r.response.transit);
    let Step::Respond(r) = i.m.handle(i.now, &i.request(0, 1, true, false), b) else {
        panic!("second part refused");
    };
    assert!(r.response.transit);
    assert_eq!(r.response.sn.statsn, EXP_STATSN + 1);
}

#[test]
fn other_pdus_during_login() {
    let d = dir(None, None);
    let mut nop = Bhs::default();
    NopOut::parse(&Bhs::default()).write_to(&mut nop);
    // As the first PDU: closed without an answer.
    let mut i = Initiator::new(&d);
    let Step::Fail(f) = i.m.handle(i.now, &nop, &[]) else {
        panic!("accepted");
    };
    assert!(f.reply.is_none());
    // Later: refused with "invalid during login".
    let mut i = Initiator::new(&d);
    i.ok(0, 1, false, &security(IQN));
    let Step::Fail(f) = i.m.handle(i.now, &nop, &[]) else {
        panic!("accepted");
    };
    assert_eq!(f.status, LoginStatus::InvalidDuringLogin);
    let r = f.reply.unwrap().response;
    assert_eq!((r.status_class, r.status_detail), (2, 0x0b));
    assert_eq!(r.sn.statsn, EXP_STATSN + 1);
}

/// An answer longer than the login MaxRecvDataSegmentLength (8192) goes
/// out in pieces with C set and T clear; the initiator fetches each with an
/// empty request and only the last piece ends the login. The request, as
/// long, comes in two PDUs joined with C.
#[test]
fn long_answers_are_split_with_the_continue_bit() {
    let d = dir(Some(false), None);
    let mut i = Initiator::new(&d);
    i.ok(0, 1, true, &security(IQN));
    let unknown: Vec<String> = (0..240)
        .map(|n| format!("X-org.example.{n:03}{}", "k".repeat(44)))
        .collect();
    let mut pairs: Vec<Pair> = OPERATIONAL.iter().map(|(k, v)| Pair::new(*k, *v)).collect();
    pairs.extend(unknown.iter().map(|k| Pair::new(k.as_str(), "v")));
    let text = encode_pairs(&pairs);
    assert!(text.len() > 8192);
    let (head, tail) = text.split_at(8192);
    let bhs = i.request(1, 3, false, true);
    let Step::Respond(r) = i.m.handle(i.now, &bhs, head) else {
        panic!("continued request not acknowledged");
    };
    assert!(r.data.is_empty() && !r.response.cont && !r.response.transit);
    let mut step = i.m.handle(i.now, &i.request(1, 3, true, false), tail);
    let mut got = Vec::new();
    let mut pieces = 0;
    let last = loop {
        pieces += 1;
        match step {
            Step::Respond(r) => {
                let resp = r.response;
                assert!(resp.cont && !resp.transit, "{resp:?}");
                assert_eq!(r.data.len(), 8192);
                assert_eq!((resp.status_class, resp.csg), (0, 1));
                got.extend_from_slice(&r.data);
                // A piece fetch carrying text is a protocol error, so
                // only empty requests are sent.
                step = i.m.handle(i.now, &i.request(1, 3, true, false), &[]);
            }
            Step::Done(a) => break *a,
            Step::Fail(f) => panic!("login refused: {:?}", f.status),
        }
    };
    assert!(pieces >= 3, "{pieces} pieces");
    let r = last.reply.response;
    assert!(r.transit && !r.cont);
    assert_eq!((r.csg, r.nsg), (1, 3));
    assert!(last.reply.data.len() <= 8192);
    got.extend_from_slice(&last.reply.data);
    let answers = parse_pairs(&got).unwrap();
    for k in &unknown {
        assert_eq!(get(&answers, k).as_deref(), Some("NotUnderstood"), "{k}");
    }
    assert_eq!(get(&answers, "HeaderDigest").as_deref(), Some("None"));
    // Every response took its own StatSN.
    assert_eq!(r.sn.statsn, EXP_STATSN + 2 + pieces as u32 - 1);
}

/// While an answer is being fetched, a request with text is refused.
#[test]
fn text_while_fetching_a_long_answer_is_refused() {
    let d = dir(Some(false), None);
    let mut i = Initiator::new(&d);
    i.ok(0, 1, true, &security(IQN));
    let unknown: Vec<String> = (0..200)
        .map(|n| format!("X-org.example.{n:03}{}", "k".repeat(44)))
        .collect();
    let keys: Vec<(&str, &str)> = unknown.iter().map(|k| (k.as_str(), "v")).collect();
    // A piece may end inside a pair: not parsed here.
    let Step::Respond(r) = i.send(1, 3, true, &keys) else {
        panic!("no first piece");
    };
    assert!(r.response.cont);
    assert_eq!(
        i.refused(1, 3, true, &[("HeaderDigest", "None")]),
        LoginStatus::InitiatorError
    );
}
