//! The daemon side of the loopback fabric: one [`LoopbackTarget`] (one
//! nexus, one ublk disk per LUN) per running loopback target, started,
//! restarted, updated and stopped by reconcile as its [`manage::Plan`]
//! says. A LUN table change adds and removes disks; the disks of unchanged
//! LUNs stay (a mounted file system on them is not disturbed).
//!
//! A `mode=scsi` target is served by [`ScsiLoop`] instead: its LUNs
//! become SCSI disks of the local iSCSI initiator.
//!
//! The LUNs map the same [`Device`] objects the other fabrics map, so
//! reservations, unit attentions and ALUA state are shared across them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use config::SaveConfig;
use loopback::{LoopbackConfig, LoopbackTarget, QueueConfig};
use manage::Plan;
use target_core::{Device, LunTable};

use crate::loopback_scsi::ScsiLoop;

/// One running loopback target, in its mode.
pub enum Served {
    Ublk(LoopbackTarget),
    Scsi(Box<ScsiLoop>),
}

impl Served {
    fn start(p: &mut Pending) -> Result<Served> {
        let luns = std::mem::take(&mut p.luns);
        if p.scsi {
            let c = &p.config;
            // Relative port ids apart from the iSCSI TPGs' (their 1-based
            // positions) and the ublk nexus' (1).
            let rel = 0x8000 | (loopback::recovery::tag_of(&c.wwn) as u16 & 0x3fff);
            return Ok(Served::Scsi(Box::new(ScsiLoop::start(
                &c.wwn,
                &c.nexus_wwn,
                c.tpg_tag,
                rel,
                luns,
                c.state_dir.as_deref(),
            )?)));
        }
        Ok(Served::Ublk(LoopbackTarget::start(p.config.clone(), luns)?))
    }

    fn devices(&self) -> Vec<(u64, String)> {
        match self {
            Served::Ublk(t) => t
                .devices()
                .into_iter()
                .map(|(l, d)| (l, d.display().to_string()))
                .collect(),
            Served::Scsi(t) => t.devices(),
        }
    }

    fn set_luns(&mut self, luns: LunTable) -> Result<()> {
        match self {
            Served::Ublk(t) => Ok(t.set_luns(luns)?),
            Served::Scsi(t) => {
                t.set_luns(luns);
                Ok(())
            }
        }
    }

    fn stop(self) {
        match self {
            Served::Ublk(t) => t.stop(),
            Served::Scsi(t) => t.stop(),
        }
    }
}

/// The running loopback targets by WWN.
pub type Targets = HashMap<String, Served>;

/// A loopback target as the plan wants it, built without touching what runs.
pub struct Pending {
    pub wwn: String,
    pub restart: bool,
    /// `mode=scsi`: SCSI disks of the local initiator, not ublk disks.
    pub scsi: bool,
    pub config: LoopbackConfig,
    pub luns: LunTable,
}

/// Build the planned loopback targets of `wanted` over `devices`; the
/// disks' ids are kept in `state_dir` for a restarted daemon to recover.
pub fn prepare(
    wanted: &SaveConfig,
    plan: &Plan,
    devices: &HashMap<String, Arc<Device>>,
    state_dir: Option<&Path>,
) -> Vec<Pending> {
    let mut out = Vec::new();
    for change in &plan.loopback {
        let Some(t) = wanted.loopback_targets().find(|t| t.wwn == change.wwn) else {
            continue;
        };
        let Some((tag, tpg)) = manage::reconcile_vhost::served_tpg(t) else {
            continue;
        };
        let (queues, depth) = config::loopback::queues_of(t);
        let config = LoopbackConfig {
            wwn: t.wwn.clone(),
            nexus_wwn: config::loopback::nexus_of(&t.wwn, tag),
            tpg_tag: tag,
            queues: QueueConfig {
                queues,
                depth,
                ..QueueConfig::default()
            },
            state_dir: state_dir.map(Path::to_path_buf),
        };
        let luns = crate::build::tpg_luns(tpg, devices, false);
        out.push(Pending {
            wwn: t.wwn.clone(),
            restart: change.restart,
            scsi: config::loopback::scsi_mode(t),
            config,
            luns: LunTable { luns },
        });
    }
    out
}

/// Start the new and restarted targets (a restarted one stops first). On a
/// failure (no ublk_drv, a disk that does not come up) the ones started
/// here stop again and the error is returned. Returns the WWNs started.
pub fn start(targets: &mut Targets, pending: &mut [Pending]) -> Result<Vec<String>> {
    let mut started = Vec::new();
    for p in pending.iter_mut().filter(|p| p.restart) {
        if let Some(old) = targets.remove(&p.wwn) {
            old.stop();
        }
        match Served::start(p).with_context(|| format!("loopback target {}", p.wwn)) {
            Ok(t) => {
                for (lun, dev) in t.devices() {
                    tracing::info!(target = %p.wwn, lun, dev = %dev, "loopback disk up");
                }
                targets.insert(p.wwn.clone(), t);
                started.push(p.wwn.clone());
            }
            Err(e) => {
                stop(targets, &started);
                return Err(e);
            }
        }
    }
    Ok(started)
}

/// Stop the targets of `wwns` (their disks go away).
pub fn stop(targets: &mut Targets, wwns: &[String]) {
    for w in wwns {
        if let Some(t) = targets.remove(w) {
            t.stop();
            tracing::info!(target = %w, "loopback target stopped");
        }
    }
}

/// The LUN-table-only changes and the removals of the plan.
pub fn finish(targets: &mut Targets, pending: Vec<Pending>, removed: &[String]) {
    for p in pending.into_iter().filter(|p| !p.restart) {
        if let Some(t) = targets.get_mut(&p.wwn) {
            if let Err(e) = t.set_luns(p.luns) {
                tracing::warn!(target = %p.wwn, "loopback: {e}");
            }
        }
    }
    stop(targets, removed);
}

/// The block device of loopback target `wwn`'s LUN `lun`.
pub fn disk_of(targets: &Targets, wwn: &str, lun: u64) -> Option<String> {
    let t = targets.get(wwn)?;
    t.devices()
        .into_iter()
        .find(|(l, _)| *l == lun)
        .map(|(_, d)| d)
}

/// At start-up, once the config runs: delete the ublk disks a previous
/// rtarget left (kept for recovery) that no LUN of `cfg` claims any more,
/// and log out the `mode=scsi` sessions of targets `cfg` no longer has.
pub fn reap_orphans(cfg: &SaveConfig, state_dir: &Path) {
    let mut claimed = std::collections::HashSet::new();
    let mut scsi = std::collections::HashSet::new();
    for t in cfg.loopback_targets() {
        if config::loopback::scsi_mode(t) {
            if t.tpgs.iter().any(|g| g.enabled()) {
                scsi.insert(t.wwn.clone());
            }
            continue;
        }
        for tpg in t.tpgs.iter().filter(|g| g.enabled()) {
            for l in &tpg.luns {
                claimed.insert(loopback::recovery::Slot::new(state_dir, &t.wwn, l.index).key);
            }
        }
    }
    loopback::recovery::reap(state_dir, &|k| claimed.contains(k));
    crate::loopback_scsi::reap(state_dir, &|w| scsi.contains(w));
}
