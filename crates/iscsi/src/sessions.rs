//! What the server shares with each live normal session: the LUN table the
//! session currently sees (swapped by the management side when a target is
//! reconfigured, picked up by the connection thread through an epoch check,
//! so the data path takes no lock per command), per-LUN I/O counters
//! (relaxed atomics), and the facts `sessions detail` shows. Also the rule
//! that decides what a live session may keep when the configuration
//! changes under it (`live_access`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use iscsi_wire::negotiate::SessionParams;
use target_core::LunTable;

use crate::{ChapCredentials, LunIo, TargetConfig, TpgConfig};

/// Counters of one mapped LUN in one session.
#[derive(Default)]
pub struct LunCounters {
    pub commands: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
}

impl LunCounters {
    /// Count one command. Only the session's own thread writes (readers
    /// just load), so a plain load and store suffice: no locked
    /// read-modify-write on the data path.
    pub fn count(&self, read: u64, written: u64) {
        let add = |a: &AtomicU64, n: u64| {
            a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed)
        };
        add(&self.commands, 1);
        add(&self.read_bytes, read);
        add(&self.write_bytes, written);
    }
}

/// A LUN table with one counter block per entry (same order as
/// `table.luns`).
#[derive(Clone)]
pub struct LunView {
    pub table: Arc<LunTable>,
    pub counters: Arc<[Arc<LunCounters>]>,
}

impl LunView {
    pub fn new(table: Arc<LunTable>) -> LunView {
        let counters = table.luns.iter().map(|_| Arc::default()).collect();
        LunView { table, counters }
    }

    /// A view of `table` that keeps the counters of LUNs this view already
    /// had (same LUN number and LU).
    fn successor(&self, table: Arc<LunTable>) -> LunView {
        let counters = table
            .luns
            .iter()
            .map(|l| {
                self.table
                    .luns
                    .iter()
                    .position(|o| o.id == l.id && o.device.id() == l.device.id())
                    .map_or_else(Arc::default, |i| Arc::clone(&self.counters[i]))
            })
            .collect();
        LunView { table, counters }
    }
}

/// Same LUN numbers, same LUs, same write protection.
pub fn same_table(a: &LunTable, b: &LunTable) -> bool {
    a.luns.len() == b.luns.len()
        && a.luns.iter().zip(&b.luns).all(|(x, y)| {
            x.id == y.id && x.write_protect == y.write_protect && x.device.id() == y.device.id()
        })
}

/// Which LUN table an initiator gets in a TPG: its ACL's, else the TPG's
/// when demo mode is on; `None` when it may not use the TPG at all.
pub fn table_for(tpg: &TpgConfig, initiator: &str) -> Option<(Arc<LunTable>, bool)> {
    if let Some(acl) = find_acl(tpg, initiator) {
        return Some((Arc::clone(&acl.luns), true));
    }
    demo_mode(tpg).then(|| (Arc::clone(&tpg.luns), false))
}

/// `t` without any LUN (its TPGs' and ACLs' tables emptied): what a
/// session of a removed target keeps until it ends, so that it no longer
/// holds the removed LUs' devices (their backstores stay open while
/// anything holds them). LIO ends such sessions at once; ours get the
/// logout grace period, with no LUN.
pub fn without_luns(t: &TargetConfig) -> TargetConfig {
    let mut t = t.clone();
    for g in &mut t.tpgs {
        g.luns = Arc::default();
        for a in &mut g.acls {
            a.luns = Arc::default();
        }
    }
    t
}

pub fn find_acl<'a>(tpg: &'a TpgConfig, initiator: &str) -> Option<&'a crate::AclConfig> {
    tpg.acls
        .iter()
        .find(|a| a.initiator.eq_ignore_ascii_case(initiator))
}

/// `generate_node_acls=1`: initiators without an ACL log in and see the
/// TPG's LUNs.
pub fn demo_mode(tpg: &TpgConfig) -> bool {
    tpg.attributes.generate_node_acls
}

/// Why a live session loses its access (for the log).
pub type Revoked = &'static str;

