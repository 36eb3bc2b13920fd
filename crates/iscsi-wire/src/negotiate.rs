//! Login/Text key negotiation, target side (RFC 7143 §6 and §13): the
//! target's offers ([`TargetOffer`], overridable with targetcli parameter
//! names), the per-key rules (list, AND/OR booleans, min/max numbers,
//! declaratives), and the resulting [`SessionParams`]. The [`Negotiator`]
//! answers one request's pairs at a time and remembers what was already
//! negotiated so a key sent twice in a login is a protocol error (except a
//! declaration repeated with the same value, see [`REDECLARABLE`]).

use std::collections::HashMap;

use thiserror::Error;

use crate::text::Pair;

/// Value answers with fixed spelling.
pub const NOT_UNDERSTOOD: &str = "NotUnderstood";
pub const IRRELEVANT: &str = "Irrelevant";
pub const REJECT: &str = "Reject";

/// Login stage a key arrives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Security,
    Operational,
    FullFeature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionType {
    Normal,
    Discovery,
}

/// Digest algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestKind {
    None,
    Crc32c,
}

impl DigestKind {
    fn name(self) -> &'static str {
        match self {
            DigestKind::None => "None",
            DigestKind::Crc32c => "CRC32C",
        }
    }

    fn parse(s: &str) -> Option<DigestKind> {
        match s {
            "None" => Some(DigestKind::None),
            "CRC32C" => Some(DigestKind::Crc32c),
            _ => None,
        }
    }
}

/// Authentication methods (AuthMethod key). Only `None` is implemented;
/// CHAP is listed so a configuration can name it and the login layer can
/// branch on it when it is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    Chap,
}

impl AuthMethod {
    fn name(self) -> &'static str {
        match self {
            AuthMethod::None => "None",
            AuthMethod::Chap => "CHAP",
        }
    }

    fn parse(s: &str) -> Option<AuthMethod> {
        match s {
            "None" => Some(AuthMethod::None),
            "CHAP" => Some(AuthMethod::Chap),
            _ => None,
        }
    }
}

/// Errors that end a login (or reject a Text request).
#[derive(Debug, Error, PartialEq, Eq, Clone)]
pub enum NegError {
    #[error("key {0} negotiated twice")]
    Duplicate(String),
    #[error("key {0} not allowed in this phase")]
    WrongPhase(String),
    #[error("invalid value for parameter {key}: {value:?}")]
    BadParameter { key: String, value: String },
    #[error("more than {MAX_LOGIN_KEYS} keys in one login")]
    TooManyKeys,
}

/// Most distinct keys one login may carry. A login needs about 30 (RFC 7143
/// §13 has 27 keys an initiator may send, CHAP's are counted apart); the
/// cap bounds what a login that keeps sending new keys (each answered
/// NotUnderstood) makes the target remember and answer.
pub const MAX_LOGIN_KEYS: usize = 256;

/// What the target offers and accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOffer {
    pub header_digest: Vec<DigestKind>,
    pub data_digest: Vec<DigestKind>,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// Our declared MaxRecvDataSegmentLength (what initiators may send us).
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
    pub auth_methods: Vec<AuthMethod>,
    pub target_alias: Option<String>,
}

impl Default for TargetOffer {
    /// The fast defaults of DESIGN.md: immediate and unsolicited data, big
    /// segments and bursts, several outstanding R2Ts.
    fn default() -> Self {
        TargetOffer {
            header_digest: vec![DigestKind::None, DigestKind::Crc32c],
            data_digest: vec![DigestKind::None, DigestKind::Crc32c],
            max_connections: 1,
            initial_r2t: false,
            immediate_data: true,
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 262_144,
            default_time2wait: 2,
            default_time2retain: 0,
            max_outstanding_r2t: 16,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            auth_methods: vec![AuthMethod::None],
            target_alias: None,
        }
    }
}

const SEG_MIN: u32 = 512;
const SEG_MAX: u32 = 0x00ff_ffff;

fn parse_num(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if h.is_empty() || h.len() > 16 {
            return None;
        }
        u64::from_str_radix(h, 16).ok()
    } else {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }
}

