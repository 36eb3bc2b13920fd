//! rbd: a Ceph RBD image through librbd (tcmu-runner's `user:rbd`).
//!
//! Every request is a librbd AIO (`rbd_aio_read`, `_write`, `_flush`,
//! `_discard`, `_write_zeroes`, `_compare_and_write`) whose completion
//! callback, on librbd's own thread, finishes it: [`Backstore::submit`]
//! hands the engine's [`Completion`] to librbd and returns at once, so no
//! thread waits per request (`async_submit`). The synchronous methods the
//! core uses for everything but READ/WRITE issue the same AIO and wait for
//! it. FUA is the write, then a flush issued from the write's completion.
//!
//! librbd's cache is off (`rbd_cache=false`: an acknowledged write is in
//! the cluster, which several gateways must see alike), so the LU reports
//! no volatile write cache. librados operations time out
//! (`rados_osd_op_timeout`, `client_mount_timeout`) so an unreachable OSD
//! fails a command instead of hanging it. Partial-object discards are not
//! skipped (`rbd_skip_partial_discard=false`), so a discarded range always
//! reads back as zeroes, as [`Capabilities::discard`] promises.
//!
//! An image resized elsewhere (`rbd resize`) is noticed through
//! `rbd_update_watch`: `size()` follows, and the hook set with
//! [`Backstore::on_resize`] runs. librbd itself is loaded at run time
//! ([`ffi`]).

mod aio;
mod config;
mod conn;
mod extent;
mod ffi;
mod ffi_lock;
mod ffi_rados;
mod gateway;
mod inflight;
mod lock;
mod service;
mod shared;
mod shim;

use std::ffi::{c_int, c_void, CString};
use std::io;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

pub use config::{RbdConfig, DEFAULT_OSD_OP_TIMEOUT};
pub use gateway::RbdGateway;

use crate::{refuse_shrink, Backstore, Capabilities, Completion, Extent, IoOp, ResizeHook};
use aio::{launch, Pending, Then};
use extent::{extent_from, on_extent, STATUS_WINDOW};
use inflight::{Held, Shared};

/// Whether librbd can be loaded on this host (why not, otherwise).
pub fn available() -> Result<(), String> {
    ffi::api().map(|_| ())
}

/// Whether asynchronous writes hand their buffer to librbd instead of
/// having it copied ([`shim`]: built with librbd's C++ headers, loaded).
pub fn zero_copy_writes() -> bool {
    shim::write_owned(1).is_some()
}

pub struct RbdBackstore {
    shared: Arc<Shared>,
    watch: Option<u64>,
    read_only: bool,
    /// `stream_writes=1` in the cfgstring.
    stream_writes: bool,
    obj_size: u64,
    name: String,
    /// The shared state objects handed out, closed with the image.
    states: shared::States,
    // Last: dropped after `Drop::drop` closed the image (and shared with
    // the shared state object, which may outlive it).
    _conn: Arc<conn::Conn>,
}

