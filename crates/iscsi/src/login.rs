//! The login phase of a connection: a thin socket loop around the sans-I/O
//! `machine::LoginMachine`. It reads each login PDU, feeds it to the
//! machine, writes what comes out and closes the connection at the login
//! timeout; a successful normal login registers its session here (TSIH
//! assignment, session reinstatement), the one step that changes the
//! server's state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use iscsi_wire::chap::{ChapCredentials, CHALLENGE_LEN};
use iscsi_wire::negotiate::Negotiator;
use iscsi_wire::{parse_frame, Bhs, Digests};

use crate::conn::{is_timeout, Io};
use crate::server::{SessionKey, Shared, STOP_NONE};
use crate::session_core::{nexus_for, ConnSlot, SessionCore};
use crate::sessions::{table_for, SessionLive};
use crate::{TargetConfig, TpgConfig};

mod machine;
#[cfg(test)]
mod machine_tests;
mod policy;
mod stats;

pub(crate) use machine::JoinRefused;
use machine::{Accepted, Directory, LoginMachine, LoginStatus, Reply, Step};
pub(crate) use policy::login_requires;
pub(crate) use stats::{LoginCounters, LoginEnd};

/// Largest login PDU data segment accepted (RFC default is 8192; some
/// initiators send more with long CHAP values).
const LOGIN_MAX_DATA: u32 = 64 * 1024;

/// What a successful login hands to the session.
pub struct LoginOutcome {
    pub target: Option<Arc<TargetConfig>>,
    pub tpg: Option<TpgConfig>,
    pub key: Option<SessionKey>,
    /// Shared with the server registry (normal sessions only).
    pub live: Option<Arc<SessionLive>>,
    /// The session's shared state (normal sessions; joined or new).
    pub core: Option<Arc<SessionCore>>,
    pub tsih: u16,
    pub cid: u16,
    pub initiator_name: String,
    pub neg: Negotiator,
    pub discovery: bool,
    pub statsn: u32,
    pub exp_cmdsn: u32,
    pub window: u32,
}

impl Directory for Shared {
    fn target(&self, iqn: &str) -> Option<Arc<TargetConfig>> {
        Shared::target(self, iqn)
    }

    fn session_exists(&self, key: &SessionKey, tsih: u16) -> bool {
        Shared::session_exists(self, key, tsih)
    }

    fn join_check(&self, key: &SessionKey, tsih: u16, cid: u16) -> Result<(), JoinRefused> {
        Shared::join_check(self, key, tsih, cid)
    }

