//! State that several targets serving the same medium must agree on (the
//! persistent reservations of an RBD image exported by several gateways):
//! a small versioned blob kept next to the medium, replaced by
//! compare-and-swap and announced to every other holder.
//!
//! The backstore only stores bytes; what they mean is the core's business
//! (`target-core`'s `pr_shared`). A backstore whose medium can be reached
//! by other targets offers one through [`crate::Backstore::shared_state`];
//! every other keeps its state in the process (and the APTPL file).

use std::io;

/// Called when another holder announced a change; returns once the state
/// has been reloaded (the announcer waits for that, within a bound).
pub type ChangeHook = Box<dyn Fn() + Send + Sync>;

/// A versioned blob shared by every target serving one medium.
pub trait SharedState: Send + Sync {
    /// The current blob and its version; `None` while nothing was stored.
    fn load(&self) -> io::Result<Option<(u64, Vec<u8>)>>;

    /// Replace the blob with `data` as version `version + 1` if the stored
    /// one is still `version` (`None`: nothing stored yet). `Ok(false)`:
    /// someone else stored first; reload and try again.
    fn compare_and_swap(&self, version: Option<u64>, data: &[u8]) -> io::Result<bool>;

    /// Tell every other holder a new version is stored, and wait (bounded)
    /// until each has run its [`ChangeHook`]: once this returns, live
    /// holders enforce the new state.
    fn announce(&self);

    /// Run `hook` whenever another holder announces a change (and when
    /// announcements may have been missed, e.g. after a reconnect). A later
    /// call replaces it.
    fn subscribe(&self, hook: ChangeHook);

    /// How long a holder may answer from its cached copy without reloading.
    /// [`Self::announce`] gives up on a holder that does not run its hook in
    /// time (a stopped process whose watch has not expired yet); such a
    /// holder, woken, must not decide on a copy older than the change the
    /// announcer has since answered GOOD for. So it must be shorter than
    /// the time `announce` waits.
    fn cache_for(&self) -> std::time::Duration {
        std::time::Duration::from_secs(1)
    }

    /// This holder's id among the holders (stable for its life).
    fn holder_id(&self) -> u64;

    /// Whether the holder `id` is still alive (watching). A state recorded
    /// by a holder that died can then be treated as that holder's nexus
    /// loss. `true` when it cannot be told.
    fn holder_alive(&self, id: u64) -> bool;
}
