//! The built-in handlers: `qcow` (native qcow2; the config string is the
//! image path, created sparse with 64 KiB clusters when missing and a size
//! is given), `nbd` (an NBD server: `nbd://IP[:PORT]/EXPORT` or
//! `nbd+unix:///EXPORT?socket=PATH`, optionally with `io_timeout=SECONDS`
//! and `connect_timeout=SECONDS` query keys; the size is the server's) and `qemu`
//! (any QEMU image format through qemu-storage-daemon; see
//! [`crate::qemu::QemuConfig`] for the string; `qemu-img create` makes a
//! missing image when a size is given).

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use super::{Handler, HandlerError, OpenRequest, SizePolicy};
use crate::{
    Backstore, NbdAddr, NbdBackstore, NbdTimeouts, Qcow2Backstore, Qcow2Options, QemuBackstore,
    QemuConfig, QemuOptions,
};

/// Every built-in handler.
pub fn all() -> Vec<Arc<dyn Handler>> {
    vec![Arc::new(Qcow), Arc::new(Nbd), Arc::new(Qemu), Arc::new(Rbd)]
}

fn exists(path: &str) -> Result<bool, HandlerError> {
    Path::new(path)
        .try_exists()
        .map_err(|e| io_error(&e, format!("{path}: {e}")))
}

/// An I/O failure reworded for the operator, keeping its kind.
fn io_error(e: &io::Error, message: String) -> HandlerError {
    HandlerError::Io(io::Error::new(e.kind(), message))
}

/// A failure that is not an `io::Error` of its own (an engine's error).
fn other_error(message: String) -> HandlerError {
    HandlerError::Io(io::Error::other(message))
}

/// The image's own virtual size wins over a different saved one (the image
/// may have been resized offline); say so, as tcmu-runner does.
fn warn_if_size_differs(req: &OpenRequest<'_>, image_size: u64) {
    if let Some(saved) = req.size.filter(|s| *s != 0 && *s != image_size) {
        tracing::warn!(
            object = req.object,
            saved,
            image = image_size,
            "saved size differs from the image's virtual size; the image's is used"
        );
    }
}

/// Native qcow2 images (tcmu-runner's `user:qcow`).
pub struct Qcow;

impl Handler for Qcow {
    handler_identity!("qcow", "QCOW2", "the qcow2 image path (absolute)");
    fn check_config(&self, config: &str) -> Result<(), HandlerError> {
        if !config.starts_with('/') {
            return Err(HandlerError::Config(format!(
                "cfgstring {config:?} must be an absolute image path"
            )));
        }
        Ok(())
    }
    fn open(&self, req: &OpenRequest<'_>) -> Result<Arc<dyn Backstore>, HandlerError> {
        self.check_config(req.config)?;
        let image = req.config;
        let q = if exists(image)? {
            let opts = Qcow2Options {
                read_only: req.read_only,
                ..Qcow2Options::default()
            };
            Qcow2Backstore::open(image, &opts)
        } else {
            let size = req.size.ok_or_else(|| {
                HandlerError::Size(format!("{image} does not exist and 'size' is missing"))
            })?;
            Qcow2Backstore::create(image, size, 64 << 10)
        }
        .map_err(|e| other_error(format!("{image}: {e}")))?;
        warn_if_size_differs(req, q.size());
        Ok(Arc::new(q))
    }
}

/// The NBD client: any NBD server is a handler.
pub struct Nbd;

impl Handler for Nbd {
    handler_identity!(
        "nbd",
        "NBD",
        "nbd://IP[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH, plus ?io_timeout=S&connect_timeout=S (0: none)"
    );
    fn size_policy(&self) -> SizePolicy {
        SizePolicy::FromHandler
    }
    fn check_config(&self, config: &str) -> Result<(), HandlerError> {
        parse_nbd_uri(config).map(|_| ())
    }
    fn open(&self, req: &OpenRequest<'_>) -> Result<Arc<dyn Backstore>, HandlerError> {
        let (addr, export, timeouts) = parse_nbd_config(req.config)?;
        let n = NbdBackstore::connect_with(addr, &export, 1, timeouts)
            .map_err(|e| io_error(&e, format!("cannot connect to {}: {e}", req.config)))?;
        Ok(Arc::new(n))
    }
}

/// The NBD URI forms (`nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=PATH`)
/// to an address and export name. HOST is an IP address (IPv6 in brackets).
pub fn parse_nbd_uri(uri: &str) -> Result<(NbdAddr, String), HandlerError> {
    parse_nbd_config(uri).map(|(addr, export, _)| (addr, export))
}

