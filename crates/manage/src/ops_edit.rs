//! `delete`, `set` and `get` on the configuration (see [`crate::ops`]):
//! deleting cascades like targetcli (a storage object takes its LUNs, a LUN
//! its ACL mappings), and `set`/`get` know targetcli's attribute, parameter
//! and auth names, refusing unknown ones instead of saving typos.

use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};
use config::settings::{self, Spec};
use config::{fabric, SaveConfig, Tpg};
use serde_json::{Map, Value};

use crate::args::{parse_index, Args};
use crate::ops::{locate, tpg_mut, Loc};
use crate::tree::portal_name;

/// The names `set`/`get` offer in a group: those of config's settings
/// tables, whose value ranges `set` checks (the same ones `rtarget check`
/// and the daemon's load apply).
fn names_of(
    cell: &'static OnceLock<Vec<&'static str>>,
    table: &'static [Spec],
) -> &'static [&'static str] {
    cell.get_or_init(|| {
        table
            .iter()
            .filter(|s| s.settable)
            .map(|s| s.name)
            .collect()
    })
}

/// TPG attributes (targetcli names).
pub fn tpg_attributes() -> &'static [&'static str] {
    static C: OnceLock<Vec<&'static str>> = OnceLock::new();
    names_of(&C, settings::TPG_ATTRIBUTES)
}

/// Node ACL attributes (LIO's node attributes).
pub fn acl_attributes() -> &'static [&'static str] {
    static C: OnceLock<Vec<&'static str>> = OnceLock::new();
    names_of(&C, settings::ACL_ATTRIBUTES)
}

/// Storage object attributes (LIO's and rtarget's extensions).
pub fn so_attributes() -> &'static [&'static str] {
    static C: OnceLock<Vec<&'static str>> = OnceLock::new();
    names_of(&C, settings::SO_ATTRIBUTES)
}

/// iSCSI parameters of a TPG (RFC 7143 keys as LIO exposes them).
pub fn tpg_parameters() -> &'static [&'static str] {
    static C: OnceLock<Vec<&'static str>> = OnceLock::new();
    C.get_or_init(|| settings::TPG_PARAMETERS.iter().map(|(n, _)| *n).collect())
}

/// Auth names of targetcli (`set auth userid=...`), saved as rtslib's `chap_*`.
pub const AUTH: &[&str] = &["userid", "password", "mutual_userid", "mutual_password"];

/// vhost target attributes: rtarget's `socket` (saved as a target key,
/// which rtslib ignores on restore).
pub const VHOST_TARGET: &[&str] = &[config::vhost::SOCKET_KEY];

/// loopback target attributes: rtarget's ublk queue count and depth, and
/// the mode (ublk or scsi) (target keys, as vhost's socket).
pub const LOOPBACK_TARGET: &[&str] = config::loopback::KEYS;

/// `/iscsi set discovery_auth ...` names (rtslib saves them in the iscsi
/// fabric module as `discovery_enable_auth`, `discovery_userid`, ...).
pub const DISCOVERY_AUTH: &[&str] = &[
    "enable",
    "userid",
    "password",
    "mutual_userid",
    "mutual_password",
];

/// The saved key of a group member (`prefix` is `chap_`, `discovery_` or empty).
fn stored_key(prefix: &str, k: &str) -> String {
    match (prefix, k) {
        ("discovery_", "enable") => "discovery_enable_auth".into(),
        _ => format!("{prefix}{k}"),
    }
}

