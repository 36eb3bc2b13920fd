//! The memory of one ramdisk chunk (`ram`): an anonymous mapping aligned
//! to a huge page and marked for transparent huge pages.
//!
//! Why: a ramdisk of a few GiB in 4 KiB pages costs a TLB miss, and in a
//! virtual machine a two-dimensional page walk, on nearly every random
//! 4 KiB access. Measured on this project's 2-core KVM guest, copying a
//! random 4 KiB block out of 1 GiB took ~445 ns with 4 KiB pages and
//! ~335 ns with 2 MiB pages (writes ~378 vs ~278 ns), and that copy is
//! the largest user-space cost of a 4 KiB random READ from a ramdisk.
//! A heap allocation cannot get huge pages (its start is not aligned to
//! 2 MiB), so a chunk maps its own. Where transparent huge pages are off
//! (`/sys/kernel/mm/transparent_hugepage/enabled` = never) or none is
//! free, the kernel falls back to 4 KiB pages: nothing else changes.
//!
//! Costs, paid once per chunk at its first write: the kernel zero-fills a
//! whole 2 MiB page on the first touch (a chunk written in one 4 KiB
//! place holds 2 MiB of RAM, where 4 KiB pages held 4 KiB; the ramdisk's
//! size bounds both), and with `defrag` = madvise (the default) it may
//! compact memory to find a huge page. Measured on the same guest with
//! fragmented memory: 0.5 to 14 ms per chunk, against ~2.4 ms for its 512
//! small pages one fault at a time. Every access after that is cheaper.

use std::alloc::{handle_alloc_error, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Huge page size (x86-64 and arm64 with 4 KiB base pages).
pub const HUGE: usize = 2 << 20;

/// `len` zeroed bytes at a `HUGE`-aligned address, unmapped on drop.
pub struct ChunkMem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a ChunkMem owns its mapping exclusively, like a Box<[u8]>:
// shared references only read, writes need `&mut`.
unsafe impl Send for ChunkMem {}
// SAFETY: as above.
unsafe impl Sync for ChunkMem {}

impl ChunkMem {
    /// A zeroed mapping of `len` bytes (`len` > 0) aligned to [`HUGE`].
    /// Out of address space, it aborts as a failed heap allocation does.
    pub fn zeroed(len: usize) -> ChunkMem {
        assert!(len > 0, "empty chunk");
        // Map HUGE more, keep the aligned part, give back the slack.
        let map = len.checked_add(HUGE).unwrap_or_else(|| fail(len));
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            fail(len);
        }
        let start = p as usize;
        let aligned = (start + HUGE - 1) & !(HUGE - 1);
        let head = aligned - start;
        let tail = map - head - len;
        // SAFETY: both ranges lie inside the mapping made above and
        // outside the `len` bytes kept; unmapping them cannot fail with
        // valid arguments (the result is ignored: at worst slack stays).
        unsafe {
            if head > 0 {
                libc::munmap(p, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
            // Advice only: refused (THP disabled) it changes nothing.
            libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
        }
        ChunkMem {
            ptr: NonNull::new(aligned as *mut u8).unwrap_or_else(|| fail(len)),
            len,
        }
    }
}

/// Out of memory: abort as a failed heap allocation does.
fn fail(len: usize) -> ! {
    handle_alloc_error(Layout::from_size_align(len, HUGE).unwrap_or(Layout::new::<u8>()))
}

impl Deref for ChunkMem {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` mapped, initialised (zero-filled
        // or written) bytes owned by self for its whole life.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for ChunkMem {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for ChunkMem {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Copy-on-write of a lent chunk (`Arc::make_mut` in `ram`).
impl Clone for ChunkMem {
    fn clone(&self) -> ChunkMem {
        let mut c = ChunkMem::zeroed(self.len);
        c.copy_from_slice(self);
        c
    }
}

impl Drop for ChunkMem {
    fn drop(&mut self) {
        // SAFETY: exactly the range `zeroed` kept, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_aligned_writable_and_cloned() {
        let mut c = ChunkMem::zeroed(HUGE);
        assert_eq!(c.as_ptr() as usize % HUGE, 0, "huge-page aligned");
        assert_eq!(c.len(), HUGE);
        assert!(c.iter().all(|&b| b == 0));
        c[HUGE - 1] = 7;
        let d = c.clone();
        assert_eq!(d.as_ptr() as usize % HUGE, 0);
        assert_eq!(d[HUGE - 1], 7);
        c[0] = 1;
        assert_eq!(d[0], 0, "a clone is a copy");
    }
}
