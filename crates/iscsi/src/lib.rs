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

/// The iSCSI fabric: listeners, targets and live sessions.
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
