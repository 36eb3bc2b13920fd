//! The vhost fabric's pieces of the saved configuration. rtslib saves a
//! vhost target as `{"fabric": "vhost", "wwn": "naa.<16 hex>", "tpgs":
//! [{"tag": 1, "luns": [...], ...}]}`; it does not save the TPG's nexus
//! (LIO makes a new one on every restore), so rtarget derives it from the
//! target's WWN: the same guest sees the same initiator port across
//! restarts, and persistent reservations keyed on it stay valid.
//!
//! rtarget adds one key rtslib ignores on restore: the target's `socket`
//! (the vhost-user socket path), saved only when not the default.

use crate::model::Target;

/// Where a vhost target's socket lives unless its `socket` key says.
pub const SOCKET_DIR: &str = "/run/rtarget/vhost";
/// The target key holding a non-default socket path.
pub const SOCKET_KEY: &str = "socket";
/// Relative target port identifiers of vhost TPGs start here, apart from
/// the iSCSI ones (which count from 1), so adding an iSCSI target never
/// renumbers (and restarts) a vhost port.
pub const RELATIVE_PORT_BASE: u16 = 0x8000;

/// Whether `wwn` is a vhost WWN as targetcli makes them: `naa.` and 16 hex
/// digits.
pub fn valid_wwn(wwn: &str) -> bool {
    wwn.strip_prefix("naa.")
        .is_some_and(|h| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// A vhost WWN from 9 hex digits of entropy (LIO's `naa.5001405` prefix).
pub fn wwn_from(hex9: &str) -> String {
    format!("naa.5001405{}", &hex9[..9])
}

/// The socket path of vhost target `t`.
pub fn socket_of(t: &Target) -> String {
    match t.extra.get(SOCKET_KEY).and_then(|v| v.as_str()) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => format!("{SOCKET_DIR}/{}.sock", t.wwn),
    }
}

/// The nexus (initiator port) WWN of vhost target `wwn`'s TPG `tag`:
/// `naa.5001405` and 9 hex digits of an FNV-1a hash of both, so it is
/// stable across restarts and distinct per target.
pub fn nexus_of(wwn: &str, tag: u16) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in wwn.bytes().chain(tag.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    wwn_from(&format!("{:016x}", h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wwns_sockets_and_nexus() {
        assert!(valid_wwn("naa.5001405abcdef012"));
        assert!(!valid_wwn("naa.5001405abcdef01"));
        assert!(!valid_wwn("iqn.2000-01.x:y"));
        let mut t = Target {
            fabric: "vhost".into(),
            wwn: "naa.5001405abcdef012".into(),
            ..Target::default()
        };
        assert_eq!(
            socket_of(&t),
            "/run/rtarget/vhost/naa.5001405abcdef012.sock"
        );
        t.extra.insert(SOCKET_KEY.into(), "/tmp/x.sock".into());
        assert_eq!(socket_of(&t), "/tmp/x.sock");
        let n = nexus_of(&t.wwn, 1);
        assert!(valid_wwn(&n), "{n}");
        assert_eq!(n, nexus_of(&t.wwn, 1), "stable");
        assert_ne!(n, nexus_of(&t.wwn, 2));
        assert_ne!(n, nexus_of("naa.5001405abcdef013", 1));
    }
}
