//! `resize` of a storage object (rtarget's own verb; targetcli has none):
//! which objects can grow, the size a request asks for (`2G`, `+512M`, or
//! nothing for a block device that grew underneath), and the wording of
//! refusals. The live part (growing the running backstore, telling
//! initiators, saving the new size) is the daemon's (rtarget `Live::resize`).

use std::io::{Seek, SeekFrom};

use anyhow::{anyhow, bail, Context, Result};
use config::StorageObject;

use crate::args::parse_size;

/// Why `so` cannot be resized, for an object whose backstore says it can't.
pub fn cannot(so: &StorageObject) -> String {
    let path = format!("/backstores/{}/{}", so.ui_plugin(), so.name);
    let why = match so.ui_plugin().as_str() {
        "user:nbd" => {
            "an NBD server gives its size once, at connection (the protocol has no resize): \
             grow the export, then delete and re-create the object"
                .to_string()
        }
        "fileio" | "block" | "user:qcow" if so.readonly == Some(true) => {
            "it is read-only".to_string()
        }
        // Also a wrapper (encryption, QoS) that does not pass resize on.
        p => format!("the running {p} backstore does not support online resize"),
    };
    format!("{path} cannot be resized: {why}")
}

/// The size in bytes that `arg` asks for: `SIZE` (absolute), `+SIZE`
/// (added to `current`), or none: the current size of the block device
/// behind a `block` object or a `fileio` object on a device node.
pub fn wanted_size(so: &StorageObject, arg: Option<&str>, current: u64) -> Result<u64> {
    let arg = arg.map(|a| a.strip_prefix("size=").unwrap_or(a).trim());
    match arg {
        Some(a) if a.starts_with('+') => {
            let add = parse_size(&a[1..])?;
            current
                .checked_add(add)
                .ok_or_else(|| anyhow!("size {current} + {add} overflows"))
        }
        Some(a) => parse_size(a),
        None => {
            let dev = so.dev.as_deref().filter(|d| is_block_device(d));
            let Some(dev) = dev else {
                bail!("resize needs a SIZE (e.g. 2G, or +1G to add 1 GiB)");
            };
            // Seeking to the end of a block device gives its size.
            let mut f = std::fs::File::open(dev).with_context(|| format!("cannot open {dev}"))?;
            f.seek(SeekFrom::End(0))
                .with_context(|| format!("cannot read the size of {dev}"))
        }
    }
}

fn is_block_device(path: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// Record a grown size in the saved object: fileio, ramdisk and user
/// objects keep `size` (rtslib's field); a `block` object has none (its
/// size is the device's).
pub fn record(so: &mut StorageObject, new_size: u64) {
    if so.plugin != "block" {
        so.size = Some(new_size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn so(plugin: &str, config: Option<&str>) -> StorageObject {
        let mut so = StorageObject {
            plugin: plugin.into(),
            name: "x".into(),
            dev: Some("/tmp/none.img".into()),
            ..StorageObject::default()
        };
        if let Some(c) = config {
            so.extra.insert("config".into(), Value::from(c));
        }
        so
    }

    #[test]
    fn sizes_absolute_relative_and_missing() {
        let f = so("fileio", None);
        assert_eq!(wanted_size(&f, Some("2G"), 1 << 30).unwrap(), 2 << 30);
        assert_eq!(wanted_size(&f, Some("size=4M"), 0).unwrap(), 4 << 20);
        assert_eq!(
            wanted_size(&f, Some("+512M"), 1 << 30).unwrap(),
            (1 << 30) + (512 << 20)
        );
        for bad in ["lots", "-1G", "+", "0"] {
            assert!(wanted_size(&f, Some(bad), 1 << 30).is_err(), "{bad}");
        }
        let e = wanted_size(&f, None, 1 << 30).unwrap_err().to_string();
        assert!(e.contains("needs a SIZE"), "{e}");
    }

    #[test]
    fn refusals_name_the_reason() {
        let n = so("user", Some("nbd/nbd://127.0.0.1/x"));
        assert!(cannot(&n).contains("/backstores/user:nbd/x cannot be resized: an NBD server"));
        let mut r = so("fileio", None);
        r.readonly = Some(true);
        assert!(cannot(&r).ends_with("it is read-only"));
        let mut b = so("block", None);
        record(&mut b, 1 << 30);
        assert_eq!(b.size, None);
        let mut q = so("user", Some("qcow//i.qcow2"));
        record(&mut q, 1 << 30);
        assert_eq!(q.size, Some(1 << 30));
    }
}
