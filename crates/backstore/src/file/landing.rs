//! Landed writes for a file on tmpfs or ramfs ([`crate::landing`]): the
//! whole file is mapped shared once, and WRITE data is received straight
//! into the mapping, which *is* the file's page cache: one copy (the
//! kernel's, from the socket) where `recv` into a buffer then `pwrite`
//! makes two. Measured on a /dev/shm file (bench/write-landing.c): 176-178
//! µs of receiver CPU per MiB against 327-370 (BENCHMARKS.md, "Session 10:
//! where a 1 MiB write's CPU goes").
//!
//! Only there: on a disk filesystem the mapping loses (1.37x on a cached
//! ext4 file: page-fault and dirty-tracking work per page), and a store
//! into an uncached page would read it from disk first. Only buffered
//! (`write_back`, no `O_DIRECT`), writable regular files; the pages that
//! hold data are faulted in at open (`MADV_POPULATE_WRITE`, extent by
//! extent: populating a sparse file's holes would allocate them), a hole
//! costs one fault on its first landing.
//!
//! Hazards: the mapping is written only by the kernel (`landing::Area`),
//! so a page that is gone (the file truncated by someone else, tmpfs full
//! for a hole) fails that receive with `EFAULT` instead of killing the
//! daemon with `SIGBUS`. Growth maps the file again (`remap`) under the
//! write lock, so no landing is in progress then; reads lent from the old
//! mapping (`lending`) keep it mapped until they are sent.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::landing::{Area, Fill};

/// Files larger than this are not mapped (address space, page tables).
const MAX_MAP: u64 = 1 << 40;

pub(super) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

impl Mapping {
    pub(super) fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

/// The whole mapping, for lent reads (`lending`): its bytes are never read
/// in user space, only handed to the kernel (see `backstore::lent`).
impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: a live mapping of `len` bytes; the slice only carries the
        // address and length to `writev` (see the impl's comment).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

// SAFETY: the mapping is plain shared memory owned by this value; it is
// written only by the kernel through `Area`s handed out under the lock.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes its address for `Area`s.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: exactly the range mmap returned, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A file's landing mapping, when it has one.
pub(super) struct Landing {
    map: RwLock<Option<Arc<Mapping>>>,
}

/// Whether `file` lives on a memory filesystem (tmpfs, ramfs).
pub(crate) fn in_memory(file: &File) -> bool {
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a pointer to a live statfs.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    // ramfs (not in libc): linux/magic.h RAMFS_MAGIC.
    const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;
    st.f_type == libc::TMPFS_MAGIC || st.f_type == RAMFS_MAGIC
}

impl Landing {
    /// No mapping: every landing is refused (the caller writes).
    pub(super) fn none() -> Landing {
        Landing {
            map: RwLock::new(None),
        }
    }

    /// Map `file` (`size` bytes) for landing; `None` inside when it is
    /// not a memory filesystem's file or the mapping fails (then writes
    /// take the usual path: nothing is lost but the saving).
    pub(super) fn open(file: &File, size: u64) -> Landing {
        let l = Landing::none();
        if in_memory(file) {
            *l.lock_mut() = map(file, size);
        }
        l
    }

    fn lock(&self) -> RwLockReadGuard<'_, Option<Arc<Mapping>>> {
        self.map.read().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_mut(&self) -> std::sync::RwLockWriteGuard<'_, Option<Arc<Mapping>>> {
        self.map.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether landings are offered at all.
    pub(super) fn active(&self) -> bool {
        self.lock().is_some()
    }

    /// The current mapping (kept mapped while the caller holds it).
    pub(super) fn mapping(&self) -> Option<Arc<Mapping>> {
        self.lock().clone()
    }

    /// The file grew to `size`: map it again (no landing runs meanwhile).
    pub(super) fn remap(&self, file: &File, size: u64) {
        let mut g = self.lock_mut();
        if g.is_some() {
            *g = None;
            *g = map(file, size);
        }
    }

    /// Land `len` bytes at `offset` through `fill`; `None` when the mapping
    /// does not cover them (the caller writes instead).
    pub(super) fn land(
        &self,
        offset: u64,
        len: usize,
        fill: Fill<'_>,
    ) -> Option<io::Result<usize>> {
        let g = self.lock();
        let m = g.as_ref()?;
        let end = offset.checked_add(len as u64)?;
        if end > m.len as u64 {
            return None;
        }
        // SAFETY: inside the mapping, which the read guard keeps mapped
        // for the whole `fill` call.
        let area = unsafe { Area::new(m.ptr.add(offset as usize), len) };
        Some(fill(&area).map(|n| n.min(len)))
    }
}

/// Map `size` bytes of `file` shared and fault in the extents that hold
/// data. `None` when the file is empty, too large or cannot be mapped.
fn map(file: &File, size: u64) -> Option<Arc<Mapping>> {
    if size == 0 || size > MAX_MAP {
        return None;
    }
    let len = usize::try_from(size).ok()?;
    // SAFETY: a new shared mapping of an open descriptor; nothing existing
    // is touched.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        tracing::debug!(error = %io::Error::last_os_error(), "no landing mapping");
        return None;
    }
    let m = Mapping { ptr: p.cast(), len };
    populate_data(file, &m);
    Some(Arc::new(m))
}

/// Fault in the pages of `m` that hold data (holes stay holes).
fn populate_data(file: &File, m: &Mapping) {
    let fd = file.as_raw_fd();
    let end = m.len as libc::off_t;
    let mut at: libc::off_t = 0;
    while at < end {
        // SAFETY: lseek on a valid descriptor.
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 || data >= end {
            return;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { end } else { hole.min(end) };
        let page = 4096;
        let from = data & !(page - 1);
        // SAFETY: a range inside the mapping; advice only (an old kernel
        // without MADV_POPULATE_WRITE refuses it and pages fault later).
        let r = unsafe {
            libc::madvise(
                m.ptr.add(from as usize).cast(),
                (hole - from) as usize,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if r != 0 {
            return;
        }
        at = hole;
    }
}
