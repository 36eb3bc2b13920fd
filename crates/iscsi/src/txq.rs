//! Outgoing PDU queue of one connection. Responses produced while draining
//! one receive batch are queued here and leave in ONE `writev` (more only
//! for partial writes or more than IOV_MAX pieces). Headers, digests,
//! padding and small data segments (sense, text) are copied into one byte
//! arena; bulk Data-In stays in pooled buffers that the queue owns until the
//! flush and then recycles, so a read costs no copy and no allocation.
//! A READ a backstore answered with its own memory ([`LentRead`], e.g. a
//! ramdisk) is queued as is: its pieces go to `writev` directly and are
//! released after the flush, so its bytes are copied once, by the kernel.

use std::io;
use std::os::fd::AsRawFd;

use backstore::LentRead;
use iscsi_wire::bhs::padded;
use iscsi_wire::{digest, Bhs, Digests};

mod live;

/// Most buffers kept for reuse; a batch of deep-queue reads needs one each.
const POOL_KEEP: usize = 64;
/// Pooled buffers larger than this are dropped instead of kept, so one huge
/// transfer does not pin its memory for the life of the connection.
const POOL_MAX_CAP: usize = 16 << 20;
/// Cap on the capacity all pooled buffers of a connection may hold.
const POOL_MAX_BYTES: usize = 64 << 20;
/// Flush early once this much is queued, to bound memory per connection.
pub const FLUSH_THRESHOLD: usize = 8 << 20;
const IOV_MAX: usize = 1024;
/// Arena capacity kept across flushes (headers and small data need far less).
const ARENA_KEEP: usize = 1 << 20;
const ZEROES: [u8; 4] = [0; 4];

#[derive(Debug, Clone, Copy)]
enum Seg {
    /// Bytes in the arena.
    Arena { off: usize, len: usize },
    /// Bytes of a queued data buffer.
    Data { buf: usize, off: usize, len: usize },
    /// Bytes of a queued lent read: memory its reference counts keep
    /// alive and unchanged until `clear` drops it.
    Lent { ptr: *const u8, len: usize },
}

/// The Data-In of one command: a buffer of ours or memory a backstore lent.
pub enum TxData {
    Owned(Vec<u8>),
    Lent(LentRead),
}

impl TxData {
    pub fn len(&self) -> usize {
        match self {
            TxData::Owned(b) => b.len(),
            TxData::Lent(l) => l.len(),
        }
    }
}

impl From<Vec<u8>> for TxData {
    fn from(b: Vec<u8>) -> TxData {
        TxData::Owned(b)
    }
}

impl From<LentRead> for TxData {
    fn from(l: LentRead) -> TxData {
        TxData::Lent(l)
    }
}

/// The queue.
#[derive(Default)]
pub struct TxQueue {
    arena: Vec<u8>,
    segs: Vec<Seg>,
    bufs: Vec<TxData>,
    pool: Vec<Vec<u8>>,
    iov: Vec<libc::iovec>,
    queued: usize,
    pooled_bytes: usize,
    /// The connection's socket, for sends in the middle of a batch
    /// (`live`); none in unit tests of the queue.
    fd: Option<std::os::fd::RawFd>,
    /// A send in the middle of a batch failed: the next flush says so.
    broken: Option<io::Error>,
}

/// How far a flush got: a segment and the bytes of it already written.
#[derive(Clone, Copy, Default)]
struct Pos {
    seg: usize,
    skip: usize,
}

// SAFETY: the raw pointers in `iov` are only written and read inside
// `flush`, where they point into `arena`/`bufs` owned by this value; between
// calls the vector holds no live pointers that are dereferenced. Those of
// `Seg::Lent` point into lent reads held in `bufs` (reference-counted,
// `Send + Sync` memory that never moves), dropped together in `clear`.
unsafe impl Send for TxQueue {}

impl TxQueue {
    pub fn new() -> TxQueue {
        TxQueue::default()
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.queued
    }

    pub fn is_empty(&self) -> bool {
        self.segs.is_empty()
    }

    /// An empty buffer from the pool (capacity kept from earlier use).
    pub fn take_buf(&mut self) -> Vec<u8> {
        let mut b = self.take_filled();
        b.clear();
        b
    }

    /// A pooled buffer that still holds the bytes of its last use, for the
    /// core's `data_in`: a READ overwrites them in place and only zero-fills
    /// growth, so a large read costs no memset (the core clears the buffer
    /// for every other command; a backstore read fills all of it or fails).
    pub fn take_filled(&mut self) -> Vec<u8> {
        match self.pool.pop() {
            Some(b) => {
                self.pooled_bytes -= b.capacity();
                b
            }
            None => Vec::new(),
        }
    }

