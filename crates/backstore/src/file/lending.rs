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

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use crate::{Backstore, FileBackstore, FileOptions};

    fn tmpfs_lu(len: u64) -> (FileBackstore, tempfile::TempDir) {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let f = FileBackstore::open(&FileOptions {
            size: Some(len),
            ..FileOptions::new(dir.path().join("lu.img"))
        })
        .unwrap();
        (f, dir)
    }

    /// `writev` of every piece of `r` to `fd`: what the fabric does.
    fn send(r: &crate::LentRead, fd: i32) -> isize {
        let iov: Vec<libc::iovec> = r
            .slices()
            .map(|s| libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            })
            .collect();
        // SAFETY: the iovecs point into the lent pieces, alive meanwhile;
        // the kernel reads them (a vanished page is EFAULT, not SIGBUS).
        unsafe { libc::writev(fd, iov.as_ptr(), iov.len() as i32) }
    }

    #[test]
    fn resident_pages_are_lent_holes_are_read() {
        let (f, _d) = tmpfs_lu(1 << 20);
        f.write_at(&[5u8; 65536], 65536).unwrap();
        let r = f.read_lent(32768, 131072).unwrap().unwrap();
        assert!(r.is_live());
        let mut got = Vec::new();
        r.copy_to(&mut got);
        assert!(got[..32768].iter().all(|&b| b == 0), "hole before");
        assert!(got[32768..98304].iter().all(|&b| b == 5), "data");
        assert!(got[98304..].iter().all(|&b| b == 0), "hole after");
        // Hole, data, hole: the data piece is the mapping itself.
        assert_eq!(r.slices().count(), 3);
        let err = f.read_lent(1 << 20, 512).unwrap();
        assert!(err.is_err(), "past the end");
    }

    /// A lent read of a file someone truncated: the kernel's copy of the
    /// vanished pages fails (EFAULT), the process lives on (no SIGBUS).
    #[test]
    fn a_truncated_file_fails_the_send_and_does_not_kill_us() {
        let (f, d) = tmpfs_lu(1 << 20);
        f.write_at(&vec![9u8; 1 << 20], 0).unwrap();
        let r = f.read_lent(0, 1 << 20).unwrap().unwrap();
        assert_eq!(r.slices().count(), 1, "all resident: one piece");
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(d.path().join("lu.img"))
            .unwrap();
        other.set_len(0).unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let n = send(&r, a.as_raw_fd());
        let e = std::io::Error::last_os_error();
        assert!(n < 0, "sent {n} bytes of a truncated file");
        assert_eq!(e.raw_os_error(), Some(libc::EFAULT), "{e}");
    }
}
