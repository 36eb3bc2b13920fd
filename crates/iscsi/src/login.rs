//! The login phase (RFC 7143 §6.3, §11.12-11.13): stage checks (CSG/NSG,
//! transit, continue), text continuation, target and TPG lookup, security
//! then operational negotiation through `iscsi_wire::negotiate`, TSIH
//! assignment with session reinstatement, and login status classes and
//! details for every refusal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iscsi_wire::chap::{is_chap_key, ChapCredentials, ChapServer, CHALLENGE_LEN};
use iscsi_wire::negotiate::{AuthMethod, Negotiator, SessionType, Stage, TargetOffer};
use iscsi_wire::request::LoginRequest;
use iscsi_wire::response::{LoginResponse, SnFields};
use iscsi_wire::text::{encode_pairs, parse_pairs, Pair, TextAccumulator};
use iscsi_wire::{parse_frame, Bhs, Digests, Opcode};

use crate::conn::{is_timeout, Io};
use crate::server::{SessionKey, Shared, STOP_NONE};
use crate::sessions::{find_acl, table_for, SessionLive};
use crate::{AclConfig, TargetConfig, TpgConfig};

/// Largest login PDU data segment accepted (RFC default is 8192; some
/// initiators send more with long CHAP values).
const LOGIN_MAX_DATA: u32 = 64 * 1024;
const DEFAULT_LOGIN_TIMEOUT: u64 = 15;
pub const DEFAULT_CMDSN_DEPTH: u32 = 128;

/// Login status class/detail (RFC 7143 §11.13.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStatus {
    InitiatorError,
    AuthFailed,
    /// No ACL for this initiator and no demo mode (LIO: TGT_FORBIDDEN).
    NotAuthorized,
    TargetNotFound,
    UnsupportedVersion,
    TooManyConnections,
    MissingParameter,
    SessionDoesNotExist,
    InvalidDuringLogin,
    /// The session being reinstated still has commands running (03/01:
    /// the initiator retries later).
    ServiceUnavailable,
}

impl LoginStatus {
    /// (class, detail) on the wire.
    pub fn code(self) -> (u8, u8) {
        match self {
            LoginStatus::InitiatorError => (2, 0x00),
            LoginStatus::AuthFailed => (2, 0x01),
            LoginStatus::NotAuthorized => (2, 0x02),
            LoginStatus::TargetNotFound => (2, 0x03),
            LoginStatus::UnsupportedVersion => (2, 0x05),
            LoginStatus::TooManyConnections => (2, 0x06),
            LoginStatus::MissingParameter => (2, 0x07),
            LoginStatus::SessionDoesNotExist => (2, 0x0a),
            LoginStatus::InvalidDuringLogin => (2, 0x0b),
            LoginStatus::ServiceUnavailable => (3, 0x01),
        }
    }
}

/// What a successful login hands to the session.
pub struct LoginOutcome {
    pub target: Option<Arc<TargetConfig>>,
    pub tpg: Option<TpgConfig>,
    pub key: Option<SessionKey>,
    /// Shared with the server registry (normal sessions only).
    pub live: Option<Arc<SessionLive>>,
    pub tsih: u16,
    pub cid: u16,
    pub initiator_name: String,
    pub neg: Negotiator,
    pub discovery: bool,
    pub statsn: u32,
    pub exp_cmdsn: u32,
    pub window: u32,
}

/// The TPG a connection reached: the enabled one with a portal matching the
/// local address (wildcard portals match any address with their port),
/// otherwise the first enabled one.
fn pick_tpg(t: &TargetConfig, local: SocketAddr) -> Option<TpgConfig> {
    let enabled = || t.tpgs.iter().filter(|g| g.enable);
    enabled()
        .find(|g| {
            g.portals
                .iter()
                .any(|p| *p == local || (p.ip().is_unspecified() && p.port() == local.port()))
        })
        .or_else(|| enabled().next())
        .cloned()
}

/// CHAP identifier and challenge from the kernel's random source.
fn random_challenge() -> (u8, [u8; CHALLENGE_LEN]) {
    use std::io::Read;
    let mut b = [0u8; CHALLENGE_LEN + 1];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        // Never expected on Linux; still never reuse a fixed challenge.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (i, x) in b.iter_mut().enumerate() {
            *x = (t >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(151);
        }
    }
    let mut c = [0u8; CHALLENGE_LEN];
    c.copy_from_slice(&b[1..]);
    (b[0], c)
}

