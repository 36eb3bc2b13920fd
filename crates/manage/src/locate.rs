//! Targetcli paths resolved against a config: [`locate`] turns
//! `/iscsi/IQN/tpg1/acls/NODE/2` into a [`Loc`] that exists, and the
//! helpers find the TPG or storage object a location names.

use anyhow::{anyhow, Result};
use config::{fabric, SaveConfig, StorageObject, Target, Tpg};

use crate::args::parse_index;
use crate::tree::{normalize, portal_name};

/// A path in the tree, resolved against the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    Root,
    Backstores,
    Plugin(String),
    Object(String, String),
    Fabric(String),
    Target(String),
    Tpg(String, u16),
    Luns(String, u16),
    Lun(String, u16, u64),
    Acls(String, u16),
    Acl(String, u16, String),
    MappedLun(String, u16, String, u64),
    Portals(String, u16),
    Portal(String, u16, String),
}

/// "no such path", pointing at the nearest parent, where `ls` shows what
/// exists instead.
pub fn no_such_path(path: &str) -> anyhow::Error {
    let parent = match path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((p, _)) => p,
    };
    anyhow!("no such path: {path} (e.g. `ls {parent}` shows what is there)")
}

/// Resolve an absolute path to a location that exists in `cfg`.
pub fn locate(cfg: &SaveConfig, path: &str) -> Result<Loc> {
    let path = normalize("/", path);
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let missing = || no_such_path(&path);
    let loc = match parts.as_slice() {
        [] => Loc::Root,
        ["backstores"] => Loc::Backstores,
        ["backstores", p] if crate::tree::plugins().iter().any(|x| x == p) => {
            Loc::Plugin(p.to_string())
        }
        ["backstores", p, n] | ["backstores", p, n, "alua", ..] => {
            if !cfg
                .storage_objects
                .iter()
                .any(|so| so.ui_plugin() == *p && so.name == *n)
            {
                return Err(missing());
            }
            Loc::Object(p.to_string(), n.to_string())
        }
        [f] if fabric::ALL.contains(f) => Loc::Fabric(f.to_string()),
        [f @ (fabric::ISCSI | fabric::VHOST | fabric::LOOPBACK), wwn, rest @ ..] => {
            let t = cfg
                .targets
                .iter()
                .find(|t| t.fabric == *f && t.wwn == *wwn)
                .ok_or_else(missing)?;
            let w = t.wwn.clone();
            let Some((tpg_part, rest)) = rest.split_first() else {
                return Ok(Loc::Target(w));
            };
            let tag = parse_index("tpg", tpg_part).map_err(|_| missing())?;
            let tag = u16::try_from(tag).map_err(|_| missing())?;
            let tpg = find_tpg(t, tag).ok_or_else(missing)?;
            if t.is_local() && !matches!(rest, [] | ["luns", ..]) {
                return Err(missing());
            }
            match rest {
                [] => Loc::Tpg(w, tag),
                ["luns"] => Loc::Luns(w, tag),
                ["luns", l] => {
                    let i = parse_index("lun", l).map_err(|_| missing())?;
                    tpg.luns.iter().find(|x| x.index == i).ok_or_else(missing)?;
                    Loc::Lun(w, tag, i)
                }
                ["acls"] => Loc::Acls(w, tag),
                ["acls", a, rest @ ..] => {
                    let acl = tpg
                        .node_acls
                        .iter()
                        .find(|x| x.node_wwn == *a)
                        .ok_or_else(missing)?;
                    match rest {
                        [] => Loc::Acl(w, tag, a.to_string()),
                        [m] => {
                            let i = parse_index("mapped_lun", m).map_err(|_| missing())?;
                            acl.mapped_luns
                                .iter()
                                .find(|x| x.index == i)
                                .ok_or_else(missing)?;
                            Loc::MappedLun(w, tag, a.to_string(), i)
                        }
                        _ => return Err(missing()),
                    }
                }
                ["portals"] => Loc::Portals(w, tag),
                ["portals", p] => {
                    tpg.portals
                        .iter()
                        .find(|x| portal_name(x) == *p)
                        .ok_or_else(missing)?;
                    Loc::Portal(w, tag, p.to_string())
                }
                _ => return Err(missing()),
            }
        }
        _ => return Err(missing()),
    };
    Ok(loc)
}

/// The served target (iSCSI or vhost) named `wwn`.
pub(crate) fn iscsi_target<'a>(cfg: &'a SaveConfig, wwn: &str) -> Option<&'a Target> {
    cfg.targets.iter().find(|t| t.is_served() && t.wwn == wwn)
}

fn find_tpg(t: &Target, tag: u16) -> Option<&Tpg> {
    t.tagged_tpgs().find(|(g, _)| *g == tag).map(|(_, g)| g)
}

pub(crate) fn tpg_mut<'a>(cfg: &'a mut SaveConfig, wwn: &str, tag: u16) -> Result<&'a mut Tpg> {
    let t = cfg
        .targets
        .iter_mut()
        .find(|t| t.is_served() && t.wwn == wwn)
        .ok_or_else(|| anyhow!("no such target {wwn}"))?;
    let i = t
        .tagged_tpgs()
        .position(|(g, _)| g == tag)
        .ok_or_else(|| anyhow!("no such TPG tpg{tag} in {wwn}"))?;
    Ok(&mut t.tpgs[i])
}

/// The saved reference (`/backstores/<plugin>/<name>`, as LUNs hold it) of
/// the object at a tree path; user objects appear as `/backstores/user:qcow/NAME`
/// in the tree but are referenced as `/backstores/user/NAME`.
pub fn object_ref(cfg: &SaveConfig, tree_path: &str) -> Option<String> {
    cfg.storage_objects
        .iter()
        .find(|so| {
            so.path() == tree_path
                || format!("/backstores/{}/{}", so.ui_plugin(), so.name) == tree_path
        })
        .map(StorageObject::path)
}

pub(crate) fn loc_kind(l: &Loc) -> &'static str {
    match l {
        Loc::Root => "the root",
        Loc::Backstores => "the backstores root",
        Loc::Plugin(_) => "a backstore type",
        Loc::Object(..) => "a storage object",
        Loc::Fabric(_) => "a fabric",
        Loc::Target(_) => "a target",
        Loc::Tpg(..) => "a TPG",
        Loc::Luns(..) => "the LUN list",
        Loc::Lun(..) => "a LUN",
        Loc::Acls(..) => "the ACL list",
        Loc::Acl(..) => "an ACL",
        Loc::MappedLun(..) => "a mapped LUN",
        Loc::Portals(..) => "the portal list",
        Loc::Portal(..) => "a portal",
    }
}
