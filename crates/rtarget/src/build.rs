//! Builders of runtime objects from a validated saveconfig: the iSCSI
//! fabric's view of a TPG and its ACLs (LUN tables over target-core
//! `Device`s; TPG and ACL attributes and TPG parameters read once, typed,
//! through `config::settings`) and discovery authentication. Storage
//! objects are opened by [`crate::build_device`]; what to build when is
//! decided by [`crate::reconcile`]. Objects of other plugins and targets of
//! other fabrics were reported as warnings by validation and are skipped.
//! A storage object that cannot be opened is an error: serving a target
//! with a LUN silently missing is worse than not starting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use config::{parse_ip, value_string, SaveConfig, Tpg};
use iscsi::{AclConfig, ChapCredentials, TpgConfig};
use target_core::{Device, Lun, LunTable};

pub use crate::build_device::open_device;

/// rtslib's `discovery_enable_auth` with `discovery_userid`, ... of the
/// iscsi fabric module. Enabled without complete credentials still
/// requires CHAP (the fabric then refuses every discovery login), as LIO's
/// enforce_discovery_auth does.
pub fn discovery_auth(cfg: &SaveConfig) -> Option<ChapCredentials> {
    let m = cfg
        .fabric_modules
        .iter()
        .find(|m| m.name == config::fabric::ISCSI)?;
    let enabled = m
        .extra
        .get("discovery_enable_auth")
        .map(value_string)
        .is_some_and(|v| matches!(v.trim(), "1" | "true" | "True"));
    if !enabled {
        return None;
    }
    let get = |k: &str| m.extra.get(k).map(value_string).filter(|v| !v.is_empty());
    let (mu, mp) = match (
        get("discovery_mutual_userid"),
        get("discovery_mutual_password"),
    ) {
        (Some(u), Some(p)) => (Some(u), Some(p)),
        _ => (None, None),
    };
    Some(ChapCredentials {
        userid: get("discovery_userid").unwrap_or_default(),
        password: get("discovery_password").unwrap_or_default(),
        mutual_userid: mu,
        mutual_password: mp,
    })
}

/// The fabric's view of one TPG; its `relative_port_id` is the tag until
/// the caller sets it with [`manage::relative_port_id`].
pub fn tpg_config(
    tpg: &Tpg,
    tag: u16,
    devices: &HashMap<String, Arc<Device>>,
) -> Result<TpgConfig> {
    // The one typed reading of the attributes (validation refused what it
    // refuses; a file that skipped it still cannot be served two ways).
    let attributes = config::TpgAttributes::parse(&tpg.attributes, !tpg.node_acls.is_empty())
        .map_err(|e| anyhow!(e.join("; ")))?;
    // The TPG's own LUN table serves demo-mode (generated) sessions only,
    // so demo_mode_write_protect decides whether those mappings are
    // read-only; ACL sessions get their mapped LUNs' write_protect.
    let luns = tpg_luns(tpg, devices, attributes.demo_mode_write_protect);
    let mut portals = Vec::new();
    for p in &tpg.portals {
        let ip = parse_ip(&p.ip_address)
            .ok_or_else(|| anyhow!("invalid portal address {:?}", p.ip_address))?;
        portals.push(SocketAddr::new(ip, p.port));
    }
    // The TPG parameters, parsed once into the negotiation offer.
    let params: Vec<(&str, String)> = tpg
        .parameters
        .iter()
        .map(|(k, v)| (k.as_str(), value_string(v)))
        .collect();
    let offer =
        iscsi::tpg_offer(params.iter().map(|(k, v)| (*k, v.as_str()))).map_err(|e| anyhow!(e))?;
    let acls = tpg
        .node_acls
        .iter()
        .map(|acl| acl_config(acl, &luns).with_context(|| format!("node ACL {}", acl.node_wwn)))
        .collect::<Result<_>>()?;
    Ok(TpgConfig {
        tag,
        relative_port_id: tag,
        enable: tpg.enabled(),
        portals,
        luns: Arc::new(LunTable { luns }),
        acls,
        attributes,
        // rtslib saves TPG credentials as `chap_<name>`.
        chap: chap_from(&tpg.extra),
        offer,
    })
}

/// The LUNs of `tpg` over `devices` in id order (every fabric's TPG LUN
/// table). Validation already reported LUNs of unsupported objects: they
/// are left out.
pub fn tpg_luns(
    tpg: &Tpg,
    devices: &HashMap<String, Arc<Device>>,
    write_protect: bool,
) -> Vec<Lun> {
    let mut luns: Vec<Lun> = tpg
        .luns
        .iter()
        .filter_map(|l| {
            devices.get(&l.storage_object).map(|d| Lun {
                id: l.index,
                device: d.clone(),
                write_protect,
            })
        })
        .collect();
    luns.sort_by_key(|l| l.id);
    luns
}

