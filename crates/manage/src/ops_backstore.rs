//! `create` under `/backstores/<plugin>`: targetcli's parameters and
//! defaults per plugin (fileio, block, ramdisk, user:qcow, user:nbd,
//! user:qemu), checked against the backing path before anything is opened
//! (see [`crate::ops`]).

use anyhow::{anyhow, bail, Result};
use config::{SaveConfig, StorageObject};
use serde_json::Value;

use crate::args::{parse_size, Args, Bound};
use crate::ops::{Ctx, PathKind};

/// tcmu-runner's `create` parameters for user backstores (targetcli).
const USER_PARAMS: &[&str] = &[
    "name",
    "size",
    "cfgstring",
    "wwn",
    "hw_max_sectors",
    "control",
];
/// user:qcow adds an overlay's backing file (created natively).
const QCOW_PARAMS: &[&str] = &[
    "name",
    "size",
    "cfgstring",
    "wwn",
    "hw_max_sectors",
    "control",
    "backing",
    "backing_fmt",
];

/// rtslib keeps `hw_max_sectors` and `control` of user objects as given.
fn keep_tcmu_keys(so: &mut StorageObject, b: &Bound) {
    for k in ["hw_max_sectors", "control"] {
        if let Some(v) = b.get(k) {
            so.extra.insert(k.into(), Value::from(v));
        }
    }
}

/// `create`'s parameters under `/backstores/<plugin>` (in order) and how
/// many are required; the shell completes from the same list.
pub fn create_params(plugin: &str) -> (&'static [&'static str], usize) {
    match plugin {
        "fileio" => (
            &["name", "file_or_dev", "size", "write_back", "sparse", "wwn"],
            2,
        ),
        "block" => (&["name", "dev", "readonly", "wwn", "exclusive"], 2),
        // Native qcow2 adds an overlay's backing file (created natively).
        "user:qcow" => (QCOW_PARAMS, 1),
        // Every other registered handler (crate::handlers) takes
        // tcmu-runner's parameters for user backstores.
        p if p.starts_with("user:") => (USER_PARAMS, 1),
        "ramdisk" => (&["name", "size", "nullio", "wwn"], 2),
        // Not a backstore type (only the shell asks about such paths).
        _ => (&[], 0),
    }
}

/// `create` under `/backstores/<plugin>`: the name checks every plugin
/// shares, then the plugin's own parameters; a fresh unit serial last.
pub fn create_object(cfg: &mut SaveConfig, plugin: &str, args: &Args, ctx: &Ctx) -> Result<String> {
    let (params, required) = create_params(plugin);
    let args = &config_string_second(plugin, args);
    let b = args.bind("create", params, required)?;
    let name = b.req("name")?.to_string();
    if name.is_empty() || name.contains(['/', ' ', '\t', '\n', '=']) {
        bail!("invalid name {name:?} (no '/', '=' or whitespace)");
    }
    if cfg
        .storage_objects
        .iter()
        .any(|so| so.ui_plugin() == plugin && so.name == name)
    {
        bail!("storage object /backstores/{plugin}/{name} already exists");
    }
    if plugin.starts_with("user:")
        && cfg
            .storage_objects
            .iter()
            .any(|so| so.plugin == "user" && so.name == name)
    {
        bail!("a user storage object named {name} already exists");
    }
    let mut so = StorageObject {
        plugin: plugin.split(':').next().unwrap_or(plugin).into(),
        name: name.clone(),
        ..StorageObject::default()
    };
    let size_arg = b
        .get("size")
        // user:qemu's SIZE 0 means "the image's virtual size".
        .filter(|s| !(plugin == "user:qemu" && *s == "0"))
        .map(parse_size)
        .transpose()?;
    let msg = match plugin {
        "fileio" => fileio(&mut so, &b, size_arg, ctx)?,
        "block" => block(&mut so, &b, ctx)?,
        "user:qcow" => user_qcow(&mut so, &b, size_arg, ctx)?,
        "user:nbd" => user_nbd(&mut so, &b, size_arg)?,
        "user:qemu" => user_qemu(&mut so, &b, size_arg, ctx)?,
        p if p.starts_with("user:") => user_other(&mut so, &b, size_arg, p)?,
        _ => ramdisk(&mut so, &b, size_arg)?,
    };
    so.wwn = Some(unique_wwn(cfg, b.get("wwn"), ctx)?);
    cfg.storage_objects.push(so);
    Ok(msg)
}

