//! Reconcile: the minimal set of changes that turns the running state built
//! from one config (`running`) into the one `wanted` describes. Start-up is
//! a reconcile from [`SaveConfig::default`] (nothing runs), so a daemon
//! builds its objects at start-up and for live changes with one code path.
//!
//! What is compared:
//! - storage objects by path (`/backstores/PLUGIN/NAME`) and every saved
//!   field but their ALUA groups (those change on the running device,
//!   without reopening it);
//! - iSCSI targets TPG by TPG: a TPG's view changes with its own config,
//!   its relative port id, or a storage object behind one of its LUNs being
//!   reopened. Only targets with such a TPG (or new, or with TPGs gone) are
//!   handed to the fabric again, so the sessions of untouched targets are
//!   not even looked at;
//! - the portals to listen on (the listen set of every enabled TPG);
//! - the iSCSI fabric module (discovery authentication).

use std::collections::HashSet;
use std::net::SocketAddr;

use config::{fabric, parse_ip, FabricModule, SaveConfig, StorageObject, Target, Tpg};

/// What to change, in the order a daemon applies it: open objects, close
/// and bind portals, configure and remove targets, discovery
/// authentication, then flush and drop the closed objects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Storage objects to open (new, or changed), by path, in config order.
    pub open: Vec<String>,
    /// Running storage objects that stay as they are (same device).
    pub keep: Vec<String>,
    /// Running storage objects that go (deleted, or replaced by a reopen).
    pub close: Vec<String>,
    /// iSCSI targets to hand to the fabric again, in config order.
    pub targets: Vec<TargetChange>,
    /// iSCSI targets (WWNs) that are no longer configured.
    pub remove: Vec<String>,
    /// Portals to stop listening on (before `listen`: a specific address
    /// may replace a wildcard on the same port).
    pub unlisten: Vec<SocketAddr>,
    /// Portals to start listening on.
    pub listen: Vec<SocketAddr>,
    /// The iSCSI fabric module's settings (discovery CHAP) changed.
    pub discovery_auth: bool,
    /// vhost targets to start, restart or give a new LUN table.
    pub vhost: Vec<crate::reconcile_vhost::VhostChange>,
    /// vhost targets to stop (deleted or disabled).
    pub vhost_remove: Vec<String>,
    /// loopback targets to start, restart or give a new LUN table.
    pub loopback: Vec<crate::reconcile_loopback::LoopbackChange>,
    /// loopback targets to stop (deleted or disabled).
    pub loopback_remove: Vec<String>,
}

/// One iSCSI target whose fabric view changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetChange {
    pub wwn: String,
    /// Not running before.
    pub new: bool,
    /// Tags of the TPGs that are new or whose view changed.
    pub tpgs: Vec<u16>,
    /// Tags of the TPGs that are gone.
    pub removed_tpgs: Vec<u16>,
}

impl Plan {
    pub fn new(running: &SaveConfig, wanted: &SaveConfig) -> Plan {
        let mut plan = Plan::default();
        plan.objects(running, wanted);
        plan.targets(running, wanted);
        let (before, after) = (wanted_portals(running), wanted_portals(wanted));
        plan.unlisten = before
            .iter()
            .filter(|a| !after.contains(a))
            .copied()
            .collect();
        plan.listen = after
            .iter()
            .filter(|a| !before.contains(a))
            .copied()
            .collect();
        plan.discovery_auth = iscsi_module(running) != iscsi_module(wanted);
        let reopened: HashSet<&str> = plan.open.iter().map(String::as_str).collect();
        (plan.vhost, plan.vhost_remove) = crate::reconcile_vhost::plan(running, wanted, &reopened);
        (plan.loopback, plan.loopback_remove) =
            crate::reconcile_loopback::plan(running, wanted, &reopened);
        plan
    }

    /// Nothing to do: the running state already is the wanted one.
    pub fn is_empty(&self) -> bool {
        *self
            == Plan {
                keep: self.keep.clone(),
                ..Plan::default()
            }
    }

