//! A gateway's entry in the cluster's service map (`ceph service dump`,
//! as tcmu-runner registers its devices): service `rtarget`, one daemon
//! per gateway and image, with static metadata (image, ALUA group) and a
//! status the gateway updates whenever it changes (lock owner, failovers,
//! blocklisted peers). The ceph-mgr keeps the map; without one the calls
//! succeed and nothing shows.
//!
//! The registration has a cluster connection of its own: the image's is
//! blocklisted when another gateway takes the lock and is replaced by a
//! new one, and closing a registered connection removes its daemon from
//! the map (which would race with the new connection's registration).
//!
//! That removal is how a gateway leaves the map when it stops (dropping
//! the [`Service`] at [`crate::Backstore::close`]): `rados_shutdown`
//! sends the mgr an `MMgrClose` and waits for its answer (at most
//! `mgr_client_service_daemon_unregister_timeout`, 1 s); the mgr drops the
//! daemon from the next map it publishes. librados has no other
//! unregister call. A gateway that dies stays listed until the mgr's
//! `mgr_service_beacon_grace` (60 s) passes without a beacon.

use std::ffi::c_char;
use std::io;
use std::sync::Mutex;

use super::conn::{connect, Conn};
use super::ffi_rados;
use super::{rc, RbdConfig};

/// The service name gateways register under.
pub const SERVICE: &str = "rtarget";

pub struct Service {
    conn: Conn,
    api: &'static ffi_rados::Api,
    /// The last status sent (`update` skips an unchanged one).
    last: Mutex<Vec<(String, String)>>,
}

/// librados' dictionary form: every key and value NUL-terminated, then an
/// empty string. NULs inside keys or values are dropped.
pub fn dict<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        for s in [k.as_ref(), v.as_ref()] {
            out.extend(s.bytes().filter(|b| *b != 0));
            out.push(0);
        }
    }
    out.push(0);
    out
}

/// The daemon name of gateway `group` of `image` on this host, unique per
/// gateway even when several run on one host.
pub fn daemon_name(host: &str, image: &str, group: u16) -> String {
    format!("{host}:{image}:gw{group}")
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into `buf`.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) } != 0 {
        return "localhost".into();
    }
    std::ffi::CStr::from_bytes_until_nul(&buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

impl Service {
    /// Connect and register gateway `group` of `cfg`'s image.
    pub fn register(cfg: &RbdConfig, group: u16) -> io::Result<Service> {
        let api = ffi_rados::api().map_err(|e| io::Error::new(io::ErrorKind::Unsupported, e))?;
        let conn = connect(cfg, false)?;
        let image = format!("{}/{}", cfg.pool, cfg.image);
        let name = daemon_name(&host_name(), &image, group);
        let meta = dict(&[
            ("daemon_type", "gateway"),
            ("image", image.as_str()),
            ("alua_group", group.to_string().as_str()),
        ]);
        let (svc, daemon) = (super::cstr(SERVICE)?, super::cstr(&name)?);
        // SAFETY: connected cluster; every buffer outlives the call.
        let r = unsafe {
            (api.rados_service_register)(
                conn.cluster,
                svc.as_ptr(),
                daemon.as_ptr(),
                meta.as_ptr().cast::<c_char>(),
            )
        };
        rc("rados_service_register", r as isize)?;
        tracing::info!(service = SERVICE, daemon = %name, "rbd gateway: registered in the service map");
        Ok(Service {
            conn,
            api,
            last: Mutex::new(Vec::new()),
        })
    }

    /// Send `status` (replacing the previous one) unless it is unchanged.
    pub fn update(&self, status: Vec<(String, String)>) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if *last == status {
            return;
        }
        let d = dict(&status);
        // SAFETY: connected cluster; `d` outlives the call.
        let r = unsafe {
            (self.api.rados_service_update_status)(self.conn.cluster, d.as_ptr().cast::<c_char>())
        };
        match rc("rados_service_update_status", r as isize) {
            Ok(_) => *last = status,
            Err(e) => tracing::warn!(error = %e, "rbd gateway: service status not updated"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_and_names() {
        assert_eq!(
            dict(&[("a", "1"), ("bc", "")]),
            b"a\x001\x00bc\x00\x00\x00".to_vec()
        );
        assert_eq!(dict::<&str, &str>(&[]), b"\x00".to_vec());
        assert_eq!(dict(&[("k\0", "v")]), b"k\x00v\x00\x00".to_vec());
        assert_eq!(daemon_name("h", "rbd/img", 2), "h:rbd/img:gw2");
    }
}