/// `delete` at `path`: with arguments, the named child of the container at
/// `path` (targetcli's form); without, the object at `path` itself.
pub fn delete(cfg: &mut SaveConfig, path: &str, args: &Args) -> Result<String> {
    let no_args = args.positional.is_empty() && args.named.is_empty();
    match crate::alua::locate(cfg, path)? {
        Some((idx, Some(g))) if no_args => return crate::alua::delete(cfg, idx, &g),
        Some((idx, None)) => {
            let b = args.bind("delete", &["name"], 1)?;
            return crate::alua::delete(cfg, idx, b.get("name").unwrap_or_default());
        }
        Some(_) => bail!("delete takes no arguments here (e.g. `{path} delete`)"),
        None => {}
    }
    let loc = locate(cfg, path)?;
    let example = crate::examples::delete(&loc, &crate::tree::normalize("/", path));
    delete_target(path, loc, args, no_args)
        .and_then(|target| delete_loc(cfg, &target))
        .map_err(|e| crate::examples::attach(e, Some(example)))
}

/// What `delete` at `loc` with `args` removes.
fn delete_target(path: &str, loc: Loc, args: &Args, no_args: bool) -> Result<Loc> {
    Ok(match loc {
        Loc::Plugin(p) => {
            let b = args.bind("delete", &["name"], 1)?;
            Loc::Object(p, b.req("name")?.to_string())
        }
        Loc::Fabric(f) if f == fabric::ISCSI || f == fabric::VHOST || f == fabric::LOOPBACK => {
            let b = args.bind("delete", &["wwn"], 1)?;
            Loc::Target(b.req("wwn")?.to_string())
        }
        Loc::Target(w) if !no_args => {
            let b = args.bind("delete", &["tag"], 1)?;
            let tag = u16::try_from(parse_index("tpg", b.req("tag")?)?)?;
            Loc::Tpg(w, tag)
        }
        Loc::Luns(w, t) => {
            let b = args.bind("delete", &["lun"], 1)?;
            Loc::Lun(w, t, parse_index("lun", b.req("lun")?)?)
        }
        Loc::Portals(w, t) => {
            let b = args.bind("delete", &["ip_address", "ip_port"], 2)?;
            let ip = b.req("ip_address")?;
            let ip = if ip.contains(':') && !ip.starts_with('[') {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            Loc::Portal(w, t, format!("{ip}:{}", b.req("ip_port")?))
        }
        Loc::Acls(w, t) => {
            let b = args.bind("delete", &["wwn"], 1)?;
            Loc::Acl(w, t, b.req("wwn")?.to_string())
        }
        Loc::Acl(w, t, a) if !no_args => {
            let b = args.bind("delete", &["mapped_lun"], 1)?;
            Loc::MappedLun(w, t, a, parse_index("mapped_lun", b.req("mapped_lun")?)?)
        }
        other => {
            if !no_args {
                bail!("delete at {path} takes no arguments");
            }
            other
        }
    })
}

fn delete_loc(cfg: &mut SaveConfig, loc: &Loc) -> Result<String> {
    match loc {
        Loc::Object(p, n) => {
            let path = crate::ops::object_ref(cfg, &format!("/backstores/{p}/{n}"))
                .ok_or_else(|| anyhow!("no such storage object /backstores/{p}/{n}"))?;
            cfg.storage_objects.retain(|so| so.path() != path);
            let mut luns = 0;
            for tpg in cfg.targets.iter_mut().flat_map(|t| t.tpgs.iter_mut()) {
                let gone: Vec<u64> = tpg
                    .luns
                    .iter()
                    .filter(|l| l.storage_object == path)
                    .map(|l| l.index)
                    .collect();
                luns += gone.len();
                remove_luns(tpg, &gone);
            }
            Ok(format!(
                "Deleted storage object {n}{}.",
                if luns > 0 {
                    format!(" and {luns} LUN(s) using it")
                } else {
                    String::new()
                }
            ))
        }
        Loc::Target(w) => {
            let before = cfg.targets.len();
            cfg.targets.retain(|t| !(t.is_served() && t.wwn == *w));
            if cfg.targets.len() == before {
                bail!("no such target {w}");
            }
            Ok(format!("Deleted Target {w}."))
        }
        Loc::Tpg(w, tag) => {
            let t = cfg
                .targets
                .iter_mut()
                .find(|t| t.is_served() && t.wwn == *w)
                .ok_or_else(|| anyhow!("no such target {w}"))?;
            let before = t.tpgs.len();
            let mut position = 0;
            t.tpgs.retain(|g| {
                let keep = g.tag_at(position) != *tag;
                position += 1;
                keep
            });
            if t.tpgs.len() == before {
                bail!("no such TPG tpg{tag}");
            }
            Ok(format!("Deleted TPG {tag}."))
        }
        Loc::Lun(w, t, i) => {
            let tpg = tpg_mut(cfg, w, *t)?;
            if !tpg.luns.iter().any(|l| l.index == *i) {
                bail!("no such LUN lun{i}");
            }
            remove_luns(tpg, &[*i]);
            Ok(format!("Deleted LUN {i}."))
        }
        Loc::Portal(w, t, name) => {
            let tpg = tpg_mut(cfg, w, *t)?;
            let before = tpg.portals.len();
            tpg.portals.retain(|p| portal_name(p) != *name);
            if tpg.portals.len() == before {
                bail!("no such portal {name}");
            }
            Ok(format!("Deleted network portal {name}"))
        }
        Loc::Acl(w, t, a) => {
            let tpg = tpg_mut(cfg, w, *t)?;
            let before = tpg.node_acls.len();
            tpg.node_acls.retain(|x| x.node_wwn != *a);
            if tpg.node_acls.len() == before {
                bail!("no such ACL {a}");
            }
            Ok(format!("Deleted Node ACL {a}."))
        }
        Loc::MappedLun(w, t, a, i) => {
            let tpg = tpg_mut(cfg, w, *t)?;
            let acl = tpg
                .node_acls
                .iter_mut()
                .find(|x| x.node_wwn == *a)
                .ok_or_else(|| anyhow!("no such ACL {a}"))?;
            let before = acl.mapped_luns.len();
            acl.mapped_luns.retain(|m| m.index != *i);
            if acl.mapped_luns.len() == before {
                bail!("no such mapped LUN mapped_lun{i}");
            }
            Ok(format!("Deleted Mapped LUN {i}."))
        }
        _ => bail!("this object cannot be deleted"),
    }
}

/// Remove LUNs and every ACL mapping that points at them.
fn remove_luns(tpg: &mut Tpg, gone: &[u64]) {
    tpg.luns.retain(|l| !gone.contains(&l.index));
    for acl in &mut tpg.node_acls {
        acl.mapped_luns.retain(|m| !gone.contains(&m.tpg_lun));
    }
}

/// The map a group lives in, and the names it accepts.
fn group_map<'a>(
    cfg: &'a mut SaveConfig,
    loc: &Loc,
    group: &str,
) -> Result<(
    &'a mut Map<String, Value>,
    &'static [&'static str],
    &'static str,
)> {
    // (map, names, prefix of the saved keys)
    match (loc, group) {
        (Loc::Target(w), "attribute") => {
            let t = cfg
                .targets
                .iter_mut()
                .find(|t| t.is_local() && t.wwn == *w)
                .ok_or_else(|| {
                    anyhow!("only vhost (socket) and loopback (ublk_queues, ublk_queue_depth, mode) targets have attributes")
                })?;
            let names = if t.is_loopback() { LOOPBACK_TARGET } else { VHOST_TARGET };
            Ok((&mut t.extra, names, ""))
        }
        (Loc::Tpg(w, t), "attribute") => Ok((&mut tpg_mut(cfg, w, *t)?.attributes, tpg_attributes(), "")),
        (Loc::Tpg(w, t), "parameter") => Ok((&mut tpg_mut(cfg, w, *t)?.parameters, tpg_parameters(), "")),
        (Loc::Tpg(w, t), "auth") => Ok((&mut tpg_mut(cfg, w, *t)?.extra, AUTH, "chap_")),
        (Loc::Fabric(f), "discovery_auth") if f == fabric::ISCSI => {
            if !cfg.fabric_modules.iter().any(|m| m.name == fabric::ISCSI) {
                cfg.fabric_modules.push(config::FabricModule {
                    name: fabric::ISCSI.into(),
                    ..Default::default()
                });
            }
            let m = cfg
                .fabric_modules
                .iter_mut()
                .find(|m| m.name == fabric::ISCSI)
                .ok_or_else(|| anyhow!("no iscsi fabric module"))?;
            Ok((&mut m.extra, DISCOVERY_AUTH, "discovery_"))
        }
        (Loc::Acl(w, t, a), "auth" | "attribute") => {
            let acl = tpg_mut(cfg, w, *t)?
                .node_acls
                .iter_mut()
                .find(|x| x.node_wwn == *a)
                .ok_or_else(|| anyhow!("no such ACL {a}"))?;
            Ok(if group == "auth" {
                (&mut acl.extra, AUTH, "chap_")
            } else {
                (&mut acl.attributes, acl_attributes(), "")
            })
        }
        (Loc::Object(p, n), "attribute") => {
            let so = cfg
                .storage_objects
                .iter_mut()
                .find(|so| so.ui_plugin() == *p && so.name == *n)
                .ok_or_else(|| anyhow!("no such storage object"))?;
            Ok((&mut so.attributes, so_attributes(), ""))
        }
        (_, g) => bail!(
            "no configuration group {g:?} here (TPGs: attribute, parameter, auth; ACLs: attribute, auth; /iscsi: discovery_auth; storage objects: attribute; ALUA groups and LUNs: alua; vhost targets: attribute socket; e.g. `/iscsi/IQN/tpg1 set attribute generate_node_acls=1`)"
        ),
    }
}