/// Who authenticates how: the credentials to check and whether CHAP is
/// required, for an initiator with or without an ACL.
struct AuthPolicy {
    creds: Option<ChapCredentials>,
    /// `Some`: decided by the ACL; `None`: the TPG's `authentication`.
    required: Option<bool>,
}

fn auth_policy(tpg: &TpgConfig, acl: Option<&AclConfig>) -> AuthPolicy {
    match acl {
        Some(a) => AuthPolicy {
            creds: a.chap.clone(),
            required: a
                .attributes
                .authentication
                .or_else(|| a.chap.is_some().then_some(true)),
        },
        None => AuthPolicy {
            creds: tpg.chap.clone(),
            required: None,
        },
    }
}

/// What a new login of an initiator (with `acl` or without) must prove:
/// `None` when a login without CHAP is accepted, else the credentials CHAP
/// checks (`Some(None)`: CHAP required with nothing to check against, so
/// no login passes). Live sessions are held to the same rule when the
/// configuration changes under them (`sessions::live_access`).
pub(crate) fn login_requires(
    tpg: &TpgConfig,
    acl: Option<&AclConfig>,
) -> Option<Option<ChapCredentials>> {
    let offer = build_offer_for(Some(tpg), acl);
    (!offer.auth_methods.contains(&AuthMethod::None)).then(|| auth_policy(tpg, acl).creds)
}

fn build_offer(tpg: Option<&TpgConfig>) -> TargetOffer {
    build_offer_for(tpg, None)
}

fn build_offer_for(tpg: Option<&TpgConfig>, acl: Option<&AclConfig>) -> TargetOffer {
    let mut offer = TargetOffer::default();
    if let Some(t) = tpg {
        let policy = auth_policy(t, acl);
        offer = t.offer.clone();
        // What this fabric implements caps what a configuration may offer.
        offer.error_recovery_level = 0;
        offer.max_connections = 1;
        // As in LIO, the `authentication` attribute decides over the
        // AuthMethod parameter (whose targetcli default is "CHAP,None").
        // An ACL's own rule (credentials set, or its attribute) decides
        // before the TPG's.
        match policy.required.or(t.attributes.authentication) {
            Some(true) => offer.auth_methods = vec![AuthMethod::Chap],
            Some(false) => offer.auth_methods = vec![AuthMethod::None],
            None => {}
        }
        // Never pick CHAP when there is nothing to check it against and
        // None is acceptable.
        if policy.creds.is_none() && offer.auth_methods.contains(&AuthMethod::None) {
            offer.auth_methods.retain(|m| *m != AuthMethod::Chap);
        }
    }
    offer
}

struct State {
    first: Option<LoginRequest>,
    stage: Option<u8>,
    acc: TextAccumulator,
    neg: Option<Negotiator>,
    target: Option<Arc<TargetConfig>>,
    tpg: Option<TpgConfig>,
    statsn: u32,
    window: u32,
    initiator: String,
    /// Credentials this login is checked against (ACL, TPG or discovery).
    creds: Option<ChapCredentials>,
    /// The initiator has a node ACL in the TPG.
    acl: bool,
    chap: Option<ChapServer>,
}

/// Read one login PDU (copied out: login is not on the data path).
fn read_pdu(io: &mut Io, deadline: Instant) -> Option<(Bhs, Vec<u8>)> {
    loop {
        match parse_frame(io.rx.data(), Digests::default(), LOGIN_MAX_DATA) {
            Ok(Some(f)) => {
                let out = (f.bhs, f.data.to_vec());
                let n = f.total_len;
                io.rx.consume(n);
                return Some(out);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "bad PDU during login");
                return None;
            }
        }
        if Instant::now() > deadline || io.stop_requested() != STOP_NONE {
            return None;
        }
        let need = io.pending_need(Digests::default());
        match io.rx.fill(&mut io.stream, need) {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return None,
        }
    }
}

