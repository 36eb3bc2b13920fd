//! Validation of a parsed saveconfig: errors that make the file unusable
//! (duplicates, dangling references, impossible sizes) and warnings for
//! entries rtarget keeps in the file but does not act on (other fabrics,
//! pscsi, keys it does not know) or that cannot work as written (CHAP
//! without credentials, an ACL-only TPG without ACLs).

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::model::{SaveConfig, StorageObject, Target, Tpg};

/// One problem, located by a targetcli-like path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// e.g. `targets[0] iqn.2003-01.x:y / tpg1 / luns[1]`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Plugins rtarget can serve.
pub const SUPPORTED_PLUGINS: &[&str] = &["fileio", "block", "ramdisk", "user"];
/// Handlers of `user` objects rtarget serves natively (`config` =
/// `qcow/<image path>`, `nbd/<NBD URI>` or `qemu/<FORMAT>/<image path>`).
/// The daemon widens this with every handler it registers
/// ([`set_user_handlers`]).
pub const SUPPORTED_USER_HANDLERS: &[&str] = &["qcow", "nbd", "qemu"];

/// The handler names validation accepts for `user` objects; `None` until the
/// process registers its own list (then the built-in list applies).
static USER_HANDLERS: std::sync::RwLock<Option<Vec<String>>> = std::sync::RwLock::new(None);

/// Tell validation which `user` handlers this process serves (the daemon's
/// handler registry), so objects of a registered handler are not reported as
/// unsupported. Replaces any earlier list.
pub fn set_user_handlers<I, S>(names: I)
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let list = names.into_iter().map(Into::into).collect();
    *USER_HANDLERS.write().unwrap_or_else(|e| e.into_inner()) = Some(list);
}