/// [`parse_nbd_uri`] plus the timeouts from the query: `io_timeout=S`
/// and `connect_timeout=S` in seconds (fractions allowed; 0: no timeout;
/// defaults [`crate::nbd::DEFAULT_IO_TIMEOUT`] and
/// [`crate::nbd::DEFAULT_CONNECT_TIMEOUT`]).
pub fn parse_nbd_config(uri: &str) -> Result<(NbdAddr, String, NbdTimeouts), HandlerError> {
    let usage = "expected nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH";
    let bad = |what: &str| HandlerError::Config(format!("{uri}: {what}{usage}"));
    let (base, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut socket = None;
    let mut timeouts = NbdTimeouts::default();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "socket" => socket = Some(v),
            "io_timeout" => timeouts.io = seconds(uri, k, v)?,
            "connect_timeout" => timeouts.connect = seconds(uri, k, v)?,
            _ => {
                return Err(HandlerError::Config(format!(
                    "{uri}: unknown key {k:?} (known: socket, io_timeout, connect_timeout)"
                )))
            }
        }
    }
    if let Some(path) = base.strip_prefix("nbd+unix://") {
        let export = path.strip_prefix('/').unwrap_or(path);
        let socket = socket
            .filter(|s| s.starts_with('/'))
            .ok_or_else(|| bad("socket=PATH must be an absolute path; "))?;
        return Ok((NbdAddr::Unix(socket.into()), export.to_string(), timeouts));
    }
    let rest = base.strip_prefix("nbd://").ok_or_else(|| bad(""))?;
    if socket.is_some() {
        return Err(bad("socket= is for nbd+unix:// only; "));
    }
    let (hostport, export) = rest.split_once('/').unwrap_or((rest, ""));
    let addr = match hostport.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let host = hostport.trim_start_matches('[').trim_end_matches(']');
            let ip = host
                .parse()
                .map_err(|_| bad(&format!("{hostport:?} is not IP[:PORT]; ")))?;
            SocketAddr::new(ip, 10809)
        }
    };
    Ok((NbdAddr::Tcp(addr), export.to_string(), timeouts))
}

/// A timeout in seconds; 0 turns it off.
fn seconds(uri: &str, key: &str, v: &str) -> Result<Option<Duration>, HandlerError> {
    match v.parse::<f64>() {
        Ok(0.0) => Ok(None),
        Ok(s) if s.is_finite() && (0.001..=86_400.0).contains(&s) => {
            Ok(Some(Duration::from_secs_f64(s)))
        }
        _ => Err(HandlerError::Config(format!(
            "{uri}: {key}={v:?} is not a number of seconds from 0.001 to 86400 (0: no timeout)"
        ))),
    }
}

/// Any QEMU image format, served by a supervised qemu-storage-daemon.
pub struct Qemu;

