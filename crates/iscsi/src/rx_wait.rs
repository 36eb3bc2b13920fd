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
//!
//! The wait is a `poll`, never a blocking `recv` with the mark: such a
//! `recv` first copies whatever is queued and then sleeps, but the kernel
//! wakes a sleeper only once the queue holds the whole mark again
//! (`tcp_data_ready`), which the rest of the segment, the mark minus what
//! was just copied, never does. Data that arrived between the first
//! non-blocking receive and the wait thus left the thread asleep until its
//! receive timeout (200 ms) with the initiator waiting for it: stalls that
//! cost 1 MiB RBD writes 0.5x (BENCHMARKS.md, "Session 9: the RBD 1 MiB
//! rows"), where the connection thread shares the CPUs with the OSD and
//! the messenger and so more often finds data arriving in that gap.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

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
        let spare = &mut buf.spare_capacity_mut()[..left];
        let n = match (wait, mark) {
            (false, _) => recv(fd, spare, libc::MSG_DONTWAIT),
            (true, false) => recv(fd, spare, 0),
            (true, true) => recv_marked(fd, &mut low, spare, crate::conn::TICK),
        };
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

/// Bytes queued on the socket `fd` for reading (0 if it cannot tell).
pub fn queued(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a pointer to a live int.
    if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } != 0 {
        return 0;
    }
    usize::try_from(n).unwrap_or(0)
}

/// Wait until `bytes` are queued on `fd` with one wake-up (the mark; the
/// kernel wakes earlier when the receive window runs low, or at the end
/// of the stream), at most one receive timeout (`conn::TICK`).
/// `Ok(true)`: readable; `Ok(false)`: timed out; `Err`: the wait failed.
pub fn wait_marked(fd: RawFd, bytes: usize) -> Result<bool, ()> {
    let mut low = LowWater { fd, mark: 1 };
    low.wait_for(bytes);
    match poll_in(fd, crate::conn::TICK) {
        0 => Ok(false),
        n if n < 0 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(())
            }
        }
        _ => Ok(true),
    }
}

/// `poll(2)` for input on `fd` for at most `timeout`: its result (0 on
/// timeout, negative on error with `errno` set).
fn poll_in(fd: RawFd, timeout: Duration) -> libc::c_int {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, ms) }
}

/// `recv(2)` into `spare`: bytes received, 0 at the end of the stream,
/// negative on error (`errno` set).
fn recv(fd: RawFd, spare: &mut [MaybeUninit<u8>], flags: libc::c_int) -> isize {
    // SAFETY: `spare` is writable memory of `spare.len()` bytes; recv
    // writes at most that many into it.
    unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), flags) }
}

/// Sleep until all of `spare` can be filled at once (the mark; earlier if
/// the kernel lets the window run low), or `timeout`, then take what is
/// there without waiting. `poll` compares everything queued with the
/// mark, where a blocking `recv` that copied part of it first would sleep
/// past the rest's arrival (see the module comment). A timeout is
/// `EAGAIN`, like the socket's own receive timeout.
fn recv_marked(
    fd: RawFd,
    low: &mut LowWater,
    spare: &mut [MaybeUninit<u8>],
    timeout: Duration,
) -> isize {
    low.wait_for(spare.len());
    match poll_in(fd, timeout) {
        0 => {
            // SAFETY: errno is thread-local.
            unsafe { *libc::__errno_location() = libc::EAGAIN };
            -1
        }
        n if n < 0 => -1,
        _ => recv(fd, spare, libc::MSG_DONTWAIT),
    }
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

    /// Part of a segment's rest is already queued when the thread goes to
    /// sleep for the rest, which comes a little later: it is woken once
    /// the whole rest is there, not at the receive timeout. (A blocking
    /// receive with the mark copied the queued part, then slept until the
    /// timeout: the kernel waited for the whole mark to be queued again.
    /// A small rest: with a large one the receive window running low
    /// would wake it anyway.)
    #[test]
    fn rest_arriving_after_part_was_queued_wakes_the_receiver() {
        const REST: usize = 8 * 1024;
        let (mut tx, rx) = pair();
        rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let data = pattern();
        tx.write_all(&data[..1000]).unwrap();
        // The first part is in the receiver's queue before the wait starts.
        let mut p = libc::pollfd {
            fd: rx.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 3000) }, 1);
        let rest = data[1000..REST].to_vec();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            tx.write_all(&rest).unwrap();
            tx
        });
        let mut buf: Vec<u8> = Vec::with_capacity(REST);
        let mut low = LowWater {
            fd: rx.as_raw_fd(),
            mark: 1,
        };
        let t0 = Instant::now();
        let spare = &mut buf.spare_capacity_mut()[..REST];
        let n = recv_marked(rx.as_raw_fd(), &mut low, spare, Duration::from_secs(3));
        let took = t0.elapsed();
        drop(low);
        let _tx = writer.join().unwrap();
        assert!(took < Duration::from_secs(1), "woken after {took:?}");
        assert_eq!(n, REST as isize, "the whole rest in one receive");
        // SAFETY: recv initialised the first `n` bytes.
        unsafe { buf.set_len(n as usize) };
        assert!(buf == data[..REST], "bytes differ");
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
