//! Caller-provided memory for one transfer ([`IoVecs`]): the zero-copy
//! data path of fabrics whose initiator's buffers are mapped into this
//! process (vhost-user: the guest's RAM, a shared memfd). A READ's
//! Data-In is read by the backstore straight into those buffers and a
//! WRITE's Data-Out written from them, with no intermediate `Vec`
//! (`Backstore::read_vectored_at` / `write_vectored_at`; fileio hands the
//! segments to `preadv`/`pwritev`).
//!
//! Safety model. The memory belongs to someone we do not trust (a guest)
//! and may change under us at any time, also while the kernel copies it.
//! So it is never seen as a Rust slice (`&[u8]` would promise it does not
//! change): the segments are raw pointers, handed to the kernel as
//! `iovec`s, or copied with volatile accesses by the bounce helpers below.
//! Reading it into the medium is fine whatever it holds (the initiator
//! gets what it raced itself into); nothing here parses it. The fabric
//! that builds an `IoVecs` promises (`unsafe` [`IoVecs::new`]) that every
//! segment stays mapped and writable while the value lives; `keep` is how
//! it holds that promise across threads (vhost: the `Arc` of the guest
//! memory mapping, so a memory table replaced or a guest gone while a
//! worker still reads cannot unmap the segments under it).

use std::any::Any;
use std::cell::RefCell;
use std::io;
use std::sync::Arc;

use crate::Backstore;

/// What keeps the segments of an [`IoVecs`] mapped.
pub type Keep = Arc<dyn Any + Send + Sync>;

/// A list of raw memory segments lent by a fabric for one transfer (see
/// the module comment for the safety model). A clone shares `keep`.
#[derive(Clone)]
pub struct IoVecs {
    segs: Vec<libc::iovec>,
    len: usize,
    _keep: Option<Keep>,
}

impl std::fmt::Debug for IoVecs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoVecs")
            .field("segments", &self.segs.len())
            .field("len", &self.len)
            .finish()
    }
}

// SAFETY: the segments are plain memory that the constructor's caller
// guarantees stays valid while the value (or a clone of `keep`) lives, on
// any thread; nothing here is tied to the creating thread.
unsafe impl Send for IoVecs {}
// SAFETY: `&IoVecs` only reads the segment list; the memory behind it is
// only reached through the kernel or volatile copies (see module comment).
unsafe impl Sync for IoVecs {}

impl Default for IoVecs {
    fn default() -> Self {
        IoVecs::empty()
    }
}

impl IoVecs {
    /// No memory (a command that moves no data in this direction).
    pub const fn empty() -> IoVecs {
        IoVecs {
            segs: Vec::new(),
            len: 0,
            _keep: None,
        }
    }

