//! The loopback fabric's verbs: `/loopback create [wwn] [mode]` (LUNs are
//! created with the common `tpg1/luns create`, deleted with the common
//! `delete`).

use anyhow::{bail, Result};
use config::{fabric, SaveConfig};
use serde_json::Map;

use crate::args::Args;
use crate::ops::Ctx;

/// `/loopback create [wwn]`: a target (`naa.` + 16 hex digits, generated
/// when omitted) with `tpg1`, whose nexus is derived from the WWN; each
/// LUN created in `tpg1/luns` becomes a ublk disk (/dev/ublkbN), or with
/// `mode=scsi` a SCSI disk of the local iSCSI initiator (/dev/sdX).
pub(crate) fn create_target(cfg: &mut SaveConfig, args: &Args, ctx: &Ctx) -> Result<String> {
    let b = args.bind("create", &["wwn", "mode"], 0)?;
    let mut extra = Map::new();
    if let Some(m) = b.get("mode") {
        let m = serde_json::Value::from(m);
        if let Some(e) = config::loopback::check_key(config::loopback::MODE_KEY, &m) {
            bail!(e);
        }
        // ublk is the default: saved only when not.
        if m != "ublk" {
            extra.insert(config::loopback::MODE_KEY.into(), m);
        }
    }
    let wwn = crate::ops_naa::new_wwn(cfg, b.get("wwn"), ctx, "loopback")?;
    let nexus = config::loopback::nexus_of(&wwn, 1);
    Ok(crate::ops_naa::add_target(
        cfg,
        fabric::LOOPBACK,
        wwn,
        extra,
        &nexus,
    ))
}

#[cfg(test)]
mod tests {
    use crate::args::Args;
    use crate::ops::tests::run;
    use crate::ops::{delete, set};
    use config::SaveConfig;

    /// targetcli's loopback walkthrough: `/loopback create` (WWN
    /// generated), `tpg1/luns create`, ublk queue attributes; saved as
    /// rtslib writes the loopback fabric; `ls` shows each LUN's disk.
    #[test]
    fn loopback_walkthrough() {
        let mut cfg = SaveConfig::default();
        run(&mut cfg, "/backstores/ramdisk", &["r0", "1M"]).unwrap();
        let msg = run(&mut cfg, "/loopback", &[]).unwrap();
        let wwn = cfg.targets[0].wwn.clone();
        assert!(config::loopback::valid_wwn(&wwn), "{wwn}");
        assert!(msg.contains("nexus naa.5001405"), "{msg}");
        let tpg = format!("/loopback/{wwn}/tpg1");
        run(
            &mut cfg,
            &format!("{tpg}/luns"),
            &["/backstores/ramdisk/r0"],
        )
        .unwrap();
        assert!(run(&mut cfg, &format!("/loopback/{wwn}"), &[])
            .unwrap_err()
            .to_string()
            .contains("one TPG"));
        assert!(run(&mut cfg, "/loopback", &[&wwn]).is_err(), "exists");
        assert!(run(&mut cfg, "/loopback", &["naa.12"]).is_err());
        let t = format!("/loopback/{wwn}");
        let kv = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(set(&mut cfg, &t, "attribute", &kv("ublk_queues", "0")).is_err());
        assert!(set(&mut cfg, &t, "attribute", &kv("socket", "/tmp/x")).is_err());
        set(&mut cfg, &t, "attribute", &kv("ublk_queues", "2")).unwrap();
        assert_eq!(config::loopback::queues_of(&cfg.targets[0]), (2, 128));
        assert!(config::validate(&cfg).unwrap().is_empty());
        let saved = serde_json::to_value(&cfg).unwrap();
        assert_eq!(saved["targets"][0]["fabric"], "loopback");
        assert_eq!(saved["targets"][0]["wwn"], wwn.as_str());
        assert_eq!(saved["targets"][0]["tpgs"][0]["tag"], 1);
        assert_eq!(
            saved["targets"][0]["tpgs"][0]["luns"][0]["storage_object"],
            "/backstores/ramdisk/r0"
        );
        let live = crate::tree::Live {
            guest_of: &|_| None,
            disk_of: &|w, lun| (w == wwn && lun == 0).then(|| "/dev/ublkb0".to_string()),
        };
        let tree = crate::tree::build_with(&cfg, &|_| None, &live);
        let node = tree.find(&tpg).unwrap();
        assert_eq!(node.children.len(), 1, "luns only");
        assert!(
            node.summary.contains("ublk queues 2x128"),
            "{}",
            node.summary
        );
        let lun = tree.find(&format!("{tpg}/luns/lun0")).unwrap();
        assert!(lun.summary.ends_with("(/dev/ublkb0)"), "{}", lun.summary);
        delete(&mut cfg, "/loopback", &Args::from_words(&[&wwn]).unwrap()).unwrap();
        assert!(cfg.targets.is_empty());
    }

    /// `mode=scsi` at create or as an attribute: saved as the target's
    /// `mode` key (ublk, the default, is not saved); `ls` says the mode;
    /// anything else is refused with the choices.
    #[test]
    fn loopback_scsi_mode() {
        let mut cfg = SaveConfig::default();
        let w = "naa.5001405c0ffee0b1";
        assert!(run(&mut cfg, "/loopback", &[w, "mode=fc"])
            .unwrap_err()
            .to_string()
            .contains("ublk, scsi"));
        run(&mut cfg, "/loopback", &[w, "mode=scsi"]).unwrap();
        assert!(config::loopback::scsi_mode(&cfg.targets[0]));
        assert!(config::validate(&cfg).unwrap().is_empty());
        let t = format!("/loopback/{w}");
        let kv = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(set(&mut cfg, &t, "attribute", &kv("mode", "nvme")).is_err());
        set(&mut cfg, &t, "attribute", &kv("mode", "ublk")).unwrap();
        assert!(!config::loopback::scsi_mode(&cfg.targets[0]));
        set(&mut cfg, &t, "attribute", &kv("mode", "scsi")).unwrap();
        let saved = serde_json::to_value(&cfg).unwrap();
        assert_eq!(saved["targets"][0]["mode"], "scsi");
        let live = crate::tree::Live {
            guest_of: &|_| None,
            disk_of: &|_, _| Some("/dev/sdb /dev/sg1".to_string()),
        };
        let tree = crate::tree::build_with(&cfg, &|_| None, &live);
        let node = tree.find(&format!("{t}/tpg1")).unwrap();
        assert!(node.summary.contains("mode scsi"), "{}", node.summary);
        run(
            &mut cfg,
            "/loopback",
            &["naa.5001405c0ffee0b2", "mode=ublk"],
        )
        .unwrap();
        assert!(!cfg.targets[1].extra.contains_key("mode"));
    }
}
