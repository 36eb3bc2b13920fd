//! `rtarget import-tgt`: a tgt configuration (`/etc/tgt/targets.conf`,
//! tgt-admin's format) as a saveconfig. The file is parsed into targets
//! and their backing stores, then replayed as the management verbs a user
//! would type (`/backstores/fileio create`, `/iscsi create`, `luns
//! create`, `acls create`, `set auth`, `set parameter`), so the result has
//! exactly the defaults and checks of hand-made objects. Everything tgt
//! can express and rtarget cannot is listed instead of guessed at, and
//! nothing is ever made more open than it was: a target that tgt limited
//! by initiator address only gets no access at all (LIO, like rtarget, has
//! no address ACLs), and a CHAP secret that cannot be set fails the import.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use config::SaveConfig;

use crate::args::Args;
use crate::ops::{Ctx, PathKind};

/// Resolves `include GLOB`: the (path, text) of each file it names.
pub type Include<'a> = &'a dyn Fn(&str) -> Result<Vec<(String, String)>>;
/// Runs `create` at a path with words (the verbs the import replays).
type Run<'a> = &'a dyn Fn(&mut SaveConfig, &str, &[String]) -> Result<String>;

/// One `<backing-store PATH>` (or `direct-store`, or the one-line forms).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TgtLun {
    pub path: String,
    pub direct: bool,
    /// `lun N`, else numbered from 1 in order (tgt's LUN 0 is its controller).
    pub lun: Option<u64>,
    /// Per-LUN options (`write-cache off`, `readonly 1`, `block-size 4096`...).
    pub options: Vec<(String, String)>,
}

/// One `<target IQN>`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TgtTarget {
    pub name: String,
    pub luns: Vec<TgtLun>,
    /// Target-level options, in order (repeatable keys repeat).
    pub options: Vec<(String, String)>,
}

/// What the import made, and what it could not carry over.
#[derive(Debug)]
pub struct Imported {
    pub cfg: SaveConfig,
    pub notes: Vec<String>,
}

/// Parse tgt-admin's format. `include GLOB` lines are resolved with
/// `include` (paths to the texts of the files it names).
pub fn parse(text: &str, include: Include, notes: &mut Vec<String>) -> Result<Vec<TgtTarget>> {
    let mut targets = Vec::new();
    parse_into(text, include, notes, &mut targets, 0)?;
    Ok(targets)
}

fn parse_into(
    text: &str,
    include: Include,
    notes: &mut Vec<String>,
    targets: &mut Vec<TgtTarget>,
    depth: usize,
) -> Result<()> {
    let mut target: Option<TgtTarget> = None;
    let mut lun: Option<TgtLun> = None;
    for (no, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("line {}: {raw:?}", no + 1);
        if let Some(tag) = line.strip_prefix("</") {
            let tag = tag.trim_end_matches('>').trim();
            match (tag, &mut target, lun.take()) {
                ("backing-store" | "direct-store", Some(t), Some(l)) => t.luns.push(l),
                ("target", Some(_), None) => targets.extend(target.take()),
                _ => bail!("unexpected </{tag}> ({})", at()),
            }
            continue;
        }
        if let Some(open) = line.strip_prefix('<') {
            let open = open
                .strip_suffix('>')
                .ok_or_else(|| anyhow!("missing '>' ({})", at()))?;
            let (tag, arg) = open.split_once(char::is_whitespace).unwrap_or((open, ""));
            let arg = arg.trim().to_string();
            match (tag, &target, &lun) {
                ("target", None, None) if !arg.is_empty() => {
                    target = Some(TgtTarget {
                        name: arg,
                        ..TgtTarget::default()
                    })
                }
                ("backing-store" | "direct-store", Some(_), None) if !arg.is_empty() => {
                    lun = Some(TgtLun {
                        path: arg,
                        direct: tag == "direct-store",
                        ..TgtLun::default()
                    })
                }
                _ => bail!("unexpected <{tag}> ({})", at()),
            }
            continue;
        }
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let (key, value) = (key.to_string(), value.trim().to_string());
        match (&mut target, &mut lun) {
            (_, Some(l)) if key == "lun" => {
                l.lun = Some(
                    value
                        .parse()
                        .with_context(|| format!("lun {value:?} ({})", at()))?,
                )
            }
            (_, Some(l)) => l.options.push((key, value)),
            (Some(t), None) if key == "backing-store" || key == "direct-store" => {
                t.luns.push(TgtLun {
                    path: value,
                    direct: key == "direct-store",
                    ..TgtLun::default()
                })
            }
            (Some(t), None) => t.options.push((key, value)),
            (None, None) => match key.as_str() {
                "include" if depth < 8 => {
                    for (path, text) in include(&value)? {
                        parse_into(&text, include, notes, targets, depth + 1)
                            .with_context(|| format!("in {path}"))?;
                    }
                }
                "include" => bail!("includes nested too deeply ({})", at()),
                "default-driver" if value == "iscsi" => {}
                _ => notes.push(format!("not carried over: {key} {value} (global)")),
            },
        }
    }
    if target.is_some() || lun.is_some() {
        bail!("unterminated <target> or <backing-store> block at the end");
    }
    Ok(())
}

