//! The live configuration: the saveconfig model is the source of truth and
//! the running objects follow it. Every management change edits a copy of
//! the config, validates it, opens what is new (storage objects), pushes
//! the targets to the fabric (`set_target` / `remove_target`, which also
//! update or log out live sessions), closes deleted portals and binds new
//! ones, sets discovery authentication, then saves the file atomically; only then does the copy become
//! the current config. A change that fails at any step leaves the current
//! config as it was.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, bail, Context, Result};
use config::{SaveConfig, StorageObject};
use iscsi::{IscsiServer, SessionInfo, TargetConfig};
use target_core::Device;

use crate::build;
use crate::prefs::Prefs;
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

/// A portal could not be bound (the change was not applied).
#[derive(Debug)]
pub struct ListenFailed(pub SocketAddr, pub String);

impl std::fmt::Display for ListenFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot listen on {}: {}", self.0, self.1)
    }
}

impl std::error::Error for ListenFailed {}

pub struct Live {
    server: Arc<IscsiServer>,
    config_path: PathBuf,
    /// `serve --listen`: these bound addresses replace every TPG's portals.
    fixed_portals: Option<Vec<SocketAddr>>,
    /// The portal `tpg1` of a new target gets.
    pub default_portal: SocketAddr,
    /// Where APTPL reservation state lives (see `build::build`).
    pr_dir: Option<PathBuf>,
    state: Mutex<State>,
    prefs: Mutex<Prefs>,
}

struct State {
    cfg: SaveConfig,
    objects: HashMap<String, (StorageObject, Arc<Device>)>,
    listening: Vec<SocketAddr>,
}

impl Live {
    pub fn new(
        server: Arc<IscsiServer>,
        settings: Settings,
        cfg: SaveConfig,
        objects: HashMap<String, (StorageObject, Arc<Device>)>,
        listening: Vec<SocketAddr>,
    ) -> Live {
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
            state: Mutex::new(State {
                cfg,
                objects,
                listening,
            }),
            prefs: Mutex::new(prefs),
        }
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
        p.save(&Prefs::path_for(&self.config_path))?;
        *guard = p;
        Ok(msgs.join("\n"))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated:
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

    /// The device serving the storage object at `path`.
    pub fn device(&self, path: &str) -> Option<Arc<Device>> {
        self.lock().objects.get(path).map(|(_, d)| d.clone())
    }

    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.server.sessions()
    }

    pub fn sessions_detail(&self) -> Vec<iscsi::SessionDetail> {
        self.server.sessions_detail()
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
        tree::build(&st.cfg, &|p| sizes.get(p).copied())
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

        // Open new or changed storage objects; keep the unchanged ones.
        let mut objects = HashMap::new();
        for so in new.storage_objects.iter_mut() {
            let path = so.path();
            if let Some((old, dev)) = st.objects.get(&path) {
                // ALUA groups change on the running device (alua::apply),
                // not by reopening it.
                let same = StorageObject {
                    alua_tpgs: so.alua_tpgs.clone(),
                    ..old.clone()
                } == *so;
                if same {
                    objects.insert(path, (so.clone(), dev.clone()));
                    continue;
                }
            }
            if let Some(dev) = build::open_device(so, self.pr_dir.as_deref())
                .with_context(|| format!("storage object {path}"))?
            {
                // rtslib needs the size of user objects to restore them;
                // an existing image given without one has it in its header.
                if so.plugin == "user" && so.size.is_none() {
                    so.size = Some(dev.backstore.size());
                }
                objects.insert(path, (so.clone(), dev));
            }
        }
        let by_path: HashMap<String, Arc<Device>> = objects
            .iter()
            .map(|(p, (_, d))| (p.clone(), d.clone()))
            .collect();

        let mut targets = Vec::new();
        let mut wanted = Vec::new();
        for t in new.targets.iter().filter(|t| t.fabric == "iscsi") {
            let mut tpgs = Vec::new();
            for (i, tpg) in t.tpgs.iter().enumerate() {
                let tag = tpg.tag.unwrap_or(i as u16 + 1);
                let mut tc = build::tpg_config(tpg, tag, &by_path)
                    .with_context(|| format!("target {} tpg{tag}", t.wwn))?;
                tc.relative_port_id = build::relative_port_id(&new, &t.wwn, tag);
                if tc.enable {
                    match &self.fixed_portals {
                        Some(fixed) => tc.portals = fixed.clone(),
                        None => wanted.extend(tc.portals.iter().copied()),
                    }
                }
                tpgs.push(tc);
            }
            targets.push(TargetConfig {
                iqn: t.wwn.clone(),
                tpgs,
            });
        }

        // Portals first: a portal that cannot be bound fails the change
        // before any target is touched. Deleted portals close before new
        // ones bind (a specific address may replace a wildcard on the same
        // port), and reopen if a bind fails.
        let mut listening = st.listening.clone();
        if self.fixed_portals.is_none() {
            let wanted_set = build::listen_set(&wanted);
            let closed: Vec<SocketAddr> = listening
                .iter()
                .filter(|a| !wanted_set.contains(a))
                .copied()
                .collect();
            for addr in &closed {
                if self.server.stop_listening(*addr) {
                    tracing::info!(portal = %addr, "portal deleted: no longer listening");
                }
            }
            listening.retain(|a| !closed.contains(a));
            for addr in &wanted_set {
                if !listening.contains(addr) {
                    match self.server.listen(*addr) {
                        Ok(bound) => {
                            tracing::info!(portal = %bound, "listening");
                            listening.push(*addr);
                        }
                        Err(e) => {
                            for a in listening.iter().filter(|a| !st.listening.contains(a)) {
                                self.server.stop_listening(*a);
                            }
                            for a in &closed {
                                if let Err(e) = self.server.listen(*a) {
                                    tracing::error!(portal = %a, error = %e, "cannot reopen a portal");
                                }
                            }
                            return Err(anyhow::Error::new(ListenFailed(*addr, e.to_string())));
                        }
                    }
                }
            }
        } else if new_portals(&st.cfg, &new) {
            warnings.push(
                "portals are saved but not listened on: the daemon runs with --listen".into(),
            );
        }

        for t in &targets {
            self.server.set_target(t.clone());
        }
        for t in st.cfg.targets.iter().filter(|t| t.fabric == "iscsi") {
            if !targets.iter().any(|n| n.iqn == t.wwn) {
                self.server.remove_target(&t.wwn);
            }
        }
        self.server.set_discovery_auth(build::discovery_auth(&new));
        crate::alua::apply(&new, &objects);

        for (path, (_, dev)) in &st.objects {
            if !objects.contains_key(path) {
                if let Err(e) = dev.backstore.flush() {
                    warnings.push(format!("flushing {path} failed: {e}"));
                }
            }
        }
        let save = if self.prefs().auto_save {
            config::save(&new, &self.config_path).map_err(|e| e.to_string())
        } else {
            Err("auto_save is off (set global auto_save=true), run saveconfig".into())
        };
        st.cfg = new;
        st.objects = objects;
        st.listening = listening;
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
            SaveConfig::default(),
            HashMap::new(),
            Vec::new(),
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
