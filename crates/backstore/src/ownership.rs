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

    /// This gateway's state for `ls` and `sessions` (as last seen; no
    /// cluster round trip). None by default.
    fn report(&self) -> Option<GatewayReport> {
        None
    }
}

/// A gateway's state as `ls`, `sessions` and the cluster's service map
/// (`ceph service dump`) show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayReport {
    /// What it serves (`pool/image`).
    pub medium: String,
    /// Its target port group.
    pub group: u16,
    /// It holds the medium (the RBD exclusive lock) and is not fenced.
    pub lock_owner: bool,
    /// Who owns the medium, as last seen.
    pub owner: Owner,
    /// Times it took the medium over (failovers to this gateway).
    pub failovers: u64,
    /// Times it was fenced (another gateway took the medium).
    pub fenced: u64,
    /// The peers it blocklisted when it took the medium over, oldest first.
    pub blocklisted: Vec<String>,
}

impl GatewayReport {
    fn owner_name(&self) -> String {
        match self.owner {
            Owner::Nobody => "nobody".into(),
            Owner::Group(g) => format!("group {g}"),
            Owner::Elsewhere => "another gateway".into(),
        }
    }

    /// One line: `ls`' summary and `sessions`' gateway line.
    pub fn summary(&self) -> String {
        let peers = if self.blocklisted.is_empty() {
            "none".to_string()
        } else {
            self.blocklisted.join(" ")
        };
        format!(
            "gateway group {}, lock owner {}, owner {}, failovers {}, fenced {}, blocklisted {peers}",
            self.group,
            if self.lock_owner { "yes" } else { "no" },
            self.owner_name(),
            self.failovers,
            self.fenced,
        )
    }

    /// The service map's status dictionary.
    pub fn status(&self) -> Vec<(String, String)> {
        [
            (
                "lock_owner",
                (if self.lock_owner { "yes" } else { "no" }).to_string(),
            ),
            ("owner", self.owner_name()),
            ("failovers", self.failovers.to_string()),
            ("fenced", self.fenced.to_string()),
            ("blocklisted", self.blocklisted.join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
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

    #[test]
    fn gateway_reports_read_alike_everywhere() {
        let mut r = GatewayReport {
            medium: "rbd/img".into(),
            group: 2,
            lock_owner: true,
            owner: Owner::Group(2),
            failovers: 1,
            fenced: 0,
            blocklisted: vec!["127.0.0.1:0/11".into(), "127.0.0.1:0/12".into()],
        };
        assert_eq!(
            r.summary(),
            "gateway group 2, lock owner yes, owner group 2, failovers 1, fenced 0, \
             blocklisted 127.0.0.1:0/11 127.0.0.1:0/12"
        );
        let st = r.status();
        assert_eq!(st[0], ("lock_owner".into(), "yes".into()));
        assert_eq!(
            st[4],
            ("blocklisted".into(), "127.0.0.1:0/11,127.0.0.1:0/12".into())
        );
        r.lock_owner = false;
        r.owner = Owner::Elsewhere;
        r.blocklisted.clear();
        assert!(r.summary().ends_with(
            "lock owner no, owner another gateway, failovers 1, fenced 0, blocklisted none"
        ));
    }
}
