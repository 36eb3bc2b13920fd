//! ALUA target port groups of a storage object (`alua_tpgs[]`, written by
//! rtslib's `ALUATargetPortGroup.dump()`), their defaults (LIO's
//! `default_tg_pt_gp`), and their validation.
//!
//! rtslib writes every value as an integer; hand-written files may use
//! numeric strings, which are read the same way and written back as
//! integers. Keys this model does not know (`members`, future ones) stay in
//! `extra` and survive a round trip.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The group every LUN is in unless it names another.
pub const DEFAULT_TG_PT_GP: &str = "default_tg_pt_gp";

/// Writable group parameters, as targetcli lists them (`get alua`).
pub const ALUA_PARAMS: &[&str] = &[
    "alua_access_state",
    "alua_access_status",
    "alua_access_type",
    "alua_support_active_nonoptimized",
    "alua_support_active_optimized",
    "alua_support_offline",
    "alua_support_standby",
    "alua_support_transitioning",
    "alua_support_unavailable",
    "alua_write_metadata",
    "implicit_trans_secs",
    "nonop_delay_msecs",
    "preferred",
    "trans_delay_msecs",
];

/// Access states by code (SPC-4 table 169) and targetcli's names.
pub const ALUA_STATES: &[(u32, &str)] = &[
    (0, "Active/optimized"),
    (1, "Active/non-optimized"),
    (2, "Standby"),
    (3, "Unavailable"),
    (4, "LBA Dependent"),
    (14, "Offline"),
    (15, "Transitioning"),
];

/// One `alua_tpgs[]` entry. Missing values take LIO's defaults (see the
/// accessor methods).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AluaTpg {
    pub name: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub tg_pt_gp_id: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_access_state: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_access_status: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_access_type: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_support_active_nonoptimized: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_support_active_optimized: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_support_lba_dependent: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_support_offline: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_support_standby: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_support_transitioning: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_support_unavailable: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub alua_write_metadata: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub implicit_trans_secs: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub nonop_delay_msecs: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub preferred: Option<u32>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_num"
    )]
    pub trans_delay_msecs: Option<u32>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// rtslib writes integers; accept numeric strings and booleans too, and
/// say plainly what is wrong with anything else.
fn de_num<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let bad = |v: &dyn std::fmt::Display| {
        serde::de::Error::custom(format!(
            "ALUA value {v} is not a non-negative integer (below 2^32)"
        ))
    };
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(u32::from(b))),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .map(Some)
            .ok_or_else(|| bad(&n)),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad(&format!("{s:?}"))),
        Some(v) => Err(bad(&v)),
    }
}

impl AluaTpg {
    /// A group as rtslib dumps a fresh one (LIO's defaults, every value
    /// written out, as targetcli does).
    pub fn new(name: &str, id: u32) -> AluaTpg {
        AluaTpg {
            name: name.to_string(),
            tg_pt_gp_id: Some(id),
            alua_access_state: Some(0),
            alua_access_status: Some(0),
            alua_access_type: Some(3),
            alua_support_active_nonoptimized: Some(1),
            alua_support_active_optimized: Some(1),
            alua_support_lba_dependent: Some(0),
            alua_support_offline: Some(1),
            alua_support_standby: Some(1),
            alua_support_transitioning: Some(1),
            alua_support_unavailable: Some(1),
            alua_write_metadata: Some(0),
            implicit_trans_secs: Some(0),
            nonop_delay_msecs: Some(100),
            preferred: Some(0),
            trans_delay_msecs: Some(0),
            extra: Map::new(),
        }
    }

