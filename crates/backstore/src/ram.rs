//! ramdisk: an in-memory backstore (LIO's `rd_mcp`).
//!
//! Memory is split into fixed chunks, each behind its own `RwLock` and
//! allocated on first write, so a large ramdisk costs nothing until used and
//! connections touching different chunks never contend. Discarding a whole
//! chunk frees it; a partial discard zero-fills.
//!
//! Online growth: chunk slots live in segments of doubling length that are
//! created once and never move (a "segmented vector"), so growing only adds
//! segments and then publishes the new size. I/O in flight keeps using the
//! slots it found; nothing takes a table-wide lock, and bytes past the old
//! size were never writable, so they read as zeroes after the growth.
//!
//! Lent reads (zero-copy Data-In, [`crate::lent`]): a chunk is reference
//! counted, and a large READ clones the references of its chunks under
//! their read locks instead of copying bytes; the fabric then sends from
//! them after the command finished. A chunk is never changed while a lent
//! read holds it: a write (or partial discard) that finds its chunk shared
//! copies it first (`Arc::make_mut`, copy-on-write) and changes the copy,
//! so the reader keeps sending the snapshot it took, whole. No lock is held
//! while sending, so a writer never waits for a slow initiator, and a
//! connection that queued a READ's Data-In can run a WRITE to the same
//! range before flushing without deadlocking on itself. The cost moves to
//! the rare writer that meets an unsent snapshot: one chunk copy (2 MiB).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::ram_chunk::{ChunkMem, HUGE};
use crate::stream_copy::{copy_streaming, STREAM_MIN};
use crate::{Backstore, Capabilities, LentRead};

/// Chunk size: one huge page (`ram_chunk`: TLB misses cost ~100 ns per
/// random 4 KiB access with 4 KiB pages), large enough that a 256 KiB
/// command touches at most two chunks, small enough that lazy allocation
/// stays fine-grained.
const CHUNK: usize = HUGE;

/// Slots in segment 0; segment `k` holds `BASE << k` slots.
const BASE: usize = 64;
/// Segments: BASE * (2^48 - 1) chunks is far beyond any address space.
const SEGMENTS: usize = 48;

/// `Arc`: lent reads share a chunk (see the module comment).
type Chunk = Option<Arc<ChunkMem>>;
type Segment = Box<[RwLock<Chunk>]>;

pub struct RamBackstore {
    size: AtomicU64,
    segments: [OnceLock<Segment>; SEGMENTS],
    /// Serializes `resize` calls (I/O never takes it).
    grow: Mutex<()>,
}

/// Segment and index within it of chunk `idx`: segment `k` starts at chunk
/// `BASE * (2^k - 1)`.
fn locate(idx: usize) -> (usize, usize) {
    let q = idx / BASE + 1;
    let k = (usize::BITS - 1 - q.leading_zeros()) as usize;
    (k, idx - BASE * ((1 << k) - 1))
}

fn missing() -> io::Error {
    io::Error::other("ramdisk chunk table is shorter than its size")
}

impl RamBackstore {
    /// A zero-filled ramdisk of `size` bytes (no memory is allocated yet).
    pub fn new(size: u64) -> io::Result<RamBackstore> {
        let r = RamBackstore {
            size: AtomicU64::new(0),
            segments: std::array::from_fn(|_| OnceLock::new()),
            grow: Mutex::new(()),
        };
        r.ensure_slots(size)?;
        r.size.store(size, Ordering::Release);
        Ok(r)
    }