    fn objects(&mut self, running: &SaveConfig, wanted: &SaveConfig) {
        for so in &wanted.storage_objects {
            let path = so.path();
            match running.storage_objects.iter().find(|o| o.path() == path) {
                Some(old) if same_object(old, so) => self.keep.push(path),
                Some(_) => {
                    self.close.push(path.clone());
                    self.open.push(path);
                }
                None => self.open.push(path),
            }
        }
        for old in &running.storage_objects {
            let path = old.path();
            if !wanted.storage_objects.iter().any(|o| o.path() == path) {
                self.close.push(path);
            }
        }
    }

    fn targets(&mut self, running: &SaveConfig, wanted: &SaveConfig) {
        let reopened: HashSet<&str> = self.open.iter().map(String::as_str).collect();
        for t in wanted.iscsi_targets() {
            let old = running.iscsi_targets().find(|o| o.wwn == t.wwn);
            let mut change = TargetChange {
                wwn: t.wwn.clone(),
                new: old.is_none(),
                ..TargetChange::default()
            };
            for (tag, tpg) in t.tagged_tpgs() {
                let before = old.and_then(|o| tpg_of(o, tag));
                let same = before.is_some_and(|b| b == tpg)
                    && relative_port_id(running, &t.wwn, tag)
                        == relative_port_id(wanted, &t.wwn, tag)
                    && !tpg
                        .luns
                        .iter()
                        .any(|l| reopened.contains(l.storage_object.as_str()));
                if !same {
                    change.tpgs.push(tag);
                }
            }
            if let Some(o) = old {
                change.removed_tpgs = o
                    .tagged_tpgs()
                    .map(|(tag, _)| tag)
                    .filter(|tag| tpg_of(t, *tag).is_none())
                    .collect();
            }
            if change.new || !change.tpgs.is_empty() || !change.removed_tpgs.is_empty() {
                self.targets.push(change);
            }
        }
        self.remove = running
            .iscsi_targets()
            .filter(|o| !wanted.iscsi_targets().any(|t| t.wwn == o.wwn))
            .map(|o| o.wwn.clone())
            .collect();
    }
}

/// The same object but for its ALUA groups.
fn same_object(old: &StorageObject, new: &StorageObject) -> bool {
    StorageObject {
        alua_tpgs: new.alua_tpgs.clone(),
        ..old.clone()
    } == *new
}

fn tpg_of(t: &Target, tag: u16) -> Option<&Tpg> {
    t.tagged_tpgs().find(|(g, _)| *g == tag).map(|(_, tpg)| tpg)
}

fn iscsi_module(cfg: &SaveConfig) -> Option<&FabricModule> {
    cfg.fabric_modules.iter().find(|m| m.name == fabric::ISCSI)
}

/// The relative target port identifier of iSCSI target `wwn`'s TPG `tag`:
/// its 1-based position among every iSCSI TPG of the configuration, so each
/// target port of the daemon has its own (one LU exported through two
/// targets' tpg1 must not show the same port twice in RTPG or VPD 0x83).
/// For the usual one-target configuration it equals the TPG tag.
pub fn relative_port_id(cfg: &SaveConfig, wwn: &str, tag: u16) -> u16 {
    let mut n: u16 = 0;
    for t in cfg.iscsi_targets() {
        for (g, _) in t.tagged_tpgs() {
            n = n.saturating_add(1);
            if t.wwn == wwn && g == tag {
                return n;
            }
        }
    }
    // Not in the configuration (cannot happen for a TPG built from it).
    tag
}

/// What to listen on for `cfg`: the union of the enabled iSCSI TPGs'
/// portals, in config order, without duplicates or addresses a wildcard
/// already covers. Addresses that do not parse (refused by validation) are
/// left out.
pub fn wanted_portals(cfg: &SaveConfig) -> Vec<SocketAddr> {
    let mut all = Vec::new();
    for (_, tpg) in cfg.iscsi_targets().flat_map(Target::tagged_tpgs) {
        if !tpg.enabled() {
            continue;
        }
        for p in &tpg.portals {
            if let Some(ip) = parse_ip(&p.ip_address) {
                let a = SocketAddr::new(ip, p.port);
                if !all.contains(&a) {
                    all.push(a);
                }
            }
        }
    }
    listen_set(&all)
}