/// One node ACL: its mapped LUNs point at the TPG's LUNs (mappings of
/// LUNs that are not served were reported by validation and are skipped).
fn acl_config(acl: &config::NodeAcl, tpg_luns: &[Lun]) -> Result<AclConfig> {
    let mut luns: Vec<Lun> = acl
        .mapped_luns
        .iter()
        .filter_map(|m| {
            let l = tpg_luns.iter().find(|l| l.id == m.tpg_lun)?;
            Some(Lun {
                id: m.index,
                device: l.device.clone(),
                write_protect: m.write_protect,
            })
        })
        .collect();
    luns.sort_by_key(|l| l.id);
    Ok(AclConfig {
        initiator: acl.node_wwn.clone(),
        luns: Arc::new(LunTable { luns }),
        chap: chap_from(&acl.extra),
        attributes: config::AclAttributes::parse(&acl.attributes)
            .map_err(|e| anyhow!(e.join("; ")))?,
    })
}

/// rtslib's `chap_userid`/`chap_password`/`chap_mutual_*` keys; both of a
/// pair or nothing.
pub fn chap_from(m: &serde_json::Map<String, serde_json::Value>) -> Option<ChapCredentials> {
    let get = |k: &str| m.get(k).map(value_string).filter(|v| !v.is_empty());
    let (mu, mp) = match (get("chap_mutual_userid"), get("chap_mutual_password")) {
        (Some(u), Some(p)) => (Some(u), Some(p)),
        _ => (None, None),
    };
    Some(ChapCredentials {
        userid: get("chap_userid")?,
        password: get("chap_password")?,
        mutual_userid: mu,
        mutual_password: mp,
    })
}

