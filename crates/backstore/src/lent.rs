//! Reads a backstore answers by lending its own memory instead of copying
//! it ([`Backstore::read_lent`]): the fabric sends Data-In straight from
//! the pieces (one `writev`), so a 1 MiB READ from a ramdisk costs no
//! user-space copy.
//!
//! A [`LentRead`] is usually a snapshot: every piece is reference counted
//! and the backstore never changes bytes a lent piece can see (the ramdisk
//! copies a chunk on write while a reader still holds it, see `ram`), so a
//! READ returns exactly the data of the moment it ran, never a block torn
//! by a WRITE that ran while its Data-In was still being sent.
//!
//! A *live* one ([`LentRead::is_live`]: a tmpfs file's pages, through its
//! mapping, see `file::landing`) shows the medium itself: a later write
//! changes what it shows, and a page can vanish under it (the file
//! truncated elsewhere). Its bytes must be copied out by the kernel only
//! (`writev`, `process_vm_readv`: a vanished page is `EFAULT` there, where
//! a user-space read is `SIGBUS`), and before anything ordered after the
//! READ runs: the core holds the LU's medium order until the fabric has
//! done so (`target_core::LentAnswer`).
//!
//! [`Backstore::read_lent`]: crate::Backstore::read_lent

use std::sync::Arc;

/// Memory a backstore lends: alive as long as one of these exists.
pub type LentBytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Zeroes to lend for ranges that hold no data (never written): in .bss,
/// so its pages are the kernel's zero page until something reads them.
static ZEROES: [u8; ZERO_LEN] = [0; ZERO_LEN];
const ZERO_LEN: usize = 1 << 20;

#[derive(Clone)]
enum Piece {
    Mem {
        bytes: LentBytes,
        off: usize,
        len: usize,
    },
    Zero(usize),
}

/// The bytes of one READ as a list of lent pieces, in order.
#[derive(Clone, Default)]
pub struct LentRead {
    pieces: Vec<Piece>,
    len: usize,
    live: bool,
}

impl LentRead {
    pub fn new() -> LentRead {
        LentRead::default()
    }

    /// A read whose pieces show the medium itself (see the module comment).
    pub fn live() -> LentRead {
        LentRead {
            live: true,
            ..LentRead::default()
        }
    }

    /// Whether later writes can change these bytes (see the module
    /// comment): send them before running anything ordered after the READ,
    /// and never read them in user space.
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Append `bytes[off..off + len]` (which must lie inside `bytes`).
    pub fn push(&mut self, bytes: LentBytes, off: usize, len: usize) {
        assert!(
            off + len <= (*bytes).as_ref().len(),
            "lent piece out of bounds"
        );
        if len > 0 {
            self.pieces.push(Piece::Mem { bytes, off, len });
            self.len += len;
        }
    }

    /// Append `len` zero bytes.
    pub fn push_zeroes(&mut self, mut len: usize) {
        self.len += len;
        while len > 0 {
            let n = len.min(ZERO_LEN);
            self.pieces.push(Piece::Zero(n));
            len -= n;
        }
    }

    /// Bytes in all pieces.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drop everything past the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let mut kept = 0;
        let mut n = 0;
        for p in &mut self.pieces {
            if kept == len {
                break;
            }
            let l = match p {
                Piece::Mem { len: l, .. } | Piece::Zero(l) => l,
            };
            *l = (*l).min(len - kept);
            kept += *l;
            n += 1;
        }
        self.pieces.truncate(n);
        self.len = len;
    }

    /// The pieces as slices, in order.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.pieces.iter().map(|p| match p {
            Piece::Mem { bytes, off, len } => &(**bytes).as_ref()[*off..*off + *len],
            Piece::Zero(n) => &ZEROES[..*n],
        })
    }

    /// The slices covering bytes `[off, off + len)` of the read, in order
    /// (a Data-In PDU's segment may span pieces).
    pub fn range(&self, off: usize, len: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let end = off + len;
        let mut pos = 0usize;
        self.slices().filter_map(move |s| {
            let (start, stop) = (pos, pos + s.len());
            pos = stop;
            let a = off.max(start);
            let b = end.min(stop);
            (a < b).then(|| &s[a - start..b - start])
        })
    }

    /// Copy everything into `out` (replacing its contents).
    pub fn copy_to(&self, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.len);
        for s in self.slices() {
            out.extend_from_slice(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: Vec<u8>) -> LentBytes {
        Arc::new(v.into_boxed_slice())
    }

    #[test]
    fn ranges_span_pieces_and_zeroes() {
        let mut r = LentRead::new();
        r.push(bytes((0..10).collect()), 2, 6); // 2..8
        r.push_zeroes(3);
        r.push(bytes(vec![9; 4]), 0, 4);
        assert_eq!(r.len(), 13);
        let mut all = Vec::new();
        r.copy_to(&mut all);
        assert_eq!(all, [2, 3, 4, 5, 6, 7, 0, 0, 0, 9, 9, 9, 9]);
        let mid: Vec<u8> = r.range(4, 7).flatten().copied().collect();
        assert_eq!(mid, all[4..11]);
        assert_eq!(r.range(4, 7).count(), 3, "one slice per piece touched");
        r.truncate(7);
        r.copy_to(&mut all);
        assert_eq!(all, [2, 3, 4, 5, 6, 7, 0]);
    }

    #[test]
    fn long_zero_runs_split() {
        let mut r = LentRead::new();
        r.push_zeroes(ZERO_LEN * 2 + 5);
        assert_eq!(r.slices().count(), 3);
        assert!(r.slices().flatten().all(|&b| b == 0));
    }
}