    fn discovery_auth(&self) -> Option<ChapCredentials> {
        Shared::discovery_auth(self)
    }
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

/// Read one login PDU (copied out: login is not on the data path); `None`
/// at the deadline, on a framing error, a stop request or a closed socket.
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

fn send(io: &mut Io, r: &Reply) -> bool {
    io.tx.push_pdu(&r.bhs(), &r.data, Digests::default());
    io.flush().is_ok()
}

/// Run the login phase; `None` when the connection must close.
pub fn run(
    shared: &Arc<Shared>,
    io: &mut Io,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<LoginOutcome> {
    let directory: &Shared = shared;
    let mut m = LoginMachine::new(directory, local, Box::new(random_challenge), Instant::now());
    let abandoned = || {
        shared.login_counts.count(LoginEnd::Abandoned);
        None
    };
    loop {
        let Some((bhs, data)) = read_pdu(io, m.deadline()) else {
            return abandoned();
        };
        match m.handle(Instant::now(), &bhs, &data) {
            Step::Respond(r) => {
                if !send(io, &r) {
                    return abandoned();
                }
            }
            Step::Fail(f) => {
                shared.login_counts.count(LoginEnd::Refused(f.status));
                let Some(r) = f.reply else {
                    tracing::debug!(%peer, status = ?f.status, "login closed without a response");
                    return None;
                };
                let (class, detail) = f.status.code();
                tracing::warn!(initiator = ?m.initiator(), %peer,
                    target = m.target_name().unwrap_or(""),
                    class, detail, status = ?f.status, "login failed");
                send(io, &r);
                return None;
            }
            Step::Done(a) => return finish(shared, io, peer, local, *a),
        }
    }
}

/// What registering a login gives the session.
type Registered = (
    u16,
    Option<SessionKey>,
    Option<Arc<SessionLive>>,
    Option<Arc<SessionCore>>,
);

/// Register a normal session: a new one (TSIH 0; reinstating one of the
/// same I_T nexus) or a connection joining one (MC/S). A discovery
/// session only gets a TSIH. `Err`: the login is refused with that status.
fn register(
    shared: &Arc<Shared>,
    io: &Io,
    peer: SocketAddr,
    local: SocketAddr,
    a: &Accepted,
) -> Result<Registered, LoginStatus> {
    let (Some(t), Some(g), false) = (&a.target, &a.tpg, a.discovery) else {
        return Ok((shared.alloc_tsih(), None, None, None));
    };
    let k = SessionKey {
        initiator: a.initiator_name.clone(),
        isid: a.isid,
        target: t.iqn.clone(),
        tpgt: g.tag,
    };
    let slot = ConnSlot::new(a.cid, io.handle.id, peer, local);
    if a.tsih != 0 {
        let (core, live) = shared
            .add_connection(&k, a.tsih, slot)
            .map_err(JoinRefused::status)?;
        tracing::info!(initiator = %a.initiator_name, tsih = a.tsih, cid = a.cid,
            "connection added to the session");
        return Ok((a.tsih, Some(k), Some(live), Some(core)));
    }
    let table = table_for(g, &a.initiator_name).map_or_else(|| Arc::clone(&g.luns), |(t, _)| t);
    let l = Arc::new(SessionLive::new(
        table,
        local,
        a.cid,
        a.acl,
        a.proved.clone(),
        a.neg.params.clone(),
    ));
    let make = |tsih| {
        let nexus = nexus_for(&a.initiator_name, a.isid, &t.iqn, g.tag, g.relative_port_id);
        SessionCore::new(tsih, nexus, a.neg.params.clone(), a.exp_cmdsn, a.window)
    };
    // `None`: the session it reinstates still has commands running.
    let core = shared
        .register_session(k.clone(), slot, Arc::clone(&l), make)
        .ok_or(LoginStatus::ServiceUnavailable)?;
    // A change pushed during the login missed this session: held
    // to the rule of live sessions (it authenticated against the
    // configuration the login started with).
    shared.refresh_session(&k, &[io.handle.id], &l);
    Ok((core.tsih, Some(k), Some(l), Some(core)))
}

/// Register the session (or the connection it adds), send the last login
/// response with its TSIH and hand the session over.
fn finish(
    shared: &Arc<Shared>,
    io: &mut Io,
    peer: SocketAddr,
    local: SocketAddr,
    a: Accepted,
) -> Option<LoginOutcome> {
    let (tsih, key, live, core) = match register(shared, io, peer, local, &a) {
        Ok(r) => r,
        Err(status) => {
            shared.login_counts.count(LoginEnd::Refused(status));
            let (class, detail) = status.code();
            tracing::warn!(initiator = ?a.initiator_name, %peer,
                target = a.target.as_ref().map_or("", |t| t.iqn.as_str()),
                class, detail, ?status, "login failed");
            send(io, &a.refusal(status));
            return None;
        }
    };
    let Accepted {
        mut reply,
        target,
        tpg,
        neg,
        ..
    } = a;
    reply.response.tsih = tsih;
    if let (Some(c), true) = (&core, a.tsih != 0) {
        // A joining connection learns the session's window.
        let (exp, max) = c.sn(io.handle.id, 0);
        reply.response.sn.exp_cmdsn = exp;
        reply.response.sn.max_cmdsn = max;
    }
    if !send(io, &reply) {
        shared.login_counts.count(LoginEnd::Abandoned);
        return None;
    }
    shared.login_counts.count(if a.discovery {
        LoginEnd::Discovery
    } else {
        LoginEnd::Normal
    });
    tracing::info!(initiator = ?a.initiator_name, %peer,
        target = target.as_ref().map(|t| t.iqn.as_str()).unwrap_or("(discovery)"),
        tsih, chap = ?a.chap,
        header_digest = neg.params.header_digest,
        data_digest = neg.params.data_digest, "login succeeded");
    Some(LoginOutcome {
        target,
        tpg,
        key,
        live,
        core,
        tsih,
        cid: a.cid,
        initiator_name: a.initiator_name,
        neg,
        discovery: a.discovery,
        statsn: a.statsn,
        exp_cmdsn: a.exp_cmdsn,
        window: a.window,
    })
}
