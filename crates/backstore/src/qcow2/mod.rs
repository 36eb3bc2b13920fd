//! qcow2: a native backstore on QEMU's copy-on-write image format (what
//! tcmu-runner's `user:qcow` does), for v2 and v3 images made by `qemu-img`
//! or by [`Qcow2Backstore::create`].
//!
//! This module owns opening an image (header checks, L1 and refcount table
//! loading, the backing chain) and the `Backstore` entry points; `datapath`
//! maps guest ranges to host clusters, `meta` keeps the L1/L2 tables and the
//! crash-safe flush order, `refcount` allocates and frees host clusters.
//!
//! Concurrency: all metadata sits behind one mutex. Reads and writes of
//! clusters that are already allocated only take it to look up the mapping,
//! then do their `pread`/`pwrite` outside it. Clusters freed by discard stay
//! reserved until a flush has made the pointer removal durable *and* no I/O
//! that may still hold the old mapping is in flight (the `gate` rwlock), so
//! a stale mapping can never read or clobber a cluster that was reused.
//!
//! ```no_run
//! use backstore::{Backstore, Qcow2Backstore, Qcow2Options};
//! let new = Qcow2Backstore::create("/tmp/new.qcow2", 1 << 30, 64 << 10)?;
//! new.write_at(&[1u8; 4096], 0)?;
//! let ro = Qcow2Options { read_only: true, ..Qcow2Options::default() };
//! let old = Qcow2Backstore::open("/tmp/made-by-qemu-img.qcow2", &ro)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod create;
mod datapath;
pub mod header;
mod meta;
mod refcount;
mod resize;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

pub use header::{Header, Qcow2Error};