/// librbd's `-errno` as an error.
fn rc(what: &str, r: isize) -> io::Result<usize> {
    if r == -(libc::ESHUTDOWN as isize) {
        // Blocklisted: another gateway took the image ([`gateway`]).
        Err(crate::ownership::path_lost(format!("{what}: blocklisted")))
    } else if r < 0 {
        let e = io::Error::from_raw_os_error(-r as i32);
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    } else {
        Ok(r as usize)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

impl RbdBackstore {
    /// Connect as `cfg` says and open the image, creating it with `size`
    /// bytes when it does not exist (a snapshot is never created, and is
    /// always read-only).
    pub fn open(cfg: &RbdConfig, size: Option<u64>, read_only: bool) -> io::Result<RbdBackstore> {
        let api = ffi::api().map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
        let read_only = read_only || cfg.snap.is_some();
        let name = format!(
            "{}/{}{}",
            cfg.pool,
            cfg.image,
            cfg.snap
                .as_ref()
                .map(|s| format!("@{s}"))
                .unwrap_or_default()
        );
        let conn = conn::connect(cfg, true)?;
        let image = Self::open_image(api, conn.ioctx, cfg, size, read_only, &name)?;
        let mut bytes = 0u64;
        let mut info: ffi::ImageInfo = unsafe { std::mem::zeroed() };
        // SAFETY: `image` is open; out-pointers to locals of the right type.
        let stat = unsafe {
            rc(
                "rbd_get_size",
                (api.rbd_get_size)(image, &mut bytes) as isize,
            )
            .and_then(|_| {
                rc(
                    "rbd_stat",
                    (api.rbd_stat)(image, &mut info, std::mem::size_of::<ffi::ImageInfo>())
                        as isize,
                )
            })
        };
        if let Err(e) = stat {
            // SAFETY: opened above, not shared yet.
            unsafe { (api.rbd_close)(image) };
            return Err(e);
        }
        let shared = Arc::new(Shared {
            api,
            image,
            size: AtomicU64::new(bytes),
            inflight: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            idle_lock: Mutex::new(()),
            idle: Condvar::new(),
            resizes: AtomicU64::new(0),
            on_resize: Mutex::new(None),
        });
        let mut b = RbdBackstore {
            shared,
            watch: None,
            read_only,
            stream_writes: cfg.stream_writes,
            obj_size: info.obj_size,
            name,
            states: shared::States::default(),
            _conn: Arc::new(conn),
        };
        let mut handle = 0u64;
        let arg = Arc::as_ptr(&b.shared) as *mut c_void;
        // SAFETY: `arg` stays valid until `Drop` unwatches (it owns an Arc).
        let r = unsafe { (api.rbd_update_watch)(image, &mut handle, on_update, arg) };
        match rc("rbd_update_watch", r as isize) {
            Ok(_) => b.watch = Some(handle),
            // Served all the same; a resize made elsewhere goes unnoticed.
            Err(e) => tracing::warn!(image = %b.name, error = %e, "no update watch"),
        }
        Ok(b)
    }

    fn open_image(
        api: &'static ffi::Api,
        ioctx: ffi::Ioctx,
        cfg: &RbdConfig,
        size: Option<u64>,
        read_only: bool,
        name: &str,
    ) -> io::Result<ffi::Image> {
        let image_name = cstr(&cfg.image)?;
        let snap = cfg.snap.as_deref().map(cstr).transpose()?;
        let open = || {
            let mut image = null_mut();
            let snap = snap.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
            // SAFETY: live ioctx; strings outlive the call; out-pointer local.
            let r = unsafe {
                if read_only {
                    (api.rbd_open_read_only)(ioctx, image_name.as_ptr(), &mut image, snap)
                } else {
                    (api.rbd_open)(ioctx, image_name.as_ptr(), &mut image, snap)
                }
            };
            (r, image)
        };
        let (mut r, mut image) = open();
        if r == -libc::ENOENT && cfg.snap.is_none() && !read_only {
            if let Some(size) = size.filter(|s| *s > 0) {
                let mut order: c_int = 0;
                // SAFETY: as above; order 0 asks for the default object size.
                let c = unsafe { (api.rbd_create)(ioctx, image_name.as_ptr(), size, &mut order) };
                rc(&format!("creating image {name}"), c as isize)?;
                tracing::info!(image = name, size, "rbd: image created");
                (r, image) = open();
            }
        }
        if r == -libc::ENOENT && size.is_none() && cfg.snap.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("image {name} does not exist (give a size to create it)"),
            ));
        }
        rc(&format!("opening image {name}"), r as isize)?;
        Ok(image)
    }

    /// `pool/image[@snap]`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lock calls on this connection ([`gateway`]).
    fn locks(&self) -> io::Result<Held<lock::Locks>> {
        let hold = self.shared.enter(&self.name)?;
        let value = lock::Locks::new(self.shared.image, self._conn.cluster)?;
        Ok(Held { value, _hold: hold })
    }

    /// Unwatch and close the image once nothing is in flight; later calls
    /// fail. Once (`close` at the daemon's stop, then `Drop`).
    fn close_image(&self) {
        let s = &self.shared;
        if s.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        // SAFETY: the watch and the image are this backstore's; the update
        // callback can no longer run once unwatch returned, and nothing is
        // in flight once the count is zero (nothing starts after `closed`).
        unsafe {
            if let Some(h) = self.watch {
                (s.api.rbd_update_unwatch)(s.image, h);
            }
            let mut g = s.idle_lock.lock().unwrap_or_else(|e| e.into_inner());
            while s.inflight.load(Ordering::SeqCst) > 0 {
                g = s.idle.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            drop(g);
            (s.api.rbd_close)(s.image);
        }
    }

    /// COMPARE AND WRITE, atomic in the cluster: write `data` at `offset`
    /// only if the medium holds `cmp` there. `Ok(None)`: written;
    /// `Ok(Some(i))`: not written, byte `i` of the range differs.
    pub fn compare_and_write(
        &self,
        cmp: &[u8],
        data: &[u8],
        offset: u64,
    ) -> io::Result<Option<u64>> {
        if cmp.len() != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "lengths differ",
            ));
        }
        self.writable(offset, data.len() as u64)?;
        let (image, cp, dp, len) = (self.shared.image, cmp.as_ptr(), data.as_ptr(), data.len());
        let api = self.shared.api;
        let r = self.wait(move |c, mismatch| {
            // SAFETY: both buffers are borrowed until `wait` returns, which
            // is after the completion.
            unsafe {
                (api.rbd_aio_compare_and_write)(
                    image,
                    offset,
                    len,
                    cp.cast(),
                    dp.cast(),
                    c,
                    mismatch,
                    0,
                ) as c_int
            }
        });
        match r {
            Ok(_) => Ok(None),
            Err((r, m)) if r == -(libc::EILSEQ as isize) => {
                // librbd 16 reports the offset within the range; later
                // releases may give the image offset (a range that starts
                // at 0 reads the same either way).
                let len = data.len() as u64;
                let i = if m >= offset && m - offset < len {
                    m - offset
                } else {
                    m
                };
                Ok(Some(i))
            }
            Err((r, _)) => rc(&format!("compare-and-write on {}", self.name), r).map(|_| None),
        }
    }

    fn in_range(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{offset}+{len} is past the end of {}", self.name),
            )),
        }
    }

    fn writable(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is read-only", self.name),
            ));
        }
        self.in_range(offset, len)
    }

    /// Start one AIO and wait for it (the synchronous methods).
    fn wait(&self, start: impl FnOnce(ffi::Aio, *mut u64) -> c_int) -> Result<usize, (isize, u64)> {
        let (tx, rx) = mpsc::sync_channel(1);
        launch(
            Pending::new(
                &self.shared,
                Then::Call(Box::new(move |r, m| {
                    let _ = tx.send((r, m));
                })),
            ),
            start,
        );
        match rx.recv() {
            Ok((r, _)) if r >= 0 => Ok(r as usize),
            Ok((r, m)) => Err((r, m)),
            Err(_) => Err((-(libc::EIO as isize), 0)),
        }
    }

    fn wait_io(&self, start: impl FnOnce(ffi::Aio, *mut u64) -> c_int) -> io::Result<usize> {
        self.wait(start).or_else(|(r, _)| rc(&self.name, r))
    }
}