/// The options a LUN sees: the target's, overridden by its own.
fn lun_options<'a>(t: &'a TgtTarget, l: &'a TgtLun) -> BTreeMap<&'a str, &'a str> {
    let mut m: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in t.options.iter().chain(&l.options) {
        m.insert(k, v);
    }
    m
}

/// LUN options rtarget carries over (the rest are listed).
const LUN_KEYS: &[&str] = &[
    "write-cache",
    "readonly",
    "block-size",
    "bs-type",
    "device-type",
];
/// Target options about access (handled per target).
const ACCESS_KEYS: &[&str] = &[
    "initiator-name",
    "initiator-address",
    "incominguser",
    "outgoinguser",
    "driver",
];

fn is_off(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "off" | "0" | "no" | "false"
    )
}

fn is_on(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "on" | "1" | "yes" | "true")
}

/// Replay `targets` as management verbs on an empty config. `ctx` gives
/// the portal (tgt listens on every address: `0.0.0.0:3260` keeps that),
/// the stat of the backing paths and fresh serials.
pub fn import(targets: &[TgtTarget], ctx: &Ctx) -> Result<Imported> {
    let mut cfg = SaveConfig::default();
    let mut notes = Vec::new();
    // One storage object per backing path, whichever targets export it.
    let mut objects: BTreeMap<String, String> = BTreeMap::new();
    let run = |cfg: &mut SaveConfig, path: &str, words: &[String]| -> Result<String> {
        crate::ops::create(cfg, path, &Args::from_words(words)?, ctx)
            .with_context(|| format!("{path} create {}", words.join(" ")))
    };
    for t in targets {
        let driver = t.options.iter().find(|(k, _)| k == "driver");
        if let Some((_, d)) = driver.filter(|(_, d)| d != "iscsi") {
            notes.push(format!(
                "{}: driver {d} is not supported; target skipped",
                t.name
            ));
            continue;
        }
        run(&mut cfg, "/iscsi", std::slice::from_ref(&t.name))?;
        let tpg = format!("/iscsi/{}/tpg1", t.name);
        for (k, v) in &t.options {
            if !LUN_KEYS.contains(&k.as_str()) && !ACCESS_KEYS.contains(&k.as_str()) {
                let param = [(k.clone(), v.clone())];
                if crate::ops_edit::set(&mut cfg, &tpg, "parameter", &param).is_err() {
                    notes.push(format!("{}: not carried over: {k} {v}", t.name));
                }
            }
        }
        let mut used: Vec<u64> = t.luns.iter().filter_map(|l| l.lun).collect();
        let mut readonly_luns = Vec::new();
        for l in &t.luns {
            let index = l.lun.unwrap_or_else(|| {
                let n = (1..).find(|n| !used.contains(n)).unwrap_or(1);
                used.push(n);
                n
            });
            let opts = lun_options(t, l);
            let skip = |why: String, notes: &mut Vec<String>| {
                notes.push(format!(
                    "{}: LUN {index} ({}) skipped: {why}",
                    t.name, l.path
                ))
            };
            if let Some(dt) = opts.get("device-type").filter(|d| **d != "disk") {
                skip(
                    format!("device-type {dt} (rtarget serves disks)"),
                    &mut notes,
                );
                continue;
            }
            if let Some(bs) = opts
                .get("bs-type")
                .filter(|b| !matches!(**b, "rdwr" | "aio"))
            {
                skip(format!("bs-type {bs}"), &mut notes);
                continue;
            }
            if l.direct {
                notes.push(format!(
                    "{}: LUN {index}: direct-store {} is served as a backing store (its INQUIRY data is rtarget's)",
                    t.name, l.path
                ));
            }
            let so = match objects.get(&l.path) {
                Some(so) => so.clone(),
                None => match new_object(&mut cfg, l, &opts, &objects, ctx, &run) {
                    Ok(so) => {
                        objects.insert(l.path.clone(), so.clone());
                        so
                    }
                    Err(e) => {
                        skip(format!("{e:#}"), &mut notes);
                        continue;
                    }
                },
            };
            let words = [so, format!("lun={index}"), "add_mapped_luns=false".into()];
            run(&mut cfg, &format!("{tpg}/luns"), &words)?;
            if opts.get("readonly").is_some_and(|v| is_on(v)) {
                readonly_luns.push(index);
            }
            for (k, v) in &l.options {
                if !LUN_KEYS.contains(&k.as_str()) {
                    notes.push(format!(
                        "{}: LUN {index}: not carried over: {k} {v}",
                        t.name
                    ));
                }
            }
        }
        access(&mut cfg, t, &tpg, &readonly_luns, &mut notes, &run)?;
    }
    Ok(Imported { cfg, notes })
}