    /// Give a buffer back without queueing it. One that never held memory
    /// (a command without data) is not worth a pool slot. Its contents stay
    /// (see `take_filled`); `take_buf` empties it. A lent read is released.
    pub fn recycle(&mut self, buf: impl Into<TxData>) {
        let TxData::Owned(buf) = buf.into() else {
            return;
        };
        let cap = buf.capacity();
        if cap > 0
            && self.pool.len() < POOL_KEEP
            && cap <= POOL_MAX_CAP
            && self.pooled_bytes + cap <= POOL_MAX_BYTES
        {
            self.pooled_bytes += cap;
            self.pool.push(buf);
        }
    }

    /// Hand a data buffer to the queue; PDUs then reference it by index.
    pub fn adopt(&mut self, buf: impl Into<TxData>) -> usize {
        self.bufs.push(buf.into());
        self.bufs.len() - 1
    }

    fn push_arena(&mut self, bytes: &[u8]) {
        let off = self.arena.len();
        self.arena.extend_from_slice(bytes);
        self.push_seg(Seg::Arena {
            off,
            len: bytes.len(),
        });
    }

    fn push_seg(&mut self, seg: Seg) {
        push_seg(&mut self.segs, &mut self.queued, seg);
    }

    fn push_header(&mut self, bhs: &Bhs, data_len: usize, digests: Digests) {
        let mut b = *bhs;
        b.set_data_segment_len(data_len as u32);
        self.push_arena(&b.0);
        if digests.header {
            self.push_arena(&digest::to_wire(digest::crc32c(&b.0)));
        }
    }

    fn push_trailer(&mut self, data_crc: u32, data_len: usize, digests: Digests) {
        let pad = padded(data_len) - data_len;
        if pad > 0 {
            self.push_arena(&ZEROES[..pad]);
        }
        if digests.data && data_len > 0 {
            let crc = digest::crc32c_append(data_crc, &ZEROES[..pad]);
            self.push_arena(&digest::to_wire(crc));
        }
    }

    /// Queue a PDU whose (small) data segment is copied.
    pub fn push_pdu(&mut self, bhs: &Bhs, data: &[u8], digests: Digests) {
        self.push_header(bhs, data.len(), digests);
        if !data.is_empty() {
            self.push_arena(data);
            let crc = if digests.data {
                digest::crc32c(data)
            } else {
                0
            };
            self.push_trailer(crc, data.len(), digests);
        }
    }

    /// Queue a PDU whose data segment is `bufs[buf][off..off+len]`.
    pub fn push_pdu_ref(
        &mut self,
        bhs: &Bhs,
        buf: usize,
        off: usize,
        len: usize,
        digests: Digests,
    ) {
        self.push_header(bhs, len, digests);
        if len == 0 {
            return;
        }
        let mut crc = 0;
        match self.bufs.get(buf) {
            Some(TxData::Lent(l)) => {
                // One segment per lent piece the PDU spans. The pointers
                // stay valid: `l` lives in `bufs` until `clear`.
                for s in l.range(off, len) {
                    if digests.data {
                        crc = digest::crc32c_append(crc, s);
                    }
                    let seg = Seg::Lent {
                        ptr: s.as_ptr(),
                        len: s.len(),
                    };
                    push_seg(&mut self.segs, &mut self.queued, seg);
                }
            }
            b => {
                if digests.data {
                    if let Some(TxData::Owned(d)) = b {
                        crc = d.get(off..off + len).map_or(0, digest::crc32c);
                    }
                }
                self.push_seg(Seg::Data { buf, off, len });
            }
        }
        self.push_trailer(crc, len, digests);
    }

    /// Write everything queued with as few `writev` calls as possible.
    pub fn flush(&mut self, sock: &impl AsRawFd) -> io::Result<()> {
        if let Some(e) = self.broken.take() {
            self.clear();
            return Err(e);
        }
        let fd = sock.as_raw_fd();
        let mut at = Pos::default();
        let result = loop {
            if at.seg >= self.segs.len() {
                break Ok(());
            }
            self.fill_iov(at);
            // SAFETY: every iovec points into `arena` or `bufs`, which are
            // not touched until writev returns; the count fits in c_int.
            let n = unsafe { libc::writev(fd, self.iov.as_ptr(), self.iov.len() as libc::c_int) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                break Err(e);
            }
            if n == 0 {
                break Err(io::ErrorKind::WriteZero.into());
            }
            self.advance(&mut at, n as usize);
        };
        self.iov.clear();
        self.clear();
        result
    }

    /// `iov` for the segments from `at` on (at most IOV_MAX of them).
    fn fill_iov(&mut self, at: Pos) {
        self.iov.clear();
        for (i, seg) in self.segs[at.seg..].iter().enumerate() {
            if self.iov.len() == IOV_MAX {
                break;
            }
            let (ptr, len) = match *seg {
                Seg::Arena { off, len } => (self.arena[off..].as_ptr(), len),
                Seg::Lent { ptr, len } => (ptr, len),
                Seg::Data { buf, off, len } => match self.bufs.get(buf) {
                    Some(TxData::Owned(b)) if off + len <= b.len() => (b[off..].as_ptr(), len),
                    // A bad reference would be a bug in the caller;
                    // send nothing rather than read out of bounds.
                    _ => (ZEROES.as_ptr(), 0),
                },
            };
            let s = if i == 0 { at.skip } else { 0 };
            self.iov.push(libc::iovec {
                // SAFETY: `s <= len` (skip is less than the segment
                // length), so the pointer stays inside the slice.
                iov_base: unsafe { ptr.add(s) } as *mut libc::c_void,
                iov_len: len - s,
            });
        }
    }