/// librbd's update watch: the image header changed (a resize, a snapshot,
/// a lock owner). Follow the size, on a thread of its own: this runs on
/// librbd's completion thread, the only one (`librados_thread_count=1`,
/// [`conn`]), and `rbd_get_size` may first refresh the image header with
/// RADOS reads whose completions need that very thread.
extern "C" fn on_update(arg: *mut c_void) {
    // SAFETY: `arg` is `Arc::as_ptr` of the Shared the backstore keeps
    // alive until it unwatched (which waits for this callback): one more
    // strong count makes an Arc of our own.
    let s = unsafe {
        Arc::increment_strong_count(arg.cast::<Shared>());
        Arc::from_raw(arg.cast::<Shared>())
    };
    // Counted in flight: the image stays open until the thread is done.
    s.begin();
    let s2 = Arc::clone(&s);
    let spawned = std::thread::Builder::new()
        .name("rbd-update".into())
        .spawn(move || {
            follow_size(&s2);
            s2.end();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "rbd: cannot follow an image update");
        s.end();
    }
}

/// Read the image's size and tell the resize hook when it changed.
fn follow_size(s: &Shared) {
    let mut size = 0u64;
    // SAFETY: the image is open while watched.
    if unsafe { (s.api.rbd_get_size)(s.image, &mut size) } < 0 {
        return;
    }
    let old = s.size.swap(size, Ordering::AcqRel);
    if old != size {
        s.resizes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(old, new = size, "rbd: the image was resized");
        if let Some(hook) = s
            .on_resize
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            hook(size);
        }
    }
}

impl Drop for RbdBackstore {
    fn drop(&mut self) {
        self.close_image();
    }
}

