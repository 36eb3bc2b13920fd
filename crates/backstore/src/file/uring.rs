//! The io_uring engine of fileio/block (`io_engine=uring`):
//! [`UringBackstore`] wraps a [`FileBackstore`] and gives it a truly
//! asynchronous [`Backstore::submit`]. Every other method is the file's own
//! (synchronous) one.
//!
//! - One ring per backstore, shared by every thread that submits; a mutex
//!   guards only the push of a submission entry. One reaper thread enters
//!   the ring: submitters push entries and wake it through an eventfd that
//!   a read in the ring waits on; it submits them and waits for
//!   completions in one `io_uring_enter`, and calls each request's
//!   [`Completion`]. (The kernel finishes a request on the task that
//!   submitted it: were that a connection thread, it would be woken for
//!   that and again for the answer.)
//! - READ/WRITE go to the ring with the request's own buffer (no copy);
//!   the in-flight state is boxed and its address is the entry's
//!   `user_data`, so the buffer never moves while the kernel holds it.
//! - O_DIRECT as the synchronous path does it: an aligned offset and length
//!   use the direct descriptor, and a buffer whose memory is not aligned is
//!   bounced through an aligned copy owned by the request; anything
//!   unaligned goes through the page cache.
//! - FUA: `RWF_DSYNC` on the write (write-through files are `O_DSYNC`
//!   already); where the kernel refuses the flag, the write is followed by
//!   an `IORING_OP_FSYNC` (DATASYNC). A flush is an `IORING_OP_FSYNC`
//!   (DATASYNC). Failures feed the same sticky writeback-error bookkeeping
//!   as the synchronous path, so the sense data is the same.
//! - Short transfers (a read at the end of a file cut underneath, a
//!   partial buffered write) go on from where they stopped; zero bytes at
//!   the end of the file fails as `read_exact_at` does.
//! - Batching: a thread that [`plug`]s keeps its submissions in the ring's
//!   queue until it [`unplug`]s, which wakes the reaper once per ring (the
//!   engine plugs while a fabric hands it the commands of one wake-up).
//!   Unplugged submissions wake it at once.
//!
//! Opening fails (with the kernel's error) where io_uring is refused:
//! a seccomp filter, a kernel without it, `io_uring_disabled`.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use io_uring::{opcode, squeue, types, IoUring};

use super::{is_aligned, is_unsupported, FileBackstore, DIRECT_ALIGN};
use crate::{
    Backstore, Capabilities, Completion, Extent, IoOp, IoVecs, Ownership, ResizeHook, SharedState,
};

/// Submission queue entries: more than a few connections' QD32 at once
/// (a full queue is handed to the kernel and refilled).
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries: room for every request the engine's memory
/// bounds let be in flight (the kernel also keeps overflow, NODROP).
const CQ_ENTRIES: u32 = 4096;
/// `user_data` of the no-op that tells the reaper to stop (no box is at 0).
const EXIT: u64 = 0;
/// `user_data` of the read of the wake-up eventfd (no box is at 1).
const KICK: u64 = 1;

/// A [`FileBackstore`] whose asynchronous path is an io_uring.
pub struct UringBackstore {
    shared: Arc<Shared>,
    reaper: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    ring: IoUring,
    /// Written by submitters to wake the reaper (blocking: io_uring then
    /// waits for it instead of failing the read with EAGAIN).
    kick: OwnedFd,
    /// Where the ring's read of `kick` lands (never looked at).
    kick_val: AtomicU64,
    /// Serializes pushes to the submission queue.
    sq: Mutex<()>,
    file: FileBackstore,
    /// Requests submitted and not completed (the reaper drains them before
    /// it stops, so no buffer is freed while the kernel holds it).
    in_flight: AtomicUsize,
    /// Cleared the first time a write with `RWF_DSYNC` is refused.
    rwf_dsync_ok: AtomicBool,
    /// Wake-ups of the reaper by submitters (one system call each), and
    /// requests submitted: their ratio shows the batching (`health`).
    kicks: AtomicU64,
    ops: AtomicU64,
}

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Moving the data (READ/WRITE).
    Transfer,
    /// The FUA write's fdatasync, where `RWF_DSYNC` is refused.
    Sync,
    /// A flush's fdatasync.
    Flush,
}

