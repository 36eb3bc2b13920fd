//! `mode=scsi` loopback targets: the tcm_loop-like SCSI view. rtarget
//! serves the target's LUNs on a private iSCSI portal of its own
//! (127.0.0.1, a port the kernel picks, an IQN derived from the WWN, with
//! its own [`IscsiServer`] so nothing else sees or changes it) and logs
//! the local open-iscsi initiator in (`iscsiadm`); each LUN becomes a SCSI
//! disk with its sg node (/dev/sdX, /dev/sgN), so sg3-utils work. The LUNs
//! map the same devices as every other fabric (reservations, ALUA, unit
//! attentions shared). Stopping logs the initiator out first.
//!
//! The initiator logs in with the TPG's nexus WWN as its initiator name,
//! so the core sees the same initiator port as in ublk mode.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use iscsi::{IscsiServer, TargetConfig, TpgConfig};
use target_core::LunTable;

/// How long the kernel may take to scan a new session's LUNs (slow under
/// TCG).
const SCAN_TIMEOUT: Duration = Duration::from_secs(30);

const ISCSI_SESSIONS: &str = "/sys/class/iscsi_session";

/// One running `mode=scsi` loopback target.
pub struct ScsiLoop {
    wwn: String,
    iqn: String,
    portal: SocketAddr,
    server: Arc<IscsiServer>,
    tpg: TpgConfig,
    /// The open-iscsi iface made for the login (`None`: the default one).
    iface: Option<String>,
    /// Where the portal's port is kept for a restarted rtarget.
    ports: Option<PathBuf>,
}

/// The state dir's file of private portal ports, by target WWN.
const PORTS_FILE: &str = "loopback-scsi-ports.json";

fn load_ports(file: &Path) -> std::collections::BTreeMap<String, u16> {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn update_ports(file: &Path, f: impl FnOnce(&mut std::collections::BTreeMap<String, u16>)) {
    let mut m = load_ports(file);
    f(&mut m);
    let tmp = file.with_extension("json.tmp");
    let res = serde_json::to_vec_pretty(&m)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = res {
        tracing::warn!(file = %file.display(), "loopback: saving the portal port: {e}");
    }
}

/// The private target's IQN for loopback target `wwn`.
pub fn iqn_of(wwn: &str) -> String {
    format!(
        "iqn.2003-01.org.rtarget.loopback:{}",
        wwn.to_ascii_lowercase()
    )
}

/// The open-iscsi iface of loopback target `wwn`.
fn iface_of(wwn: &str) -> String {
    format!(
        "rtarget-{}",
        wwn.trim_start_matches("naa.").to_ascii_lowercase()
    )
}

/// What is missing for `mode=scsi`, named: the `iscsiadm` tool (open-iscsi)
/// on `path_var`, or the kernel's iscsi_tcp (loaded on demand when only
/// unloaded).
pub fn check_initiator() -> Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    check_initiator_at(&path, Path::new("/sys/module/iscsi_tcp"), &|| {
        modprobe("iscsi_tcp")
    })
}