/// `info`: the saved configuration of the object at `path` (rtslib's
/// schema), or `None` for containers that have none of their own.
pub fn info(cfg: &SaveConfig, path: &str) -> Result<Option<Value>> {
    let tpg = |w: &str, t: u16| -> Result<&Tpg> {
        cfg.targets
            .iter()
            .filter(|x| x.is_served() && x.wwn == w)
            .flat_map(|x| x.tagged_tpgs())
            .find(|(g, _)| *g == t)
            .map(|(_, g)| g)
            .ok_or_else(|| anyhow!("no such TPG"))
    };
    let v = match locate(cfg, path)? {
        Loc::Object(p, n) => serde_json::to_value(
            cfg.storage_objects
                .iter()
                .find(|so| so.ui_plugin() == p && so.name == n),
        )?,
        Loc::Target(w) => {
            serde_json::to_value(cfg.targets.iter().find(|x| x.is_served() && x.wwn == w))?
        }
        Loc::Tpg(w, t) => serde_json::to_value(tpg(&w, t)?)?,
        Loc::Lun(w, t, i) => serde_json::to_value(tpg(&w, t)?.luns.iter().find(|l| l.index == i))?,
        Loc::Portal(w, t, name) => {
            serde_json::to_value(tpg(&w, t)?.portals.iter().find(|p| portal_name(p) == name))?
        }
        Loc::Acl(w, t, a) => {
            serde_json::to_value(tpg(&w, t)?.node_acls.iter().find(|x| x.node_wwn == a))?
        }
        Loc::MappedLun(w, t, a, i) => serde_json::to_value(
            tpg(&w, t)?
                .node_acls
                .iter()
                .find(|x| x.node_wwn == a)
                .and_then(|x| x.mapped_luns.iter().find(|m| m.index == i)),
        )?,
        _ => return Ok(None),
    };
    Ok(Some(hide_secrets(v)))
}