/// The storage object for a backing path: `block` for a block device,
/// `fileio` for a file (its size); named after the file, made unique.
fn new_object(
    cfg: &mut SaveConfig,
    l: &TgtLun,
    opts: &BTreeMap<&str, &str>,
    objects: &BTreeMap<String, String>,
    ctx: &Ctx,
    run: Run,
) -> Result<String> {
    let base: String = l
        .path
        .rsplit('/')
        .next()
        .unwrap_or("lun")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = if base.is_empty() {
        "lun".to_string()
    } else {
        base
    };
    let taken = |n: &str| objects.values().any(|p| p.rsplit('/').next() == Some(n));
    let name = (1..)
        .map(|i| {
            if i == 1 {
                base.clone()
            } else {
                format!("{base}_{i}")
            }
        })
        .find(|n| !taken(n))
        .unwrap_or(base);
    let readonly = opts.get("readonly").is_some_and(|v| is_on(v));
    let path = match (ctx.stat)(&l.path) {
        Some(PathKind::BlockDevice) => {
            let mut w = vec![name.clone(), l.path.clone()];
            if readonly {
                w.push("readonly=true".into());
            }
            run(cfg, "/backstores/block", &w)?;
            format!("/backstores/block/{name}")
        }
        Some(PathKind::File(len)) if len > 0 => {
            let wb = !opts.get("write-cache").is_some_and(|v| is_off(v));
            let w = [name.clone(), l.path.clone(), format!("write_back={wb}")];
            run(cfg, "/backstores/fileio", &w)?;
            format!("/backstores/fileio/{name}")
        }
        Some(PathKind::File(_)) => bail!("{} is empty", l.path),
        Some(PathKind::Other) => bail!("{} is neither a file nor a block device", l.path),
        None => bail!("{} does not exist", l.path),
    };
    if let Some(bs) = opts.get("block-size") {
        crate::ops_edit::set(
            cfg,
            &path,
            "attribute",
            &[("block_size".into(), bs.to_string())],
        )?;
    }
    Ok(path)
}

