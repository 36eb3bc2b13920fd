//! The loopback part of a reconcile [`Plan`](crate::Plan): which loopback
//! targets start, stop, restart (other TPG tag, mode or ublk queue layout:
//! every disk is made anew) or only get a new LUN table (disks of unchanged LUNs
//! stay; new LUNs get a disk, removed ones lose theirs).
//!
//! A loopback target runs while it has an enabled TPG.

use std::collections::HashSet;

use config::{SaveConfig, Target};

/// One loopback target whose running state changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoopbackChange {
    pub wwn: String,
    /// Stop what runs (if anything) and start anew; otherwise only its
    /// LUN table changes.
    pub restart: bool,
}

/// `(changes, removals)` from `running` to `wanted`; `reopened` are the
/// storage objects the plan reopens (their LUNs get new devices).
pub fn plan(
    running: &SaveConfig,
    wanted: &SaveConfig,
    reopened: &HashSet<&str>,
) -> (Vec<LoopbackChange>, Vec<String>) {
    let (changes, removed) = crate::reconcile_vhost::plan_single_nexus(
        running,
        wanted,
        reopened,
        Target::is_loopback,
        |old, old_tag, new, tag| {
            old_tag != tag
                || config::loopback::queues_of(old) != config::loopback::queues_of(new)
                || config::loopback::scsi_mode(old) != config::loopback::scsi_mode(new)
        },
    );
    let changes = changes
        .into_iter()
        .map(|(wwn, restart)| LoopbackChange { wwn, restart })
        .collect();
    (changes, removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const L: &str = "naa.5001405abcdef013";

    fn cfg(luns: serde_json::Value, queues: Option<u64>, enable: bool) -> SaveConfig {
        let mut t = json!({"fabric": "loopback", "wwn": L,
            "tpgs": [{"tag": 1, "enable": enable, "luns": luns}]});
        if let Some(q) = queues {
            t[config::loopback::QUEUES_KEY] = json!(q);
        }
        serde_json::from_value(json!({
            "storage_objects": [{"plugin": "ramdisk", "name": "r0", "size": 1048576}],
            "targets": [t]
        }))
        .unwrap()
    }

    /// Start-up starts; a repeat does nothing; a LUN added updates without
    /// a restart; another queue count restarts; disabling or deleting stops.
    #[test]
    fn loopback_plans() {
        let none = HashSet::new();
        let lun0 = json!([{"index": 0, "storage_object": "/backstores/ramdisk/r0"}]);
        let change = |restart| LoopbackChange {
            wwn: L.into(),
            restart,
        };
        let a = cfg(json!([]), None, true);
        assert_eq!(
            plan(&SaveConfig::default(), &a, &none),
            (vec![change(true)], vec![])
        );
        assert_eq!(plan(&a, &a, &none), (vec![], vec![]));
        let b = cfg(lun0.clone(), None, true);
        assert_eq!(plan(&a, &b, &none).0, [change(false)]);
        let reopened: HashSet<&str> = ["/backstores/ramdisk/r0"].into();
        assert_eq!(
            plan(&b, &b, &reopened).0,
            [change(false)],
            "a reopened object"
        );
        let c = cfg(lun0.clone(), Some(2), true);
        assert_eq!(plan(&b, &c, &none).0, [change(true)]);
        let mut scsi = c.clone();
        scsi.targets[0]
            .extra
            .insert(config::loopback::MODE_KEY.into(), json!("scsi"));
        assert_eq!(plan(&c, &scsi, &none).0, [change(true)], "mode change");
        let d = cfg(lun0, Some(2), false);
        assert_eq!(plan(&c, &d, &none), (vec![], vec![L.to_string()]));
        assert_eq!(plan(&c, &SaveConfig::default(), &none).1, [L]);
    }
}
