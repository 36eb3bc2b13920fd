//! ALUA in the management plane, on the config: the
//! `/backstores/TYPE/NAME/alua/GROUP` verbs of targetcli (`create NAME
//! TAG`, `delete NAME`, `set alua ...`, `get alua` on a group; `set alua
//! alua_tg_pt_gp_name=GROUP` on a LUN). The running side (handing devices
//! their groups, reading back states set by initiators) is the daemon's.

use anyhow::{anyhow, bail, Result};
use config::alua::{groups_of, AluaTpg, ALUA_PARAMS};
use config::{SaveConfig, StorageObject, DEFAULT_TG_PT_GP};
use serde_json::{Map, Value};

use crate::args::Args;
use crate::ops::Loc;

/// Read-only values `get alua` shows besides [`ALUA_PARAMS`] (targetcli's
/// `alua_ro_params`).
pub const ALUA_RO_PARAMS: &[&str] = &["tg_pt_gp_id", "members", "alua_support_lba_dependent"];

/// What `get alua`/`set alua` on a LUN know.
pub const LUN_ALUA_PARAMS: &[&str] = &["alua_tg_pt_gp_name"];

/// An ALUA location: the storage object's index, and the group name for
/// `/backstores/TYPE/NAME/alua/GROUP` (`None` for the `alua` directory).
pub type AluaLoc = (usize, Option<String>);

/// `Some` when `path` is under `/backstores/TYPE/NAME/alua`; an error
/// when it names a group that does not exist.
pub fn locate(cfg: &SaveConfig, path: &str) -> Result<Option<AluaLoc>> {
    let path = crate::tree::normalize("/", path);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let (p, n, rest) = match parts.as_slice() {
        ["backstores", p, n, "alua", rest @ ..] => (*p, *n, rest),
        _ => return Ok(None),
    };
    let idx = cfg
        .storage_objects
        .iter()
        .position(|so| so.ui_plugin() == p && so.name == n)
        .ok_or_else(|| crate::locate::no_such_path(&path))?;
    match rest {
        [] => Ok(Some((idx, None))),
        [g] => {
            let so = &cfg.storage_objects[idx];
            if !groups_of(so.alua_tpgs.as_deref())
                .iter()
                .any(|x| x.name == *g)
            {
                return Err(crate::locate::no_such_path(&path));
            }
            Ok(Some((idx, Some(g.to_string()))))
        }
        _ => Err(crate::locate::no_such_path(&path)),
    }
}

/// The groups of object `idx`, materialised (rtslib always dumps
/// `default_tg_pt_gp`), for editing.
fn groups_mut(cfg: &mut SaveConfig, idx: usize) -> &mut Vec<AluaTpg> {
    let so = &mut cfg.storage_objects[idx];
    let groups = groups_of(so.alua_tpgs.as_deref());
    so.alua_tpgs.insert(groups)
}

/// `create NAME TAG` in an `alua` directory.
pub fn create(cfg: &mut SaveConfig, idx: usize, args: &Args) -> Result<String> {
    let b = args.bind("create", &["name", "tag"], 2)?;
    let name = b.get("name").unwrap_or_default().to_string();
    let tag: u32 = b
        .get("tag")
        .unwrap_or_default()
        .trim()
        .parse()
        .map_err(|_| anyhow!("tag must be a number from 1 to 65535"))?;
    if !(1..=65535).contains(&tag) {
        bail!("The TPG Tag must be between 1 and 65535");
    }
    let groups = groups_mut(cfg, idx);
    if groups.iter().any(|g| g.name == name) {
        bail!("ALUA group {name} already exists");
    }
    if let Some(g) = groups.iter().find(|g| g.id() == tag) {
        bail!("tg_pt_gp_id {tag} is taken by ALUA group {}", g.name);
    }
    let g = AluaTpg::new(&name, tag);
    if let Some(p) = g.problems().into_iter().next() {
        bail!(p);
    }
    groups.push(g);
    Ok(format!("Created ALUA TPG {name}."))
}

/// `delete NAME`: LUNs in the group go back to `default_tg_pt_gp`, as in
/// LIO.
pub fn delete(cfg: &mut SaveConfig, idx: usize, name: &str) -> Result<String> {
    if name == DEFAULT_TG_PT_GP {
        bail!("Can not delete {DEFAULT_TG_PT_GP}");
    }
    let so_path = cfg.storage_objects[idx].path();
    let groups = groups_mut(cfg, idx);
    let before = groups.len();
    groups.retain(|g| g.name != name);
    if groups.len() == before {
        bail!("Invalid ALUA group name");
    }
    let mut moved = 0;
    for lun in cfg
        .targets
        .iter_mut()
        .flat_map(|t| t.tpgs.iter_mut())
        .flat_map(|g| g.luns.iter_mut())
        .filter(|l| l.storage_object == so_path)
    {
        if lun.alua_tg_pt_gp_name.as_deref() == Some(name) {
            lun.alua_tg_pt_gp_name = Some(DEFAULT_TG_PT_GP.into());
            moved += 1;
        }
    }
    let mut msg = format!("Deleted ALUA TPG {name}.");
    if moved > 0 {
        msg.push_str(&format!(" {moved} LUN(s) moved to {DEFAULT_TG_PT_GP}."));
    }
    Ok(msg)
}

