//! [`SharedState`] in a RADOS object next to the image: what every gateway
//! exporting the image must agree on (its persistent reservations).
//!
//! The object `rtarget_pr.<image id>` lives in the image's pool. Its data
//! is `<version>\n<blob>`, its xattr `rtarget.ver` the same version (0:
//! nothing stored yet; the first gateway creates it so, as watches need an
//! object): a replacement is one RADOS write op that compares the xattr
//! with the version the writer read (`cmpxattr`), writes the whole object
//! and sets the new version, so two
//! gateways racing cannot both win, and a reader (one `rados_read` of the
//! whole object) never sees a torn state.
//!
//! Each gateway watches the object (`rados_watch3`). A writer announces a
//! new version with `rados_notify2`, which returns once every watcher
//! acknowledged or a timeout passed; each watcher acknowledges only after
//! its [`ChangeHook`] reloaded the state, so when a PERSISTENT RESERVE OUT
//! returns GOOD on one gateway, every live gateway already enforces it.
//! The callbacks run on librados' thread, which must not block: they hand
//! the work to a thread of this object's own. A watch error (the OSD moved,
//! the connection dropped: notifies may have been missed) re-arms the watch
//! and runs the hook.
//!
//! The core keeps the state as long as the device, which outlives the
//! daemon's stop (the live state is forgotten there), so the backstore
//! that made it closes it at its [`crate::Backstore::close`] ([`States`]):
//! the watch goes at once, not when the OSDs time the process out, and
//! the other gateways' announcements stop waiting for it. A closed state
//! fails its calls; the connection shuts down once the last call that
//! held it returned.

use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::ptr::null_mut;
use std::sync::{mpsc, Arc, Mutex, Weak};
use std::thread::JoinHandle;

use super::conn::Conn;
use super::ffi_rados::{self as fr, acked_gids};
use super::{ffi, rc};
use crate::shared_state::{ChangeHook, SharedState};

const VERSION_XATTR: &CStr0 = c"rtarget.ver";
type CStr0 = std::ffi::CStr;
/// How long an announcement waits for the other gateways' reloads (a live
/// one answers in milliseconds; one that died holds it up until its watch
/// expires, [`WATCH_TIMEOUT_S`] after its last ping).
const ANNOUNCE_TIMEOUT_MS: u64 = 3000;
/// How long the OSD keeps the watch of a gateway that stopped answering
/// (librados' default is 30 s).
const WATCH_TIMEOUT_S: u32 = 10;
/// A liveness probe: acknowledged at once, no reload.
const PING: &[u8] = b"ping";
const CHANGED: &[u8] = b"changed";

enum Msg {
    Notify { id: u64, cookie: u64, reload: bool },
    Error,
    Stop,
}

/// What the librados callbacks reach (boxed, alive until the watch is gone).
struct WatchCtx {
    gid: u64,
    tx: Mutex<mpsc::Sender<Msg>>,
}

pub struct RadosState {
    api: &'static fr::Api,
    /// `None` once closed; each call holds a clone while it runs, so the
    /// connection (and its ioctx) outlives every call that started.
    conn: Mutex<Option<Arc<Conn>>>,
    oid: CString,
    gid: u64,
    hook: Arc<Mutex<Option<ChangeHook>>>,
    tx: mpsc::Sender<Msg>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

// SAFETY: the ioctx and cluster handles may be used from any thread.
unsafe impl Send for RadosState {}
unsafe impl Sync for RadosState {}

/// Raw handles the worker thread uses (alive while it runs: it holds the
/// connection).
struct Handles {
    conn: Arc<Conn>,
    oid: CString,
}
// SAFETY: as above.
unsafe impl Send for Handles {}

fn no_api(e: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, e)
}

impl RadosState {
    /// The shared state object of `image`, watched from now on.
    pub(super) fn open(conn: Arc<Conn>, image: ffi::Image) -> io::Result<RadosState> {
        let api = fr::api().map_err(no_api)?;
        let mut id = [0 as c_char; 64];
        // SAFETY: the image is open; the buffer's length is passed.
        let r = unsafe { (api.rbd_get_id)(image, id.as_mut_ptr(), id.len()) };
        rc("rbd_get_id", r as isize)?;
        // SAFETY: librbd NUL-terminated it within the buffer.
        let id = unsafe { std::ffi::CStr::from_ptr(id.as_ptr()) };
        let oid = CString::new(format!("rtarget_pr.{}", id.to_string_lossy()))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
        // SAFETY: the cluster is connected.
        let gid = unsafe { (api.rados_get_instance_id)(conn.cluster) };
        create_empty(api, &conn, &oid)?;
        let (tx, rx) = mpsc::channel();
        let ctx = Box::new(WatchCtx {
            gid,
            tx: Mutex::new(tx.clone()),
        });
        let hook: Arc<Mutex<Option<ChangeHook>>> = Arc::default();
        let cookie = watch(api, &conn, &oid, &ctx)?;
        let h = Handles {
            conn: Arc::clone(&conn),
            oid: oid.clone(),
        };
        let worker_hook = Arc::clone(&hook);
        let worker = std::thread::Builder::new()
            .name("rbd-shared".into())
            .spawn(move || run_worker(api, h, ctx, cookie, rx, worker_hook))?;
        Ok(RadosState {
            api,
            conn: Mutex::new(Some(conn)),
            oid,
            gid,
            hook,
            tx,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// The connection, unless closed (kept open while the clone lives).
    fn conn(&self) -> io::Result<Arc<Conn>> {
        let c = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        c.clone().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotConnected, "the shared state is closed")
        })
    }

