//! Sending in the middle of a batch, for live lent reads
//! (`crate::lent_read`): the Data-In of a READ answered with a tmpfs file's
//! own pages must be out of the file before the connection runs its next
//! command (a WRITE in the same batch would change it) and before the LU's
//! medium order is let go (WRITE ATOMIC and COMPARE AND WRITE of other
//! sessions wait on it). So the queue is sent at once, without blocking on
//! the socket for more than [`LIVE_WAIT`]; what the socket has not taken
//! by then is copied into the arena — the copy the lending saved, paid only
//! when the initiator is slow to read. That copy is the kernel's
//! (`process_vm_readv`): a page of the file that vanished (truncated by
//! someone else) is an error there, where a user-space read is `SIGBUS`.

use std::io;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::{seg_len, Pos, Seg, TxQueue};

/// Longest wait for socket room while the medium order is held: bounds
/// what an exclusive command of another session waits for a slow reader.
pub const LIVE_WAIT: Duration = Duration::from_millis(20);

impl TxQueue {
    /// The connection's socket, for [`TxQueue::send_live`].
    pub fn bind(&mut self, fd: RawFd) {
        self.fd = Some(fd);
    }

    /// Whether a send in the middle of a batch failed (the next flush
    /// reports it).
    pub fn is_broken(&self) -> bool {
        self.broken.is_some()
    }

    /// Send what is queued now, waiting for room at most [`LIVE_WAIT`];
    /// afterwards no queued byte points into lent memory. The lent bytes
    /// that had to be copied for that. A failed send empties the queue and
    /// the next flush reports it.
    pub fn send_live(&mut self) -> usize {
        if self.broken.is_some() {
            return 0;
        }
        let sent = match self.fd {
            Some(fd) => self.send_for(fd, LIVE_WAIT),
            None => Ok(()),
        };
        match sent.and_then(|()| self.detach_lent()) {
            Ok(copied) => copied,
            Err(e) => {
                self.clear();
                self.broken = Some(e);
                0
            }
        }
    }

    /// Send what the socket takes now, without waiting; the rest stays
    /// queued for the batch's flush. A failed send empties the queue and
    /// the next flush reports it.
    pub fn send_early(&mut self) {
        if self.broken.is_some() {
            return;
        }
        if let Some(fd) = self.fd {
            if let Err(e) = self.send_for(fd, Duration::ZERO) {
                self.clear();
                self.broken = Some(e);
            }
        }
    }

    /// Send from the front until everything is out or `wait` passed; what
    /// was sent leaves the queue.
    fn send_for(&mut self, fd: RawFd, wait: Duration) -> io::Result<()> {
        let deadline = Instant::now() + wait;
        let mut at = Pos::default();
        let result = loop {
            if at.seg >= self.segs.len() {
                break Ok(());
            }
            self.fill_iov(at);
            // SAFETY: all-zero is a valid msghdr (no name, no control).
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = self.iov.as_mut_ptr();
            msg.msg_iovlen = self.iov.len();
            // SAFETY: the iovecs point into `arena`, `bufs` or lent reads
            // held in `bufs`, untouched until sendmsg returns.
            let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() || !writable(fd, left) {
                            break Ok(());
                        }
                        continue;
                    }
                    _ => break Err(e),
                }
            }
            if n == 0 {
                break Err(io::ErrorKind::WriteZero.into());
            }
            self.advance(&mut at, n as usize);
        };
        self.iov.clear();
        if result.is_ok() {
            if at.seg >= self.segs.len() {
                self.clear();
            } else {
                self.trim(at);
            }
        }
        result
    }

    /// Drop what was written before `at` from the queue.
    fn trim(&mut self, at: Pos) {
        let sent = self.segs[..at.seg].iter().map(seg_len).sum::<usize>() + at.skip;
        if at.skip > 0 {
            match &mut self.segs[at.seg] {
                Seg::Arena { off, len } | Seg::Data { off, len, .. } => {
                    *off += at.skip;
                    *len -= at.skip;
                }
                Seg::Lent { ptr, len } => {
                    // SAFETY: skip < len: still inside the lent piece.
                    *ptr = unsafe { ptr.add(at.skip) };
                    *len -= at.skip;
                }
            }
        }
        self.segs.drain(..at.seg);
        self.queued -= sent;
    }

    /// Copy every queued lent byte into the arena (by the kernel); how
    /// many there were.
    fn detach_lent(&mut self) -> io::Result<usize> {
        let mut copied = 0;
        for i in 0..self.segs.len() {
            if let Seg::Lent { ptr, len } = self.segs[i] {
                let off = self.arena.len();
                self.arena.resize(off + len, 0);
                copy_out(ptr, &mut self.arena[off..])?;
                self.segs[i] = Seg::Arena { off, len };
                copied += len;
            }
        }
        Ok(copied)
    }
}