    fn slot(&mut self, key: &str) -> Option<&mut Option<u32>> {
        Some(match key {
            "tg_pt_gp_id" => &mut self.tg_pt_gp_id,
            "alua_access_state" => &mut self.alua_access_state,
            "alua_access_status" => &mut self.alua_access_status,
            "alua_access_type" => &mut self.alua_access_type,
            "alua_support_active_nonoptimized" => &mut self.alua_support_active_nonoptimized,
            "alua_support_active_optimized" => &mut self.alua_support_active_optimized,
            "alua_support_lba_dependent" => &mut self.alua_support_lba_dependent,
            "alua_support_offline" => &mut self.alua_support_offline,
            "alua_support_standby" => &mut self.alua_support_standby,
            "alua_support_transitioning" => &mut self.alua_support_transitioning,
            "alua_support_unavailable" => &mut self.alua_support_unavailable,
            "alua_write_metadata" => &mut self.alua_write_metadata,
            "implicit_trans_secs" => &mut self.implicit_trans_secs,
            "nonop_delay_msecs" => &mut self.nonop_delay_msecs,
            "preferred" => &mut self.preferred,
            "trans_delay_msecs" => &mut self.trans_delay_msecs,
            _ => return None,
        })
    }

    /// A parameter's value with LIO's default filled in; `None` for names
    /// that are not parameters.
    pub fn get(&self, key: &str) -> Option<u32> {
        let v = *self.clone().slot(key)?;
        let default = *AluaTpg::new("", 0).slot(key)?;
        Some(v.or(default).unwrap_or(0))
    }

    /// `set alua KEY=VALUE` (targetcli's writable parameters only).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        if !ALUA_PARAMS.contains(&key) {
            return Err(format!(
                "unknown ALUA parameter {key:?} (one of {})",
                ALUA_PARAMS.join(", ")
            ));
        }
        let v: u32 = value
            .trim()
            .parse()
            .map_err(|_| format!("{key}: {value:?} is not a non-negative integer"))?;
        if let Some(slot) = self.slot(key) {
            *slot = Some(v);
        }
        Ok(())
    }

    pub fn id(&self) -> u32 {
        self.get("tg_pt_gp_id").unwrap_or(0)
    }

    pub fn state(&self) -> u32 {
        self.get("alua_access_state").unwrap_or(0)
    }

    /// targetcli's summary: `ALUA state: Active/optimized`.
    pub fn state_name(&self) -> &'static str {
        let s = self.state();
        ALUA_STATES
            .iter()
            .find(|(c, _)| *c == s)
            .map_or("Unknown", |(_, n)| n)
    }

    /// The problems of this group (each a complete sentence for the user).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name = &self.name;
        if name.is_empty() || name.contains(['/', ' ', '\t', '\n']) {
            out.push(format!(
                "invalid ALUA group name {name:?} (non-empty, no '/' or whitespace)"
            ));
        }
        let id = self.id();
        if name == DEFAULT_TG_PT_GP {
            if id != 0 {
                out.push(format!("{DEFAULT_TG_PT_GP} has tg_pt_gp_id 0, not {id}"));
            }
        } else if !(1..=65535).contains(&id) {
            out.push(format!(
                "ALUA group {name}: tg_pt_gp_id {id} is out of range (1-65535; 0 is {DEFAULT_TG_PT_GP}'s)"
            ));
        }
        let state = self.state();
        if !ALUA_STATES.iter().any(|(c, _)| *c == state) {
            out.push(format!(
                "ALUA group {name}: alua_access_state {state} is not a state (0 optimized, 1 non-optimized, 2 standby, 3 unavailable, 14 offline, 15 transitioning)"
            ));
        } else if state == 4 {
            out.push(format!(
                "ALUA group {name}: the LBA dependent state (4) is not supported"
            ));
        } else if state != 15 {
            let key = match state {
                0 => "alua_support_active_optimized",
                1 => "alua_support_active_nonoptimized",
                2 => "alua_support_standby",
                3 => "alua_support_unavailable",
                _ => "alua_support_offline",
            };
            if self.get(key) == Some(0) {
                out.push(format!(
                    "ALUA group {name}: alua_access_state {state} is not supported by the group ({key}=0)"
                ));
            }
        }
        let ranges: [(&str, u32); 15] = [
            ("alua_access_status", 2),
            ("alua_access_type", 3),
            ("preferred", 1),
            ("alua_write_metadata", 1),
            ("alua_support_active_nonoptimized", 1),
            ("alua_support_active_optimized", 1),
            ("alua_support_offline", 1),
            ("alua_support_standby", 1),
            ("alua_support_transitioning", 1),
            ("alua_support_unavailable", 1),
            ("alua_support_lba_dependent", 0),
            // LIO's limits (target_core_alua.h).
            ("nonop_delay_msecs", 10_000),
            ("trans_delay_msecs", 30_000),
            ("implicit_trans_secs", 255),
            ("tg_pt_gp_id", 65535),
        ];
        for (key, max) in ranges {
            let v = self.get(key).unwrap_or(0);
            if v > max {
                out.push(format!("ALUA group {name}: {key} {v} is above {max}"));
            }
        }
        out
    }
}

