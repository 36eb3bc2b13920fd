//! Panics counted: a panic in a connection thread or an I/O pool worker
//! does not stop the daemon (the pool and the API catch theirs and answer
//! an error), so nothing outside would notice one but a log line. The
//! daemon installs [`install`] at start; the count is in the API's `ping`
//! answer (`"panics"`) and, when not zero, in the last line of the log at
//! shutdown, so tests can require it to be 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static PANICS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// Counts every panic from now on, in any thread, caught or not; the
/// previous hook (the standard message on stderr) still runs. Idempotent.
pub fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            previous(info);
        }));
    });
}

/// Panics since [`install`].
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic in another thread, even one caught there, is counted.
    #[test]
    fn panics_in_other_threads_are_counted() {
        install();
        let before = count();
        std::thread::spawn(|| {
            let _ = std::panic::catch_unwind(|| panic!("caught on purpose (test)"));
        })
        .join()
        .unwrap();
        assert!(std::thread::spawn(|| panic!("uncaught on purpose (test)"))
            .join()
            .is_err());
        // Other tests of this binary may panic at the same time: at least two.
        assert!(count() >= before + 2, "{} -> {}", before, count());
    }
}
