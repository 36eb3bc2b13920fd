//! One librbd AIO from start to finish: [`launch`] hands a [`Pending`] to
//! librbd as a completion's callback argument, [`on_complete`] (librbd's
//! thread) takes it back and finishes it exactly once. Each is counted in
//! flight on the image's [`Shared`], whose close waits for zero.

use std::ffi::{c_int, c_void};
use std::io;
use std::ptr::null_mut;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{ffi, rc, Shared};
use crate::{Completion, IoOp};

/// What to do once an AIO finished.
pub(super) enum Then {
    /// An engine request: complete it (after a flush first when `flush`).
    Io {
        op: IoOp,
        done: Completion,
        flush: bool,
    },
    /// A synchronous caller waits: librbd's result and mismatch offset.
    Call(Box<dyn FnOnce(isize, u64) + Send>),
}

/// One AIO's state, owned by librbd (as its callback argument) while it runs.
pub(super) struct Pending {
    shared: Arc<Shared>,
    then: Then,
    mismatch: u64,
}

impl Pending {
    /// Counted in flight from here until `finish` is done.
    pub(super) fn new(shared: &Arc<Shared>, then: Then) -> Box<Pending> {
        shared.begin();
        Box::new(Pending {
            shared: Arc::clone(shared),
            then,
            mismatch: 0,
        })
    }

    // Boxed: it is librbd's callback argument, taken back as the Box it was.
    #[allow(clippy::boxed_local)]
    fn finish(self: Box<Self>, r: isize) {
        let Pending {
            shared,
            then,
            mismatch,
        } = *self;
        match then {
            Then::Io {
                op,
                done,
                flush: true,
            } if r >= 0 => {
                // FUA: the write is in; now make it durable, then complete.
                let image = shared.image;
                let api = shared.api;
                let next = Box::new(Pending {
                    shared,
                    then: Then::Io {
                        op,
                        done,
                        flush: false,
                    },
                    mismatch: 0,
                });
                // SAFETY: the image stays open while anything is in flight.
                launch(next, move |c, _| unsafe { (api.rbd_aio_flush)(image, c) });
                return;
            }
            Then::Io { op, done, .. } => {
                let res = rc("rbd", r).and_then(|n| match &op {
                    IoOp::Read { buf, .. } if n != buf.len() => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("short read: {n} of {} bytes", buf.len()),
                    )),
                    _ => Ok(()),
                });
                done.complete(op, res);
            }
            Then::Call(f) => f(r, mismatch),
        }
        shared.end();
    }
}

/// Hand `p` to librbd as the callback argument of a new completion and
/// issue the AIO with `start` (which gets the completion and where librbd
/// writes a mismatch offset). Whatever happens, `p` finishes exactly once.
pub(super) fn launch(p: Box<Pending>, start: impl FnOnce(ffi::Aio, *mut u64) -> c_int) {
    // Counted in already (Pending::new): a close waits for it, or it sees
    // the image closed.
    if p.shared.closed.load(Ordering::SeqCst) {
        p.finish(-(libc::ENXIO as isize));
        return;
    }
    let api = p.shared.api;
    let raw = Box::into_raw(p);
    // SAFETY: `raw` is a live Box until `on_complete` (or the error paths
    // below) takes it back; only a raw pointer to a field is made here.
    let mismatch = unsafe { &raw mut (*raw).mismatch };
    let mut c = null_mut();
    // SAFETY: out-pointer to a local; `on_complete` matches rbd_callback_t.
    let r = unsafe { (api.rbd_aio_create_completion)(raw.cast(), on_complete, &mut c) };
    if r < 0 {
        // SAFETY: librbd did not take `raw`.
        unsafe { Box::from_raw(raw) }.finish(r as isize);
        return;
    }
    let r = start(c, mismatch);
    if r < 0 {
        // SAFETY: the AIO was refused, so its callback never runs.
        unsafe {
            (api.rbd_aio_release)(c);
            Box::from_raw(raw).finish(r as isize);
        }
    }
}

extern "C" fn on_complete(c: ffi::Aio, arg: *mut c_void) {
    // SAFETY: `arg` is the Box `launch` gave librbd for this completion,
    // handed back exactly once.
    let p = unsafe { Box::from_raw(arg.cast::<Pending>()) };
    let api = p.shared.api;
    // SAFETY: `c` is this callback's completion, released once, here.
    let r = unsafe {
        let r = (api.rbd_aio_get_return_value)(c);
        (api.rbd_aio_release)(c);
        r
    };
    // A panic must not unwind into librbd's C++ thread.
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.finish(r))).is_err() {
        tracing::error!("rbd: a completion panicked");
    }
}
