//! The handler registry: backstores known by name, as tcmu-runner knows its
//! handlers. A [`Handler`] turns a configuration string into a running
//! [`Backstore`]; registered under `NAME` it appears as
//! `/backstores/user:NAME` in rtarget's tree and is saved in
//! saveconfig.json as rtslib saves tcmu-runner objects: `"plugin": "user"`
//! and `"config": "NAME/<config string>"` (plus `size`).
//!
//! The built-in handlers ([`builtin`]) are `qcow` (the native qcow2
//! engine), `nbd` (the NBD client: any NBD server, any language) and `qemu`
//! (any QEMU image format through a supervised qemu-storage-daemon). A
//! handler written outside this crate registers the same way (see the
//! `handler-example` crate and docs/handlers.md).

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::Backstore;

/// The three identity methods of a [`Handler`] impl (`name`, `product`,
/// `config_help`) from string literals: the built-in handlers and the
/// tests' ones differ only in these. Defined before `builtin` so it can use it.
macro_rules! handler_identity {
    ($name:literal, $product:literal, $help:literal) => {
        fn name(&self) -> &str {
            $name
        }
        fn product(&self) -> &str {
            $product
        }
        fn config_help(&self) -> &str {
            $help
        }
    };
}

pub mod builtin;

/// Why a handler refused a configuration or could not open it.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The configuration string is malformed (found before any I/O).
    #[error("{0}")]
    Config(String),
    /// The object needs a size and none was given, or got one it must not have.
    #[error("{0}")]
    Size(String),
    /// Opening failed (missing file, server unreachable, ...).
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Whether a handler's objects take a `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizePolicy {
    /// Always needed (the handler has no size of its own).
    Required,
    /// Needed only to create a missing medium (image files).
    Optional,
    /// The medium reports it; giving one is an error (NBD servers).
    FromHandler,
}

/// Everything a handler gets to open one storage object.
#[derive(Debug, Clone, Copy)]
pub struct OpenRequest<'a> {
    /// The storage object's tree path, for log lines.
    pub object: &'a str,
    /// The configuration string (after `NAME/`).
    pub config: &'a str,
    /// The saved size, if any.
    pub size: Option<u64>,
    /// Serve read-only whatever the configuration says.
    pub read_only: bool,
    /// rtarget's state directory, for sockets or helper files (`None` when
    /// the daemon runs without one: use the temp dir).
    pub state_dir: Option<&'a Path>,
}

/// A named backstore factory (tcmu-runner's handler).
pub trait Handler: Send + Sync + 'static {
    /// Lower-case name: `[a-z0-9_-]+`, e.g. `qcow`.
    fn name(&self) -> &str;

    /// INQUIRY product identification of its LUs (16 bytes at most).
    fn product(&self) -> &str;

    /// What the configuration string holds, for help and error messages.
    fn config_help(&self) -> &str;

    /// Whether objects take a size.
    fn size_policy(&self) -> SizePolicy {
        SizePolicy::Optional
    }

    /// Check the configuration string's syntax at create time, before
    /// anything is opened. Must not do I/O.
    fn check_config(&self, _config: &str) -> Result<(), HandlerError> {
        Ok(())
    }

    /// Open (or create) the medium. Runs on the management thread, at daemon
    /// start and when an object is created; may block for a while.
    fn open(&self, req: &OpenRequest<'_>) -> Result<Arc<dyn Backstore>, HandlerError>;
}

/// Why a handler could not be registered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    #[error("handler name {0:?} must be lower-case letters, digits, '-' or '_'")]
    BadName(String),
    #[error("a handler named {0:?} is already registered")]
    Duplicate(String),
}

/// Handlers by name.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: BTreeMap<String, Arc<dyn Handler>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The built-in handlers: `nbd`, `qcow`, `qemu`, `rbd`.
    pub fn with_builtin() -> Registry {
        let mut r = Registry::new();
        for h in builtin::all() {
            // Built-in names are valid and distinct (tested below).
            let _ = r.register(h);
        }
        r
    }

    pub fn register(&mut self, h: Arc<dyn Handler>) -> Result<(), RegistryError> {
        let name = h.name().to_string();
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(RegistryError::BadName(name));
        }
        if self.handlers.contains_key(&name) {
            return Err(RegistryError::Duplicate(name));
        }
        self.handlers.insert(name, h);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RamBackstore;

    struct Mem;
    impl Handler for Mem {
        handler_identity!("mem", "MEM", "anything");
        fn size_policy(&self) -> SizePolicy {
            SizePolicy::Required
        }
        fn open(&self, req: &OpenRequest<'_>) -> Result<Arc<dyn Backstore>, HandlerError> {
            let size = req
                .size
                .ok_or_else(|| HandlerError::Size("size is required".into()))?;
            Ok(Arc::new(RamBackstore::new(size)?))
        }
    }

    struct Named(&'static str);
    impl Handler for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn product(&self) -> &str {
            "X"
        }
        fn config_help(&self) -> &str {
            ""
        }
        fn open(&self, _: &OpenRequest<'_>) -> Result<Arc<dyn Backstore>, HandlerError> {
            Err(HandlerError::Config("never".into()))
        }
    }

    #[test]
    fn builtins_are_registered_by_name() {
        let r = Registry::with_builtin();
        assert_eq!(
            r.names().collect::<Vec<_>>(),
            ["nbd", "qcow", "qemu", "rbd"]
        );
        assert_eq!(r.get("qcow").unwrap().product(), "QCOW2");
        assert_eq!(r.get("nbd").unwrap().size_policy(), SizePolicy::FromHandler);
        assert!(r.get("iscsi").is_none());
        let rbd = r.get("rbd").unwrap();
        assert!(rbd.check_config("rbd/disk;osd_op_timeout=5").is_ok());
        assert!(matches!(
            rbd.check_config("disk"),
            Err(HandlerError::Config(_))
        ));
    }

    #[test]
    fn names_are_checked_and_unique() {
        let mut r = Registry::new();
        r.register(Arc::new(Mem)).unwrap();
        assert_eq!(
            r.register(Arc::new(Mem)),
            Err(RegistryError::Duplicate("mem".into()))
        );
        for bad in ["", "Mem", "a/b", "user:x", "a b"] {
            assert_eq!(
                r.register(Arc::new(Named(bad))),
                Err(RegistryError::BadName(bad.into())),
                "{bad:?}"
            );
        }
        let req = OpenRequest {
            object: "/backstores/user/m",
            config: "",
            size: Some(1 << 20),
            read_only: false,
            state_dir: None,
        };
        let b = r.get("mem").unwrap().open(&req).unwrap();
        assert_eq!(b.size(), 1 << 20);
        let e = r
            .get("mem")
            .unwrap()
            .open(&OpenRequest { size: None, ..req })
            .err()
            .unwrap();
        assert!(matches!(e, HandlerError::Size(_)));
    }
}
