//! The management verbs on the configuration: `create`, `delete`, `set` and
//! `get` at a targetcli path, as edits of a [`SaveConfig`]. Pure: no I/O,
//! no running objects; a front end (rtarget's daemon) validates the edited
//! config, reconciles the running objects with it and saves it.
//!
//! Each verb takes targetcli's parameters, in targetcli's positional order,
//! with targetcli's defaults (fileio write-back on, LUNs and mapped LUNs
//! numbered from the first free index, a new target gets `tpg1` with the
//! default portal).

use std::net::SocketAddr;

use anyhow::{anyhow, bail, Result};
use config::{fabric, parse_ip, Lun, MappedLun, NodeAcl, Portal, SaveConfig, Target, Tpg};
use serde_json::{json, Map, Value};

use crate::args::{parse_index, Args};
use crate::tree::{normalize, portal_name};

/// Facts about a backing path: `None` when it does not exist.
pub type StatFn = Box<dyn Fn(&str) -> Option<PathKind>>;

/// Context a verb may need beyond the config.
pub struct Ctx {
    /// Portal given to `tpg1` of a new target.
    pub default_portal: SocketAddr,
    /// Whether `/iscsi create` gives `tpg1` the default portal.
    pub add_default_portal: bool,
    /// Default of `add_mapped_luns` (targetcli's global `auto_add_mapped_luns`).
    pub auto_add_mapped_luns: bool,
    /// A fresh unit serial (`wwn`) for a new storage object.
    pub new_uuid: Box<dyn Fn() -> Result<String>>,
    pub stat: StatFn,
}

/// What a backing path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    File(u64),
    BlockDevice,
    Other,
}

/// `create` at `path`. Returns a targetcli-like message.
pub fn create(cfg: &mut SaveConfig, path: &str, args: &Args, ctx: &Ctx) -> Result<String> {
    match crate::alua::locate(cfg, path)? {
        Some((idx, None)) => return crate::alua::create(cfg, idx, args),
        Some((_, Some(_))) => bail!("create ALUA groups in the alua directory: create NAME TAG"),
        None => {}
    }
    let loc = locate(cfg, path)?;
    let example = crate::examples::create(&loc, &normalize("/", path));
    create_at(cfg, path, loc, args, ctx).map_err(|e| crate::examples::attach(e, example))
}

fn create_at(cfg: &mut SaveConfig, path: &str, loc: Loc, args: &Args, ctx: &Ctx) -> Result<String> {
    match loc {
        Loc::Plugin(p) => crate::ops_backstore::create_object(cfg, &p, args, ctx),
        Loc::Fabric(f) if f == fabric::ISCSI => create_target(cfg, args, ctx),
        Loc::Fabric(f) if f == fabric::VHOST => create_vhost_target(cfg, args, ctx),
        Loc::Fabric(f) if f == fabric::LOOPBACK => {
            crate::ops_loopback::create_target(cfg, args, ctx)
        }
        Loc::Fabric(f) => bail!("the {f} fabric is not available yet"),
        Loc::Target(wwn) => create_tpg(cfg, &wwn, args),
        Loc::Luns(wwn, tag) => create_lun(cfg, &wwn, tag, args, ctx),
        Loc::Portals(wwn, tag) => create_portal(cfg, &wwn, tag, args, ctx),
        Loc::Acls(wwn, tag) => create_acl(cfg, &wwn, tag, args, ctx),
        Loc::Acl(wwn, tag, node) => create_mapped_lun(cfg, &wwn, tag, &node, args),
        other => bail!("cannot create objects at {path} ({})", loc_kind(&other)),
    }
}

