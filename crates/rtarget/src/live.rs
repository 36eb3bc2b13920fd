//! The live configuration: the saveconfig model is the source of truth and
//! the running objects follow it. Every management change edits a copy of
//! the config, validates it, reconciles the running state with it
//! ([`crate::reconcile`]: the same path that starts the daemon), then
//! saves the file atomically. A change that fails at any step leaves the
//! current config and what runs as they were.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Result};
use config::SaveConfig;
use iscsi::{IscsiServer, SessionInfo};
use target_core::Device;

use crate::prefs::Prefs;
pub use crate::reconcile::ListenFailed;
use crate::reconcile::{self, Prepared, Running};
use crate::tree;

/// What a successful change reports back.
#[derive(Debug, Default)]
pub struct Outcome {
    pub message: String,
    /// Validation warnings new with this change, and live-apply caveats.
    pub warnings: Vec<String>,
}

/// How the daemon was started.
pub struct Settings {
    /// The saveconfig.json every change is saved to.
    pub config_path: PathBuf,
    /// `serve --listen`: these bound addresses replace every TPG's portals.
    pub fixed_portals: Option<Vec<SocketAddr>>,
    pub default_portal: SocketAddr,
    pub prefs: Prefs,
    /// Where APTPL reservation state lives (`<state-dir>/pr`).
    pub pr_dir: Option<PathBuf>,
}

pub struct Live {
    server: Arc<IscsiServer>,
    config_path: PathBuf,
    /// `serve --listen`: these bound addresses replace every TPG's portals.
    fixed_portals: Option<Vec<SocketAddr>>,
    /// The portal `tpg1` of a new target gets.
    pub default_portal: SocketAddr,
    /// Where APTPL reservation state lives (see `build_device::open_device`).
    pr_dir: Option<PathBuf>,
    state: Mutex<Running>,
    prefs: Mutex<Prefs>,
    /// Applies changed preferences that act on the daemon (the metrics
    /// endpoint), before they are saved; set once by `serve`.
    pub on_prefs: std::sync::OnceLock<PrefsHook>,
}

/// `(old, new) -> Ok` when `new` is in effect (see [`Live::on_prefs`]).
pub type PrefsHook = Box<dyn Fn(&Prefs, &Prefs) -> Result<()> + Send + Sync>;

impl Live {
    /// Nothing runs yet: the daemon starts with [`Live::prepare`] and
    /// [`Live::commit`] of its config (a reconcile from the empty state).
    pub fn new(server: Arc<IscsiServer>, settings: Settings) -> Live {
        let Settings {
            config_path,
            fixed_portals,
            default_portal,
            prefs,
            pr_dir,
        } = settings;
        Live {
            server,
            config_path,
            fixed_portals,
            default_portal,
            pr_dir,
            state: Mutex::new(Running::default()),
            prefs: Mutex::new(prefs),
            on_prefs: std::sync::OnceLock::new(),
        }
    }

    /// Open what `wanted` adds to the running state (start-up: everything)
    /// and build its targets, without touching what runs.
    pub fn prepare(&self, wanted: SaveConfig) -> Result<Prepared> {
        let st = self.lock();
        reconcile::prepare(
            &st,
            wanted,
            self.pr_dir.as_deref(),
            self.fixed_portals.as_deref(),
        )
    }

    /// Make a prepared config the running one; returns the portals newly
    /// bound (port 0 resolved) and warnings.
    pub fn commit(&self, p: Prepared) -> Result<(Vec<SocketAddr>, Vec<String>)> {
        let mut st = self.lock();
        reconcile::commit(&self.server, &mut st, p, self.fixed_portals.is_none())
    }