fn modprobe(m: &str) -> bool {
    Command::new("modprobe")
        .arg(m)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn check_initiator_at(
    path_var: &std::ffi::OsStr,
    module: &Path,
    load: &dyn Fn() -> bool,
) -> Result<()> {
    let found = std::env::split_paths(path_var).any(|d| d.join("iscsiadm").is_file());
    if !found {
        bail!(
            "mode=scsi needs the open-iscsi initiator: `iscsiadm` is not installed \
             (Debian/Ubuntu: apt install open-iscsi; Fedora: dnf install iscsi-initiator-utils)"
        );
    }
    let loaded = module.exists() || (load() && module.exists());
    if !loaded {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        bail!(
            "mode=scsi needs the kernel's iSCSI initiator: the iscsi_tcp module is missing \
             (`modprobe iscsi_tcp` failed; running kernel {kernel}); it is built as a module \
             (CONFIG_ISCSI_TCP) by every Debian and Ubuntu kernel"
        );
    }
    Ok(())
}

fn iscsiadm(args: &[&str]) -> Result<String> {
    let out = Command::new("iscsiadm")
        .args(args)
        .output()
        .context("running iscsiadm")?;
    if !out.status.success() {
        bail!(
            "iscsiadm {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl ScsiLoop {
    /// Serve `luns` on a private portal and log the local initiator in;
    /// returns once every LUN's disk is there.
    pub fn start(
        wwn: &str,
        nexus_wwn: &str,
        tag: u16,
        relative_port_id: u16,
        luns: LunTable,
        state_dir: Option<&Path>,
    ) -> Result<ScsiLoop> {
        check_initiator()?;
        let iqn = iqn_of(wwn);
        let server = IscsiServer::new();
        let tpg = TpgConfig {
            tag,
            relative_port_id,
            enable: true,
            portals: Vec::new(),
            luns: Arc::new(luns),
            acls: Vec::new(),
            attributes: config::TpgAttributes {
                authentication: Some(false),
                generate_node_acls: true,
                ..Default::default()
            },
            chap: None,
            offer: Default::default(),
        };
        let ports = state_dir.map(|d| d.join(PORTS_FILE));
        // A session a previous rtarget left: listening on its port again
        // lets the initiator reconnect on its own (the disk stays, I/O
        // resumes); otherwise it is logged out first.
        let old = ports
            .as_deref()
            .and_then(|f| load_ports(f).get(wwn).copied());
        let resumed = match (old, session_of(&iqn)) {
            (Some(port), Some(_)) => server
                .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .map_err(|e| tracing::warn!(target = %wwn, port, "loopback: old portal: {e}"))
                .ok(),
            _ => None,
        };
        if resumed.is_none() {
            if session_of(&iqn).is_some() {
                let _ = iscsiadm(&["-m", "node", "-T", &iqn, "--logout"]);
            }
            let _ = iscsiadm(&["-m", "node", "-T", &iqn, "-o", "delete"]);
            let _ = iscsiadm(&["-m", "iface", "-I", &iface_of(wwn), "-o", "delete"]);
        }
        let portal = match resumed {
            Some(p) => p,
            None => server
                .listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
                .context("private iSCSI portal")?,
        };
        let mut me = ScsiLoop {
            wwn: wwn.to_string(),
            iqn,
            portal,
            server,
            tpg,
            iface: resumed.map(|_| iface_of(wwn)),
            ports,
        };
        me.tpg.portals = vec![portal];
        me.publish();
        if let Some(f) = &me.ports {
            update_ports(f, |m| {
                m.insert(me.wwn.clone(), portal.port());
            });
        }
        let up = if resumed.is_some() {
            me.wait_disks()
        } else {
            me.login(nexus_wwn)
        };
        if let Err(e) = up {
            me.stop();
            return Err(e);
        }
        tracing::info!(target = %me.wwn, portal = %portal, resumed = resumed.is_some(), "loopback: local initiator logged in");
        Ok(me)
    }

    fn publish(&self) {
        self.server.set_target(TargetConfig {
            iqn: self.iqn.clone(),
            tpgs: vec![self.tpg.clone()],
        });
    }

    fn login(&mut self, nexus_wwn: &str) -> Result<()> {
        // An iface of our own carries the nexus WWN as initiator name, so
        // the core sees the same initiator port as in ublk mode (without
        // it the initiator logs in under its own name).
        let iface = iface_of(&self.wwn);
        let named = iscsiadm(&["-m", "iface", "-I", &iface, "-o", "new"]).and_then(|_| {
            iscsiadm(&[
                "-m",
                "iface",
                "-I",
                &iface,
                "-o",
                "update",
                "-n",
                "iface.initiatorname",
                "-v",
                nexus_wwn,
            ])
        });
        match named {
            Ok(_) => self.iface = Some(iface),
            Err(e) => tracing::warn!(target = %self.wwn, "loopback: initiator name: {e:#}"),
        }
        let node = self.node();
        let node: Vec<&str> = node.iter().map(String::as_str).collect();
        iscsiadm(&[&node[..], &["-o", "new"]].concat())?;
        iscsiadm(&[&node[..], &["--login"]].concat())?;
        self.wait_disks()
    }

    /// Wait until every LUN's disk is there (the login returns before the
    /// kernel has scanned them; a resumed session first reconnects).
    fn wait_disks(&self) -> Result<()> {
        // No event to wait on from here.
        let want: Vec<u64> = self.tpg.luns.luns.iter().map(|l| l.id).collect();
        let t0 = Instant::now();
        loop {
            let have = self.disks();
            if want
                .iter()
                .all(|l| have.iter().any(|d| d.0 == *l && d.1.is_some()))
            {
                return Ok(());
            }
            if t0.elapsed() > SCAN_TIMEOUT {
                bail!(
                    "the local initiator's session to {} has no disks for LUNs {want:?}",
                    self.portal
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A new LUN table: published to the session (which gets a REPORTED
    /// LUNS DATA HAS CHANGED unit attention), removed LUNs' disks deleted,
    /// the session rescanned for new ones.
    pub fn set_luns(&mut self, luns: LunTable) {
        for (lun, _, _, dir) in self.disks() {
            if luns.find(lun).is_none() {
                let _ = std::fs::write(dir.join("delete"), "1");
            }
        }
        self.tpg.luns = Arc::new(luns);
        self.publish();
        if let Some(s) = session_of(&self.iqn) {
            let sid = s.trim_start_matches("session");
            if let Err(e) = iscsiadm(&["-m", "session", "-r", sid, "--rescan"]) {
                tracing::warn!(target = %self.wwn, "loopback: rescan: {e:#}");
            }
            // The sd driver probes a new LUN asynchronously: the change
            // returns once the disks are there, as a create does.
            if let Err(e) = self.wait_disks() {
                tracing::warn!(target = %self.wwn, "loopback: {e:#}");
            }
        }
    }

    /// (LUN, "/dev/sdX /dev/sgN") of every disk of the session.
    pub fn devices(&self) -> Vec<(u64, String)> {
        self.disks()
            .into_iter()
            .map(|(lun, sd, sg, _)| {
                let name = |n: Option<String>| n.map(|n| format!("/dev/{n}"));
                let v: Vec<String> = [name(sd), name(sg)].into_iter().flatten().collect();
                (lun, v.join(" "))
            })
            .collect()
    }

    fn disks(&self) -> Vec<(u64, Option<String>, Option<String>, PathBuf)> {
        session_of(&self.iqn)
            .map(|s| disks_of(&Path::new(ISCSI_SESSIONS).join(s).join("device")))
            .unwrap_or_default()
    }

    /// `iscsiadm -m node` arguments of the private node record.
    fn node(&self) -> Vec<String> {
        let mut n: Vec<String> = ["-m", "node", "-T", &self.iqn, "-p"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        n.push(self.portal.to_string());
        if let Some(i) = &self.iface {
            n.extend(["-I".to_string(), i.clone()]);
        }
        n
    }

    /// Log the initiator out (its disks go), forget the node and iface,
    /// stop serving.
    pub fn stop(self) {
        let node = self.node();
        let node: Vec<&str> = node.iter().map(String::as_str).collect();
        if session_of(&self.iqn).is_some() {
            if let Err(e) = iscsiadm(&[&node[..], &["--logout"]].concat()) {
                tracing::warn!(target = %self.wwn, "loopback: {e:#}");
            }
        }
        let _ = iscsiadm(&[&node[..], &["-o", "delete"]].concat());
        if let Some(i) = &self.iface {
            let _ = iscsiadm(&["-m", "iface", "-I", i, "-o", "delete"]);
        }
        if let Some(f) = &self.ports {
            update_ports(f, |m| {
                m.remove(&self.wwn);
            });
        }
        self.server.shutdown();
    }
}

/// At start-up: log out the sessions a previous rtarget left for
/// `mode=scsi` targets that no longer run (removed from the config while
/// rtarget was down): nobody would ever serve their portal again.
pub fn reap(state_dir: &Path, claimed: &dyn Fn(&str) -> bool) {
    let file = state_dir.join(PORTS_FILE);
    if !file.exists() {
        return;
    }
    update_ports(&file, |m| {
        m.retain(|wwn, _| {
            if claimed(wwn) {
                return true;
            }
            let iqn = iqn_of(wwn);
            if session_of(&iqn).is_some() {
                tracing::info!(target = %wwn, "loopback: logging out a session no target claims");
                let _ = iscsiadm(&["-m", "node", "-T", &iqn, "--logout"]);
            }
            let _ = iscsiadm(&["-m", "node", "-T", &iqn, "-o", "delete"]);
            let _ = iscsiadm(&["-m", "iface", "-I", &iface_of(wwn), "-o", "delete"]);
            false
        });
    });
}

/// The sysfs name (`sessionN`) of the initiator's session with `iqn`.
fn session_of(iqn: &str) -> Option<String> {
    let dir = std::fs::read_dir(ISCSI_SESSIONS).ok()?;
    dir.flatten().find_map(|e| {
        let name = std::fs::read_to_string(e.path().join("targetname")).ok()?;
        (name.trim() == iqn).then(|| e.file_name().to_string_lossy().into_owned())
    })
}

/// The SCSI devices under a session's device dir (`targetH:C:T/H:C:T:L`):
/// (LUN, block device name, sg name, the device's sysfs dir).
fn disks_of(session: &Path) -> Vec<(u64, Option<String>, Option<String>, PathBuf)> {
    let first = |d: PathBuf| -> Option<String> {
        let mut e = std::fs::read_dir(d).ok()?;
        e.next()?
            .ok()
            .map(|e| e.file_name().to_string_lossy().into_owned())
    };
    let mut out = Vec::new();
    let Ok(targets) = std::fs::read_dir(session) else {
        return out;
    };
    for t in targets.flatten() {
        if !t.file_name().to_string_lossy().starts_with("target") {
            continue;
        }
        let Ok(lus) = std::fs::read_dir(t.path()) else {
            continue;
        };
        for lu in lus.flatten() {
            let name = lu.file_name().to_string_lossy().into_owned();
            let parts: Vec<&str> = name.split(':').collect();
            let Some(lun) = (parts.len() == 4).then(|| parts[3].parse().ok()).flatten() else {
                continue;
            };
            let dir = lu.path();
            out.push((
                lun,
                first(dir.join("block")),
                first(dir.join("scsi_generic")),
                dir,
            ));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without iscsiadm, or without iscsi_tcp (and no way to load it), the
    /// error names what is missing and where it comes from.
    #[test]
    fn missing_initiator_pieces_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let module = dir.path().join("iscsi_tcp");
        let e = check_initiator_at(bin.as_os_str(), &module, &|| false).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("iscsiadm") && msg.contains("open-iscsi"),
            "{msg}"
        );
        std::fs::write(bin.join("iscsiadm"), "").unwrap();
        let msg = check_initiator_at(bin.as_os_str(), &module, &|| false)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("iscsi_tcp") && msg.contains("modprobe iscsi_tcp"),
            "{msg}"
        );
        // Loading the module is tried.
        let load = || std::fs::create_dir(&module).is_ok();
        check_initiator_at(bin.as_os_str(), &module, &load).unwrap();
        check_initiator_at(bin.as_os_str(), &module, &|| false).unwrap();
    }

    /// Ports of targets no longer configured are dropped at start-up;
    /// claimed ones stay.
    #[test]
    fn unclaimed_ports_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join(PORTS_FILE);
        update_ports(&f, |m| {
            m.insert("naa.5001405c0ffee0e1".into(), 40001);
            m.insert("naa.5001405c0ffee0e2".into(), 40002);
        });
        reap(dir.path(), &|w| w == "naa.5001405c0ffee0e2");
        let m = load_ports(&f);
        assert_eq!(m.len(), 1);
        assert_eq!(m.get("naa.5001405c0ffee0e2"), Some(&40002));
    }

    /// The session's SCSI devices from sysfs: LUN from H:C:T:L, the block
    /// and sg names.
    #[test]
    fn disks_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let lu = |l: &str| dir.path().join("target2:0:0").join(format!("2:0:0:{l}"));
        std::fs::create_dir_all(lu("0").join("block/sdb")).unwrap();
        std::fs::create_dir_all(lu("0").join("scsi_generic/sg1")).unwrap();
        std::fs::create_dir_all(lu("3").join("scsi_generic/sg2")).unwrap();
        std::fs::create_dir_all(dir.path().join("power")).unwrap();
        let d = disks_of(dir.path());
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].0, d[0].1.as_deref(), d[0].2.as_deref()),
            (0, Some("sdb"), Some("sg1"))
        );
        assert_eq!(
            (d[1].0, d[1].1.as_deref(), d[1].2.as_deref()),
            (3, None, Some("sg2"))
        );
        assert_eq!(
            iqn_of("naa.5001405C0FFEE0A1"),
            "iqn.2003-01.org.rtarget.loopback:naa.5001405c0ffee0a1"
        );
    }
}
