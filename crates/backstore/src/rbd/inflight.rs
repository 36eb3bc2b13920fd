//! The image handle shared by an [`RbdBackstore`](super::RbdBackstore) and
//! librbd's completion callbacks, with the count of calls in flight that
//! keeps the image open until the last one ends (close waits for zero).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::ffi;
use crate::ResizeHook;

/// What librbd's callbacks reach: the image handle and the live state.
pub(super) struct Shared {
    pub(super) api: &'static ffi::Api,
    pub(super) image: ffi::Image,
    pub(super) size: AtomicU64,
    /// AIOs started and not yet finished (the image closes at zero): an
    /// atomic, not a mutex, since every request counts itself twice (two
    /// threads: the submitter and librbd's completion thread); `idle_lock`
    /// and `idle` are only for the close waiting for zero.
    pub(super) inflight: AtomicU64,
    /// Set once by [`RbdBackstore::close_image`]: nothing starts on the
    /// image any more (checked after counting in, see [`Shared::enter`]).
    pub(super) closed: AtomicBool,
    pub(super) idle_lock: Mutex<()>,
    pub(super) idle: Condvar,
    /// Size changes noticed through the update watch.
    pub(super) resizes: AtomicU64,
    pub(super) on_resize: Mutex<Option<ResizeHook>>,
}

// SAFETY: librbd image handles may be used from any thread at once.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    // SeqCst, as `closed`: a close that set it and then saw zero in flight
    // cannot miss a request that counted itself in and then saw it clear.
    pub(super) fn begin(&self) {
        self.inflight.fetch_add(1, Ordering::SeqCst);
    }

    /// Count a synchronous call on the image in, unless it is closed.
    pub(super) fn enter(self: &Arc<Self>, name: &str) -> io::Result<Hold> {
        self.begin();
        let hold = Hold(Arc::clone(self));
        if self.closed.load(Ordering::SeqCst) {
            return Err(closed(name));
        }
        Ok(hold)
    }

    pub(super) fn end(&self) {
        if self.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the lock: a close that saw a non-zero count is waiting
            // (it checks and waits under it), so it cannot miss this.
            let _g = self.idle_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.idle.notify_all();
        }
    }
}

/// A call on the image in flight (the image stays open until it ends).
pub(super) struct Hold(pub(super) Arc<Shared>);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A value that uses the image, with the image kept open as long.
pub(crate) struct Held<T> {
    pub(super) value: T,
    pub(super) _hold: Hold,
}

impl<T> std::ops::Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

pub(super) fn closed(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, format!("{name}: closed"))
}
