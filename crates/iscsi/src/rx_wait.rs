//! Receiving the rest of a large data segment straight into a task buffer
//! (`direct`) with one wake-up instead of one per arriving piece.
//!
//! A blocking `recv` returns as soon as any byte is there, so a thread
//! that outruns its initiator sleeps and is woken for every few segments
//! the initiator's `send` delivers. On loopback (and wherever the
//! initiator shares the CPUs) the initiator pays for every such wake-up
//! in its own `send`, and on the 2-core bench it is the bottleneck: with
//! the receive into place and the non-temporal ramdisk copy making the
//! target faster, it waited more and 1 MiB ramdisk writes fell to 0.86x
//! (BENCHMARKS.md, "Session 8: the 1 MiB write wake-ups"). The segment
//! is useless to us until it is complete, so the wait asks the kernel
//! (`SO_RCVLOWAT`) to wake the thread only when the whole rest is there
//! (it wakes it earlier when the receive window runs low, so the socket
//! never stalls). Data already there is taken without a wait first.

use std::io;
use std::os::fd::RawFd;
use std::time::Instant;

/// The socket's receive low-water mark while a segment's rest is awaited;
/// back to 1 (the default every other receive of the connection expects)
/// when dropped.
struct LowWater {
    fd: RawFd,
    mark: usize,
}

impl LowWater {
    /// Wake the next blocking receive only once `bytes` are queued. Never
    /// more than what is still missing: a mark above it would keep the
    /// thread asleep with the segment complete, until the timeout.
    fn wait_for(&mut self, bytes: usize) {
        if bytes != self.mark {
            set_rcvlowat(self.fd, bytes);
            self.mark = bytes;
        }
    }
}

impl Drop for LowWater {
    fn drop(&mut self) {
        if self.mark != 1 {
            set_rcvlowat(self.fd, 1);
        }
    }
}

/// Failure (a kernel without it for TCP) only costs the wake-ups.
fn set_rcvlowat(fd: RawFd, bytes: usize) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid option value of its declared size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Receive into `buf` until it holds `until` bytes, from a socket with a
/// receive timeout: `idle` runs whenever that passes with the segment
/// incomplete (NOP-In pings, stop requests; `Err` gives up), `last_rx`
/// is when data last came. Returns how many receives brought data.
/// `mark`: wait for the whole rest with one wake-up (else, as a plain
/// blocking receive, for whatever arrives).
/// `Err`: the connection ends (closed, failed, given up).
pub fn recv_rest(
    fd: RawFd,
    buf: &mut Vec<u8>,
    until: usize,
    mark: bool,
    last_rx: &mut Instant,
    mut idle: impl FnMut(Instant) -> Result<(), ()>,
) -> Result<u32, ()> {
    let mut low = LowWater { fd, mark: 1 };
    let mut receives = 0;
    let mut wait = false;
    while buf.len() < until {
        let left = until - buf.len();
        let flags = if wait {
            if mark {
                low.wait_for(left);
            }
            0
        } else {
            libc::MSG_DONTWAIT
        };
        let spare = &mut buf.spare_capacity_mut()[..left];
        // SAFETY: `spare` is writable memory owned by `buf` of the given
        // length; recv writes at most that many bytes into it.
        let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), flags) };
        match n {
            0 => return Err(()),
            n if n > 0 => {
                // SAFETY: recv initialised the first `n` (<= spare.len())
                // bytes after the old length.
                unsafe { buf.set_len(buf.len() + n as usize) };
                *last_rx = Instant::now();
                receives += 1;
                // Whatever is missing now is still on its way.
                wait = true;
            }
            _ => {
                let e = io::Error::last_os_error();
                if !wait && e.kind() == io::ErrorKind::WouldBlock {
                    wait = true;
                } else if !crate::conn::is_timeout(&e) {
                    return Err(());
                } else {
                    idle(*last_rx)?;
                }
            }
        }
    }
    Ok(receives)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::sync::mpsc;
    use std::time::Duration;

    const SEG: usize = 256 * 1024;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let tx = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (rx, _) = l.accept().unwrap();
        rx.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        (tx, rx)
    }

    fn pattern() -> Vec<u8> {
        (0..SEG).map(|i| (i % 251) as u8).collect()
    }

    fn rcvlowat(s: &TcpStream) -> libc::c_int {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid out pointer and its length.
        let r = unsafe {
            libc::getsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        v
    }

    /// An initiator sends a segment in 16 pieces at a slower pace than
    /// the reader (which must wait); returns how many receives brought
    /// data, after checking the bytes and that the mark is back to 1.
    fn trickle(mark: bool) -> u32 {
        let (mut tx, rx) = pair();
        let data = pattern();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            for piece in sent.chunks(SEG / 16) {
                tx.write_all(piece).unwrap();
                std::thread::sleep(Duration::from_millis(3));
            }
            tx
        });
        let mut buf = Vec::with_capacity(SEG);
        let mut last = Instant::now();
        let n = recv_rest(rx.as_raw_fd(), &mut buf, SEG, mark, &mut last, |_| Ok(())).unwrap();
        let _tx = writer.join().unwrap();
        assert!(buf == data, "bytes differ");
        assert_eq!(rcvlowat(&rx), 1, "the mark is restored");
        n
    }

    /// A trickled segment wakes the receiver a few times, not once per
    /// piece (without the low-water mark: ~16).
    #[test]
    fn a_trickled_segment_wakes_the_receiver_a_few_times() {
        let n = trickle(true);
        assert!(n <= 5, "{n} receives for 16 pieces");
    }

    /// Without the mark (a connection with engine tasks in flight, whose
    /// completions must not wait for a whole segment: 1 MiB RBD writes)
    /// the receiver is woken for what arrives, as a plain blocking receive.
    #[test]
    fn without_the_mark_each_piece_wakes_the_receiver() {
        let n = trickle(false);
        assert!(n >= 8, "{n} receives: a mark held the rest back");
    }

    /// A segment that stops arriving halfway: the timeout still comes
    /// (NOP-In pings go out), and the rest completes it.
    #[test]
    fn a_stalled_segment_times_out_then_completes() {
        let (mut tx, rx) = pair();
        let data = pattern();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            tx.write_all(&sent[..SEG / 2]).unwrap();
            go_rx.recv().unwrap();
            tx.write_all(&sent[SEG / 2..]).unwrap();
            tx
        });
        let mut buf = Vec::with_capacity(SEG);
        let mut last = Instant::now();
        let mut idles = 0;
        recv_rest(rx.as_raw_fd(), &mut buf, SEG, true, &mut last, |_| {
            idles += 1;
            let _ = go_tx.send(());
            Ok(())
        })
        .unwrap();
        let _tx = writer.join().unwrap();
        assert!(buf == data, "bytes differ");
        assert!(idles >= 1);
        assert_eq!(rcvlowat(&rx), 1);
    }

    #[test]
    fn end_of_stream_and_giving_up_are_errors() {
        let (mut tx, rx) = pair();
        tx.write_all(&[1, 2, 3]).unwrap();
        drop(tx);
        let mut buf = Vec::with_capacity(16);
        let mut last = Instant::now();
        assert!(recv_rest(rx.as_raw_fd(), &mut buf, 16, true, &mut last, |_| Ok(())).is_err());
        assert_eq!(buf, [1, 2, 3]);

        let (_tx, rx) = pair();
        let mut buf = Vec::with_capacity(16);
        assert!(recv_rest(rx.as_raw_fd(), &mut buf, 16, true, &mut last, |_| Err(())).is_err());
        assert_eq!(rcvlowat(&rx), 1);
    }
}