/// User backstores take `name size cfgstring` in targetcli's order, but
/// an existing image (or an NBD export) has its own size: `create q1
/// /srv/q1.qcow2` means the config string when the second word is not a
/// size and no third one follows.
fn config_string_second(plugin: &str, args: &Args) -> Args {
    let mut args = args.clone();
    if plugin.starts_with("user:")
        && args.positional.len() == 2
        && !args.named.contains_key("cfgstring")
        && parse_size(&args.positional[1]).is_err()
        // user:qemu's size 0 ("the image's") is a size.
        && args.positional[1] != "0"
    {
        let cfgstring = args.positional.remove(1);
        args.named.insert("cfgstring".into(), cfgstring);
    }
    args
}

/// `fileio`: a file (created sparse at `size`) or a block device.
fn fileio(so: &mut StorageObject, b: &Bound, size_arg: Option<u64>, ctx: &Ctx) -> Result<String> {
    let name = so.name.clone();

    let dev = b.req("file_or_dev")?;
    if !dev.starts_with('/') {
        bail!("file_or_dev {dev:?} must be an absolute path");
    }
    if b.bool("sparse")? == Some(false) {
        bail!("sparse=false is not supported yet (files are created sparse)");
    }
    let size = match ((ctx.stat)(dev), size_arg) {
        (Some(PathKind::BlockDevice), Some(_)) => {
            bail!("size must not be given for a block device")
        }
        (Some(PathKind::BlockDevice), None) => None,
        (Some(PathKind::File(len)), None) if len > 0 => Some(len),
        (Some(PathKind::Other), _) => {
            bail!("{dev} is neither a regular file nor a block device")
        }
        (_, Some(s)) => Some(s),
        (_, None) => bail!("{dev} does not exist or is empty: size is required"),
    };
    if let Some(dir) = std::path::Path::new(dev).parent() {
        if (ctx.stat)(&dir.to_string_lossy()).is_none() {
            bail!("directory {} does not exist", dir.display());
        }
    }
    so.dev = Some(dev.to_string());
    so.size = size;
    so.write_back = Some(b.bool("write_back")?.unwrap_or(true));
    so.aio = Some(false);
    Ok(format!(
        "Created fileio {name} with size {}.",
        so.size.map(|s| s.to_string()).unwrap_or("(device)".into())
    ))
}

/// `block`: a block device.
fn block(so: &mut StorageObject, b: &Bound, ctx: &Ctx) -> Result<String> {
    let name = so.name.clone();

    let dev = b.req("dev")?;
    if (ctx.stat)(dev) != Some(PathKind::BlockDevice) {
        bail!("{dev} is not a block device");
    }
    so.dev = Some(dev.to_string());
    so.readonly = Some(b.bool("readonly")?.unwrap_or(false));
    so.exclusive = Some(b.bool("exclusive")?.unwrap_or(true));
    so.write_back = Some(false);
    Ok(format!("Created block storage object {name} using {dev}."))
}

