//! Turns a validated saveconfig into runtime objects: backstores, target-core
//! `Device`s and LUN tables, and the iSCSI fabric's `TargetConfig`s.
//!
//! Mapping from LIO's schema: `fileio` and `block` open the path with
//! [`FileBackstore`] (write_back off unless the file says so, as rtslib
//! restores it; block devices claimed exclusively unless `exclusive` is
//! false), `ramdisk` is a [`RamBackstore`] or, with `nullio`, a
//! [`NullBackstore`]. Attributes `block_size`, `emulate_write_cache` and
//! `emulate_tpu`/`emulate_tpws` become `DeviceOptions`. Objects of other
//! plugins and targets of other fabrics were reported as warnings by
//! validation and are skipped here. A storage object that cannot be opened
//! is an error: serving a target with a LUN silently missing is worse than
//! not starting.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use backstore::{
    Backstore, CryptBackstore, FileBackstore, FileOptions, NbdAddr, NullBackstore, RamBackstore,
};
use config::{parse_ip, value_string, SaveConfig, StorageObject, Tpg};
use iscsi::{AclConfig, ChapCredentials, TargetConfig, TpgConfig};
use target_core::{Device, DeviceOptions, IoEngine, Lun, LunTable};

/// Everything the daemon runs from one config.
pub struct Runtime {
    /// Every device, for the final flush.
    pub devices: Vec<Arc<Device>>,
    pub targets: Vec<TargetConfig>,
    /// Each served storage object with the device opened from it, by
    /// `/backstores/...` path (the live configuration reuses them).
    pub objects: HashMap<String, (StorageObject, Arc<Device>)>,
    /// What to listen on: the union of the enabled TPGs' portals, in config
    /// order, without duplicates or addresses a wildcard already covers.
    pub portals: Vec<SocketAddr>,
    /// CHAP for discovery sessions (the iscsi fabric module's settings).
    pub discovery_auth: Option<ChapCredentials>,
}

/// `pr_dir` holds the persistent-reservation state of LUs whose
/// registrations asked for APTPL (`aptpl_<wwn>`, as LIO keeps
/// /var/target/pr); `None` keeps reservations in memory only.
pub fn build(cfg: &SaveConfig, pr_dir: Option<&Path>) -> Result<Runtime> {
    let mut devices = Vec::new();
    let mut objects = HashMap::new();
    let mut by_path: HashMap<String, Arc<Device>> = HashMap::new();
    for so in &cfg.storage_objects {
        let Some(device) =
            open_device(so, pr_dir).with_context(|| format!("storage object {}", so.path()))?
        else {
            continue;
        };
        tracing::info!(
            object = %so.path(),
            size = device.backstore.size(),
            block_size = device.options.block_size,
            write_cache = device.options.write_cache,
            thin = device.options.thin_provisioning,
            "storage object ready"
        );
        by_path.insert(so.path(), device.clone());
        objects.insert(so.path(), (so.clone(), device.clone()));
        devices.push(device);
    }

    let mut targets = Vec::new();
    let mut portals = Vec::new();
    for t in cfg.targets.iter().filter(|t| t.fabric == "iscsi") {
        let mut tpgs = Vec::new();
        for (i, tpg) in t.tpgs.iter().enumerate() {
            let tag = tpg.tag.unwrap_or(i as u16 + 1);
            let mut tc = tpg_config(tpg, tag, &by_path)
                .with_context(|| format!("target {} tpg{tag}", t.wwn))?;
            tc.relative_port_id = relative_port_id(cfg, &t.wwn, tag);
            if tc.enable {
                for p in &tc.portals {
                    if !portals.contains(p) {
                        portals.push(*p);
                    }
                }
            }
            tracing::info!(
                target = %t.wwn,
                tpg = tag,
                enabled = tc.enable,
                luns = tc.luns.luns.len(),
                portals = ?tc.portals,
                "target portal group ready"
            );
            tpgs.push(tc);
        }
        targets.push(TargetConfig {
            iqn: t.wwn.clone(),
            tpgs,
        });
    }
    crate::alua::apply(cfg, &objects);
    Ok(Runtime {
        devices,
        targets,
        objects,
        portals: listen_set(&portals),
        discovery_auth: discovery_auth(cfg),
    })
}

