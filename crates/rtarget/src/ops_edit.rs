//! `delete`, `set` and `get` on the configuration (see [`crate::ops`]):
//! deleting cascades like targetcli (a storage object takes its LUNs, a LUN
//! its ACL mappings), and `set`/`get` know targetcli's attribute, parameter
//! and auth names, refusing unknown ones instead of saving typos.

use anyhow::{anyhow, bail, Result};
use config::{SaveConfig, Tpg};
use serde_json::{Map, Value};

use crate::args::{parse_index, Args};
use crate::ops::{locate, tpg_mut, Loc};
use crate::tree::portal_name;

/// TPG attributes (targetcli names) and what rtarget does with them.
pub const TPG_ATTRIBUTES: &[&str] = &[
    "authentication",
    "cache_dynamic_acls",
    "default_cmdsn_depth",
    "default_erl",
    "demo_mode_discovery",
    "demo_mode_write_protect",
    "fabric_prot_type",
    "generate_node_acls",
    "login_keys_offload",
    "login_timeout",
    "netif_timeout",
    "nopin_response_timeout",
    "nopin_timeout",
    "prod_mode_write_protect",
    "t10_pi",
    "tpg_enabled_sendtargets",
];

/// iSCSI parameters of a TPG (RFC 7143 keys as LIO exposes them).
pub const TPG_PARAMETERS: &[&str] = &[
    "AuthMethod",
    "DataDigest",
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "DefaultTime2Retain",
    "DefaultTime2Wait",
    "ErrorRecoveryLevel",
    "FirstBurstLength",
    "HeaderDigest",
    "IFMarkInt",
    "IFMarker",
    "ImmediateData",
    "InitialR2T",
    "MaxBurstLength",
    "MaxConnections",
    "MaxOutstandingR2T",
    "MaxRecvDataSegmentLength",
    "MaxXmitDataSegmentLength",
    "OFMarkInt",
    "OFMarker",
    "TargetAlias",
];

/// Storage object attributes of LIO.
pub const SO_ATTRIBUTES: &[&str] = &[
    "block_size",
    "emulate_3pc",
    "emulate_caw",
    "emulate_dpo",
    "emulate_fua_read",
    "emulate_fua_write",
    "emulate_model_alias",
    "emulate_pr",
    "emulate_rest_reord",
    "emulate_tas",
    "emulate_tpu",
    "emulate_tpws",
    "emulate_ua_intlck_ctrl",
    "emulate_write_cache",
    "enforce_pr_isids",
    "force_pr_aptpl",
    "is_nonrot",
    "max_unmap_block_desc_count",
    "max_unmap_lba_count",
    "max_write_same_len",
    "optimal_sectors",
    "pi_prot_format",
    "pi_prot_type",
    "pi_prot_verify",
    "queue_depth",
    "unmap_granularity",
    "unmap_granularity_alignment",
    "unmap_zeroes_data",
    // rtarget extensions (docs/io-engines-and-qos.md, conformance/README.md);
    // `encryption` is not here on purpose: turning it on or off under
    // existing data would make that data unreadable.
    "io_engine",
    "o_direct",
    "qos_rw_ios_per_sec",
    "qos_rw_mbytes_per_sec",
    "removable",
];

/// Storage object attributes rtarget acts on (the rest are kept in the file).
const SO_ATTRIBUTES_USED: &[&str] = &[
    "block_size",
    "emulate_tpu",
    "emulate_tpws",
    "emulate_write_cache",
    "is_nonrot",
    "io_engine",
    "o_direct",
    "qos_rw_ios_per_sec",
    "qos_rw_mbytes_per_sec",
    "removable",
];

/// Node ACL attributes of LIO's iSCSI fabric (rtslib `NodeACL` attributes),
/// with the values LIO accepts.
pub const ACL_ATTRIBUTES: &[&str] = &[
    "authentication",
    "dataout_timeout",
    "dataout_timeout_retries",
    "default_erl",
    "nopin_response_timeout",
    "nopin_timeout",
    "random_datain_pdu_offsets",
    "random_datain_seq_offsets",
    "random_r2t_offsets",
];