/// The groups of a storage object, `default_tg_pt_gp` included even when
/// the file lists none (LIO creates it with every storage object).
pub fn groups_of(tpgs: Option<&[AluaTpg]>) -> Vec<AluaTpg> {
    let mut out: Vec<AluaTpg> = tpgs.unwrap_or(&[]).to_vec();
    if !out.iter().any(|g| g.name == DEFAULT_TG_PT_GP) {
        out.insert(0, AluaTpg::new(DEFAULT_TG_PT_GP, 0));
    }
    out
}

/// Problems of a whole `alua_tpgs` list: each group's, plus duplicate
/// names and ids.
pub fn check_groups(tpgs: &[AluaTpg]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, g) in tpgs.iter().enumerate() {
        out.extend(g.problems());
        if tpgs[..i].iter().any(|o| o.name == g.name) {
            out.push(format!("duplicate ALUA group name {:?}", g.name));
        } else if tpgs[..i].iter().any(|o| o.id() == g.id()) {
            out.push(format!(
                "ALUA groups {:?} and {:?} share tg_pt_gp_id {}",
                tpgs[..i]
                    .iter()
                    .find(|o| o.id() == g.id())
                    .map_or("", |o| o.name.as_str()),
                g.name,
                g.id()
            ));
        }
    }
    out
}