    pub fn prefs(&self) -> Prefs {
        self.prefs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `set global name=value...`: all or nothing, then saved.
    pub fn set_prefs(&self, values: &[(String, String)]) -> Result<String> {
        let mut guard = self.prefs.lock().unwrap_or_else(|e| e.into_inner());
        let mut p = guard.clone();
        let mut msgs = Vec::new();
        for (k, v) in values {
            p.set(k, v)?;
            msgs.push(format!("Parameter {k} is now '{v}'."));
        }
        if let Some(hook) = self.on_prefs.get() {
            hook(&guard, &p)?;
        }
        p.save(&Prefs::path_for(&self.config_path))?;
        *guard = p;
        Ok(msgs.join("\n"))
    }

    fn lock(&self) -> MutexGuard<'_, Running> {
        // A panic while holding the lock cannot leave Running half-updated:
        // every field is replaced only after all fallible steps.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn config(&self) -> SaveConfig {
        let mut st = self.lock();
        let st = &mut *st;
        crate::alua::sync_states(&mut st.cfg, &st.objects);
        st.cfg.clone()
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Every open device (for the final flush).
    pub fn devices(&self) -> Vec<Arc<Device>> {
        self.lock()
            .objects
            .values()
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Every open device with its storage object's path (`/backstores/...`).
    pub fn devices_by_path(&self) -> Vec<(String, Arc<Device>)> {
        self.lock()
            .objects
            .iter()
            .map(|(p, (_, d))| (p.clone(), d.clone()))
            .collect()
    }

    /// The device serving the storage object at `path`.
    pub fn device(&self, path: &str) -> Option<Arc<Device>> {
        self.lock().objects.get(path).map(|(_, d)| d.clone())
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.server.sessions()
    }

    /// The guests attached to vhost targets now.
    pub fn vhost_guests(&self) -> Vec<crate::proto::VhostGuest> {
        let st = self.lock();
        st.vhost
            .iter()
            .filter_map(|(wwn, s)| {
                let c = s.shared().config();
                Some(crate::proto::VhostGuest {
                    nexus: s.shared().guest()?,
                    target: wwn.clone(),
                    tpg: c.tpg_tag,
                    socket: c.socket.display().to_string(),
                })
            })
            .collect()
    }

    pub fn sessions_detail(&self) -> Vec<iscsi::SessionDetail> {
        self.server.sessions_detail()
    }

    /// iSCSI logins by outcome: (result, reason, count).
    pub fn login_counts(&self) -> Vec<(&'static str, &'static str, u64)> {
        self.server.login_counts()
    }

    /// Busy polling of the iSCSI connections, summed.
    pub fn busy_poll_counts(&self) -> iscsi::PollStats {
        self.server.busy_poll_counts()
    }

    pub fn flow_cpu_counts(&self) -> iscsi::FlowCpuStats {
        self.server.flow_cpu_counts()
    }

    /// (Data segments, bytes) landed in the medium (`landed_write`).
    pub fn landed_receives(&self) -> (u64, u64) {
        self.server.landed_receives()
    }

    /// (Bytes, of them copied) of live lent READs (`lent_read`).
    pub fn live_lent_sends(&self) -> (u64, u64) {
        self.server.live_lent_sends()
    }

    /// The object tree of the current config.
    pub fn tree(&self) -> tree::Node {
        let mut st = self.lock();
        let stm = &mut *st;
        crate::alua::sync_states(&mut stm.cfg, &stm.objects);
        let sizes: HashMap<String, u64> = st
            .objects
            .iter()
            .map(|(p, (_, d))| (p.clone(), d.backstore.size()))
            .collect();
        let live = tree::Live {
            guest_of: &|w| crate::vhost::guest_of(&st.vhost, w),
            disk_of: &|w, lun| crate::loopback::disk_of(&st.loopback, w, lun),
        };
        let mut root = tree::build_with(&st.cfg, &|p| sizes.get(p).copied(), &live);
        tree::gateway_view(&st.cfg, &mut root, &|p| {
            let (_, d) = st.objects.get(p)?;
            Some(d.backstore.ownership()?.report()?.summary())
        });
        root
    }

    /// The gateways of shared media this daemon runs (`sessions`).
    pub fn gateways(&self) -> Vec<crate::proto::GatewayState> {
        let st = self.lock();
        let mut out: Vec<_> = st
            .objects
            .iter()
            .filter_map(|(p, (_, d))| {
                let r = d.backstore.ownership()?.report()?;
                Some(crate::proto::GatewayState::new(p, &r))
            })
            .collect();
        out.sort_by(|a, b| a.storage_object.cmp(&b.storage_object));
        out
    }

    /// Apply `edit` to a copy of the config and make it live and saved.
    pub fn change(&self, edit: impl FnOnce(&mut SaveConfig) -> Result<String>) -> Result<Outcome> {
        let mut st = self.lock();
        // States initiators set with STPG are part of the current config.
        let st_ref = &mut *st;
        crate::alua::sync_states(&mut st_ref.cfg, &st_ref.objects);
        let mut new = st.cfg.clone();
        let message = edit(&mut new)?;
        if new == st.cfg {
            return Ok(Outcome {
                message,
                warnings: Vec::new(),
            });
        }
        let old_warnings: Vec<String> = config::validate(&st.cfg)
            .unwrap_or_default()
            .iter()
            .map(|w| w.to_string())
            .collect();
        let mut warnings: Vec<String> = match config::validate(&new) {
            Ok(w) => w
                .iter()
                .map(|w| w.to_string())
                .filter(|w| !old_warnings.contains(w))
                .collect(),
            Err(errors) => bail!(
                "the change would make the configuration invalid: {}",
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };

        if self.fixed_portals.is_some() && new_portals(&st.cfg, &new) {
            warnings.push(
                "portals are saved but not listened on: the daemon runs with --listen".into(),
            );
        }
        let prepared = reconcile::prepare(
            &st,
            new,
            self.pr_dir.as_deref(),
            self.fixed_portals.as_deref(),
        )?;
        // The saved config is the one that runs (user objects' sizes filled).
        let new = prepared.cfg.clone();
        let (_, flushes) = reconcile::commit(
            &self.server,
            &mut st,
            prepared,
            self.fixed_portals.is_none(),
        )?;
        warnings.extend(flushes);
        let save = if self.prefs().auto_save {
            config::save(&new, &self.config_path).map_err(|e| e.to_string())
        } else {
            Err("auto_save is off (set global auto_save=true), run saveconfig".into())
        };
        if let Err(e) = save {
            warnings.push(format!("the change is live but was NOT saved: {e}"));
        }
        Ok(Outcome { message, warnings })
    }

    /// `resize [SIZE]` of the storage object at tree `path`: grow its
    /// running backstore in place (sessions stay logged in; the device and
    /// its SCSI state are kept, not reopened), queue CAPACITY DATA HAS
    /// CHANGED for every initiator that reaches it, and save the new size.
    pub fn resize(&self, path: &str, size: Option<&str>) -> Result<Outcome> {
        let mut st = self.lock();
        let saved = match crate::ops::locate(&st.cfg, path)? {
            crate::ops::Loc::Object(..) => crate::ops::object_ref(&st.cfg, path)
                .ok_or_else(|| anyhow!("no such storage object: {path}"))?,
            _ => bail!("only a storage object (/backstores/PLUGIN/NAME) can be resized"),
        };
        let (so, dev) = st
            .objects
            .get(&saved)
            .cloned()
            .ok_or_else(|| anyhow!("{path} is not being served"))?;
        let old = dev.backstore.size();
        let new = crate::ops_resize::wanted_size(&so, size, old)?;
        if !dev.backstore.capabilities().resize {
            bail!(crate::ops_resize::cannot(&so));
        }
        dev.resize(new)
            .map_err(|e| anyhow!("cannot resize {path}: {e}"))?;
        let mut cfg = st.cfg.clone();
        let mut recorded = so.clone();
        if let Some(c) = cfg.storage_objects.iter_mut().find(|o| o.path() == saved) {
            crate::ops_resize::record(c, new);
            recorded = c.clone();
        }
        let mut warnings = Vec::new();
        if cfg != st.cfg {
            let save = if self.prefs().auto_save {
                config::save(&cfg, &self.config_path).map_err(|e| e.to_string())
            } else {
                Err("auto_save is off (set global auto_save=true), run saveconfig".into())
            };
            if let Err(e) = save {
                warnings.push(format!("the new size is live but was NOT saved: {e}"));
            }
        }
        st.cfg = cfg;
        if new != old {
            crate::vhost::resized(&st.vhost, &st.cfg, &saved);
        }
        // The same device under the updated object: later changes keep it.
        st.objects.insert(saved.clone(), (recorded, dev));
        let message = if new == old {
            format!("{path} already has {new} bytes.")
        } else {
            format!(
                "Resized {path} from {} to {} ({new} bytes); initiators were told the capacity changed.",
                tree::bytes_to_human(old),
                tree::bytes_to_human(new)
            )
        };
        tracing::info!(object = %saved, old, new, "storage object resized");
        Ok(Outcome { message, warnings })
    }

    /// `saveconfig [file]`: write the current config (atomically, with backups).
    pub fn save(&self, file: Option<&Path>) -> Result<PathBuf> {
        // Under the lock: saves share one temp file name per process.
        let mut st = self.lock();
        let stm = &mut *st;
        crate::alua::sync_states(&mut stm.cfg, &stm.objects);
        let path = file.unwrap_or(&self.config_path).to_path_buf();
        config::save(&st.cfg, &path).map_err(|e| anyhow!(e))?;
        Ok(path)
    }
}

fn new_portals(old: &SaveConfig, new: &SaveConfig) -> bool {
    let list = |c: &SaveConfig| -> Vec<String> {
        c.targets
            .iter()
            .flat_map(|t| &t.tpgs)
            .flat_map(|g| &g.portals)
            .map(tree::portal_name)
            .collect()
    };
    let before = list(old);
    list(new).iter().any(|p| !before.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Args;
    use crate::ops;
    use config::StorageObject;

    fn live(dir: &Path) -> Live {
        Live::new(
            IscsiServer::new(),
            Settings {
                config_path: dir.join("saveconfig.json"),
                fixed_portals: None,
                default_portal: "127.0.0.1:3260".parse().unwrap(),
                prefs: Prefs::default(),
                pr_dir: None,
            },
        )
    }

    fn ctx() -> ops::Ctx {
        ops::Ctx {
            default_portal: "127.0.0.1:3260".parse().unwrap(),
            add_default_portal: true,
            auto_add_mapped_luns: true,
            new_uuid: Box::new(crate::build::random_uuid),
            stat: Box::new(|_| None),
        }
    }

    fn create(l: &Live, path: &str, words: &[&str]) -> Result<Outcome> {
        let args = Args::from_words(words)?;
        l.change(|c| ops::create(c, path, &args, &ctx()))
    }

    #[test]
    fn changes_open_devices_and_are_saved() {
        let dir = tempfile::tempdir().unwrap();
        let l = live(dir.path());
        create(&l, "/backstores/ramdisk", &["r0", "1M"]).unwrap();
        assert_eq!(l.devices().len(), 1);
        assert_eq!(l.devices()[0].backstore.size(), 1 << 20);
        let saved = std::fs::read_to_string(dir.path().join("saveconfig.json")).unwrap();
        assert!(saved.contains("\"r0\""), "{saved}");
        // An unchanged object keeps its device (same Arc).
        let before = l.devices()[0].clone();
        create(&l, "/backstores/ramdisk", &["r1", "1M"]).unwrap();
        assert!(l.devices().iter().any(|d| Arc::ptr_eq(d, &before)));
        l.change(|c| ops::delete(c, "/backstores/ramdisk/r0", &Args::default()))
            .unwrap();
        assert_eq!(l.devices().len(), 1);
        assert!(!l.devices().iter().any(|d| Arc::ptr_eq(d, &before)));
    }

    #[test]
    fn failed_changes_leave_config_and_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let l = live(dir.path());
        let file = dir.path().join("saveconfig.json");
        // An edit that fails validation.
        let e = l
            .change(|c| {
                c.storage_objects.push(StorageObject {
                    plugin: "ramdisk".into(),
                    name: "bad name".into(),
                    size: Some(1 << 20),
                    ..StorageObject::default()
                });
                Ok(String::new())
            })
            .unwrap_err();
        assert!(e.to_string().contains("invalid"), "{e}");
        assert!(!file.exists());
        // A portal whose port is taken fails before anything is applied.
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port().to_string();
        assert_eq!(l.config(), SaveConfig::default());
        let ctx = ops::Ctx {
            default_portal: format!("127.0.0.1:{port}").parse().unwrap(),
            ..ctx()
        };
        let args = Args::from_words(&["iqn.2026-11.org.example:t"]).unwrap();
        let e = l
            .change(|c| ops::create(c, "/iscsi", &args, &ctx))
            .unwrap_err();
        assert!(format!("{e:#}").contains("cannot listen on"), "{e:#}");
        assert!(l.config().targets.is_empty());
        assert!(!file.exists());
    }

    /// ALUA edits reach the running device without reopening it (its
    /// state, e.g. reservations and unit attentions, survives).
    #[test]
    fn alua_changes_keep_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let l = live(dir.path());
        create(&l, "/backstores/ramdisk", &["r0", "1M"]).unwrap();
        let before = l.devices()[0].clone();
        create(&l, "/backstores/ramdisk/r0/alua", &["sb", "2"]).unwrap();
        let kv = [("alua_access_state".to_string(), "2".to_string())];
        l.change(|c| ops::set(c, "/backstores/ramdisk/r0/alua/sb", "alua", &kv))
            .unwrap();
        let after = l.devices()[0].clone();
        assert!(Arc::ptr_eq(&before, &after), "device reopened");
        let g = after.alua_groups();
        assert_eq!(
            (g[1].id, g[1].state),
            (2, target_core::AccessState::Standby)
        );
        let saved = std::fs::read_to_string(dir.path().join("saveconfig.json")).unwrap();
        assert!(saved.contains("\"alua_access_state\": 2"), "{saved}");
    }
}
