//! librbd's C++ `aio_write` (src/rbd/shim.cc), which takes a write's buffer
//! over instead of copying it as `rbd_aio_write` does: a 1 MiB write then
//! costs the gateway ~10% less CPU (BENCHMARKS.md, session 13, s13-rbd).
//! The C call's own zero-copy mode (`rbd_disable_zero_copy_writes=false`)
//! stays off: it lends librbd the caller's memory and holds the completion
//! until librbd let go of it, which a write failed above the I/O (a
//! blocklisted gateway) never does ([`super::conn`]). Here librbd owns the
//! buffer outright (it `free`s it when its last reference goes), so
//! nothing waits for it, and the engine gets the write back without its
//! buffer.
//!
//! The shim is a shared object of its own (build.rs), embedded in the
//! binary and loaded from memory after librbd, so rtarget still starts
//! where Ceph is not installed. Absent (built without librbd's C++
//! headers) or not loadable, writes take the C call.

use std::ffi::{c_char, c_int};

use super::ffi;

/// `rtarget_rbd_aio_write_owned` (shim.cc): librbd owns `buf` from the
/// call on, whatever its result.
pub(super) type WriteOwned =
    unsafe extern "C" fn(ffi::Image, u64, usize, *mut c_char, ffi::Aio) -> c_int;

/// The shim's write, for a write of `len` bytes (`None`: use the C call).
pub(super) fn write_owned(len: usize) -> Option<WriteOwned> {
    // librbd's buffers are at most 4 GiB - 1 (an `unsigned` length).
    if u32::try_from(len).is_err() {
        return None;
    }
    imp::load()
}

#[cfg(rbd_shim)]
mod imp {
    use std::io::Write;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::OnceLock;

    use super::WriteOwned;

    static SO: &[u8] = include_bytes!(env!("RTARGET_RBD_SHIM"));

    struct Shim {
        // Keeps the shim mapped for as long as the pointer lives.
        _lib: libloading::Library,
        write: WriteOwned,
    }

    pub(super) fn load() -> Option<WriteOwned> {
        static SHIM: OnceLock<Option<Shim>> = OnceLock::new();
        SHIM.get_or_init(|| {
            open()
                .inspect_err(|e| tracing::warn!(error = %e, "rbd: writes copy their buffer"))
                .ok()
        })
        .as_ref()
        .map(|s| s.write)
    }

    fn open() -> Result<Shim, String> {
        // librbd first (with its message when absent); the shim's own
        // dependency on it then resolves to the library already loaded.
        super::ffi::api()?;
        // SAFETY: a name and flags; the fd is ours on success.
        let fd = unsafe { libc::memfd_create(c"rtarget-rbd-shim".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: just created, owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        std::fs::File::from(fd.try_clone().map_err(|e| e.to_string())?)
            .write_all(SO)
            .map_err(|e| format!("memfd: {e}"))?;
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        // SAFETY: the shim has no initialisers of its own; librbd's ran
        // when it was loaded.
        let lib = unsafe { libloading::Library::new(&path) }
            .map_err(|e| format!("loading the rbd shim: {e}"))?;
        // SAFETY: shim.cc's signature for this name.
        let write = unsafe { lib.get::<WriteOwned>(b"rtarget_rbd_aio_write_owned\0") }
            .map(|f| *f)
            .map_err(|e| format!("rbd shim: {e}"))?;
        Ok(Shim { _lib: lib, write })
    }
}

#[cfg(not(rbd_shim))]
mod imp {
    pub(super) fn load() -> Option<super::WriteOwned> {
        None
    }
}
