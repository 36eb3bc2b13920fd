//! Opening `user:NAME` objects through the handler registry
//! ([`manage::handlers`], which the config edits share).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use backstore::{Backstore, Handler, OpenRequest};
use config::StorageObject;

pub use manage::handlers::registry;

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
