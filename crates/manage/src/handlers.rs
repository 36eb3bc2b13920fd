//! The handler registry: every `user:NAME` backstore opens through the
//! [`backstore::Handler`] registered under NAME. The built-in handlers
//! (`qcow`, `nbd`, `qemu`, `rbd`) and the example handler `pattern` (the
//! `handler-example` crate) are registered here; a new handler is one
//! `register` line (docs/handlers.md). Registered names appear under
//! `/backstores` as `user:NAME` and are saved as rtslib saves tcmu-runner
//! objects: `"plugin": "user"`, `"config": "NAME/<config string>"`. The
//! config edits check a new object's config string with its handler; the
//! daemon opens objects through it.

use std::sync::{Arc, OnceLock};

use backstore::Registry;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_and_example_handlers_are_registered() {
        assert_eq!(
            user_plugins(),
            [
                "user:nbd",
                "user:pattern",
                "user:qcow",
                "user:qemu",
                "user:rbd"
            ]
        );
    }
}