    /// Create the segments that hold the chunks of `size` bytes.
    fn ensure_slots(&self, size: u64) -> io::Result<()> {
        let n = size.div_ceil(CHUNK as u64);
        let n = usize::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        if n == 0 {
            return Ok(());
        }
        let (last, _) = locate(n - 1);
        if last >= SEGMENTS {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        for (k, seg) in self.segments.iter().enumerate().take(last + 1) {
            seg.get_or_init(|| (0..BASE << k).map(|_| RwLock::new(None)).collect());
        }
        Ok(())
    }

    fn slot(&self, idx: usize) -> io::Result<&RwLock<Chunk>> {
        let (k, i) = locate(idx);
        self.segments
            .get(k)
            .and_then(OnceLock::get)
            .and_then(|s| s.get(i))
            .ok_or_else(missing)
    }

    fn chunk_count(&self) -> usize {
        self.size.load(Ordering::Acquire).div_ceil(CHUNK as u64) as usize
    }

    /// Bytes of RAM currently allocated for data.
    pub fn allocated_bytes(&self) -> u64 {
        (0..self.chunk_count())
            .filter(|&i| self.slot(i).is_ok_and(|c| read(c).is_some()))
            .count() as u64
            * CHUNK as u64
    }

    /// Allocation state at `offset` for GET LBA STATUS: chunks never written
    /// (or wholly discarded) are holes.
    pub fn extent_at(&self, offset: u64) -> io::Result<crate::Extent> {
        let size = self.size.load(Ordering::Acquire);
        if offset >= size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset beyond size",
            ));
        }
        let first = (offset / CHUNK as u64) as usize;
        let allocated = read(self.slot(first)?).is_some();
        let mut end = first + 1;
        while end < self.chunk_count() && read(self.slot(end)?).is_some() == allocated {
            end += 1;
        }
        let end = (end as u64 * CHUNK as u64).min(size);
        Ok(crate::Extent {
            allocated,
            len: end - offset,
        })
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        let size = self.size.load(Ordering::Acquire);
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("I/O at {offset}+{len} beyond size {size}"),
            )),
        }
    }

    /// Call `f(chunk_index, offset_in_chunk, range_in_request)` for each chunk
    /// piece of `[offset, offset+len)`.
    fn pieces(
        offset: u64,
        len: usize,
        mut f: impl FnMut(usize, usize, std::ops::Range<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let idx = (pos / CHUNK as u64) as usize;
            let within = (pos % CHUNK as u64) as usize;
            let n = (CHUNK - within).min(len - done);
            f(idx, within, done..done + n)?;
            done += n;
        }
        Ok(())
    }
}