/// A UUID-shaped serial derived from the object's path, so an object saved
/// without `wwn` keeps the same identity across restarts (initiators key
/// multipath and persistent names on it).
pub fn stable_uuid(seed: &str) -> String {
    let h = |basis: u64| {
        seed.bytes().fold(basis, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let (a, b) = (h(0xcbf2_9ce4_8422_2325), h(0x8422_2325_cbf2_9ce4));
    format_uuid(a, b)
}

/// A random (version 4) UUID from the kernel's generator.
pub fn random_uuid() -> Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    let a = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
    let b = u64::from_be_bytes(bytes[8..].try_into().expect("8 bytes"));
    Ok(format_uuid(a, b))
}

fn format_uuid(a: u64, b: u64) -> String {
    // Set version 4 and the RFC 4122 variant so it parses as a UUID anywhere.
    let a = (a & !0xF000) | 0x4000;
    let b = (b & !(0xC << 60)) | (0x8 << 60);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFFF,
        b >> 48,
        b & 0xFFFF_FFFF_FFFF
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use config::StorageObject;
    use serde_json::json;
    use std::path::Path;

    /// Start-up: a reconcile from the empty running state.
    fn build(cfg: &SaveConfig, pr_dir: Option<&Path>) -> Result<crate::reconcile::Prepared> {
        crate::reconcile::prepare(&Default::default(), cfg.clone(), pr_dir, None)
    }

    #[test]
    fn uuids_are_well_formed_and_stable() {
        let u = stable_uuid("/backstores/fileio/a");
        assert_eq!(u, stable_uuid("/backstores/fileio/a"));
        assert_ne!(u, stable_uuid("/backstores/fileio/b"));
        let r = random_uuid().unwrap();
        for s in [&u, &r] {
            let parts: Vec<&str> = s.split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{s}"
            );
            assert!(parts[2].starts_with('4'), "{s}");
            assert!("89ab".contains(&parts[3][..1]), "{s}");
        }
    }

    #[test]
    fn builds_devices_luns_and_portals() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("d.img");
        let cfg: SaveConfig = serde_json::from_value(json!({
            "storage_objects": [
                {"plugin": "fileio", "name": "d", "dev": img, "size": 1048576, "write_back": true,
                 "attributes": {"block_size": 4096, "emulate_tpu": 1}},
                {"plugin": "ramdisk", "name": "r", "size": 65536, "wwn": "w"},
                {"plugin": "ramdisk", "name": "n", "size": 65536, "nullio": true},
                {"plugin": "pscsi", "name": "p", "dev": "/dev/sg9"}
            ],
            "targets": [
                {"fabric": "iscsi", "wwn": "iqn.2026-11.x:a", "tpgs": [
                    {"tag": 1, "attributes": {"demo_mode_write_protect": 1},
                     "parameters": {"ImmediateData": "No"},
                     "luns": [{"index": 3, "storage_object": "/backstores/ramdisk/r"},
                              {"index": 0, "storage_object": "/backstores/fileio/d"},
                              {"index": 5, "storage_object": "/backstores/pscsi/p"}],
                     "portals": [{"ip_address": "127.0.0.1", "port": 3260}, {"ip_address": "[::1]", "port": 3260}]},
                    {"tag": 2, "enable": false, "luns": [], "portals": [{"ip_address": "127.0.0.2", "port": 3260}]}
                ]},
                {"fabric": "loopback", "wwn": "naa.5001405000000abc", "tpgs": []}
            ]
        }))
        .unwrap();
        let rt = build(&cfg, None).unwrap();
        assert_eq!(rt.opened.len(), 3);
        let d = &rt.opened[0];
        assert_eq!(d.options.block_size, 4096);
        assert!(d.options.thin_provisioning);
        assert!(d.options.write_cache);
        assert_eq!(d.num_blocks(), 256);
        assert_eq!(d.options.wwn, stable_uuid("/backstores/fileio/d"));
        assert_eq!(rt.opened[1].options.wwn, "w");
        assert!(!rt.opened[1].options.write_cache);
        assert_eq!(rt.opened[2].options.product, "NULLIO");
        assert_eq!(rt.targets.len(), 1);
        let tpg = &rt.targets[0].tpgs[0];
        let ids: Vec<u64> = tpg.luns.luns.iter().map(|l| l.id).collect();
        assert_eq!(ids, [0, 3]);
        assert!(tpg.luns.luns.iter().all(|l| l.write_protect));
        assert!(!tpg.offer.immediate_data);
        assert!(tpg.attributes.demo_mode_write_protect);
        assert!(!rt.targets[0].tpgs[1].enable);
        // Only enabled TPGs' portals are listened on.
        assert_eq!(
            rt.plan.listen,
            [
                "127.0.0.1:3260".parse().unwrap(),
                "[::1]:3260".parse().unwrap()
            ]
        );
    }

    #[test]
    fn acls_mapped_luns_credentials_and_discovery_auth() {
        let cfg: SaveConfig = serde_json::from_value(json!({
            "fabric_modules": [{"name": "iscsi", "discovery_enable_auth": true,
                "discovery_userid": "du", "discovery_password": "dpassword123",
                "discovery_mutual_userid": "", "discovery_mutual_password": ""}],
            "storage_objects": [{"plugin": "ramdisk", "name": "r", "size": 65536}],
            "targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.x:a", "tpgs": [
                {"tag": 1, "attributes": {"demo_mode_write_protect": 1},
                 "luns": [{"index": 2, "storage_object": "/backstores/ramdisk/r"}],
                 "node_acls": [
                    {"node_wwn": "iqn.2026-11.x:h1", "chap_userid": "u", "chap_password": "p12345678901",
                     "mapped_luns": [{"index": 7, "tpg_lun": 2, "write_protect": true}]},
                    {"node_wwn": "iqn.2026-11.x:h2", "attributes": {"authentication": 1},
                     "mapped_luns": [{"index": 0, "tpg_lun": 2, "write_protect": false}]}
                 ]},
                {"tag": 2, "luns": []}
            ]}]
        }))
        .unwrap();
        let rt = build(&cfg, None).unwrap();
        let d = rt.discovery_auth.unwrap();
        assert_eq!((d.userid.as_str(), d.mutual_userid), ("du", None));
        let tpg = &rt.targets[0].tpgs[0];
        // ACLs listed, no generate_node_acls: LIO's default (0).
        assert!(!tpg.attributes.generate_node_acls);
        // No ACLs and no attribute: served in demo mode as before.
        assert!(rt.targets[0].tpgs[1].attributes.generate_node_acls);
        let (h1, h2) = (&tpg.acls[0], &tpg.acls[1]);
        assert_eq!(h1.initiator, "iqn.2026-11.x:h1");
        let l = &h1.luns.luns[0];
        assert_eq!((l.id, l.write_protect), (7, true));
        assert!(Arc::ptr_eq(&l.device, &tpg.luns.luns[0].device));
        assert_eq!(h1.chap.as_ref().unwrap().userid, "u");
        assert_eq!(h1.attributes.authentication, None);
        // demo_mode_write_protect does not reach ACL mappings.
        assert!(!h2.luns.luns[0].write_protect);
        assert!(tpg.luns.luns[0].write_protect);
        assert_eq!(
            (h2.chap.is_none(), h2.attributes.authentication),
            (true, Some(true))
        );
        let off: SaveConfig = serde_json::from_value(json!({
            "fabric_modules": [{"name": "iscsi", "discovery_enable_auth": false,
                "discovery_userid": "du", "discovery_password": "dpassword123"}]
        }))
        .unwrap();
        assert!(discovery_auth(&off).is_none());
    }

    /// Issue 9 item 1 at load: an out-of-range attribute stops the build
    /// (even of a file validation never saw), naming attribute, value and
    /// the allowed values; it is never read as "off" by the fabric.
    #[test]
    fn out_of_range_attributes_stop_the_build() {
        for (tpg_attrs, acl_attrs, want) in [
            (
                json!({"authentication": 2}),
                json!({}),
                "attribute authentication: 2",
            ),
            (
                json!({"generate_node_acls": -1}),
                json!({}),
                "generate_node_acls: -1",
            ),
            (
                json!({"demo_mode_write_protect": "yes"}),
                json!({}),
                "demo_mode_write_protect: \"yes\"",
            ),
            (json!({}), json!({"tmr_cold_reset": 2}), "tmr_cold_reset: 2"),
            (json!({}), json!({"authentication": 2}), "authentication: 2"),
        ] {
            let cfg: SaveConfig = serde_json::from_value(json!({
                "targets": [{"fabric": "iscsi", "wwn": "iqn.2026-11.x:a", "tpgs": [
                    {"tag": 1, "attributes": tpg_attrs, "chap_userid": "u", "chap_password": "p12345678901",
                     "node_acls": [{"node_wwn": "iqn.2026-11.x:h1", "attributes": acl_attrs}]}
                ]}]
            }))
            .unwrap();
            let e = format!("{:#}", build(&cfg, None).err().expect(want));
            assert!(e.contains(want) && e.contains("(allowed: "), "{e}");
        }
        let so: StorageObject = serde_json::from_value(json!({"plugin": "ramdisk", "name": "r",
            "size": 65536, "attributes": {"emulate_write_cache": 2}}))
        .unwrap();
        let e = format!("{:#}", open_device(&so, None).err().unwrap());
        assert!(e.contains("emulate_write_cache: 2 is not allowed"), "{e}");
    }

    /// targetcli's own file: every TPG's attributes and parameters (LIO's
    /// values, markers included) read into the typed settings and offer.
    #[test]
    fn targetcli_sample_tpgs_are_read() {
        let cfg: SaveConfig = serde_json::from_str(include_str!(
            "../../config/tests/data/targetcli-sample.json"
        ))
        .unwrap();
        for t in &cfg.targets {
            for (tag, g) in t.tagged_tpgs() {
                let tc = tpg_config(g, tag, &HashMap::new()).unwrap();
                assert_eq!(tc.attributes.default_cmdsn_depth, 64);
                assert_eq!(tc.offer.max_recv_data_segment_length, 8192);
            }
        }
    }

    #[test]
    fn unopenable_storage_object_is_an_error() {
        let cfg: SaveConfig = serde_json::from_value(json!({
            "storage_objects": [{"plugin": "fileio", "name": "gone", "dev": "/nonexistent/dir/x.img"}]
        }))
        .unwrap();
        let e = format!("{:#}", build(&cfg, None).err().unwrap());
        assert!(
            e.contains("/backstores/fileio/gone") && e.contains("/nonexistent/dir/x.img"),
            "{e}"
        );
    }

    /// `encryption=1` wraps the backstore (crypto erase possible), keeps its
    /// key in `<state>/keys` with mode 0600, survives a saveconfig round
    /// trip, and needs a state directory.
    #[test]
    fn encryption_attribute() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("e.img");
        let wwn = "0b5e3c1e-0000-4000-8000-00000000000e";
        let cfg: SaveConfig = serde_json::from_value(json!({
            "storage_objects": [
                {"plugin": "fileio", "name": "enc", "dev": img, "size": 1048576, "wwn": wwn,
                 "attributes": {"encryption": 1, "block_size": 4096}},
                {"plugin": "ramdisk", "name": "plain", "size": 1048576}
            ]
        }))
        .unwrap();
        let pr = dir.path().join("pr");
        let rt = build(&cfg, Some(&pr)).unwrap();
        let enc = &rt.objects["/backstores/fileio/enc"].1;
        let plain = &rt.objects["/backstores/ramdisk/plain"].1;
        assert!(enc.backstore.capabilities().crypto_erase);
        assert!(!plain.backstore.capabilities().crypto_erase);
        let key = dir.path().join("keys").join(format!("key_{wwn}"));
        let meta = std::fs::metadata(&key).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        enc.backstore.write_at(&[0x61; 4096], 0).unwrap();
        let mut raw = vec![0u8; 4096];
        std::fs::File::open(&img)
            .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut raw, 0))
            .unwrap();
        assert_ne!(raw, vec![0x61; 4096], "stored in the clear");
        let back: SaveConfig = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back.storage_objects[0].attributes["encryption"], json!(1));
        let e = format!("{:#}", build(&cfg, None).err().unwrap());
        assert!(e.contains("state directory"), "{e}");
    }
}