/// LUNs naming an ALUA group their storage object does not have, as
/// (location, message) pairs.
pub fn check_lun_groups(cfg: &crate::SaveConfig) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in &cfg.targets {
        for (tag, tpg) in t.tagged_tpgs() {
            for lun in &tpg.luns {
                let Some(name) = lun.alua_tg_pt_gp_name.as_deref() else {
                    continue;
                };
                let Some(so) = cfg
                    .storage_objects
                    .iter()
                    .find(|so| so.path() == lun.storage_object)
                else {
                    continue; // reported as a dangling LUN already
                };
                if !groups_of(so.alua_tpgs.as_deref())
                    .iter()
                    .any(|g| g.name == name)
                {
                    out.push((
                        format!("{} / tpg{tag} / lun{}", t.wwn, lun.index),
                        format!(
                            "alua_tg_pt_gp_name {name:?} is not an ALUA group of {}",
                            lun.storage_object
                        ),
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rtslib_dump_round_trips_and_unknown_keys_stay() {
        let v = json!({
            "alua_access_state": 2, "alua_access_status": 1, "alua_access_type": 3,
            "alua_support_active_nonoptimized": 1, "alua_support_active_optimized": 1,
            "alua_support_lba_dependent": 0, "alua_support_offline": 1,
            "alua_support_standby": 1, "alua_support_transitioning": 1,
            "alua_support_unavailable": 1, "alua_write_metadata": 0,
            "implicit_trans_secs": 0, "name": "sb", "nonop_delay_msecs": 100,
            "preferred": 0, "tg_pt_gp_id": 2, "trans_delay_msecs": 0,
            "members": ["iscsi/iqn.x/tpgt_1/lun_0"]
        });
        let g: AluaTpg = serde_json::from_value(v.clone()).unwrap();
        assert_eq!((g.id(), g.state(), g.state_name()), (2, 2, "Standby"));
        assert_eq!(g.extra["members"], json!(["iscsi/iqn.x/tpgt_1/lun_0"]));
        assert_eq!(serde_json::to_value(&g).unwrap(), v);
        assert!(g.problems().is_empty(), "{:?}", g.problems());
    }

    #[test]
    fn numeric_strings_and_defaults() {
        let g: AluaTpg =
            serde_json::from_value(json!({"name": "g", "tg_pt_gp_id": "7", "preferred": true}))
                .unwrap();
        assert_eq!((g.id(), g.get("preferred"), g.state()), (7, Some(1), 0));
        assert_eq!(g.get("nonop_delay_msecs"), Some(100), "LIO default");
        assert_eq!(g.get("bogus"), None);
        for bad in [json!("x"), json!(-1), json!([1]), json!(1u64 << 40)] {
            let e = serde_json::from_value::<AluaTpg>(json!({"name": "g", "tg_pt_gp_id": bad}))
                .unwrap_err();
            assert!(e.to_string().contains("not a non-negative integer"), "{e}");
        }
    }

    #[test]
    fn problems_are_reported_clearly() {
        let mut g = AluaTpg::new("g", 0);
        assert!(g.problems()[0].contains("tg_pt_gp_id 0 is out of range"));
        g.tg_pt_gp_id = Some(3);
        g.alua_access_state = Some(4);
        assert!(g.problems()[0].contains("LBA dependent"));
        g.alua_access_state = Some(2);
        g.alua_support_standby = Some(0);
        assert!(g.problems()[0].contains("not supported by the group"));
        g.alua_support_standby = Some(1);
        g.trans_delay_msecs = Some(40_000);
        assert!(g.problems()[0].contains("trans_delay_msecs 40000 is above 30000"));
        g.trans_delay_msecs = None;
        assert!(g.set("alua_access_state", "1").is_ok());
        assert!(g.set("tg_pt_gp_id", "1").is_err(), "read-only");
        assert!(g.set("preferred", "yes").is_err());
        let mut d = AluaTpg::new(DEFAULT_TG_PT_GP, 0);
        assert!(d.problems().is_empty());
        d.tg_pt_gp_id = Some(1);
        assert!(!d.problems().is_empty());
        let dup = check_groups(&[AluaTpg::new("a", 1), AluaTpg::new("b", 1)]);
        assert!(dup[0].contains("share tg_pt_gp_id 1"), "{dup:?}");
        let dup = check_groups(&[AluaTpg::new("a", 1), AluaTpg::new("a", 2)]);
        assert!(dup[0].contains("duplicate ALUA group name"), "{dup:?}");
    }

    #[test]
    fn luns_must_name_a_group_of_their_object() {
        let cfg: crate::SaveConfig = serde_json::from_value(json!({
            "storage_objects": [{"plugin": "ramdisk", "name": "r", "size": 1048576,
                "alua_tpgs": [{"name": "ao", "tg_pt_gp_id": 1}]}],
            "targets": [{"fabric": "iscsi", "wwn": "iqn.2026-01.x:t", "tpgs": [{"tag": 1,
                "luns": [
                    {"index": 0, "storage_object": "/backstores/ramdisk/r", "alua_tg_pt_gp_name": "ao"},
                    {"index": 1, "storage_object": "/backstores/ramdisk/r", "alua_tg_pt_gp_name": "default_tg_pt_gp"},
                    {"index": 2, "storage_object": "/backstores/ramdisk/r", "alua_tg_pt_gp_name": "nope"}
                ]}]}]
        }))
        .unwrap();
        let p = check_lun_groups(&cfg);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].0.contains("lun2") && p[0].1.contains("\"nope\""),
            "{p:?}"
        );
        let errs = crate::validate(&cfg).unwrap_err();
        assert!(errs.iter().any(|e| e.message.contains("nope")), "{errs:?}");
    }

    #[test]
    fn default_group_is_always_there() {
        let g = groups_of(None);
        assert_eq!(
            (g.len(), g[0].name.as_str(), g[0].id()),
            (1, DEFAULT_TG_PT_GP, 0)
        );
        let g = groups_of(Some(&[AluaTpg::new("x", 1)]));
        assert_eq!(g.len(), 2);
    }
}
