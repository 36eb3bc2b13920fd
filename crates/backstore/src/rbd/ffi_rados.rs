//! The librados object calls [`super::shared`] needs (read, compare-and-swap
//! write ops, watch/notify), by hand from librados.h (Ceph 16.2), resolved
//! through the same `librbd.so.1` handle [`super::ffi`] loads (dlopen
//! returns the loaded library; its dependency librados answers the names).

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

use super::ffi::{Image, Ioctx, Rados};

pub type WriteOp = *mut c_void;
/// `rados_watchcb2_t`: arg, notify id, watch handle, notifier gid, payload.
pub type WatchCb = extern "C" fn(*mut c_void, u64, u64, u64, *mut c_void, usize);
/// `rados_watcherrcb_t`: arg, watch handle, error.
pub type WatchErrCb = extern "C" fn(*mut c_void, u64, c_int);

pub const CMPXATTR_OP_EQ: u8 = 1;
pub const CREATE_EXCLUSIVE: c_int = 1;

macro_rules! rados_api {
    ($($name:ident: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        pub struct Api {
            _lib: libloading::Library,
            $(pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }

        impl Api {
            fn load() -> Result<Api, String> {
                // SAFETY: as in ffi.rs (already loaded: only a refcount).
                let lib = unsafe { libloading::Library::new("librbd.so.1") }
                    .map_err(|e| format!("cannot load librbd.so.1: {e}"))?;
                $(
                    // SAFETY: the signature is librados.h's for this name.
                    let $name = unsafe {
                        *lib.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        )
                        .map_err(|e| format!("librados: {}: {e}", stringify!($name)))?
                    };
                )*
                Ok(Api { _lib: lib, $($name,)* })
            }
        }
    };
}

rados_api! {
    rados_get_instance_id: fn(Rados) -> u64;
    rados_read: fn(Ioctx, *const c_char, *mut c_char, usize, u64) -> c_int;
    rados_create_write_op: fn() -> WriteOp;
    rados_release_write_op: fn(WriteOp);
    rados_write_op_create: fn(WriteOp, c_int, *const c_char);
    rados_write_op_cmpxattr: fn(WriteOp, *const c_char, u8, *const c_char, usize);
    rados_write_op_setxattr: fn(WriteOp, *const c_char, *const c_char, usize);
    rados_write_op_write_full: fn(WriteOp, *const c_char, usize);
    rados_write_op_operate: fn(WriteOp, Ioctx, *const c_char, *mut libc::time_t, c_int) -> c_int;
    rados_watch3:
        fn(Ioctx, *const c_char, *mut u64, WatchCb, WatchErrCb, u32, *mut c_void) -> c_int;
    rados_unwatch2: fn(Ioctx, u64) -> c_int;
    rados_watch_flush: fn(Rados) -> c_int;
    rados_notify2:
        fn(Ioctx, *const c_char, *const c_char, c_int, u64, *mut *mut c_char, *mut usize) -> c_int;
    rados_notify_ack: fn(Ioctx, *const c_char, u64, u64, *const c_char, c_int) -> c_int;
    rados_buffer_free: fn(*mut c_char);
    rbd_get_id: fn(Image, *mut c_char, usize) -> c_int;
    // Service map (`ceph service dump`): metadata and status are
    // "key\0value\0...\0" dictionaries ([`super::service::dict`]).
    rados_service_register: fn(Rados, *const c_char, *const c_char, *const c_char) -> c_int;
    rados_service_update_status: fn(Rados, *const c_char) -> c_int;
}

/// librados' object calls, loaded on first use.
pub fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(Api::load).as_ref().map_err(Clone::clone)
}

/// The gids of the watchers that acknowledged a notify, from
/// rados_notify2's reply buffer: le32 count, then per ack le64 gid, le64
/// cookie, le32 length and that many payload bytes (then the timeouts).
pub fn acked_gids(reply: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let le32 = |b: &[u8], at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    let Some(n) = le32(reply, 0) else {
        return out;
    };
    let mut at = 4;
    for _ in 0..n {
        let Some(gid) = reply.get(at..at + 8) else {
            break;
        };
        out.push(u64::from_le_bytes(gid.try_into().unwrap_or([0; 8])));
        let Some(len) = le32(reply, at + 16) else {
            break;
        };
        at += 20 + len;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn acked_gids_parses_the_reply_buffer() {
        let mut b = 2u32.to_le_bytes().to_vec();
        for (gid, payload) in [(7u64, &b"ab"[..]), (9, &b""[..])] {
            b.extend_from_slice(&gid.to_le_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
            b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            b.extend_from_slice(payload);
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        assert_eq!(super::acked_gids(&b), vec![7, 9]);
        assert_eq!(super::acked_gids(&b[..10]), Vec::<u64>::new());
        assert!(super::acked_gids(&[]).is_empty());
    }
}
