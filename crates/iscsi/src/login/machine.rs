//! The login phase as a sans-I/O state machine (RFC 7143 §6.3,
//! §11.12-11.13): one login request PDU in, one response (or the end of
//! the login) out. It checks stages (CSG/NSG, transit, continue), joins
//! continued text, looks the target and TPG up, runs security then
//! operational negotiation through `iscsi_wire::negotiate` and CHAP, and
//! picks the status class and detail of every refusal.
//!
//! No socket, clock or thread: the driver (`login::run`) reads PDUs, passes
//! the current time in, writes what comes out and enforces `deadline`.
//! Randomness for CHAP challenges comes from the context. The machine reads
//! the server's state (targets, sessions) but never changes it: a finished
//! login is handed back as `Accepted`, and the driver registers the session
//! and puts the TSIH it got into the last response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iscsi_wire::chap::{is_chap_key, ChapAlgorithm, ChapCredentials, ChapServer, CHALLENGE_LEN};
use iscsi_wire::negotiate::{AuthMethod, Negotiator, SessionType, Stage};
use iscsi_wire::request::LoginRequest;
use iscsi_wire::response::{LoginResponse, SnFields};
use iscsi_wire::text::{encode_pairs, parse_pairs, Pair, TextAccumulator};
use iscsi_wire::{Bhs, Opcode};

use super::policy::{auth_policy, build_offer, build_offer_for, pick_tpg};
use crate::server::SessionKey;
use crate::sessions::{find_acl, table_for};
use crate::{TargetConfig, TpgConfig};

/// Login timeout until the first request named a TPG (whose
/// `login_timeout` applies from then on).
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_CMDSN_DEPTH: u32 = 128;
/// Longest data segment of a Login Response: during login both sides
/// use the default MaxRecvDataSegmentLength (RFC 7143 §6.1, §13.12), so
/// longer text goes out in several responses with the C bit.
pub const LOGIN_MRDSL: usize = 8192;

/// Login status class/detail (RFC 7143 §11.13.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginStatus {
    InitiatorError,
    /// An InitiatorName that is no valid iSCSI name: an initiator error
    /// on the wire (02/00), told apart for monitoring.
    BadInitiatorName,
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
            LoginStatus::InitiatorError | LoginStatus::BadInitiatorName => (2, 0x00),
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

/// Why a login may not add a connection to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// No session with that key and TSIH.
    NoSession,
    /// The session has its negotiated MaxConnections.
    TooMany,
    /// The connection it reinstates did not end in time.
    Busy,
}

impl JoinRefused {
    pub fn status(self) -> LoginStatus {
        match self {
            JoinRefused::NoSession => LoginStatus::SessionDoesNotExist,
            JoinRefused::TooMany => LoginStatus::TooManyConnections,
            JoinRefused::Busy => LoginStatus::ServiceUnavailable,
        }
    }
}

/// What the login reads of the server (the machine changes nothing there).
pub trait Directory {
    fn target(&self, iqn: &str) -> Option<Arc<TargetConfig>>;
    /// A session with this key and TSIH is registered.
    fn session_exists(&self, key: &SessionKey, tsih: u16) -> bool;
    /// May connection `cid` join session `key`/`tsih` (MC/S)? By default
    /// a session takes one connection.
    fn join_check(&self, key: &SessionKey, tsih: u16, _cid: u16) -> Result<(), JoinRefused> {
        if self.session_exists(key, tsih) {
            Err(JoinRefused::TooMany)
        } else {
            Err(JoinRefused::NoSession)
        }
    }
    /// Credentials discovery sessions must prove (`None`: no CHAP).
    fn discovery_auth(&self) -> Option<ChapCredentials>;
}

/// CHAP identifier and challenge (random bytes in the server).
pub type ChallengeSource<'a> = Box<dyn FnMut() -> (u8, [u8; CHALLENGE_LEN]) + 'a>;

/// One login response to send.
#[derive(Debug, Clone)]
pub struct Reply {
    pub response: LoginResponse,
    /// The text keys of the data segment, encoded.
    pub data: Vec<u8>,
}

impl Reply {
    pub fn bhs(&self) -> Bhs {
        let mut b = Bhs::default();
        self.response.write_to(&mut b);
        b
    }
}