/// `/iscsi create [wwn]`: a target with `tpg1` (and the default portal).
fn create_target(cfg: &mut SaveConfig, args: &Args, ctx: &Ctx) -> Result<String> {
    let b = args.bind("create", &["wwn"], 0)?;
    let wwn = match b.get("wwn") {
        Some(w) => w.to_string(),
        None => format!("iqn.2026-11.org.rtarget:sn.{}", &(ctx.new_uuid)()?[24..]),
    };
    check_iscsi_name(&wwn)?;
    if iscsi_target(cfg, &wwn).is_some() {
        bail!("target {wwn} already exists");
    }
    let p = ctx.add_default_portal.then_some(ctx.default_portal);
    cfg.targets.push(Target {
        fabric: fabric::ISCSI.into(),
        wwn: wwn.clone(),
        tpgs: vec![new_tpg(1, p)],
        ..Target::default()
    });
    let mut msg = format!("Created target {wwn}.\nCreated TPG 1.");
    if let Some(p) = p {
        msg.push_str(&format!("\nCreated default portal listening on {p}."));
        // targetcli listens on 0.0.0.0: say why this one is not reachable
        // from other hosts, and how to make it so.
        if p.ip().is_loopback() {
            let portals = format!("/iscsi/{wwn}/tpg1/portals");
            msg.push_str(&format!(
                "\nNote: {ip} is reachable from this host only. To listen on all addresses: \
                 `{portals} delete {ip} {port}` then `{portals} create 0.0.0.0 {port}` \
                 (or start the daemon with --default-portal 0.0.0.0:{port} for new targets).",
                ip = p.ip(),
                port = p.port()
            ));
        }
    }
    Ok(msg)
}

/// `/vhost create [wwn] [socket]`: a target (`naa.` + 16 hex digits,
/// generated when omitted) with `tpg1`, whose nexus is derived from the
/// WWN; `socket` (rtarget's) replaces the default socket path.
fn create_vhost_target(cfg: &mut SaveConfig, args: &Args, ctx: &Ctx) -> Result<String> {
    let b = args.bind("create", &["wwn", "socket"], 0)?;
    let wwn = crate::ops_naa::new_wwn(cfg, b.get("wwn"), ctx, "vhost")?;
    let mut extra = Map::new();
    if let Some(sock) = b.get("socket") {
        if !sock.starts_with('/') {
            bail!("socket {sock:?} is not an absolute path");
        }
        extra.insert(config::vhost::SOCKET_KEY.into(), Value::from(sock));
    }
    let nexus = config::vhost::nexus_of(&wwn, 1);
    Ok(crate::ops_naa::add_target(
        cfg,
        fabric::VHOST,
        wwn,
        extra,
        &nexus,
    ))
}

/// `/iscsi/IQN create [tag]`.
fn create_tpg(cfg: &mut SaveConfig, wwn: &str, args: &Args) -> Result<String> {
    let b = args.bind("create", &["tag"], 0)?;
    let t = cfg
        .targets
        .iter_mut()
        .find(|t| t.is_served() && t.wwn == wwn)
        .ok_or_else(|| anyhow!("no such target {wwn}"))?;
    if t.is_vhost() {
        bail!("a vhost target has one TPG (one socket, one guest nexus)");
    }
    if t.is_loopback() {
        bail!("a loopback target has one TPG (one nexus)");
    }
    let used: Vec<u16> = t.tagged_tpgs().map(|(tag, _)| tag).collect();
    let tag = match b.get("tag") {
        Some(v) => u16::try_from(parse_index("tpg", v)?)
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| anyhow!("tag {v} is not in 1..=65535"))?,
        None => (1..=u16::MAX)
            .find(|t| !used.contains(t))
            .ok_or_else(|| anyhow!("no free TPG tag"))?,
    };
    if used.contains(&tag) {
        bail!("tpg{tag} already exists");
    }
    t.tpgs.push(new_tpg(tag, None));
    Ok(format!("Created TPG {tag}."))
}