/// Who may log in: ACLs for `initiator-name`s, else everyone (tgt's
/// default) unless tgt limited it by address, then nobody; CHAP from
/// `incominguser` / `outgoinguser`.
fn access(
    cfg: &mut SaveConfig,
    t: &TgtTarget,
    tpg: &str,
    readonly_luns: &[u64],
    notes: &mut Vec<String>,
    run: Run,
) -> Result<()> {
    let names: Vec<&String> = options(t, "initiator-name");
    let addresses: Vec<&String> = options(t, "initiator-address");
    let open_to_all = addresses.iter().any(|a| a.eq_ignore_ascii_case("ALL"));
    let auth = chap_auth(t, notes)?;
    let set = |cfg: &mut SaveConfig, path: &str, group: &str, kv: &[(String, String)]| {
        crate::ops_edit::set(cfg, path, group, kv).with_context(|| format!("{path} set {group}"))
    };
    let attr = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
    set(
        cfg,
        tpg,
        "attribute",
        &attr("authentication", if auth.is_empty() { "0" } else { "1" }),
    )?;
    for a in addresses.iter().filter(|a| !a.eq_ignore_ascii_case("ALL")) {
        notes.push(format!(
            "{}: initiator-address {a} is not carried over (no address ACLs: use a firewall{})",
            t.name,
            if names.is_empty() {
                "; the target has no ACLs and admits nobody until you add some"
            } else {
                ""
            }
        ));
    }
    if !names.is_empty() && addresses.is_empty() {
        // tgt-admin binds `-I ALL` next to the names when no address is
        // given, so tgt let every initiator in; the names are the intent.
        notes.push(format!(
            "{}: only the initiator-name(s) may log in (under tgt-admin, without initiator-address, every initiator could)",
            t.name
        ));
    }
    if !names.is_empty() {
        let luns: Vec<u64> = cfg
            .iscsi_targets()
            .find(|x| x.wwn == t.name)
            .and_then(|x| x.tpgs.first())
            .map(|g| g.luns.iter().map(|l| l.index).collect())
            .unwrap_or_default();
        for n in names {
            run(
                cfg,
                &format!("{tpg}/acls"),
                &[n.clone(), "add_mapped_luns=false".into()],
            )?;
            let acl = format!("{tpg}/acls/{n}");
            for l in &luns {
                let wp = readonly_luns.contains(l);
                run(
                    cfg,
                    &acl,
                    &[
                        l.to_string(),
                        format!("lun{l}"),
                        format!("write_protect={wp}"),
                    ],
                )?;
            }
            if !auth.is_empty() {
                set(cfg, &acl, "auth", &auth)?;
            }
        }
    } else if addresses.is_empty() || open_to_all {
        // tgt's default: every initiator may log in.
        let wp = if readonly_luns.is_empty() { "0" } else { "1" };
        if !readonly_luns.is_empty() && readonly_luns.len() < t.luns.len() {
            notes.push(format!(
                "{}: some LUNs are readonly: without ACLs write protection is per target, so every LUN is read-only (add ACLs to mix)",
                t.name
            ));
        }
        set(
            cfg,
            tpg,
            "attribute",
            &[
                ("generate_node_acls".into(), "1".into()),
                ("demo_mode_write_protect".into(), wp.into()),
            ],
        )?;
        if !auth.is_empty() {
            set(cfg, tpg, "auth", &auth)?;
        }
    }
    Ok(())
}

/// The values of every `k` option of the target, in file order.
fn options<'a>(t: &'a TgtTarget, k: &str) -> Vec<&'a String> {
    t.options
        .iter()
        .filter(|(x, _)| x == k)
        .map(|(_, v)| v)
        .collect()
}

/// CHAP from `incominguser` / `outgoinguser` as the `auth` group's
/// key/values (empty: no CHAP).
fn chap_auth(t: &TgtTarget, notes: &mut Vec<String>) -> Result<Vec<(String, String)>> {
    let chap = |k: &str, notes: &mut Vec<String>| -> Result<Option<(String, String)>> {
        let vals = options(t, k);
        if vals.len() > 1 {
            notes.push(format!(
                "{}: only the first {k} is carried over ({} given)",
                t.name,
                vals.len()
            ));
        }
        vals.first()
            .map(|v| {
                let (u, p) = v
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| anyhow!("{k} {v:?}: USER PASSWORD expected"))?;
                Ok((u.to_string(), p.trim().to_string()))
            })
            .transpose()
    };
    let incoming = chap("incominguser", notes)?;
    let outgoing = chap("outgoinguser", notes)?;
    let mut auth = Vec::new();
    if let Some((u, p)) = &incoming {
        auth.push(("userid".to_string(), u.clone()));
        auth.push(("password".to_string(), p.clone()));
    }
    if let Some((u, p)) = &outgoing {
        auth.push(("mutual_userid".to_string(), u.clone()));
        auth.push(("mutual_password".to_string(), p.clone()));
    }
    if outgoing.is_some() && incoming.is_none() {
        bail!(
            "{}: outgoinguser without incominguser cannot be carried over",
            t.name
        );
    }
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            default_portal: "0.0.0.0:3260".parse().unwrap(),
            add_default_portal: true,
            auto_add_mapped_luns: false,
            new_uuid: Box::new(|| {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let n = N.fetch_add(1, Ordering::Relaxed);
                Ok(format!(
                    "{:08x}-1b0a-4908-8706-050403020100",
                    0x1f0e_0d0c + n
                ))
            }),
            stat: Box::new(|p| match p {
                "/srv/a.img" | "/srv/b.img" => Some(PathKind::File(1 << 20)),
                "/dev/sdz" => Some(PathKind::BlockDevice),
                "/srv" => Some(PathKind::Other),
                _ => None,
            }),
        }
    }

    const CONF: &str = "\
default-driver iscsi
# a comment
<target iqn.2001-04.com.example:one>
    backing-store /srv/a.img
    <backing-store /dev/sdz>
        lun 5
        readonly 1
    </backing-store>
    initiator-name iqn.1994-05.com.redhat:c1
    incominguser alice secretsecret12
    outgoinguser target targetsecret12
    MaxRecvDataSegmentLength 65536
    vendor_id ACME