    /// Move `at` past `n` written bytes.
    fn advance(&self, at: &mut Pos, mut n: usize) {
        while n > 0 && at.seg < self.segs.len() {
            let len = seg_len(&self.segs[at.seg]) - at.skip;
            if n >= len {
                n -= len;
                at.seg += 1;
                at.skip = 0;
            } else {
                at.skip += n;
                n = 0;
            }
        }
    }

    /// Drop everything queued (connection is going away) and recycle buffers.
    pub fn clear(&mut self) {
        self.arena.clear();
        // A lent read copied into the arena (`live`) may have grown it.
        if self.arena.capacity() > ARENA_KEEP {
            self.arena.shrink_to(ARENA_KEEP);
        }
        self.segs.clear();
        self.queued = 0;
        while let Some(b) = self.bufs.pop() {
            self.recycle(b);
        }
    }
}

/// `TxQueue::push_seg` on the two fields it changes (so it can run while
/// a queued buffer is borrowed).
fn push_seg(segs: &mut Vec<Seg>, queued: &mut usize, seg: Seg) {
    let len = seg_len(&seg);
    if len == 0 {
        return;
    }
    *queued += len;
    // Adjacent arena pieces merge so headers + small data are one iovec.
    if let (Some(Seg::Arena { off: o, len: l }), Seg::Arena { off, len }) = (segs.last_mut(), seg) {
        if *o + *l == off {
            *l += len;
            return;
        }
    }
    segs.push(seg);
}

fn seg_len(s: &Seg) -> usize {
    match *s {
        Seg::Arena { len, .. } | Seg::Data { len, .. } | Seg::Lent { len, .. } => len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iscsi_wire::{parse_frame, Opcode};
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn one_flush_writes_all_pdus_with_digests() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let d = Digests {
            header: true,
            data: true,
        };
        let mut q = TxQueue::new();
        let mut buf = q.take_buf();
        buf.extend_from_slice(b"0123456789");
        let idx = q.adopt(buf);
        let h = Bhs::with_opcode(Opcode::DATA_IN);
        q.push_pdu_ref(&h, idx, 0, 5, d);
        q.push_pdu_ref(&h, idx, 5, 5, d);
        q.push_pdu(&Bhs::with_opcode(Opcode::NOP_IN), b"xy", d);
        q.flush(&a).unwrap();
        assert!(q.is_empty());
        drop(a);
        let mut got = Vec::new();
        b.read_to_end(&mut got).unwrap();
        let f1 = parse_frame(&got, d, 1 << 20).unwrap().unwrap();
        assert_eq!(f1.data, b"01234");
        assert!(f1.data_digest_ok);
        let rest = &got[f1.total_len..];
        let f2 = parse_frame(rest, d, 1 << 20).unwrap().unwrap();
        assert_eq!(f2.data, b"56789");
        let f3 = parse_frame(&rest[f2.total_len..], d, 1 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(f3.data, b"xy");
        assert_eq!(f3.bhs.opcode(), Opcode::NOP_IN);
        assert_eq!(rest.len(), f2.total_len + f3.total_len);
        // The data buffer went back to the pool.
        assert!(q.take_buf().capacity() >= 10);
    }

    #[test]
    fn take_buf_is_empty_take_filled_keeps_bytes() {
        let mut q = TxQueue::new();
        q.recycle(vec![7u8; 4096]);
        let b = q.take_filled();
        assert_eq!(b.len(), 4096, "a READ reuses these bytes: no memset");
        q.recycle(b);
        let b = q.take_buf();
        assert!(b.is_empty() && b.capacity() >= 4096);
    }

    #[test]
    fn unallocated_buffers_take_no_pool_slot() {
        let mut q = TxQueue::new();
        q.recycle(Vec::new());
        assert!(q.pool.is_empty());
        q.recycle(Vec::with_capacity(4096));
        assert_eq!(q.pool.len(), 1);
    }

    #[test]
    fn pool_is_bounded() {
        let mut q = TxQueue::new();
        for _ in 0..10 {
            q.recycle(Vec::with_capacity(10 << 20));
        }
        assert!(q.pooled_bytes <= POOL_MAX_BYTES);
        assert_eq!(q.pool.len(), POOL_MAX_BYTES / (10 << 20));
        q.recycle(Vec::with_capacity(POOL_MAX_CAP + 1));
        assert_eq!(q.pool.len(), POOL_MAX_BYTES / (10 << 20));
        let n = q.pool.len();
        for _ in 0..n {
            q.take_buf();
        }
        assert_eq!(q.pooled_bytes, 0);
    }
}