/// `set alua name=value...` on a group or a LUN.
pub fn set(cfg: &mut SaveConfig, at: Target, values: &[(String, String)]) -> Result<String> {
    if values.is_empty() {
        bail!("set alua: give at least one name=value");
    }
    let mut msgs = Vec::new();
    match at {
        Target::Group(idx, name) => {
            let groups = groups_mut(cfg, idx);
            let slot = groups
                .iter_mut()
                .find(|g| g.name == name)
                .ok_or_else(|| anyhow!("no ALUA group {name}"))?;
            // All or nothing: a refused value leaves the group as it was.
            let mut g = slot.clone();
            for (k, v) in values {
                if ALUA_RO_PARAMS.contains(&k.as_str()) {
                    bail!("{k} is read-only");
                }
                g.set(k, v).map_err(|e| anyhow!(e))?;
                msgs.push(format!("Parameter {k} is now '{v}'."));
            }
            if let Some(p) = g.problems().into_iter().next() {
                bail!(p);
            }
            *slot = g;
        }
        Target::Lun(wwn, tag, index) => {
            let so_path = crate::ops::tpg_mut(cfg, &wwn, tag)?
                .luns
                .iter()
                .find(|l| l.index == index)
                .map(|l| l.storage_object.clone())
                .ok_or_else(|| anyhow!("no such LUN {index}"))?;
            let names: Vec<String> = cfg
                .storage_objects
                .iter()
                .find(|so| so.path() == so_path)
                .map(|so| {
                    groups_of(so.alua_tpgs.as_deref())
                        .into_iter()
                        .map(|g| g.name)
                        .collect()
                })
                .unwrap_or_default();
            for (k, v) in values {
                if k != "alua_tg_pt_gp_name" {
                    bail!("unknown alua {k:?}; known: alua_tg_pt_gp_name");
                }
                if !names.contains(v) {
                    bail!(
                        "{v:?} is not an ALUA group of {so_path} (groups: {})",
                        names.join(", ")
                    );
                }
                let lun = crate::ops::tpg_mut(cfg, &wwn, tag)?
                    .luns
                    .iter_mut()
                    .find(|l| l.index == index)
                    .ok_or_else(|| anyhow!("no such LUN {index}"))?;
                lun.alua_tg_pt_gp_name = Some(v.clone());
                msgs.push(format!("Parameter {k} is now '{v}'."));
            }
        }
    }
    Ok(msgs.join("\n"))
}

/// Where `set alua`/`get alua` apply.
pub enum Target {
    Group(usize, String),
    Lun(String, u16, u64),
}

/// The `alua` target of a path, if it has one.
pub fn target(cfg: &SaveConfig, path: &str) -> Result<Option<Target>> {
    if let Some((idx, group)) = locate(cfg, path)? {
        return match group {
            Some(g) => Ok(Some(Target::Group(idx, g))),
            None => bail!("set/get alua work on a group (alua/GROUP) or a LUN"),
        };
    }
    match crate::ops::locate(cfg, path) {
        Ok(Loc::Lun(w, t, i)) => Ok(Some(Target::Lun(w, t, i))),
        _ => Ok(None),
    }
}

/// LIO's member names of a group: `iscsi/IQN/tpgt_N/lun_M`.
fn members(cfg: &SaveConfig, so: &StorageObject, group: &str) -> Vec<String> {
    let mut out = Vec::new();
    for t in &cfg.targets {
        for (tag, tpg) in t.tagged_tpgs() {
            for lun in tpg.luns.iter().filter(|l| l.storage_object == so.path()) {
                if lun
                    .alua_tg_pt_gp_name
                    .as_deref()
                    .unwrap_or(DEFAULT_TG_PT_GP)
                    == group
                {
                    out.push(format!(
                        "{}/{}/tpgt_{tag}/lun_{}",
                        t.fabric, t.wwn, lun.index
                    ));
                }
            }
        }
    }
    out
}