/// `.../tpgN/luns create storage_object [lun] [add_mapped_luns]`.
fn create_lun(cfg: &mut SaveConfig, wwn: &str, tag: u16, args: &Args, ctx: &Ctx) -> Result<String> {
    let b = args.bind("create", &["storage_object", "lun", "add_mapped_luns"], 1)?;
    let given = normalize("/", b.req("storage_object")?);
    let so_path = object_ref(cfg, &given).ok_or_else(|| {
        anyhow!("storage object {given} does not exist (create it under /backstores first)")
    })?;
    let add_mapped = b
        .bool("add_mapped_luns")?
        .unwrap_or(ctx.auto_add_mapped_luns);
    let tpg = tpg_mut(cfg, wwn, tag)?;
    let index = match b.get("lun") {
        Some(v) => parse_index("lun", v)?,
        None => first_free(tpg.luns.iter().map(|l| l.index)),
    };
    if tpg.luns.iter().any(|l| l.index == index) {
        bail!("lun{index} already exists");
    }
    tpg.luns.push(Lun {
        index,
        storage_object: so_path.clone(),
        alua_tg_pt_gp_name: Some(crate::tree::DEFAULT_TG_PT_GP.into()),
        ..Lun::default()
    });
    let mut msg = format!("Created LUN {index}.");
    if add_mapped {
        for acl in &mut tpg.node_acls {
            let m = first_free(acl.mapped_luns.iter().map(|m| m.index));
            acl.mapped_luns.push(MappedLun {
                index: m,
                tpg_lun: index,
                ..MappedLun::default()
            });
            msg.push_str(&format!(
                "\nCreated LUN {index}->{m} mapping in node ACL {}",
                acl.node_wwn
            ));
        }
    }
    Ok(msg)
}

/// `.../tpgN/portals create [ip_address] [ip_port]`.
fn create_portal(
    cfg: &mut SaveConfig,
    wwn: &str,
    tag: u16,
    args: &Args,
    ctx: &Ctx,
) -> Result<String> {
    let b = args.bind("create", &["ip_address", "ip_port"], 0)?;
    let ip = b
        .get("ip_address")
        .map(str::to_string)
        .unwrap_or_else(|| ctx.default_portal.ip().to_string());
    let port: u16 = match b.get("ip_port") {
        Some(v) => v
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| anyhow!("ip_port {v:?} is not a port number"))?,
        None => 3260,
    };
    let parsed = parse_ip(&ip).ok_or_else(|| anyhow!("{ip:?} is not an IP address"))?;
    let ip = if parsed.is_ipv6() {
        format!("[{parsed}]")
    } else {
        parsed.to_string()
    };
    let tpg = tpg_mut(cfg, wwn, tag)?;
    let portal = Portal {
        ip_address: ip,
        port,
        iser: Some(false),
        offload: Some(false),
        ..Portal::default()
    };
    let name = portal_name(&portal);
    if tpg.portals.iter().any(|p| portal_name(p) == name) {
        bail!("portal {name} already exists");
    }
    tpg.portals.push(portal);
    Ok(format!("Created network portal {name}."))
}