use crate::{Backstore, Capabilities, Extent};
use cache::TableCache;
use header::{INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use meta::{Geometry, Meta};

/// Longest backing chain followed (also stops loops).
const MAX_CHAIN: usize = 16;

/// How to open an image.
#[derive(Debug, Clone)]
pub struct Qcow2Options {
    pub read_only: bool,
    /// Memory for cached L2 tables (each one cluster). With 64 KiB clusters
    /// the 4 MiB default maps 32 GiB of guest space.
    pub l2_cache_bytes: u64,
    /// Memory for cached refcount blocks.
    pub refcount_cache_bytes: u64,
}

impl Default for Qcow2Options {
    fn default() -> Self {
        Qcow2Options {
            read_only: false,
            l2_cache_bytes: 4 << 20,
            refcount_cache_bytes: 1 << 20,
        }
    }
}

/// A read-only image under unallocated clusters.
enum Backing {
    Raw { file: File, size: u64 },
    Qcow2(Box<Qcow2Backstore>),
}

impl Backing {
    fn size(&self) -> u64 {
        match self {
            Backing::Raw { size, .. } => *size,
            Backing::Qcow2(q) => q.size(),
        }
    }

    /// Fill `buf` from `off`; what lies past the backing file reads as zeroes.
    fn read(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let n = self.size().saturating_sub(off).min(buf.len() as u64) as usize;
        let (data, tail) = buf.split_at_mut(n);
        if n > 0 {
            match self {
                Backing::Raw { file, .. } => file.read_exact_at(data, off)?,
                Backing::Qcow2(q) => q.read_at(data, off)?,
            }
        }
        tail.fill(0);
        Ok(())
    }
}

pub struct Qcow2Backstore {
    path: PathBuf,
    file: File,
    g: Geometry,
    /// In-place data writes happened since the last sync.
    unsynced: AtomicBool,
    /// Virtual size; grows online (see `grow`).
    size: AtomicU64,
    read_only: bool,
    backing: Option<Backing>,
    backing_path: Option<PathBuf>,
    meta: Mutex<Meta>,
    /// The last compressed cluster read, inflated (keyed by its host offset).
    inflated: Mutex<(Option<u64>, Vec<u8>)>,
    /// Held shared by every data transfer, exclusively to recycle freed clusters.
    gate: RwLock<()>,
}

fn lock_err() -> io::Error {
    io::Error::other("qcow2 metadata lock poisoned")
}

impl Qcow2Backstore {
    /// Open an existing image (and its backing chain, read-only).
    pub fn open(path: impl AsRef<Path>, opts: &Qcow2Options) -> Result<Self, Qcow2Error> {
        Self::open_depth(path.as_ref(), opts, 0)
    }

    /// Create a new empty v3 image of `size` bytes (refcount_order 4,
    /// no backing file), truncating any existing file, and open it.
    pub fn create(
        path: impl AsRef<Path>,
        size: u64,
        cluster_size: u64,
    ) -> Result<Self, Qcow2Error> {
        create::create_image(path.as_ref(), size, cluster_size)?;
        Self::open(path, &Qcow2Options::default())
    }

    /// Create a new v3 image over the backing file `backing` (`qcow2` or
    /// `raw`, as `format` says; a relative name is relative to `path`'s
    /// directory, as qemu-img records it), truncating any existing file,
    /// and open it. `size` defaults to the backing file's virtual size.
    /// The backing file is only read, never written.
    pub fn create_with_backing(
        path: impl AsRef<Path>,
        size: Option<u64>,
        cluster_size: u64,
        backing: &str,
        format: &str,
    ) -> Result<Self, Qcow2Error> {
        let path = path.as_ref();
        let resolved = {
            let p = Path::new(backing);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                path.parent().unwrap_or(Path::new(".")).join(p)
            }
        };
        if resolved == path {
            return Err(Qcow2Error::Argument(
                "an image cannot be its own backing file".into(),
            ));
        }
        let backing_size = match format {
            "qcow2" => {
                let ro = Qcow2Options {
                    read_only: true,
                    ..Qcow2Options::default()
                };
                Qcow2Backstore::open(&resolved, &ro)
                    .map_err(|e| Qcow2Error::Backing(format!("{}: {e}", resolved.display())))?
                    .size()
            }
            "raw" => std::fs::metadata(&resolved)
                .map_err(|e| Qcow2Error::Backing(format!("{}: {e}", resolved.display())))?
                .len(),
            other => {
                return Err(Qcow2Error::Argument(format!(
                    "backing format {other:?} is not qcow2 or raw"
                )))
            }
        };
        let b = create::NewBacking {
            name: backing,
            format,
        };
        create::create_image_backed(path, size.unwrap_or(backing_size), cluster_size, Some(&b))?;
        Self::open(path, &Qcow2Options::default())
    }

    fn open_depth(path: &Path, opts: &Qcow2Options, depth: usize) -> Result<Self, Qcow2Error> {
        let ro = opts.read_only;
        let file = OpenOptions::new().read(true).write(!ro).open(path)?;
        let len = file.metadata()?.len();
        let mut buf = vec![0u8; len.min(1 << 21) as usize];
        file.read_exact_at(&mut buf, 0)?;
        let h = Header::parse(&buf)?;
        if !ro {
            if h.incompatible & INCOMPAT_CORRUPT != 0 {
                return Err(Qcow2Error::Corrupt);
            }
            if h.incompatible & INCOMPAT_DIRTY != 0 {
                return Err(Qcow2Error::Dirty);
            }
            if h.autoclear != 0 {
                // We don't maintain what those bits vouch for (e.g. dirty
                // bitmaps), so the spec says clear them before writing.
                file.write_all_at(&0u64.to_be_bytes(), header::AUTOCLEAR_OFFSET)?;
                file.sync_data()?;
            }
        }
        let g = Geometry::new(h.version, h.cluster_bits, h.refcount_order);
        let mut raw = vec![0u8; h.l1_size as usize * 8];
        file.read_exact_at(&mut raw, h.l1_table_offset)?;
        let l1: Vec<u64> = (0..h.l1_size as usize)
            .map(|i| meta::get64(&raw, i))
            .collect();
        let rct_clusters = u64::from(h.refcount_table_clusters);
        let mut raw = vec![0u8; (rct_clusters * g.cs) as usize];
        file.read_exact_at(&mut raw, h.refcount_table_offset)?;
        let rct: Vec<u64> = (0..raw.len() / 8).map(|i| meta::get64(&raw, i)).collect();

        let (backing, backing_path) = open_backing(path, &h, opts, depth)?;
        let tables = |bytes: u64| (bytes / g.cs).clamp(4, 4096) as usize;
        let meta = Meta {
            g,
            file: file.try_clone()?,
            l1_disk: l1.clone(),
            l1,
            l1_off: h.l1_table_offset,
            l1_clusters: (u64::from(h.l1_size) * 8).div_ceil(g.cs),
            l1_dirty: None,
            l2: TableCache::new(tables(opts.l2_cache_bytes)),
            rct,
            rct_off: h.refcount_table_offset,
            rct_clusters,
            rct_dirty: false,
            rcb: TableCache::new(tables(opts.refcount_cache_bytes)),
            pending_free: Vec::new(),
            freed_before: 0,
            free_hint: 0,
            end_cluster: len.div_ceil(g.cs),
            file_len: len,
            writes: 0,
            scratch: Vec::new(),
        };
        Ok(Qcow2Backstore {
            path: path.to_path_buf(),
            file,
            g,
            size: AtomicU64::new(h.size),
            unsynced: AtomicBool::new(false),
            read_only: ro,
            backing,
            backing_path,
            meta: Mutex::new(meta),
            inflated: Mutex::new((None, Vec::new())),
            gate: RwLock::new(()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn cluster_size(&self) -> u64 {
        self.g.cs
    }

    /// The resolved path of the backing file, if any.
    pub fn backing_file(&self) -> Option<&Path> {
        self.backing_path.as_deref()
    }

    fn meta(&self) -> io::Result<MutexGuard<'_, Meta>> {
        self.meta.lock().map_err(|_| lock_err())
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "beyond the end of the image",
            )),
        }
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "read-only qcow2 image",
            ));
        }
        Ok(())
    }
}