/// `user:qcow`: a qcow2 image, or a new overlay over `backing`.
fn user_qcow(
    so: &mut StorageObject,
    b: &Bound,
    size_arg: Option<u64>,
    ctx: &Ctx,
) -> Result<String> {
    let name = so.name.clone();

    let image = b
        .get("cfgstring")
        .ok_or_else(|| anyhow!("missing parameter cfgstring (the qcow2 image path)"))?;
    if !image.starts_with('/') {
        bail!("cfgstring {image:?} must be an absolute image path");
    }
    let backing = b.get("backing");
    match ((ctx.stat)(image), size_arg, backing) {
        (Some(_), _, Some(_)) => {
            bail!("{image} exists: backing= only applies when creating a new overlay")
        }
        (Some(PathKind::File(_)), _, None) => {}
        (Some(_), _, None) => bail!("{image} is not a regular file"),
        (None, None, None) => {
            bail!("{image} does not exist: size is required to create it (or backing= for an overlay)")
        }
        (None, _, _) => {
            if let Some(dir) = std::path::Path::new(image).parent() {
                if (ctx.stat)(&dir.to_string_lossy()).is_none() {
                    bail!("directory {} does not exist", dir.display());
                }
            }
        }
    }
    so.size = size_arg;
    if let Some(backing) = backing {
        so.size = Some(create_qcow2_overlay(
            image,
            size_arg,
            backing,
            b.get("backing_fmt"),
        )?);
    } else if b.get("backing_fmt").is_some() {
        bail!("backing_fmt= needs backing=");
    }
    so.extra
        .insert("config".into(), Value::from(format!("qcow/{image}")));
    keep_tcmu_keys(so, b);
    Ok(format!(
        "Created user-backed storage object {name} using {image}."
    ))
}

/// `user:nbd`: an export of an NBD server (its size is the server's).
fn user_nbd(so: &mut StorageObject, b: &Bound, size_arg: Option<u64>) -> Result<String> {
    let name = so.name.clone();

    let uri = b.get("cfgstring").ok_or_else(|| {
            anyhow!("missing parameter cfgstring (nbd://HOST:PORT/EXPORT or nbd+unix:///EXPORT?socket=PATH)")
        })?;
    parse_nbd_uri(uri)?;
    if size_arg.is_some() {
        bail!("size comes from the NBD server: omit it");
    }
    so.extra
        .insert("config".into(), Value::from(format!("nbd/{uri}")));
    Ok(format!(
        "Created user-backed storage object {name} using {uri}."
    ))
}

/// `user:qemu`: an image QEMU's block layer opens (`FORMAT/PATH;opts`).
fn user_qemu(
    so: &mut StorageObject,
    b: &Bound,
    size_arg: Option<u64>,
    ctx: &Ctx,
) -> Result<String> {
    let name = so.name.clone();

    let cfgstring = b.get("cfgstring").ok_or_else(|| {
        anyhow!(
            "missing parameter cfgstring (FORMAT/PATH[;KEY=VALUE...], e.g. vmdk//srv/disk.vmdk)"
        )
    })?;
    let qc = backstore::QemuConfig::parse(cfgstring)?;
    let image = qc.file.to_string_lossy().into_owned();
    match ((ctx.stat)(&image), size_arg) {
        (Some(PathKind::File(_) | PathKind::BlockDevice), _) => {}
        (Some(_), _) => bail!("{image} is neither a regular file nor a block device"),
        (None, None) => bail!("{image} does not exist: size is required to create it"),
        (None, Some(_)) => {}
    }
    // 0 or omitted: the image's virtual size, learnt when it opens.
    so.size = size_arg;
    so.extra
        .insert("config".into(), Value::from(format!("qemu/{qc}")));
    keep_tcmu_keys(so, b);
    Ok(format!(
        "Created user-backed storage object {name} using {qc}."
    ))
}