</target>
<target iqn.2001-04.com.example:two>
    backing-store /srv/a.img
    backing-store /srv/missing.img
    write-cache off
</target>
<target iqn.2001-04.com.example:three>
    backing-store /srv/b.img
    initiator-address 192.168.1.0/24
</target>
";

    fn imported() -> Imported {
        let mut notes = Vec::new();
        let t = parse(CONF, &|_| Ok(Vec::new()), &mut notes).unwrap();
        let mut out = import(&t, &ctx()).unwrap();
        notes.append(&mut out.notes);
        out.notes = notes;
        out
    }

    #[test]
    fn parses_blocks_one_liners_and_options() {
        let t = parse(CONF, &|_| Ok(Vec::new()), &mut Vec::new()).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].luns[1].lun, Some(5));
        assert_eq!(t[0].luns[1].options, [("readonly".into(), "1".into())]);
        assert!(t[0]
            .options
            .contains(&("incominguser".into(), "alice secretsecret12".into())));
        assert!(parse("<target x>\n", &|_| Ok(Vec::new()), &mut Vec::new()).is_err());
        assert!(parse("</target>\n", &|_| Ok(Vec::new()), &mut Vec::new()).is_err());
        // includes are followed
        let inc = |g: &str| {
            Ok(vec![(
                g.to_string(),
                "<target iqn.x:y>\n</target>\n".to_string(),
            )])
        };
        let t = parse("include /etc/tgt/conf.d/*.conf\n", &inc, &mut Vec::new()).unwrap();
        assert_eq!(t[0].name, "iqn.x:y");
    }

    #[test]
    fn targets_luns_acls_and_chap_carry_over() {
        let out = imported();
        let cfg = &out.cfg;
        assert!(config::validate(cfg).is_ok(), "{:?}", config::validate(cfg));
        // One object for /srv/a.img, shared by two targets; the device a block object.
        let paths: Vec<String> = cfg.storage_objects.iter().map(|s| s.path()).collect();
        assert_eq!(
            paths,
            [
                "/backstores/fileio/a.img",
                "/backstores/block/sdz",
                "/backstores/fileio/b.img"
            ]
        );
        let one = &cfg.targets[0].tpgs[0];
        let luns: Vec<(u64, &str)> = one
            .luns
            .iter()
            .map(|l| (l.index, l.storage_object.as_str()))
            .collect();
        assert_eq!(
            luns,
            [
                (1, "/backstores/fileio/a.img"),
                (5, "/backstores/block/sdz")
            ]
        );
        assert_eq!(one.portals[0].ip_address, "0.0.0.0");
        let acl = &one.node_acls[0];
        assert_eq!(acl.node_wwn, "iqn.1994-05.com.redhat:c1");
        let wp: Vec<(u64, bool)> = acl
            .mapped_luns
            .iter()
            .map(|m| (m.index, m.write_protect))
            .collect();
        assert_eq!(wp, [(1, false), (5, true)]);
        assert_eq!(acl.extra["chap_userid"], "alice");
        assert_eq!(acl.extra["chap_mutual_userid"], "target");
        assert_eq!(one.attributes["authentication"], 1);
        assert_eq!(one.parameters["MaxRecvDataSegmentLength"], "65536");
        // Target two: open to all (tgt's default), write cache off, the missing file listed.
        let two = &cfg.targets[1].tpgs[0];
        assert_eq!(two.attributes["generate_node_acls"], 1);
        assert_eq!(two.luns.len(), 1);
        // Target three: address-limited in tgt: nobody here until ACLs are added.
        let three = &cfg.targets[2].tpgs[0];
        assert!(three.node_acls.is_empty());
        assert_ne!(
            three.attributes.get("generate_node_acls"),
            Some(&serde_json::json!(1))
        );
        let notes = out.notes.join("\n");
        for want in [
            "iqn.2001-04.com.example:one: not carried over: vendor_id ACME",
            "LUN 2 (/srv/missing.img) skipped: /srv/missing.img does not exist",
            "initiator-address 192.168.1.0/24 is not carried over",
            "admits nobody until you add some",
            "one: only the initiator-name(s) may log in",
        ] {
            assert!(notes.contains(want), "{want:?} not in\n{notes}");
        }
    }
}
