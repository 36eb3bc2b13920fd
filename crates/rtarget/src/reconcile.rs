//! The daemon side of reconcile: brings the running state (open devices,
//! the fabric's targets, the listening portals) in line with a wanted
//! config by applying the [`manage::Plan`] between the running config and
//! it. Start-up is a reconcile from the empty running state, a live change
//! one from the current config: one code path builds devices and targets
//! for both.
//!
//! Two steps, so a failure leaves everything running as it was:
//! [`prepare`] opens the new storage objects and builds the fabric's view
//! of the changed targets without touching anything that runs (dropping
//! the result closes what it opened); [`commit`] binds and closes portals
//! (the one step that can still fail, and which it undoes on failure),
//! then hands the targets to the fabric (sessions whose view did not
//! change keep running untouched), sets discovery authentication, updates
//! ALUA, and flushes the objects that went away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use config::{SaveConfig, StorageObject, Target};
use iscsi::{ChapCredentials, IscsiServer, TargetConfig};
use manage::Plan;
use target_core::Device;

use crate::build::{self, open_device};

/// The open devices, by `/backstores/...` path, with the object each was
/// opened from.
pub type Objects = HashMap<String, (StorageObject, Arc<Device>)>;

/// What runs: the config it was built from and its open devices.
#[derive(Default)]
pub struct Running {
    pub cfg: SaveConfig,
    pub objects: Objects,
    /// The running vhost targets.
    pub vhost: crate::vhost::Servers,
    /// The running loopback targets.
    pub loopback: crate::loopback::Targets,
}

/// The wanted state, brought up as far as it can be without touching what
/// runs.
pub struct Prepared {
    /// The running config this was planned from.
    base: SaveConfig,
    pub plan: Plan,
    /// The wanted config (`user` objects saved without a size get theirs).
    pub cfg: SaveConfig,
    /// Every served object of `cfg`: the kept devices and the opened ones.
    pub objects: Objects,
    /// The devices opened by this step, in config order.
    pub opened: Vec<Arc<Device>>,
    /// The fabric's view of the plan's targets, in config order.
    pub targets: Vec<TargetConfig>,
    pub discovery_auth: Option<ChapCredentials>,
    /// The plan's vhost targets, built.
    pub vhost: Vec<crate::vhost::Pending>,
    /// The plan's loopback targets, built.
    pub loopback: Vec<crate::loopback::Pending>,
}

/// Open what the plan from `running.cfg` to `wanted` opens, keep the
/// unchanged devices, and build the changed targets. `fixed_portals`
/// (`serve --listen`) replace every enabled TPG's portals.
pub fn prepare(
    running: &Running,
    mut wanted: SaveConfig,
    pr_dir: Option<&Path>,
    fixed_portals: Option<&[SocketAddr]>,
) -> Result<Prepared> {
    let plan = Plan::new(&running.cfg, &wanted);
    let mut objects = Objects::new();
    let mut opened = Vec::new();
    for so in wanted.storage_objects.iter_mut() {
        let path = so.path();
        if !plan.open.contains(&path) {
            if let Some(kept) = running.objects.get(&path) {
                objects.insert(path, (so.clone(), kept.1.clone()));
            }
            continue;
        }
        let Some(dev) =
            open_device(so, pr_dir).with_context(|| format!("storage object {path}"))?
        else {
            continue;
        };
        tracing::info!(
            object = %path,
            size = dev.backstore.size(),
            block_size = dev.options.block_size,
            write_cache = dev.options.write_cache,
            thin = dev.options.thin_provisioning,
            "storage object ready"
        );
        // rtslib needs the size of user objects to restore them; an
        // existing image given without one has it in its header.
        if so.plugin == "user" && so.size.is_none() {
            so.size = Some(dev.backstore.size());
        }
        objects.insert(path, (so.clone(), dev.clone()));
        opened.push(dev);
    }
    let devices: HashMap<String, Arc<Device>> = objects
        .iter()
        .map(|(p, (_, d))| (p.clone(), d.clone()))
        .collect();
    let mut targets = Vec::new();
    for change in &plan.targets {
        let t = wanted
            .iscsi_targets()
            .find(|t| t.wwn == change.wwn)
            .expect("planned targets are in the wanted config");
        targets.push(target_config(
            &wanted,
            t,
            &devices,
            fixed_portals,
            &change.tpgs,
        )?);
    }
    let vhost = crate::vhost::prepare(&wanted, &plan, &devices);
    // The state dir is the PR directory's parent (serve's --state-dir).
    let state_dir = pr_dir.and_then(Path::parent);
    let loopback = crate::loopback::prepare(&wanted, &plan, &devices, state_dir);
    Ok(Prepared {
        vhost,
        loopback,
        base: running.cfg.clone(),
        discovery_auth: build::discovery_auth(&wanted),
        plan,
        cfg: wanted,
        objects,
        opened,
        targets,
    })
}

