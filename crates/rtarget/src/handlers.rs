//! The daemon's handler registry: every `user:NAME` backstore opens through
//! the [`backstore::Handler`] registered under NAME. The built-in handlers
//! (`qcow`, `nbd`, `qemu`) and the example handler `pattern` (the
//! `handler-example` crate) are registered here; a new handler is one
//! `register` line (docs/handlers.md). Registered names appear under
//! `/backstores` as `user:NAME` and are saved as rtslib saves tcmu-runner
//! objects: `"plugin": "user"`, `"config": "NAME/<config string>"`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::{anyhow, Context, Result};
use backstore::{Backstore, Handler, OpenRequest, Registry};
use config::StorageObject;

/// The process-wide registry (built on first use, then read-only).
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut r = Registry::with_builtin();
        if let Err(e) = r.register(Arc::new(handler_example::PatternHandler)) {
            tracing::error!(error = %e, "cannot register the pattern handler");
        }
        r
    })
}

/// `user:NAME` for every registered handler, sorted.
pub fn user_plugins() -> Vec<String> {
    registry().names().map(|n| format!("user:{n}")).collect()
}

/// Open a user object with its handler. `pr_dir` is `<state-dir>/pr`; the
/// handler gets the state directory itself.
pub fn open_user(
    h: &dyn Handler,
    so: &StorageObject,
    config: &str,
    pr_dir: Option<&Path>,
) -> Result<Arc<dyn Backstore>> {
    let read_only = so.readonly.unwrap_or(false)
        || config::ObjectAttributes::parse(&so.attributes)
            .map_err(|e| anyhow!(e.join("; ")))?
            .readonly;
    let object = so.path();
    let req = OpenRequest {
        object: &object,
        config,
        size: so.size.filter(|s| *s != 0),
        read_only,
        state_dir: pr_dir.and_then(Path::parent),
    };
    h.open(&req)
        .with_context(|| format!("user:{} handler, config {config:?}", h.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_and_example_handlers_are_registered() {
        assert_eq!(
            user_plugins(),
            ["user:nbd", "user:pattern", "user:qcow", "user:qemu"]
        );
    }

    #[test]
    fn user_objects_open_through_their_handler() {
        let so = StorageObject {
            plugin: "user".into(),
            name: "p".into(),
            size: Some(1 << 20),
            ..StorageObject::default()
        };
        let h = registry().get("pattern").unwrap();
        let b = open_user(h.as_ref(), &so, "seed=5", None).unwrap();
        assert_eq!(b.size(), 1 << 20);
        let e = open_user(h.as_ref(), &so, "bogus", None).err().unwrap();
        assert!(format!("{e:#}").contains("user:pattern handler"), "{e:#}");
    }
}