/// Copy `dst.len()` bytes from `src` with the kernel's copy.
fn copy_out(src: *const u8, dst: &mut [u8]) -> io::Result<()> {
    let local = libc::iovec {
        iov_base: dst.as_mut_ptr().cast(),
        iov_len: dst.len(),
    };
    let remote = libc::iovec {
        iov_base: src as *mut libc::c_void,
        iov_len: dst.len(),
    };
    // SAFETY: reads our own address space into `dst`; a bad source page
    // is a short count or EFAULT, never a signal.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != dst.len() {
        return Err(io::Error::other("a lent page vanished (file truncated?)"));
    }
    Ok(())
}

/// Wait until `fd` takes more data (or reports an error), at most `wait`.
fn writable(fd: RawFd, wait: Duration) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, ms) > 0 }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use backstore::{Backstore, FileBackstore, FileOptions};
    use iscsi_wire::{parse_frame, Bhs, Digests, Opcode};

    use super::*;

    const LEN: usize = 4 << 20;
    const SEG: usize = 256 << 10;

    /// A peer that reads nothing yet: what the socket takes goes now, the
    /// rest is copied out of the file, so a write to the file afterwards
    /// does not reach the peer; the flush then sends the rest in order.
    #[test]
    fn what_the_socket_does_not_take_is_copied_and_sent_later_in_order() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let f = FileBackstore::open(&FileOptions {
            size: Some(LEN as u64),
            ..FileOptions::new(dir.path().join("lu.img"))
        })
        .unwrap();
        f.write_at(&vec![0x11; LEN], 0).unwrap();
        let lent = f.read_lent(0, LEN).unwrap().unwrap();
        assert!(lent.is_live());
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut q = TxQueue::new();
        q.bind(a.as_raw_fd());
        let idx = q.adopt(lent);
        let h = Bhs::with_opcode(Opcode::DATA_IN);
        let none = Digests::default();
        for i in 0..LEN / SEG {
            q.push_pdu_ref(&h, idx, i * SEG, SEG, none);
        }
        let copied = q.send_live();
        assert!(copied > 0 && copied < LEN, "copied {copied}");
        assert!(!q.is_empty() && !q.is_broken());
        f.write_at(&vec![0x22; LEN], 0).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        q.flush(&a).unwrap();
        drop(a);
        let got = reader.join().unwrap();
        let mut at = 0;
        let mut data = 0;
        while at < got.len() {
            let fr = parse_frame(&got[at..], none, 1 << 20).unwrap().unwrap();
            assert!(
                fr.data.iter().all(|&x| x == 0x11),
                "PDU at {at}: later bytes"
            );
            data += fr.data.len();
            at += fr.total_len;
        }
        assert_eq!(data, LEN);
    }

    /// A failed send empties the queue and the next flush says so.
    #[test]
    fn a_failed_send_is_reported_by_the_next_flush() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut q = TxQueue::new();
        q.bind(a.as_raw_fd());
        q.push_pdu(&Bhs::with_opcode(Opcode::NOP_IN), b"x", Digests::default());
        assert_eq!(q.send_live(), 0);
        assert!(q.is_empty() && q.is_broken());
        assert!(q.flush(&a).is_err());
        assert!(!q.is_broken());
    }
}
