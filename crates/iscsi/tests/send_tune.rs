//! The target's end of a connection sends with `TCP_NOTSENT_LOWAT` of
//! 1 MiB (`send_tune.rs`: large Data-In batches are copied into the socket
//! and transmitted in cache-sized steps). The server runs in this process,
//! so its socket is found among our own descriptors and asked directly.

mod common;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use common::*;

/// The port of a TCP socket's address, as getsockname/getpeername give it.
fn port_of(fd: i32, peer: bool) -> Option<u16> {
    // SAFETY: a zeroed sockaddr_in is a valid out-buffer of the given length.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let p = (&mut a as *mut libc::sockaddr_in).cast();
    // SAFETY: `p` points to `len` writable bytes; a non-socket fd fails.
    let r = unsafe {
        match peer {
            true => libc::getpeername(fd, p, &mut len),
            false => libc::getsockname(fd, p, &mut len),
        }
    };
    (r == 0 && a.sin_family == libc::AF_INET as libc::sa_family_t).then(|| u16::from_be(a.sin_port))
}

/// The descriptor of the server's end of the connection from `client`.
fn server_end(server: SocketAddr, client: SocketAddr, own: i32) -> i32 {
    for e in std::fs::read_dir("/proc/self/fd").unwrap() {
        let Ok(fd) = e.unwrap().file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if fd != own
            && port_of(fd, false) == Some(server.port())
            && port_of(fd, true) == Some(client.port())
        {
            return fd;
        }
    }
    panic!("no server socket for {client}");
}

fn int_opt(fd: i32, level: i32, name: i32) -> i32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` is a writable c_int of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0, "getsockopt: {}", std::io::Error::last_os_error());
    v
}

#[test]
fn the_target_end_limits_its_unsent_bytes_to_1_mib() {
    let (_srv, addr) = server(&[]);
    let c = session(addr, &[]);
    let local = c.sock.local_addr().unwrap();
    let fd = server_end(addr, local, c.sock.as_raw_fd());
    assert_eq!(
        int_opt(fd, libc::IPPROTO_TCP, libc::TCP_NOTSENT_LOWAT),
        1 << 20
    );
    // The initiator's own socket is not ours to tune.
    assert_ne!(
        int_opt(
            c.sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT
        ),
        1 << 20
    );
}