    /// Unwatch (the worker stops, waiting for callbacks still running) and
    /// let the connection go; later calls fail. Idempotent.
    pub(super) fn close(&self) {
        let _ = self.tx.send(Msg::Stop);
        let worker = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Not from the worker itself (its hook may hold the last reference
        // to the device): it stops on the message all the same.
        if let Some(w) = worker {
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn notify(&self, payload: &[u8], timeout_ms: u64) -> (c_int, Vec<u8>) {
        let Ok(conn) = self.conn() else {
            return (-libc::ENOTCONN, Vec::new());
        };
        let (mut reply, mut len) = (null_mut(), 0usize);
        // SAFETY: live ioctx (held by `conn`); the payload outlives the
        // call; the reply is librados' buffer, copied and freed here.
        unsafe {
            let r = (self.api.rados_notify2)(
                conn.ioctx,
                self.oid.as_ptr(),
                payload.as_ptr().cast(),
                payload.len() as c_int,
                timeout_ms,
                &mut reply,
                &mut len,
            );
            let out = if reply.is_null() {
                Vec::new()
            } else {
                let v = std::slice::from_raw_parts(reply.cast::<u8>(), len).to_vec();
                (self.api.rados_buffer_free)(reply);
                v
            };
            (r, out)
        }
    }
}

/// Run one write op on `oid`: `fill` adds its steps.
fn write_op(api: &fr::Api, conn: &Conn, oid: &CString, fill: impl FnOnce(fr::WriteOp)) -> c_int {
    // SAFETY: the op is created, filled (by `fill`, with buffers that
    // outlive this call), run once and released.
    unsafe {
        let op = (api.rados_create_write_op)();
        if op.is_null() {
            return -libc::ENOMEM;
        }
        fill(op);
        let r = (api.rados_write_op_operate)(op, conn.ioctx, oid.as_ptr(), null_mut(), 0);
        (api.rados_release_write_op)(op);
        r
    }
}

/// Create the object at version 0 unless it exists.
fn create_empty(api: &fr::Api, conn: &Conn, oid: &CString) -> io::Result<()> {
    let r = write_op(api, conn, oid, |op| {
        // SAFETY: a live op; static buffers.
        unsafe {
            (api.rados_write_op_create)(op, fr::CREATE_EXCLUSIVE, std::ptr::null());
            (api.rados_write_op_write_full)(op, c"0\n".as_ptr(), 2);
            (api.rados_write_op_setxattr)(op, VERSION_XATTR.as_ptr(), c"0".as_ptr(), 1);
        }
    });
    if r == -libc::EEXIST {
        return Ok(());
    }
    rc("creating the shared state object", r as isize).map(drop)
}

fn watch(api: &fr::Api, conn: &Conn, oid: &CString, ctx: &WatchCtx) -> io::Result<u64> {
    let mut cookie = 0u64;
    let arg = std::ptr::from_ref(ctx).cast_mut().cast::<c_void>();
    // SAFETY: live ioctx; `ctx` outlives the watch (the worker owns it and
    // unwatches and flushes before dropping it).
    let r = unsafe {
        (api.rados_watch3)(
            conn.ioctx,
            oid.as_ptr(),
            &mut cookie,
            on_notify,
            on_watch_error,
            WATCH_TIMEOUT_S,
            arg,
        )
    };
    rc("rados_watch3", r as isize)?;
    Ok(cookie)
}

fn run_worker(
    api: &'static fr::Api,
    h: Handles,
    ctx: Box<WatchCtx>,
    mut cookie: u64,
    rx: mpsc::Receiver<Msg>,
    hook: Arc<Mutex<Option<ChangeHook>>>,
) {
    let run_hook = || {
        if let Some(f) = hook.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            f();
        }
    };
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Notify {
                id,
                cookie: c,
                reload,
            } => {
                if reload {
                    run_hook();
                }
                // SAFETY: live ioctx; no payload.
                unsafe {
                    (api.rados_notify_ack)(h.conn.ioctx, h.oid.as_ptr(), id, c, std::ptr::null(), 0)
                };
            }
            Msg::Error => {
                // SAFETY: the old watch is this worker's.
                unsafe { (api.rados_unwatch2)(h.conn.ioctx, cookie) };
                match watch(api, &h.conn, &h.oid, &ctx) {
                    Ok(c) => cookie = c,
                    Err(e) => tracing::warn!(error = %e, "rbd: shared state watch lost"),
                }
                // Announcements may have been missed meanwhile.
                run_hook();
            }
            Msg::Stop => break,
        }
    }
    // SAFETY: this worker's watch; the flush waits for callbacks still
    // running, after which nothing refers to `ctx`.
    unsafe {
        (api.rados_unwatch2)(h.conn.ioctx, cookie);
        (api.rados_watch_flush)(h.conn.cluster);
    }
    drop(ctx);
}

