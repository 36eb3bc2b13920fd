//! Which new connections the server takes. Every connection is a thread,
//! and a connection that never logs in costs as much as one that does, so
//! without limits one peer could open idle connections until no other
//! initiator gets in. The limits (README "Limits"):
//!
//! - at most [`MAX_CONNECTIONS`] connections in all (beyond: closed at once);
//! - at most [`MAX_LOGINS_PER_PEER`] connections still in login from one
//!   peer (an IPv4 address, or an IPv6 /64, which one host usually holds);
//!   beyond, that peer's new connections are closed at once;
//! - at most [`MAX_LOGINS`] connections in login from all peers; beyond, the
//!   one that has been logging in longest is closed to make room, so a
//!   flood from many addresses delays a new initiator by no more than its
//!   own login takes;
//! - a login must end within the login timeout (15 s, LIO's, or the TPG's
//!   `login_timeout`), see `login.rs`;
//! - the listen backlog is [`LISTEN_BACKLOG`] (capped by the kernel's
//!   `net.core.somaxconn`): a burst of connections waits in the kernel
//!   instead of having its SYNs dropped (and retried after a second).

use std::collections::HashMap;
use std::net::IpAddr;

/// Most simultaneous connections (each is a thread).
pub const MAX_CONNECTIONS: usize = 4096;
/// Most connections still in login from one peer: above what one host
/// logging in to many targets at once needs (open-iscsi logs in to every
/// node in parallel at boot; arrays that present one target per LU give a
/// host a hundred or more), a quarter of [`MAX_LOGINS`], far below
/// [`MAX_CONNECTIONS`].
pub const MAX_LOGINS_PER_PEER: usize = 256;
/// Most connections still in login from all peers.
pub const MAX_LOGINS: usize = 1024;
/// Backlog of each listening socket.
pub const LISTEN_BACKLOG: i32 = 1024;

/// The address limits apply to: IPv4 addresses (IPv4-mapped IPv6 ones
/// included) as they are, IPv6 addresses by their /64 prefix.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Take it (its login slot is counted).
    Yes,
    /// Take it (counted) and close the connection logging in longest.
    EvictOldest,
    /// Close it: its peer has too many connections in login.
    PeerFull,
}

/// Connections still in login, per peer key and in all.
#[derive(Debug, Default)]
pub struct LoginSlots {
    per_peer: HashMap<IpAddr, usize>,
    total: usize,
}

impl LoginSlots {
    /// Decide on a new connection from `key`; counts it unless refused.
    pub fn admit(&mut self, key: IpAddr) -> Admit {
        let n = self.per_peer.entry(key).or_default();
        if *n >= MAX_LOGINS_PER_PEER {
            return Admit::PeerFull;
        }
        *n += 1;
        self.total += 1;
        if self.total > MAX_LOGINS {
            Admit::EvictOldest
        } else {
            Admit::Yes
        }
    }

    /// A connection from `key` left the login phase (or ended).
    pub fn release(&mut self, key: IpAddr) {
        if let Some(n) = self.per_peer.get_mut(&key) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.per_peer.remove(&key);
            }
        }
    }

    #[cfg(test)]
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_keys() {
        let k = |s: &str| peer_key(s.parse().unwrap());
        assert_eq!(k("192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_eq!(k("2001:db8:1:2::1"), k("2001:db8:1:2:ffff::9"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
    }

    #[test]
    fn per_peer_and_total_limits() {
        let mut s = LoginSlots::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..MAX_LOGINS_PER_PEER {
            assert_eq!(s.admit(a), Admit::Yes);
        }
        assert_eq!(s.admit(a), Admit::PeerFull);
        s.release(a);
        assert_eq!(s.admit(a), Admit::Yes);
        // Many peers: past the total the oldest makes room.
        let mut peers = 0u32;
        while s.total() < MAX_LOGINS {
            let p = IpAddr::V4((u32::from_be_bytes([10, 0, 0, 0]) + peers / 8).into());
            peers += 1;
            assert_eq!(s.admit(p), Admit::Yes);
        }
        assert_eq!(s.admit("10.9.9.9".parse().unwrap()), Admit::EvictOldest);
        s.release(a);
        assert_eq!(s.total(), MAX_LOGINS);
        // Releasing an unknown key changes nothing.
        s.release("203.0.113.1".parse().unwrap());
        assert_eq!(s.total(), MAX_LOGINS);
    }
}
