//! Opening one storage object as a target-core `Device` (split from
//! [`crate::build`], which wires devices into targets).
//!
//! Mapping from LIO's schema: `fileio` and `block` open the path with
//! [`FileBackstore`] (write_back off unless the file says so, as rtslib
//! restores it; block devices claimed exclusively unless `exclusive` is
//! false), `ramdisk` is a [`RamBackstore`] or, with `nullio`, a
//! [`NullBackstore`]. The typed attributes (`config::ObjectAttributes`:
//! `block_size`, `emulate_write_cache`, `emulate_tpu`/`emulate_tpws`, ...)
//! become `DeviceOptions`; rtarget's own add encryption at rest, QoS and
//! the I/O engine.

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use backstore::{
    Backstore, CryptBackstore, FileBackstore, FileOptions, NullBackstore, RamBackstore,
    UringBackstore,
};
use config::StorageObject;
use target_core::{Device, DeviceOptions, IoEngine};

use crate::build::stable_uuid;

/// `None` for plugins rtarget does not serve (already warned about).
pub fn open_device(so: &StorageObject, pr_dir: Option<&Path>) -> Result<Option<Arc<Device>>> {
    let attrs =
        config::ObjectAttributes::parse(&so.attributes).map_err(|e| anyhow!(e.join("; ")))?;
    let block_size = attrs.block_size;
    let Some((backstore, product, direct)) = open_backstore(so, &attrs, pr_dir)? else {
        return Ok(None);
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
        product,
        revision: revision(),
        write_cache,
        read_only: caps.read_only,
        thin_provisioning: thin_wanted && caps.discard,
        io_engine,
    };
    let device = Device::new(options, Arc::clone(&backstore));
    // A medium that grows underneath (an RBD image resized elsewhere) is
    // announced to initiators as an online resize is (2A/09). Weak: the
    // hook lives in the backstore, which the device owns.
    let weak = Arc::downgrade(&device);
    backstore.on_resize(Box::new(move |_| {
        if let Some(d) = weak.upgrade() {
            d.resized();
        }
    }));
    // Several gateways on one medium (an RBD image with alua_group=N): its
    // owner drives implicit ALUA (target_core's alua_owner).
    if let Some(o) = backstore.ownership() {
        device.set_ownership(o);
    }
    // rtarget's own attribute (LIO has none): a removable medium that can be
    // ejected and loaded (START STOP UNIT LOEJ, PREVENT ALLOW MEDIUM REMOVAL).
    if attrs.removable {
        device.set_removable(true);
    }
    // A medium other targets serve too (an RBD image behind several
    // gateways) keeps the reservations with it, shared; the APTPL file is
    // for the others.
    if let Some(store) = backstore.shared_state() {
        device
            .set_pr_store(store)
            .context("cannot load the shared persistent reservations")?;
    } else if let Some(dir) = pr_dir {
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

/// What [`open_backstore`] opened: the backstore, the INQUIRY product name
/// and whether it bypasses the page cache.
type Opened = (Arc<dyn Backstore>, String, bool);

/// The plugin's backstore, the INQUIRY product name and whether it
/// bypasses the page cache (which picks the I/O engine); `None` for
/// plugins rtarget does not serve.
fn open_backstore(
    so: &StorageObject,
    attrs: &config::ObjectAttributes,
    pr_dir: Option<&Path>,
) -> Result<Option<Opened>> {
    let mut direct = false;
    if attrs.io_engine == Some(config::IoEngineChoice::Uring)
        && !matches!(so.plugin.as_str(), "fileio" | "block")
    {
        bail!("io_engine=uring is for fileio and block objects only");
    }
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
            let f: Arc<dyn Backstore> = if io_engine(so, attrs, direct) == IoEngine::Uring {
                // The kernel may refuse io_uring (seccomp, old kernel): the
                // object then fails to open, saying so.
                Arc::new(UringBackstore::new(f)?)
            } else {
                Arc::new(f)
            };
            (
                f,
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
    Ok(Some((backstore, product.to_string(), direct)))
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

/// rtarget's `io_engine` storage-object attribute (`inline`/`0`,
/// `pool`/`1` or `uring`/`2`), else the backstore's default: the worker
/// pool where an I/O can block for long (O_DIRECT files and devices,
/// NBD-based backstores), the connection thread for page-cache, RAM, null
/// and qcow2 backstores. `uring` is never the default: on this project's
/// benchmark (BENCHMARKS.md, "I/O engines: uring") it costs about half the
/// pool's CPU per I/O on O_DIRECT files but does not beat its IOPS, and
/// inline beats it on the page cache.
pub fn io_engine(so: &StorageObject, attrs: &config::ObjectAttributes, direct: bool) -> IoEngine {
    match attrs.io_engine {
        Some(config::IoEngineChoice::Inline) => return IoEngine::Inline,
        Some(config::IoEngineChoice::Pool) => return IoEngine::Pool,
        Some(config::IoEngineChoice::Uring) => return IoEngine::Uring,
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

/// INQUIRY product revision: the crate version, at most 4 bytes.
fn revision() -> String {
    env!("CARGO_PKG_VERSION").chars().take(4).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

    /// `io_engine=uring` (or 2) gives a fileio object the io_uring engine;
    /// other plugins refuse it by name.
    #[test]
    fn io_engine_uring_opens_fileio_on_a_ring() {
        let dir = tempfile::tempdir().unwrap();
        let so = |plugin: &str, attrs: serde_json::Value| -> StorageObject {
            serde_json::from_value(json!({"plugin": plugin, "name": "u",
                "dev": dir.path().join("u.img"), "size": 1048576, "attributes": attrs}))
            .unwrap()
        };
        for v in [json!("uring"), json!(2)] {
            let d = open_device(&so("fileio", json!({ "io_engine": v })), None)
                .unwrap()
                .unwrap();
            assert_eq!(d.options.io_engine, IoEngine::Uring);
            assert!(d.backstore.capabilities().async_submit, "on the ring");
        }
        let e = open_device(&so("ramdisk", json!({"io_engine": "uring"})), None)
            .err()
            .expect("refused");
        assert!(format!("{e:#}").contains("io_engine=uring is for fileio and block"));
    }
}