/// What a live session of `initiator` in TPG `tpgt` of `target` (`None`:
/// the target was removed) may use after a configuration change: the LUN
/// table a fresh login would get now (and whether it comes from an ACL),
/// provided the session passed the authentication such a login must pass.
///
/// Authentication happens once, at login; an ACL created, replaced or
/// given credentials afterwards was never checked against this session.
/// (LIO turns the dynamic ACL of a demo-mode session into the new explicit
/// ACL in place, `core_tpg_add_initiator_node_acl`, so the session runs on
/// under an ACL whose CHAP it never passed: the hole this rule closes.) So:
/// if a login now requires CHAP and the session did not prove the very
/// credentials it would now be checked against (same userid and secret:
/// the mutual pair only protects the initiator), it loses access and is
/// logged out; it may re-login with them. Otherwise it follows the new
/// mapping, as LIO does: that is what a fresh login would get anyway.
pub fn live_access(
    target: Option<&TargetConfig>,
    tpgt: u16,
    initiator: &str,
    proved: Option<&ChapCredentials>,
) -> Result<(Arc<LunTable>, bool), Revoked> {
    let Some(t) = target else {
        return Err("target removed");
    };
    let Some(tpg) = t.tpgs.iter().find(|g| g.tag == tpgt && g.enable) else {
        return Err("TPG disabled or removed");
    };
    let Some(found) = table_for(tpg, initiator) else {
        return Err("no ACL and no demo mode for this initiator");
    };
    match crate::login::login_requires(tpg, find_acl(tpg, initiator)) {
        None => Ok(found),
        Some(Some(c))
            if proved.is_some_and(|p| p.userid == c.userid && p.password == c.password) =>
        {
            Ok(found)
        }
        Some(_) => Err("its ACL or TPG now requires authentication it did not pass"),
    }
}

/// Shared between the server's registry and the session's thread.
pub struct SessionLive {
    /// Bumped (Release) after every `install`; the session compares it with
    /// the epoch it last loaded.
    pub epoch: AtomicU64,
    view: Mutex<LunView>,
    pub local: SocketAddr,
    pub cid: u16,
    /// The table comes from a node ACL (false: demo mode); follows `install`.
    pub acl: AtomicBool,
    pub authenticated: bool,
    /// The credentials CHAP checked at login (`None`: no CHAP): what
    /// `live_access` holds later ACL and TPG changes against.
    pub proved: Option<ChapCredentials>,
    /// Access was taken away (`revoke`); the session is being logged out
    /// and never gets a table again.
    revoked: AtomicBool,
    pub params: SessionParams,
}

impl SessionLive {
    pub fn new(
        table: Arc<LunTable>,
        local: SocketAddr,
        cid: u16,
        acl: bool,
        proved: Option<ChapCredentials>,
        params: SessionParams,
    ) -> SessionLive {
        SessionLive {
            epoch: AtomicU64::new(0),
            view: Mutex::new(LunView::new(table)),
            local,
            cid,
            acl: AtomicBool::new(acl),
            authenticated: proved.is_some(),
            proved,
            revoked: AtomicBool::new(false),
            params,
        }
    }

