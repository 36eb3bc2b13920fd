//! fileio: a backstore on a regular file (or a block device node), LIO's
//! `fileio` plugin.
//!
//! All I/O is positional (`pread`/`pwrite`), so one open file is shared by
//! every connection thread without a cursor or a lock. A missing file is
//! created sparse (`ftruncate`), discard punches holes, write-zeroes uses
//! `FALLOC_FL_ZERO_RANGE` (or a hole when that is unsupported), FUA rides on
//! `pwritev2(RWF_DSYNC)`. With `write_back` off the file is opened `O_DSYNC`
//! so each write is durable when it returns and the LU reports no volatile
//! cache. `O_DIRECT` is optional: the core's buffers carry no alignment
//! promise, so unaligned requests are bounced through an aligned per-thread
//! buffer (unaligned offsets/lengths fall back to the buffered descriptor).

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::{Backstore, Capabilities, LentRead};

mod durable;
mod landing;
mod lending;
#[cfg(test)]
pub(crate) use landing::in_memory as on_memory_fs;
mod resize;
pub mod uring;
mod vectored;

/// Alignment used for `O_DIRECT` (covers 512- and 4096-byte sector devices).
const DIRECT_ALIGN: usize = 4096;

/// How to open a file backstore.
#[derive(Debug, Clone)]
pub struct FileOptions {
    pub path: PathBuf,
    /// Size in bytes. `None`: the file's (or device's) current size. When the
    /// file is missing it is created sparse with this size; when it is shorter
    /// it is extended sparse.
    pub size: Option<u64>,
    /// Writes may sit in the page cache until `flush` (LIO `write_back`).
    pub write_back: bool,
    /// Bypass the page cache with `O_DIRECT` where the request allows it.
    pub direct: bool,
    pub read_only: bool,
    /// Block devices: claim the device exclusively (`O_EXCL`), so it cannot
    /// be in use by a filesystem or another claimant (LIO `exclusive`).
    pub exclusive: bool,
    /// Report a rotational medium. `None`: ask sysfs about the device that
    /// holds the file (or the block device itself).
    pub rotational: Option<bool>,
}

impl FileOptions {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileOptions {
            path: path.into(),
            size: None,
            write_back: true,
            direct: false,
            read_only: false,
            exclusive: false,
            rotational: None,
        }
    }
}

/// Allocation state of a byte range, for GET LBA STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// The range holds data (false: a hole that reads as zeroes).
    pub allocated: bool,
    /// Bytes from the queried offset with the same state (never 0 inside the file).
    pub len: u64,
}

pub struct FileBackstore {
    path: PathBuf,
    /// Buffered descriptor (`O_DSYNC` when write-through).
    file: File,
    /// `O_DIRECT` descriptor, when asked for and the filesystem accepts it.
    direct: Option<File>,
    /// Exported size; grows online (`resize`), so every check loads it.
    size: AtomicU64,
    /// A block device node: `resize` re-reads the device size.
    is_blk: bool,
    /// Serializes `resize` calls (I/O never takes it).
    grow: Mutex<()>,
    write_back: bool,
    read_only: bool,
    rotational: bool,
    can_punch: bool,
    /// Cleared the first time ZERO_RANGE answers "unsupported".
    zero_range_ok: AtomicBool,
    /// Cleared the first time pwritev2(RWF_DSYNC) answers "unsupported".
    rwf_dsync_ok: AtomicBool,
    /// Sticky flush failures (writeback errors are reported only once).
    wb: durable::Writeback,
    /// A buffered file on tmpfs: WRITE data lands in its mapping.
    landing: landing::Landing,
}

