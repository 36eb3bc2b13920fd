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
    let wwn = match b.get("wwn") {
        Some(w) => w.to_ascii_lowercase(),
        None => {
            let hex: String = (ctx.new_uuid)()?
                .chars()
                .filter(char::is_ascii_hexdigit)
                .collect();
            config::vhost::wwn_from(&hex[hex.len() - 9..])
        }
    };
    if !config::vhost::valid_wwn(&wwn) {
        bail!("{wwn:?} is not a vhost WWN (naa. and 16 hex digits)");
    }
    if iscsi_target(cfg, &wwn).is_some() {
        bail!("target {wwn} already exists");
    }
    let mut extra = Map::new();
    if let Some(sock) = b.get("socket") {
        if !sock.starts_with('/') {
            bail!("socket {sock:?} is not an absolute path");
        }
        extra.insert(config::vhost::SOCKET_KEY.into(), Value::from(sock));
    }
    cfg.targets.push(Target {
        fabric: fabric::VHOST.into(),
        wwn: wwn.clone(),
        tpgs: vec![Tpg {
            tag: Some(1),
            enable: Some(true),
            ..Tpg::default()
        }],
        extra,
    });
    Ok(format!(
        "Created target {wwn}.\nCreated TPG 1 (nexus {}).",
        config::vhost::nexus_of(&wwn, 1)
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
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ctx() -> Ctx {
        Ctx {
            default_portal: "127.0.0.1:3260".parse().unwrap(),
            add_default_portal: true,
            auto_add_mapped_luns: true,
            // A distinct UUID per call (each a different NAA designator).
            new_uuid: Box::new(|| {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                Ok(format!(
                    "{:08x}-0b0a-4908-8706-050403020100",
                    0x0f0e_0d0c + n
                ))
            }),
            stat: Box::new(|p| match p {
                "/data" => Some(PathKind::Other),
                "/data/old.img" => Some(PathKind::File(1 << 20)),
                "/dev/sdz" => Some(PathKind::BlockDevice),
                _ => None,
            }),
        }
    }

    pub(crate) fn run(cfg: &mut SaveConfig, path: &str, words: &[&str]) -> Result<String> {
        create(cfg, path, &Args::from_words(words)?, &ctx())
    }

    const IQN: &str = "iqn.2026-11.org.example:t1";

    /// targetcli's vhost walkthrough: `/vhost create` (WWN generated),
    /// `tpg1/luns create`, the `socket` attribute; vhost TPGs have only
    /// `luns`, one TPG per target, a WWN names one target across fabrics.
    #[test]
    fn vhost_walkthrough() {
        let mut cfg = SaveConfig::default();
        run(&mut cfg, "/backstores/ramdisk", &["r0", "1M"]).unwrap();
        let msg = run(&mut cfg, "/vhost", &[]).unwrap();
        let wwn = cfg.targets[0].wwn.clone();
        assert!(config::vhost::valid_wwn(&wwn), "{wwn}");
        assert!(msg.contains("nexus naa.5001405"), "{msg}");
        let tpg = format!("/vhost/{wwn}/tpg1");
        run(
            &mut cfg,
            &format!("{tpg}/luns"),
            &["/backstores/ramdisk/r0"],
        )
        .unwrap();
        assert_eq!(
            cfg.targets[0].tpgs[0].luns[0].storage_object,
            "/backstores/ramdisk/r0"
        );
        assert!(locate(&cfg, &format!("{tpg}/acls")).is_err());
        assert!(run(&mut cfg, &format!("/vhost/{wwn}"), &[])
            .unwrap_err()
            .to_string()
            .contains("one TPG"));
        assert!(run(&mut cfg, "/vhost", &[&wwn]).is_err(), "exists");
        assert!(
            run(&mut cfg, "/iscsi", &[&wwn]).is_err(),
            "one WWN, one target"
        );
        assert!(run(&mut cfg, "/vhost", &["naa.12"]).is_err());
        let kv = |v: &str| vec![("socket".to_string(), v.to_string())];
        let t = format!("/vhost/{wwn}");
        assert!(set(&mut cfg, &t, "attribute", &kv("rel.sock")).is_err());
        set(&mut cfg, &t, "attribute", &kv("/tmp/v.sock")).unwrap();
        assert_eq!(config::vhost::socket_of(&cfg.targets[0]), "/tmp/v.sock");
        assert!(config::validate(&cfg).unwrap().is_empty());
        let tree =
            crate::tree::build_live(&cfg, &|_| None, &|_| Some("naa.5001405000000001".into()));
        let node = tree.find(&tpg).unwrap();
        assert_eq!(node.children.len(), 1, "luns only");
        assert!(
            node.summary.contains("socket /tmp/v.sock, guest attached"),
            "{}",
            node.summary
        );
        let saved = serde_json::to_value(&cfg).unwrap();
        assert_eq!(saved["targets"][0]["fabric"], "vhost");
        delete(&mut cfg, "/vhost", &Args::from_words(&[&wwn]).unwrap()).unwrap();
        assert!(cfg.targets.is_empty());
    }

    fn walkthrough() -> SaveConfig {
        let mut cfg = SaveConfig::default();
        run(
            &mut cfg,
            "/backstores/fileio",
            &["mydisk1", "/data/d.img", "64M"],
        )
        .unwrap();
        run(&mut cfg, "/iscsi", &[&format!("wwn={IQN}")]).unwrap();
        let tpg = format!("/iscsi/{IQN}/tpg1");
        let vals: Vec<(String, String)> = [("authentication", "0"), ("generate_node_acls", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        set(&mut cfg, &tpg, "attribute", &vals).unwrap();
        run(
            &mut cfg,
            &format!("{tpg}/luns"),
            &["storage_object=/backstores/fileio/mydisk1"],
        )
        .unwrap();
        cfg
    }

    #[test]
    fn seed_walkthrough_builds_a_valid_config() {
        let cfg = walkthrough();
        assert_eq!(config::validate(&cfg).map(|_| ()), Ok(()));
        let so = &cfg.storage_objects[0];
        assert_eq!((so.size, so.write_back), (Some(64 << 20), Some(true)));
        let tpg = &cfg.targets[0].tpgs[0];
        assert_eq!(tpg.tag, Some(1));
        assert_eq!(tpg.portals[0].ip_address, "127.0.0.1");
        assert_eq!(tpg.attributes["generate_node_acls"], 1);
        assert_eq!(tpg.luns[0].storage_object, "/backstores/fileio/mydisk1");
        assert_eq!(
            locate(&cfg, &format!("/iscsi/{IQN}/tpg1/luns/lun0")).unwrap(),
            Loc::Lun(IQN.into(), 1, 0)
        );
        assert_eq!(
            locate(&cfg, &format!("/iscsi/{IQN}/tpg1/portals/127.0.0.1:3260")).unwrap(),
            Loc::Portal(IQN.into(), 1, "127.0.0.1:3260".into())
        );
    }

    #[test]
    fn bad_requests_are_clear_errors() {
        let mut cfg = walkthrough();
        let e = |r: Result<String>| r.unwrap_err().to_string();
        assert!(e(run(
            &mut cfg,
            "/backstores/fileio",
            &["mydisk1", "/data/x.img", "1G"]
        ))
        .contains("already exists"));
        assert!(e(run(
            &mut cfg,
            "/backstores/fileio",
            &["d2", "/data/new.img"]
        ))
        .contains("size is required"));
        assert!(e(run(
            &mut cfg,
            "/backstores/fileio",
            &["d2", "/nodir/new.img", "1G"]
        ))
        .contains("does not exist"));
        assert!(e(run(
            &mut cfg,
            "/backstores/fileio",
            &["d2", "rel.img", "1G"]
        ))
        .contains("absolute"));
        assert!(e(run(&mut cfg, "/iscsi", &["not-an-iqn"])).contains("not a valid iSCSI name"));
        assert!(e(run(&mut cfg, "/nowhere", &[])).contains("no such path: /nowhere"));
        let luns = format!("/iscsi/{IQN}/tpg1/luns");
        assert!(e(run(&mut cfg, &luns, &["/backstores/fileio/nope"])).contains("does not exist"));
        assert!(e(run(
            &mut cfg,
            &luns,
            &["/backstores/fileio/mydisk1", "lun0"]
        ))
        .contains("lun0 already exists"));
        let tpg = format!("/iscsi/{IQN}/tpg1");
        let bad = vec![("authentcation".to_string(), "0".to_string())];
        assert!(e(set(&mut cfg, &tpg, "attribute", &bad)).contains("unknown attribute"));
        for (k, v, want) in [
            ("MaxBurstLength", "100", "from 512"),
            ("HeaderDigest", "CRC32C,MD5", "comma-separated list"),
            ("ErrorRecoveryLevel", "3", "from 0 to 2"),
        ] {
            let bad = vec![(k.to_string(), v.to_string())];
            assert!(
                e(set(&mut cfg, &tpg, "parameter", &bad)).contains(want),
                "{k}"
            );
        }
        let good = vec![
            ("HeaderDigest".to_string(), "CRC32C,None".to_string()),
            ("MaxBurstLength".to_string(), "1048576".to_string()),
        ];
        set(&mut cfg, &tpg, "parameter", &good).unwrap();
        let bad = vec![("InitialR2T".to_string(), "maybe".to_string())];
        assert!(e(set(&mut cfg, &tpg, "parameter", &bad)).contains("Yes or No"));
        assert!(run(&mut cfg, "/backstores/fileio", &["d3", "/data/old.img"]).is_ok());
        assert_eq!(cfg.storage_objects[1].size, Some(1 << 20));
    }

    #[test]
    fn qcow_objects_live_under_user_and_are_referenced_as_user() {
        let mut cfg = SaveConfig::default();
        let e = run(
            &mut cfg,
            "/backstores/user:qcow",
            &["q", "cfgstring=/data/new.qcow2"],
        );
        assert!(e.unwrap_err().to_string().contains("size is required"));
        run(
            &mut cfg,
            "/backstores/user:qcow",
            &["q", "1G", "/data/new.qcow2"],
        )
        .unwrap();
        let so = &cfg.storage_objects[0];
        assert_eq!(
            (so.plugin.as_str(), so.path()),
            ("user", "/backstores/user/q".into())
        );
        assert_eq!(so.user_config(), Some(("qcow", "/data/new.qcow2")));
        assert_eq!(
            locate(&cfg, "/backstores/user:qcow/q").unwrap(),
            Loc::Object("user:qcow".into(), "q".into())
        );
        assert_eq!(
            object_ref(&cfg, "/backstores/user:qcow/q").as_deref(),
            Some("/backstores/user/q")
        );
        run(&mut cfg, "/iscsi", &[IQN]).unwrap();
        let luns = format!("/iscsi/{IQN}/tpg1/luns");
        run(&mut cfg, &luns, &["/backstores/user:qcow/q"]).unwrap();
        assert_eq!(
            cfg.targets[0].tpgs[0].luns[0].storage_object,
            "/backstores/user/q"
        );
        assert!(config::validate(&cfg).is_ok());
        delete(&mut cfg, "/backstores/user:qcow/q", &Args::default()).unwrap();
        assert!(cfg.storage_objects.is_empty() && cfg.targets[0].tpgs[0].luns.is_empty());
    }

    /// `create q1 /existing.qcow2` (no size) under the short name `qcow2`:
    /// the image's own size, saved as user:qcow.
    #[test]
    fn existing_qcow2_needs_no_size_and_qcow2_is_user_qcow() {
        let mut cfg = SaveConfig::default();
        let msg = run(&mut cfg, "/backstores/qcow2", &["q", "/data/old.img"]).unwrap();
        assert!(msg.contains("using /data/old.img"), "{msg}");
        let so = &cfg.storage_objects[0];
        assert_eq!((so.path(), so.size), ("/backstores/user/q".into(), None));
        assert_eq!(so.user_config(), Some(("qcow", "/data/old.img")));
        // A size as the second word keeps targetcli's order.
        let e = e(run(&mut cfg, "/backstores/qcow2", &["q2", "1G"]));
        assert!(e.contains("missing parameter cfgstring"), "{e}");
        let e = run(&mut cfg, "/backstores/qcow2", &["q3", "/data/new.qcow2"]).unwrap_err();
        assert!(
            e.to_string().contains("size is required")
                && e.to_string()
                    .contains("e.g. /backstores/user:qcow create q1 "),
            "{e}"
        );
    }

    /// The loopback default portal says so, with the commands that open it.
    #[test]
    fn loopback_default_portal_is_explained() {
        let msg = run(&mut SaveConfig::default(), "/iscsi", &[IQN]).unwrap();
        assert!(
            msg.contains("127.0.0.1 is reachable from this host only")
                && msg.contains(&format!("`/iscsi/{IQN}/tpg1/portals create 0.0.0.0 3260`")),
            "{msg}"
        );
    }

    /// Each common mistake names what was expected and shows an example.
    #[test]
    fn errors_show_an_example() {
        let mut cfg = walkthrough();
        for (path, words, want) in [
            ("/backstores/ramdisk", &["r1"][..], "missing parameter size; usage: create name size [nullio] [wwn]; e.g. /backstores/ramdisk create ram1 1G"),
            ("/backstores/fileio", &["d", "/data/d2.img", "1Q"], "unknown unit (bytes, or a number with k, M, G or T; e.g. 64M, 8G)"),
            ("/backstores/ramdisk", &["r", "1G", "0", "w", "x"], "too many arguments (5 given, create takes at most 4); usage: create name size [nullio] [wwn]; e.g."),
            ("/backstores/fileio", &["d", "/data/d2.img", "1G", "colour=red"], "unknown parameter \"colour\""),
            ("/nowhere/x", &[], "no such path: /nowhere/x (e.g. `ls /nowhere` shows what is there)"),
            ("/iscsi", &["bad name"], "is not a valid iSCSI name (e.g. iqn."),
            ("/iscsi", &["iqn.2026-11.org.example:t1", "x"], "e.g. /iscsi create iqn.2026-11.org.example:t1"),
        ] {
            let e = e(run(&mut cfg, path, words));
            assert!(e.contains(want), "{path} {words:?}: {e}");
        }
        let e = crate::ops_edit::set(
            &mut cfg,
            "/backstores/fileio/mydisk1",
            "attribute",
            &[("colour".into(), "1".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown attribute \"colour\"; known: ")
                && e.ends_with("e.g. set attribute emulate_tpu=1"),
            "{e}"
        );
    }

    fn e(r: Result<String>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn qemu_objects_take_a_config_string_and_size_zero() {
        let mut cfg = SaveConfig::default();
        // SIZE 0: the image's virtual size (not saved); the string is
        // saved in its canonical FORMAT/PATH form.
        run(
            &mut cfg,
            "/backstores/user:qemu",
            &[
                "v",
                "0",
                "cfgstring=format=vmdk;file=/data/old.img;readonly=on",
            ],
        )
        .unwrap();
        let so = &cfg.storage_objects[0];
        assert_eq!(so.size, None);
        assert_eq!(
            so.user_config(),
            Some(("qemu", "vmdk//data/old.img;readonly=on"))
        );
        assert_eq!(so.ui_plugin(), "user:qemu");
        assert!(config::validate(&cfg).is_ok());
        for (words, want) in [
            (&["w", "0", "vmdk/rel.vmdk"][..], "must be absolute"),
            (&["w", "0", "/data/old.img"][..], "expected FORMAT/PATH"),
            (&["w", "0", "vmdk//data/new.vmdk"][..], "size is required"),
            (
                &["w", "0", "vmdk//data/old.img;bogus=1"][..],
                "unknown option",
            ),
        ] {
            let e = run(&mut cfg, "/backstores/user:qemu", words).unwrap_err();
            assert!(e.to_string().contains(want), "{words:?}: {e}");
        }
        // A missing image with a size is created when it opens.
        run(
            &mut cfg,
            "/backstores/user:qemu",
            &["w", "1G", "vhdx//data/new.vhdx"],
        )
        .unwrap();
        assert_eq!(cfg.storage_objects[1].size, Some(1 << 30));
    }

    #[test]
    fn acls_portals_and_cascading_delete() {
        let mut cfg = walkthrough();
        let tpg = format!("/iscsi/{IQN}/tpg1");
        run(
            &mut cfg,
            &format!("{tpg}/acls"),
            &["iqn.1994-05.com.redhat:c1"],
        )
        .unwrap();
        run(&mut cfg, &format!("{tpg}/portals"), &["::1", "3261"]).unwrap();
        assert!(config::validate(&cfg).is_ok());
        let t = &cfg.targets[0].tpgs[0];
        assert_eq!(t.node_acls[0].mapped_luns[0].tpg_lun, 0);
        assert_eq!(t.portals[1].ip_address, "[::1]");
        let g = get(&cfg, &tpg, "attribute", &["generate_node_acls".into()]).unwrap();
        assert_eq!(g["generate_node_acls"], 1);
        let none = Args::default();
        delete(&mut cfg, &format!("{tpg}/portals/[::1]:3261"), &none).unwrap();
        delete(
            &mut cfg,
            "/backstores/fileio",
            &Args::from_words(&["mydisk1"]).unwrap(),
        )
        .unwrap();
        let t = &cfg.targets[0].tpgs[0];
        assert!(t.luns.is_empty() && t.node_acls[0].mapped_luns.is_empty());
        assert_eq!(t.portals.len(), 1);
        delete(&mut cfg, "/iscsi", &Args::from_words(&[IQN]).unwrap()).unwrap();
        assert!(cfg.targets.is_empty());
        assert!(delete(&mut cfg, "/iscsi", &Args::from_words(&[IQN]).unwrap()).is_err());
    }

    /// `user:qcow create ... backing=BASE` makes a native overlay over an
    /// existing image (size from the base), and refuses backing= for an
    /// image that already exists.
    #[test]
    fn qcow_overlay_with_backing() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        drop(backstore::Qcow2Backstore::create(&base, 8 << 20, 65536).unwrap());
        let real = Ctx {
            stat: Box::new(|p| {
                std::fs::metadata(p).ok().map(|m| {
                    if m.is_file() {
                        PathKind::File(m.len())
                    } else {
                        PathKind::Other
                    }
                })
            }),
            ..ctx()
        };
        let top = dir.path().join("top.qcow2");
        let words = [
            "ov".to_string(),
            format!("cfgstring={}", top.display()),
            format!("backing={}", base.display()),
        ];
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        let mut cfg = SaveConfig::default();
        let args = Args::from_words(&words).unwrap();
        create(&mut cfg, "/backstores/user:qcow", &args, &real).unwrap();
        assert_eq!(cfg.storage_objects[0].size, Some(8 << 20));
        let q = backstore::Qcow2Backstore::open(&top, &Default::default()).unwrap();
        assert_eq!(q.backing_file(), Some(base.as_path()));
        let again = create(
            &mut SaveConfig::default(),
            "/backstores/user:qcow",
            &args,
            &real,
        );
        assert!(again.unwrap_err().to_string().contains("exists"));
    }
}