/// One request in the ring.
struct Flight {
    op: IoOp,
    done: Completion,
    stage: Stage,
    /// Bytes moved so far (a short transfer goes on from here).
    moved: usize,
    /// Aligned copy of the data for O_DIRECT when the buffer is not aligned.
    bounce: Option<Aligned>,
    /// The request may use the O_DIRECT descriptor.
    direct: bool,
    /// The write carries `RWF_DSYNC`.
    dsync: bool,
}

/// A heap buffer aligned for O_DIRECT.
struct Aligned {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a plain owned allocation, like a Vec<u8>.
unsafe impl Send for Aligned {}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = Self::layout(len);
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        Aligned { ptr, len }
    }

    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len.max(1), DIRECT_ALIGN).expect("I/O sizes fit a layout")
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `len` bytes allocated by `new`, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated by `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.len)) }
    }
}

thread_local! {
    /// Rings this thread pushed to while plugged (`Some`), to enter at unplug.
    static PLUGGED: RefCell<Option<Vec<Arc<Shared>>>> = const { RefCell::new(None) };
}

/// Keep this thread's ring submissions queued (no system call) until
/// [`unplug`]. For a caller that submits several requests in a row and
/// is sure to unplug before it waits for any of them.
pub fn plug() {
    PLUGGED.with(|p| {
        p.borrow_mut().get_or_insert_with(Vec::new);
    });
}

/// Hand everything this thread queued since [`plug`] to the kernel: one
/// `io_uring_enter` per ring. Cheap when nothing is plugged.
pub fn unplug() {
    let rings = PLUGGED.with(|p| p.borrow_mut().take());
    for r in rings.into_iter().flatten() {
        r.kick();
    }
}

impl UringBackstore {
    /// Give `file` a ring and its reaper thread. Fails with the kernel's
    /// error where io_uring is unavailable.
    pub fn new(file: FileBackstore) -> io::Result<UringBackstore> {
        let ring = IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .build(SQ_ENTRIES)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("io_engine=uring: the kernel refuses io_uring ({e})"),
                )
            })?;
        // SAFETY: eventfd(2) returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let shared = Arc::new(Shared {
            ring,
            // SAFETY: a fresh descriptor nothing else owns.
            kick: unsafe { OwnedFd::from_raw_fd(fd) },
            kick_val: AtomicU64::new(0),
            sq: Mutex::new(()),
            file,
            in_flight: AtomicUsize::new(0),
            rwf_dsync_ok: AtomicBool::new(true),
            kicks: AtomicU64::new(0),
            ops: AtomicU64::new(0),
        });
        let s2 = Arc::clone(&shared);
        let reaper = std::thread::Builder::new()
            .name("uring-reaper".into())
            .spawn(move || reap(&s2))?;
        Ok(UringBackstore {
            shared,
            reaper: Mutex::new(Some(reaper)),
        })
    }

    /// The wrapped file.
    pub fn file(&self) -> &FileBackstore {
        &self.shared.file
    }

    /// Checks made before the ring sees the request: its first stage,
    /// whether it may use O_DIRECT and whether the write carries
    /// `RWF_DSYNC`; `Ok(None)`: nothing to do (done at once).
    fn prepare(&self, op: &IoOp) -> io::Result<Option<(Stage, bool, bool)>> {
        let f = &self.shared.file;
        let (offset, len) = match op {
            IoOp::Read { offset, buf } => {
                f.check(*offset, buf.len())?;
                (*offset, buf.len())
            }
            IoOp::Write {
                offset,
                buf,
                len,
                fua,
            } => {
                f.check_writable()?;
                f.check(*offset, *len)?;
                if *len > buf.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "write length past its buffer",
                    ));
                }
                if *fua {
                    f.wb.fault.check()?;
                }
                (*offset, *len)
            }
            IoOp::Flush if f.read_only => return Ok(None),
            IoOp::Flush => {
                f.wb.fault.check()?;
                return Ok(Some((Stage::Flush, false, false)));
            }
        };
        if len == 0 {
            return Ok(None);
        }
        let direct = f.direct_for(offset, len).is_some();
        let dsync = matches!(op, IoOp::Write { fua: true, .. })
            && f.write_back
            && self.shared.rwf_dsync_ok.load(Ordering::Relaxed);
        Ok(Some((Stage::Transfer, direct, dsync)))
    }
}

impl Shared {
    /// Queue `f`'s next entry (handing a full queue to the kernel first).
    fn push(&self, f: Box<Flight>) {
        let ptr = Box::into_raw(f);
        // SAFETY: `ptr` is the live box just leaked; the entry points into
        // its buffers, which stay put until the reaper takes the box back.
        let entry = unsafe { (*ptr).entry(&self.file) }.user_data(ptr as u64);
        self.push_entry(&entry);
    }

    fn push_entry(&self, entry: &squeue::Entry) {
        loop {
            let pushed = {
                let _g = self.sq.lock().unwrap_or_else(|e| e.into_inner());
                // SAFETY: the mutex makes this the only submission queue
                // handle; the entry's memory outlives its completion (above).
                let mut sq = unsafe { self.ring.submission_shared() };
                // SAFETY: as above.
                let ok = unsafe { sq.push(entry).is_ok() };
                // The new tail is published under the lock: a handle still
                // alive after it (a temporary outlives the guard in a
                // block's tail) would let the next pusher reuse the slot.
                sq.sync();
                drop(sq);
                ok
            };
            if pushed {
                return;
            }
            // Full (rare: 1024 entries): hand them over from here.
            self.enter();
        }
    }

    /// Wake the reaper: it submits what is queued.
    fn kick(&self) {
        self.kicks.fetch_add(1, Ordering::Relaxed);
        let one = 1u64;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd.
        unsafe { libc::write(self.kick.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// The reaper's wait for `kick`.
    fn arm_kick(&self) {
        let buf = self.kick_val.as_ptr().cast::<u8>();
        let read = opcode::Read::new(types::Fd(self.kick.as_raw_fd()), buf, 8)
            .build()
            .user_data(KICK);
        self.push_entry(&read);
    }

    /// One `io_uring_enter` for whatever is queued. A busy ring (its
    /// completions not yet reaped) keeps the entries: the reaper's next
    /// wait submits them.
    fn enter(&self) {
        loop {
            match self.ring.submitter().submit() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return,
                Err(e) => {
                    tracing::error!(error = %e, "io_uring submit failed");
                    return;
                }
                Ok(_) => return,
            }
        }
    }

    /// A completion of `f`'s entry with `res`: go on or finish.
    fn advance(&self, mut f: Box<Flight>, res: i32) {
        if res < 0 {
            let errno = -res;
            if errno == libc::EINTR || errno == libc::EAGAIN {
                return self.push(f);
            }
            let e = io::Error::from_raw_os_error(errno);
            if f.stage == Stage::Transfer && f.dsync && f.moved == 0 && is_unsupported(&e) {
                // No RWF_DSYNC here: plain write, then fdatasync.
                self.rwf_dsync_ok.store(false, Ordering::Relaxed);
                f.dsync = false;
                return self.push(f);
            }
            let wb = &self.file.wb;
            let e = match (&f.op, f.stage) {
                (_, Stage::Sync | Stage::Flush) => wb.sync_failed(e),
                (IoOp::Write { .. }, _) if f.dsync || !self.file.write_back => wb.dsync_failed(e),
                _ => e,
            };
            return self.finish(*f, Err(e));
        }
        if f.stage != Stage::Transfer {
            return self.finish(*f, Ok(()));
        }
        let total = f.op.len();
        if res == 0 {
            let e = match f.op {
                IoOp::Read { .. } => {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "failed to fill whole buffer")
                }
                _ => io::Error::from(io::ErrorKind::WriteZero),
            };
            return self.finish(*f, Err(e));
        }
        f.moved += res as usize;
        if f.moved < total {
            return self.push(f);
        }
        let fua = matches!(f.op, IoOp::Write { fua: true, .. });
        if fua && self.file.write_back && !f.dsync {
            f.stage = Stage::Sync;
            return self.push(f);
        }
        self.finish(*f, Ok(()))
    }

    fn finish(&self, f: Flight, r: io::Result<()>) {
        let Flight {
            mut op,
            done,
            bounce,
            ..
        } = f;
        if let (Ok(()), IoOp::Read { buf, .. }, Some(mut b)) = (&r, &mut op, bounce) {
            buf.copy_from_slice(b.as_mut_slice());
        }
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        done.complete(op, r);
    }
}

impl Flight {
    /// The entry for what is left to do. The pointers stay valid while the
    /// flight is boxed and not touched (the buffers are heap memory).
    fn entry(&mut self, file: &FileBackstore) -> squeue::Entry {
        let buffered = file.file.as_raw_fd();
        if self.stage != Stage::Transfer {
            return opcode::Fsync::new(types::Fd(buffered))
                .flags(types::FsyncFlags::DATASYNC)
                .build();
        }
        let moved = self.moved;
        let (offset, base, total, write) = match &mut self.op {
            IoOp::Read { offset, buf } => (*offset, buf.as_mut_ptr(), buf.len(), false),
            IoOp::Write {
                offset, buf, len, ..
            } => (*offset, buf.as_mut_ptr(), *len, true),
            IoOp::Flush => unreachable!("a flush has no transfer stage"),
        };
        let base = match &mut self.bounce {
            Some(b) => b.ptr.as_ptr(),
            None => base,
        };
        // SAFETY: `moved < total`, inside the buffer.
        let ptr = unsafe { base.add(moved) };
        let (off, len) = (offset + moved as u64, total - moved);
        let fd: RawFd = match &file.direct {
            Some(d)
                if self.direct
                    && off.is_multiple_of(DIRECT_ALIGN as u64)
                    && len.is_multiple_of(DIRECT_ALIGN)
                    && is_aligned(ptr) =>
            {
                d.as_raw_fd()
            }
            _ => buffered,
        };
        let len = u32::try_from(len).unwrap_or(!(DIRECT_ALIGN as u32 - 1));
        if write {
            let flags = if self.dsync { libc::RWF_DSYNC } else { 0 };
            opcode::Write::new(types::Fd(fd), ptr, len)
                .offset(off)
                .rw_flags(flags)
                .build()
        } else {
            opcode::Read::new(types::Fd(fd), ptr, len)
                .offset(off)
                .build()
        }
    }
}

/// The reaper: wait, take completions, advance or finish their requests;
/// after the exit no-op, drain what is in flight and stop.
fn reap(sh: &Shared) {
    let mut exiting = false;
    let mut got: Vec<(u64, i32)> = Vec::with_capacity(64);
    sh.arm_kick();
    loop {
        if exiting && sh.in_flight.load(Ordering::Acquire) == 0 {
            return;
        }
        match sh.ring.submitter().submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => {
                tracing::error!(error = %e, "io_uring wait failed");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        {
            // SAFETY: this thread is the only one that reads completions.
            let mut cq = unsafe { sh.ring.completion_shared() };
            cq.sync();
            got.extend((&mut cq).map(|c| (c.user_data(), c.result())));
        }
        for (ud, res) in got.drain(..) {
            if ud == EXIT {
                exiting = true;
                continue;
            }
            if ud == KICK {
                // Woken: the next wait submits what was queued. (Still
                // armed after the exit: nothing writes the eventfd then,
                // and the descriptor closes with the ring.)
                sh.arm_kick();
                continue;
            }
            // SAFETY: every other user_data is a box leaked by `push`,
            // completed exactly once.
            let f = unsafe { Box::from_raw(ud as *mut Flight) };
            sh.advance(f, res);
        }
    }
}

impl Drop for UringBackstore {
    fn drop(&mut self) {
        let nop = opcode::Nop::new().build().user_data(EXIT);
        self.shared.push_entry(&nop);
        self.shared.kick();
        let h = self.reaper.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Dropped by a completion on the reaper itself: it stops on its own.
        if let Some(h) = h.filter(|h| h.thread().id() != std::thread::current().id()) {
            let _ = h.join();
        }
    }
}

impl Backstore for UringBackstore {
    fn submit(&self, op: IoOp, done: Completion) {
        let (stage, direct, dsync) = match self.prepare(&op) {
            Ok(Some(p)) => p,
            Ok(None) => return done.complete(op, Ok(())),
            Err(e) => return done.complete(op, Err(e)),
        };
        // O_DIRECT needs aligned memory; the fabric's buffers promise none.
        let bounce = match &op {
            IoOp::Read { buf, .. } | IoOp::Write { buf, .. }
                if direct && !is_aligned(buf.as_ptr()) =>
            {
                let mut b = Aligned::new(op.len());
                if let IoOp::Write { buf, len, .. } = &op {
                    b.as_mut_slice().copy_from_slice(&buf[..*len]);
                }
                Some(b)
            }
            _ => None,
        };
        let f = Flight {
            op,
            done,
            stage,
            moved: 0,
            bounce,
            direct,
            dsync,
        };
        let sh = &self.shared;
        sh.in_flight.fetch_add(1, Ordering::AcqRel);
        sh.ops.fetch_add(1, Ordering::Relaxed);
        sh.push(Box::new(f));
        let deferred = PLUGGED.with(|p| match p.borrow_mut().as_mut() {
            Some(rings) => {
                if !rings.iter().any(|r| Arc::ptr_eq(r, sh)) {
                    rings.push(Arc::clone(sh));
                }
                true
            }
            None => false,
        });
        if !deferred {
            sh.kick();
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            async_submit: true,
            ..self.file().capabilities()
        }
    }

    fn health(&self) -> Vec<(&'static str, u64)> {
        let sh = &self.shared;
        vec![
            ("uring_ops", sh.ops.load(Ordering::Relaxed)),
            ("uring_kicks", sh.kicks.load(Ordering::Relaxed)),
        ]
    }

    fn size(&self) -> u64 {
        self.file().size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file().read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file().write_at(buf, offset)
    }
    fn write_at_fua(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file().write_at_fua(buf, offset)
    }
    fn read_vectored_at(&self, bufs: &IoVecs, offset: u64) -> io::Result<()> {
        self.file().read_vectored_at(bufs, offset)
    }
    fn write_vectored_at(&self, bufs: &IoVecs, offset: u64, fua: bool) -> io::Result<()> {
        self.file().write_vectored_at(bufs, offset, fua)
    }
    fn flush(&self) -> io::Result<()> {
        self.file().flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.file().discard(offset, len)
    }
    fn allocation_at(&self, offset: u64) -> io::Result<Option<Extent>> {
        self.file().allocation_at(offset)
    }
    fn resize(&self, new_size: u64) -> io::Result<()> {
        self.file().resize(new_size)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.file().write_zeroes(offset, len)
    }
    fn crypto_erase(&self) -> io::Result<()> {
        self.file().crypto_erase()
    }
    fn on_resize(&self, hook: ResizeHook) {
        self.file().on_resize(hook)
    }
    fn ownership(&self) -> Option<Arc<dyn Ownership>> {
        self.file().ownership()
    }
    fn shared_state(&self) -> Option<Arc<dyn SharedState>> {
        self.file().shared_state()
    }
}

#[cfg(test)]
#[path = "uring_tests.rs"]
mod tests;
