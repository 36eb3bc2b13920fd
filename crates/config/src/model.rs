//! The saveconfig.json data model, field for field as rtslib-fb's `dump()`
//! writes it and `restore()` reads it (rtslib/root.py, tcm.py, target.py).
//!
//! Every object keeps the keys rtarget does not model in an `extra` map
//! (`#[serde(flatten)]`), so a file written by targetcli survives a
//! load/save round trip untouched. Attribute and parameter values are kept
//! as JSON values because rtslib writes integers where configfs held a
//! number and strings otherwise.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// Top level: `{fabric_modules, storage_objects, targets}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SaveConfig {
    #[serde(default)]
    pub fabric_modules: Vec<FabricModule>,
    #[serde(default)]
    pub storage_objects: Vec<StorageObject>,
    #[serde(default)]
    pub targets: Vec<Target>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `fabric_modules[]`: discovery authentication per fabric (`discovery_userid`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FabricModule {
    pub name: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `storage_objects[]`: one backstore (`/backstores/<plugin>/<name>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageObject {
    /// `fileio`, `block`, `ramdisk`, `pscsi`, `user:<handler>`.
    pub plugin: String,
    pub name: String,
    /// Backing file or device path (fileio, block, pscsi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Size in bytes (fileio: create/extend to it; ramdisk: required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_bool"
    )]
    pub write_back: Option<bool>,
    /// Unit serial (a UUID string in LIO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wwn: Option<String>,
    /// fileio: use asynchronous I/O (LIO `aio`); accepted, not needed here.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_bool"
    )]
    pub aio: Option<bool>,
    /// block: refuse writes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_bool"
    )]
    pub readonly: Option<bool>,
    /// block: claim the device exclusively (rtslib default true).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_bool"
    )]
    pub exclusive: Option<bool>,
    /// ramdisk: drop writes, read zeroes.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_bool"
    )]
    pub nullio: Option<bool>,
    /// LIO device attributes (`block_size`, `emulate_write_cache`, `emulate_tpu`, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    /// ALUA target port groups (`default_tg_pt_gp` is implied when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_tpgs: Option<Vec<crate::alua::AluaTpg>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `targets[]`: one fabric endpoint (an IQN for iSCSI).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub fabric: String,
    pub wwn: String,
    #[serde(default)]
    pub tpgs: Vec<Tpg>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `tpgs[]`: a target portal group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tpg {
    /// 1-based tag; rtslib assigns the next free one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<u16>,
    /// Defaults to true (rtslib `tpg.get('enable', True)`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_bool"
    )]
    pub enable: Option<bool>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub luns: Vec<Lun>,
    #[serde(default)]
    pub portals: Vec<Portal>,
    #[serde(default)]
    pub node_acls: Vec<NodeAcl>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `luns[]`: a storage object exported by a TPG.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lun {
    pub index: u64,
    /// `/backstores/<plugin>/<name>`.
    pub storage_object: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alua_tg_pt_gp_name: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `portals[]`: an address the TPG listens on and advertises.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Portal {
    /// IPv4 or IPv6 (`::0` or `[::0]`).
    pub ip_address: String,
    pub port: u16,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_bool"
    )]
    pub iser: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_opt_bool"
    )]
    pub offload: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `node_acls[]`: an initiator with explicit LUN mappings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeAcl {
    pub node_wwn: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attributes: Map<String, Value>,
    #[serde(default)]
    pub mapped_luns: Vec<MappedLun>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `mapped_luns[]`: ACL LUN `index` shows TPG LUN `tpg_lun`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MappedLun {
    pub index: u64,
    pub tpg_lun: u64,
    #[serde(default, deserialize_with = "de_bool")]
    pub write_protect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl StorageObject {
    /// The targetcli path LUNs use to point at this object.
    pub fn path(&self) -> String {
        format!("/backstores/{}/{}", self.plugin, self.name)
    }

    /// A `user` (tcmu-runner style) object's handler and its config:
    /// rtslib saves `config` as `"<subtype>/<handler config>"`, e.g.
    /// `"qcow//var/lib/disk.qcow2"` gives `("qcow", "/var/lib/disk.qcow2")`.
    pub fn user_config(&self) -> Option<(&str, &str)> {
        if self.plugin != "user" {
            return None;
        }
        let cfg = self.extra.get("config")?.as_str()?;
        let (sub, rest) = cfg.split_once('/')?;
        (!sub.is_empty()).then_some((sub, rest))
    }

    /// The directory targetcli shows the object in: `fileio`, or
    /// `user:qcow` for user objects.
    pub fn ui_plugin(&self) -> String {
        match self.user_config() {
            Some((sub, _)) => format!("user:{sub}"),
            None => self.plugin.clone(),
        }
    }

    /// `attributes.block_size`, default 512.
    pub fn block_size(&self) -> Result<u32, String> {
        match attr_u64(&self.attributes, "block_size")? {
            None => Ok(512),
            Some(v) => u32::try_from(v).map_err(|_| format!("block_size {v} is too large")),
        }
    }
}

/// The fabric names of `targets[].fabric` and `fabric_modules[].name`
/// (rtslib's fabric module names), stated once for every reader.
pub mod fabric {
    pub const ISCSI: &str = "iscsi";
    pub const LOOPBACK: &str = "loopback";
    pub const VHOST: &str = "vhost";
    /// Every fabric targetcli shows at the root, in its order.
    pub const ALL: [&str; 3] = [ISCSI, LOOPBACK, VHOST];
}

impl SaveConfig {
    /// The targets of the iSCSI fabric, in config order.
    pub fn iscsi_targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.is_iscsi())
    }

    /// The targets of the loopback fabric, in config order.
    pub fn loopback_targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.is_loopback())
    }

    /// The targets of the vhost fabric, in config order.
    pub fn vhost_targets(&self) -> impl Iterator<Item = &Target> {
        self.targets.iter().filter(|t| t.is_vhost())
    }
}

impl Target {
    pub fn is_iscsi(&self) -> bool {
        self.fabric == fabric::ISCSI
    }

    pub fn is_vhost(&self) -> bool {
        self.fabric == fabric::VHOST
    }

    pub fn is_loopback(&self) -> bool {
        self.fabric == fabric::LOOPBACK
    }

    /// A local fabric (vhost, loopback): one TPG, one nexus, no portals
    /// or ACLs.
    pub fn is_local(&self) -> bool {
        self.is_vhost() || self.is_loopback()
    }

    /// A target of a fabric rtarget serves (management finds targets by
    /// WWN among these: a WWN names one target across fabrics).
    pub fn is_served(&self) -> bool {
        self.is_iscsi() || self.is_local()
    }

    /// The TPGs with their tags, in config order (see [`Tpg::tag_at`]).
    pub fn tagged_tpgs(&self) -> impl Iterator<Item = (u16, &Tpg)> {
        self.tpgs.iter().enumerate().map(|(i, g)| (g.tag_at(i), g))
    }
}

impl Tpg {
    pub fn enabled(&self) -> bool {
        self.enable.unwrap_or(true)
    }

    /// The tag of the TPG at `position` (0-based) in its target's list: its
    /// own, or position + 1 when absent (rtslib numbers untagged TPGs so).
    pub fn tag_at(&self, position: usize) -> u16 {
        self.tag.unwrap_or(position as u16 + 1)
    }
}

impl Lun {
    /// `(plugin, name)` from `/backstores/<plugin>/<name>`.
    pub fn storage_object_ref(&self) -> Option<(&str, &str)> {
        let rest = self.storage_object.strip_prefix("/backstores/")?;
        let (plugin, name) = rest.split_once('/')?;
        (!plugin.is_empty() && !name.is_empty() && !name.contains('/')).then_some((plugin, name))
    }
}

/// An attribute as an integer: rtslib writes numbers, hand-written files may
/// use numeric strings or booleans.
pub fn attr_u64(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("attribute {key}: {n} is not a non-negative integer")),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("attribute {key}: {s:?} is not a non-negative integer")),
        Some(Value::Bool(b)) => Ok(Some(u64::from(*b))),
        Some(v) => Err(format!("attribute {key}: {v} is not a number")),
    }
}

/// An attribute as a flag (non-zero = on).
pub fn attr_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    Ok(attr_u64(map, key)?.map(|v| v != 0))
}

/// A value as the string configfs would hold (`"Yes"`, `"8192"`).
pub fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
        other => other.to_string(),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolLike {
    Bool(bool),
    Int(u64),
}

/// Older rtslib versions wrote some flags as 0/1.
fn de_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<BoolLike>::deserialize(d)?.map(|b| match b {
        BoolLike::Bool(b) => b,
        BoolLike::Int(i) => i != 0,
    }))
}

fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(de_opt_bool(d)?.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_round_trip() {
        let v = json!({
            "storage_objects": [{"plugin": "fileio", "name": "a", "dev": "/x", "future": [1, 2]}],
            "targets": [{"fabric": "iscsi", "wwn": "iqn.2000-01.x:y", "new_key": true,
                         "tpgs": [{"tag": 1, "chap_userid": "u", "luns": [], "portals": [], "node_acls": []}]}],
            "fabric_modules": [],
            "top_level_extra": {"a": 1}
        });
        let c: SaveConfig = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(c.storage_objects[0].extra["future"], json!([1, 2]));
        assert_eq!(c.targets[0].tpgs[0].extra["chap_userid"], json!("u"));
        assert_eq!(serde_json::to_value(&c).unwrap(), v);
    }

    #[test]
    fn user_objects_split_their_config() {
        let so: StorageObject = serde_json::from_value(json!({
            "plugin": "user", "name": "q", "config": "qcow//var/lib/q.qcow2", "size": 1024
        }))
        .unwrap();
        assert_eq!(so.user_config(), Some(("qcow", "/var/lib/q.qcow2")));
        assert_eq!(so.ui_plugin(), "user:qcow");
        assert_eq!(so.path(), "/backstores/user/q");
        let f = StorageObject {
            plugin: "fileio".into(),
            ..StorageObject::default()
        };
        assert_eq!((f.user_config(), f.ui_plugin().as_str()), (None, "fileio"));
    }

    #[test]
    fn flags_accept_ints() {
        let t: Tpg = serde_json::from_value(json!({"enable": 0})).unwrap();
        assert!(!t.enabled());
        let t: Tpg = serde_json::from_value(json!({})).unwrap();
        assert!(t.enabled());
        let m: MappedLun =
            serde_json::from_value(json!({"index": 0, "tpg_lun": 1, "write_protect": 1})).unwrap();
        assert!(m.write_protect);
    }

    #[test]
    fn storage_object_ref_parses_paths() {
        let mut l = Lun {
            storage_object: "/backstores/fileio/disk0".into(),
            ..Lun::default()
        };
        assert_eq!(l.storage_object_ref(), Some(("fileio", "disk0")));
        l.storage_object = "/backstores/user:qcow/x".into();
        assert_eq!(l.storage_object_ref(), Some(("user:qcow", "x")));
        for bad in [
            "backstores/fileio/a",
            "/backstores/fileio",
            "/backstores//a",
            "/backstores/f/a/b",
        ] {
            l.storage_object = bad.into();
            assert_eq!(l.storage_object_ref(), None, "{bad}");
        }
    }

    #[test]
    fn attributes_accept_numbers_and_numeric_strings() {
        let m: Map<String, Value> =
            serde_json::from_value(json!({"a": 4096, "b": "512", "c": "x", "d": -1, "e": true}))
                .unwrap();
        assert_eq!(attr_u64(&m, "a"), Ok(Some(4096)));
        assert_eq!(attr_u64(&m, "b"), Ok(Some(512)));
        assert!(attr_u64(&m, "c").is_err());
        assert!(attr_u64(&m, "d").is_err());
        assert_eq!(attr_bool(&m, "e"), Ok(Some(true)));
        assert_eq!(attr_u64(&m, "missing"), Ok(None));
    }
}