/// Whether `name` is a served user handler, and the list for messages.
fn user_handler_known(name: &str) -> (bool, Vec<String>) {
    let guard = USER_HANDLERS.read().unwrap_or_else(|e| e.into_inner());
    let list: Vec<String> = match guard.as_ref() {
        Some(l) => l.clone(),
        None => SUPPORTED_USER_HANDLERS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    (list.iter().any(|n| n == name), list)
}
/// rtslib's own keys of `user` objects.
const USER_KEYS: &[&str] = &["config", "control", "hw_max_sectors"];
/// Fabrics rtarget can serve.
pub const SUPPORTED_FABRICS: &[&str] = &[
    crate::fabric::ISCSI,
    crate::fabric::LOOPBACK,
    crate::fabric::VHOST,
];
/// Logical block sizes the core accepts.
pub const BLOCK_SIZES: &[u64] = &[512, 1024, 2048, 4096];
/// LIO's per-TPG LUN limit.
pub const MAX_LUN: u64 = 65535;

#[derive(Default)]
pub(crate) struct Report {
    errors: Vec<Issue>,
    warnings: Vec<Issue>,
}

impl Report {
    fn err(&mut self, loc: &str, msg: impl Into<String>) {
        self.errors.push(Issue {
            location: loc.to_string(),
            message: msg.into(),
        });
    }
    pub(crate) fn warn(&mut self, loc: &str, msg: impl Into<String>) {
        self.warnings.push(Issue {
            location: loc.to_string(),
            message: msg.into(),
        });
    }
    fn extra(&mut self, loc: &str, extra: &Map<String, Value>) {
        for k in extra.keys() {
            self.warn(loc, format!("unknown key {k:?} kept as is but not used"));
        }
    }
}

/// Check `cfg`. `Ok(warnings)` when usable, `Err(errors)` otherwise (errors
/// first, warnings are dropped then: fix the errors first).
pub fn validate(cfg: &SaveConfig) -> Result<Vec<Issue>, Vec<Issue>> {
    let mut r = Report::default();
    r.extra("top level", &cfg.extra);
    for (i, fm) in cfg.fabric_modules.iter().enumerate() {
        let loc = format!("fabric_modules[{i}] {}", fm.name);
        if fm.name.is_empty() {
            r.err(&loc, "'name' is missing or empty");
        }
        // discovery_* keys drive discovery CHAP (rtarget's build reads them).
        let auth: Vec<&String> = fm
            .extra
            .keys()
            .filter(|k| k.starts_with("discovery_"))
            .collect();
        let rest: Map<String, Value> = fm
            .extra
            .iter()
            .filter(|(k, _)| !auth.contains(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        r.extra(&loc, &rest);
    }

    let mut so_paths = HashSet::new();
    let mut usable_sos = HashSet::new();
    for (i, so) in cfg.storage_objects.iter().enumerate() {
        let loc = format!("storage_objects[{i}] {}", so.path());
        if check_storage_object(&mut r, &loc, so) {
            usable_sos.insert(so.path());
        }
        if !so_paths.insert(so.path()) {
            r.err(&loc, format!("duplicate storage object {}", so.path()));
        }
    }
    for (loc, problem) in crate::naa::check(cfg, &usable_sos) {
        r.warn(&loc, problem);
    }

    let mut wwns = HashSet::new();
    for (i, t) in cfg.targets.iter().enumerate() {
        let loc = format!("targets[{i}] {}", t.wwn);
        if !wwns.insert((t.fabric.clone(), t.wwn.clone())) {
            r.err(&loc, format!("duplicate {} target {}", t.fabric, t.wwn));
        }
        check_target(&mut r, &loc, t, &so_paths, &usable_sos);
    }
    for (loc, problem) in crate::alua::check_lun_groups(cfg) {
        r.err(&loc, problem);
    }

    if r.errors.is_empty() {
        Ok(r.warnings)
    } else {
        Err(r.errors)
    }
}

/// Returns whether rtarget can build this storage object.
fn check_storage_object(r: &mut Report, loc: &str, so: &StorageObject) -> bool {
    // rtslib refuses the same characters (they break configfs/targetcli paths).
    if so.name.is_empty() || so.name.contains(['/', ' ', '\t', '\n']) {
        r.err(
            loc,
            format!(
                "invalid name {:?} (non-empty, no '/' or whitespace)",
                so.name
            ),
        );
    }
    // One parse, shared with the daemon's build: every known attribute
    // within LIO's values (rtarget's own for its extensions).
    let block_size = match crate::ObjectAttributes::parse(&so.attributes) {
        Ok(a) => {
            let uring = a.io_engine == Some(crate::IoEngineChoice::Uring);
            if uring && !matches!(so.plugin.as_str(), "fileio" | "block") {
                r.err(loc, "io_engine=uring is for fileio and block objects only");
            }
            u64::from(a.block_size)
        }
        Err(errors) => {
            for e in errors {
                r.err(loc, e);
            }
            512
        }
    };
    if let Some(size) = so.size {
        if size == 0 {
            r.err(loc, "size must be greater than 0");
        } else if size % block_size != 0 {
            r.err(
                loc,
                format!("size {size} is not a multiple of block_size {block_size}"),
            );
        }
    }
    if SUPPORTED_PLUGINS.contains(&so.plugin.as_str()) {
        // Other plugins' own keys are not news: the whole object is already
        // reported as unsupported.
        let rest: Map<String, Value> = so
            .extra
            .iter()
            .filter(|(k, _)| so.plugin != "user" || !USER_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        r.extra(loc, &rest);
    }
    if let Some(tpgs) = &so.alua_tpgs {
        for problem in crate::alua::check_groups(tpgs) {
            r.err(loc, problem);
        }
        for g in tpgs {
            r.extra(&format!("{loc} / alua {}", g.name), &g.extra);
        }
    }
    match so.plugin.as_str() {
        "fileio" | "block" => {
            if so.dev.as_deref().is_none_or(str::is_empty) {
                r.err(loc, format!("{} storage object needs 'dev'", so.plugin));
                return false;
            }
            true
        }
        "ramdisk" => {
            if so.size.is_none() {
                r.err(loc, "ramdisk storage object needs 'size'");
                return false;
            }
            true
        }
        "user" => match so.user_config() {
            None => {
                r.err(
                    loc,
                    "user storage object needs 'config' as \"<handler>/<config>\" (e.g. \"qcow//var/lib/d.qcow2\")",
                );
                false
            }
            Some((sub, _)) if !user_handler_known(sub).0 => {
                let (_, list) = user_handler_known(sub);
                r.warn(
                    loc,
                    format!("user handler {sub:?} is not supported by rtarget (supported: {list:?}); object and its LUNs are skipped"),
                );
                false
            }
            Some(("nbd", uri)) if !uri.starts_with("nbd://") && !uri.starts_with("nbd+unix://") => {
                r.err(
                    loc,
                    format!("NBD config {uri:?} is not an nbd:// or nbd+unix:// URI"),
                );
                false
            }
            Some(("qcow", path)) if !path.starts_with('/') => {
                r.err(loc, format!("qcow image path {path:?} must be absolute"));
                false
            }
            Some(_) => true,
        },
        "" => {
            r.err(loc, "'plugin' is missing or empty");
            false
        }
        other => {
            r.warn(
                loc,
                format!("plugin {other:?} is not supported by rtarget (supported: {SUPPORTED_PLUGINS:?}); object and its LUNs are skipped"),
            );
            false
        }
    }
}

fn check_target(
    r: &mut Report,
    loc: &str,
    t: &Target,
    so_paths: &HashSet<String>,
    usable: &HashSet<String>,
) {
    if t.wwn.is_empty() {
        r.err(loc, "'wwn' is missing or empty");
    }
    if !SUPPORTED_FABRICS.contains(&t.fabric.as_str()) {
        r.warn(
            loc,
            format!(
                "fabric {:?} is not supported by rtarget; target skipped",
                t.fabric
            ),
        );
    } else if t.is_vhost() {
        check_vhost(r, loc, t);
    } else if t.is_loopback() {
        check_loopback(r, loc, t);
    } else if !["iqn.", "eui.", "naa."]
        .iter()
        .any(|p| t.wwn.starts_with(p))
    {
        r.err(
            loc,
            format!("{:?} is not an iSCSI name (iqn./eui./naa.)", t.wwn),
        );
    }
    if t.is_vhost() {
        let mut rest = t.extra.clone();
        rest.remove(crate::vhost::SOCKET_KEY);
        r.extra(loc, &rest);
    } else if t.is_loopback() {
        let mut rest = t.extra.clone();
        for k in crate::loopback::KEYS {
            rest.remove(*k);
        }
        r.extra(loc, &rest);
    } else {
        r.extra(loc, &t.extra);
    }
    let mut tags = HashSet::new();
    for (tag, tpg) in t.tagged_tpgs() {
        let tloc = format!("{loc} / tpg{tag}");
        if tag == 0 {
            r.err(&tloc, "TPG tag must be 1 or more");
        }
        if !tags.insert(tag) {
            r.err(&tloc, format!("duplicate TPG tag {tag}"));
        }
        check_tpg(r, &tloc, tpg, so_paths, usable);
    }
}

/// A vhost target: a `naa.` WWN, one TPG (one socket, one nexus) without
/// portals or ACLs, an absolute socket path.
fn check_vhost(r: &mut Report, loc: &str, t: &Target) {
    if !crate::vhost::valid_wwn(&t.wwn) {
        r.err(
            loc,
            format!("{:?} is not a vhost WWN (naa. and 16 hex digits)", t.wwn),
        );
    }
    if t.tpgs.len() > 1 {
        r.err(
            loc,
            "a vhost target has one TPG (one socket, one guest nexus)",
        );
    }
    if t.tpgs
        .iter()
        .any(|g| !g.portals.is_empty() || !g.node_acls.is_empty())
    {
        r.err(loc, "vhost TPGs have no portals or ACLs");
    }
    match t.extra.get(crate::vhost::SOCKET_KEY) {
        None => {}
        Some(serde_json::Value::String(s)) if s.starts_with('/') => {}
        Some(v) => r.err(loc, format!("socket {v} is not an absolute path")),
    }
}

/// A loopback target: a `naa.` WWN, one TPG (one nexus) without portals
/// or ACLs, ublk queue keys in range.
fn check_loopback(r: &mut Report, loc: &str, t: &Target) {
    if !crate::loopback::valid_wwn(&t.wwn) {
        r.err(
            loc,
            format!("{:?} is not a loopback WWN (naa. and 16 hex digits)", t.wwn),
        );
    }
    if t.tpgs.len() > 1 {
        r.err(loc, "a loopback target has one TPG (one nexus)");
    }
    if t.tpgs
        .iter()
        .any(|g| !g.portals.is_empty() || !g.node_acls.is_empty())
    {
        r.err(loc, "loopback TPGs have no portals or ACLs");
    }
    for k in crate::loopback::KEYS {
        if let Some(msg) = t
            .extra
            .get(*k)
            .and_then(|v| crate::loopback::check_key(k, v))
        {
            r.err(loc, msg);
        }
    }
}

fn check_tpg(
    r: &mut Report,
    loc: &str,
    tpg: &Tpg,
    so_paths: &HashSet<String>,
    usable: &HashSet<String>,
) {
    let mut chap = Vec::new();
    let mut rest = Map::new();
    for (k, v) in &tpg.extra {
        if k.starts_with("chap_") {
            chap.push(k.as_str());
        } else {
            rest.insert(k.clone(), v.clone());
        }
    }
    r.extra(loc, &rest);
    let attrs = match crate::TpgAttributes::parse(&tpg.attributes, !tpg.node_acls.is_empty()) {
        Ok(a) => Some(a),
        Err(errors) => {
            for e in errors {
                r.err(loc, e);
            }
            None
        }
    };
    for (k, v) in &tpg.parameters {
        if let Err(e) = crate::settings::check_parameter(k, &crate::value_string(v)) {
            r.err(loc, e);
        }
    }
    // TPG credentials (`set auth` in targetcli, `chap_*` here) are checked
    // by the iSCSI fabric for initiators without an ACL.
    let complete = crate::logins::creds_complete(&tpg.extra);
    if !chap.is_empty() && !complete {
        r.warn(
            loc,
            "CHAP credentials need both chap_userid and chap_password; incomplete ones are ignored",
        );
    }
    let has = |k: &str| {
        tpg.extra
            .get(k)
            .is_some_and(|v| !crate::model::value_string(v).is_empty())
    };
    if has("chap_mutual_userid") != has("chap_mutual_password") {
        r.warn(
            loc,
            "mutual CHAP needs both chap_mutual_userid and chap_mutual_password",
        );
    }
    if let Some(a) = &attrs {
        crate::logins::check_logins(r, loc, tpg, a, complete);
    }
    let mut lun_ids = BTreeSet::new();
    for (i, lun) in tpg.luns.iter().enumerate() {
        let lloc = format!("{loc} / luns[{i}] lun{}", lun.index);
        r.extra(&lloc, &lun.extra);
        if lun.index > MAX_LUN {
            r.err(&lloc, format!("LUN index {} is above {MAX_LUN}", lun.index));
        }
        if !lun_ids.insert(lun.index) {
            r.err(&lloc, format!("duplicate LUN index {}", lun.index));
        }
        match lun.storage_object_ref() {
            None => r.err(
                &lloc,
                format!(
                    "malformed storage_object {:?} (want /backstores/<plugin>/<name>)",
                    lun.storage_object
                ),
            ),
            Some(_) if !so_paths.contains(&lun.storage_object) => r.err(
                &lloc,
                format!("storage object {} does not exist", lun.storage_object),
            ),
            Some(_) if !usable.contains(&lun.storage_object) => r.warn(
                &lloc,
                format!("LUN skipped: {} is not usable", lun.storage_object),
            ),
            Some(_) => {}
        }
    }
    let mut portals = HashSet::new();
    for (i, p) in tpg.portals.iter().enumerate() {
        let ploc = format!("{loc} / portals[{i}] {}:{}", p.ip_address, p.port);
        r.extra(&ploc, &p.extra);
        match parse_ip(&p.ip_address) {
            None => r.err(&ploc, format!("invalid ip_address {:?}", p.ip_address)),
            Some(ip) => {
                if !portals.insert((ip, p.port)) {
                    r.err(&ploc, "duplicate portal");
                }
            }
        }
        if p.iser == Some(true) || p.offload == Some(true) {
            r.warn(
                &ploc,
                "iSER/offload is not supported; the portal serves plain TCP",
            );
        }
    }
    let mut acl_names = HashSet::new();
    for (i, acl) in tpg.node_acls.iter().enumerate() {
        let aloc = format!("{loc} / node_acls[{i}] {}", acl.node_wwn);
        if acl.node_wwn.is_empty() {
            r.err(&aloc, "'node_wwn' is missing or empty");
        }
        if !acl_names.insert(acl.node_wwn.as_str()) {
            r.err(&aloc, "duplicate node ACL");
        }
        if let Err(errors) = crate::AclAttributes::parse(&acl.attributes) {
            for e in errors {
                r.err(&aloc, e);
            }
        }
        let (chap, rest): (Vec<_>, Vec<_>) =
            acl.extra.iter().partition(|(k, _)| k.starts_with("chap_"));
        let has = |k: &str| {
            acl.extra
                .get(k)
                .is_some_and(|v| !crate::value_string(v).is_empty())
        };
        if !chap.is_empty()
            && chap.iter().any(|(_, v)| !crate::value_string(v).is_empty())
            && !(has("chap_userid") && has("chap_password"))
        {
            r.warn(
                &aloc,
                "CHAP credentials need both chap_userid and chap_password; incomplete ones are ignored",
            );
        }
        // rtslib writes `tag` for ACLs and mapped LUNs in ACL groups.
        let rest: Map<String, Value> = rest
            .into_iter()
            .filter(|(k, _)| *k != "tag")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        r.extra(&aloc, &rest);
        let mut mapped = HashSet::new();
        for (j, m) in acl.mapped_luns.iter().enumerate() {
            let mloc = format!("{aloc} / mapped_luns[{j}]");
            if !lun_ids.contains(&m.tpg_lun) {
                r.err(
                    &mloc,
                    format!("tpg_lun {} does not exist in this TPG", m.tpg_lun),
                );
            }
            if !mapped.insert(m.index) {
                r.err(&mloc, format!("duplicate mapped LUN index {}", m.index));
            }
        }
    }
}

/// Portal address as rtslib writes it: IPv4, IPv6 with or without brackets.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    s.parse().ok()
}

#[cfg(test)]
#[path = "validate_tests.rs"]
pub(crate) mod tests;
