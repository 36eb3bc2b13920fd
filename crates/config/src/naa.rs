//! The NAA designator a storage object reports as its LU's name (VPD page
//! 0x83, NAA IEEE Registered Extended), derived as LIO derives it
//! (`spc_gen_naa_6h_vendor_specific`): the company id, then the first 25
//! hexadecimal digits of the unit serial (`wwn`), other characters skipped,
//! zeroes when there are fewer. rtarget's core derives it the same way, so
//! LUs moved from LIO keep their device ids.
//!
//! The price of that derivation: two serials that agree on those 25 digits
//! (a UUID has 32) name one LU. Multipath then merges two disks into one
//! map, and EXTENDED COPY, which addresses LUs by this designator, reads or
//! writes the wrong one. `create` refuses such a serial; loading a file
//! that has one warns ([`check`]).

use std::collections::{HashMap, HashSet};

use crate::model::{SaveConfig, StorageObject};

/// Hex digits of the serial the designator carries.
pub const SERIAL_DIGITS: usize = 25;

/// The part of `wwn` the NAA designator carries: its first
/// [`SERIAL_DIGITS`] hex digits, lowercase, zero-padded.
pub fn serial_digits(wwn: &str) -> String {
    let mut s: String = wwn
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(SERIAL_DIGITS)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    while s.len() < SERIAL_DIGITS {
        s.push('0');
    }
    s
}

/// The storage object among `sos` whose wwn gives the same designator as
/// `wwn`, if any.
pub fn colliding<'a>(
    sos: impl IntoIterator<Item = &'a StorageObject>,
    wwn: &str,
) -> Option<&'a StorageObject> {
    let digits = serial_digits(wwn);
    sos.into_iter().find(|so| {
        so.wwn
            .as_deref()
            .is_some_and(|w| serial_digits(w) == digits)
    })
}

/// Why `wwn` cannot name a new LU next to `other` (for `create`).
pub fn collision_message(wwn: &str, other: &StorageObject) -> String {
    format!(
        "wwn {wwn:?} gives the same NAA designator (VPD 0x83) as {} (wwn {:?}): \
         it is made of the first {SERIAL_DIGITS} hex digits of the wwn, so initiators \
         (multipath, EXTENDED COPY) would take the two for one LU; choose another wwn",
        other.path(),
        other.wwn.as_deref().unwrap_or("")
    )
}

/// Warnings (location, message) for the storage objects in `usable` (the
/// ones rtarget serves, by path) whose wwn gives the designator of an
/// earlier one.
pub(crate) fn check(cfg: &SaveConfig, usable: &HashSet<String>) -> Vec<(String, String)> {
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, so) in cfg.storage_objects.iter().enumerate() {
        let Some(wwn) = so.wwn.as_deref() else {
            continue;
        };
        if !usable.contains(&so.path()) {
            continue;
        }
        match first.get(&serial_digits(wwn)) {
            Some(&j) => {
                let other = &cfg.storage_objects[j];
                out.push((
                    format!("storage_objects[{i}] {}", so.path()),
                    collision_message(wwn, other),
                ));
            }
            None => {
                first.insert(serial_digits(wwn), i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_digits_follow_lio() {
        assert_eq!(
            serial_digits("6a1c0f2e-1234-4bcd-9ef0-0123456789ab"),
            "6a1c0f2e12344bcd9ef001234"
        );
        assert_eq!(
            serial_digits("6A1C0F2E-1234-4BCD-9EF0-0123456789AB"),
            serial_digits("6a1c0f2e-1234-4bcd-9ef0-0123456789ab"),
            "case does not matter"
        );
        assert_eq!(serial_digits("xyz-12"), format!("12{}", "0".repeat(23)));
        assert_eq!(serial_digits(""), "0".repeat(25));
    }

    fn so(name: &str, wwn: Option<&str>) -> StorageObject {
        StorageObject {
            plugin: "ramdisk".into(),
            name: name.into(),
            size: Some(1 << 20),
            wwn: wwn.map(Into::into),
            ..StorageObject::default()
        }
    }

    #[test]
    fn uuids_equal_in_their_first_25_digits_collide() {
        let a = so("a", Some("0f0e0d0c-0b0a-4908-8706-050403020100"));
        let b = so("b", Some("0f0e0d0c-0b0a-4908-8706-05040302ffff"));
        let c = so("c", Some("1f0e0d0c-0b0a-4908-8706-050403020100"));
        let none = so("n", None);
        let all = [none.clone(), a.clone(), c.clone()];
        assert_eq!(
            colliding(&all, b.wwn.as_deref().unwrap()).map(|s| &s.name),
            Some(&a.name)
        );
        assert!(colliding(&all, "2f0e0d0c-0b0a-4908-8706-050403020100").is_none());

        let cfg = SaveConfig {
            storage_objects: vec![a, none, b, c],
            ..SaveConfig::default()
        };
        let usable: HashSet<String> = cfg.storage_objects.iter().map(|s| s.path()).collect();
        let w = check(&cfg, &usable);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(w[0].0, "storage_objects[2] /backstores/ramdisk/b");
        assert!(w[0].1.contains("/backstores/ramdisk/a"), "{}", w[0].1);
        // Objects rtarget does not serve report nothing.
        let only_a: HashSet<String> = ["/backstores/ramdisk/a".to_string()].into();
        assert!(check(&cfg, &only_a).is_empty());
    }

    /// `rtarget check` and loading report it as a warning (the file stays
    /// usable: the objects work, only their identity is ambiguous).
    #[test]
    fn validate_warns_about_a_shared_designator() {
        let cfg = SaveConfig {
            storage_objects: vec![
                so("a", Some("0f0e0d0c-0b0a-4908-8706-050403020100")),
                so("b", Some("0f0e0d0c-0b0a-4908-8706-0504030201ff")),
            ],
            ..SaveConfig::default()
        };
        let warnings = crate::validate(&cfg).expect("usable");
        let w: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert!(
            w.iter().any(
                |w| w.starts_with("storage_objects[1] /backstores/ramdisk/b: wwn")
                    && w.contains("same NAA designator")
            ),
            "{w:?}"
        );
        let mut fine = cfg.clone();
        fine.storage_objects[1].wwn = Some("1f0e0d0c-0b0a-4908-8706-050403020100".into());
        let warnings = crate::validate(&fine).expect("usable");
        assert!(warnings.is_empty(), "{warnings:?}");
    }
}
