//! Opening the NBD client's sockets with bounded waits: a server that hangs
//! (accepts and never answers, is stopped, or its listen queue is full)
//! makes connects and requests fail with `TimedOut` after a set time, so
//! workers and shutdown are never held by it forever.

use std::io;
use std::mem;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::proto::Stream;
use super::NbdAddr;

/// How long the NBD client waits for its server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NbdTimeouts {
    /// Connecting (TCP handshake; a unix listener with a full queue).
    /// `None`: wait as long as the kernel does.
    pub connect: Option<Duration>,
    /// Longest the server may take to accept or send any bytes of the
    /// handshake, a request or its reply; past it the request fails and
    /// the connection is dropped (the next request opens a new one).
    /// `None`: wait forever.
    pub io: Option<Duration>,
}

/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default I/O timeout: the SCSI layer of a Linux initiator gives a command
/// 30 s before aborting it, so waiting longer helps no one.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for NbdTimeouts {
    fn default() -> Self {
        NbdTimeouts {
            connect: Some(DEFAULT_CONNECT_TIMEOUT),
            io: Some(DEFAULT_IO_TIMEOUT),
        }
    }
}

/// A socket read or write that ran into its timeout says EAGAIN; say
/// what happened instead.
pub(super) fn explain(e: io::Error, t: &NbdTimeouts) -> io::Error {
    match (e.kind(), t.io) {
        (io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut, Some(d)) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the NBD server did not answer within {d:?}"),
        ),
        _ => e,
    }
}

pub(super) fn open(addr: &NbdAddr, t: &NbdTimeouts) -> io::Result<Box<dyn Stream>> {
    Ok(match addr {
        NbdAddr::Unix(p) => {
            let s = unix_connect(p, t.connect)?;
            s.set_read_timeout(t.io)?;
            s.set_write_timeout(t.io)?;
            Box::new(s)
        }
        NbdAddr::Tcp(a) => {
            let s = match t.connect {
                Some(d) => TcpStream::connect_timeout(a, d),
                None => TcpStream::connect(a),
            }?;
            s.set_nodelay(true)?;
            s.set_read_timeout(t.io)?;
            s.set_write_timeout(t.io)?;
            Box::new(s)
        }
    })
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// `UnixStream::connect` with a bound: Linux makes a unix stream connect
/// wait for room in a full listen queue for up to the socket's send
/// timeout (then EAGAIN), so set that first.
fn unix_connect(path: &Path, timeout: Option<Duration>) -> io::Result<UnixStream> {
    // SAFETY: plain syscall; the descriptor is owned right below.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Some(d) = timeout {
        let tv = libc::timeval {
            tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
            // At least 1 µs: a zero timeval would mean "no timeout".
            tv_usec: libc::suseconds_t::from(d.subsec_micros().max(u32::from(d.is_zero()))),
        };
        // SAFETY: the option value points at a live timeval of the given size.
        cvt(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
    }
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= sa.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: socket path too long", path.display()),
        ));
    }
    for (d, s) in sa.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    loop {
        // SAFETY: `sa` is a valid sockaddr_un and `len` does not exceed its size.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_un as *const libc::sockaddr,
                len as libc::socklen_t,
            )
        };
        match cvt(r) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{}: the NBD server's listen queue stayed full for {:?}",
                        path.display(),
                        timeout.unwrap_or_default()
                    ),
                ))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    /// A listener whose queue is full (backlog 0, one connection pending
    /// and never accepted): the next connect gives up at the timeout.
    #[test]
    fn unix_connect_to_a_full_queue_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let l = UnixListener::bind(&p).unwrap();
        // SAFETY: plain syscall on the listener's descriptor.
        assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
        let mut held = Vec::new();
        let t = Instant::now();
        let e = loop {
            match unix_connect(&p, Some(Duration::from_millis(200))) {
                Ok(s) => held.push(s),
                Err(e) => break e,
            }
            assert!(held.len() < 64, "the queue never filled");
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        drop(l);
    }
}