fn open_backing(
    image: &Path,
    h: &Header,
    opts: &Qcow2Options,
    depth: usize,
) -> Result<(Option<Backing>, Option<PathBuf>), Qcow2Error> {
    let Some(name) = &h.backing_file else {
        return Ok((None, None));
    };
    if depth + 1 >= MAX_CHAIN {
        return Err(Qcow2Error::Backing(format!(
            "{name}: chain deeper than {MAX_CHAIN}"
        )));
    }
    let p = Path::new(name);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        image.parent().unwrap_or(Path::new(".")).join(p)
    };
    let fail = |e: String| Qcow2Error::Backing(format!("{}: {e}", p.display()));
    let format = match &h.backing_format {
        Some(f) => f.clone(),
        None => {
            // No format recorded: probe (read-only, so probing raw is harmless).
            let f = File::open(&p).map_err(|e| fail(e.to_string()))?;
            let mut magic = [0u8; 4];
            let is_qcow2 = f.read_exact_at(&mut magic, 0).is_ok() && magic == header::MAGIC;
            if is_qcow2 { "qcow2" } else { "raw" }.to_owned()
        }
    };
    let backing = match format.as_str() {
        "raw" => {
            let file = File::open(&p).map_err(|e| fail(e.to_string()))?;
            let size = file.metadata().map_err(|e| fail(e.to_string()))?.len();
            Backing::Raw { file, size }
        }
        "qcow2" => {
            let o = Qcow2Options {
                read_only: true,
                ..opts.clone()
            };
            let q =
                Qcow2Backstore::open_depth(&p, &o, depth + 1).map_err(|e| fail(e.to_string()))?;
            Backing::Qcow2(Box::new(q))
        }
        other => return Err(fail(format!("backing format {other} is not supported"))),
    };
    Ok((Some(backing), Some(p)))
}