fn respond(io: &mut Io, st: &mut State, req: &LoginRequest, r: LoginResponse, data: &[u8]) -> bool {
    let mut b = Bhs::default();
    r.write_to(&mut b);
    io.tx.push_pdu(&b, data, Digests::default());
    let _ = req;
    st.statsn = st.statsn.wrapping_add(1);
    io.flush().is_ok()
}

fn fail(io: &mut Io, st: &mut State, req: &LoginRequest, status: LoginStatus, peer: SocketAddr) {
    let (class, detail) = status.code();
    tracing::warn!(initiator = ?st.initiator, %peer,
        target = st.target.as_ref().map(|t| t.iqn.as_str()).unwrap_or(""),
        class, detail, ?status, "login failed");
    let r = LoginResponse {
        transit: false,
        cont: false,
        csg: req.csg,
        nsg: 0,
        version_max: 0,
        version_active: 0,
        isid: req.isid,
        tsih: 0,
        itt: req.itt,
        sn: SnFields {
            statsn: st.statsn,
            exp_cmdsn: req.cmdsn,
            max_cmdsn: req.cmdsn,
        },
        status_class: class,
        status_detail: detail,
    };
    respond(io, st, req, r, &[]);
}

/// Run the login phase; `None` when the connection must close.
pub fn run(
    shared: &Arc<Shared>,
    io: &mut Io,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<LoginOutcome> {
    let mut st = State {
        first: None,
        stage: None,
        acc: TextAccumulator::default(),
        neg: None,
        target: None,
        tpg: None,
        statsn: 0,
        window: DEFAULT_CMDSN_DEPTH,
        initiator: String::new(),
        creds: None,
        acl: false,
        chap: None,
    };
    let mut deadline = Instant::now() + Duration::from_secs(DEFAULT_LOGIN_TIMEOUT);
    loop {
        let (bhs, data) = read_pdu(io, deadline)?;
        if bhs.opcode() != Opcode::LOGIN_REQUEST {
            tracing::warn!(%peer, opcode = ?bhs.opcode(), "non-login PDU during login");
            if let Some(first) = st.first {
                fail(io, &mut st, &first, LoginStatus::InvalidDuringLogin, peer);
            }
            return None;
        }
        let req = LoginRequest::parse(&bhs);
        let first = match st.first {
            None => {
                st.first = Some(req);
                st.statsn = req.exp_statsn;
                if req.version_min > 0 {
                    fail(io, &mut st, &req, LoginStatus::UnsupportedVersion, peer);
                    return None;
                }
                req
            }
            Some(f) => f,
        };
        if req.isid != first.isid || req.tsih != first.tsih || req.cid != first.cid {
            fail(io, &mut st, &req, LoginStatus::InitiatorError, peer);
            return None;
        }
        let stage_ok = req.csg <= 1
            && st.stage.is_none_or(|s| s == req.csg)
            && !(req.transit && req.cont)
            && (!req.transit || (req.nsg > req.csg && req.nsg != 2));
        if !stage_ok {
            fail(io, &mut st, &req, LoginStatus::InitiatorError, peer);
            return None;
        }
        st.stage = Some(req.csg);
        let text = match st.acc.push(&data, req.cont) {
            Ok(Some(t)) => t,
            Ok(None) => {
                // Ask for the rest of a continued request.
                let r = reply(&st, &req, false, req.tsih);
                if !respond(io, &mut st, &req, r, &[]) {
                    return None;
                }
                continue;
            }
            Err(_) => {
                fail(io, &mut st, &req, LoginStatus::InitiatorError, peer);
                return None;
            }
        };
        let Ok(pairs) = parse_pairs(&text) else {
            fail(io, &mut st, &req, LoginStatus::InitiatorError, peer);
            return None;
        };
        let mut extra = Vec::new();
        if st.neg.is_none() {
            match first_request(shared, &mut st, &req, &pairs, local) {
                Ok(e) => extra = e,
                Err(s) => {
                    fail(io, &mut st, &req, s, peer);
                    return None;
                }
            }
            let secs = st.tpg.as_ref().map_or(DEFAULT_LOGIN_TIMEOUT, |t| {
                u64::from(t.attributes.login_timeout)
            });
            deadline = Instant::now() + Duration::from_secs(secs.clamp(1, 3600));
        }
        let neg = st.neg.as_mut()?;
        let stage = if req.csg == 0 {
            Stage::Security
        } else {
            Stage::Operational
        };
        tracing::debug!(csg = req.csg, nsg = req.nsg, transit = req.transit,
            keys = ?pairs.iter().filter(|p| !is_chap_key(&p.key)).collect::<Vec<_>>(),
            "login request");
        let (chap_pairs, pairs): (Vec<Pair>, Vec<Pair>) =
            pairs.into_iter().partition(|p| is_chap_key(&p.key));
        let mut answers = match neg.respond(&pairs, stage) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "negotiation error");
                fail(io, &mut st, &req, LoginStatus::InitiatorError, peer);
                return None;
            }
        };
        answers.extend(extra);
        let auth_needed = !neg.offer.auth_methods.contains(&AuthMethod::None);
        if req.csg == 0 && neg.auth_method == Some(AuthMethod::Chap) {
            let chap = match &mut st.chap {
                Some(c) => c,
                // Empty secrets would let anyone compute the response.
                None => match st
                    .creds
                    .clone()
                    .filter(|c| !c.userid.is_empty() && !c.password.is_empty())
                {
                    Some(creds) => {
                        let (id, challenge) = random_challenge();
                        st.chap.insert(ChapServer::new(creds, id, challenge))
                    }
                    None => {
                        tracing::warn!("CHAP required but no userid/password configured");
                        fail(io, &mut st, &req, LoginStatus::AuthFailed, peer);
                        return None;
                    }
                },
            };
            match chap.step(&chap_pairs) {
                Ok(a) => answers.extend(a),
                Err(e) => {
                    tracing::warn!(error = %e, "CHAP authentication failed");
                    fail(io, &mut st, &req, LoginStatus::AuthFailed, peer);
                    return None;
                }
            }
        } else if !chap_pairs.is_empty() {
            fail(io, &mut st, &req, LoginStatus::InitiatorError, peer);
            return None;
        }
        // Leaving the security stage (or skipping it) needs satisfied auth;
        // while CHAP is still in progress the target holds the transit.
        let auth_ok = !auth_needed || st.chap.as_ref().is_some_and(ChapServer::is_done);
        let mut transit = req.transit;
        if !auth_ok && (req.csg == 1 || (req.transit && st.chap.is_none())) {
            fail(io, &mut st, &req, LoginStatus::AuthFailed, peer);
            return None;
        }
        if !auth_ok {
            transit = false;
        }
        let neg = st.neg.as_mut()?;
        if req.csg == 1 {
            answers.extend(neg.declarations());
        }
        let done = transit && req.nsg == 3;
        let discovery = neg.session_type == Some(SessionType::Discovery);
        let mut tsih = req.tsih;
        let mut key = None;
        let mut live = None;
        if done {
            if let (Some(t), Some(g), false) = (&st.target, &st.tpg, discovery) {
                let k = SessionKey {
                    initiator: st.initiator.clone(),
                    isid: first.isid,
                    target: t.iqn.clone(),
                    tpgt: g.tag,
                };
                let table =
                    table_for(g, &st.initiator).map_or_else(|| Arc::clone(&g.luns), |(t, _)| t);
                let proved = match st.chap.as_ref().is_some_and(ChapServer::is_done) {
                    true => st.creds.clone(),
                    false => None,
                };
                let l = Arc::new(SessionLive::new(
                    table,
                    local,
                    first.cid,
                    st.acl,
                    proved,
                    neg.params.clone(),
                ));
                let Some(t) =
                    shared.register_session(k.clone(), io.handle.id, peer, Arc::clone(&l))
                else {
                    fail(io, &mut st, &req, LoginStatus::ServiceUnavailable, peer);
                    return None;
                };
                tsih = t;
                // A change pushed during the login missed this session:
                // held to the rule of live sessions (it authenticated
                // against the configuration the login started with).
                shared.refresh_session(&k, io.handle.id, &l);
                key = Some(k);
                live = Some(l);
            } else {
                tsih = shared.alloc_tsih();
            }
        }
        let mut r = reply(&st, &req, transit, tsih);
        if transit {
            r.nsg = req.nsg;
        }
        tracing::debug!(transit, answers = ?answers.iter().filter(|p| !is_chap_key(&p.key)).collect::<Vec<_>>(),
            "login response");
        let body = encode_pairs(&answers);
        if !respond(io, &mut st, &req, r, &body) {
            return None;
        }
        if transit {
            st.stage = Some(req.nsg);
        }
        if done {
            let neg = st.neg.take()?;
            tracing::info!(initiator = ?st.initiator, %peer,
                target = st.target.as_ref().map(|t| t.iqn.as_str()).unwrap_or("(discovery)"),
                tsih, chap = ?st.chap.as_ref().map(ChapServer::algorithm),
                header_digest = neg.params.header_digest,
                data_digest = neg.params.data_digest, "login succeeded");
            return Some(LoginOutcome {
                target: st.target.clone(),
                tpg: st.tpg.clone(),
                key,
                live,
                tsih,
                cid: first.cid,
                initiator_name: st.initiator.clone(),
                neg,
                discovery,
                statsn: st.statsn,
                exp_cmdsn: req.cmdsn,
                window: st.window,
            });
        }
    }
}

