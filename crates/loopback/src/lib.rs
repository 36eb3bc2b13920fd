//! Loopback fabric: rtarget's LUNs as local block devices through the
//! kernel's ublk driver (the `libublk` crate), LIO's tcm_loop in userspace.
//!
//! - `request`: block requests <-> SCSI commands and errnos (pure).
//! - `lu`: THE seam to target-core: one LUN on the loopback nexus.
//! - `device`: one /dev/ublkbN per LUN, its queue threads.
//! - `recovery`: a restarted daemon takes its disks over (ublk user recovery).
//!
//! One loopback target (a `naa.` WWN with its TPG) is one I_T nexus, named
//! by the TPG's nexus WWN as in rtslib; each of its LUNs is one ublk disk.
//! Nothing here interprets a CDB's answer beyond status and sense key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use target_core::{LunTable, Nexus};

mod device;
pub mod lu;
pub mod recovery;
pub mod request;

pub use device::UblkDevice;

/// The ublk control node; present only when ublk_drv is loaded.
pub const UBLK_CONTROL: &str = "/dev/ublk-control";

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error(
        "the kernel has no ublk driver ({UBLK_CONTROL} is missing; running kernel {kernel}): \
         load the ublk_drv module (`modprobe ublk_drv`). ublk is in Linux 6.0 and later with \
         CONFIG_BLK_DEV_UBLK, e.g. Debian 12's bookworm-backports 6.12 kernel; Debian 12's \
         own 6.1 kernel does not build it"
    )]
    NoDriver { kernel: String },
    #[error("loopback LUN: {0}")]
    Probe(String),
    #[error("ublk: {0}")]
    Ublk(String),
}

/// Refuse early, with the module's name, where the kernel cannot serve.
pub fn check_driver() -> Result<(), LoopbackError> {
    check_driver_at(Path::new(UBLK_CONTROL))
}

fn check_driver_at(control: &Path) -> Result<(), LoopbackError> {
    if control.exists() {
        return Ok(());
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Err(LoopbackError::NoDriver { kernel })
}

/// Queue layout of every disk of a target (ublk's nr_hw_queues, depth,
/// and the largest request, which becomes the disk's max_sectors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub queues: u16,
    pub depth: u16,
    pub max_io_bytes: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queues: 1,
            depth: 128,
            max_io_bytes: 512 << 10,
        }
    }
}

/// How one loopback target is served.
#[derive(Debug, Clone)]
pub struct LoopbackConfig {
    /// The target's WWN (`naa.<16 hex>`).
    pub wwn: String,
    /// The TPG's nexus WWN: the initiator port name the core sees.
    pub nexus_wwn: String,
    pub tpg_tag: u16,
    pub queues: QueueConfig,
    /// Where each disk's device id is kept, so that a restarted daemon
    /// recovers its disks (`None`: disks are always added anew).
    pub state_dir: Option<PathBuf>,
}

/// Nexus ids of loopback targets: a range of their own, apart from the
/// iSCSI sessions' (from 1) and the vhost guests' (from 1 << 48).
static NEXUS_IDS: AtomicU64 = AtomicU64::new(1 << 52);

/// A LUN's disk, and what it was started for.
struct Disk {
    device_id: u64,
    write_protect: bool,
    dev: UblkDevice,
}

/// One loopback target: its nexus and one ublk disk per LUN.
pub struct LoopbackTarget {
    config: LoopbackConfig,
    nexus: Arc<Nexus>,
    disks: Mutex<BTreeMap<u64, Disk>>,
    /// The LUNs last applied: what the disks' commands run against, and
    /// for the core's end-of-nexus cleanup.
    luns: Arc<lu::LiveLuns>,
}

impl LoopbackTarget {
    /// Check the driver and start a disk for every LUN. A LUN that fails
    /// to start fails the whole start (its disks are removed again).
    pub fn start(config: LoopbackConfig, luns: LunTable) -> Result<LoopbackTarget, LoopbackError> {
        check_driver()?;
        let nexus = Arc::new(Nexus {
            id: NEXUS_IDS.fetch_add(1, Ordering::Relaxed),
            initiator_port: config.nexus_wwn.clone(),
            target_port: format!("{},t,0x{:04x}", config.wwn, config.tpg_tag),
            relative_port_id: 1,
            tpg_tag: config.tpg_tag,
        });
        let t = LoopbackTarget {
            config,
            nexus,
            disks: Mutex::default(),
            luns: Arc::default(),
        };
        t.set_luns(luns)?;
        Ok(t)
    }

