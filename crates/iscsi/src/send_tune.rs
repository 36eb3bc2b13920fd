//! How the connection's socket sends: `TCP_NOTSENT_LOWAT` of [`NOTSENT_LOWAT`].
//!
//! A batch of large READs leaves in one `writev` of up to 8 MiB
//! (`txq::FLUSH_THRESHOLD`). Without a low-water mark the kernel copies
//! the whole batch into socket buffers first and pushes it out in bursts
//! of half a window, so by the time a burst is transmitted (over loopback:
//! delivered to the initiator and copied out by it) its buffers have left
//! the CPU caches. With the mark the send waits inside the same `writev`
//! whenever more than [`NOTSENT_LOWAT`] bytes are queued unsent, which
//! pushes what is queued: copy and transmit alternate in ~1 MiB steps on
//! buffers still in cache. The `writev` still returns only when all is
//! queued, so nothing else changes for the connection; sent-but-unacked
//! data is not limited (the window is not), only the unsent backlog.
//!
//! Measured (BENCHMARKS.md, "Session 11: the sending side of 1 MiB READs"):
//! bench/tcp-ceiling.c, 1 MiB answers at QD8 over loopback, sender CPU
//! 267 -> 217 µs per MiB, receiver 130 -> 112, 1.23x messages/s; 256 KiB
//! makes the send wait too often (313 µs), 4 MiB is as without (269 µs).
//! Small answers never reach the mark: 4 KiB rows are unaffected.

use std::os::fd::RawFd;

/// Unsent bytes the socket may hold before a send waits for them to go.
pub const NOTSENT_LOWAT: libc::c_int = 1 << 20;

/// Apply the sending options to a connection's socket. Failure (a kernel
/// without `TCP_NOTSENT_LOWAT`) only costs the speed-up.
pub fn tune(fd: RawFd) {
    let v = NOTSENT_LOWAT;
    // SAFETY: a valid option value of its declared size on a socket fd
    // the caller owns.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}
