//! ramdisk: an in-memory backstore (LIO's `rd_mcp`).
//!
//! Memory is split into fixed chunks, each behind its own `RwLock` and
//! allocated on first write, so a large ramdisk costs nothing until used and
//! connections touching different chunks never contend. Discarding a whole
//! chunk frees it; a partial discard zero-fills.

use std::io;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{Backstore, Capabilities};

/// Chunk size: large enough that a 256 KiB command touches at most two
/// chunks, small enough that lazy allocation stays fine-grained.
const CHUNK: usize = 1 << 20;

type Chunk = Option<Box<[u8]>>;

pub struct RamBackstore {
    size: u64,
    chunks: Box<[RwLock<Chunk>]>,
}

impl RamBackstore {
    /// A zero-filled ramdisk of `size` bytes (no memory is allocated yet).
    pub fn new(size: u64) -> io::Result<RamBackstore> {
        let n = size.div_ceil(CHUNK as u64);
        let n = usize::try_from(n).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        let chunks = (0..n).map(|_| RwLock::new(None)).collect();
        Ok(RamBackstore { size, chunks })
    }

    /// Bytes of RAM currently allocated for data.
    pub fn allocated_bytes(&self) -> u64 {
        self.chunks.iter().filter(|c| read(c).is_some()).count() as u64 * CHUNK as u64
    }

    /// Allocation state at `offset` for GET LBA STATUS: chunks never written
    /// (or wholly discarded) are holes.
    pub fn extent_at(&self, offset: u64) -> io::Result<crate::Extent> {
        if offset >= self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset beyond size",
            ));
        }
        let first = (offset / CHUNK as u64) as usize;
        let allocated = read(&self.chunks[first]).is_some();
        let same = self.chunks[first + 1..]
            .iter()
            .take_while(|c| read(c).is_some() == allocated)
            .count();
        let end = ((first + 1 + same) as u64 * CHUNK as u64).min(self.size);
        Ok(crate::Extent {
            allocated,
            len: end - offset,
        })
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("I/O at {offset}+{len} beyond size {}", self.size),
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
        self.size
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            discard: true,
            write_zeroes: true,
            write_cache: false,
            read_only: false,
            rotational: false,
            optimal_io_size: 0,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        Self::pieces(offset, buf.len(), |idx, within, r| {
            let g = read(&self.chunks[idx]);
            let n = r.len();
            match g.as_deref() {
                Some(c) => buf[r].copy_from_slice(&c[within..within + n]),
                None => buf[r].fill(0),
            }
            Ok(())
        })
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        Self::pieces(offset, buf.len(), |idx, within, r| {
            let mut g = write(&self.chunks[idx]);
            let c = g.get_or_insert_with(|| vec![0u8; CHUNK].into_boxed_slice());
            c[within..within + r.len()].copy_from_slice(&buf[r]);
            Ok(())
        })
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        Self::pieces(offset, len, |idx, within, r| {
            let mut g = write(&self.chunks[idx]);
            if within == 0 && r.len() == CHUNK {
                *g = None;
            } else if let Some(c) = g.as_deref_mut() {
                c[within..within + r.len()].fill(0);
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
        let r = RamBackstore::new((4 << 20) + 4096).unwrap();
        let hole = |len| crate::Extent {
            allocated: false,
            len,
        };
        assert_eq!(r.extent_at(100).unwrap(), hole((4 << 20) + 4096 - 100));
        r.write_at(&[1u8; 512], (1 << 20) + 512).unwrap();
        r.write_at(&[1u8; 512], 2 << 20).unwrap();
        assert_eq!(r.extent_at(0).unwrap(), hole(1 << 20));
        assert_eq!(
            r.extent_at(1 << 20).unwrap(),
            crate::Extent {
                allocated: true,
                len: 2 << 20
            }
        );
        assert_eq!(r.extent_at(3 << 20).unwrap(), hole((1 << 20) + 4096));
        assert!(r.extent_at((4 << 20) + 4096).is_err());
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
}
