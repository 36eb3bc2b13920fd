//! The daemon side of the vhost fabric: one [`VhostServer`] (a socket and
//! its guest's threads) per running vhost target, started, restarted,
//! updated and stopped by reconcile as its [`manage::Plan`] says. A LUN
//! table change reaches an attached guest live (hotplug events, unit
//! attentions); only a new socket or port identity restarts the server.
//!
//! The LUNs map the same [`Device`] objects the iSCSI targets map, so a LU
//! exported over both shares its reservations, unit attentions and ALUA
//! state across the fabrics.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use config::SaveConfig;
use manage::Plan;
use target_core::{Device, LunTable};
use vhost_scsi::{VhostConfig, VhostServer};

/// The running vhost targets by WWN.
pub type Servers = HashMap<String, VhostServer>;

/// A vhost target as the plan wants it, built without touching what runs.
pub struct Pending {
    pub wwn: String,
    pub restart: bool,
    pub config: VhostConfig,
    pub luns: LunTable,
}

/// Build the planned vhost targets of `wanted` over `devices`.
pub fn prepare(
    wanted: &SaveConfig,
    plan: &Plan,
    devices: &HashMap<String, Arc<Device>>,
) -> Vec<Pending> {
    let mut out = Vec::new();
    for change in &plan.vhost {
        let Some(t) = wanted.vhost_targets().find(|t| t.wwn == change.wwn) else {
            continue;
        };
        let Some((tag, tpg)) = manage::reconcile_vhost::served_tpg(t) else {
            continue;
        };
        let mut config = VhostConfig::new(
            config::vhost::socket_of(t),
            &t.wwn,
            &config::vhost::nexus_of(&t.wwn, tag),
        );
        config.tpg_tag = tag;
        config.relative_port_id = manage::vhost_port_id(wanted, &t.wwn);
        // The guest addresses the TPG as its virtio target (tcm_vhost does
        // the same with the TPG tag); Linux scans targets 0..=255.
        config.target_id = u8::try_from(tag).unwrap_or(u8::MAX);
        let luns = crate::build::tpg_luns(tpg, devices, false);
        tracing::info!(target = %t.wwn, tpg = tag, luns = luns.len(),
            socket = %config.socket.display(), restart = change.restart, "vhost target ready");
        out.push(Pending {
            wwn: t.wwn.clone(),
            restart: change.restart,
            config,
            luns: LunTable { luns },
        });
    }
    out
}

/// Start the new and restarted servers (a restarted one stops first: it
/// may keep its socket path). On a failure the ones started here stop
/// again and the error is returned. Returns the WWNs started.
pub fn start(servers: &mut Servers, pending: &mut [Pending]) -> Result<Vec<String>> {
    let mut started = Vec::new();
    for p in pending.iter_mut().filter(|p| p.restart) {
        if let Some(mut old) = servers.remove(&p.wwn) {
            old.stop();
        }
        let luns = std::mem::take(&mut p.luns);
        match VhostServer::start(p.config.clone(), luns).with_context(|| {
            format!(
                "vhost target {}: socket {}",
                p.wwn,
                p.config.socket.display()
            )
        }) {
            Ok(s) => {
                servers.insert(p.wwn.clone(), s);
                started.push(p.wwn.clone());
            }
            Err(e) => {
                stop(servers, &started);
                return Err(e);
            }
        }
    }
    Ok(started)
}

/// Stop the servers of `wwns`.
pub fn stop(servers: &mut Servers, wwns: &[String]) {
    for w in wwns {
        if let Some(mut s) = servers.remove(w) {
            s.stop();
            tracing::info!(target = %w, "vhost target stopped");
        }
    }
}

/// The LUN-table-only changes and the removals of the plan.
pub fn finish(servers: &mut Servers, pending: Vec<Pending>, removed: &[String]) {
    for p in pending.into_iter().filter(|p| !p.restart) {
        if let Some(s) = servers.get(&p.wwn) {
            s.shared().set_luns(p.luns);
        }
    }
    stop(servers, removed);
}

/// Storage object `path` changed size: attached guests of vhost targets
/// exporting it get a PARAM_CHANGE event for each such LUN.
pub fn resized(servers: &Servers, cfg: &SaveConfig, path: &str) {
    for t in cfg.vhost_targets() {
        let Some(s) = servers.get(&t.wwn) else {
            continue;
        };
        for l in t.tpgs.iter().flat_map(|g| &g.luns) {
            if l.storage_object == path {
                s.shared().lun_resized(l.index);
            }
        }
    }
}

/// The attached guest's nexus of vhost target `wwn`.
pub fn guest_of(servers: &Servers, wwn: &str) -> Option<String> {
    servers.get(wwn).and_then(|s| s.shared().guest())
}
