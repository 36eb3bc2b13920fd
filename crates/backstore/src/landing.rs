//! Landed writes: WRITE data the fabric receives from its socket straight
//! into the medium's memory ([`Backstore::land`]), for backstores whose
//! medium *is* page-cache memory: a buffered file on tmpfs, through a
//! shared mapping of it (`file::landing`). A WRITE's data then costs one
//! copy, the kernel's from the socket, where receiving into a task buffer
//! and writing that costs two (BENCHMARKS.md, "Session 11: landed writes":
//! 0.58x the daemon's CPU per 1 MiB write, 1.4-1.6x IOPS).
//!
//! Not the ramdisk: its chunks already take a write with non-temporal
//! stores from a cache-warm buffer (`stream_copy`), and a receive straight
//! into the cold chunk cost as much CPU and 0.78-0.82x the IOPS (the same
//! measurement): the cache misses of the landing cost what the copy saved.
//!
//! The memory is handed out as an [`Area`], a raw range that only the
//! kernel writes (`recv(2)` into it), never a slice: a file mapping's page
//! can vanish under us (the file truncated by another process, or tmpfs
//! full for a hole), which is `SIGBUS` for a user-space store and only an
//! `EFAULT` return for the kernel's copy. A backstore keeps the area valid
//! for the duration of the `fill` call only.
//!
//! [`Backstore::land`]: crate::Backstore::land

use std::io;

/// `len` bytes of a medium's memory at `ptr`, valid during one `fill` call
/// of [`crate::Backstore::land`]. Write it only through the kernel.
#[derive(Debug)]
pub struct Area {
    ptr: *mut u8,
    len: usize,
}

impl Area {
    /// # Safety
    /// `ptr..ptr + len` must be writable memory of the medium for as long
    /// as the `fill` call that receives the area runs.
    pub(crate) unsafe fn new(ptr: *mut u8, len: usize) -> Area {
        Area { ptr, len }
    }

    /// Start of the area: for `recv(2)`-like system calls only.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Fills one [`Area`] (a receive into it): the bytes it put there, from
/// the area's start. Fewer than the area holds ends the landing there.
pub type Fill<'a> = &'a mut dyn FnMut(&Area) -> io::Result<usize>;

/// The answer of a backstore that does not land writes.
pub(crate) fn unsupported() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "this backstore does not land writes",
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    use super::*;
    use crate::{Backstore, FileBackstore, FileOptions, RamBackstore};

    /// A fill that receives from `rx` (what the fabric does with its
    /// socket), at most `cap` bytes per area.
    fn recv_fill(rx: &UnixStream, cap: usize) -> impl FnMut(&Area) -> io::Result<usize> + '_ {
        move |a: &Area| {
            let want = a.len().min(cap);
            // SAFETY: the area is writable for the duration of the call.
            let n = unsafe { libc::recv(rx.as_raw_fd(), a.ptr().cast(), want, libc::MSG_WAITALL) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as usize)
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    fn lands_and_reads_back(b: &dyn Backstore, at: u64, len: usize) {
        let (mut tx, rx) = UnixStream::pair().unwrap();
        let data = pattern(len, 7);
        let d = data.clone();
        let w = std::thread::spawn(move || tx.write_all(&d).unwrap());
        let n = b.land(at, len, &mut recv_fill(&rx, usize::MAX)).unwrap();
        w.join().unwrap();
        assert_eq!(n, len);
        let mut got = vec![0u8; len];
        b.read_at(&mut got, at).unwrap();
        assert!(got == data, "landed bytes read back");
    }

    #[test]
    fn ramdisk_does_not_land() {
        let r = RamBackstore::new(1 << 20).unwrap();
        assert!(!r.lands_writes(), "measured slower than its streaming copy");
        let (_tx, rx) = UnixStream::pair().unwrap();
        assert!(r.land(0, 512, &mut recv_fill(&rx, 1)).is_err());
    }

    #[test]
    fn tmpfs_file_lands_disk_file_does_not() {
        let shm = tempfile::tempdir_in("/dev/shm").unwrap();
        let f = FileBackstore::open(&FileOptions {
            size: Some(4 << 20),
            ..FileOptions::new(shm.path().join("lu.img"))
        })
        .unwrap();
        assert!(f.lands_writes(), "a buffered file on tmpfs lands writes");
        lands_and_reads_back(&f, 12288, 300 * 1024);
        // And the page cache is the file: a fresh descriptor sees the bytes.
        let mut got = vec![0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(shm.path().join("lu.img")).unwrap(),
            &mut got,
            12288,
        )
        .unwrap();
        assert!(got == pattern(300 * 1024, 7)[..4096]);
        // A fill that stops short ends the landing there.
        let (mut tx, rx) = UnixStream::pair().unwrap();
        tx.write_all(&[9u8; 4096]).unwrap();
        drop(tx);
        assert_eq!(f.land(0, 8192, &mut recv_fill(&rx, 8192)).unwrap(), 4096);
        assert!(
            f.land(4 << 20, 512, &mut recv_fill(&rx, 1)).is_err(),
            "past the end"
        );
        // Grown online: the new tail lands too.
        f.resize(8 << 20).unwrap();
        lands_and_reads_back(&f, (8 << 20) - 65536, 65536);

        let disk = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let d = FileBackstore::open(&FileOptions {
            size: Some(1 << 20),
            ..FileOptions::new(disk.path().join("lu.img"))
        })
        .unwrap();
        let on_disk = !crate::file::on_memory_fs(&std::fs::File::open(disk.path()).unwrap());
        if on_disk {
            assert!(!d.lands_writes(), "a file on a disk filesystem does not");
        }
        let ro = FileBackstore::open(&FileOptions {
            read_only: true,
            ..FileOptions::new(shm.path().join("lu.img"))
        })
        .unwrap();
        assert!(!ro.lands_writes(), "nor a read-only one");
    }
}