    pub fn wwn(&self) -> &str {
        &self.config.wwn
    }

    /// Make the disks match `luns`: removed or remapped LUNs lose their
    /// disk, new ones get one. Disks of unchanged LUNs keep running; they
    /// see the new inventory as a unit attention the LU path consumes.
    pub fn set_luns(&self, luns: LunTable) -> Result<(), LoopbackError> {
        let luns = Arc::new(luns);
        let mut disks = self.disks.lock().unwrap_or_else(|e| e.into_inner());
        let keep = |d: &Disk, id: u64| {
            luns.find(id)
                .is_some_and(|l| l.device.id() == d.device_id && l.write_protect == d.write_protect)
        };
        let gone: Vec<u64> = disks
            .iter()
            .filter(|(&id, d)| !keep(d, id))
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            if let Some(d) = disks.remove(&id) {
                tracing::info!(lun = id, dev = %d.dev.path().display(), "loopback: removing disk");
                d.dev.stop();
            }
        }
        // Only now: a removed or remapped LUN's disk must not run a request
        // on the new table (a remapped LUN's new device) before it stops.
        // The kept disks take it too, and let go of removed LUNs' devices.
        self.luns.set(luns.clone());
        luns.luns_changed(&self.nexus);
        for lun in &luns.luns {
            if disks.contains_key(&lun.id) {
                continue;
            }
            let path = Arc::new(lu::LuPath::new(
                self.luns.clone(),
                lun.id,
                self.nexus.clone(),
            ));
            let slot = (self.config.state_dir.as_deref())
                .map(|d| recovery::Slot::new(d, &self.config.wwn, lun.id));
            let dev = UblkDevice::start(path, &self.config.queues, slot)?;
            tracing::info!(lun = lun.id, dev = %dev.path().display(), recovered = dev.recovered, "loopback: disk up");
            disks.insert(
                lun.id,
                Disk {
                    device_id: lun.device.id(),
                    write_protect: lun.write_protect,
                    dev,
                },
            );
        }
        Ok(())
    }

    /// (LUN, /dev/ublkbN) of every running disk.
    pub fn devices(&self) -> Vec<(u64, PathBuf)> {
        let disks = self.disks.lock().unwrap_or_else(|e| e.into_inner());
        disks.iter().map(|(&id, d)| (id, d.dev.path())).collect()
    }

    /// Remove every disk, then the core forgets the nexus' state (SPC-2
    /// reservations, UA queues), as on any nexus loss.
    pub fn stop(self) {
        let disks = std::mem::take(&mut *self.disks.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, d) in disks {
            d.dev.stop();
        }
        self.luns.get().nexus_gone(&self.nexus);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without ublk_drv (this host's kernel) the error names the module,
    /// the command that loads it, and the kernels that have it.
    #[test]
    fn missing_driver_names_the_module_and_kernels() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_driver_at(&dir.path().join("ublk-control")).unwrap_err();
        let msg = e.to_string();
        for want in [
            "ublk_drv",
            "modprobe ublk_drv",
            "6.0",
            "6.12",
            "6.1 kernel",
            UBLK_CONTROL,
        ] {
            assert!(msg.contains(want), "{want:?} missing from: {msg}");
        }
        assert!(check_driver_at(dir.path()).is_ok());
    }

    /// On a kernel without the driver, starting a target fails with that
    /// message before touching anything.
    #[test]
    fn start_fails_cleanly_without_the_driver() {
        if Path::new(UBLK_CONTROL).exists() {
            return; // a ublk kernel: covered by tests-e2e/loopback.sh
        }
        let cfg = LoopbackConfig {
            wwn: "naa.5001405c0ffee001".into(),
            nexus_wwn: "naa.5001405c0ffee002".into(),
            tpg_tag: 1,
            queues: QueueConfig::default(),
            state_dir: None,
        };
        let e = LoopbackTarget::start(cfg, LunTable::default())
            .err()
            .unwrap();
        assert!(matches!(e, LoopbackError::NoDriver { .. }), "{e}");
    }
}