/// The fabric's view of target `t` (every TPG: the fabric replaces a target
/// whole); `changed` TPGs are logged.
fn target_config(
    cfg: &SaveConfig,
    t: &Target,
    devices: &HashMap<String, Arc<Device>>,
    fixed_portals: Option<&[SocketAddr]>,
    changed: &[u16],
) -> Result<TargetConfig> {
    let mut tpgs = Vec::new();
    for (tag, tpg) in t.tagged_tpgs() {
        let mut tc = build::tpg_config(tpg, tag, devices)
            .with_context(|| format!("target {} tpg{tag}", t.wwn))?;
        tc.relative_port_id = manage::relative_port_id(cfg, &t.wwn, tag);
        if let (true, Some(fixed)) = (tc.enable, fixed_portals) {
            tc.portals = fixed.to_vec();
        }
        if changed.contains(&tag) {
            tracing::info!(
                target = %t.wwn,
                tpg = tag,
                enabled = tc.enable,
                luns = tc.luns.luns.len(),
                portals = ?tc.portals,
                "target portal group ready"
            );
        }
        tpgs.push(tc);
    }
    Ok(TargetConfig {
        iqn: t.wwn.clone(),
        tpgs,
    })
}

/// A portal could not be bound (the change was not applied).
#[derive(Debug)]
pub struct ListenFailed(pub SocketAddr, pub String);

impl std::fmt::Display for ListenFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot listen on {}: {}", self.0, self.1)
    }
}

impl std::error::Error for ListenFailed {}

/// Make `p` what runs. Portals are handled unless the daemon listens on
/// fixed ones (`listen_portals` false). Returns the addresses newly bound
/// (as bound: port 0 resolved) and warnings (flush failures).
pub fn commit(
    server: &Arc<IscsiServer>,
    running: &mut Running,
    p: Prepared,
    listen_portals: bool,
) -> Result<(Vec<SocketAddr>, Vec<String>)> {
    anyhow::ensure!(
        p.base == running.cfg,
        "the configuration changed while this change was prepared"
    );
    let mut p = p;
    // New vhost sockets first: like portals they can fail to bind, and
    // then nothing else changes.
    let started = crate::vhost::start(&mut running.vhost, &mut p.vhost)?;
    // Loopback disks too: without ublk_drv the change fails here, with the
    // module's name, before anything else changes.
    let disks = match crate::loopback::start(&mut running.loopback, &mut p.loopback) {
        Ok(d) => d,
        Err(e) => {
            crate::vhost::stop(&mut running.vhost, &started);
            return Err(e);
        }
    };
    let bound = if listen_portals {
        match portals(server, &p.plan) {
            Ok(b) => b,
            Err(e) => {
                crate::vhost::stop(&mut running.vhost, &started);
                crate::loopback::stop(&mut running.loopback, &disks);
                return Err(e);
            }
        }
    } else {
        Vec::new()
    };
    for t in p.targets {
        server.set_target(t);
    }
    for wwn in &p.plan.remove {
        server.remove_target(wwn);
    }
    if p.plan.discovery_auth {
        server.set_discovery_auth(p.discovery_auth);
    }
    crate::vhost::finish(&mut running.vhost, p.vhost, &p.plan.vhost_remove);
    crate::loopback::finish(&mut running.loopback, p.loopback, &p.plan.loopback_remove);
    // Only what changed takes effect on each device (see alua::apply).
    crate::alua::apply(&p.cfg, &p.objects);
    // Objects that went away are flushed here, and closed (an RBD image's
    // lock and watches released) by their drop, once no session runs a
    // command on them: the sessions took their new LUN tables above.
    let mut warnings = Vec::new();
    for (path, (_, dev)) in &running.objects {
        let kept = p
            .objects
            .get(path)
            .is_some_and(|(_, d)| Arc::ptr_eq(d, dev));
        if !kept {
            if let Err(e) = dev.backstore.flush() {
                warnings.push(format!("flushing {path} failed: {e}"));
            }
        }
    }
    running.cfg = p.cfg;
    running.objects = p.objects;
    Ok((bound, warnings))
}

