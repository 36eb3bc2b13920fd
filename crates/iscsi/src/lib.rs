//! iSCSI fabric (RFC 7143, ErrorRecoveryLevel 0): portals, login, sessions,
//! connections and the full-feature data path. It moves SCSI commands and
//! data between TCP and the target core; it never interprets a CDB (except
//! for the write transfer length, see `residual`).
//!
//! PUBLIC API CONTRACT (used by the `rtarget` binary): the items below keep
//! these names and signatures; add to them, don't rename them.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use target_core::LunTable;

mod conn;
mod dataout;
mod discovery;
mod login;
mod residual;
mod server;
mod session;
mod tmf;
mod txq;

/// One target portal group as the fabric needs it.
#[derive(Clone)]
pub struct TpgConfig {
    /// Target portal group tag (1-based, `tpg1` is tag 1).
    pub tag: u16,
    pub enable: bool,
    /// Portals advertised in SendTargets for this TPG.
    pub portals: Vec<SocketAddr>,
    /// LUNs every initiator sees (generate_node_acls=1, the foundation's mode).
    pub luns: Arc<LunTable>,
    /// TPG attributes as in targetcli (`authentication`, `generate_node_acls`,
    /// `default_cmdsn_depth`, `login_timeout`, ...), string values.
    pub attributes: BTreeMap<String, String>,
    /// iSCSI parameters as in targetcli (`MaxRecvDataSegmentLength`,
    /// `ImmediateData`, `InitialR2T`, `HeaderDigest`, ...): the target's
    /// offers and limits for negotiation.
    pub parameters: BTreeMap<String, String>,
}

/// One iSCSI target (an IQN with its TPGs).
#[derive(Clone)]
pub struct TargetConfig {
    pub iqn: String,
    pub tpgs: Vec<TpgConfig>,
}

/// One live (normal) session, as `targetcli sessions` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub initiator: String,
    pub isid: [u8; 6],
    pub target: String,
    pub tpg_tag: u16,
    pub tsih: u16,
    pub peer: SocketAddr,
}

/// The iSCSI fabric: listeners, targets and live sessions.
///
/// TPG attributes read (targetcli names): `authentication` (1 = CHAP
/// required) with `userid`, `password`, `mutual_userid`, `mutual_password`;
/// `default_cmdsn_depth` (command window, default 128), `login_timeout`
/// (seconds, default 15), `nopin_timeout` / `nopin_response_timeout`
/// (idle ping and its deadline, default 15 / 30 s; 0 disables the ping).
/// TPG parameters override the negotiation offers (`MaxRecvDataSegmentLength`,
/// `MaxBurstLength`, `FirstBurstLength`, `ImmediateData`, `InitialR2T`,
/// `MaxOutstandingR2T`, `HeaderDigest`, `DataDigest`, `DefaultTime2Wait`,
/// `DefaultTime2Retain`, `ErrorRecoveryLevel`, `TargetAlias`, ...).
pub struct IscsiServer {
    shared: Arc<server::Shared>,
}

impl IscsiServer {
    pub fn new() -> Arc<IscsiServer> {
        Arc::new(IscsiServer {
            shared: Arc::new(server::Shared::new()),
        })
    }

    /// Add or replace (by IQN) a target. Takes effect for new logins.
    pub fn set_target(&self, target: TargetConfig) {
        self.shared.set_target(target);
    }

    /// Remove a target (by IQN) and close its live sessions. Returns false
    /// if no such target was configured.
    pub fn remove_target(&self, iqn: &str) -> bool {
        self.shared.remove_target(iqn)
    }

    /// Live normal sessions (discovery sessions are not listed).
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared.sessions()
    }

    /// Start accepting connections on `addr` (a thread per listener; a
    /// thread per connection). Returns the bound address (port 0 allowed).
    pub fn listen(self: &Arc<Self>, addr: SocketAddr) -> io::Result<SocketAddr> {
        server::listen(&self.shared, addr)
    }

    /// Stop listening, log every session out (Async Message where possible,
    /// then close), and return when all connection threads have ended.
    pub fn shutdown(&self) {
        server::shutdown(&self.shared);
    }
}