fn parse_range(s: &str, lo: u64, hi: u64) -> Option<u64> {
    parse_num(s).filter(|v| (lo..=hi).contains(v))
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "Yes" => Some(true),
        "No" => Some(false),
        _ => None,
    }
}

fn yes_no(v: bool) -> &'static str {
    if v {
        "Yes"
    } else {
        "No"
    }
}

/// A list-valued digest key: the first of the initiator's choices the target
/// allows is the answer, and `slot` records whether it is CRC32C.
fn answer_digest(v: &str, allowed: &[DigestKind], slot: &mut bool) -> String {
    let pick = v
        .split(',')
        .filter_map(DigestKind::parse)
        .find(|d| allowed.contains(d));
    match pick {
        Some(d) => {
            *slot = d == DigestKind::Crc32c;
            d.name().to_string()
        }
        None => REJECT.into(),
    }
}

/// A numerical key (RFC 7143 §6.2.2): an offer in `lo..=hi` is answered with
/// `pick(offer)` (the min or max against the target's own value), which
/// `slot` records; anything else is rejected.
fn answer_number<T>(v: &str, lo: T, hi: T, slot: &mut T, pick: impl FnOnce(T) -> T) -> String
where
    T: Copy + Into<u64> + TryFrom<u64> + ToString,
{
    match parse_range(v, lo.into(), hi.into()).and_then(|n| T::try_from(n).ok()) {
        Some(n) => {
            let r = pick(n);
            *slot = r;
            r.to_string()
        }
        None => REJECT.into(),
    }
}

/// A boolean key: `pick` applies the OR or AND rule; `slot` records it.
fn answer_bool(v: &str, slot: &mut bool, pick: impl FnOnce(bool) -> bool) -> String {
    match parse_bool(v) {
        Some(b) => {
            let r = pick(b);
            *slot = r;
            yes_no(r).into()
        }
        None => REJECT.into(),
    }
}

impl TargetOffer {
    /// Apply one targetcli-style TPG parameter (`MaxRecvDataSegmentLength`,
    /// `ImmediateData`, `HeaderDigest`, ...). Unknown names (markers,
    /// `iSERHCA`...) are ignored; bad values are errors.
    pub fn apply_parameter(&mut self, key: &str, value: &str) -> Result<(), NegError> {
        let bad = || NegError::BadParameter {
            key: key.to_string(),
            value: value.to_string(),
        };
        let num = |lo: u64, hi: u64| parse_range(value, lo, hi).ok_or_else(bad);
        let boolean = || parse_bool(value).ok_or_else(bad);
        match key {
            "HeaderDigest" | "DataDigest" => {
                let list: Option<Vec<DigestKind>> = value
                    .split(',')
                    .map(|v| DigestKind::parse(v.trim()))
                    .collect();
                let list = list.filter(|l| !l.is_empty()).ok_or_else(bad)?;
                if key == "HeaderDigest" {
                    self.header_digest = list;
                } else {
                    self.data_digest = list;
                }
            }
            "AuthMethod" => {
                let list: Option<Vec<AuthMethod>> = value
                    .split(',')
                    .map(|v| AuthMethod::parse(v.trim()))
                    .collect();
                self.auth_methods = list.filter(|l| !l.is_empty()).ok_or_else(bad)?;
            }
            "MaxConnections" => self.max_connections = num(1, 65535)? as u16,
            "InitialR2T" => self.initial_r2t = boolean()?,
            "ImmediateData" => self.immediate_data = boolean()?,
            "MaxRecvDataSegmentLength" => {
                self.max_recv_data_segment_length = num(512, u64::from(SEG_MAX))? as u32
            }
            "MaxXmitDataSegmentLength" => {}
            "MaxBurstLength" => self.max_burst_length = num(512, u64::from(SEG_MAX))? as u32,
            "FirstBurstLength" => self.first_burst_length = num(512, u64::from(SEG_MAX))? as u32,
            "DefaultTime2Wait" => self.default_time2wait = num(0, 3600)? as u16,
            "DefaultTime2Retain" => self.default_time2retain = num(0, 3600)? as u16,
            "MaxOutstandingR2T" => self.max_outstanding_r2t = num(1, 65535)? as u16,
            "DataPDUInOrder" => self.data_pdu_in_order = boolean()?,
            "DataSequenceInOrder" => self.data_sequence_in_order = boolean()?,
            "ErrorRecoveryLevel" => self.error_recovery_level = num(0, 2)? as u8,
            "TargetAlias" => self.target_alias = (!value.is_empty()).then(|| value.to_string()),
            _ => {}
        }
        Ok(())
    }
}