/// Passwords are shown as asterisks outside `get auth`.
fn hide_secrets(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        for (k, x) in m.iter_mut() {
            if k.contains("password") {
                *x = Value::from("********");
            } else {
                *x = hide_secrets(std::mem::take(x));
            }
        }
    } else if let Value::Array(a) = &mut v {
        for x in a.iter_mut() {
            *x = hide_secrets(std::mem::take(x));
        }
    }
    v
}

/// `set GROUP name=value...`. Returns a message per change.
pub fn set(
    cfg: &mut SaveConfig,
    path: &str,
    group: &str,
    values: &[(String, String)],
) -> Result<String> {
    if values.is_empty() {
        bail!("set {group}: give at least one NAME=VALUE (e.g. set attribute emulate_tpu=1 on a storage object)");
    }
    if group == "alua" {
        let at = crate::alua::target(cfg, path)?
            .ok_or_else(|| anyhow!("no alua group here (ALUA groups and LUNs have one)"))?;
        return crate::alua::set(cfg, at, values);
    }
    let loc = locate(cfg, path)?;
    if let (Loc::Object(p, n), "attribute") = (&loc, group) {
        let exported =
            crate::ops::object_ref(cfg, &format!("/backstores/{p}/{n}")).unwrap_or_default();
        let in_use = cfg
            .targets
            .iter()
            .flat_map(|t| &t.tpgs)
            .flat_map(|g| &g.luns)
            .any(|l| l.storage_object == exported);
        if in_use && values.iter().any(|(k, _)| k == "block_size") {
            bail!("block_size cannot change while {exported} is exported by a LUN");
        }
    }
    let example = crate::examples::set(&loc, group);
    set_in(cfg, &loc, group, values).map_err(|e| crate::examples::attach(e, example))
}