/// Any other registered handler: its config string, checked by it.
fn user_other(so: &mut StorageObject, b: &Bound, size_arg: Option<u64>, p: &str) -> Result<String> {
    let name = so.name.clone();

    let h = crate::handlers::registry()
        .get(&p["user:".len()..])
        .ok_or_else(|| anyhow!("no handler registered for {p}"))?;
    let cfgstring = b.get("cfgstring").unwrap_or("");
    h.check_config(cfgstring)
        .map_err(|e| anyhow!("{p}: {e} (cfgstring: {})", h.config_help()))?;
    match (h.size_policy(), size_arg) {
        (backstore::SizePolicy::Required, None) => bail!("{p} needs a size"),
        (backstore::SizePolicy::FromHandler, Some(_)) => {
            bail!("{p} takes its size from the medium: omit it")
        }
        _ => {}
    }
    so.size = size_arg;
    so.extra.insert(
        "config".into(),
        Value::from(format!("{}/{cfgstring}", h.name())),
    );
    keep_tcmu_keys(so, b);
    Ok(format!(
        "Created user-backed storage object {name} ({p}, config {cfgstring:?})."
    ))
}

/// `ramdisk`: memory, or `nullio` (writes dropped, reads zeroes).
fn ramdisk(so: &mut StorageObject, b: &Bound, size_arg: Option<u64>) -> Result<String> {
    let name = so.name.clone();

    so.size = size_arg;
    so.nullio = Some(b.bool("nullio")?.unwrap_or(false));
    Ok(format!(
        "Created ramdisk {name} with size {}.",
        b.req("size")?
    ))
}

/// The new object's wwn: the one given, or a fresh UUID. Either must give
/// an NAA designator (VPD 0x83, LIO's derivation from its first 25 hex
/// digits) no other storage object reports, or initiators would take the
/// two LUs for one (see [`config::naa`]). A generated UUID that collides
/// is drawn again.
fn unique_wwn(cfg: &SaveConfig, given: Option<&str>, ctx: &Ctx) -> Result<String> {
    if let Some(w) = given {
        if let Some(other) = config::naa::colliding(&cfg.storage_objects, w) {
            bail!("{}", config::naa::collision_message(w, other));
        }
        return Ok(w.to_string());
    }
    let mut wwn = (ctx.new_uuid)()?;
    for _ in 0..8 {
        match config::naa::colliding(&cfg.storage_objects, &wwn) {
            None => return Ok(wwn),
            Some(_) => wwn = (ctx.new_uuid)()?,
        }
    }
    match config::naa::colliding(&cfg.storage_objects, &wwn) {
        None => Ok(wwn),
        Some(other) => bail!("{}", config::naa::collision_message(&wwn, other)),
    }
}

/// The NBD URI forms (`nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=PATH`)
/// to an address and export name. HOST is an IP address (IPv6 in brackets).
pub fn parse_nbd_uri(uri: &str) -> Result<(backstore::NbdAddr, String)> {
    // One parser for create-time checks and the nbd handler.
    Ok(backstore::registry::builtin::parse_nbd_uri(uri)?)
}

/// Create the qcow2 overlay `image` over `backing` natively (`qemu-img
/// create -f qcow2 -b BACKING -F FMT` without QEMU); the format is probed
/// (qcow2 magic, else raw) unless given. Returns the overlay's size.
fn create_qcow2_overlay(
    image: &str,
    size: Option<u64>,
    backing: &str,
    format: Option<&str>,
) -> Result<u64> {
    use backstore::Backstore;
    let resolved = std::path::Path::new(image)
        .parent()
        .unwrap_or(std::path::Path::new("/"))
        .join(backing);
    let format = match format {
        Some(f) => f.to_string(),
        None => {
            let mut magic = [0u8; 4];
            let f = std::fs::File::open(&resolved)
                .map_err(|e| anyhow!("backing file {}: {e}", resolved.display()))?;
            let is_qcow2 = std::os::unix::fs::FileExt::read_exact_at(&f, &mut magic, 0).is_ok()
                && &magic == b"QFI\xfb";
            if is_qcow2 { "qcow2" } else { "raw" }.to_string()
        }
    };
    const CLUSTER: u64 = 64 << 10; // qemu-img's default
    let q = backstore::Qcow2Backstore::create_with_backing(image, size, CLUSTER, backing, &format)
        .map_err(|e| anyhow!("cannot create {image} over {backing}: {e}"))?;
    Ok(q.size())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backstore::NbdAddr;

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
}
