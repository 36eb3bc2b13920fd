//! iSCSI fabric (RFC 7143, ErrorRecoveryLevel 0): portals, login, sessions,
//! connections and the full-feature data path. It moves SCSI commands and
//! data between TCP and the target core; it never interprets a CDB.
//!
//! Each connection runs to completion on its own thread (`conn`): the fast
//! path for LUs whose `io_engine` is inline. Commands of pool LUs, long
//! commands (`target_core::may_run_long`) and commands task ordering holds
//! back go to the I/O engine (`target_core::engine`) while the connection
//! keeps serving; their answers are sent by the connection thread
//! (`offload`, the adapter), so sequence numbers and PDU order stay
//! single-threaded.
//!
//! PUBLIC API CONTRACT (used by the `rtarget` binary): the items below keep
//! these names and signatures; add to them, don't rename them.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use target_core::LunTable;

pub use busypoll::PollStats;
pub use flow_cpu::FlowCpuStats;
pub use iscsi_wire::chap::ChapCredentials;
/// The iSCSI name rule logins are checked against (`acls create` uses it too).
pub use iscsi_wire::name::valid_name as valid_iscsi_name;
pub use iscsi_wire::negotiate::TargetOffer;

mod admission;
mod busypoll;
mod closer;
mod cmd_flags;
mod conn;
mod dataout;
mod direct;
mod discovery;
mod flow_cpu;
mod landed_write;
mod lent_read;
mod login;
mod logout;
mod mcs;
mod offload;
mod prefetch;
mod read_overlap;
mod refused_write;
mod rx_wait;
mod send_tune;
mod server;
mod session;
mod session_core;
mod sessions;
mod split_flush;
mod streamed_write;
#[cfg(feature = "testing")]
pub mod test_hooks;
mod tmf;
mod tmf_mcs;
mod tmf_sam4;
mod txq;
mod write_overlap;

/// One target portal group as the fabric needs it.
#[derive(Clone)]
pub struct TpgConfig {
    /// Target portal group tag (1-based, `tpg1` is tag 1).
    pub tag: u16,
    /// Relative target port identifier of this TPG (SPC-4 VPD 0x83, RTPG,
    /// PR): unique among all target ports of the daemon, so one LU mapped
    /// through several targets' TPGs tells its paths apart. Whoever builds
    /// the configuration assigns it (rtarget: 1-based position of the TPG
    /// among all iSCSI TPGs in the configuration).
    pub relative_port_id: u16,
    pub enable: bool,
    /// Portals advertised in SendTargets for this TPG.
    pub portals: Vec<SocketAddr>,
    /// LUNs an initiator without a node ACL sees when
    /// `generate_node_acls=1` (LIO's demo mode; `demo_mode_write_protect`
    /// is already applied to these mappings by whoever builds the table).
    pub luns: Arc<LunTable>,
    /// Node ACLs: initiators with their own mapped LUNs and credentials.
    /// With `generate_node_acls=0` only these initiators may log in.
    pub acls: Vec<AclConfig>,
    /// TPG attributes (`authentication`, `generate_node_acls`,
    /// `default_cmdsn_depth`, `login_timeout`, ...), parsed and range-checked
    /// once by whoever builds the configuration (`config::TpgAttributes`).
    pub attributes: config::TpgAttributes,
    /// CHAP credentials of initiators without an ACL (targetcli's `set
    /// auth` on the TPG; rtslib's `chap_*` keys).
    pub chap: Option<ChapCredentials>,
    /// The target's offers and limits for negotiation: the TPG's iSCSI
    /// parameters (`MaxRecvDataSegmentLength`, `ImmediateData`,
    /// `InitialR2T`, `HeaderDigest`, ...) parsed once by whoever builds the
    /// configuration ([`tpg_offer`]).
    pub offer: TargetOffer,
}

/// The negotiation offer of a TPG with these iSCSI parameters (RFC 7143
/// key names as targetcli shows them; keys the target does not negotiate,
/// such as LIO's markers, are ignored). A value out of its range is an
/// error naming the key.
pub fn tpg_offer<'a, I>(parameters: I) -> Result<TargetOffer, String>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut offer = TargetOffer::default();
    for (k, v) in parameters {
        offer
            .apply_parameter(k, v)
            .map_err(|e| format!("parameter {k}: {e}"))?;
    }
    Ok(offer)
}

