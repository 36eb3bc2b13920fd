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
    let active = |cfg: &SaveConfig, wwn: &str| -> Option<Target> {
        cfg.vhost_targets()
            .find(|t| t.wwn == wwn && served_tpg(t).is_some())
            .cloned()
    };
    let mut changes = Vec::new();
    for t in wanted.vhost_targets() {
        let Some((tag, tpg)) = served_tpg(t) else {
            continue;
        };
        let Some(old) = active(running, &t.wwn) else {
            changes.push(VhostChange {
                wwn: t.wwn.clone(),
                restart: true,
            });
            continue;
        };
        let (old_tag, old_tpg) = served_tpg(&old).expect("active");
        let restart = config::vhost::socket_of(&old) != config::vhost::socket_of(t)
            || old_tag != tag
            || vhost_port_id(running, &t.wwn) != vhost_port_id(wanted, &t.wwn);
        let luns_same = old_tpg.luns == tpg.luns
            && !tpg
                .luns
                .iter()
                .any(|l| reopened.contains(l.storage_object.as_str()));
        if restart || !luns_same {
            changes.push(VhostChange {
                wwn: t.wwn.clone(),
                restart,
            });
        }
    }
    let removed = running
        .vhost_targets()
        .filter(|o| served_tpg(o).is_some() && active(wanted, &o.wwn).is_none())
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
    /// restart; a new socket restarts; disabling or deleting stops.
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
    }
}