// A poisoned lock only means another thread panicked mid-copy; the bytes are
// still plain memory, so keep serving rather than propagating the panic.
fn read(l: &RwLock<Chunk>) -> RwLockReadGuard<'_, Chunk> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write(l: &RwLock<Chunk>) -> RwLockWriteGuard<'_, Chunk> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Backstore for RamBackstore {
    fn allocation_at(&self, offset: u64) -> io::Result<Option<crate::Extent>> {
        self.extent_at(offset).map(Some)
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn resize(&self, new_size: u64) -> io::Result<()> {
        let _one = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.size.load(Ordering::Acquire);
        if new_size < old {
            return Err(crate::refuse_shrink(old, new_size));
        }
        // Slots first, size last: a reader that sees the new size finds them.
        self.ensure_slots(new_size)?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            discard: true,
            write_zeroes: true,
            write_cache: false,
            read_only: false,
            rotational: false,
            optimal_io_size: 0,
            resize: true,
            crypto_erase: false,
            async_submit: false,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        Self::pieces(offset, buf.len(), |idx, within, r| {
            let g = read(self.slot(idx)?);
            let n = r.len();
            match g.as_deref() {
                Some(c) => buf[r].copy_from_slice(&c[within..within + n]),
                None => buf[r].fill(0),
            }
            Ok(())
        })
    }

    fn read_lent(&self, offset: u64, len: usize) -> Option<io::Result<LentRead>> {
        if let Err(e) = self.check(offset, len as u64) {
            return Some(Err(e));
        }
        let mut out = LentRead::new();
        let r = Self::pieces(offset, len, |idx, within, r| {
            match &*read(self.slot(idx)?) {
                Some(c) => out.push(c.clone(), within, r.len()),
                None => out.push_zeroes(r.len()),
            }
            Ok(())
        });
        Some(r.map(|()| out))
    }

    fn takes_prefetch_hints(&self) -> bool {
        true
    }

    fn prefetch(&self, offset: u64, len: usize) {
        let len = len.min(crate::prefetch::MAX);
        if self.check(offset, len as u64).is_err() {
            return;
        }
        let _ = Self::pieces(offset, len, |idx, within, r| {
            if let Some(c) = &*read(self.slot(idx)?) {
                crate::prefetch::lines(&c[within..within + r.len()]);
            }
            Ok(())
        });
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        Self::pieces(offset, buf.len(), |idx, within, r| {
            let mut g = write(self.slot(idx)?);
            let c = g.get_or_insert_with(|| Arc::new(ChunkMem::zeroed(CHUNK)));
            // Copy-on-write: a lent read may still be sending this chunk.
            let dst = &mut Arc::make_mut(c)[within..within + r.len()];
            // Large pieces bypass the cache (`stream_copy`): 1 MiB writes
            // into a cold chunk cost ~10% less daemon CPU per I/O.
            if r.len() >= STREAM_MIN {
                copy_streaming(dst, &buf[r]);
            } else {
                dst.copy_from_slice(&buf[r]);
            }
            Ok(())
        })
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    /// Large WRITEs burst by burst (`Backstore::streams_large_writes`):
    /// each 256 KiB burst is copied out while it is still in the cache,
    /// not 1 MiB at the end from buffers the other writes' data evicted
    /// (BENCHMARKS.md, "Session 12: 1 MiB write CPU").
    fn streams_large_writes(&self) -> bool {
        true
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        Self::pieces(offset, len, |idx, within, r| {
            let mut g = write(self.slot(idx)?);
            if within == 0 && r.len() == CHUNK {
                *g = None;
            } else if let Some(c) = g.as_mut() {
                Arc::make_mut(c)[within..within + r.len()].fill(0);
            }
            Ok(())
        })
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.discard(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reads_zero_before_any_write_and_allocates_lazily() {
        let r = RamBackstore::new(1 << 30).unwrap();
        assert_eq!(r.allocated_bytes(), 0);
        let mut buf = vec![1u8; 4096];
        r.read_at(&mut buf, 12345).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        assert_eq!(r.allocated_bytes(), 0);
    }

    #[test]
    fn read_back_across_chunk_boundary() {
        let r = RamBackstore::new(8 << 20).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let off = (CHUNK - 1000) as u64;
        r.write_at(&data, off).unwrap();
        let mut back = vec![0u8; data.len()];
        r.read_at(&mut back, off).unwrap();
        assert_eq!(back, data);
        assert_eq!(r.allocated_bytes(), 2 * CHUNK as u64);
    }

    #[test]
    fn discard_reads_zeroes_and_frees_whole_chunks() {
        let r = RamBackstore::new(4 << 20).unwrap();
        r.write_at(&vec![0xEE; 3 << 20], 0).unwrap();
        r.discard(512, (2 << 20) - 512).unwrap();
        let mut buf = vec![0u8; 3 << 20];
        r.read_at(&mut buf, 0).unwrap();
        assert!(buf[..512].iter().all(|&x| x == 0xEE));
        assert!(buf[512..2 << 20].iter().all(|&x| x == 0));
        assert!(buf[2 << 20..].iter().all(|&x| x == 0xEE));
        // Chunk 1 was wholly discarded: only chunks 0 and 2 remain.
        assert_eq!(r.allocated_bytes(), 2 * CHUNK as u64);
    }

    #[test]
    fn extents_follow_allocated_chunks() {
        let c = CHUNK as u64;
        let r = RamBackstore::new(4 * c + 4096).unwrap();
        let hole = |len| crate::Extent {
            allocated: false,
            len,
        };
        assert_eq!(r.extent_at(100).unwrap(), hole(4 * c + 4096 - 100));
        r.write_at(&[1u8; 512], c + 512).unwrap();
        r.write_at(&[1u8; 512], 2 * c).unwrap();
        assert_eq!(r.extent_at(0).unwrap(), hole(c));
        assert_eq!(
            r.extent_at(c).unwrap(),
            crate::Extent {
                allocated: true,
                len: 2 * c
            }
        );
        assert_eq!(r.extent_at(3 * c).unwrap(), hole(c + 4096));
        assert!(r.extent_at(4 * c + 4096).is_err());
    }

    #[test]
    fn prefetch_is_a_harmless_hint() {
        let r = RamBackstore::new(4 * CHUNK as u64).unwrap();
        r.prefetch(0, 4096);
        assert_eq!(r.allocated_bytes(), 0, "a hint on a hole allocates nothing");
        r.write_at(&[7u8; 8192], CHUNK as u64 - 4096).unwrap();
        r.prefetch(CHUNK as u64 - 4096, 8192);
        r.prefetch(CHUNK as u64 - 4096, usize::MAX);
        r.prefetch(u64::MAX - 10, 4096);
        r.prefetch(4 * CHUNK as u64, 4096);
        assert_eq!(r.allocated_bytes(), 2 * CHUNK as u64);
        let mut back = [0u8; 8192];
        r.read_at(&mut back, CHUNK as u64 - 4096).unwrap();
        assert!(back.iter().all(|&b| b == 7));
    }

    #[test]
    fn bounds_are_checked() {
        let r = RamBackstore::new(8192).unwrap();
        let mut buf = [0u8; 512];
        assert!(r.read_at(&mut buf, 8000).is_err());
        assert!(r.write_at(&buf, 8192).is_err());
        assert!(r.write_at(&buf, u64::MAX).is_err());
        assert!(r.discard(0, 8193).is_err());
        r.write_at(&buf, 8192 - 512).unwrap();
    }

    #[test]
    fn concurrent_writers_on_distinct_ranges() {
        let r = Arc::new(RamBackstore::new(16 << 20).unwrap());
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..64u64 {
                        let off = (u64::from(t) * (4 << 20)) + i * 65536;
                        r.write_at(&[t + 1; 65536], off).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        for t in 0..4u8 {
            let mut buf = vec![0u8; 4 << 20];
            r.read_at(&mut buf, u64::from(t) * (4 << 20)).unwrap();
            assert!(buf.iter().all(|&x| x == t + 1));
        }
    }

    #[test]
    fn lent_read_is_a_snapshot_that_later_writes_do_not_change() {
        let r = RamBackstore::new(4 * CHUNK as u64).unwrap();
        r.write_at(&vec![1u8; 2 * CHUNK], 0).unwrap();
        let lent = r
            .read_lent(CHUNK as u64 / 2, CHUNK + 8192)
            .unwrap()
            .unwrap();
        assert_eq!(lent.len(), CHUNK + 8192);
        // Overwrite both chunks it holds, whole and in part, and discard.
        r.write_at(&vec![2u8; CHUNK], 0).unwrap();
        r.write_at(&[3u8; 4096], CHUNK as u64 + 4096).unwrap();
        r.discard(CHUNK as u64, 512).unwrap();
        assert!(
            lent.slices().flatten().all(|&b| b == 1),
            "lent bytes changed"
        );
        let mut now = vec![0u8; 8192];
        r.read_at(&mut now, CHUNK as u64).unwrap();
        assert!(now[..512].iter().all(|&b| b == 0) && now[4096..].iter().all(|&b| b == 3));
        // Holes are lent as zeroes; past the end is refused.
        let hole = r.read_lent(3 * CHUNK as u64, 4096).unwrap().unwrap();
        assert!(hole.slices().flatten().all(|&b| b == 0));
        assert!(r.read_lent(4 * CHUNK as u64 - 512, 1024).unwrap().is_err());
    }

    #[test]
    fn lent_reads_never_see_a_torn_write() {
        // A writer overwrites 2 MiB (two chunks) with one pattern after
        // another while readers take lent reads of it, hold them a while
        // (as a send would) and check that every block is one pattern.
        use std::sync::atomic::AtomicBool;
        const LEN: usize = 2 << 20;
        let r = Arc::new(RamBackstore::new(4 << 20).unwrap());
        r.write_at(&vec![0u8; LEN], 0).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (r, stop) = (r.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut p = 0u8;
                let mut buf = vec![0u8; LEN];
                while !stop.load(Ordering::Relaxed) {
                    p = p.wrapping_add(1);
                    buf.fill(p);
                    r.write_at(&buf, 0).unwrap();
                }
            })
        };
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let lent = r.read_lent(512, LEN - 1024).unwrap().unwrap();
                        std::thread::yield_now();
                        let mut all = Vec::new();
                        lent.copy_to(&mut all);
                        for (i, b) in all.chunks(512).enumerate() {
                            assert!(b.iter().all(|&x| x == b[0]), "block {i} torn");
                        }
                    }
                })
            })
            .collect();
        for h in readers {
            h.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }

    #[test]
    fn segments_tile_the_chunk_indices() {
        assert_eq!(locate(0), (0, 0));
        assert_eq!(locate(BASE - 1), (0, BASE - 1));
        assert_eq!(locate(BASE), (1, 0));
        assert_eq!(locate(3 * BASE - 1), (1, 2 * BASE - 1));
        assert_eq!(locate(3 * BASE), (2, 0));
        // Every index maps inside its segment, consecutively.
        let mut prev = (0, 0);
        for i in 1..2000 {
            let (k, j) = locate(i);
            assert!(j < BASE << k);
            assert!(k == prev.0 && j == prev.1 + 1 || k == prev.0 + 1 && j == 0);
            prev = (k, j);
        }
    }

    #[test]
    fn grows_online_keeping_data_and_refuses_shrink() {
        let r = RamBackstore::new((1 << 20) + 4096).unwrap();
        assert!(r.capabilities().resize);
        r.write_at(&[7u8; 4096], 1 << 20).unwrap();
        assert!(r.write_at(&[1u8; 512], (1 << 20) + 4096).is_err());
        // Far past the first segment (64 chunks).
        r.resize(300 << 20).unwrap();
        assert_eq!(r.size(), 300 << 20);
        let mut buf = vec![1u8; 8192];
        r.read_at(&mut buf, 1 << 20).unwrap();
        assert!(buf[..4096].iter().all(|&x| x == 7));
        assert!(
            buf[4096..].iter().all(|&x| x == 0),
            "tail of the old last chunk"
        );
        r.write_at(&[9u8; 512], (300 << 20) - 512).unwrap();
        let e = r.resize(1 << 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(r.size(), 300 << 20);
        r.resize(300 << 20).unwrap();
        assert_eq!(
            r.extent_at(299 << 20).unwrap(),
            crate::Extent {
                allocated: true,
                len: 1 << 20
            }
        );
    }

    #[test]
    fn io_continues_while_growing() {
        use std::sync::atomic::AtomicBool;
        let r = Arc::new(RamBackstore::new(2 << 20).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let worker = {
            let (r, stop, ops) = (r.clone(), stop.clone(), ops.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !stop.load(Ordering::Relaxed) {
                    let n = ops.load(Ordering::Relaxed);
                    // Always near the current end: the range that just grew.
                    let off = r.size() - 65536;
                    r.write_at(&[(n % 251) as u8; 65536], off).unwrap();
                    r.read_at(&mut buf, off).unwrap();
                    assert!(buf.iter().all(|&x| x == (n % 251) as u8));
                    ops.store(n + 1, Ordering::Relaxed);
                }
            })
        };
        for mib in 3..200u64 {
            r.resize(mib << 20).unwrap();
            // Let the worker run against each new size.
            let want = ops.load(Ordering::Relaxed) + 2;
            while ops.load(Ordering::Relaxed) < want && !worker.is_finished() {
                std::thread::yield_now();
            }
        }
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        assert!(ops.load(Ordering::Relaxed) >= 2 * 197);
        assert_eq!(r.size(), 199 << 20);
    }

    #[test]
    fn chunks_are_huge_page_aligned() {
        let r = RamBackstore::new(3 * CHUNK as u64).unwrap();
        r.write_at(&[5u8; 4096], CHUNK as u64 + 8192).unwrap();
        let g = read(r.slot(1).unwrap());
        let c = g.as_ref().expect("written chunk");
        assert_eq!(c.len(), HUGE);
        assert_eq!(c.as_ptr() as usize % HUGE, 0, "a THP candidate");
    }
}
