//! The librbd / librados functions the multi-gateway mode ([`super::gateway`])
//! calls on top of [`super::ffi`]: the exclusive lock (managed mode, as
//! tcmu-runner uses it), image metadata (where the owner is recorded), the
//! header's watchers (is the owner alive?) and the client's own address.
//! Written by hand from librbd.h / librados.h (Ceph 16.2).
//!
//! Resolved through a second `dlopen` of `librbd.so.1`: the loader hands
//! back the handle [`super::ffi`] already holds (one mapping, refcounted),
//! so both tables point into the same library; the librados symbols
//! resolve through librbd's dependencies as in [`super::ffi`].

use std::ffi::{c_char, c_int};
use std::sync::OnceLock;

use super::ffi::{Image, Rados};

/// `rbd_lock_mode_t`: RBD_LOCK_MODE_EXCLUSIVE.
pub const LOCK_MODE_EXCLUSIVE: c_int = 0;
/// RBD_FEATURE_EXCLUSIVE_LOCK (features.h).
pub const FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;

/// `rbd_image_watcher_t`.
#[repr(C)]
pub struct Watcher {
    pub addr: *mut c_char,
    pub id: i64,
    pub cookie: u64,
}

pub struct LockApi {
    _lib: libloading::Library,
    pub rbd_get_features: unsafe extern "C" fn(Image, *mut u64) -> c_int,
    pub rbd_is_exclusive_lock_owner: unsafe extern "C" fn(Image, *mut c_int) -> c_int,
    pub rbd_lock_acquire: unsafe extern "C" fn(Image, c_int) -> c_int,
    pub rbd_lock_get_owners:
        unsafe extern "C" fn(Image, *mut c_int, *mut *mut c_char, *mut usize) -> c_int,
    pub rbd_lock_get_owners_cleanup: unsafe extern "C" fn(*mut *mut c_char, usize),
    pub rbd_lock_break: unsafe extern "C" fn(Image, c_int, *const c_char) -> c_int,
    pub rbd_metadata_get:
        unsafe extern "C" fn(Image, *const c_char, *mut c_char, *mut usize) -> c_int,
    pub rbd_metadata_set: unsafe extern "C" fn(Image, *const c_char, *const c_char) -> c_int,
    pub rbd_watchers_list: unsafe extern "C" fn(Image, *mut Watcher, *mut usize) -> c_int,
    pub rbd_watchers_list_cleanup: unsafe extern "C" fn(*mut Watcher, usize),
    pub rados_getaddrs: unsafe extern "C" fn(Rados, *mut *mut c_char) -> c_int,
    pub rados_buffer_free: unsafe extern "C" fn(*mut c_char),
}

const LIBRBD: &str = "librbd.so.1";

impl LockApi {
    fn load() -> Result<LockApi, String> {
        // SAFETY: as in ffi.rs (the library is already loaded there).
        let lib = unsafe { libloading::Library::new(LIBRBD) }
            .map_err(|e| format!("cannot load {LIBRBD} (install librbd1): {e}"))?;
        macro_rules! sym {
            ($name:ident) => {
                // SAFETY: the field's type is librbd.h's signature for it.
                unsafe {
                    *lib.get(concat!(stringify!($name), "\0").as_bytes())
                        .map_err(|e| format!("{LIBRBD}: {}: {e}", stringify!($name)))?
                }
            };
        }
        Ok(LockApi {
            rbd_get_features: sym!(rbd_get_features),
            rbd_is_exclusive_lock_owner: sym!(rbd_is_exclusive_lock_owner),
            rbd_lock_acquire: sym!(rbd_lock_acquire),
            rbd_lock_get_owners: sym!(rbd_lock_get_owners),
            rbd_lock_get_owners_cleanup: sym!(rbd_lock_get_owners_cleanup),
            rbd_lock_break: sym!(rbd_lock_break),
            rbd_metadata_get: sym!(rbd_metadata_get),
            rbd_metadata_set: sym!(rbd_metadata_set),
            rbd_watchers_list: sym!(rbd_watchers_list),
            rbd_watchers_list_cleanup: sym!(rbd_watchers_list_cleanup),
            rados_getaddrs: sym!(rados_getaddrs),
            rados_buffer_free: sym!(rados_buffer_free),
            _lib: lib,
        })
    }
}

/// The lock functions, loaded on first use (the outcome is kept).
pub fn lock_api() -> Result<&'static LockApi, String> {
    static API: OnceLock<Result<LockApi, String>> = OnceLock::new();
    API.get_or_init(LockApi::load)
        .as_ref()
        .map_err(Clone::clone)
}