impl Handler for Qemu {
    handler_identity!(
        "qemu",
        "QEMU",
        "FORMAT/PATH[;KEY=VALUE...], e.g. vmdk//srv/disk.vmdk"
    );
    fn check_config(&self, config: &str) -> Result<(), HandlerError> {
        parse_qemu(config).map(|_| ())
    }
    fn open(&self, req: &OpenRequest<'_>) -> Result<Arc<dyn Backstore>, HandlerError> {
        let cfg = parse_qemu(req.config)?;
        let image = cfg.file.display().to_string();
        match req.size.filter(|s| *s != 0) {
            Some(size) if !exists(&image)? && cfg.key_secret.is_none() => {
                let out = Command::new("qemu-img")
                    .args(["create", "-q", "-f", &cfg.format, &image, &size.to_string()])
                    .output()
                    .map_err(|e| {
                        io_error(&e, format!("cannot run qemu-img to create {image}: {e}"))
                    })?;
                if !out.status.success() {
                    return Err(other_error(format!(
                        "qemu-img create {image}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )));
                }
            }
            _ if !exists(&image)? => {
                return Err(HandlerError::Size(format!(
                    "{image} does not exist (give a size to create it)"
                )))
            }
            _ => {}
        }
        let run_dir = req
            .state_dir
            .map(|d| d.join("qemu"))
            .unwrap_or_else(std::env::temp_dir);
        let opts = QemuOptions {
            name: req.object.to_string(),
            run_dir,
            program: None,
            read_only: req.read_only,
        };
        let q = QemuBackstore::open(cfg, &opts)
            .map_err(|e| other_error(format!("cannot serve {image}: {e}")))?;
        warn_if_size_differs(req, q.size());
        Ok(Arc::new(q))
    }
}

/// Ceph RBD images through librbd (tcmu-runner's `user:rbd`). Registered
/// on every host; opening fails with a message where librbd is missing.
pub struct Rbd;

impl Handler for Rbd {
    handler_identity!(
        "rbd",
        "RBD",
        "pool/image[@snap][;conf=FILE][;id=CLIENT][;osd_op_timeout=S][;alua_group=N]"
    );
    fn check_config(&self, config: &str) -> Result<(), HandlerError> {
        crate::RbdConfig::parse(config)
            .map(|_| ())
            .map_err(HandlerError::Config)
    }
    fn open(&self, req: &OpenRequest<'_>) -> Result<Arc<dyn Backstore>, HandlerError> {
        let cfg = crate::RbdConfig::parse(req.config).map_err(HandlerError::Config)?;
        let err = |e: std::io::Error| io_error(&e, format!("rbd {}: {e}", req.config));
        // alua_group=N: one of several gateways (rbd::gateway).
        let b: Arc<dyn Backstore> = if cfg.alua_group.is_some() {
            Arc::new(crate::RbdGateway::open(&cfg, req.size, req.read_only).map_err(err)?)
        } else {
            Arc::new(crate::RbdBackstore::open(&cfg, req.size, req.read_only).map_err(err)?)
        };
        warn_if_size_differs(req, b.size());
        Ok(b)
    }
}

fn parse_qemu(config: &str) -> Result<QemuConfig, HandlerError> {
    QemuConfig::parse(config).map_err(|e| HandlerError::Config(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nbd_uris() {
        let (a, e) = parse_nbd_uri("nbd://127.0.0.1:10810/disk").unwrap();
        assert_eq!(
            (a, e.as_str()),
            (NbdAddr::Tcp("127.0.0.1:10810".parse().unwrap()), "disk")
        );
        let (a, e) = parse_nbd_uri("nbd://[::1]").unwrap();
        assert_eq!(
            (a, e.as_str()),
            (NbdAddr::Tcp("[::1]:10809".parse().unwrap()), "")
        );
        let (a, e) = parse_nbd_uri("nbd+unix:///exp?socket=/run/n.sock").unwrap();
        assert_eq!(
            (a, e.as_str()),
            (NbdAddr::Unix("/run/n.sock".into()), "exp")
        );
        for bad in [
            "nbd://host.example/x",
            "http://1.2.3.4/",
            "nbd+unix:///x",
            "nbd+unix:///x?socket=rel",
            "nbd://1.2.3.4/x?io_timeout=soon",
            "nbd://1.2.3.4/x?io_timeout=-1",
            "nbd://1.2.3.4/x?connect_timeout=1e9",
            "nbd://1.2.3.4/x?osd_op_timeout=3",
            "nbd://1.2.3.4/x?socket=/a",
        ] {
            assert!(
                matches!(parse_nbd_uri(bad), Err(HandlerError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn nbd_timeouts_from_the_query() {
        let (_, e, t) = parse_nbd_config("nbd://127.0.0.1/disk").unwrap();
        assert_eq!((e.as_str(), t), ("disk", NbdTimeouts::default()));
        assert_eq!(t.io, Some(crate::nbd::DEFAULT_IO_TIMEOUT));
        let (a, e, t) =
            parse_nbd_config("nbd://127.0.0.1:10810/disk?io_timeout=2.5&connect_timeout=0")
                .unwrap();
        assert_eq!(a, NbdAddr::Tcp("127.0.0.1:10810".parse().unwrap()));
        assert_eq!(e, "disk", "the query is not part of the export name");
        assert_eq!(t.io, Some(Duration::from_millis(2500)));
        assert_eq!(t.connect, None);
        let (a, e, t) =
            parse_nbd_config("nbd+unix:///exp?io_timeout=7&socket=/run/n.sock").unwrap();
        assert_eq!(
            (a, e.as_str()),
            (NbdAddr::Unix("/run/n.sock".into()), "exp")
        );
        assert_eq!(t.io, Some(Duration::from_secs(7)));
        assert_eq!(t.connect, Some(crate::nbd::DEFAULT_CONNECT_TIMEOUT));
    }

    /// qcow through the registry: created when missing with a size, an
    /// error without one, reopened with its own size, read-only honoured.
    #[test]
    fn qcow_creates_opens_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("h.qcow2");
        let img = img.to_str().unwrap();
        let req = OpenRequest {
            object: "/backstores/user/h",
            config: img,
            size: None,
            read_only: false,
            state_dir: None,
        };
        assert!(matches!(
            Qcow.check_config("rel.qcow2"),
            Err(HandlerError::Config(_))
        ));
        assert!(matches!(Qcow.open(&req), Err(HandlerError::Size(_))));
        let b = Qcow
            .open(&OpenRequest {
                size: Some(4 << 20),
                ..req
            })
            .unwrap();
        assert_eq!(b.size(), 4 << 20);
        drop(b);
        let ro = Qcow
            .open(&OpenRequest {
                read_only: true,
                ..req
            })
            .unwrap();
        assert!(ro.capabilities().read_only);
    }
}
