//! The loopback fabric's pieces of the saved configuration. rtslib saves a
//! loopback target as `{"fabric": "loopback", "wwn": "naa.<16 hex>",
//! "tpgs": [{"tag": 1, "luns": [...], ...}]}`, as a vhost one; the TPG's
//! nexus is derived from the WWN the same way (see [`crate::vhost`]).
//!
//! Each LUN becomes a ublk block device; rtarget adds target keys rtslib
//! ignores on restore, saved only when not the default: the ublk queue
//! count and depth of its disks, and the mode (`scsi`: the LUNs become
//! SCSI disks of the local iSCSI initiator instead of ublk disks).

use crate::model::Target;

/// Hardware queues per disk (ublk nr_hw_queues).
pub const QUEUES_KEY: &str = "ublk_queues";
/// Requests in flight per queue.
pub const DEPTH_KEY: &str = "ublk_queue_depth";
/// `ublk` (the default: one /dev/ublkbN per LUN) or `scsi` (the local
/// open-iscsi initiator logged in to a private portal: /dev/sdX, /dev/sgN).
pub const MODE_KEY: &str = "mode";
pub const MODES: &[&str] = &["ublk", "scsi"];
/// rtarget's target keys of a loopback target.
pub const KEYS: &[&str] = &[QUEUES_KEY, DEPTH_KEY, MODE_KEY];
pub const DEFAULT_QUEUES: u16 = 1;
pub const DEFAULT_DEPTH: u16 = 128;
/// ublk's own limits are higher; these keep one target's threads and
/// buffers (queues x depth x 512 KiB) within reason.
pub const MAX_QUEUES: u64 = 64;
pub const MAX_DEPTH: u64 = 4096;

/// Whether `wwn` is a loopback WWN as targetcli makes them (as vhost).
pub fn valid_wwn(wwn: &str) -> bool {
    crate::vhost::valid_wwn(wwn)
}

/// The nexus (initiator port) WWN of loopback target `wwn`'s TPG `tag`.
pub fn nexus_of(wwn: &str, tag: u16) -> String {
    crate::vhost::nexus_of(wwn, tag)
}

fn key(t: &Target, k: &str, default: u16) -> u16 {
    t.extra
        .get(k)
        .and_then(|v| v.as_u64())
        .and_then(|v| u16::try_from(v).ok())
        .unwrap_or(default)
}

/// (queues, depth) of loopback target `t`'s disks.
pub fn queues_of(t: &Target) -> (u16, u16) {
    (
        key(t, QUEUES_KEY, DEFAULT_QUEUES),
        key(t, DEPTH_KEY, DEFAULT_DEPTH),
    )
}

/// Whether loopback target `t` serves its LUNs as local SCSI disks.
pub fn scsi_mode(t: &Target) -> bool {
    t.extra.get(MODE_KEY).and_then(|v| v.as_str()) == Some("scsi")
}

/// What is wrong with key `k`'s value, if anything.
pub fn check_key(k: &str, v: &serde_json::Value) -> Option<String> {
    if k == MODE_KEY {
        return match v.as_str() {
            Some(m) if MODES.contains(&m) => None,
            _ => Some(format!("{k} {v} is not one of {}", MODES.join(", "))),
        };
    }
    let max = match k {
        QUEUES_KEY => MAX_QUEUES,
        DEPTH_KEY => MAX_DEPTH,
        _ => return Some(format!("unknown loopback target key {k:?}")),
    };
    match v.as_u64() {
        Some(n) if (1..=max).contains(&n) => None,
        _ => Some(format!("{k} {v} is not in 1..={max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn queue_keys_and_defaults() {
        let mut t = Target {
            fabric: "loopback".into(),
            wwn: "naa.5001405abcdef012".into(),
            ..Target::default()
        };
        assert_eq!(queues_of(&t), (1, 128));
        t.extra.insert(QUEUES_KEY.into(), json!(2));
        t.extra.insert(DEPTH_KEY.into(), json!(64));
        assert_eq!(queues_of(&t), (2, 64));
        assert_eq!(check_key(QUEUES_KEY, &json!(2)), None);
        assert!(check_key(QUEUES_KEY, &json!(0)).is_some());
        assert!(check_key(DEPTH_KEY, &json!(5000)).is_some());
        assert!(check_key(DEPTH_KEY, &json!("x")).is_some());
        assert!(!scsi_mode(&t));
        t.extra.insert(MODE_KEY.into(), json!("scsi"));
        assert!(scsi_mode(&t));
        assert_eq!(check_key(MODE_KEY, &json!("ublk")), None);
        assert!(check_key(MODE_KEY, &json!("fc")).is_some());
        assert!(check_key(MODE_KEY, &json!(1)).is_some());
    }
}
