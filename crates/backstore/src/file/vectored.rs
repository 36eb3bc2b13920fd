//! fileio's zero-copy path for lent memory ([`IoVecs`]): the segments go
//! to `preadv2` / `pwritev2` as they are, so the page cache copies
//! straight into (or out of) a guest's buffers. Same rules as the slice
//! methods: range and read-only checks, FUA through `RWF_DSYNC` (or a
//! write then a flush), O_DIRECT only where the offset, length and every
//! segment are aligned (else a bounce buffer, as `read_at` does).

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;

use super::{is_unsupported, FileBackstore, DIRECT_ALIGN};
use crate::iov::{bounce_read, bounce_write};
use crate::IoVecs;

/// Segments per syscall at most (the kernel's UIO_MAXIOV).
const IOV_MAX: usize = 1024;

fn aligned(bufs: &IoVecs) -> bool {
    bufs.iovecs().iter().all(|s| {
        (s.iov_base as usize).is_multiple_of(DIRECT_ALIGN) && s.iov_len.is_multiple_of(DIRECT_ALIGN)
    })
}

/// Move all of `bufs` at `offset` (`write`: from them, else into them),
/// resuming after short transfers.
fn transfer(
    fd: &File,
    bufs: &IoVecs,
    mut offset: u64,
    write: bool,
    flags: libc::c_int,
) -> io::Result<()> {
    // Only a short transfer (rare) needs an adjusted copy of the list.
    let mut rest: Option<Vec<libc::iovec>> = None;
    loop {
        let cur = rest.as_deref().unwrap_or(bufs.iovecs());
        if cur.is_empty() {
            return Ok(());
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let cnt = cur.len().min(IOV_MAX) as libc::c_int;
        // SAFETY: every segment is valid for its length while `bufs` lives
        // (IoVecs' contract); the kernel alone touches that memory, and a
        // copy made in `rest` only narrows segments of it.
        let n = unsafe {
            if write {
                libc::pwritev2(fd.as_raw_fd(), cur.as_ptr(), cnt, off, flags)
            } else {
                libc::preadv2(fd.as_raw_fd(), cur.as_ptr(), cnt, off, flags)
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::from(if write {
                io::ErrorKind::WriteZero
            } else {
                io::ErrorKind::UnexpectedEof
            }));
        }
        offset += n as u64;
        let mut left = n as usize;
        let mut i = 0;
        while i < cur.len() && left >= cur[i].iov_len {
            left -= cur[i].iov_len;
            i += 1;
        }
        if i == cur.len() {
            return Ok(());
        }
        let mut next = cur[i..].to_vec();
        // SAFETY: `left` < this segment's length, so the pointer stays inside it.
        next[0].iov_base = unsafe { next[0].iov_base.cast::<u8>().add(left).cast() };
        next[0].iov_len -= left;
        rest = Some(next);
    }
}

impl FileBackstore {
    pub(super) fn read_iov(&self, bufs: &IoVecs, offset: u64) -> io::Result<()> {
        self.check(offset, bufs.len())?;
        let fd = match self.direct_for(offset, bufs.len()) {
            Some(d) if aligned(bufs) => d,
            Some(_) => return bounce_read(self, bufs, offset),
            None => &self.file,
        };
        transfer(fd, bufs, offset, false, 0)
    }

    pub(super) fn write_iov(&self, bufs: &IoVecs, offset: u64, fua: bool) -> io::Result<()> {
        self.check_writable()?;
        self.check(offset, bufs.len())?;
        let direct = self.direct_for(offset, bufs.len());
        if direct.is_some() && !aligned(bufs) {
            return bounce_write(self, bufs, offset, fua);
        }
        if fua {
            self.wb.fault.check()?;
        }
        // FUA on a write-back file: RWF_DSYNC where the kernel has it (a
        // write-through descriptor is O_DSYNC already).
        let dsync =
            fua && self.write_back && direct.is_none() && self.rwf_dsync_ok.load(Ordering::Relaxed);
        let fd = direct.unwrap_or(&self.file);
        let flags = if dsync { libc::RWF_DSYNC } else { 0 };
        match transfer(fd, bufs, offset, true, flags) {
            // Refused before anything was written: plain write + flush.
            Err(e) if dsync && is_unsupported(&e) => {
                self.rwf_dsync_ok.store(false, Ordering::Relaxed);
                self.write_iov(bufs, offset, fua)
            }
            // The write's own sync may have reported an earlier writeback error.
            Err(e) if dsync || !self.write_back => Err(self.wb.dsync_failed(e)),
            Err(e) => Err(e),
            Ok(()) if fua && self.write_back && !dsync => self.wb.sync(&self.file, false),
            Ok(()) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{Backstore, FileBackstore, FileOptions, IoVecs};

    /// Reads and writes through lent segments (several, odd-sized) land
    /// where the slice methods put and find the same bytes, FUA included;
    /// past the end is refused.
    #[test]
    fn vectored_matches_the_slice_methods() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = FileOptions::new(dir.path().join("f"));
        o.size = Some(1 << 20);
        let f = FileBackstore::open(&o).unwrap();
        let mut mem = vec![0u8; 3 * 4096];
        let p = mem.as_mut_ptr();
        let lend = |segs: &[(usize, usize)]| {
            // SAFETY: the segments lie in `mem`, alive for the whole test.
            unsafe { IoVecs::new(segs.iter().map(|&(o, l)| (p.add(o), l)), Arc::new(())) }
        };
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 251) as u8).collect();
        f.write_at(&data, 4096).unwrap();
        let v = lend(&[(3, 100), (500, 3000), (8000, 1900)]);
        f.read_vectored_at(&v, 4096).unwrap();
        assert_eq!(&mem[3..103], &data[..100]);
        assert_eq!(&mem[500..3500], &data[100..3100]);
        assert_eq!(&mem[8000..9900], &data[3100..5000]);
        for fua in [false, true] {
            mem[500..3500].fill(0xa5 + u8::from(fua));
            let w = lend(&[(500, 3000)]);
            f.write_vectored_at(&w, 65536, fua).unwrap();
            let mut back = vec![0u8; 3000];
            f.read_at(&mut back, 65536).unwrap();
            assert!(back.iter().all(|&b| b == 0xa5 + u8::from(fua)), "fua={fua}");
        }
        let e = f.read_vectored_at(&lend(&[(0, 4096)]), (1 << 20) - 512);
        assert!(e.is_err(), "past the end");
        let mut ro = o.clone();
        ro.read_only = true;
        let r = FileBackstore::open(&ro).unwrap();
        assert!(r.write_vectored_at(&lend(&[(0, 512)]), 0, false).is_err());
    }
}
