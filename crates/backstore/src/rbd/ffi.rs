//! The few librados / librbd C functions the rbd backstore calls, written
//! by hand from librbd.h / librados.h (Ceph 16.2; no bindgen).
//!
//! Loaded at run time with dlopen (`librbd.so.1`, which pulls in
//! `librados.so.2`) rather than linked: one rtarget binary then runs on
//! hosts without Ceph (only `user:rbd` objects fail, with a message), the
//! build needs neither librbd-dev nor a probe, and the -dev package's
//! missing pkg-config file does not matter. Only the runtime package
//! (librbd1) is needed where images are served.

use std::ffi::{c_char, c_int, c_void};
use std::sync::OnceLock;

pub type Rados = *mut c_void;
pub type Ioctx = *mut c_void;
pub type Image = *mut c_void;
pub type Aio = *mut c_void;
pub type AioCallback = extern "C" fn(Aio, *mut c_void);
pub type UpdateCallback = extern "C" fn(*mut c_void);
pub type DiffCallback = extern "C" fn(u64, usize, c_int, *mut c_void) -> c_int;

/// `rbd_image_info_t` (librbd.h), for the object size.
#[repr(C)]
pub struct ImageInfo {
    pub size: u64,
    pub obj_size: u64,
    pub num_objs: u64,
    pub order: c_int,
    pub block_name_prefix: [c_char; 24],
    pub parent_pool: i64,
    pub parent_name: [c_char; 96],
}

/// Declares the function table and its loader in one list, so a symbol
/// cannot be declared without being resolved.
macro_rules! api {
    ($($name:ident: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        pub struct Api {
            // Keeps the library mapped for as long as the pointers live.
            _lib: libloading::Library,
            $(pub $name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
        }

        impl Api {
            fn load() -> Result<Api, String> {
                // SAFETY: librbd's initialisers are ordinary C++ static
                // constructors; loading it has no other side effect.
                let lib = unsafe { libloading::Library::new(LIBRBD) }
                    .map_err(|e| format!("cannot load {LIBRBD} (install librbd1): {e}"))?;
                $(
                    // SAFETY: the signature is librbd.h's for this name.
                    let $name = unsafe {
                        *lib.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        )
                        .map_err(|e| format!("{LIBRBD}: {}: {e}", stringify!($name)))?
                    };
                )*
                Ok(Api { _lib: lib, $($name,)* })
            }
        }
    };
}

const LIBRBD: &str = "librbd.so.1";

api! {
    rados_create2: fn(*mut Rados, *const c_char, *const c_char, u64) -> c_int;
    rados_conf_read_file: fn(Rados, *const c_char) -> c_int;
    rados_conf_parse_env: fn(Rados, *const c_char) -> c_int;
    rados_conf_set: fn(Rados, *const c_char, *const c_char) -> c_int;
    rados_connect: fn(Rados) -> c_int;
    rados_shutdown: fn(Rados);
    rados_ioctx_create: fn(Rados, *const c_char, *mut Ioctx) -> c_int;
    rados_ioctx_destroy: fn(Ioctx);
    rbd_create: fn(Ioctx, *const c_char, u64, *mut c_int) -> c_int;
    rbd_open: fn(Ioctx, *const c_char, *mut Image, *const c_char) -> c_int;
    rbd_open_read_only: fn(Ioctx, *const c_char, *mut Image, *const c_char) -> c_int;
    rbd_close: fn(Image) -> c_int;
    rbd_get_size: fn(Image, *mut u64) -> c_int;
    rbd_stat: fn(Image, *mut ImageInfo, usize) -> c_int;
    rbd_resize: fn(Image, u64) -> c_int;
    rbd_aio_create_completion: fn(*mut c_void, AioCallback, *mut Aio) -> c_int;
    rbd_aio_get_return_value: fn(Aio) -> isize;
    rbd_aio_release: fn(Aio);
    rbd_aio_read: fn(Image, u64, usize, *mut c_char, Aio) -> c_int;
    rbd_aio_write: fn(Image, u64, usize, *const c_char, Aio) -> c_int;
    rbd_aio_flush: fn(Image, Aio) -> c_int;
    rbd_aio_discard: fn(Image, u64, u64, Aio) -> c_int;
    rbd_aio_write_zeroes: fn(Image, u64, usize, Aio, c_int, c_int) -> c_int;
    rbd_aio_compare_and_write:
        fn(Image, u64, usize, *const c_char, *const c_char, Aio, *mut u64, c_int) -> isize;
    rbd_update_watch: fn(Image, *mut u64, UpdateCallback, *mut c_void) -> c_int;
    rbd_update_unwatch: fn(Image, u64) -> c_int;
    rbd_diff_iterate2:
        fn(Image, *const c_char, u64, u64, u8, u8, DiffCallback, *mut c_void) -> c_int;
}

/// librbd, loaded on first use (once per process; the outcome is kept).
pub fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(Api::load).as_ref().map_err(Clone::clone)
}