impl Backstore for RbdBackstore {
    fn size(&self) -> u64 {
        self.shared.size.load(Ordering::Acquire)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            discard: !self.read_only,
            write_zeroes: !self.read_only,
            // rbd_cache=false: an acknowledged write is in the cluster.
            write_cache: false,
            read_only: self.read_only,
            rotational: false,
            optimal_io_size: u32::try_from(self.obj_size).unwrap_or(0),
            resize: !self.read_only,
            crypto_erase: false,
            async_submit: true,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.in_range(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (image, api, p, len) = (
            self.shared.image,
            self.shared.api,
            buf.as_mut_ptr(),
            buf.len(),
        );
        // SAFETY: `buf` is borrowed until the AIO completed.
        let n = self
            .wait_io(move |c, _| unsafe { (api.rbd_aio_read)(image, offset, len, p.cast(), c) })?;
        if n != len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.writable(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let (image, api, p, len) = (self.shared.image, self.shared.api, buf.as_ptr(), buf.len());
        // SAFETY: `buf` is borrowed until the AIO completed.
        self.wait_io(move |c, _| unsafe { (api.rbd_aio_write)(image, offset, len, p.cast(), c) })
            .map(drop)
    }

    fn flush(&self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        let (image, api) = (self.shared.image, self.shared.api);
        // SAFETY: no buffer.
        self.wait_io(move |c, _| unsafe { (api.rbd_aio_flush)(image, c) })
            .map(drop)
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.writable(offset, len)?;
        let (image, api) = (self.shared.image, self.shared.api);
        // SAFETY: no buffer.
        self.wait_io(move |c, _| unsafe { (api.rbd_aio_discard)(image, offset, len, c) })
            .map(drop)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.writable(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let n = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let (image, api) = (self.shared.image, self.shared.api);
        // SAFETY: no buffer. Flags 0: the range may be deallocated (thin).
        self.wait_io(move |c, _| unsafe { (api.rbd_aio_write_zeroes)(image, offset, n, c, 0, 0) })
            .map(drop)
    }

    /// Thin provisioning (GET LBA STATUS): which objects hold data, from
    /// `rbd_diff_iterate2` over a bounded window (the parent's data counts).
    /// Coarse where librbd is (a written object may count as mapped from its
    /// start); "mapped" is always a correct answer, a hole only where no data is.
    fn allocation_at(&self, offset: u64) -> io::Result<Option<Extent>> {
        let size = self.size();
        if offset >= size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset beyond size",
            ));
        }
        let end = size.min(offset.saturating_add(STATUS_WINDOW));
        let _hold = self.shared.enter(&self.name)?;
        let mut ranges: Vec<(u64, u64, bool)> = Vec::new();
        let arg = (&raw mut ranges).cast::<c_void>();
        // SAFETY: the image is open; `ranges` outlives the call, whose
        // callback runs before it returns.
        let r = unsafe {
            (self.shared.api.rbd_diff_iterate2)(
                self.shared.image,
                std::ptr::null(),
                offset,
                end - offset,
                1,
                0,
                on_extent,
                arg,
            )
        };
        rc(&format!("allocation of {}", self.name), r as isize)?;
        Ok(Some(extent_from(ranges, offset, end)))
    }

