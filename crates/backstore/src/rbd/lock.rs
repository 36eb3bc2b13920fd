//! Safe calls around [`super::ffi_lock`] on one open image: the exclusive
//! lock's owners, breaking (and so blocklisting) one, acquiring, the
//! header's watchers, image metadata and the client's own address.
//!
//! Every error keeps librbd's errno (`raw_os_error`), except ESHUTDOWN
//! (this client is blocklisted), which is a [`crate::ownership::path_lost`]
//! error so that callers and the core treat it as a fence.

use std::ffi::{c_char, c_int, CStr, CString};
use std::io;
use std::ptr::null_mut;

use super::ffi::{Image, Rados};
use super::ffi_lock::{lock_api, LockApi, Watcher, FEATURE_EXCLUSIVE_LOCK, LOCK_MODE_EXCLUSIVE};

/// Where the owner's target port group is recorded (image metadata, read
/// by every gateway for REPORT TARGET PORT GROUPS).
pub const OWNER_KEY: &str = "rtarget.alua_owner";

fn rc(what: &str, r: c_int) -> io::Result<()> {
    if r >= 0 {
        return Ok(());
    }
    let e = io::Error::from_raw_os_error(-r);
    if r == -libc::ESHUTDOWN {
        return Err(crate::ownership::path_lost(format!(
            "{what}: {e} (this client is blocklisted)"
        )));
    }
    Err(io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// The raw errno of an error made by [`rc`] (`None`: fenced or other).
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error().or_else(|| {
        // io::Error::new keeps the kind, not the code: map back the few
        // the gateway cares about.
        match e.kind() {
            io::ErrorKind::NotFound => Some(libc::ENOENT),
            io::ErrorKind::ReadOnlyFilesystem => Some(libc::EROFS),
            _ => None,
        }
    })
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a string"))
}

/// The lock calls on one image of one cluster connection.
#[derive(Clone, Copy)]
pub struct Locks {
    api: &'static LockApi,
    image: Image,
    cluster: Rados,
}

// SAFETY: librbd / librados handles may be used from any thread.
unsafe impl Send for Locks {}
unsafe impl Sync for Locks {}

impl Locks {
    /// The caller keeps `image` and `cluster` open while this is used.
    pub fn new(image: Image, cluster: Rados) -> io::Result<Locks> {
        let api = lock_api().map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
        Ok(Locks {
            api,
            image,
            cluster,
        })
    }

    pub fn has_exclusive_lock_feature(&self) -> io::Result<bool> {
        let mut f = 0u64;
        // SAFETY: open image; out-pointer to a local.
        rc("rbd_get_features", unsafe {
            (self.api.rbd_get_features)(self.image, &mut f)
        })?;
        Ok(f & FEATURE_EXCLUSIVE_LOCK != 0)
    }

    pub fn is_owner(&self) -> io::Result<bool> {
        let mut owner: c_int = 0;
        // SAFETY: as above.
        rc("rbd_is_exclusive_lock_owner", unsafe {
            (self.api.rbd_is_exclusive_lock_owner)(self.image, &mut owner)
        })?;
        Ok(owner != 0)
    }

    /// The lock owners' addresses (`IP:PORT/NONCE`), empty when unlocked.
    pub fn owners(&self) -> io::Result<Vec<String>> {
        let mut mode: c_int = 0;
        let mut slots: [*mut c_char; 8] = [null_mut(); 8];
        let mut n = slots.len();
        // SAFETY: `slots` holds `n` pointers librbd fills; released below.
        let r = unsafe {
            (self.api.rbd_lock_get_owners)(self.image, &mut mode, slots.as_mut_ptr(), &mut n)
        };
        if r == -libc::ENOENT {
            return Ok(Vec::new());
        }
        rc("rbd_lock_get_owners", r)?;
        let owners = slots[..n.min(slots.len())]
            .iter()
            .filter(|p| !p.is_null())
            // SAFETY: NUL-terminated strings librbd allocated.
            .map(|p| unsafe { CStr::from_ptr(*p) }.to_string_lossy().into_owned())
            .collect();
        // SAFETY: the `n` strings librbd allocated, freed once.
        unsafe { (self.api.rbd_lock_get_owners_cleanup)(slots.as_mut_ptr(), n) };
        Ok(owners)
    }

    /// Break `owner`'s lock. librbd first blocklists exactly that address
    /// (IP, port and nonce: `rbd_blocklist_on_break_lock`, on by default),
    /// so the old owner's later writes are refused by the OSDs.
    pub fn break_lock(&self, owner: &str) -> io::Result<()> {
        let o = cstr(owner)?;
        // SAFETY: open image; the string outlives the call.
        rc("rbd_lock_break", unsafe {
            (self.api.rbd_lock_break)(self.image, LOCK_MODE_EXCLUSIVE, o.as_ptr())
        })
    }

    /// Take the lock in librbd's managed mode: from now on librbd neither
    /// hands it to another client that asks nor asks for it by itself.
    pub fn acquire(&self) -> io::Result<()> {
        // SAFETY: open image.
        rc("rbd_lock_acquire", unsafe {
            (self.api.rbd_lock_acquire)(self.image, LOCK_MODE_EXCLUSIVE)
        })
    }

    /// The addresses of the clients watching the image header (every
    /// client that has the image open and is alive).
    pub fn watchers(&self) -> io::Result<Vec<String>> {
        let mut slots: Vec<Watcher> = (0..64)
            .map(|_| Watcher {
                addr: null_mut(),
                id: 0,
                cookie: 0,
            })
            .collect();
        let mut n = slots.len();
        // SAFETY: `slots` holds `n` entries librbd fills; released below.
        let r = unsafe { (self.api.rbd_watchers_list)(self.image, slots.as_mut_ptr(), &mut n) };
        rc("rbd_watchers_list", r)?;
        let n = n.min(slots.len());
        let addrs = slots[..n]
            .iter()
            .filter(|w| !w.addr.is_null())
            // SAFETY: NUL-terminated strings librbd allocated.
            .map(|w| {
                unsafe { CStr::from_ptr(w.addr) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        // SAFETY: the `n` entries librbd filled, freed once.
        unsafe { (self.api.rbd_watchers_list_cleanup)(slots.as_mut_ptr(), n) };
        Ok(addrs)
    }

    pub fn metadata_get(&self, key: &str) -> io::Result<Option<String>> {
        let k = cstr(key)?;
        let mut buf = vec![0u8; 256];
        loop {
            let mut len = buf.len();
            // SAFETY: `buf` has `len` bytes; librbd writes at most that.
            let r = unsafe {
                (self.api.rbd_metadata_get)(
                    self.image,
                    k.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    &mut len,
                )
            };
            if r == -libc::ENOENT {
                return Ok(None);
            }
            if r == -libc::ERANGE && len > buf.len() {
                buf.resize(len, 0);
                continue;
            }
            rc("rbd_metadata_get", r)?;
            let s = CStr::from_bytes_until_nul(&buf[..len.min(buf.len())])
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_else(|_| String::from_utf8_lossy(&buf[..len]).into_owned());
            return Ok(Some(s));
        }
    }

    /// Only the lock owner may set metadata (librbd forwards it otherwise).
    pub fn metadata_set(&self, key: &str, value: &str) -> io::Result<()> {
        let (k, v) = (cstr(key)?, cstr(value)?);
        // SAFETY: open image; strings outlive the call.
        rc("rbd_metadata_set", unsafe {
            (self.api.rbd_metadata_set)(self.image, k.as_ptr(), v.as_ptr())
        })
    }

    /// This client's address as the OSDs (and blocklists) see it.
    pub fn my_addr(&self) -> io::Result<String> {
        let mut p: *mut c_char = null_mut();
        // SAFETY: connected cluster; librados allocates `p`.
        rc("rados_getaddrs", unsafe {
            (self.api.rados_getaddrs)(self.cluster, &mut p)
        })?;
        if p.is_null() {
            return Ok(String::new());
        }
        // SAFETY: a NUL-terminated buffer from librados, freed once.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        unsafe { (self.api.rados_buffer_free)(p) };
        Ok(s)
    }
}

/// Whether a lock owner's address is among the header's watchers: an owner
/// whose watch is gone (crashed, or cut off for longer than the OSDs'
/// watch timeout) is dead. Addresses may come with or without a
/// `v1:`/`v2:` prefix or brackets (`[v2:127.0.0.1:6800/123,v1:...]`).
pub fn is_alive(owner: &str, watchers: &[String]) -> bool {
    let want = addr_keys(owner);
    watchers
        .iter()
        .any(|w| addr_keys(w).iter().any(|k| want.contains(k)))
}

/// The `IP:PORT/NONCE` parts of an address string, without prefixes.
fn addr_keys(a: &str) -> Vec<String> {
    a.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|p| {
            let p = p.trim();
            p.strip_prefix("v2:")
                .or_else(|| p.strip_prefix("v1:"))
                .or_else(|| p.strip_prefix("any:"))
                .unwrap_or(p)
                .to_string()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// The owner record: `group=N addr=ADDR`.
pub fn owner_record(group: u16, addr: &str) -> String {
    format!("group={group} addr={addr}")
}

/// The group of an owner record (`None`: not a record of ours).
pub fn parse_owner_record(s: &str) -> Option<(u16, String)> {
    let mut group = None;
    let mut addr = String::new();
    for kv in s.split_whitespace() {
        match kv.split_once('=') {
            Some(("group", v)) => group = v.parse().ok(),
            Some(("addr", v)) => addr = v.to_string(),
            _ => {}
        }
    }
    group.map(|g| (g, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_records_and_liveness() {
        let r = owner_record(2, "127.0.0.1:0/3141");
        assert_eq!(parse_owner_record(&r), Some((2, "127.0.0.1:0/3141".into())));
        assert_eq!(parse_owner_record("tcmu lock tag"), None);
        let w = vec!["127.0.0.1:0/99".to_string(), "127.0.0.1:0/3141".to_string()];
        assert!(is_alive("127.0.0.1:0/3141", &w));
        assert!(is_alive("[v2:127.0.0.1:0/3141,v1:127.0.0.1:0/3141]", &w));
        // Same IP, another nonce (another client on the same host): dead.
        assert!(!is_alive("127.0.0.1:0/3142", &w));
        assert!(!is_alive("127.0.0.1:0/3141", &[]));
    }
}