/// `get alua [name...]`.
pub fn get(cfg: &SaveConfig, at: Target, names: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    match at {
        Target::Group(idx, name) => {
            let so = &cfg.storage_objects[idx];
            let g = groups_of(so.alua_tpgs.as_deref())
                .into_iter()
                .find(|g| g.name == name)
                .ok_or_else(|| anyhow!("no ALUA group {name}"))?;
            let all: Vec<&str> = ALUA_PARAMS.iter().chain(ALUA_RO_PARAMS).copied().collect();
            let wanted: Vec<&str> = if names.is_empty() {
                all.clone()
            } else {
                names.iter().map(String::as_str).collect()
            };
            for k in wanted {
                if !all.contains(&k) {
                    bail!("unknown alua {k:?}; known: {}", all.join(", "));
                }
                let v = if k == "members" {
                    Value::from(members(cfg, so, &name))
                } else {
                    Value::from(g.get(k).unwrap_or(0))
                };
                out.insert(k.to_string(), v);
            }
        }
        Target::Lun(wwn, tag, index) => {
            let lun = cfg
                .targets
                .iter()
                .filter(|t| t.is_iscsi() && t.wwn == wwn)
                .flat_map(|t| t.tagged_tpgs())
                .find(|(g, _)| *g == tag)
                .and_then(|(_, g)| g.luns.iter().find(|l| l.index == index))
                .ok_or_else(|| anyhow!("no such LUN {index}"))?;
            for k in names {
                if k != "alua_tg_pt_gp_name" {
                    bail!("unknown alua {k:?}; known: alua_tg_pt_gp_name");
                }
            }
            out.insert(
                "alua_tg_pt_gp_name".into(),
                Value::from(
                    lun.alua_tg_pt_gp_name
                        .clone()
                        .unwrap_or_else(|| DEFAULT_TG_PT_GP.into()),
                ),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IQN: &str = "iqn.2026-11.org.example:t1";

    fn cfg() -> SaveConfig {
        serde_json::from_value(serde_json::json!({
            "storage_objects": [{"plugin": "ramdisk", "name": "r0", "size": 1048576}],
            "targets": [{"fabric": "iscsi", "wwn": IQN, "tpgs": [
                {"tag": 1, "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/r0"}]},
                {"tag": 2, "luns": [{"index": 3, "storage_object": "/backstores/ramdisk/r0"}]}
            ]}]
        }))
        .unwrap()
    }

    fn kv(k: &str, v: &str) -> Vec<(String, String)> {
        vec![(k.to_string(), v.to_string())]
    }

    const ALUA: &str = "/backstores/ramdisk/r0/alua";

    #[test]
    fn create_set_get_delete_groups() {
        let mut c = cfg();
        assert_eq!(locate(&c, ALUA).unwrap(), Some((0, None)));
        assert!(locate(&c, &format!("{ALUA}/nope")).is_err());
        assert_eq!(locate(&c, "/backstores/ramdisk/r0").unwrap(), None);
        let args = Args::from_words(&["sb", "2"]).unwrap();
        assert_eq!(create(&mut c, 0, &args).unwrap(), "Created ALUA TPG sb.");
        let groups = c.storage_objects[0].alua_tpgs.as_ref().unwrap();
        assert_eq!(
            groups.len(),
            2,
            "default_tg_pt_gp written out as rtslib does"
        );
        for bad in [
            &["sb", "3"][..],
            &["x", "2"],
            &["y", "0"],
            &["z", "70000"],
            &["w"],
        ] {
            let args = Args::from_words(bad).unwrap();
            assert!(create(&mut c, 0, &args).is_err(), "{bad:?}");
        }
        let at = target(&c, &format!("{ALUA}/sb")).unwrap().unwrap();
        set(&mut c, at, &kv("alua_access_state", "2")).unwrap();
        for (k, v) in [
            ("alua_access_state", "4"),
            ("tg_pt_gp_id", "5"),
            ("nonop_delay_msecs", "x"),
        ] {
            let at = target(&c, &format!("{ALUA}/sb")).unwrap().unwrap();
            assert!(set(&mut c, at, &kv(k, v)).is_err(), "{k}={v}");
        }
        let lun = format!("/iscsi/{IQN}/tpg2/luns/lun3");
        let at = target(&c, &lun).unwrap().unwrap();
        set(&mut c, at, &kv("alua_tg_pt_gp_name", "sb")).unwrap();
        let at = target(&c, &lun).unwrap().unwrap();
        assert!(set(&mut c, at, &kv("alua_tg_pt_gp_name", "zz")).is_err());
        let at = target(&c, &format!("{ALUA}/sb")).unwrap().unwrap();
        let got = get(&c, at, &[]).unwrap();
        assert_eq!(got["alua_access_state"], 2);
        assert_eq!(got["tg_pt_gp_id"], 2);
        assert_eq!(
            got["members"],
            serde_json::json!([format!("iscsi/{IQN}/tpgt_2/lun_3")])
        );
        assert!(config::validate(&c).is_ok());
        assert!(delete(&mut c, 0, DEFAULT_TG_PT_GP).is_err());
        let msg = delete(&mut c, 0, "sb").unwrap();
        assert!(msg.contains("1 LUN(s) moved"), "{msg}");
        assert_eq!(
            c.targets[0].tpgs[1].luns[0].alua_tg_pt_gp_name.as_deref(),
            Some(DEFAULT_TG_PT_GP)
        );
    }
}