/// LIO's limits for ACL attributes (iscsi_target_nodeattrib.c).
fn acl_attribute_range(k: &str) -> (u64, u64) {
    match k {
        "authentication" => (0, 1),
        "dataout_timeout" => (2, 60),
        "dataout_timeout_retries" => (1, 15),
        "default_erl" => (0, 2),
        "nopin_response_timeout" | "nopin_timeout" => (3, 60),
        _ => (0, 1),
    }
}

/// ACL attributes the fabric acts on; the others are saved for targetcli.
const ACL_ATTRIBUTES_USED: &[&str] = &["authentication"];

/// Auth names of targetcli (`set auth userid=...`), saved as rtslib's `chap_*`.
pub const AUTH: &[&str] = &["userid", "password", "mutual_userid", "mutual_password"];

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

/// Parameters whose value is Yes or No.
const YES_NO: &[&str] = &[
    "DataPDUInOrder",
    "DataSequenceInOrder",
    "IFMarker",
    "ImmediateData",
    "InitialR2T",
    "OFMarker",
];

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
        Some(_) => bail!("delete takes no arguments here"),
        None => {}
    }
    let loc = locate(cfg, path)?;
    let target = match loc.clone() {
        Loc::Plugin(p) => {
            let b = args.bind("delete", &["name"], 1)?;
            Loc::Object(p, b.req("name")?.to_string())
        }
        Loc::Fabric(f) if f == "iscsi" => {
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
    };
    delete_loc(cfg, &target)
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
            cfg.targets
                .retain(|t| !(t.fabric == "iscsi" && t.wwn == *w));
            if cfg.targets.len() == before {
                bail!("no such target {w}");
            }
            Ok(format!("Deleted Target {w}."))
        }
        Loc::Tpg(w, tag) => {
            let t = cfg
                .targets
                .iter_mut()
                .find(|t| t.fabric == "iscsi" && t.wwn == *w)
                .ok_or_else(|| anyhow!("no such target {w}"))?;
            let before = t.tpgs.len();
            let mut i = 0;
            t.tpgs.retain(|g| {
                i += 1;
                g.tag.unwrap_or(i) != *tag
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
        (Loc::Tpg(w, t), "attribute") => Ok((&mut tpg_mut(cfg, w, *t)?.attributes, TPG_ATTRIBUTES, "")),
        (Loc::Tpg(w, t), "parameter") => Ok((&mut tpg_mut(cfg, w, *t)?.parameters, TPG_PARAMETERS, "")),
        (Loc::Tpg(w, t), "auth") => Ok((&mut tpg_mut(cfg, w, *t)?.extra, AUTH, "chap_")),
        (Loc::Fabric(f), "discovery_auth") if f == "iscsi" => {
            if !cfg.fabric_modules.iter().any(|m| m.name == "iscsi") {
                cfg.fabric_modules.push(config::FabricModule {
                    name: "iscsi".into(),
                    ..Default::default()
                });
            }
            let m = cfg
                .fabric_modules
                .iter_mut()
                .find(|m| m.name == "iscsi")
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
                (&mut acl.attributes, ACL_ATTRIBUTES, "")
            })
        }
        (Loc::Object(p, n), "attribute") => {
            let so = cfg
                .storage_objects
                .iter_mut()
                .find(|so| so.ui_plugin() == *p && so.name == *n)
                .ok_or_else(|| anyhow!("no such storage object"))?;
            Ok((&mut so.attributes, SO_ATTRIBUTES, ""))
        }
        (_, g) => bail!(
            "no configuration group {g:?} here (TPGs: attribute, parameter, auth; ACLs: attribute, auth; /iscsi: discovery_auth; storage objects: attribute; ALUA groups and LUNs: alua)"
        ),
    }
}

