//! The demo target created when no config file exists: one sparse 1 GiB
//! fileio LUN behind `iqn.2026-11.org.rtarget:demo`, open to every initiator
//! on 127.0.0.1:3260, plus the instructions to reach it.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Result;
use config::{Lun, Portal, SaveConfig, StorageObject, Target, Tpg};
use serde_json::{json, Map, Value};

pub const DEMO_IQN: &str = "iqn.2026-11.org.rtarget:demo";
pub const DEMO_OBJECT: &str = "demo0";
pub const DEMO_SIZE: u64 = 1 << 30;

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The demo config; its backing file is `<state_dir>/demo0.img`.
pub fn config(state_dir: &Path) -> Result<SaveConfig> {
    let image = state_dir.join(format!("{DEMO_OBJECT}.img"));
    let so = StorageObject {
        plugin: "fileio".into(),
        name: DEMO_OBJECT.into(),
        dev: Some(image.to_string_lossy().into_owned()),
        size: Some(DEMO_SIZE),
        write_back: Some(true),
        wwn: Some(crate::build::random_uuid()?),
        aio: Some(false),
        attributes: map(json!({
            "block_size": 512,
            "emulate_write_cache": 1,
            "emulate_tpu": 1,
            "emulate_tpws": 1
        })),
        ..StorageObject::default()
    };
    let tpg = Tpg {
        tag: Some(1),
        enable: Some(true),
        attributes: map(json!({
            "authentication": 0,
            "cache_dynamic_acls": 1,
            "demo_mode_write_protect": 0,
            "generate_node_acls": 1
        })),
        luns: vec![Lun {
            index: 0,
            storage_object: so.path(),
            ..Lun::default()
        }],
        portals: vec![Portal {
            ip_address: "127.0.0.1".into(),
            port: 3260,
            iser: Some(false),
            offload: Some(false),
            ..Portal::default()
        }],
        ..Tpg::default()
    };
    Ok(SaveConfig {
        storage_objects: vec![so],
        targets: vec![Target {
            fabric: config::fabric::ISCSI.into(),
            wwn: DEMO_IQN.into(),
            tpgs: vec![tpg],
            ..Target::default()
        }],
        ..SaveConfig::default()
    })
}

/// How to reach the demo target at `addr` with the usual initiators.
pub fn instructions(addr: SocketAddr, config_path: &Path, image: &Path) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    let host = if addr.port() == 3260 {
        ip
    } else {
        format!("{ip}:{}", addr.port())
    };
    format!(
        "\
rtarget: no config file was found, so a demo target was created and saved to {config}
  target  {DEMO_IQN}
  LUN 0   {image} (1 GiB, sparse)
Connect with:
  libiscsi  iscsi-ls -s iscsi://{host}
  QEMU      qemu-img info iscsi://{host}/{DEMO_IQN}/0
            qemu-system-x86_64 ... -drive file=iscsi://{host}/{DEMO_IQN}/0,format=raw,if=virtio
  open-iscsi
            iscsiadm -m discovery -t st -p {host}
            iscsiadm -m node -T {DEMO_IQN} -p {host} --login
",
        config = config_path.display(),
        image = image.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid_and_as_specified() {
        let cfg = config(Path::new("/var/lib/rtarget")).unwrap();
        assert_eq!(config::validate(&cfg), Ok(vec![]));
        let so = &cfg.storage_objects[0];
        assert_eq!(so.dev.as_deref(), Some("/var/lib/rtarget/demo0.img"));
        assert_eq!(so.size, Some(1 << 30));
        let tpg = &cfg.targets[0].tpgs[0];
        assert_eq!(cfg.targets[0].wwn, "iqn.2026-11.org.rtarget:demo");
        assert_eq!(tpg.attributes["generate_node_acls"], 1);
        assert_eq!(tpg.attributes["authentication"], 0);
        assert_eq!(tpg.attributes["demo_mode_write_protect"], 0);
        assert_eq!(tpg.luns[0].storage_object, "/backstores/fileio/demo0");
        assert_eq!(
            (tpg.portals[0].ip_address.as_str(), tpg.portals[0].port),
            ("127.0.0.1", 3260)
        );
    }

    #[test]
    fn instructions_use_the_bound_address() {
        let t = instructions(
            "127.0.0.1:3260".parse().unwrap(),
            Path::new("/c"),
            Path::new("/i"),
        );
        assert!(t.contains("iscsi-ls -s iscsi://127.0.0.1\n"));
        assert!(t.contains("qemu-img info iscsi://127.0.0.1/iqn.2026-11.org.rtarget:demo/0"));
        assert!(t.contains("iscsiadm -m discovery -t st -p 127.0.0.1\n"));
        let t = instructions(
            "[::1]:13400".parse().unwrap(),
            Path::new("/c"),
            Path::new("/i"),
        );
        assert!(t.contains("iscsi-ls -s iscsi://[::1]:13400"));
    }
}