/// A refused login.
#[derive(Debug)]
pub struct Failure {
    pub status: LoginStatus,
    /// The Login Response carrying `status`; `None` when the connection
    /// closes without one (its first PDU was no login request).
    pub reply: Option<Reply>,
}

/// A successful login: the last response (its TSIH is the driver's to set)
/// and what the session starts from.
pub struct Accepted {
    pub reply: Reply,
    /// `None` for discovery sessions.
    pub target: Option<Arc<TargetConfig>>,
    pub tpg: Option<TpgConfig>,
    pub isid: [u8; 6],
    /// Non-zero: the session this connection joins (MC/S).
    pub tsih: u16,
    pub cid: u16,
    pub initiator_name: String,
    pub neg: Negotiator,
    pub discovery: bool,
    /// StatSN of the next response (the last reply's plus one).
    pub statsn: u32,
    pub exp_cmdsn: u32,
    pub window: u32,
    /// The initiator has a node ACL in the TPG.
    pub acl: bool,
    /// The credentials the initiator proved with CHAP.
    pub proved: Option<ChapCredentials>,
    pub chap: Option<ChapAlgorithm>,
}

impl Accepted {
    /// The response that refuses this login after all, in place of
    /// `reply` (the driver could not register the session).
    pub fn refusal(&self, status: LoginStatus) -> Reply {
        let r = &self.reply.response;
        let response = refusal(r.csg, r.isid, r.itt, r.sn.statsn, r.sn.exp_cmdsn, status);
        Reply {
            response,
            data: Vec::new(),
        }
    }
}

/// A Login Response refusing the request with `status`: no transit, no
/// TSIH, an empty command window.
fn refusal(
    csg: u8,
    isid: [u8; 6],
    itt: u32,
    statsn: u32,
    cmdsn: u32,
    status: LoginStatus,
) -> LoginResponse {
    let (class, detail) = status.code();
    LoginResponse {
        transit: false,
        cont: false,
        csg,
        nsg: 0,
        version_max: 0,
        version_active: 0,
        isid,
        tsih: 0,
        itt,
        sn: SnFields {
            statsn,
            exp_cmdsn: cmdsn,
            max_cmdsn: cmdsn,
        },
        status_class: class,
        status_detail: detail,
    }
}

/// What to do after one request.
pub enum Step {
    /// Send this response and wait for the next request.
    Respond(Reply),
    /// The login succeeded: register the session (normal sessions), set the
    /// TSIH in `reply`, send it and go to full feature phase.
    Done(Box<Accepted>),
    /// The login failed: send the reply, if any, and close.
    Fail(Failure),
}

/// The target side of one connection's login.
pub struct LoginMachine<'a> {
    directory: &'a dyn Directory,
    /// The address the connection reached: it picks the TPG.
    local: SocketAddr,
    challenge: ChallengeSource<'a>,
    deadline: Instant,
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
    /// Done or failed: later requests are refused without an answer.
    ended: bool,
    /// The rest of an answer longer than `LOGIN_MRDSL`, sent one piece
    /// per empty request of the initiator.
    outgoing: Option<Outgoing>,
}

/// An answer being sent in pieces: the text still to send and the
/// response (transit, NSG) its last piece carries.
struct Outgoing {
    rest: Vec<u8>,
    last: LoginResponse,
}