/// Drop portals that a wildcard portal of the same family and port already
/// covers: binding both would fail with EADDRINUSE (LIO configs often list
/// 0.0.0.0:3260 in one TPG and a specific address in another).
pub fn listen_set(portals: &[SocketAddr]) -> Vec<SocketAddr> {
    let covered = |a: &SocketAddr| {
        !a.ip().is_unspecified()
            && portals.iter().any(|w| {
                w.ip().is_unspecified() && w.port() == a.port() && w.is_ipv4() == a.is_ipv4()
            })
    };
    portals.iter().filter(|a| !covered(a)).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "iqn.2026-11.org.example:a";
    const B: &str = "iqn.2026-11.org.example:b";

    /// Two objects, target A with two TPGs (tpg2 untagged: tag 2 by
    /// position), target B with one, discovery CHAP, a loopback target.
    fn sample() -> SaveConfig {
        serde_json::from_value(json!({
            "fabric_modules": [{"name": "iscsi", "discovery_enable_auth": true,
                "discovery_userid": "du", "discovery_password": "dpassword123"}],
            "storage_objects": [
                {"plugin": "ramdisk", "name": "r0", "size": 1048576},
                {"plugin": "ramdisk", "name": "r1", "size": 1048576}
            ],
            "targets": [
                {"fabric": "iscsi", "wwn": A, "tpgs": [
                    {"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/r0"}],
                     "portals": [{"ip_address": "0.0.0.0", "port": 3260}]},
                    {"luns": [{"index": 0, "storage_object": "/backstores/ramdisk/r1"}],
                     "portals": [{"ip_address": "127.0.0.1", "port": 3260}]}
                ]},
                {"fabric": "iscsi", "wwn": B, "tpgs": [
                    {"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/r1"}],
                     "portals": [{"ip_address": "127.0.0.1", "port": 3261}]}
                ]},
                {"fabric": "loopback", "wwn": "naa.5001405000000abc", "tpgs": []}
            ]
        }))
        .unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Start-up is a reconcile from nothing: every object opened, every
    /// iSCSI target with every TPG configured, every portal bound.
    #[test]
    fn start_up_from_empty_applies_every_object() {
        let cfg = sample();
        let plan = Plan::new(&SaveConfig::default(), &cfg);
        assert_eq!(
            plan.open,
            ["/backstores/ramdisk/r0", "/backstores/ramdisk/r1"]
        );
        assert!(plan.keep.is_empty() && plan.close.is_empty() && plan.remove.is_empty());
        let t: Vec<(&str, bool, &[u16])> = plan
            .targets
            .iter()
            .map(|c| (c.wwn.as_str(), c.new, c.tpgs.as_slice()))
            .collect();
        assert_eq!(t, [(A, true, &[1u16, 2][..]), (B, true, &[1][..])]);
        // 127.0.0.1:3260 is covered by the wildcard on the same port.
        assert_eq!(plan.listen, [addr("0.0.0.0:3260"), addr("127.0.0.1:3261")]);
        assert!(plan.unlisten.is_empty());
        assert!(plan.discovery_auth);
        // And tearing everything down is the mirror image.
        let down = Plan::new(&cfg, &SaveConfig::default());
        assert_eq!(down.close, plan.open);
        assert_eq!(down.remove, [A, B]);
        assert_eq!(down.unlisten, plan.listen);
        assert!(down.open.is_empty() && down.targets.is_empty() && down.listen.is_empty());
    }

    #[test]
    fn no_change_touches_nothing() {
        let cfg = sample();
        let plan = Plan::new(&cfg, &cfg.clone());
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.keep.len(), 2);
        assert!(Plan::new(&SaveConfig::default(), &SaveConfig::default()).is_empty());
        assert!(!Plan::new(&SaveConfig::default(), &cfg).is_empty());
    }

    #[test]
    fn a_lun_added_touches_only_its_tpg() {
        let old = sample();
        let mut new = old.clone();
        new.targets[0].tpgs[1].luns.push(config::Lun {
            index: 1,
            storage_object: "/backstores/ramdisk/r0".into(),
            ..Default::default()
        });
        let plan = Plan::new(&old, &new);
        assert_eq!(
            plan.targets,
            [TargetChange {
                wwn: A.into(),
                new: false,
                tpgs: vec![2],
                removed_tpgs: vec![],
            }]
        );
        assert!(plan.open.is_empty() && plan.close.is_empty());
        assert!(plan.listen.is_empty() && plan.unlisten.is_empty());
        assert!(plan.remove.is_empty() && !plan.discovery_auth);
    }

    /// A changed object is reopened and every TPG exporting it gets the
    /// new device; an ALUA-only change keeps the device.
    #[test]
    fn changed_objects_are_reopened_alua_changes_are_not() {
        let old = sample();
        let mut new = old.clone();
        new.storage_objects[1].write_back = Some(false);
        let plan = Plan::new(&old, &new);
        assert_eq!(plan.open, ["/backstores/ramdisk/r1"]);
        assert_eq!(plan.close, ["/backstores/ramdisk/r1"]);
        assert_eq!(plan.keep, ["/backstores/ramdisk/r0"]);
        let t: Vec<(&str, &[u16])> = plan
            .targets
            .iter()
            .map(|c| (c.wwn.as_str(), c.tpgs.as_slice()))
            .collect();
        assert_eq!(t, [(A, &[2u16][..]), (B, &[1][..])]);

        let mut alua = old.clone();
        alua.storage_objects[0].alua_tpgs = Some(config::alua::groups_of(None));
        let plan = Plan::new(&old, &alua);
        assert!(plan.is_empty(), "{plan:?}");
    }

    /// Removing target A: its portals close, B's TPG moves from relative
    /// port 3 to 1 (so its view changes), the object it alone used stays.
    #[test]
    fn a_target_removed_renumbers_the_others() {
        let old = sample();
        let mut new = old.clone();
        new.targets.remove(0);
        let plan = Plan::new(&old, &new);
        assert_eq!(plan.remove, [A]);
        assert_eq!(plan.unlisten, [addr("0.0.0.0:3260")]);
        assert!(plan.listen.is_empty());
        assert_eq!(plan.targets.len(), 1);
        assert_eq!(
            (plan.targets[0].wwn.as_str(), &plan.targets[0].tpgs[..]),
            (B, &[1u16][..])
        );
        assert!(plan.open.is_empty() && plan.close.is_empty());
    }

    #[test]
    fn tpgs_removed_disabled_and_auth_changes() {
        let old = sample();
        let mut new = old.clone();
        new.targets[0].tpgs.remove(1);
        new.targets[1].tpgs[0].enable = Some(false);
        new.fabric_modules.clear();
        let plan = Plan::new(&old, &new);
        let t: Vec<(&str, &[u16], &[u16])> = plan
            .targets
            .iter()
            .map(|c| (c.wwn.as_str(), c.tpgs.as_slice(), c.removed_tpgs.as_slice()))
            .collect();
        // B's tpg1 also moved from relative port 3 to 2.
        assert_eq!(t, [(A, &[][..], &[2u16][..]), (B, &[1][..], &[][..])]);
        assert_eq!(plan.unlisten, [addr("127.0.0.1:3261")]);
        assert!(plan.discovery_auth);
    }

    /// A specific address replacing a wildcard on the same port: the
    /// wildcard closes first (`unlisten` is applied before `listen`).
    #[test]
    fn portal_replacements() {
        let old = sample();
        let mut new = old.clone();
        new.targets[0].tpgs[0].portals[0].ip_address = "127.0.0.2".into();
        let plan = Plan::new(&old, &new);
        assert_eq!(plan.unlisten, [addr("0.0.0.0:3260")]);
        assert_eq!(
            plan.listen,
            [addr("127.0.0.2:3260"), addr("127.0.0.1:3260")]
        );
    }

    #[test]
    fn wildcard_portals_cover_specific_ones() {
        let got = listen_set(&[
            addr("127.0.0.1:3260"),
            addr("0.0.0.0:3260"),
            addr("127.0.0.1:3261"),
            addr("[::1]:3260"),
        ]);
        assert_eq!(
            got,
            [
                addr("0.0.0.0:3260"),
                addr("127.0.0.1:3261"),
                addr("[::1]:3260")
            ]
        );
    }

    /// Every iSCSI TPG of the configuration gets its own relative port id,
    /// in configuration order; a single target's ids are its TPG tags.
    #[test]
    fn relative_port_ids_are_unique_per_target_port() {
        let cfg = sample();
        let id = |w, t| relative_port_id(&cfg, w, t);
        assert_eq!((id(A, 1), id(A, 2), id(B, 1)), (1, 2, 3));
    }
}