/// `info`: the saved configuration of the object at `path` (rtslib's
/// schema), or `None` for containers that have none of their own.
pub fn info(cfg: &SaveConfig, path: &str) -> Result<Option<Value>> {
    let tpg = |w: &str, t: u16| -> Result<&Tpg> {
        cfg.targets
            .iter()
            .filter(|x| x.fabric == "iscsi" && x.wwn == w)
            .flat_map(|x| x.tpgs.iter().enumerate())
            .find(|(i, g)| g.tag.unwrap_or(*i as u16 + 1) == t)
            .map(|(_, g)| g)
            .ok_or_else(|| anyhow!("no such TPG"))
    };
    let v = match locate(cfg, path)? {
        Loc::Object(p, n) => serde_json::to_value(
            cfg.storage_objects
                .iter()
                .find(|so| so.ui_plugin() == p && so.name == n),
        )?,
        Loc::Target(w) => serde_json::to_value(
            cfg.targets
                .iter()
                .find(|x| x.fabric == "iscsi" && x.wwn == w),
        )?,
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
        bail!("set {group}: give at least one name=value");
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
    let (map, names, prefix) = group_map(cfg, &loc, group)?;
    let mut msgs = Vec::new();
    for (k, v) in values {
        if !names.contains(&k.as_str()) {
            bail!("unknown {group} {k:?}; known: {}", names.join(", "));
        }
        let value = match group {
            "attribute" if matches!(loc, Loc::Acl(..)) => {
                let (lo, hi) = acl_attribute_range(k);
                match v.trim().parse::<u64>() {
                    Ok(n) if (lo..=hi).contains(&n) => Value::from(n),
                    _ => bail!("{k}: {v:?} must be a number from {lo} to {hi}"),
                }
            }
            // The I/O engine is named (inline/pool) as well as numbered.
            "attribute" if k == "io_engine" && matches!(v.trim(), "inline" | "pool") => {
                Value::from(v.trim())
            }
            "attribute" => Value::from(
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| anyhow!("{k}: {v:?} is not a non-negative integer"))?,
            ),
            "parameter" => {
                check_parameter(k, v)?;
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
            Loc::Object(..) => !SO_ATTRIBUTES_USED.contains(&k.as_str()),
            Loc::Acl(..) => !ACL_ATTRIBUTES_USED.contains(&k.as_str()),
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

/// RFC 7143's value ranges, so a typo is refused here rather than offered
/// to initiators at the next login.
fn check_parameter(k: &str, v: &str) -> Result<()> {
    if YES_NO.contains(&k) && v != "Yes" && v != "No" {
        bail!("{k}: {v:?} must be Yes or No");
    }
    let list = |allowed: &[&str]| -> Result<()> {
        if v.split(',').all(|x| allowed.contains(&x)) {
            Ok(())
        } else {
            bail!(
                "{k}: {v:?} must be a comma-separated list of {}",
                allowed.join(", ")
            )
        }
    };
    let range = |lo: u32, hi: u32| -> Result<()> {
        match v.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(()),
            _ => bail!("{k}: {v:?} must be a number from {lo} to {hi}"),
        }
    };
    match k {
        "HeaderDigest" | "DataDigest" => list(&["None", "CRC32C"]),
        "AuthMethod" => list(&["None", "CHAP"]),
        "MaxRecvDataSegmentLength"
        | "MaxXmitDataSegmentLength"
        | "MaxBurstLength"
        | "FirstBurstLength" => range(512, (1 << 24) - 1),
        "DefaultTime2Wait" | "DefaultTime2Retain" => range(0, 3600),
        "ErrorRecoveryLevel" => range(0, 2),
        "MaxOutstandingR2T" | "MaxConnections" => range(1, 65535),
        _ => Ok(()),
    }
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
            bail!("unknown {group} {k:?}; known: {}", known.join(", "));
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
                e.to_string().contains("must be a number from")
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
        for (k, v) in [("io_engine", "uring"), ("encryption", "1")] {
            assert!(set(&mut c, "/backstores/fileio/d", "attribute", &kv(&[(k, v)])).is_err());
        }
    }
}