/// One node ACL of a TPG (targetcli `/iscsi/WWN/tpgN/acls/IQN`).
#[derive(Clone)]
pub struct AclConfig {
    /// Initiator IQN (compared case-insensitively, as iSCSI names are).
    pub initiator: String,
    /// The mapped LUNs (mapped LUN number as `Lun::id`, with `write_protect`).
    pub luns: Arc<LunTable>,
    /// CHAP credentials of this initiator (`set auth` on the ACL).
    pub chap: Option<ChapCredentials>,
    /// LIO's node attributes: `authentication` (when `None`, an ACL with
    /// credentials requires CHAP and one without inherits the TPG's
    /// `authentication`: so one TPG can mix both kinds) and
    /// `tmr_warm_reset` / `tmr_cold_reset` (whether this initiator may reset
    /// the target).
    pub attributes: config::AclAttributes,
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
    /// CIDs of its connections (several with MC/S), the leading one first.
    pub cids: Vec<u16>,
}

/// I/O counters of one mapped LUN within one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LunIo {
    /// LUN number as the initiator sees it.
    pub lun: u64,
    /// Storage object name of the LU.
    pub device: String,
    pub write_protect: bool,
    /// SCSI commands addressed to this LUN.
    pub commands: u64,
    /// Data-In bytes sent.
    pub read_bytes: u64,
    /// Data-Out bytes received.
    pub write_bytes: u64,
}

/// One connection of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub cid: u16,
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// One live session in detail (`sessions detail`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDetail {
    pub info: SessionInfo,
    /// Our address of the connection (its peer is `info.peer`).
    pub local: SocketAddr,
    pub cid: u16,
    /// Every connection of the session (MC/S), the leading one first.
    pub connections: Vec<ConnectionInfo>,
    /// Logged in through a node ACL (false: a generated, demo-mode session).
    pub acl: bool,
    /// CHAP authenticated the initiator.
    pub authenticated: bool,
    /// Negotiated operational parameters, RFC 7143 key names.
    pub parameters: Vec<(String, String)>,
    /// The LUNs the session currently sees, with their counters.
    pub luns: Vec<LunIo>,
}

/// The iSCSI fabric: listeners, targets and live sessions.
///
/// TPG attributes read (targetcli names): `authentication` (1 = CHAP
/// required) with the TPG's CHAP credentials;
/// `default_cmdsn_depth` (command window, default 128), `login_timeout`
/// (seconds, default 15), `nopin_timeout` / `nopin_response_timeout`
/// (idle ping and its deadline, default 15 / 30 s; 0 disables the ping);
/// `generate_node_acls` (1 = initiators without an ACL get the TPG's LUNs,
/// 0 = only ACL initiators log in, others get login status 02/02);
/// `demo_mode_discovery` (0 = SendTargets hides a TPG from initiators
/// that cannot log in to it). ACL attributes read: `authentication`,
/// `tmr_warm_reset` / `tmr_cold_reset` (TARGET WARM / COLD RESET from the
/// ACL's initiator; refused with "authorization failed" unless set, as in
/// LIO; initiators without an ACL may reset the target).
/// TPG parameters override the negotiation offers (`MaxRecvDataSegmentLength`,
/// `MaxBurstLength`, `FirstBurstLength`, `ImmediateData`, `InitialR2T`,
/// `MaxOutstandingR2T`, `HeaderDigest`, `DataDigest`, `DefaultTime2Wait`,
/// `DefaultTime2Retain`, `ErrorRecoveryLevel`, `TargetAlias`, ...);
/// `MaxConnections` (default 1) allows sessions of several connections
/// (MC/S, docs/mcs.md).
/// Connection and login limits: see `admission.rs` (and the README).
pub struct IscsiServer {
    shared: Arc<server::Shared>,
}

impl IscsiServer {
    pub fn new() -> Arc<IscsiServer> {
        Arc::new(IscsiServer {
            shared: Arc::new(server::Shared::new()),
        })
    }