/// Operational parameters of a session once negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub header_digest: bool,
    pub data_digest: bool,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// Largest data segment we may send (the initiator's declaration).
    pub initiator_mrdsl: u32,
    /// Largest data segment we accept (our declaration).
    pub target_mrdsl: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
}

impl Default for SessionParams {
    /// RFC 7143 defaults, which hold for keys nobody negotiated.
    fn default() -> Self {
        SessionParams {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            initiator_mrdsl: 8192,
            target_mrdsl: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }
}

/// Keys that are irrelevant in a discovery session (RFC 7143 §13).
const DISCOVERY_IRRELEVANT: &[&str] = &[
    "MaxConnections",
    "InitialR2T",
    "ImmediateData",
    "MaxBurstLength",
    "FirstBurstLength",
    "MaxOutstandingR2T",
    "DataPDUInOrder",
    "DataSequenceInOrder",
];

/// Session-wide keys (RFC 7143 §13, leading only): a login adding a
/// connection to a session answers them Irrelevant, the session keeps the
/// leading login's values.
const SESSION_WIDE: &[&str] = &[
    "MaxConnections",
    "InitialR2T",
    "ImmediateData",
    "MaxBurstLength",
    "FirstBurstLength",
    "DefaultTime2Wait",
    "DefaultTime2Retain",
    "MaxOutstandingR2T",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "ErrorRecoveryLevel",
];

/// Keys that may only be negotiated during login: the session-wide ones
/// and these.
const LOGIN_ONLY: &[&str] = &[
    "SessionType",
    "InitiatorName",
    "TargetName",
    "HeaderDigest",
    "DataDigest",
    "AuthMethod",
];

fn login_only(key: &str) -> bool {
    SESSION_WIDE.contains(&key) || LOGIN_ONLY.contains(&key)
}

/// Declarative keys an initiator may state again, with the same value, in a
/// later PDU of the same login. RFC 7143 §6.2 says no key should be sent
/// twice, but libiscsi (iscsi-ls, iscsi-inq, QEMU) offers
/// `AuthMethod=CHAP,None` whenever it has credentials and, when the target
/// answers None, repeats InitiatorName, InitiatorAlias, TargetName and
/// SessionType in its first operational-stage PDU; tgt and LIO accept that.
/// Repeating a declaration changes nothing, so it is accepted; a different
/// value would change who logs in to what and stays an error, as does
/// repeating any negotiated key. (open-iscsi sends these keys only in its
/// first PDU; MaxRecvDataSegmentLength is the other declarative key an
/// initiator sends, listed for the same reason.)
const REDECLARABLE: &[&str] = &[
    "InitiatorName",
    "InitiatorAlias",
    "TargetName",
    "SessionType",
    "MaxRecvDataSegmentLength",
];

/// Target-side negotiation state for one login (or one Text exchange).
#[derive(Debug, Clone)]
pub struct Negotiator {
    pub offer: TargetOffer,
    pub params: SessionParams,
    pub session_type: Option<SessionType>,
    pub initiator_name: Option<String>,
    pub initiator_alias: Option<String>,
    pub target_name: Option<String>,
    pub auth_method: Option<AuthMethod>,
    /// The login adds a connection to an existing session (MC/S): only
    /// connection-scope keys are negotiated.
    pub joining: bool,
    /// Keys already received in this login, with their values (hashed: a
    /// login may carry thousands of keys).
    seen: HashMap<String, String>,
    declared: bool,
}

impl Negotiator {
    pub fn new(offer: TargetOffer) -> Negotiator {
        let params = SessionParams {
            target_mrdsl: offer.max_recv_data_segment_length,
            ..SessionParams::default()
        };
        Negotiator {
            offer,
            params,
            session_type: None,
            initiator_name: None,
            initiator_alias: None,
            target_name: None,
            auth_method: None,
            joining: false,
            seen: HashMap::new(),
            declared: false,
        }
    }

    fn is_discovery(&self) -> bool {
        self.session_type == Some(SessionType::Discovery)
    }

