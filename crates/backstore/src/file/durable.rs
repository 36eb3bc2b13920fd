//! Durability bookkeeping of a file backstore: every sync goes through a
//! [`FlushFault`], so a writeback error reported once by the kernel keeps
//! failing flushes and FUA writes; and a failed synchronous write (O_DSYNC,
//! `RWF_DSYNC`) is told apart as "this write failed" (ENOSPC while
//! allocating, nothing lost) or "its sync reported a writeback error of
//! earlier writes" (data lost, sticky).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::FlushFault;

pub(super) struct Writeback {
    /// A second open file description of the same file, synced only after a
    /// synchronous write failed. Linux keeps each description's own place
    /// in the inode's writeback error sequence, so `fdatasync` here reports
    /// any writeback error since the backstore was opened, even one the
    /// main descriptor's failed write already consumed.
    probe: Option<File>,
    pub(super) fault: FlushFault,
    name: String,
}

impl Writeback {
    pub(super) fn open(path: &Path, read_only: bool) -> Writeback {
        let probe = if read_only {
            None
        } else {
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .ok()
        };
        Writeback {
            probe,
            fault: FlushFault::new(),
            name: path.display().to_string(),
        }
    }

    /// `fdatasync` (or `fsync` with `all`), remembering a failure.
    pub(super) fn sync(&self, file: &File, all: bool) -> io::Result<()> {
        self.fault.check()?;
        let r = if all {
            file.sync_all()
        } else {
            file.sync_data()
        };
        r.map_err(|e| self.fault.record(&self.name, &format!("fdatasync: {e}")))
    }

    /// An fdatasync made elsewhere (the io_uring engine) failed with `e`:
    /// remembered as `sync` remembers it.
    pub(super) fn sync_failed(&self, e: io::Error) -> io::Error {
        self.fault.record(&self.name, &format!("fdatasync: {e}"))
    }

    /// A synchronous write failed with `e`: if a writeback error happened
    /// (the probe's sync reports it), it becomes sticky; otherwise the write
    /// alone failed and `e` is returned as is.
    pub(super) fn dsync_failed(&self, e: io::Error) -> io::Error {
        if let Err(sticky) = self.fault.check() {
            return sticky;
        }
        if e.kind() == io::ErrorKind::InvalidInput {
            return e; // refused before any I/O
        }
        match &self.probe {
            Some(p) => match p.sync_data() {
                Ok(()) => e,
                Err(pe) => self.fault.record(
                    &self.name,
                    &format!("synchronous write failed ({e}) after a writeback error ({pe})"),
                ),
            },
            // Can't tell: assume the worst.
            None => self
                .fault
                .record(&self.name, &format!("synchronous write failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use crate::{Backstore, FileBackstore, FileOptions};

    /// A tmpfs of `size` bytes mounted on a fresh directory, unmounted on
    /// drop. `None` (with a SKIP line) when mounting is not allowed.
    struct SmallFs {
        dir: tempfile::TempDir,
    }

    impl SmallFs {
        fn mount(size: &str, test: &str) -> Option<SmallFs> {
            let dir = tempfile::tempdir().ok()?;
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("SKIP {test}: cannot mount a tmpfs (needs root)");
                return None;
            }
            Some(SmallFs { dir })
        }
    }

    impl Drop for SmallFs {
        fn drop(&mut self) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }

    /// A loop device whose backing file lives on a 4 MiB tmpfs but is
    /// 64 MiB long: writes that land past the tmpfs's room fail when the
    /// page cache writes them back (EIO), as on a failing disk.
    struct FailingDisk {
        dev: String,
        _fs: SmallFs,
    }

    impl FailingDisk {
        fn attach(test: &str) -> Option<FailingDisk> {
            let fs = SmallFs::mount("4m", test)?;
            let img = fs.dir.path().join("backing");
            std::fs::File::create(&img).ok()?.set_len(64 << 20).ok()?;
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&img)
                .output()
                .ok()?;
            if !out.status.success() {
                eprintln!("SKIP {test}: no loop device");
                return None;
            }
            let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            Some(FailingDisk { dev, _fs: fs })
        }
    }

    impl Drop for FailingDisk {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        }
    }

    /// Linux reports a writeback error to fsync once; rtarget keeps
    /// reporting it, so no later SYNCHRONIZE CACHE claims lost data is safe.
    #[test]
    fn writeback_error_fails_every_later_flush() {
        let Some(disk) = FailingDisk::attach("writeback_error_fails_every_later_flush") else {
            return;
        };
        let b = FileBackstore::open(&FileOptions::new(&disk.dev)).unwrap();
        b.write_at(&vec![0x5a; 8 << 20], 0).unwrap();
        let first = b.flush().expect_err("writeback to a full medium must fail");
        for _ in 0..3 {
            let e = b
                .flush()
                .expect_err("a later flush claimed the lost data durable");
            assert!(e.to_string().contains("earlier flush failed"), "{e}");
        }
        assert!(
            b.write_at_fua(&[1; 4096], 0).is_err(),
            "FUA after a lost writeback"
        );
        // Reads and plain writes go on (data can be copied off).
        b.read_at(&mut [0; 4096], 0).unwrap();
        b.write_at(&[2; 4096], 0).unwrap();
        eprintln!("first flush error: {first}");
        // Opening the object again starts clean (the operator's reset).
        drop(b);
        let b = FileBackstore::open(&FileOptions::new(&disk.dev)).unwrap();
        b.flush().unwrap();
    }

    /// The writeback error is consumed by a FUA write (pwritev2 RWF_DSYNC
    /// syncs, and fsync reports once per open file): the next flush still fails.
    #[test]
    fn writeback_error_met_by_a_fua_write_sticks() {
        let Some(disk) = FailingDisk::attach("writeback_error_met_by_a_fua_write_sticks") else {
            return;
        };
        let b = FileBackstore::open(&FileOptions::new(&disk.dev)).unwrap();
        b.write_at(&vec![0x5a; 8 << 20], 0).unwrap();
        // Someone else's fsync writes the pages back (and sees the error on
        // its own file description only).
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(&disk.dev)
            .unwrap();
        assert!(other.sync_data().is_err());
        assert!(b.write_at_fua(&[1; 4096], 0).is_err());
        assert!(
            b.flush().is_err(),
            "flush after a FUA write met the writeback error"
        );
    }

    /// A write that fails on its own (ENOSPC while allocating: nothing
    /// acknowledged was lost) does not poison the LU's flushes.
    #[test]
    fn a_full_filesystem_is_not_a_lost_writeback() {
        for write_back in [true, false] {
            // A filesystem each: space freed by deleting a file may stay in
            // use while another test's child process still holds the fd.
            let Some(fs) = SmallFs::mount("1m", "a_full_filesystem_is_not_a_lost_writeback") else {
                return;
            };
            let b = FileBackstore::open(&FileOptions {
                size: Some(8 << 20),
                write_back,
                ..FileOptions::new(fs.dir.path().join("f"))
            })
            .unwrap();
            let e = b.write_at_fua(&vec![3; 4 << 20], 0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            b.flush().unwrap();
            b.write_at_fua(&[4; 4096], 0)
                .unwrap_or_else(|e| panic!("write_back={write_back}: {e}"));
        }
    }
}