    /// Add or replace (by IQN) a target. New logins use it at once; live
    /// sessions see a changed LUN table on their next command (with a
    /// REPORTED LUNS DATA HAS CHANGED unit attention). Sessions whose TPG
    /// was disabled or removed, whose ACL was removed without demo mode to
    /// fall back on, or which did not pass the authentication a login now
    /// needs (an ACL with CHAP created for a session that logged in
    /// without, changed credentials: see `sessions::live_access`) lose
    /// every LUN before this returns, are asked to log out and then closed.
    pub fn set_target(&self, target: TargetConfig) {
        self.shared.set_target(target);
    }

    /// Remove a target (by IQN); its live sessions lose every LUN at once,
    /// get an Async logout request and are closed after a grace period.
    /// Returns false
    /// if no such target was configured.
    pub fn remove_target(&self, iqn: &str) -> bool {
        self.shared.remove_target(iqn)
    }

    /// Live normal sessions (discovery sessions are not listed).
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.shared.sessions()
    }

    /// Start accepting connections on `addr` (a thread per listener; a
    /// thread per connection; pool LUs share one worker pool, started on
    /// first use). Returns the bound address (port 0 allowed).
    pub fn listen(self: &Arc<Self>, addr: SocketAddr) -> io::Result<SocketAddr> {
        server::listen(&self.shared, addr)
    }

    /// Close the listener bound for `addr` (the address given to `listen`
    /// or the one it returned). Established connections continue. Returns
    /// false if no such listener exists.
    pub fn stop_listening(&self, addr: SocketAddr) -> bool {
        server::stop_listening(&self.shared, addr)
    }

    /// Require CHAP for discovery sessions with these credentials (`None`:
    /// discovery needs no authentication). Takes effect for new logins.
    pub fn set_discovery_auth(&self, creds: Option<ChapCredentials>) {
        self.shared.set_discovery_auth(creds);
    }

    /// Live normal sessions with connections, negotiated parameters and
    /// per-LUN I/O counters.
    pub fn sessions_detail(&self) -> Vec<SessionDetail> {
        self.shared.sessions_detail()
    }

    /// Logins since the server started by outcome: (result, reason,
    /// count), `("success", "normal" | "discovery", n)` or `("failure",
    /// reason, n)`, every outcome listed (zeros too).
    pub fn login_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.shared.login_counts.snapshot()
    }

    /// Busy polling since the server started, summed over connections
    /// (`busy_poll_us`: spins that found data, ran out, yielded the CPU,
    /// waits not spun for, time spun).
    pub fn busy_poll_counts(&self) -> PollStats {
        self.shared.busy_polls.snapshot()
    }

    /// Moves of connection threads onto their flow's CPU and back since
    /// the server started (`follow_flow_cpu`).
    pub fn flow_cpu_counts(&self) -> FlowCpuStats {
        self.shared.flow_cpu.snapshot()
    }

    /// PDUs since the server started whose data segment went straight
    /// from the socket into a write task's buffer: (Data-Out, SCSI
    /// Commands with immediate data).
    pub fn direct_receives(&self) -> (u64, u64) {
        let d = &self.shared.direct_rx;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        (get(&d.data_out), get(&d.immediate))
    }

    /// Data-Out PDUs since the server started whose data landed straight
    /// in the medium (`landed_write`), and the bytes that did.
    pub fn landed_receives(&self) -> (u64, u64) {
        let d = &self.shared.direct_rx;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        (get(&d.landed), get(&d.landed_bytes))
    }

    /// Bytes of live lent READs (a tmpfs fileio LU's pages sent without a
    /// copy of ours, `lent_read`) since the server started, and those of
    /// them copied after all because the initiator was slow to read.
    pub fn live_lent_sends(&self) -> (u64, u64) {
        let d = &self.shared.lent_tx;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        (get(&d.live_bytes), get(&d.copied_bytes))
    }

    /// Stop listening, log every session out (Async Message where possible,
    /// then close), and return when all connection threads have ended.
    pub fn shutdown(&self) {
        server::shutdown(&self.shared);
    }
}