    /// Answer the pairs of one (joined) request. Declarative keys the login
    /// layer interprets (InitiatorName, TargetName, SessionType,
    /// InitiatorAlias) are recorded and get no answer.
    pub fn respond(&mut self, pairs: &[Pair], stage: Stage) -> Result<Vec<Pair>, NegError> {
        // SessionType first: relevance of other keys depends on it.
        if let Some(p) = pairs.iter().find(|p| p.key == "SessionType") {
            if stage != Stage::FullFeature {
                let t = match p.value.as_str() {
                    "Discovery" => SessionType::Discovery,
                    "Normal" => SessionType::Normal,
                    _ => {
                        return Err(NegError::BadParameter {
                            key: p.key.clone(),
                            value: p.value.clone(),
                        })
                    }
                };
                // Once known (declared, or implied by the first request
                // and set by the login layer) the type never changes.
                if self.session_type.is_some_and(|s| s != t) {
                    return Err(NegError::Duplicate(p.key.clone()));
                }
                self.session_type = Some(t);
            }
        }
        let mut out = Vec::new();
        for p in pairs {
            if stage != Stage::FullFeature {
                match self.seen.get(&p.key) {
                    Some(v) if *v == p.value && REDECLARABLE.contains(&p.key.as_str()) => continue,
                    Some(_) => return Err(NegError::Duplicate(p.key.clone())),
                    None if self.seen.len() >= MAX_LOGIN_KEYS => return Err(NegError::TooManyKeys),
                    None => {
                        self.seen.insert(p.key.clone(), p.value.clone());
                    }
                }
            } else if login_only(&p.key) {
                return Err(NegError::WrongPhase(p.key.clone()));
            }
            if let Some(answer) = self.answer(p, stage)? {
                out.push(Pair::new(p.key.clone(), answer));
            }
        }
        self.fixup(&mut out);
        Ok(out)
    }

    /// Keys the target declares on its own once per login: its
    /// MaxRecvDataSegmentLength and TargetAlias. Call when answering in the
    /// operational stage (or a security stage that transits to full feature).
    pub fn declarations(&mut self) -> Vec<Pair> {
        if self.declared {
            return Vec::new();
        }
        self.declared = true;
        let mut out = vec![Pair::new(
            "MaxRecvDataSegmentLength",
            self.offer.max_recv_data_segment_length.to_string(),
        )];
        if let (Some(a), false) = (&self.offer.target_alias, self.is_discovery()) {
            out.push(Pair::new("TargetAlias", a.clone()));
        }
        out
    }

    /// FirstBurstLength never exceeds MaxBurstLength (RFC 7143 §13.14).
    /// Lowered only when its answer is in `out`, the answer says so: an
    /// initiator told 262144 but held to 131072 sent its unsolicited burst
    /// and had its connection closed as a protocol error. One answered in an
    /// earlier PDU (or never negotiated: both sides hold the default) is what
    /// both sides believe and stays.
    fn fixup(&mut self, out: &mut [Pair]) {
        let (first, max) = (self.params.first_burst_length, self.params.max_burst_length);
        if first <= max {
            return;
        }
        if let Some(p) = out
            .iter_mut()
            .find(|p| p.key == "FirstBurstLength" && p.value == first.to_string())
        {
            self.params.first_burst_length = max;
            p.value = max.to_string();
        }
    }

