//! Connections that never log in must not keep other initiators out:
//! thousands of idle TCP connections from one address, or from many, and a
//! fresh initiator from another address still logs in at once.
//!
//! Loopback has all of 127.0.0.0/8, so each "peer" binds its own source
//! address.

mod common;

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;

use common::*;

/// More than the server's 4,096 connection threads.
const FLOOD: usize = 4_200;

/// One flood at a time (each holds thousands of descriptors), with the
/// descriptor limit raised to the hard limit; the flood size that fits.
fn flood_guard() -> (std::sync::MutexGuard<'static, ()>, usize) {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let g = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit with a valid rlimit struct.
    let soft = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur as usize
    };
    // Client side, server side (two per connection in login) and spare.
    let fits = soft.saturating_sub(2_048 + 2 * 1_024);
    if fits < FLOOD {
        println!("descriptor limit {soft}: flooding with {fits} connections only");
    }
    (g, FLOOD.min(fits))
}

/// A TCP connection to `dst` from `src` (any port).
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> TcpStream {
    let SocketAddr::V4(dst) = dst else {
        panic!("IPv4 only")
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns, with
    // a sockaddr_in of the size passed; the descriptor is handed to
    // TcpStream (which closes it) only once connected, closed otherwise.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let a = sin(src, 0);
        let b = sin(*dst.ip(), dst.port());
        if libc::bind(fd, (&a as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (&b as *const libc::sockaddr_in).cast(), len) != 0
        {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            panic!("connect from {src}: {e}");
        }
        TcpStream::from_raw_fd(fd)
    }
}

/// Whether the target closed `s` (EOF or reset) rather than keeping it open.
fn closed_by_target(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// A full login and a command from 127.0.0.1, as any initiator would.
fn fresh_initiator_logs_in(addr: SocketAddr) {
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    c.clear_ua();
    c.logout();
}

#[test]
fn idle_connections_from_one_peer_do_not_lock_others_out() {
    let (_one, flood) = flood_guard();
    let (srv, addr) = server(&[]);
    let flooder = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle: Vec<TcpStream> = (0..flood).map(|_| connect_from(flooder, addr)).collect();
    fresh_initiator_logs_in(addr);
    // The peer keeps a few connections in login; the rest were closed at
    // once (not after the login timeout).
    assert!(!closed_by_target(&mut idle[0]), "within the per-peer limit");
    assert!(closed_by_target(idle.last_mut().unwrap()), "beyond it");
    let refused = srv
        .login_counts()
        .into_iter()
        .find(|c| c.1 == "admission_limit")
        .unwrap();
    assert!(refused.2 > 0, "refusals counted: {refused:?}");
    drop(idle);
    srv.shutdown();
}

#[test]
fn idle_connections_from_many_peers_do_not_lock_others_out() {
    let (_one, flood) = flood_guard();
    let (srv, addr) = server(&[]);
    // 60 connections from each of 70 addresses.
    let idle: Vec<TcpStream> = (0..flood)
        .map(|i| {
            let src = Ipv4Addr::new(127, 0, 1, 2 + (i / 60) as u8);
            connect_from(src, addr)
        })
        .collect();
    fresh_initiator_logs_in(addr);
    // The server still serves sessions that made it in, and logs in again.
    let mut s = session(addr, &[]);
    s.nop(b"alive");
    fresh_initiator_logs_in(addr);
    drop(idle);
    srv.shutdown();
}

#[test]
fn a_login_that_stalls_is_closed_at_the_login_timeout() {
    let s = iscsi::IscsiServer::new();
    let mut t = target(IQN, 1 << 20, &[]);
    // Below LIO's range (5-30): the fabric takes what it is given.
    t.tpgs[0].attributes.login_timeout = 1;
    s.set_target(t);
    let addr = s.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut c = Client::connect(addr);
    // A first request that stays in the security stage, then nothing.
    let (r, _) = c.login_pdu(
        0,
        1,
        false,
        &[("InitiatorName", INITIATOR), ("TargetName", IQN)],
    );
    assert_eq!(r.status_class, 0);
    let t0 = std::time::Instant::now();
    assert!(c.closed());
    let waited = t0.elapsed();
    assert!(
        waited >= std::time::Duration::from_millis(900)
            && waited < std::time::Duration::from_secs(5),
        "closed after {waited:?}"
    );
    s.shutdown();
}