/// rtslib's `discovery_enable_auth` with `discovery_userid`, ... of the
/// iscsi fabric module. Enabled without complete credentials still
/// requires CHAP (the fabric then refuses every discovery login), as LIO's
/// enforce_discovery_auth does.
pub fn discovery_auth(cfg: &SaveConfig) -> Option<ChapCredentials> {
    let m = cfg.fabric_modules.iter().find(|m| m.name == "iscsi")?;
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

/// Drop portals that a wildcard portal of the same family and port already
/// covers: binding both would fail with EADDRINUSE (LIO configs often list
/// 0.0.0.0:3260 in one TPG and a specific address in another).
pub fn listen_set(portals: &[SocketAddr]) -> Vec<SocketAddr> {
    let covered = |a: &SocketAddr| {
        !a.ip().is_unspecified()
            && portals.iter().any(|w| {
                w.ip().is_unspecified() && w.port() == a.port() && w.is_ipv4() == a.is_ipv4()
            })
    };
    portals.iter().filter(|a| !covered(a)).copied().collect()
}

/// The relative target port identifier of iSCSI target `wwn`'s TPG `tag`:
/// its 1-based position among every iSCSI TPG of the configuration, so each
/// target port of the daemon has its own (one LU exported through two
/// targets' tpg1 must not show the same port twice in RTPG or VPD 0x83).
/// For the usual one-target configuration it equals the TPG tag.
pub fn relative_port_id(cfg: &SaveConfig, wwn: &str, tag: u16) -> u16 {
    let mut n: u16 = 0;
    for t in cfg.targets.iter().filter(|t| t.fabric == "iscsi") {
        for (i, tpg) in t.tpgs.iter().enumerate() {
            n = n.saturating_add(1);
            if t.wwn == wwn && tpg.tag.unwrap_or(i as u16 + 1) == tag {
                return n;
            }
        }
    }
    // Not in the configuration (cannot happen for a TPG built from it).
    tag
}

/// The fabric's view of one TPG; its `relative_port_id` is the tag until
/// the caller sets it with [`relative_port_id`].
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
    let write_protect = attributes.demo_mode_write_protect;
    let mut luns = Vec::new();
    for lun in &tpg.luns {
        // Validation already reported LUNs of unsupported objects.
        if let Some(device) = devices.get(&lun.storage_object) {
            luns.push(Lun {
                id: lun.index,
                device: device.clone(),
                write_protect,
            });
        }
    }
    luns.sort_by_key(|l| l.id);
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

/// `None` for plugins rtarget does not serve (already warned about).
pub fn open_device(so: &StorageObject, pr_dir: Option<&Path>) -> Result<Option<Arc<Device>>> {
    let attrs =
        config::ObjectAttributes::parse(&so.attributes).map_err(|e| anyhow!(e.join("; ")))?;
    let block_size = attrs.block_size;
    // Whether the backstore bypasses the page cache (picks the I/O engine).
    let mut direct = false;
    let (backstore, product): (Arc<dyn Backstore>, &str) = match so.plugin.as_str() {
        "fileio" | "block" => {
            let dev = so
                .dev
                .as_deref()
                .ok_or_else(|| anyhow!("'dev' is missing"))?;
            let opts = FileOptions {
                size: so.size,
                // rtslib restores a missing write_back as False for both
                // plugins (targetcli's `create` is what defaults fileio to on).
                write_back: so.write_back.unwrap_or(false),
                exclusive: so.plugin == "block" && so.exclusive.unwrap_or(true),
                // LIO's is_nonrot attribute, else what the kernel says.
                rotational: attrs.is_nonrot.map(|nonrot| !nonrot),
                read_only: so.readonly.unwrap_or(false) || attrs.readonly,
                // rtarget extension: bypass the page cache. `block` does by
                // default, as LIO's iblock submits bios below the page cache.
                direct: attrs.o_direct.unwrap_or(so.plugin == "block"),
                ..FileOptions::new(dev)
            };
            let f = FileBackstore::open(&opts).with_context(|| format!("cannot open {dev}"))?;
            direct = f.is_direct();
            (
                Arc::new(f),
                if so.plugin == "fileio" {
                    "FILEIO"
                } else {
                    "IBLOCK"
                },
            )
        }
        "ramdisk" => {
            let size = so.size.ok_or_else(|| anyhow!("'size' is missing"))?;
            if so.nullio == Some(true) {
                (Arc::new(NullBackstore::new(size)), "NULLIO")
            } else {
                (
                    Arc::new(RamBackstore::new(size).context("cannot allocate the ramdisk")?),
                    "RAMDISK-MCP",
                )
            }
        }
        "user" => match so.user_config() {
            // Every user:NAME object opens through the handler registered
            // under NAME (crate::handlers, docs/handlers.md).
            Some((sub, cfgstring)) => match crate::handlers::registry().get(sub) {
                Some(h) => (
                    crate::handlers::open_user(h.as_ref(), so, cfgstring, pr_dir)?,
                    h.product(),
                ),
                None => return Ok(None),
            },
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    let wwn = so.wwn.clone().unwrap_or_else(|| stable_uuid(&so.path()));
    let backstore = if attrs.encryption {
        encrypt(backstore, &wwn, pr_dir)?
    } else {
        backstore
    };
    // rtarget extension (SPDK's bdev QoS): throughput / IOPS limits.
    let backstore = backstore::with_qos(backstore, qos_limits(&attrs)?);
    let size = backstore.size();
    if size < u64::from(block_size) {
        bail!("size {size} is smaller than one block ({block_size} bytes)");
    }
    if !size.is_multiple_of(u64::from(block_size)) {
        tracing::warn!(object = %so.path(), size, block_size, "size is not a multiple of block_size; the tail is not exported");
    }
    let caps = backstore.capabilities();
    let write_cache = attrs.emulate_write_cache.unwrap_or(caps.write_cache);
    if caps.write_cache && !write_cache {
        tracing::warn!(
            object = %so.path(),
            "emulate_write_cache=0 on a write-back backstore: initiators will not flush, so a host crash can lose acknowledged writes; set write_back=false"
        );
    }
    let thin_wanted = attrs.emulate_tpu || attrs.emulate_tpws;
    if thin_wanted && !caps.discard {
        tracing::warn!(object = %so.path(), "thin provisioning requested but the backstore cannot discard; not offered");
    }
    let io_engine = io_engine(so, &attrs, direct);
    let options = DeviceOptions {
        name: so.name.clone(),
        wwn,
        block_size,
        vendor: "RTARGET".to_string(),
        product: product.to_string(),
        revision: revision(),
        write_cache,
        read_only: caps.read_only,
        thin_provisioning: thin_wanted && caps.discard,
        io_engine,
    };
    let device = Device::new(options, backstore);
    // rtarget's own attribute (LIO has none): a removable medium that can be
    // ejected and loaded (START STOP UNIT LOEJ, PREVENT ALLOW MEDIUM REMOVAL).
    if attrs.removable {
        device.set_removable(true);
    }
    if let Some(dir) = pr_dir {
        let file = dir.join(format!("aptpl_{}", device.options.wwn));
        device.set_pr_state_file(file.clone()).with_context(|| {
            format!(
                "cannot restore persistent reservations from {}",
                file.display()
            )
        })?;
    }
    Ok(Some(device))
}

/// rtarget's QoS storage-object attributes: `qos_rw_mbytes_per_sec`
/// (MiB/s) and `qos_rw_ios_per_sec`, reads and writes together; 0 or
/// absent means no limit.
pub fn qos_limits(attrs: &config::ObjectAttributes) -> Result<backstore::QosLimits> {
    let mib = attrs.qos_rw_mbytes_per_sec;
    Ok(backstore::QosLimits {
        bytes_per_sec: mib
            .checked_mul(1 << 20)
            .ok_or_else(|| anyhow!("qos_rw_mbytes_per_sec {mib} is too large"))?,
        ios_per_sec: attrs.qos_rw_ios_per_sec,
    })
}

/// rtarget's `io_engine` storage-object attribute (`inline`/`0` or
/// `pool`/`1`), else the backstore's default: the worker pool where an I/O
/// can block for long (O_DIRECT files and devices, NBD-based backstores),
/// the connection thread for page-cache, RAM, null and qcow2 backstores.
pub fn io_engine(so: &StorageObject, attrs: &config::ObjectAttributes, direct: bool) -> IoEngine {
    match attrs.io_engine {
        Some(config::IoEngineChoice::Inline) => return IoEngine::Inline,
        Some(config::IoEngineChoice::Pool) => return IoEngine::Pool,
        None => {}
    }
    let slow = match so.plugin.as_str() {
        "fileio" | "block" => direct,
        "user" => !matches!(so.user_config(), Some(("qcow", _))),
        _ => false,
    };
    if slow {
        IoEngine::Pool
    } else {
        IoEngine::Inline
    }
}

/// rtarget's `encryption` attribute (an extension; LIO has none): store the
/// object's data AES-XTS encrypted under a media key of its own, which
/// SANITIZE CRYPTO ERASE replaces (docs/encryption.md). The key lives in
/// the daemon's state directory, next to the PR state: `<state>/keys/key_<wwn>`.
fn encrypt(
    inner: Arc<dyn Backstore>,
    wwn: &str,
    pr_dir: Option<&Path>,
) -> Result<Arc<dyn Backstore>> {
    let Some(dir) = pr_dir.map(|p| p.with_file_name("keys")) else {
        bail!("encryption=1 needs the daemon's state directory for its key");
    };
    // The wwn names a file: nothing that could leave the directory.
    if wwn.is_empty() || !wwn.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        bail!("encryption=1 needs a wwn of letters, digits and '-' (got {wwn:?})");
    }
    let key_file = dir.join(format!("key_{wwn}"));
    let c = CryptBackstore::open(inner, &key_file)
        .with_context(|| format!("cannot open the media key {}", key_file.display()))?;
    Ok(Arc::new(c))
}

/// The NBD URI forms (`nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=PATH`)
/// to an address and export name. HOST is an IP address (IPv6 in brackets).
pub fn parse_nbd_uri(uri: &str) -> Result<(NbdAddr, String)> {
    // One parser for create-time checks and the nbd handler.
    Ok(backstore::registry::builtin::parse_nbd_uri(uri)?)
}

/// INQUIRY product revision: the crate version, at most 4 bytes.
fn revision() -> String {
    env!("CARGO_PKG_VERSION").chars().take(4).collect()
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
    use serde_json::json;

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
                {"fabric": "loopback", "wwn": "naa.5001", "tpgs": []}
            ]
        }))
        .unwrap();
        let rt = build(&cfg, None).unwrap();
        assert_eq!(rt.devices.len(), 3);
        let d = &rt.devices[0];
        assert_eq!(d.options.block_size, 4096);
        assert!(d.options.thin_provisioning);
        assert!(d.options.write_cache);
        assert_eq!(d.num_blocks(), 256);
        assert_eq!(d.options.wwn, stable_uuid("/backstores/fileio/d"));
        assert_eq!(rt.devices[1].options.wwn, "w");
        assert!(!rt.devices[1].options.write_cache);
        assert_eq!(rt.devices[2].options.product, "NULLIO");
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
            rt.portals,
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
            for (i, g) in t.tpgs.iter().enumerate() {
                let tc = tpg_config(g, i as u16 + 1, &HashMap::new()).unwrap();
                assert_eq!(tc.attributes.default_cmdsn_depth, 64);
                assert_eq!(tc.offer.max_recv_data_segment_length, 8192);
            }
        }
    }

    /// The wrapper forwards to the nbd handler's parser (every URI form is
    /// tested there, in backstore::registry::builtin) and keeps its words.
    #[test]
    fn nbd_uris_use_the_handler_parser() {
        let (a, e) = parse_nbd_uri("nbd+unix:///exp?socket=/run/n.sock").unwrap();
        assert_eq!(
            (a, e.as_str()),
            (NbdAddr::Unix("/run/n.sock".into()), "exp")
        );
        let e = parse_nbd_uri("nbd://host.example/x").unwrap_err();
        assert!(e.to_string().contains("is not IP[:PORT]"), "{e}");
    }

    #[test]
    fn wildcard_portals_cover_specific_ones() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let got = listen_set(&[
            a("127.0.0.1:3260"),
            a("0.0.0.0:3260"),
            a("127.0.0.1:3261"),
            a("[::1]:3260"),
        ]);
        assert_eq!(
            got,
            [a("0.0.0.0:3260"), a("127.0.0.1:3261"), a("[::1]:3260")]
        );
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
        assert!(enc.backstore.can_crypto_erase());
        assert!(!plain.backstore.can_crypto_erase());
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

    /// rtarget's `io_engine` (names or 0/1, else the backstore's default)
    /// and QoS attributes reach the device; bad values are errors.
    #[test]
    fn io_engine_and_qos_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let so = |plugin: &str, attrs: serde_json::Value| -> StorageObject {
            serde_json::from_value(json!({"plugin": plugin, "name": "x",
                "dev": dir.path().join("x.img"), "size": 1048576, "attributes": attrs}))
            .unwrap()
        };
        let attrs = |o: &StorageObject| config::ObjectAttributes::parse(&o.attributes);
        let eng = |o: &StorageObject, direct| io_engine(o, &attrs(o).unwrap(), direct);
        assert_eq!(eng(&so("fileio", json!({})), false), IoEngine::Inline);
        assert_eq!(eng(&so("fileio", json!({})), true), IoEngine::Pool);
        assert_eq!(eng(&so("block", json!({})), true), IoEngine::Pool);
        assert_eq!(eng(&so("ramdisk", json!({})), false), IoEngine::Inline);
        assert_eq!(
            eng(&so("fileio", json!({"io_engine": "pool"})), false),
            IoEngine::Pool
        );
        assert_eq!(
            eng(&so("fileio", json!({"io_engine": 1})), false),
            IoEngine::Pool
        );
        assert_eq!(
            eng(&so("fileio", json!({"io_engine": "Inline"})), true),
            IoEngine::Inline
        );
        assert_eq!(
            eng(&so("fileio", json!({"io_engine": "0"})), true),
            IoEngine::Inline
        );
        assert!(attrs(&so("fileio", json!({"io_engine": "fast"}))).is_err());
        let mut nbd = so("user", json!({}));
        nbd.extra
            .insert("config".into(), json!("nbd/nbd://127.0.0.1/e"));
        assert_eq!(eng(&nbd, false), IoEngine::Pool);
        let mut qcow = so("user", json!({}));
        qcow.extra
            .insert("config".into(), json!("qcow//tmp/a.qcow2"));
        assert_eq!(eng(&qcow, false), IoEngine::Inline);

        let q = qos_limits(
            &attrs(&so(
                "fileio",
                json!({"qos_rw_mbytes_per_sec": 8, "qos_rw_ios_per_sec": "100"}),
            ))
            .unwrap(),
        )
        .unwrap();
        assert_eq!((q.bytes_per_sec, q.ios_per_sec), (8 << 20, 100));
        let none = attrs(&so("fileio", json!({}))).unwrap();
        assert!(qos_limits(&none).unwrap().is_unlimited());
        assert!(attrs(&so("fileio", json!({"qos_rw_ios_per_sec": "x"}))).is_err());
        // The attribute reaches the device, which opens (and reads) normally.
        let o = so(
            "fileio",
            json!({"io_engine": "pool", "qos_rw_ios_per_sec": 1000}),
        );
        let d = open_device(&o, None).unwrap().unwrap();
        assert_eq!(d.options.io_engine, IoEngine::Pool);
        let mut buf = [1u8; 512];
        d.backstore.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [0u8; 512]);
    }

    /// Every iSCSI TPG of the configuration gets its own relative port id,
    /// in configuration order; a single target's ids are its TPG tags.
    #[test]
    fn relative_port_ids_are_unique_per_target_port() {
        let cfg: SaveConfig = serde_json::from_value(json!({
            "targets": [
                {"fabric": "iscsi", "wwn": "iqn.2026-11.org.example:a",
                 "tpgs": [{"tag": 1}, {"tag": 2}]},
                {"fabric": "iscsi", "wwn": "iqn.2026-11.org.example:b",
                 "tpgs": [{"tag": 1}]}
            ]
        }))
        .unwrap();
        let id = |w: &str, t| relative_port_id(&cfg, &format!("iqn.2026-11.org.example:{w}"), t);
        assert_eq!((id("a", 1), id("a", 2), id("b", 1)), (1, 2, 3));
    }
}