    fn answer(&mut self, p: &Pair, stage: Stage) -> Result<Option<String>, NegError> {
        let key = p.key.as_str();
        let v = p.value.as_str();
        if key.starts_with("X-") || key.starts_with("X#") {
            return Ok(Some(NOT_UNDERSTOOD.into()));
        }
        // The peer's own answers to something we offered: nothing to say.
        if matches!(v, NOT_UNDERSTOOD | IRRELEVANT | REJECT) {
            return Ok(None);
        }
        if self.is_discovery() && DISCOVERY_IRRELEVANT.contains(&key) {
            return Ok(Some(IRRELEVANT.into()));
        }
        if self.joining && SESSION_WIDE.contains(&key) {
            return Ok(Some(IRRELEVANT.into()));
        }
        let o = &self.offer;
        let reject = || Ok(Some(REJECT.to_string()));
        let ans = match key {
            "InitiatorName" => {
                self.initiator_name = Some(v.to_string());
                return Ok(None);
            }
            "InitiatorAlias" => {
                self.initiator_alias = Some(v.to_string());
                return Ok(None);
            }
            "TargetName" => {
                self.target_name = Some(v.to_string());
                return Ok(None);
            }
            "SessionType" => return Ok(None),
            // Only the target sends these.
            "TargetAlias" | "TargetAddress" | "TargetPortalGroupTag" => return reject(),
            "SendTargets" => {
                if stage == Stage::FullFeature {
                    // Answered by the discovery layer, not by negotiation.
                    return Ok(None);
                }
                return Ok(Some(IRRELEVANT.into()));
            }
            "AuthMethod" => {
                if stage != Stage::Security {
                    return Err(NegError::WrongPhase(key.into()));
                }
                let pick = v
                    .split(',')
                    .filter_map(AuthMethod::parse)
                    .find(|m| o.auth_methods.contains(m));
                match pick {
                    Some(m) => {
                        self.auth_method = Some(m);
                        m.name().to_string()
                    }
                    None => REJECT.into(),
                }
            }
            "HeaderDigest" => answer_digest(v, &o.header_digest, &mut self.params.header_digest),
            "DataDigest" => answer_digest(v, &o.data_digest, &mut self.params.data_digest),
            "MaxConnections" => answer_number(v, 1, 65535, &mut self.params.max_connections, |n| {
                n.min(o.max_connections)
            }),
            // Booleans: OR when either side may insist on "Yes", AND when
            // either may refuse (RFC 7143 §6.2.2).
            "InitialR2T" => answer_bool(v, &mut self.params.initial_r2t, |b| b || o.initial_r2t),
            "ImmediateData" => answer_bool(v, &mut self.params.immediate_data, |b| {
                b && o.immediate_data
            }),
            "DataPDUInOrder" => answer_bool(v, &mut self.params.data_pdu_in_order, |b| {
                b || o.data_pdu_in_order
            }),
            "DataSequenceInOrder" => answer_bool(v, &mut self.params.data_sequence_in_order, |b| {
                b || o.data_sequence_in_order
            }),
            "MaxRecvDataSegmentLength" => match parse_range(v, 512, u64::from(SEG_MAX)) {
                Some(n) => {
                    self.params.initiator_mrdsl = n as u32;
                    return Ok(None);
                }
                None => REJECT.into(),
            },
            "MaxBurstLength" => answer_number(
                v,
                SEG_MIN,
                SEG_MAX,
                &mut self.params.max_burst_length,
                |n| n.min(o.max_burst_length),
            ),
            "FirstBurstLength" => answer_number(
                v,
                SEG_MIN,
                SEG_MAX,
                &mut self.params.first_burst_length,
                |n| n.min(o.first_burst_length),
            ),
            "DefaultTime2Wait" => {
                answer_number(v, 0, 3600, &mut self.params.default_time2wait, |n| {
                    n.max(o.default_time2wait)
                })
            }
            "DefaultTime2Retain" => {
                answer_number(v, 0, 3600, &mut self.params.default_time2retain, |n| {
                    n.min(o.default_time2retain)
                })
            }
            "MaxOutstandingR2T" => {
                answer_number(v, 1, 65535, &mut self.params.max_outstanding_r2t, |n| {
                    n.min(o.max_outstanding_r2t)
                })
            }
            "ErrorRecoveryLevel" => {
                answer_number(v, 0, 2, &mut self.params.error_recovery_level, |n| {
                    n.min(o.error_recovery_level)
                })
            }
            // Markers are obsolete (RFC 7143 §13.25): never used.
            "OFMarker" | "IFMarker" => match parse_bool(v) {
                Some(_) => "No".into(),
                None => REJECT.into(),
            },
            "OFMarkInt" | "IFMarkInt" => IRRELEVANT.into(),
            "TaskReporter" => {
                if v.split(',').any(|x| x == "RFC3720") {
                    "RFC3720".into()
                } else {
                    REJECT.into()
                }
            }
            _ => NOT_UNDERSTOOD.into(),
        };
        Ok(Some(ans))
    }
}

#[cfg(test)]
#[path = "negotiate_tests.rs"]
mod tests;