/// Close the planned portals, then bind the new ones; if a bind fails,
/// close what this bound, reopen what it closed, and fail.
fn portals(server: &Arc<IscsiServer>, plan: &Plan) -> Result<Vec<SocketAddr>> {
    for addr in &plan.unlisten {
        if server.stop_listening(*addr) {
            tracing::info!(portal = %addr, "portal deleted: no longer listening");
        }
    }
    let mut bound = Vec::new();
    for addr in &plan.listen {
        match server.listen(*addr) {
            Ok(b) => {
                tracing::info!(portal = %b, "listening");
                bound.push(b);
            }
            Err(e) => {
                for a in &bound {
                    server.stop_listening(*a);
                }
                for a in &plan.unlisten {
                    if let Err(e) = server.listen(*a) {
                        tracing::error!(portal = %a, error = %e, "cannot reopen a portal");
                    }
                }
                return Err(anyhow::Error::new(ListenFailed(*addr, e.to_string())));
            }
        }
    }
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const A: &str = "iqn.2026-11.org.example:a";
    const B: &str = "iqn.2026-11.org.example:b";

    /// Two targets over two ramdisks, on portals nobody will bind (the
    /// server is given fixed portals: no sockets in unit tests).
    fn two_targets() -> SaveConfig {
        serde_json::from_value(json!({
            "storage_objects": [
                {"plugin": "ramdisk", "name": "r0", "size": 1048576},
                {"plugin": "ramdisk", "name": "r1", "size": 1048576}
            ],
            "targets": [
                {"fabric": "iscsi", "wwn": A, "tpgs": [{"tag": 1,
                    "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/r0"}],
                    "portals": [{"ip_address": "127.0.0.1", "port": 3260}]}]},
                {"fabric": "iscsi", "wwn": B, "tpgs": [{"tag": 1,
                    "luns": [{"index": 0, "storage_object": "/backstores/ramdisk/r1"}],
                    "portals": [{"ip_address": "127.0.0.1", "port": 3260}]}]}
            ]
        }))
        .unwrap()
    }

    fn start(cfg: &SaveConfig) -> (Arc<IscsiServer>, Running) {
        let server = IscsiServer::new();
        let mut running = Running::default();
        let p = prepare(&running, cfg.clone(), None, Some(&[])).unwrap();
        commit(&server, &mut running, p, false).unwrap();
        (server, running)
    }

    /// Start-up (from the empty running state) opens every object and
    /// configures every target; reconciling the same config again does
    /// nothing at all.
    #[test]
    fn start_up_applies_everything_and_a_repeat_nothing() {
        let cfg = two_targets();
        let p = prepare(&Running::default(), cfg.clone(), None, None).unwrap();
        assert_eq!(p.opened.len(), 2);
        let iqns: Vec<&str> = p.targets.iter().map(|t| t.iqn.as_str()).collect();
        assert_eq!(iqns, [A, B]);
        assert_eq!(p.targets[1].tpgs[0].relative_port_id, 2);
        assert_eq!(p.plan.listen, ["127.0.0.1:3260".parse().unwrap()]);

        let (_server, running) = start(&cfg);
        assert_eq!(running.cfg, cfg);
        assert_eq!(running.objects.len(), 2);
        let again = prepare(&running, cfg.clone(), None, Some(&[])).unwrap();
        assert!(again.plan.is_empty(), "{:?}", again.plan);
        assert!(again.opened.is_empty() && again.targets.is_empty());
        for (path, (_, dev)) in &again.objects {
            assert!(
                Arc::ptr_eq(dev, &running.objects[path].1),
                "{path} reopened"
            );
        }
    }

    /// A LUN added to target B rebuilds B only; every device is kept.
    #[test]
    fn a_lun_added_touches_only_its_target() {
        let cfg = two_targets();
        let (server, mut running) = start(&cfg);
        let mut new = cfg.clone();
        new.targets[1].tpgs[0].luns.push(config::Lun {
            index: 1,
            storage_object: "/backstores/ramdisk/r0".into(),
            ..Default::default()
        });
        let p = prepare(&running, new.clone(), None, Some(&[])).unwrap();
        assert!(p.opened.is_empty());
        let iqns: Vec<&str> = p.targets.iter().map(|t| t.iqn.as_str()).collect();
        assert_eq!(iqns, [B]);
        let luns: Vec<u64> = p.targets[0].tpgs[0]
            .luns
            .luns
            .iter()
            .map(|l| l.id)
            .collect();
        assert_eq!(luns, [0, 1]);
        let r0 = running.objects["/backstores/ramdisk/r0"].1.clone();
        assert!(Arc::ptr_eq(&p.targets[0].tpgs[0].luns.luns[1].device, &r0));
        let (bound, warnings) = commit(&server, &mut running, p, false).unwrap();
        assert!(bound.is_empty() && warnings.is_empty());
        assert_eq!(running.cfg, new);
    }

    /// A changed object is reopened (a new device) for every TPG that
    /// exports it; the deleted one is dropped from the running objects.
    #[test]
    fn changed_objects_are_reopened_and_deleted_ones_dropped() {
        let cfg = two_targets();
        let (server, mut running) = start(&cfg);
        let old_r1 = running.objects["/backstores/ramdisk/r1"].1.clone();
        let mut new = cfg.clone();
        new.storage_objects[1].size = Some(2 << 20);
        new.targets.remove(0);
        new.storage_objects.remove(0);
        let p = prepare(&running, new.clone(), None, Some(&[])).unwrap();
        assert_eq!(p.opened.len(), 1);
        assert_eq!(p.opened[0].backstore.size(), 2 << 20);
        assert_eq!(p.plan.remove, [A]);
        let iqns: Vec<&str> = p.targets.iter().map(|t| t.iqn.as_str()).collect();
        assert_eq!(iqns, [B]);
        // B's TPG is now the first iSCSI target port.
        assert_eq!(p.targets[0].tpgs[0].relative_port_id, 1);
        commit(&server, &mut running, p, false).unwrap();
        assert_eq!(running.objects.len(), 1);
        let new_r1 = &running.objects["/backstores/ramdisk/r1"].1;
        assert!(!Arc::ptr_eq(new_r1, &old_r1));
    }

    /// A prepared change whose base is no longer what runs is refused.
    #[test]
    fn stale_preparations_are_refused() {
        let cfg = two_targets();
        let (server, mut running) = start(&cfg);
        let stale = prepare(&Running::default(), cfg.clone(), None, Some(&[])).unwrap();
        let e = commit(&server, &mut running, stale, false).unwrap_err();
        assert!(e.to_string().contains("changed while"), "{e}");
    }
}