fn set_in(
    cfg: &mut SaveConfig,
    loc: &Loc,
    group: &str,
    values: &[(String, String)],
) -> Result<String> {
    let (map, names, prefix) = group_map(cfg, loc, group)?;
    let mut msgs = Vec::new();
    for (k, v) in values {
        if !names.contains(&k.as_str()) {
            bail!("unknown {group} {k:?}; known: {}", names.join(", "));
        }
        let table = match loc {
            Loc::Acl(..) => settings::ACL_ATTRIBUTES,
            Loc::Object(..) => settings::SO_ATTRIBUTES,
            _ => settings::TPG_ATTRIBUTES,
        };
        let spec = settings::find(table, k);
        let value = match group {
            // The I/O engine is named (inline/pool/uring) as well as numbered.
            "attribute" if k == "io_engine" && matches!(v.trim(), "inline" | "pool" | "uring") => {
                Value::from(v.trim())
            }
            "attribute" if matches!(loc, Loc::Target(_)) && k == config::loopback::MODE_KEY => {
                let m = Value::from(v.trim());
                if let Some(e) = config::loopback::check_key(k, &m) {
                    bail!(e);
                }
                m
            }
            "attribute"
                if matches!(loc, Loc::Target(_))
                    && config::loopback::KEYS.contains(&k.as_str()) =>
            {
                let n: u64 = v
                    .trim()
                    .parse()
                    .map_err(|_| anyhow!("{k}: {v:?} is not a number"))?;
                if let Some(e) = config::loopback::check_key(k, &Value::from(n)) {
                    bail!(e);
                }
                Value::from(n)
            }
            "attribute" if matches!(loc, Loc::Target(_)) => {
                let p = v.trim();
                if !p.starts_with('/') || p.contains('\0') {
                    bail!("socket: {v:?} is not an absolute path");
                }
                Value::from(p)
            }
            "attribute" => match spec {
                Some(spec) => Value::from(spec.check_str(v).map_err(|e| anyhow!(e))?),
                None => bail!("unknown {group} {k:?}"),
            },
            "parameter" => {
                settings::check_parameter(k, v).map_err(|e| anyhow!(e))?;
                Value::from(v.clone())
            }
            "discovery_auth" if k == "enable" => match v.trim() {
                "1" | "true" | "True" | "yes" => Value::from(true),
                "0" | "false" | "False" | "no" => Value::from(false),
                _ => bail!("enable: {v:?} must be 0 or 1"),
            },
            _ => Value::from(v.clone()),
        };
        map.insert(stored_key(prefix, k), value);
        let shown = if k.contains("password") {
            "********"
        } else {
            v
        };
        let stored_only = match loc {
            Loc::Object(..) | Loc::Acl(..) => spec.is_some_and(|s| !s.used),
            _ => false,
        };
        let note = if group == "attribute" && stored_only {
            " (saved; rtarget does not act on it yet)"
        } else {
            ""
        };
        msgs.push(format!("Parameter {k} is now '{shown}'.{note}"));
    }
    Ok(msgs.join("\n"))
}

