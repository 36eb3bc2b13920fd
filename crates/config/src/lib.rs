//! Configuration in rtslib-fb's saveconfig.json schema: the data model
//! ([`model`]), validation with located errors and warnings ([`validate`]),
//! and atomic load/save with rotated backups ([`store`]).

use std::fmt;
use std::io;
use std::path::PathBuf;

pub mod alua;
mod logins;
pub mod loopback;
pub mod model;
pub mod naa;
pub mod settings;
pub mod store;
pub mod validate;
pub mod vhost;

pub use alua::{AluaTpg, DEFAULT_TG_PT_GP};
pub use model::{
    attr_bool, attr_u64, fabric, value_string, FabricModule, Lun, MappedLun, NodeAcl, Portal,
    SaveConfig, StorageObject, Target, Tpg,
};
pub use settings::{AclAttributes, IoEngineChoice, ObjectAttributes, TpgAttributes};
pub use store::{load, parse_str, save, to_json, MAX_BACKUPS};
pub use validate::{parse_ip, set_user_handlers, validate, Issue};

/// Why a configuration could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The io::Error is part of the message (not a `source()`), so callers
    /// printing error chains do not repeat it.
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    /// Bad JSON or a value of the wrong type, with its position (1-based).
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: invalid configuration:\n{}", path.display(), IssueList(issues))]
    Invalid { path: PathBuf, issues: Vec<Issue> },
}

struct IssueList<'a>(&'a [Issue]);

impl fmt::Display for IssueList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {issue}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A file in exactly the shape targetcli/rtslib-fb writes (`json.dump(...,
    /// sort_keys=True, indent=2)` of `RTSRoot.dump()`).
    const SAMPLE: &str = include_str!("../tests/data/targetcli-sample.json");

    #[test]
    fn targetcli_sample_loads_and_round_trips_byte_for_byte() {
        let cfg = parse_str(SAMPLE, Path::new("sample.json")).unwrap();
        assert_eq!(cfg.storage_objects.len(), 5);
        let disk0 = &cfg.storage_objects[0];
        assert_eq!(disk0.plugin, "fileio");
        assert_eq!(disk0.dev.as_deref(), Some("/var/lib/iscsi-disks/disk0.img"));
        assert_eq!(disk0.size, Some(10_737_418_240));
        assert_eq!(disk0.write_back, Some(true));
        assert_eq!(disk0.block_size(), Ok(512));
        assert_eq!(cfg.storage_objects[1].block_size(), Ok(4096));
        assert_eq!(
            attr_bool(&cfg.storage_objects[1].attributes, "emulate_tpu"),
            Ok(Some(true))
        );
        assert_eq!(cfg.storage_objects[3].nullio, Some(true));
        assert_eq!(cfg.storage_objects[4].exclusive, Some(true));
        let t = &cfg.targets[0];
        assert_eq!(t.fabric, "iscsi");
        let tpg = &t.tpgs[0];
        assert_eq!(tpg.tag, Some(1));
        assert!(tpg.enabled());
        assert!(!cfg.targets[1].tpgs[0].enabled());
        assert_eq!(tpg.luns[2].storage_object_ref(), Some(("fileio", "thin4k")));
        assert_eq!(tpg.portals[0].port, 3260);
        assert_eq!(value_string(&tpg.parameters["MaxBurstLength"]), "262144");
        assert_eq!(tpg.node_acls[0].mapped_luns[1].tpg_lun, 2);
        assert!(tpg.node_acls[0].mapped_luns[1].write_protect);
        // Nothing dropped, nothing reordered: same bytes back.
        assert_eq!(to_json(&cfg), SAMPLE);
    }

    #[test]
    fn targetcli_sample_validates_with_warnings_for_unsupported_parts() {
        let cfg = parse_str(SAMPLE, Path::new("sample.json")).unwrap();
        let warnings: Vec<String> = validate(&cfg)
            .unwrap()
            .iter()
            .map(|w| w.to_string())
            .collect();
        // ACLs and their CHAP credentials are served: nothing to report.
        assert!(
            !warnings
                .iter()
                .any(|w| w.contains("ACL") || w.contains("CHAP")),
            "{warnings:#?}"
        );
        assert!(
            !warnings
                .iter()
                .any(|w| w.contains("unknown key \"exclusive\"")),
            "{warnings:#?}"
        );
        // rtslib's always-present keys are not reported.
        assert!(
            !warnings.iter().any(|w| w.contains("alua")),
            "{warnings:#?}"
        );
        assert!(
            !warnings.iter().any(|w| w.contains("discovery")),
            "{warnings:#?}"
        );
    }

    #[test]
    fn invalid_error_lists_every_issue() {
        let e = ConfigError::Invalid {
            path: "/etc/x.json".into(),
            issues: vec![
                Issue {
                    location: "a".into(),
                    message: "one".into(),
                },
                Issue {
                    location: "b".into(),
                    message: "two".into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "/etc/x.json: invalid configuration:\n  - a: one\n  - b: two"
        );
    }
}
