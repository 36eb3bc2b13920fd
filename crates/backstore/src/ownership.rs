//! A medium served by several gateways at once, of which one at a time
//! owns it (an RBD image's exclusive lock, `rbd::RbdGateway`). The core
//! turns ownership into implicit ALUA: the owner's target port group is
//! active/optimized, every other group active/non-optimized, on every
//! gateway alike.
//!
//! Also the error a backstore answers with when this path lost access to
//! the medium (fenced by another gateway, the lock lost, reconnecting):
//! [`path_lost`]. The core answers it with NOT READY, ASYMMETRIC ACCESS
//! STATE TRANSITION (04/0A), as tcmu-runner does for a fenced device: Linux's
//! scsi_dh_alua re-reads the port groups and retries, and dm-multipath
//! moves the I/O to another path (BLK_STS_TRANSPORT), instead of the
//! medium error a plain I/O failure would be.

use std::io;

/// Run by the backstore after the owner changed (acquired, lost, fenced).
pub type OwnerHook = Box<dyn Fn() + Send + Sync>;

/// Who owns a medium ([`Ownership::owner`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Nobody (yet): the configured ALUA states stand.
    Nobody,
    /// The gateway of this target port group.
    Group(u16),
    /// Another gateway, not known which (this one was fenced and cannot
    /// read the record yet): this gateway's group is not optimized.
    Elsewhere,
}

pub trait Ownership: Send + Sync {
    /// The target port group id of this gateway.
    fn local_group(&self) -> u16;

    /// Who owns the medium, as last seen (`refresh`: read it from the
    /// cluster first).
    fn owner(&self, refresh: bool) -> Owner;

    /// Become the owner because an initiator asked for this gateway's group
    /// to be active/optimized (SET TARGET PORT GROUPS). Unlike the implicit
    /// takeover a write does, this also takes the medium back from a live
    /// owner. Blocks until done.
    fn take_over(&self) -> io::Result<()>;

    /// Run `hook` whenever the owner changes (replaces an earlier hook).
    fn on_change(&self, hook: OwnerHook);
}

/// The marker inside a [`path_lost`] error.
#[derive(Debug)]
struct PathLost(String);

impl std::fmt::Display for PathLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PathLost {}

/// This path cannot reach the medium now; another may (see the module).
pub fn path_lost(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, PathLost(why.into()))
}

/// Whether `e` came from [`path_lost`].
pub fn is_path_lost(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<PathLost>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lost_is_recognised_and_nothing_else() {
        let e = path_lost("fenced");
        assert!(is_path_lost(&e));
        assert_eq!(e.to_string(), "fenced");
        assert!(!is_path_lost(&io::Error::from(io::ErrorKind::NotConnected)));
        assert!(!is_path_lost(&io::Error::other("fenced")));
    }
}