impl<'a> LoginMachine<'a> {
    /// A login on a connection accepted at `now` on address `local`.
    pub fn new(
        directory: &'a dyn Directory,
        local: SocketAddr,
        challenge: ChallengeSource<'a>,
        now: Instant,
    ) -> LoginMachine<'a> {
        LoginMachine {
            directory,
            local,
            challenge,
            deadline: now + DEFAULT_LOGIN_TIMEOUT,
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
            ended: false,
            outgoing: None,
        }
    }

    /// When the login must have finished (the driver closes the
    /// connection after it).
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The InitiatorName of the first request, once checked.
    pub fn initiator(&self) -> &str {
        &self.initiator
    }

    /// The target the login is for, once found.
    pub fn target_name(&self) -> Option<&str> {
        self.target.as_ref().map(|t| t.iqn.as_str())
    }

    /// Feed one PDU (`now`: when it arrived).
    pub fn handle(&mut self, now: Instant, bhs: &Bhs, data: &[u8]) -> Step {
        if self.ended {
            return Step::Fail(Failure {
                status: LoginStatus::InvalidDuringLogin,
                reply: None,
            });
        }
        let step = self.step(now, bhs, data);
        self.ended = !matches!(step, Step::Respond(_));
        step
    }

    fn step(&mut self, now: Instant, bhs: &Bhs, data: &[u8]) -> Step {
        if bhs.opcode() != Opcode::LOGIN_REQUEST {
            tracing::warn!(opcode = ?bhs.opcode(), "non-login PDU during login");
            return match self.first {
                Some(first) => self.fail(&first, LoginStatus::InvalidDuringLogin),
                None => Step::Fail(Failure {
                    status: LoginStatus::InvalidDuringLogin,
                    reply: None,
                }),
            };
        }
        let req = LoginRequest::parse(bhs);
        match self.request(now, &req, data) {
            Ok(step) => step,
            Err(status) => self.fail(&req, status),
        }
    }

    /// One login request; `Err`: the status it is refused with.
    fn request(
        &mut self,
        now: Instant,
        req: &LoginRequest,
        data: &[u8],
    ) -> Result<Step, LoginStatus> {
        let first = self.check_stage(req)?;
        if let Some(out) = self.outgoing.take() {
            // While a long answer is out, the initiator asks for each
            // piece with an empty request (RFC 7143 §6.2).
            if !data.is_empty() || req.cont {
                return Err(LoginStatus::InitiatorError);
            }
            let mut last = out.last;
            last.itt = req.itt;
            last.sn = self.response(req, false, req.tsih).sn;
            return self.answer(last, out.rest, &first, req);
        }
        let text = match self.acc.push(data, req.cont) {
            Ok(Some(t)) => t,
            // Ask for the rest of a continued request.
            Ok(None) => {
                let r = self.response(req, false, req.tsih);
                return Ok(Step::Respond(self.emit(r, Vec::new())));
            }
            Err(_) => return Err(LoginStatus::InitiatorError),
        };
        let pairs = parse_pairs(&text).map_err(|_| LoginStatus::InitiatorError)?;
        let mut extra = Vec::new();
        if self.neg.is_none() {
            extra = self.first_request(req, &pairs)?;
            let secs = self
                .tpg
                .as_ref()
                .map_or(DEFAULT_LOGIN_TIMEOUT.as_secs(), |t| {
                    u64::from(t.attributes.login_timeout)
                });
            self.deadline = now + Duration::from_secs(secs.clamp(1, 3600));
        }
        let neg = self.neg.as_mut().ok_or(LoginStatus::InitiatorError)?;
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
        let mut answers = neg.respond(&pairs, stage).map_err(|e| {
            tracing::warn!(error = %e, "negotiation error");
            LoginStatus::InitiatorError
        })?;
        answers.extend(extra);
        let auth_needed = !neg.offer.auth_methods.contains(&AuthMethod::None);
        if req.csg == 0 && neg.auth_method == Some(AuthMethod::Chap) {
            answers.extend(self.chap_step(&chap_pairs)?);
        } else if !chap_pairs.is_empty() {
            return Err(LoginStatus::InitiatorError);
        }
        // Leaving the security stage (or skipping it) needs satisfied auth;
        // while CHAP is still in progress the target holds the transit.
        let auth_ok = !auth_needed || self.chap.as_ref().is_some_and(ChapServer::is_done);
        if !auth_ok && (req.csg == 1 || (req.transit && self.chap.is_none())) {
            return Err(LoginStatus::AuthFailed);
        }
        let transit = req.transit && auth_ok;
        let neg = self.neg.as_mut().ok_or(LoginStatus::InitiatorError)?;
        if req.csg == 1 {
            answers.extend(neg.declarations());
        }
        let mut r = self.response(req, transit, req.tsih);
        if transit {
            r.nsg = req.nsg;
        }
        tracing::debug!(transit, answers = ?answers.iter().filter(|p| !is_chap_key(&p.key)).collect::<Vec<_>>(),
            "login response");
        self.answer(r, encode_pairs(&answers), &first, req)
    }

    /// Send the answer `data` to `req` with the status and stage change of
    /// `r`: at most `LOGIN_MRDSL` bytes now, the rest kept for the
    /// initiator's next requests; the stage changes (and the login ends)
    /// only with the last piece, since C and T exclude each other.
    fn answer(
        &mut self,
        r: LoginResponse,
        mut data: Vec<u8>,
        first: &LoginRequest,
        req: &LoginRequest,
    ) -> Result<Step, LoginStatus> {
        if data.len() > LOGIN_MRDSL {
            let rest = data.split_off(LOGIN_MRDSL);
            let head = LoginResponse {
                transit: false,
                cont: true,
                nsg: 0,
                ..r
            };
            self.outgoing = Some(Outgoing { rest, last: r });
            return Ok(Step::Respond(self.emit(head, data)));
        }
        let reply = self.emit(r, data);
        if r.transit {
            self.stage = Some(r.nsg);
        }
        if !(r.transit && r.nsg == 3) {
            return Ok(Step::Respond(reply));
        }
        self.accepted(reply, first, req)
    }

    /// A request of the same login as the first (returned), in the stage
    /// the login is in, with a valid stage transition (RFC 7143 §6.3).
    fn check_stage(&mut self, req: &LoginRequest) -> Result<LoginRequest, LoginStatus> {
        let first = match self.first {
            None => {
                self.first = Some(*req);
                self.statsn = req.exp_statsn;
                if req.version_min > 0 {
                    return Err(LoginStatus::UnsupportedVersion);
                }
                *req
            }
            Some(f) => f,
        };
        if req.isid != first.isid || req.tsih != first.tsih || req.cid != first.cid {
            return Err(LoginStatus::InitiatorError);
        }
        let stage_ok = req.csg <= 1
            && self.stage.is_none_or(|s| s == req.csg)
            && !(req.transit && req.cont)
            && (!req.transit || (req.nsg > req.csg && req.nsg != 2));
        if !stage_ok {
            return Err(LoginStatus::InitiatorError);
        }
        self.stage = Some(req.csg);
        Ok(first)
    }

    /// The end of a successful login: `reply` answered `req`.
    fn accepted(
        &mut self,
        reply: Reply,
        first: &LoginRequest,
        req: &LoginRequest,
    ) -> Result<Step, LoginStatus> {
        let neg = self.neg.take().ok_or(LoginStatus::InitiatorError)?;
        let chap_done = self.chap.as_ref().filter(|c| c.is_done());
        Ok(Step::Done(Box::new(Accepted {
            reply,
            target: self.target.clone(),
            tpg: self.tpg.clone(),
            isid: first.isid,
            tsih: first.tsih,
            cid: first.cid,
            initiator_name: self.initiator.clone(),
            discovery: neg.session_type == Some(SessionType::Discovery),
            neg,
            statsn: self.statsn,
            exp_cmdsn: req.cmdsn,
            window: self.window,
            acl: self.acl,
            proved: chap_done.and(self.creds.clone()),
            chap: self.chap.as_ref().map(ChapServer::algorithm),
        })))
    }

    /// The CHAP keys of a security-stage request, with CHAP negotiated.
    fn chap_step(&mut self, chap_pairs: &[Pair]) -> Result<Vec<Pair>, LoginStatus> {
        let chap = match &mut self.chap {
            Some(c) => c,
            // Empty secrets would let anyone compute the response.
            None => match self
                .creds
                .clone()
                .filter(|c| !c.userid.is_empty() && !c.password.is_empty())
            {
                Some(creds) => {
                    let (id, challenge) = (self.challenge)();
                    self.chap.insert(ChapServer::new(creds, id, challenge))
                }
                None => {
                    tracing::warn!("CHAP required but no userid/password configured");
                    return Err(LoginStatus::AuthFailed);
                }
            },
        };
        chap.step(chap_pairs).map_err(|e| {
            tracing::warn!(error = %e, "CHAP authentication failed");
            LoginStatus::AuthFailed
        })
    }

    /// A response with this machine's StatSN, counted as sent.
    fn emit(&mut self, response: LoginResponse, data: Vec<u8>) -> Reply {
        self.statsn = self.statsn.wrapping_add(1);
        Reply { response, data }
    }

    fn fail(&mut self, req: &LoginRequest, status: LoginStatus) -> Step {
        let r = refusal(req.csg, req.isid, req.itt, self.statsn, req.cmdsn, status);
        let reply = self.emit(r, Vec::new());
        Step::Fail(Failure {
            status,
            reply: Some(reply),
        })
    }

    fn response(&self, req: &LoginRequest, transit: bool, tsih: u16) -> LoginResponse {
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
                statsn: self.statsn,
                exp_cmdsn: req.cmdsn,
                max_cmdsn: req.cmdsn.wrapping_add(self.window).wrapping_sub(1),
            },
            status_class: 0,
            status_detail: 0,
        }
    }

    /// Checks of the first login request: who is logging in to what.
    /// Returns keys the target adds to its first answer.
    fn first_request(
        &mut self,
        req: &LoginRequest,
        pairs: &[Pair],
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
            return Err(LoginStatus::BadInitiatorName);
        }
        self.initiator = initiator.to_string();
        let discovery = match get("SessionType") {
            None | Some("Normal") => false,
            Some("Discovery") => true,
            Some(_) => return Err(LoginStatus::InitiatorError),
        };
        let mut extra = Vec::new();
        let mut neg = if !discovery {
            let Some(name) = get("TargetName").filter(|v| !v.is_empty()) else {
                return Err(LoginStatus::MissingParameter);
            };
            let target = self
                .directory
                .target(name)
                .ok_or(LoginStatus::TargetNotFound)?;
            let tpg = pick_tpg(&target, self.local).ok_or(LoginStatus::TargetNotFound)?;
            let acl = find_acl(&tpg, initiator);
            if table_for(&tpg, initiator).is_none() {
                tracing::warn!(?initiator, target = %target.iqn, tpg = tpg.tag,
                    "initiator has no ACL in this TPG and demo mode is off");
                return Err(LoginStatus::NotAuthorized);
            }
            if req.tsih != 0 {
                // Adding a connection to a session (MC/S): the session's
                // negotiated MaxConnections bounds it. The registry checks
                // again when the login ends.
                let key = SessionKey {
                    initiator: initiator.to_string(),
                    isid: req.isid,
                    target: target.iqn.clone(),
                    tpgt: tpg.tag,
                };
                self.directory
                    .join_check(&key, req.tsih, req.cid)
                    .map_err(JoinRefused::status)?;
            }
            self.window = tpg.attributes.default_cmdsn_depth.clamp(1, 4096);
            extra.push(Pair::new("TargetPortalGroupTag", tpg.tag.to_string()));
            let mut neg = Negotiator::new(build_offer_for(Some(&tpg), acl));
            neg.joining = req.tsih != 0;
            self.creds = auth_policy(&tpg, acl).creds;
            self.acl = acl.is_some();
            self.target = Some(target);
            self.tpg = Some(tpg);
            neg
        } else {
            if req.tsih != 0 {
                return Err(LoginStatus::SessionDoesNotExist);
            }
            let mut offer = build_offer(None);
            // rtslib's discovery_enable_auth: CHAP required for SendTargets.
            self.creds = self.directory.discovery_auth();
            if self.creds.is_some() {
                offer.auth_methods = vec![AuthMethod::Chap];
            }
            Negotiator::new(offer)
        };
        // A later PDU may repeat SessionType but never change it (absent
        // from the first request, it is Normal).
        neg.session_type = Some(if discovery {
            SessionType::Discovery
        } else {
            SessionType::Normal
        });
        self.neg = Some(neg);
        Ok(extra)
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

#[cfg(test)]
mod tests {
    use super::LoginStatus;

    #[test]
    fn status_codes_table() {
        let cases = [
            (LoginStatus::InitiatorError, (2, 0)),
            (LoginStatus::BadInitiatorName, (2, 0)),
            (LoginStatus::AuthFailed, (2, 1)),
            (LoginStatus::NotAuthorized, (2, 2)),
            (LoginStatus::TargetNotFound, (2, 3)),
            (LoginStatus::UnsupportedVersion, (2, 5)),
            (LoginStatus::TooManyConnections, (2, 6)),
            (LoginStatus::MissingParameter, (2, 7)),
            (LoginStatus::SessionDoesNotExist, (2, 10)),
            (LoginStatus::InvalidDuringLogin, (2, 11)),
            (LoginStatus::ServiceUnavailable, (3, 1)),
        ];
        for (s, c) in cases {
            assert_eq!(s.code(), c, "{s:?}");
        }
    }
}
