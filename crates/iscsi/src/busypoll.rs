//! Opt-in busy polling of a connection's socket (TPG attribute
//! `busy_poll_us`, rtarget's own; 0 = off, the default).
//!
//! A connection thread that finds nothing to read normally blocks in
//! `recv`: the thread sleeps, its CPU may go idle, and the next PDU pays a
//! wake-up (scheduler, and in a VM an idle vCPU's exit and re-entry) on the
//! round trip. With a budget, the thread first retries a non-blocking
//! `recv` for up to that long: a request that arrives within the budget is
//! picked up without any sleep. That trades CPU time (the spin) for the
//! latency of single requests (docs/latency.md has the measurements).

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use crate::conn::RxBuf;

/// Largest budget used (the attribute allows as much): a longer spin is a
/// core lost for what a blocking `recv` does as well.
pub const MAX_BUSY_POLL_US: u32 = 1000;

/// The spin budget of a `busy_poll_us` value; `None`: off.
pub fn budget(us: u32) -> Option<Duration> {
    (us > 0).then(|| Duration::from_micros(u64::from(us.min(MAX_BUSY_POLL_US))))
}

/// Spin on non-blocking receives into `rx` for up to `budget`. `Some`:
/// what one receive returned (bytes, 0 at end of stream, or an error
/// other than "nothing yet"); `None`: the budget ran out with nothing
/// received, go block.
pub fn poll(
    rx: &mut RxBuf,
    fd: RawFd,
    need: usize,
    max: usize,
    budget: Duration,
) -> Option<io::Result<usize>> {
    let start = Instant::now();
    loop {
        match rx.fill_upto_nonblocking(fd, need, max) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return Some(r),
        }
        if start.elapsed() >= budget {
            return None;
        }
        // Spin politely: a thread of the initiator (or anything else)
        // waiting for this CPU runs first; on an idle CPU this returns at
        // once.
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn budget_is_off_at_zero_and_capped() {
        assert_eq!(budget(0), None);
        assert_eq!(budget(50), Some(Duration::from_micros(50)));
        assert_eq!(budget(5000), Some(Duration::from_micros(1000)));
    }

    #[test]
    fn nothing_to_read_gives_up_after_the_budget() {
        let (_peer, s) = pair();
        let mut rx = RxBuf::new();
        let t = Instant::now();
        let got = poll(
            &mut rx,
            s.as_raw_fd(),
            0,
            usize::MAX,
            Duration::from_millis(5),
        );
        assert!(got.is_none());
        assert!(t.elapsed() >= Duration::from_millis(5));
        assert!(rx.data().is_empty());
    }

    #[test]
    fn data_arriving_during_the_spin_is_received() {
        let (mut peer, s) = pair();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2));
            peer.write_all(b"0123456789abcdef").unwrap();
            peer
        });
        let mut rx = RxBuf::new();
        // A generous budget: the data comes long before it runs out.
        let mut got = 0;
        while got < 16 {
            match poll(
                &mut rx,
                s.as_raw_fd(),
                0,
                usize::MAX,
                Duration::from_secs(10),
            ) {
                Some(Ok(n)) if n > 0 => got += n,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(rx.data(), b"0123456789abcdef");
        // End of stream is reported, not spun on.
        drop(writer.join().unwrap());
        let eof = poll(
            &mut rx,
            s.as_raw_fd(),
            0,
            usize::MAX,
            Duration::from_secs(10),
        );
        assert!(matches!(eof, Some(Ok(0))), "{eof:?}");
    }
}