/// `get GROUP [name...]`: the configured values; names never set read
/// `null` (the daemon's built-in default applies).
pub fn get(
    cfg: &SaveConfig,
    path: &str,
    group: &str,
    names: &[String],
) -> Result<Map<String, Value>> {
    if group == "alua" {
        let at = crate::alua::target(cfg, path)?
            .ok_or_else(|| anyhow!("no alua group here (ALUA groups and LUNs have one)"))?;
        return crate::alua::get(cfg, at, names);
    }
    let loc = locate(cfg, path)?;
    let mut copy = cfg.clone();
    let (map, known, prefix) = group_map(&mut copy, &loc, group)?;
    let wanted: Vec<&str> = if names.is_empty() {
        known.to_vec()
    } else {
        names.iter().map(String::as_str).collect()
    };
    let mut out = Map::new();
    for k in wanted {
        if !known.contains(&k) {
            bail!(
                "unknown {group} {k:?}; known: {}; e.g. get {group} {}",
                known.join(", "),
                known.first().unwrap_or(&"")
            );
        }
        let key = stored_key(prefix, k);
        out.insert(k.to_string(), map.get(&key).cloned().unwrap_or(Value::Null));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SaveConfig {
        serde_json::from_value(serde_json::json!({
            "targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.org.example:t1", "tpgs": [{
                "tag": 1,
                "node_acls": [{"node_wwn": "iqn.2026-11.org.example:h1", "mapped_luns": []}]
            }]}]
        }))
        .unwrap()
    }

    const ACL: &str = "/iscsi/iqn.2026-11.org.example:t1/tpg1/acls/iqn.2026-11.org.example:h1";

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// `set attribute` on an ACL stores LIO's node attributes, says which
    /// ones the fabric does not act on, refuses values LIO refuses, and
    /// `get attribute` reads them back.
    #[test]
    fn acl_attributes_are_stored_checked_and_read_back() {
        let mut c = cfg();
        let msg = set(
            &mut c,
            ACL,
            "attribute",
            &kv(&[("dataout_timeout", "5"), ("authentication", "1")]),
        )
        .unwrap();
        assert!(
            msg.contains("dataout_timeout is now '5'. (saved; rtarget does not act on it yet)"),
            "{msg}"
        );
        assert!(
            msg.contains("authentication is now '1'.\n") || msg.ends_with("'1'."),
            "{msg}"
        );
        let acl = &c.targets[0].tpgs[0].node_acls[0];
        assert_eq!(acl.attributes["dataout_timeout"], 5);
        for (k, v) in [("default_erl", "3"), ("nopin_timeout", "1"), ("bogus", "1")] {
            let e = set(&mut c, ACL, "attribute", &kv(&[(k, v)])).unwrap_err();
            assert!(
                e.to_string().contains("is not allowed (allowed: ")
                    || e.to_string().contains("unknown"),
                "{e}"
            );
        }
        let got = get(
            &c,
            ACL,
            "attribute",
            &["dataout_timeout".into(), "default_erl".into()],
        )
        .unwrap();
        assert_eq!(got["dataout_timeout"], 5);
        assert_eq!(got["default_erl"], Value::Null);
        // Saved in rtslib's place: node_acls[].attributes.
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v["targets"][0]["tpgs"][0]["node_acls"][0]["attributes"]["authentication"],
            1
        );
    }

    /// Issue 9 item 1 at `set`: every boolean-like TPG, ACL and storage
    /// object attribute refuses 2, -1 and "yes" with the allowed values in
    /// the message (the ranges are config's, the ones check and load use),
    /// and stores 0 and 1.
    #[test]
    fn set_refuses_out_of_range_flags_everywhere() {
        let mut c: SaveConfig = serde_json::from_value(serde_json::json!({
            "storage_objects": [{"plugin": "ramdisk", "name": "r", "size": 1048576}],
            "targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.org.example:t1", "tpgs": [{
                "tag": 1,
                "node_acls": [{"node_wwn": "iqn.2026-11.org.example:h1", "mapped_luns": []}]
            }]}]
        }))
        .unwrap();
        let mut tried = 0;
        for (path, table) in [
            (
                "/iscsi/iqn.2026-11.org.example:t1/tpg1",
                settings::TPG_ATTRIBUTES,
            ),
            (ACL, settings::ACL_ATTRIBUTES),
            ("/backstores/ramdisk/r", settings::SO_ATTRIBUTES),
        ] {
            for spec in table.iter().filter(|s| s.settable && s.allowed == [(0, 1)]) {
                for bad in ["2", "-1", "yes"] {
                    let e = set(&mut c, path, "attribute", &kv(&[(spec.name, bad)]))
                        .unwrap_err()
                        .to_string();
                    assert!(
                        e.contains(spec.name) && e.contains(bad) && e.contains("allowed: 0 or 1"),
                        "{path} {}={bad}: {e}",
                        spec.name
                    );
                    tried += 1;
                }
                for good in ["0", "1"] {
                    set(&mut c, path, "attribute", &kv(&[(spec.name, good)])).unwrap();
                }
            }
        }
        assert!(tried >= 3 * 35, "{tried}");
        assert!(config::validate(&c).is_ok());
        // Ranges other than 0/1 come from the same table.
        let tpg = "/iscsi/iqn.2026-11.org.example:t1/tpg1";
        let e = set(&mut c, tpg, "attribute", &kv(&[("login_timeout", "31")])).unwrap_err();
        assert!(e.to_string().contains("from 5 to 30"), "{e}");
        set(&mut c, ACL, "attribute", &kv(&[("authentication", "-1")])).unwrap();
    }

    /// rtarget's own storage-object attributes (I/O engine, O_DIRECT, QoS,
    /// removable) are settable like LIO's, acted on, and checked; the I/O
    /// engine is stored by name.
    #[test]
    fn extension_object_attributes_are_settable() {
        let mut c: SaveConfig = serde_json::from_value(serde_json::json!({
            "storage_objects": [{"plugin": "fileio", "name": "d", "dev": "/tmp/d.img",
                                 "size": 1048576}]
        }))
        .unwrap();
        let msg = set(
            &mut c,
            "/backstores/fileio/d",
            "attribute",
            &kv(&[
                ("io_engine", "pool"),
                ("o_direct", "1"),
                ("qos_rw_mbytes_per_sec", "8"),
                ("removable", "1"),
            ]),
        )
        .unwrap();
        assert!(!msg.contains("does not act on it"), "{msg}");
        let a = &c.storage_objects[0].attributes;
        assert_eq!(a["io_engine"], "pool");
        assert_eq!(a["qos_rw_mbytes_per_sec"], 8);
        assert!(config::validate(&c).is_ok());
        set(
            &mut c,
            "/backstores/fileio/d",
            "attribute",
            &kv(&[("io_engine", "uring")]),
        )
        .unwrap();
        assert_eq!(c.storage_objects[0].attributes["io_engine"], "uring");
        for (k, v) in [("io_engine", "spdk"), ("encryption", "1")] {
            assert!(set(&mut c, "/backstores/fileio/d", "attribute", &kv(&[(k, v)])).is_err());
        }
    }
}