    fn resize(&self, new_size: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{} is read-only", self.name),
            ));
        }
        let size = self.size();
        if new_size < size {
            return Err(refuse_shrink(size, new_size));
        }
        if new_size == size {
            return Ok(());
        }
        let _hold = self.shared.enter(&self.name)?;
        // SAFETY: the image is open.
        let r = unsafe { (self.shared.api.rbd_resize)(self.shared.image, new_size) };
        rc(&format!("resizing {}", self.name), r as isize)?;
        self.shared.size.fetch_max(new_size, Ordering::AcqRel);
        Ok(())
    }

    fn submit(&self, op: IoOp, done: Completion) {
        let (image, api) = (self.shared.image, self.shared.api);
        let check = match &op {
            IoOp::Read { offset, buf } => self.in_range(*offset, buf.len() as u64),
            IoOp::Write {
                offset, len, buf, ..
            } if *len <= buf.len() => self.writable(*offset, *len as u64),
            IoOp::Write { .. } => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write length past its buffer",
            )),
            IoOp::Flush => Ok(()),
        };
        if let Err(e) = check {
            return done.complete(op, Err(e));
        }
        let mut op = op;
        match &mut op {
            IoOp::Read { offset, buf } if !buf.is_empty() => {
                let (off, p, len) = (*offset, buf.as_mut_ptr(), buf.len());
                let pending = Pending::new(
                    &self.shared,
                    Then::Io {
                        op,
                        done,
                        flush: false,
                    },
                );
                // SAFETY: the buffer's heap block travels in `pending` and is
                // neither freed nor moved until the completion.
                launch(pending, move |c, _| unsafe {
                    (api.rbd_aio_read)(image, off, len, p.cast(), c)
                });
            }
            IoOp::Write {
                offset,
                buf,
                len,
                fua,
            } if *len > 0 => {
                let (off, p, n, fua) = (*offset, buf.as_ptr(), *len, *fua);
                // With the shim librbd takes the buffer over (shim.rs): the
                // engine gets the write back without it.
                let owned = shim::write_owned(n).map(|w| (w, std::mem::take(buf)));
                let pending = Pending::new(
                    &self.shared,
                    Then::Io {
                        op,
                        done,
                        flush: fua,
                    },
                );
                if let Some((write, owned)) = owned {
                    // Not called when the AIO is refused before it starts:
                    // the buffer is then dropped here, as usual.
                    launch(pending, move |c, _| {
                        let mut owned = std::mem::ManuallyDrop::new(owned);
                        // SAFETY: `owned` holds at least `n` bytes; librbd
                        // owns its heap block from this call on and
                        // `free`s it: a Vec<u8>'s block comes from the
                        // global allocator, which is the system's malloc
                        // (the workspace sets no #[global_allocator]).
                        unsafe { write(image, off, n, owned.as_mut_ptr().cast(), c) }
                    });
                } else {
                    // SAFETY: as for reads.
                    launch(pending, move |c, _| unsafe {
                        (api.rbd_aio_write)(image, off, n, p.cast(), c)
                    });
                }
            }
            IoOp::Flush if !self.read_only => {
                let pending = Pending::new(
                    &self.shared,
                    Then::Io {
                        op,
                        done,
                        flush: false,
                    },
                );
                // SAFETY: no buffer.
                launch(pending, move |c, _| unsafe {
                    (api.rbd_aio_flush)(image, c)
                });
            }
            // Nothing to move (or flush on a read-only image).
            _ => done.complete(op, Ok(())),
        }
    }

    /// librbd's AIO calls never wait: they dispatch down to the objecter,
    /// whose budget [`conn`] sets beyond the engine's limits, and queue
    /// what must wait (a refresh, the exclusive lock): READ and WRITE
    /// start on the fabric's thread.
    fn submit_never_blocks(&self) -> bool {
        true
    }

    /// With `stream_writes=1`, each burst of a WRITE goes to librbd as it
    /// lands: a 1 MiB write's data phase (three R2T round trips behind the
    /// initiator's queue) overlaps its time in the cluster. The command
    /// still waits for its last piece, so this pays only where a smaller
    /// write is faster (a cluster whose latency grows with size); on one
    /// node sharing the target's cores the extra OSD ops cost more
    /// (BENCHMARKS.md, "Session 10 ... s10-rbdwrite").
    fn streams_writes(&self) -> bool {
        self.stream_writes && !self.read_only
    }

    fn on_resize(&self, hook: ResizeHook) {
        *self
            .shared
            .on_resize
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    fn health(&self) -> Vec<(&'static str, u64)> {
        vec![("resizes_seen", self.shared.resizes.load(Ordering::Relaxed))]
    }

    /// The image first (its lock matters most to the other gateways),
    /// then the shared state's watch, which the core keeps alive past
    /// the stop.
    fn close(&self) {
        self.close_image();
        self.states.close();
    }

    /// A RADOS object next to the image ([`shared`]); none for snapshots.
    fn shared_state(&self) -> Option<Arc<dyn crate::SharedState>> {
        let s = self.rados_state()?;
        self.states.add(&s);
        Some(s)
    }
}

impl RbdBackstore {
    /// The image's shared state object, watched (not yet recorded for
    /// [`Backstore::close`]: the caller does, in whoever closes it).
    fn rados_state(&self) -> Option<Arc<shared::RadosState>> {
        if self.read_only {
            return None;
        }
        let s = self
            .shared
            .enter(&self.name)
            .and_then(|_hold| shared::RadosState::open(Arc::clone(&self._conn), self.shared.image));
        s.inspect_err(|e| tracing::error!(image = %self.name, error = %e, "no shared state"))
            .ok()
            .map(Arc::new)
    }
}