fn reply(st: &State, req: &LoginRequest, transit: bool, tsih: u16) -> LoginResponse {
    LoginResponse {
        transit,
        cont: false,
        csg: req.csg,
        nsg: 0,
        version_max: 0,
        version_active: 0,
        isid: req.isid,
        tsih,
        itt: req.itt,
        sn: SnFields {
            statsn: st.statsn,
            exp_cmdsn: req.cmdsn,
            max_cmdsn: req.cmdsn.wrapping_add(st.window).wrapping_sub(1),
        },
        status_class: 0,
        status_detail: 0,
    }
}

/// The start of a peer's string for a log line (written with `?`, which
/// escapes control characters): an 8 KiB name must not flood the log.
fn truncated(s: &str) -> &str {
    let mut end = s.len().min(256);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Checks of the first login request: who is logging in to what. Returns
/// keys the target adds to its first answer.
fn first_request(
    shared: &Arc<Shared>,
    st: &mut State,
    req: &LoginRequest,
    pairs: &[Pair],
    local: SocketAddr,
) -> Result<Vec<Pair>, LoginStatus> {
    let get = |k: &str| pairs.iter().find(|p| p.key == k).map(|p| p.value.as_str());
    let initiator = get("InitiatorName").filter(|v| !v.is_empty());
    let Some(initiator) = initiator else {
        return Err(LoginStatus::MissingParameter);
    };
    // The name reaches logs, the session list and the APTPL file: only
    // well-formed names (the rule `acls create` applies) get that far.
    if !iscsi_wire::name::valid_name(initiator) {
        tracing::warn!(initiator = ?truncated(initiator), "invalid InitiatorName");
        return Err(LoginStatus::InitiatorError);
    }
    st.initiator = initiator.to_string();
    let discovery = match get("SessionType") {
        None | Some("Normal") => false,
        Some("Discovery") => true,
        Some(_) => return Err(LoginStatus::InitiatorError),
    };
    let mut extra = Vec::new();
    if !discovery {
        let Some(name) = get("TargetName").filter(|v| !v.is_empty()) else {
            return Err(LoginStatus::MissingParameter);
        };
        let target = shared.target(name).ok_or(LoginStatus::TargetNotFound)?;
        let tpg = pick_tpg(&target, local).ok_or(LoginStatus::TargetNotFound)?;
        let acl = find_acl(&tpg, initiator);
        if table_for(&tpg, initiator).is_none() {
            tracing::warn!(?initiator, target = %target.iqn, tpg = tpg.tag,
                "initiator has no ACL in this TPG and demo mode is off");
            return Err(LoginStatus::NotAuthorized);
        }
        if req.tsih != 0 {
            // Adding a connection to a session: MaxConnections is 1.
            let key = SessionKey {
                initiator: initiator.to_string(),
                isid: req.isid,
                target: target.iqn.clone(),
                tpgt: tpg.tag,
            };
            return Err(if shared.session_exists(&key, req.tsih) {
                LoginStatus::TooManyConnections
            } else {
                LoginStatus::SessionDoesNotExist
            });
        }
        st.window = tpg.attributes.default_cmdsn_depth.clamp(1, 4096);
        extra.push(Pair::new("TargetPortalGroupTag", tpg.tag.to_string()));
        st.neg = Some(Negotiator::new(build_offer_for(Some(&tpg), acl)));
        st.creds = auth_policy(&tpg, acl).creds;
        st.acl = acl.is_some();
        st.target = Some(target);
        st.tpg = Some(tpg);
    } else {
        if req.tsih != 0 {
            return Err(LoginStatus::SessionDoesNotExist);
        }
        let mut offer = build_offer(None);
        // rtslib's discovery_enable_auth: CHAP required for SendTargets.
        st.creds = shared.discovery_auth();
        if st.creds.is_some() {
            offer.auth_methods = vec![AuthMethod::Chap];
        }
        st.neg = Some(Negotiator::new(offer));
    }
    // A later PDU may repeat SessionType but never change it (absent from
    // the first request, it is Normal).
    if let Some(neg) = st.neg.as_mut() {
        neg.session_type = Some(if discovery {
            SessionType::Discovery
        } else {
            SessionType::Normal
        });
    }
    Ok(extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TPG with `authentication` (`None`: not in the file), CHAP
    /// credentials or not, and these parameters.
    fn tpg(auth: Option<bool>, creds: bool, params: &[(&str, &str)]) -> TpgConfig {
        TpgConfig {
            tag: 1,
            relative_port_id: 1,
            enable: true,
            portals: vec![],
            luns: Arc::new(target_core::LunTable::default()),
            acls: vec![],
            attributes: config::TpgAttributes {
                authentication: auth,
                ..Default::default()
            },
            chap: creds.then(|| ChapCredentials {
                userid: "u".into(),
                password: "p".into(),
                mutual_userid: None,
                mutual_password: None,
            }),
            offer: crate::tpg_offer(params.iter().copied()).unwrap(),
        }
    }

    #[test]
    fn auth_methods_offered() {
        use AuthMethod::{Chap, None as No};
        let both = [("AuthMethod", "CHAP,None")];
        type Case<'a> = (
            Option<bool>,
            bool,
            &'a [(&'a str, &'a str)],
            Vec<AuthMethod>,
        );
        let cases: Vec<Case> = vec![
            (None, false, &[], vec![No]),
            (Some(false), false, &both, vec![No]),
            (None, false, &both, vec![No]),
            (None, true, &both, vec![Chap, No]),
            (Some(true), false, &[], vec![Chap]),
            (Some(true), true, &[("AuthMethod", "None")], vec![Chap]),
        ];
        for (a, c, p, want) in cases {
            assert_eq!(
                build_offer(Some(&tpg(a, c, p))).auth_methods,
                want,
                "{a:?} {c} {p:?}"
            );
        }
    }

    #[test]
    fn tpg_parameters_reach_the_offer() {
        let o = build_offer(Some(&tpg(
            None,
            false,
            &[("MaxRecvDataSegmentLength", "8192"), ("InitialR2T", "Yes")],
        )));
        assert_eq!(o.max_recv_data_segment_length, 8192);
        assert!(o.initial_r2t);
        // ERL and MC/S beyond what is implemented are never offered.
        let o = build_offer(Some(&tpg(
            None,
            false,
            &[("ErrorRecoveryLevel", "2"), ("MaxConnections", "8")],
        )));
        assert_eq!((o.error_recovery_level, o.max_connections), (0, 1));
        assert_eq!(build_offer(None), TargetOffer::default());
    }

    #[test]
    fn status_codes_table() {
        let cases = [
            (LoginStatus::InitiatorError, (2, 0)),
            (LoginStatus::AuthFailed, (2, 1)),
            (LoginStatus::NotAuthorized, (2, 2)),
            (LoginStatus::TargetNotFound, (2, 3)),
            (LoginStatus::UnsupportedVersion, (2, 5)),
            (LoginStatus::TooManyConnections, (2, 6)),
            (LoginStatus::MissingParameter, (2, 7)),
            (LoginStatus::SessionDoesNotExist, (2, 10)),
            (LoginStatus::InvalidDuringLogin, (2, 11)),
        ];
        for (s, c) in cases {
            assert_eq!(s.code(), c, "{s:?}");
        }
    }
}