thread_local! {
    /// Per-thread bounce buffer for O_DIRECT requests whose memory is not aligned.
    static BOUNCE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn open_with(path: &Path, opts: &FileOptions, extra_flags: i32, create: bool) -> io::Result<File> {
    let mut oo = OpenOptions::new();
    oo.read(true)
        .write(!opts.read_only)
        .create(create && !opts.read_only);
    let mut flags = libc::O_CLOEXEC | extra_flags;
    if !opts.write_back && !opts.read_only {
        flags |= libc::O_DSYNC;
    }
    oo.custom_flags(flags);
    oo.open(path)
}

fn cvt(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::ENOTTY)
    ) || e.kind() == io::ErrorKind::Unsupported
}

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: plain syscall on a descriptor we own; no memory is passed.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), mode, off, len) };
        match cvt(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// `queue/rotational` of the block device under a file (st_dev) or of a
/// device node (st_rdev); partitions keep it in their parent's directory.
/// Unknown (tmpfs, overlay without a device) counts as non-rotational.
fn sysfs_rotational(meta: &std::fs::Metadata, is_blk: bool) -> bool {
    use std::os::unix::fs::MetadataExt;
    let dev = if is_blk { meta.rdev() } else { meta.dev() };
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let base = format!("/sys/dev/block/{major}:{minor}");
    [
        format!("{base}/queue/rotational"),
        format!("{base}/../queue/rotational"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .is_some_and(|s| s.trim() == "1")
}

fn block_device_size(file: &File) -> io::Result<u64> {
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which points at a live u64.
    cvt(unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) })?;
    Ok(size)
}

impl FileBackstore {
    pub fn open(opts: &FileOptions) -> io::Result<FileBackstore> {
        let exists = opts.path.exists();
        if !exists && opts.size.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{}: file does not exist and no size was given",
                    opts.path.display()
                ),
            ));
        }
        let mut file = open_with(&opts.path, opts, 0, true)?;
        let mut meta = file.metadata()?;
        let is_blk = meta.file_type().is_block_device();
        if is_blk && opts.exclusive {
            // O_EXCL without O_CREAT on a block device is the kernel's exclusive claim.
            drop(file);
            file = open_with(&opts.path, opts, libc::O_EXCL, false)?;
            meta = file.metadata()?;
        }
        let current = if is_blk {
            block_device_size(&file)?
        } else {
            meta.len()
        };
        let size = match opts.size {
            Some(want) if is_blk && want > current => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}: size {want} is larger than the device ({current})",
                        opts.path.display()
                    ),
                ))
            }
            Some(want) => {
                if !is_blk && want > current {
                    if opts.read_only {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "{}: read-only file is shorter than size {want}",
                                opts.path.display()
                            ),
                        ));
                    }
                    // Sparse: only metadata changes, no blocks are allocated.
                    file.set_len(want)?;
                }
                want
            }
            None => current,
        };
        let direct = if opts.direct {
            match open_with(&opts.path, opts, libc::O_DIRECT, false) {
                Ok(f) => Some(f),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(path = %opts.path.display(), "O_DIRECT not supported here; using the page cache");
                    None
                }
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        // Probe hole punching past the end of the data: with KEEP_SIZE it changes
        // nothing, but tells whether the filesystem (or device) supports it.
        let can_punch = !opts.read_only
            && !is_blk
            && fallocate(
                &file,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                size.max(current),
                DIRECT_ALIGN as u64,
            )
            .is_ok();
        let landing = if opts.write_back && !opts.read_only && !is_blk && direct.is_none() {
            landing::Landing::open(&file, size)
        } else {
            landing::Landing::none()
        };
        Ok(FileBackstore {
            path: opts.path.clone(),
            file,
            direct,
            size: AtomicU64::new(size),
            is_blk,
            grow: Mutex::new(()),
            write_back: opts.write_back,
            read_only: opts.read_only,
            rotational: opts
                .rotational
                .unwrap_or_else(|| sysfs_rotational(&meta, is_blk)),
            can_punch,
            zero_range_ok: AtomicBool::new(true),
            rwf_dsync_ok: AtomicBool::new(true),
            wb: durable::Writeback::open(&opts.path, opts.read_only),
            landing,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `O_DIRECT` is in use.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    fn cur_size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        let size = self.cur_size();
        match offset.checked_add(len as u64) {
            Some(end) if end <= size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("I/O at {offset}+{len} beyond size {size}"),
            )),
        }
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.read_only {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "read-only backstore",
            ))
        } else {
            Ok(())
        }
    }

    /// The direct descriptor, if this request's offset and length allow O_DIRECT.
    fn direct_for(&self, offset: u64, len: usize) -> Option<&File> {
        let d = self.direct.as_ref()?;
        (offset.is_multiple_of(DIRECT_ALIGN as u64) && len.is_multiple_of(DIRECT_ALIGN))
            .then_some(d)
    }

    /// Allocation state at `offset` (SEEK_DATA/SEEK_HOLE), for GET LBA STATUS.
    /// Filesystems without hole reporting answer "allocated up to the end".
    pub fn extent_at(&self, offset: u64) -> io::Result<Extent> {
        let size = self.cur_size();
        if offset >= size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset beyond size",
            ));
        }
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = self.file.as_raw_fd();
        // lseek moves the shared cursor, but every data transfer here is
        // positional, so nothing depends on it.
        // SAFETY: plain syscall, no memory passed.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENXIO) => Ok(Extent {
                    allocated: false,
                    len: size - offset,
                }),
                _ if is_unsupported(&e) => Ok(Extent {
                    allocated: true,
                    len: size - offset,
                }),
                _ => Err(e),
            };
        }
        let data = data as u64;
        if data > offset {
            return Ok(Extent {
                allocated: false,
                len: data.min(size) - offset,
            });
        }
        // SAFETY: plain syscall, no memory passed.
        let hole = unsafe { libc::lseek(fd, off, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Extent {
            allocated: true,
            len: (hole as u64).min(size) - offset,
        })
    }

    fn pwritev2_dsync(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let iov = libc::iovec {
                iov_base: buf.as_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            let off = libc::off_t::try_from(offset)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: the iovec points at `buf`, which outlives the call; the kernel only reads it.
            let n = unsafe { libc::pwritev2(self.file.as_raw_fd(), &iov, 1, off, libc::RWF_DSYNC) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            buf = &buf[n as usize..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// Run `f` with an aligned scratch slice of `len` bytes from the thread's bounce buffer.
fn with_bounce<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    BOUNCE.with(|b| {
        let mut v = b.borrow_mut();
        if v.len() < len + DIRECT_ALIGN {
            v.resize(len + DIRECT_ALIGN, 0);
        }
        let start = v.as_ptr().align_offset(DIRECT_ALIGN);
        f(&mut v[start..start + len])
    })
}

fn is_aligned(p: *const u8) -> bool {
    (p as usize).is_multiple_of(DIRECT_ALIGN)
}

impl Backstore for FileBackstore {
    fn allocation_at(&self, offset: u64) -> io::Result<Option<crate::Extent>> {
        self.extent_at(offset).map(Some)
    }

    fn size(&self) -> u64 {
        self.cur_size()
    }

    fn resize(&self, new_size: u64) -> io::Result<()> {
        self.grow_to(new_size)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            discard: self.can_punch,
            write_zeroes: self.can_punch,
            write_cache: self.write_back && !self.read_only,
            read_only: self.read_only,
            rotational: self.rotational,
            optimal_io_size: 0,
            // A read-only block device can still grow underneath.
            resize: self.is_blk || !self.read_only,
            crypto_erase: false,
            async_submit: false,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len())?;
        match self.direct_for(offset, buf.len()) {
            Some(d) if is_aligned(buf.as_ptr()) => d.read_exact_at(buf, offset),
            Some(d) => with_bounce(buf.len(), |b| {
                d.read_exact_at(b, offset)?;
                buf.copy_from_slice(b);
                Ok(())
            }),
            None => self.file.read_exact_at(buf, offset),
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        self.check(offset, buf.len())?;
        let r = match self.direct_for(offset, buf.len()) {
            Some(d) if is_aligned(buf.as_ptr()) => d.write_all_at(buf, offset),
            Some(d) => with_bounce(buf.len(), |b| {
                b.copy_from_slice(buf);
                d.write_all_at(b, offset)
            }),
            None => self.file.write_all_at(buf, offset),
        };
        match r {
            // O_DSYNC: the write's own sync may have reported an earlier
            // writeback error.
            Err(e) if !self.write_back => Err(self.wb.dsync_failed(e)),
            r => r,
        }
    }

    fn write_at_fua(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        self.check(offset, buf.len())?;
        self.wb.fault.check()?;
        // Write-through descriptors are O_DSYNC already.
        if !self.write_back {
            return self.write_at(buf, offset);
        }
        if self.direct.is_none() && self.rwf_dsync_ok.load(Ordering::Relaxed) {
            match self.pwritev2_dsync(buf, offset) {
                Ok(()) => return Ok(()),
                Err(e) if is_unsupported(&e) => self.rwf_dsync_ok.store(false, Ordering::Relaxed),
                Err(e) => return Err(self.wb.dsync_failed(e)),
            }
        }
        self.write_at(buf, offset)?;
        self.wb.sync(&self.file, false)
    }

    fn read_vectored_at(&self, bufs: &crate::IoVecs, offset: u64) -> io::Result<()> {
        self.read_iov(bufs, offset)
    }

    fn write_vectored_at(&self, bufs: &crate::IoVecs, offset: u64, fua: bool) -> io::Result<()> {
        self.write_iov(bufs, offset, fua)
    }

    fn lands_writes(&self) -> bool {
        self.landing.active()
    }

    /// Live pieces of the page cache, on tmpfs/ramfs (`file::lending`).
    fn read_lent(&self, offset: u64, len: usize) -> Option<io::Result<LentRead>> {
        if len > 0 {
            if let Err(e) = self.check(offset, len) {
                return self.landing.active().then_some(Err(e));
            }
        }
        self.landing.lend(&self.file, offset, len)
    }

    fn land(&self, offset: u64, len: usize, fill: crate::Fill<'_>) -> io::Result<usize> {
        self.check_writable()?;
        self.check(offset, len)?;
        self.landing
            .land(offset, len, fill)
            .unwrap_or_else(|| Err(crate::landing::unsupported()))
    }

    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.wb.sync(&self.file, false)
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_writable()?;
        let end = offset.checked_add(len).filter(|&e| e <= self.cur_size());
        if end.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "discard beyond size",
            ));
        }
        if !self.can_punch {
            return Err(io::Error::from(io::ErrorKind::Unsupported));
        }
        if len == 0 {
            return Ok(());
        }
        fallocate(
            &self.file,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        )?;
        self.sync_if_write_through()
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_writable()?;
        if offset.checked_add(len).is_none_or(|e| e > self.cur_size()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write_zeroes beyond size",
            ));
        }
        if len == 0 {
            return Ok(());
        }
        if self.zero_range_ok.load(Ordering::Relaxed) {
            match fallocate(
                &self.file,
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            ) {
                Ok(()) => return self.sync_if_write_through(),
                Err(e) if is_unsupported(&e) => self.zero_range_ok.store(false, Ordering::Relaxed),
                Err(e) => return Err(e),
            }
        }
        if self.can_punch {
            // discard keeps the write-through promise itself.
            return self.discard(offset, len);
        }
        // Plain zero buffers, as the trait's default does.
        const CHUNK: u64 = 1 << 20;
        let zeroes = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done) as usize;
            self.write_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

impl FileBackstore {
    /// fallocate bypasses O_DSYNC; keep the write-through promise explicitly.
    fn sync_if_write_through(&self) -> io::Result<()> {
        if self.write_back {
            Ok(())
        } else {
            self.wb.sync(&self.file, false)
        }
    }
}

#[cfg(test)]
mod tests;
