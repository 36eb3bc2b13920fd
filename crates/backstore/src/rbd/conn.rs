//! One librados cluster connection made as the cfgstring says (conf file,
//! client id, rtarget's settings): the image's ([`super::RbdBackstore`])
//! and the gateway's service registration ([`super::service`]) each have
//! their own.

use std::ffi::CString;
use std::io;
use std::ptr::null_mut;

use super::{cstr, ffi, rc, RbdConfig};

/// The cluster connection and pool context (closed after the image).
pub(super) struct Conn {
    pub api: &'static ffi::Api,
    pub cluster: ffi::Rados,
    pub ioctx: ffi::Ioctx,
}

// SAFETY: only used to open and close (under &mut / Drop); librados
// handles may be used from any thread.
unsafe impl Send for Conn {}
unsafe impl Sync for Conn {}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: handles created by this Conn, destroyed once.
        unsafe {
            if !self.ioctx.is_null() {
                (self.api.rados_ioctx_destroy)(self.ioctx);
            }
            (self.api.rados_shutdown)(self.cluster);
        }
    }
}

/// What rtarget sets on every connection, after the conf file and
/// CEPH_ARGS (so these win), with `timeout` in seconds.
fn settings(timeout: &str) -> [(&'static str, &str); 9] {
    [
        // One thread runs librbd's completions, not librados' default two:
        // requests handed between two threads cost a wake-up each; with
        // one, a busy thread takes the next without a context switch
        // (about a third of the daemon's CPU per 4 KiB I/O on the RBD
        // bench, BENCHMARKS.md). Each image has its own connection, so
        // several LUs still complete in parallel. Nothing of ours blocks
        // on it (`on_update` hands its work off).
        ("librados_thread_count", "1"),
        // An AIO call dispatches the request on the caller's thread (the
        // fabric's: the engine starts READ and WRITE there) down to the
        // objecter, which queues it for the messenger, instead of handing
        // it to the completion thread first (librbd's default, `true`):
        // one wake-up less per request, and that one thread no longer both
        // dispatches and completes (1 MiB writes ~+13%, BENCHMARKS.md).
        // The fabric's thread must never wait in librbd
        // ([`crate::Backstore::submit_never_blocks`]); nothing on the way
        // does with the cache off: an image refresh, the exclusive lock's
        // acquisition and QoS queue the request and go on asynchronously,
        // the object map and the messenger are asynchronous, and the
        // objecter's budget (which would block the caller when
        // exhausted) is set out of reach below.
        ("rbd_non_blocking_aio", "false"),
        // The objecter's in-flight budget (defaults 1024 ops, 100 MiB)
        // blocks the submitting thread once spent, which with the dispatch
        // above is the fabric's. The engine already bounds what a fabric
        // holds (1 GiB of task memory in all, a command window per
        // session), so the objecter's own limits are set beyond anything
        // it can reach.
        ("objecter_inflight_ops", "1048576"),
        ("objecter_inflight_op_bytes", "17179869184"),
        // An acknowledged write is in the cluster (several gateways must
        // see it alike); the LU reports no volatile cache.
        ("rbd_cache", "false"),
        ("rbd_skip_partial_discard", "false"),
        // librbd copies every write buffer (its default, kept): with
        // zero-copy writes (`false`) it holds the completion back until it
        // let go of the buffer, and a write that fails in a dispatch layer
        // above the I/O itself (the exclusive lock not acquired after a
        // takeover's blocklisting, a failed image refresh) keeps the
        // buffer in its request, which is freed only once the completion
        // fired: librbd 16 waits on itself and the write, and the close
        // waiting for it, hang forever (tests/rbd.rs,
        // blocklisted_writes_fail; librbd's log ends at "AioCompletion:
        // fail"). The engine's writes avoid the copy another way, through
        // librbd's C++ call, which takes the buffer over ([`super::shim`]);
        // this governs the C call the synchronous methods still use.
        ("rbd_disable_zero_copy_writes", "true"),
        ("rados_osd_op_timeout", timeout),
        ("client_mount_timeout", timeout),
    ]
}

/// Connect to the cluster `cfg` names; with `pool`, also open its context.
pub(super) fn connect(cfg: &RbdConfig, pool: bool) -> io::Result<Conn> {
    let api = ffi::api().map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
    let mut cluster = null_mut();
    // librados' default client (rados_create2 needs a name).
    let client = cstr(&format!("client.{}", cfg.id.as_deref().unwrap_or("admin")))?;
    // SAFETY: out-pointer to a local; strings outlive the call.
    let r = unsafe { (api.rados_create2)(&mut cluster, c"ceph".as_ptr(), client.as_ptr(), 0) };
    rc("rados_create2", r as isize)?;
    let mut conn = Conn {
        api,
        cluster,
        ioctx: null_mut(),
    };
    let conf = cfg.conf.as_deref().map(cstr).transpose()?;
    let timeout = cfg.osd_op_timeout.as_secs().to_string();
    let settings = settings(&timeout);
    // SAFETY: `cluster` is live; every string is NUL-terminated and
    // outlives its call.
    unsafe {
        let path = conf
            .as_ref()
            .map_or(std::ptr::null(), |c: &CString| c.as_ptr());
        rc(
            "reading the ceph configuration",
            (api.rados_conf_read_file)(cluster, path) as isize,
        )?;
        rc(
            "CEPH_ARGS",
            (api.rados_conf_parse_env)(cluster, std::ptr::null()) as isize,
        )?;
        for (k, v) in settings {
            let (ck, cv) = (cstr(k)?, cstr(v)?);
            rc(
                k,
                (api.rados_conf_set)(cluster, ck.as_ptr(), cv.as_ptr()) as isize,
            )?;
        }
        rc(
            "connecting to the cluster",
            (api.rados_connect)(cluster) as isize,
        )?;
        if pool {
            let pool = cstr(&cfg.pool)?;
            rc(
                &format!("pool {}", cfg.pool),
                (api.rados_ioctx_create)(cluster, pool.as_ptr(), &mut conn.ioctx) as isize,
            )?;
        }
    }
    Ok(conn)
}

#[cfg(test)]
mod tests {
    #[test]
    fn settings_keep_the_cache_off_write_buffers_copied_and_dispatch_unthrottled() {
        let s = super::settings("7");
        let get = |k: &str| s.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        assert_eq!(get("rbd_cache"), Some("false"));
        assert_eq!(get("rbd_disable_zero_copy_writes"), Some("true"));
        // Dispatched on the caller's thread, whose wait for the objecter's
        // budget is ruled out by the engine's own, smaller, limits.
        assert_eq!(get("rbd_non_blocking_aio"), Some("false"));
        let ops: u64 = get("objecter_inflight_ops").unwrap().parse().unwrap();
        let bytes: u64 = get("objecter_inflight_op_bytes").unwrap().parse().unwrap();
        assert!(
            ops >= 1 << 20 && bytes >= 16 << 30,
            "{ops} ops, {bytes} bytes"
        );
        assert_eq!(get("librados_thread_count"), Some("1"));
        assert_eq!(get("rados_osd_op_timeout"), Some("7"));
        assert_eq!(get("client_mount_timeout"), Some("7"));
    }
}
