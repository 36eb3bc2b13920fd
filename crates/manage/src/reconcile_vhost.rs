//! The vhost part of a reconcile [`Plan`](crate::Plan): which vhost targets
//! start, stop, restart (a new socket) or only get a new LUN table (the
//! guest stays attached and sees hotplug events).
//!
//! A vhost target runs while it has an enabled TPG; its relative target
//! port identifier is [`config::vhost::RELATIVE_PORT_BASE`] plus its
//! position among the vhost targets.

use std::collections::HashSet;

use config::{SaveConfig, Target, Tpg};

/// One vhost target whose running state changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VhostChange {
    pub wwn: String,
    /// Stop what runs (if anything) and start anew: new target, other
    /// socket, other TPG tag or port id. Otherwise only its LUN table
    /// changes and an attached guest stays.
    pub restart: bool,
}

/// The TPG a vhost target serves, with its tag, when enabled.
pub fn served_tpg(t: &Target) -> Option<(u16, &Tpg)> {
    t.tagged_tpgs().next().filter(|(_, g)| g.enabled())
}

/// Relative target port identifier of vhost target `wwn`.
pub fn vhost_port_id(cfg: &SaveConfig, wwn: &str) -> u16 {
    let i = cfg.vhost_targets().position(|t| t.wwn == wwn).unwrap_or(0);
    config::vhost::RELATIVE_PORT_BASE.saturating_add(i as u16 + 1)
}

/// `(changes, removals)` from `running` to `wanted`; `reopened` are the
/// storage objects the plan reopens (their LUNs get new devices).
pub fn plan(
    running: &SaveConfig,
    wanted: &SaveConfig,
    reopened: &HashSet<&str>,
) -> (Vec<VhostChange>, Vec<String>) {
    let (changes, removed) = plan_single_nexus(
        running,
        wanted,
        reopened,
        Target::is_vhost,
        |old, old_tag, new, tag| {
            config::vhost::socket_of(old) != config::vhost::socket_of(new)
                || old_tag != tag
                || vhost_port_id(running, &new.wwn) != vhost_port_id(wanted, &new.wwn)
        },
    );
    let changes = changes
        .into_iter()
        .map(|(wwn, restart)| VhostChange { wwn, restart })
        .collect();
    (changes, removed)
}

/// The plan of a fabric whose target is one nexus with one served TPG
/// (vhost, loopback): `(wwn, restart)` per target whose running state
/// changes and the WWNs to stop. A target restarts when it is new or
/// `restarts(old, old_tag, new, new_tag)` says so; otherwise it changes
/// when its LUNs differ or one of them is reopened.
pub(crate) fn plan_single_nexus(
    running: &SaveConfig,
    wanted: &SaveConfig,
    reopened: &HashSet<&str>,
    of_fabric: fn(&Target) -> bool,
    restarts: impl Fn(&Target, u16, &Target, u16) -> bool,
) -> (Vec<(String, bool)>, Vec<String>) {
    let active = |cfg: &'_ SaveConfig, wwn: &str| -> Option<Target> {
        cfg.targets
            .iter()
            .find(|t| of_fabric(t) && t.wwn == wwn && served_tpg(t).is_some())
            .cloned()
    };
    let mut changes = Vec::new();
    for t in wanted.targets.iter().filter(|t| of_fabric(t)) {
        let Some((tag, tpg)) = served_tpg(t) else {
            continue;
        };
        let Some(old) = active(running, &t.wwn) else {
            changes.push((t.wwn.clone(), true));
            continue;
        };
        let (old_tag, old_tpg) = served_tpg(&old).expect("active");
        let restart = restarts(&old, old_tag, t, tag);
        let luns_same = old_tpg.luns == tpg.luns
            && !tpg
                .luns
                .iter()
                .any(|l| reopened.contains(l.storage_object.as_str()));
        if restart || !luns_same {
            changes.push((t.wwn.clone(), restart));
        }
    }
    let removed = running
        .targets
        .iter()
        .filter(|o| of_fabric(o) && served_tpg(o).is_some() && active(wanted, &o.wwn).is_none())
        .map(|o| o.wwn.clone())
        .collect();
    (changes, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const V: &str = "naa.5001405abcdef012";

    fn cfg(luns: serde_json::Value, socket: Option<&str>, enable: bool) -> SaveConfig {
        let mut t = json!({"fabric": "vhost", "wwn": V,
            "tpgs": [{"tag": 1, "enable": enable, "luns": luns}]});
        if let Some(s) = socket {
            t["socket"] = json!(s);
        }
        serde_json::from_value(json!({
            "storage_objects": [{"plugin": "ramdisk", "name": "r0", "size": 1048576}],
            "targets": [t]
        }))
        .unwrap()
    }

    /// Start-up starts; a repeat does nothing; a LUN added updates without a
    /// restart; a new socket or port id restarts; disabling or deleting stops.
    #[test]
    fn vhost_plans() {
        let none = HashSet::new();
        let lun0 = json!([{"index": 0, "storage_object": "/backstores/ramdisk/r0"}]);
        let a = cfg(json!([]), None, true);
        let (c, r) = plan(&SaveConfig::default(), &a, &none);
        assert_eq!(
            c,
            [VhostChange {
                wwn: V.into(),
                restart: true
            }]
        );
        assert!(r.is_empty());
        assert_eq!(plan(&a, &a, &none), (vec![], vec![]));
        let b = cfg(lun0.clone(), None, true);
        assert_eq!(
            plan(&a, &b, &none).0,
            [VhostChange {
                wwn: V.into(),
                restart: false
            }]
        );
        let reopened: HashSet<&str> = ["/backstores/ramdisk/r0"].into();
        assert_eq!(plan(&b, &b, &reopened).0.len(), 1, "a reopened object");
        let c = cfg(lun0.clone(), Some("/tmp/x.sock"), true);
        assert!(plan(&b, &c, &none).0[0].restart);
        let d = cfg(lun0, Some("/tmp/x.sock"), false);
        assert_eq!(plan(&c, &d, &none), (vec![], vec![V.to_string()]));
        assert_eq!(plan(&c, &SaveConfig::default(), &none).1, [V]);
        assert_eq!(vhost_port_id(&c, V), 0x8001);
        // Another vhost target before it moves its relative port id: restart.
        let mut e = c.clone();
        let mut other = e.targets[0].clone();
        other.wwn = "naa.5001405abcdef0ff".into();
        e.targets.insert(0, other);
        assert_eq!(vhost_port_id(&e, V), 0x8002);
        let moved = plan(&c, &e, &none).0;
        assert!(
            moved.iter().any(|ch| ch.wwn == V && ch.restart),
            "{moved:?}"
        );
    }
}
