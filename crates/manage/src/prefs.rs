//! targetcli's global preferences (`set global NAME=VALUE`) that change how
//! the management verbs behave: whether `/iscsi create` adds the default
//! portal, whether new LUNs and ACLs get mapped LUNs, and whether each
//! change is saved at once. They are not part of saveconfig.json (targetcli
//! keeps them apart too); they live in `rtarget-prefs.json` next to it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::args::parse_bool;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Prefs {
    pub auto_add_default_portal: bool,
    pub auto_add_mapped_luns: bool,
    /// Save the configuration after every change (else only on `saveconfig`).
    pub auto_save: bool,
    /// Where the Prometheus endpoint listens (`ADDR:PORT`); empty: off.
    /// `serve --metrics` overrides it at start-up.
    pub metrics: String,
}

impl Default for Prefs {
    fn default() -> Prefs {
        Prefs {
            auto_add_default_portal: true,
            auto_add_mapped_luns: true,
            auto_save: true,
            metrics: String::new(),
        }
    }
}

pub const NAMES: &[&str] = &[
    "auto_add_default_portal",
    "auto_add_mapped_luns",
    "auto_save",
    "metrics",
];

impl Prefs {
    /// Where the preferences of the config at `config` live.
    pub fn path_for(config: &Path) -> PathBuf {
        config.with_file_name("rtarget-prefs.json")
    }

    /// Missing file: defaults. A broken one is reported, not guessed at.
    pub fn load(path: &Path) -> Result<Prefs> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("bad preferences file {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Prefs::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Write atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let text = serde_json::to_string_pretty(self)? + "\n";
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        if name == "metrics" {
            self.metrics = match value.trim() {
                "" | "off" | "none" => String::new(),
                a => a
                    .parse::<std::net::SocketAddr>()
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "metrics: {a:?} is not ADDR:PORT or off (e.g. set global metrics=127.0.0.1:9550)"
                        )
                    })?
                    .to_string(),
            };
            return Ok(());
        }
        let v = parse_bool(name, value)?;
        match name {
            "auto_add_default_portal" => self.auto_add_default_portal = v,
            "auto_add_mapped_luns" => self.auto_add_mapped_luns = v,
            "auto_save" => self.auto_save = v,
            _ => bail!("unknown global {name:?}; known: {}", NAMES.join(", ")),
        }
        Ok(())
    }

    pub fn get(&self, names: &[String]) -> Result<Map<String, Value>> {
        let all = match serde_json::to_value(self)? {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        if names.is_empty() {
            return Ok(all);
        }
        names
            .iter()
            .map(|n| match all.get(n) {
                Some(v) => Ok((n.clone(), v.clone())),
                None => bail!("unknown global {n:?}; known: {}", NAMES.join(", ")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_save_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = Prefs::path_for(&dir.path().join("saveconfig.json"));
        assert_eq!(Prefs::load(&path).unwrap(), Prefs::default());
        let mut p = Prefs::default();
        p.set("auto_save", "false").unwrap();
        assert!(p
            .set("auto_sav", "1")
            .unwrap_err()
            .to_string()
            .contains("unknown global"));
        assert!(p.set("auto_save", "perhaps").is_err());
        p.save(&path).unwrap();
        let back = Prefs::load(&path).unwrap();
        assert!(!back.auto_save && back.auto_add_mapped_luns);
        let got = back.get(&["auto_save".into()]).unwrap();
        assert_eq!(got["auto_save"], Value::Bool(false));
        assert_eq!(back.get(&[]).unwrap().len(), NAMES.len());
        p.set("metrics", "127.0.0.1:9550").unwrap();
        assert_eq!(p.metrics, "127.0.0.1:9550");
        assert!(p
            .set("metrics", "9550")
            .unwrap_err()
            .to_string()
            .contains("e.g."));
        p.set("metrics", "off").unwrap();
        assert_eq!(p.metrics, "");
        // A file from before the setting existed still loads.
        std::fs::write(&path, r#"{"auto_save": false}"#).unwrap();
        assert_eq!(Prefs::load(&path).unwrap().metrics, "");
        std::fs::write(&path, "{").unwrap();
        assert!(Prefs::load(&path).is_err());
    }
}
