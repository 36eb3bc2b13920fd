//! Lent reads of a file on tmpfs or ramfs ([`crate::lent`], live pieces):
//! a large READ is answered with the file's own pages through the landing
//! mapping (`landing`), so the fabric's `writev` copies them into the
//! socket once, where `pread` into a buffer and then the send copy twice
//! (measured per MiB on a 4 KiB-folio tmpfs: 144 µs of sender CPU for
//! mmap + write against 283 for pread + write, BENCHMARKS.md "sendfile
//! Data-In for fileio").
//!
//! Only pages in memory are lent (`mincore`): a read of a hole through a
//! shared tmpfs mapping would allocate a page for it (reads would fill a
//! sparse file), and a swapped-out page is not resident either. Those
//! ranges are read with `pread` into a buffer of their own (zeroes for a
//! hole, nothing allocated): rare, the data of a used LU is resident.
//!
//! The pieces show the file itself, so they are *live*: the fabric copies
//! them out, with the kernel only, before anything ordered after the READ
//! runs (see `backstore::lent`).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::landing::{Landing, Mapping};
use crate::lent::{LentBytes, LentRead};

const PAGE: usize = 4096;
/// Pages one `mincore` call looks at: a READ the core accepts (8 MiB) and
/// an unaligned start. Longer ones are read into a buffer.
const MAX_PAGES: usize = (8 << 20) / PAGE + 1;

impl Landing {
    /// Lend `len` bytes at `offset` (inside the file: the caller checked);
    /// `None` when the file has no mapping. A zero-length call answers
    /// whether lending is offered.
    pub(super) fn lend(
        &self,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Option<io::Result<LentRead>> {
        let m = self.mapping()?;
        let mut out = LentRead::live();
        if len > 0 {
            if let Err(e) = lend_from(&m, file, offset, len, &mut out) {
                return Some(Err(e));
            }
        }
        Some(Ok(out))
    }
}

fn lend_from(
    m: &Arc<Mapping>,
    file: &File,
    offset: u64,
    len: usize,
    out: &mut LentRead,
) -> io::Result<()> {
    let end = offset.saturating_add(len as u64);
    if end > m.len() as u64 {
        // Grown past the mapping without a remap (not through us).
        return copy_into(file, offset, len, out);
    }
    let (start, end) = (offset as usize, end as usize);
    let first = start / PAGE;
    let pages = (end - 1) / PAGE - first + 1;
    let mut resident = [0u8; MAX_PAGES];
    if pages > MAX_PAGES {
        return copy_into(file, offset, len, out);
    }
    // SAFETY: a page-aligned range inside the mapping (its last page is
    // mapped whole), and a vector of one byte per page.
    let r = unsafe {
        libc::mincore(
            m.ptr().add(first * PAGE).cast(),
            pages * PAGE,
            resident.as_mut_ptr(),
        )
    };
    if r != 0 {
        return copy_into(file, offset, len, out);
    }
    let is_in = |at: usize| resident[at / PAGE - first] & 1 != 0;
    let bytes: LentBytes = m.clone();
    let mut at = start;
    while at < end {
        let kind = is_in(at);
        let mut stop = (at / PAGE + 1) * PAGE;
        while stop < end && is_in(stop) == kind {
            stop += PAGE;
        }
        let stop = stop.min(end);
        if kind {
            out.push(bytes.clone(), at, stop - at);
        } else {
            copy_into(file, at as u64, stop - at, out)?;
        }
        at = stop;
    }
    Ok(())
}

/// `len` bytes at `offset` read into a buffer of their own.
fn copy_into(file: &File, offset: u64, len: usize, out: &mut LentRead) -> io::Result<()> {
    let mut b = vec![0u8; len];
    file.read_exact_at(&mut b, offset)?;
    out.push(Arc::new(b.into_boxed_slice()), 0, len);
    Ok(())
}
