//! Pauses for integration tests (feature `testing`, enabled only through
//! this crate's own dev-dependency; the daemon never builds it): a test
//! sets a hook to hold a connection thread at one point of a sequence,
//! acts meanwhile, then lets it go, so a window between two steps is
//! reached every time instead of by luck.

use std::sync::{Arc, Mutex};

type Hook = Arc<dyn Fn() + Send + Sync>;

static RESET_WAITED: Mutex<Option<Hook>> = Mutex::new(None);

/// Run `f` in a LOGICAL UNIT / TARGET reset after it waited for the LUs'
/// tasks to finish and before the core resets the LUs (`None`: nothing).
/// Process-wide: one test per binary may use it.
pub fn on_reset_waited(f: Option<Hook>) {
    *RESET_WAITED.lock().unwrap_or_else(|e| e.into_inner()) = f;
}

pub(crate) fn reset_waited() {
    let f = RESET_WAITED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some(f) = f {
        f();
    }
}