    pub fn view(&self) -> LunView {
        self.view.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Give the session `table` (from an ACL or not) unless it already has
    /// an equal one. Returns whether the table changed.
    pub fn install(&self, table: Arc<LunTable>, acl: bool) -> bool {
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the view lock: a revoke cannot be undone by an
        // install racing with it.
        if self.revoked.load(Ordering::Relaxed) {
            return false;
        }
        self.acl.store(acl, Ordering::Relaxed);
        if same_table(&v.table, &table) {
            return false;
        }
        *v = v.successor(table);
        self.epoch.fetch_add(1, Ordering::Release);
        true
    }

    /// Take every LUN away at once (the next command of the session finds
    /// none), for good: the session is being logged out, and during the
    /// logout grace period it must not be served from the access it lost.
    /// Returns false if it was already revoked.
    pub fn revoke(&self) -> bool {
        let mut v = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if self.revoked.swap(true, Ordering::Relaxed) {
            return false;
        }
        self.acl.store(false, Ordering::Relaxed);
        *v = LunView::new(Arc::new(LunTable::default()));
        self.epoch.fetch_add(1, Ordering::Release);
        true
    }

    /// Per-LUN counters for `sessions detail`.
    pub fn lun_io(&self) -> Vec<LunIo> {
        let v = self.view();
        v.table
            .luns
            .iter()
            .zip(v.counters.iter())
            .map(|(l, c)| LunIo {
                lun: l.id,
                device: l.device.options.name.clone(),
                write_protect: l.write_protect,
                commands: c.commands.load(Ordering::Relaxed),
                read_bytes: c.read_bytes.load(Ordering::Relaxed),
                write_bytes: c.write_bytes.load(Ordering::Relaxed),
            })
            .collect()
    }
}

/// Negotiated parameters with their RFC 7143 key names.
pub fn param_list(p: &SessionParams) -> Vec<(String, String)> {
    let yn = |b: bool| if b { "Yes" } else { "No" }.to_string();
    let dg = |b: bool| if b { "CRC32C" } else { "None" }.to_string();
    vec![
        ("HeaderDigest".into(), dg(p.header_digest)),
        ("DataDigest".into(), dg(p.data_digest)),
        ("MaxConnections".into(), p.max_connections.to_string()),
        ("InitialR2T".into(), yn(p.initial_r2t)),
        ("ImmediateData".into(), yn(p.immediate_data)),
        (
            "MaxRecvDataSegmentLength".into(),
            p.target_mrdsl.to_string(),
        ),
        (
            "MaxXmitDataSegmentLength".into(),
            p.initiator_mrdsl.to_string(),
        ),
        ("MaxBurstLength".into(), p.max_burst_length.to_string()),
        ("FirstBurstLength".into(), p.first_burst_length.to_string()),
        ("DefaultTime2Wait".into(), p.default_time2wait.to_string()),
        (
            "DefaultTime2Retain".into(),
            p.default_time2retain.to_string(),
        ),
        (
            "MaxOutstandingR2T".into(),
            p.max_outstanding_r2t.to_string(),
        ),
        ("DataPDUInOrder".into(), yn(p.data_pdu_in_order)),
        ("DataSequenceInOrder".into(), yn(p.data_sequence_in_order)),
        (
            "ErrorRecoveryLevel".into(),
            p.error_recovery_level.to_string(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use target_core::{Device, DeviceOptions, Lun};

    fn dev(name: &str) -> Arc<Device> {
        let b = Arc::new(backstore::RamBackstore::new(1 << 20).unwrap());
        Device::new(DeviceOptions::new(name, "uuid"), b)
    }

    fn table(l: &[(u64, &Arc<Device>, bool)]) -> Arc<LunTable> {
        Arc::new(LunTable {
            luns: l
                .iter()
                .map(|(id, d, wp)| Lun {
                    id: *id,
                    device: Arc::clone(d),
                    write_protect: *wp,
                })
                .collect(),
        })
    }

    #[test]
    fn install_swaps_only_real_changes_and_keeps_counters() {
        let (a, b) = (dev("a"), dev("b"));
        let live = SessionLive::new(
            table(&[(0, &a, false)]),
            "127.0.0.1:3260".parse().unwrap(),
            0,
            false,
            None,
            SessionParams::default(),
        );
        live.view().counters[0]
            .commands
            .fetch_add(5, Ordering::Relaxed);
        // Equal table (new Arc, same content): no epoch bump.
        assert!(!live.install(table(&[(0, &a, false)]), false));
        assert_eq!(live.epoch.load(Ordering::Acquire), 0);
        assert!(live.install(table(&[(0, &a, false), (1, &b, false)]), false));
        assert_eq!(live.epoch.load(Ordering::Acquire), 1);
        let io = live.lun_io();
        assert_eq!((io[0].lun, io[0].commands), (0, 5));
        assert_eq!((io[1].lun, io[1].commands), (1, 0));
        // write_protect flips count as a change.
        assert!(live.install(table(&[(0, &a, true), (1, &b, false)]), true));
        assert!(live.acl.load(Ordering::Relaxed));
    }

    #[test]
    fn acl_or_demo_mode_decides_the_table() {
        let a = dev("a");
        let mut tpg = TpgConfig {
            tag: 1,
            relative_port_id: 1,
            enable: true,
            portals: vec![],
            luns: table(&[(0, &a, false)]),
            acls: vec![crate::AclConfig {
                initiator: "iqn.x:Init".into(),
                luns: table(&[(3, &a, true)]),
                chap: None,
                attributes: Default::default(),
            }],
            attributes: Default::default(),
            chap: None,
            offer: Default::default(),
        };
        let (t, acl) = table_for(&tpg, "IQN.X:init").unwrap();
        assert!(acl && t.luns[0].id == 3);
        assert!(table_for(&tpg, "iqn.other").is_none());
        tpg.attributes.generate_node_acls = true;
        let (t, acl) = table_for(&tpg, "iqn.other").unwrap();
        assert!(!acl && t.luns[0].id == 0);
        // What a removed target's sessions keep: no LUN, through the TPG
        // or an ACL; the rest as it was.
        let gone = without_luns(&TargetConfig {
            iqn: "iqn.t".into(),
            tpgs: vec![tpg],
        });
        let g = &gone.tpgs[0];
        assert!(g.luns.luns.is_empty() && g.acls[0].luns.luns.is_empty());
        assert!(table_for(g, "iqn.x:init").is_some_and(|(t, acl)| acl && t.luns.is_empty()));
    }

    fn creds(user: &str, secret: &str, mutual: Option<&str>) -> ChapCredentials {
        ChapCredentials {
            userid: user.into(),
            password: secret.into(),
            mutual_userid: mutual.map(|_| "tgt".into()),
            mutual_password: mutual.map(Into::into),
        }
    }

    #[test]
    fn live_access_holds_sessions_to_the_authentication_a_login_needs_now() {
        let a = dev("a");
        let tpg = |acl_chap: Option<ChapCredentials>, tpg_auth: &str| TpgConfig {
            tag: 1,
            relative_port_id: 1,
            enable: true,
            portals: vec![],
            luns: table(&[(0, &a, true)]),
            acls: vec![crate::AclConfig {
                initiator: "iqn.x:acl".into(),
                luns: table(&[(0, &a, false)]),
                chap: acl_chap,
                attributes: Default::default(),
            }],
            attributes: config::TpgAttributes {
                generate_node_acls: true,
                authentication: Some(tpg_auth == "1"),
                ..Default::default()
            },
            chap: Some(creds("demo", "demosecret12", None)),
            offer: Default::default(),
        };
        let target = |g: TpgConfig| TargetConfig {
            iqn: "iqn.t".into(),
            tpgs: vec![g],
        };
        let ok = |t: &TargetConfig, who: &str, p: Option<&ChapCredentials>| {
            live_access(Some(t), 1, who, p).map(|(t, acl)| (t.luns[0].write_protect, acl))
        };
        let good = creds("host", "hostsecret12", None);
        // An ACL without credentials in a TPG without authentication: any
        // session follows it (a login without CHAP gets the same).
        let t = target(tpg(None, "0"));
        assert_eq!(ok(&t, "iqn.x:acl", None), Ok((false, true)));
        assert_eq!(ok(&t, "iqn.x:demo", None), Ok((true, false)));
        // The ACL now has credentials: only a session that proved them.
        let t = target(tpg(Some(good.clone()), "0"));
        assert!(ok(&t, "iqn.x:acl", None).is_err());
        assert!(ok(&t, "iqn.x:acl", Some(&creds("host", "othersecret1", None))).is_err());
        assert!(ok(&t, "iqn.x:acl", Some(&creds("other", "hostsecret12", None))).is_err());
        assert_eq!(ok(&t, "iqn.x:acl", Some(&good)), Ok((false, true)));
        // The mutual pair protects the initiator, not the LUNs.
        let m = creds("host", "hostsecret12", Some("tgtsecret123"));
        assert_eq!(ok(&t, "iqn.x:acl", Some(&m)), Ok((false, true)));
        // Demo sessions and the TPG's authentication and credentials.
        assert_eq!(ok(&t, "iqn.x:demo", None), Ok((true, false)));
        let t = target(tpg(None, "1"));
        assert!(ok(&t, "iqn.x:demo", None).is_err());
        assert!(ok(&t, "iqn.x:demo", Some(&good)).is_err());
        let demo = creds("demo", "demosecret12", None);
        assert_eq!(ok(&t, "iqn.x:demo", Some(&demo)), Ok((true, false)));
        // An ACL without credentials follows the TPG's authentication, but
        // the TPG's credentials serve demo mode only: no login passes.
        assert!(ok(&t, "iqn.x:acl", None).is_err());
        assert!(ok(&t, "iqn.x:acl", Some(&demo)).is_err());
        // TPG disabled, target removed, no demo mode for the initiator.
        let mut g = tpg(None, "0");
        g.enable = false;
        assert!(ok(&target(g), "iqn.x:acl", None).is_err());
        assert!(live_access(None, 1, "iqn.x:acl", None).is_err());
        let mut g = tpg(None, "0");
        g.attributes.generate_node_acls = false;
        let t = target(g);
        assert!(ok(&t, "iqn.x:demo", None).is_err());
        assert!(live_access(Some(&t), 2, "iqn.x:acl", None).is_err());
    }

    #[test]
    fn a_revoked_session_sees_no_lun_and_never_gets_one_again() {
        let a = dev("a");
        let live = SessionLive::new(
            table(&[(0, &a, false)]),
            "127.0.0.1:3260".parse().unwrap(),
            0,
            true,
            None,
            SessionParams::default(),
        );
        assert!(live.revoke());
        assert_eq!(live.epoch.load(Ordering::Acquire), 1);
        assert!(live.view().table.luns.is_empty());
        assert!(!live.acl.load(Ordering::Relaxed));
        assert!(!live.revoke());
        assert!(!live.install(table(&[(0, &a, false)]), true));
        assert!(live.view().table.luns.is_empty());
        assert_eq!(live.epoch.load(Ordering::Acquire), 1);
    }
}