impl Backstore for Qcow2Backstore {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn resize(&self, new_size: u64) -> io::Result<()> {
        let old = self.size.load(Ordering::Acquire);
        if new_size < old {
            return Err(crate::refuse_shrink(old, new_size));
        }
        self.grow(new_size)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            discard: !self.read_only,
            write_zeroes: !self.read_only,
            write_cache: !self.read_only,
            read_only: self.read_only,
            rotational: false,
            optimal_io_size: u32::try_from(self.g.cs).unwrap_or(0),
            resize: !self.read_only,
            crypto_erase: false,
            async_submit: false,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        let _gate = self.gate.read().map_err(|_| lock_err())?;
        self.read_inner(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check_writable()?;
        self.check(offset, buf.len() as u64)?;
        let _gate = self.gate.read().map_err(|_| lock_err())?;
        self.write_inner(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        let unsynced = self.unsynced.swap(false, Ordering::AcqRel);
        // The syncs run without the metadata lock so I/O to allocated
        // clusters goes on meanwhile; stage 2 re-checks what changed.
        let synced = {
            let mut m = self.meta()?;
            if !m.is_dirty() && m.pending_free.is_empty() {
                drop(m);
                // Nothing written since the last sync: nothing to do.
                if !unsynced {
                    return Ok(());
                }
                let r = self.file.sync_data();
                if r.is_err() {
                    self.unsynced.store(true, Ordering::Release);
                }
                return r;
            }
            m.flush_stage1()?
        };
        self.file.sync_data()?;
        // Every free counted in `safe` had its L2 change written by this or
        // an earlier stage 2; the sync below makes it durable, even when a
        // concurrent flush did the writing and is still syncing.
        let (wrote, safe, frees) = {
            let mut m = self.meta()?;
            let wrote = m.flush_stage2(synced)?;
            (wrote, m.frees_queued(), m.freed_before < m.frees_queued())
        };
        if wrote || frees {
            self.file.sync_data()?;
        }
        if frees {
            // Wait out I/O that may still use a mapping to these clusters.
            let _gate = self.gate.write().map_err(|_| lock_err())?;
            self.meta()?.apply_frees(safe)?;
        }
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_range(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_range(offset, len)
    }

    fn allocation_at(&self, offset: u64) -> io::Result<Option<Extent>> {
        if offset >= self.size() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset beyond size",
            ));
        }
        self.extent_at(offset).map(Some)
    }
}

impl Drop for Qcow2Backstore {
    fn drop(&mut self) {
        if self.read_only {
            return;
        }
        // Apply every queued free so a closed image has no leaked clusters.
        let r = self.flush().and_then(|()| {
            let m = self.meta()?;
            m.sync()
        });
        if let Err(e) = r {
            tracing::error!(path = %self.path.display(), error = %e, "qcow2: flush on close failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_write_reopen_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.qcow2");
        let size = 8u64 << 20;
        let mut mirror = vec![0u8; size as usize];
        {
            let q = Qcow2Backstore::create(&p, size, 4096).unwrap();
            for (i, off) in [0u64, 4096 + 100, 3 << 20, size - 512]
                .into_iter()
                .enumerate()
            {
                let len = (size - off).min(10_000) as usize;
                let data: Vec<u8> = (0..len).map(|k| (k + i) as u8).collect();
                q.write_at(&data, off).unwrap();
                mirror[off as usize..off as usize + len].copy_from_slice(&data);
            }
            q.discard(8192, 8192).unwrap();
            mirror[8192..16384].fill(0);
            q.write_zeroes(100, 50).unwrap();
            mirror[100..150].fill(0);
        }
        let q = Qcow2Backstore::open(&p, &Qcow2Options::default()).unwrap();
        let mut all = vec![0xffu8; size as usize];
        q.read_at(&mut all, 0).unwrap();
        assert!(all == mirror);
        let hole = q.allocation_at(8192).unwrap().unwrap();
        // Zero clusters, then unallocated ones, up to the data at 3 MiB.
        assert!(!hole.allocated && hole.len == (3 << 20) - 8192, "{hole:?}");
        let data = q.allocation_at(0).unwrap().unwrap();
        assert!(data.allocated && data.len == 8192, "{data:?}");
        let tail = q.allocation_at(4 << 20).unwrap().unwrap();
        assert!(
            !tail.allocated && tail.len == (size - 512 - (4 << 20)) & !4095,
            "{tail:?}"
        );
    }

    #[test]
    fn bounds_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.qcow2");
        drop(Qcow2Backstore::create(&p, 1 << 20, 65536).unwrap());
        let ro = Qcow2Options {
            read_only: true,
            ..Qcow2Options::default()
        };
        let q = Qcow2Backstore::open(&p, &ro).unwrap();
        assert!(q.capabilities().read_only);
        let e = q.write_at(&[0; 512], 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        let e = q.read_at(&mut [0; 512], 1 << 20).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(q.read_at(&mut [0; 512], u64::MAX - 10).is_err());
        assert!(q.allocation_at(1 << 20).is_err());
    }

    #[test]
    fn garbage_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g");
        std::fs::write(&p, b"").unwrap();
        assert!(Qcow2Backstore::open(&p, &Qcow2Options::default()).is_err());
        std::fs::write(&p, vec![0x51u8; 4096]).unwrap();
        assert!(matches!(
            Qcow2Backstore::open(&p, &Qcow2Options::default()),
            Err(Qcow2Error::BadMagic)
        ));
    }
}
