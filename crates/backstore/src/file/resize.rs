//! Online growth of a file backstore. A regular file is extended sparse
//! (`ftruncate`, no blocks allocated) and the new length made durable before
//! the size is published; a block device cannot be grown from here, so
//! "resize" means the device grew underneath (LVM, a loop device, a SAN
//! LUN) and rtarget re-reads its size (`BLKGETSIZE64`). Shrinking is refused.

use std::io;
use std::sync::atomic::Ordering;

use super::{block_device_size, FileBackstore};

impl FileBackstore {
    /// Grow the exported size to `new_size` bytes (see [`crate::Backstore::resize`]).
    pub(super) fn grow_to(&self, new_size: u64) -> io::Result<()> {
        let _one = self.grow.lock().unwrap_or_else(|p| p.into_inner());
        let old = self.cur_size();
        if new_size < old {
            return Err(crate::refuse_shrink(old, new_size));
        }
        if new_size == old {
            return Ok(());
        }
        if self.is_blk {
            let dev = block_device_size(&self.file)?;
            if new_size > dev {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: the device has {dev} bytes, fewer than {new_size}; grow the device first",
                        self.path.display()
                    ),
                ));
            }
        } else {
            if self.read_only {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!("{}: read-only backstore", self.path.display()),
                ));
            }
            // A file that is already longer (grown by someone else, or
            // opened with a smaller size) keeps its bytes.
            if self.file.metadata()?.len() < new_size {
                self.file.set_len(new_size)?;
                // The new length must survive a crash before initiators
                // are told about it and write there.
                self.wb.sync(&self.file, true)?;
            }
        }
        // The mapping first: a landing that sees the new size finds it.
        self.landing.remap(&self.file, new_size);
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }

    /// Grow to what the medium holds now: a block device's current size, or
    /// a regular file's length after it was extended by another program.
    /// Returns the new size (unchanged when the medium did not grow).
    pub fn rescan(&self) -> io::Result<u64> {
        let now = if self.is_blk {
            block_device_size(&self.file)?
        } else {
            self.file.metadata()?.len()
        };
        let cur = self.cur_size();
        if now > cur {
            self.grow_to(now)?;
            return Ok(now);
        }
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::process::Command;

    use super::*;
    use crate::{Backstore, FileOptions};

    fn open(p: &std::path::Path, size: Option<u64>) -> FileBackstore {
        FileBackstore::open(&FileOptions {
            size,
            ..FileOptions::new(p)
        })
        .unwrap()
    }

    #[test]
    fn file_grows_sparse_keeping_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        let b = open(&p, Some(1 << 20));
        assert!(b.capabilities().resize);
        b.write_at(&[5u8; 4096], (1 << 20) - 4096).unwrap();
        assert!(b.write_at(&[5u8; 512], 1 << 20).is_err());
        b.resize(1 << 30).unwrap();
        assert_eq!(b.size(), 1 << 30);
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.len(), 1 << 30);
        assert!(md.blocks() * 512 < 1 << 20, "still sparse: {}", md.blocks());
        let mut buf = vec![1u8; 8192];
        b.read_at(&mut buf, (1 << 20) - 4096).unwrap();
        assert!(buf[..4096].iter().all(|&x| x == 5));
        assert!(buf[4096..].iter().all(|&x| x == 0));
        b.write_at(&[6u8; 512], (1 << 30) - 512).unwrap();
    }

    #[test]
    fn shrink_and_read_only_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        let b = open(&p, Some(1 << 20));
        let e = b.resize(4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("shrink"), "{e}");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
        drop(b);
        let ro = FileBackstore::open(&FileOptions {
            read_only: true,
            ..FileOptions::new(&p)
        })
        .unwrap();
        assert!(!ro.capabilities().resize);
        assert_eq!(
            ro.resize(2 << 20).unwrap_err().kind(),
            io::ErrorKind::PermissionDenied
        );
        assert_eq!(ro.size(), 1 << 20);
    }

    #[test]
    fn rescan_follows_a_file_grown_underneath() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        let b = open(&p, Some(1 << 20));
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(3 << 20)
            .unwrap();
        assert_eq!(b.size(), 1 << 20);
        assert_eq!(b.rescan().unwrap(), 3 << 20);
        assert_eq!(b.size(), 3 << 20);
        assert_eq!(b.rescan().unwrap(), 3 << 20);
    }

    /// A loop device grown underneath (`losetup -c`): `resize` accepts up to
    /// the new device size and refuses more. Needs root and loop devices.
    #[test]
    fn block_device_grown_underneath() {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let img = dir.path().join("loop.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output();
        let dev = match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            _ => {
                // A missing device fails under CI=true (tests/common: `in_ci`).
                let ci = std::env::var("CI")
                    .is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"));
                assert!(!ci, "CI=true, and no loop device could be set up");
                eprintln!("SKIP block_device_grown_underneath: cannot set up a loop device");
                return;
            }
        };
        let detach = scopeguard(dev.clone());
        let b = FileBackstore::open(&FileOptions {
            exclusive: true,
            ..FileOptions::new(&dev)
        })
        .unwrap();
        assert_eq!(b.size(), 1 << 20);
        assert!(b.capabilities().resize);
        let e = b.resize(2 << 20).unwrap_err();
        assert!(e.to_string().contains("grow the device first"), "{e}");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        assert!(Command::new("losetup")
            .args(["-c", &dev])
            .status()
            .unwrap()
            .success());
        b.resize(2 << 20).unwrap();
        assert_eq!(b.size(), 2 << 20);
        b.write_at(&[3u8; 4096], (2 << 20) - 4096).unwrap();
        assert_eq!(b.rescan().unwrap(), 4 << 20);
        assert!(b.resize(3 << 20).is_err(), "shrink");
        drop(b);
        drop(detach);
    }

    /// Detaches the loop device even when an assertion fails.
    struct Detach(String);
    fn scopeguard(dev: String) -> Detach {
        Detach(dev)
    }
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
}