    /// # Safety
    /// Each `(ptr, len)` must be valid for reads and writes of `len` bytes
    /// for as long as the returned value lives (`keep` travels with it and
    /// is dropped last). The memory may be changed concurrently by others:
    /// it is never turned into a Rust reference.
    pub unsafe fn new(segs: impl IntoIterator<Item = (*mut u8, usize)>, keep: Keep) -> IoVecs {
        let mut len = 0usize;
        let segs = segs
            .into_iter()
            .filter(|&(_, l)| l > 0)
            .map(|(p, l)| {
                len += l;
                libc::iovec {
                    iov_base: p.cast(),
                    iov_len: l,
                }
            })
            .collect();
        IoVecs {
            segs,
            len,
            _keep: Some(keep),
        }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The segments, for a vectored syscall (`preadv`, `pwritev`): the
    /// kernel is the only one that touches the memory behind them.
    pub fn iovecs(&self) -> &[libc::iovec] {
        &self.segs
    }

    /// Keep only the first `n` bytes (no-op if shorter).
    pub fn truncate(&mut self, n: usize) {
        if n >= self.len {
            return;
        }
        let mut left = n;
        let mut keep = 0;
        for s in self.segs.iter_mut() {
            if left == 0 {
                break;
            }
            s.iov_len = s.iov_len.min(left);
            left -= s.iov_len;
            keep += 1;
        }
        self.segs.truncate(keep);
        self.len = n;
    }

    /// Copy `src` into the segments from their start (volatile writes: the
    /// owner may look at the memory meanwhile). Copies `min(len, src.len())`
    /// bytes and returns that count.
    pub fn copy_from(&self, src: &[u8]) -> usize {
        let mut done = 0;
        for s in &self.segs {
            let n = s.iov_len.min(src.len() - done);
            if n == 0 {
                break;
            }
            // SAFETY: the segment is valid for `iov_len >= n` bytes
            // (constructor contract); `src[done..done + n]` is in bounds.
            unsafe { volatile_copy(src[done..].as_ptr(), s.iov_base.cast(), n) };
            done += n;
        }
        done
    }

    /// Copy all bytes of the segments into `dst` (replacing its contents;
    /// volatile reads: the owner may change the memory meanwhile, and then
    /// `dst` holds some mix, which is all a racing owner can expect).
    pub fn copy_to(&self, dst: &mut Vec<u8>) {
        dst.clear();
        dst.resize(self.len, 0);
        let mut done = 0;
        for s in &self.segs {
            // SAFETY: as in `copy_from`; `dst` has room for `len` bytes.
            unsafe { volatile_copy(s.iov_base.cast(), dst[done..].as_mut_ptr(), s.iov_len) };
            done += s.iov_len;
        }
    }
}

/// Copy `n` bytes with volatile accesses, 8 bytes at a time where the
/// source allows (one side is always memory someone else may write; a
/// plain `copy_nonoverlapping` would let the compiler assume it cannot).
///
/// # Safety
/// `src` valid for `n` reads, `dst` for `n` writes; they do not overlap.
unsafe fn volatile_copy(src: *const u8, dst: *mut u8, n: usize) {
    let mut i = 0;
    // SAFETY (whole body): every access is at an offset below `n`.
    unsafe {
        while i < n && !(src.add(i) as usize).is_multiple_of(8) {
            dst.add(i).write_volatile(src.add(i).read_volatile());
            i += 1;
        }
        while i + 8 <= n {
            let w = src.add(i).cast::<u64>().read_volatile();
            let d = dst.add(i).cast::<u64>();
            if (d as usize).is_multiple_of(8) {
                d.write_volatile(w);
            } else {
                // Unaligned destination: bytewise volatile.
                for (k, b) in w.to_ne_bytes().into_iter().enumerate() {
                    dst.add(i + k).write_volatile(b);
                }
            }
            i += 8;
        }
        while i < n {
            dst.add(i).write_volatile(src.add(i).read_volatile());
            i += 1;
        }
    }
}

thread_local! {
    /// Per-thread bounce buffer of the default vectored methods.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's bounce buffer (taken out while `f` runs, so
/// a nested call gets a fresh one instead of a double borrow).
pub(crate) fn with_bounce<R>(f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let mut buf = BOUNCE.with(|b| std::mem::take(&mut *b.borrow_mut()));
    let r = f(&mut buf);
    // Do not keep a huge one around for good (8 MiB is the core's most).
    if buf.capacity() <= 8 << 20 {
        BOUNCE.with(|b| *b.borrow_mut() = buf);
    }
    r
}

/// `read_vectored_at` through `read_at` and a bounce buffer.
pub(crate) fn bounce_read<B: Backstore + ?Sized>(
    bs: &B,
    bufs: &IoVecs,
    offset: u64,
) -> io::Result<()> {
    with_bounce(|b| {
        b.clear();
        b.resize(bufs.len(), 0);
        bs.read_at(b, offset)?;
        bufs.copy_from(b);
        Ok(())
    })
}

/// `write_vectored_at` through a bounce buffer and `write_at(_fua)`.
pub(crate) fn bounce_write<B: Backstore + ?Sized>(
    bs: &B,
    bufs: &IoVecs,
    offset: u64,
    fua: bool,
) -> io::Result<()> {
    with_bounce(|b| {
        bufs.copy_to(b);
        if fua {
            bs.write_at_fua(b, offset)
        } else {
            bs.write_at(b, offset)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three segments of a buffer we own, with odd lengths and alignments.
    fn segments(mem: &mut [u8]) -> IoVecs {
        let p = mem.as_mut_ptr();
        // SAFETY: the segments lie inside `mem`, which outlives the value
        // in each test.
        unsafe {
            IoVecs::new(
                [(p.add(1), 13), (p.add(20), 0), (p.add(40), 100)],
                Arc::new(()),
            )
        }
    }

    #[test]
    fn copies_across_segments_and_truncates() {
        let mut mem = vec![0u8; 256];
        let v = segments(&mut mem);
        assert_eq!(v.len(), 113);
        assert_eq!(v.iovecs().len(), 2, "empty segments dropped");
        let src: Vec<u8> = (1..=200u8).collect();
        assert_eq!(v.copy_from(&src), 113);
        assert_eq!(&mem[1..14], &src[..13]);
        assert_eq!(mem[14], 0);
        assert_eq!(&mem[40..140], &src[13..113]);
        let v = segments(&mut mem);
        let mut back = Vec::new();
        v.copy_to(&mut back);
        assert_eq!(back, src[..113]);
        let mut t = segments(&mut mem);
        t.truncate(20);
        assert_eq!((t.len(), t.iovecs()[1].iov_len), (20, 7));
        t.copy_to(&mut back);
        assert_eq!(back, src[..20]);
        assert_eq!(t.copy_from(&[9; 3]), 3, "a short source copies what it has");
        assert_eq!(&mem[1..5], &[9, 9, 9, 4]);
    }
}