extern "C" fn on_notify(
    arg: *mut c_void,
    id: u64,
    cookie: u64,
    notifier: u64,
    data: *mut c_void,
    len: usize,
) {
    // SAFETY: `arg` is the WatchCtx the worker keeps alive while watching.
    let ctx = unsafe { &*arg.cast::<WatchCtx>() };
    let payload = if data.is_null() {
        &[][..]
    } else {
        // SAFETY: librados' payload buffer for the length it gives.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
    };
    // Our own announcements and liveness probes need no reload.
    let reload = notifier != ctx.gid && payload != PING;
    let _ = ctx
        .tx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Msg::Notify { id, cookie, reload });
}

extern "C" fn on_watch_error(arg: *mut c_void, _cookie: u64, err: c_int) {
    // SAFETY: as in `on_notify`.
    let ctx = unsafe { &*arg.cast::<WatchCtx>() };
    tracing::warn!(err, "rbd: shared state watch error; re-watching");
    let _ = ctx
        .tx
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(Msg::Error);
}

impl SharedState for RadosState {
    fn load(&self) -> io::Result<Option<(u64, Vec<u8>)>> {
        let conn = self.conn()?;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            // SAFETY: live ioctx (held by `conn`); the buffer's length is passed.
            let r = unsafe {
                (self.api.rados_read)(
                    conn.ioctx,
                    self.oid.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if r == -libc::ENOENT {
                return Ok(None);
            }
            let n = rc("reading the shared state", r as isize)?;
            if n == buf.len() {
                // Maybe more: read it all again, larger.
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            buf.truncate(n);
            if n == 0 {
                return Ok(None);
            }
            let nl = buf.iter().position(|&b| b == b'\n');
            let version = nl
                .and_then(|i| std::str::from_utf8(&buf[..i]).ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "shared state without a version")
                })?;
            let data = buf.split_off(nl.unwrap_or(0) + 1);
            return Ok((version != 0).then_some((version, data)));
        }
    }

    fn compare_and_swap(&self, version: Option<u64>, data: &[u8]) -> io::Result<bool> {
        let new = version.map_or(1, |v| v.wrapping_add(1));
        let mut body = format!("{new}\n").into_bytes();
        body.extend_from_slice(data);
        let (old_v, new_v) = (version.unwrap_or(0).to_string(), new.to_string());
        let conn = self.conn()?;
        let r = write_op(self.api, &conn, &self.oid, |op| {
            // SAFETY: a live op; the buffers outlive the operate call.
            unsafe {
                (self.api.rados_write_op_cmpxattr)(
                    op,
                    VERSION_XATTR.as_ptr(),
                    fr::CMPXATTR_OP_EQ,
                    old_v.as_ptr().cast(),
                    old_v.len(),
                );
                (self.api.rados_write_op_write_full)(op, body.as_ptr().cast(), body.len());
                (self.api.rados_write_op_setxattr)(
                    op,
                    VERSION_XATTR.as_ptr(),
                    new_v.as_ptr().cast(),
                    new_v.len(),
                );
            }
        });
        match r {
            0 => Ok(true),
            r if r == -libc::ECANCELED => Ok(false),
            r => rc("storing the shared state", r as isize).map(|_| false),
        }
    }

    fn announce(&self) {
        let (r, _) = self.notify(CHANGED, ANNOUNCE_TIMEOUT_MS);
        if r < 0 {
            // A gateway that did not answer in time reloads when its watch
            // recovers (or it was dead: it loads the state when it starts).
            tracing::warn!(
                err = r,
                "rbd: not every gateway acknowledged a shared state change"
            );
        }
    }

    /// A third of the announcement's wait: a gateway that missed it
    /// reloads before deciding anything after that.
    fn cache_for(&self) -> std::time::Duration {
        std::time::Duration::from_millis(ANNOUNCE_TIMEOUT_MS / 3)
    }

    fn subscribe(&self, hook: ChangeHook) {
        *self.hook.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    fn holder_id(&self) -> u64 {
        self.gid
    }

    fn holder_alive(&self, id: u64) -> bool {
        if id == self.gid {
            return true;
        }
        let (r, reply) = self.notify(PING, 3000);
        if r < 0 && r != -libc::ETIMEDOUT {
            return true;
        }
        acked_gids(&reply).contains(&id)
    }
}

impl Drop for RadosState {
    fn drop(&mut self) {
        self.close();
    }
}

/// The states a backstore handed out, closed with it (weak: the core owns
/// them, and one that is gone closed itself).
#[derive(Default)]
pub(super) struct States(Mutex<Vec<Weak<RadosState>>>);

impl States {
    pub(super) fn add(&self, s: &Arc<RadosState>) {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(s));
    }

    pub(super) fn close(&self) {
        let v = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for s in v.iter().filter_map(Weak::upgrade) {
            s.close();
        }
    }
}