/// `.../tpgN/acls create wwn [add_mapped_luns]`.
fn create_acl(cfg: &mut SaveConfig, wwn: &str, tag: u16, args: &Args, ctx: &Ctx) -> Result<String> {
    let b = args.bind("create", &["wwn", "add_mapped_luns"], 1)?;
    let node = b.req("wwn")?.to_string();
    check_iscsi_name(&node)?;
    let add_mapped = b
        .bool("add_mapped_luns")?
        .unwrap_or(ctx.auto_add_mapped_luns);
    let tpg = tpg_mut(cfg, wwn, tag)?;
    if tpg.node_acls.iter().any(|a| a.node_wwn == node) {
        bail!("ACL for {node} already exists");
    }
    let mapped_luns = if add_mapped {
        tpg.luns
            .iter()
            .map(|l| MappedLun {
                index: l.index,
                tpg_lun: l.index,
                ..MappedLun::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    let n = tpg.luns.len();
    tpg.node_acls.push(NodeAcl {
        node_wwn: node.clone(),
        mapped_luns,
        ..NodeAcl::default()
    });
    Ok(format!(
        "Created Node ACL for {node}{}",
        if add_mapped && n > 0 {
            format!(" with {n} mapped LUNs")
        } else {
            String::new()
        }
    ))
}

/// `.../acls/NODE create mapped_lun tpg_lun_or_backstore [write_protect]`.
fn create_mapped_lun(
    cfg: &mut SaveConfig,
    wwn: &str,
    tag: u16,
    node: &str,
    args: &Args,
) -> Result<String> {
    let b = args.bind(
        "create",
        &["mapped_lun", "tpg_lun_or_backstore", "write_protect"],
        2,
    )?;
    let index = parse_index("mapped_lun", b.req("mapped_lun")?)?;
    let target = b.req("tpg_lun_or_backstore")?;
    let wp = b.bool("write_protect")?.unwrap_or(false);
    let p = normalize("/", target);
    let p = object_ref(cfg, &p).unwrap_or(p);
    let tpg = tpg_mut(cfg, wwn, tag)?;
    let tpg_lun = if target.starts_with('/') {
        tpg.luns
            .iter()
            .find(|l| l.storage_object == p)
            .map(|l| l.index)
            .ok_or_else(|| anyhow!("{p} is not exported by a LUN of tpg{tag}"))?
    } else {
        let i = parse_index("lun", target)?;
        if !tpg.luns.iter().any(|l| l.index == i) {
            bail!("lun{i} does not exist in tpg{tag}");
        }
        i
    };
    let acl = tpg
        .node_acls
        .iter_mut()
        .find(|a| a.node_wwn == node)
        .ok_or_else(|| anyhow!("no ACL {node}"))?;
    if acl.mapped_luns.iter().any(|m| m.index == index) {
        bail!("mapped_lun{index} already exists");
    }
    acl.mapped_luns.push(MappedLun {
        index,
        tpg_lun,
        write_protect: wp,
        ..MappedLun::default()
    });
    Ok(format!("Created Mapped LUN {index}."))
}

/// `enable` / `disable` at a TPG.
pub fn enable(cfg: &mut SaveConfig, path: &str, on: bool) -> Result<String> {
    match locate(cfg, path)? {
        Loc::Tpg(w, t) => {
            tpg_mut(cfg, &w, t)?.enable = Some(on);
            Ok(format!(
                "The TPGT has been {}.",
                if on { "enabled" } else { "disabled" }
            ))
        }
        other => bail!(
            "only a TPG can be enabled or disabled, not {}",
            loc_kind(&other)
        ),
    }
}

fn new_tpg(tag: u16, portal: Option<SocketAddr>) -> Tpg {
    // LIO's defaults for a new TPG: ACL mode, write-protected demo mode.
    let attributes = match json!({
        "authentication": 0,
        "cache_dynamic_acls": 0,
        "default_cmdsn_depth": 128,
        "demo_mode_write_protect": 1,
        "generate_node_acls": 0,
        "login_timeout": 15,
        "prod_mode_write_protect": 0
    }) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Tpg {
        tag: Some(tag),
        enable: Some(true),
        attributes,
        portals: portal
            .map(|p| Portal {
                ip_address: if p.is_ipv6() {
                    format!("[{}]", p.ip())
                } else {
                    p.ip().to_string()
                },
                port: p.port(),
                iser: Some(false),
                offload: Some(false),
                ..Portal::default()
            })
            .into_iter()
            .collect(),
        ..Tpg::default()
    }
}

fn first_free(used: impl Iterator<Item = u64>) -> u64 {
    let used: Vec<u64> = used.collect();
    (0..).find(|i| !used.contains(i)).unwrap_or(0)
}

/// iqn.YYYY-MM.reverse.domain[:anything], eui.16HEX or naa.HEX: the rule
/// logins check InitiatorName against (no control or white-space
/// characters, at most 223 bytes).
pub fn check_iscsi_name(n: &str) -> Result<()> {
    if !iscsi_wire::name::valid_name(n) {
        bail!("{n:?} is not a valid iSCSI name (e.g. iqn.2026-11.org.example:target1)");
    }
    Ok(())
}

pub(crate) use crate::locate::{iscsi_target, loc_kind, tpg_mut};
pub use crate::locate::{locate, object_ref, Loc};
pub use crate::ops_edit::{delete, get, info, set};

#[cfg(test)]
#[path = "ops_tests.rs"]
pub(crate) mod tests;
