//! ublk user recovery: a restarted rtarget (kill -9 included) takes its
//! disks over again instead of adding new ones, so a file system mounted
//! on /dev/ublkbN survives the restart.
//!
//! Every disk is added with `UBLK_F_USER_RECOVERY` (and `_REISSUE` where
//! the driver has it): when its server dies the kernel quiesces the disk
//! and holds new I/O; the requests the dead server had fetched but not
//! completed are issued again to the next server (they are plain reads
//! and writes of whole blocks: running one twice is harmless), so no
//! acknowledged write is lost and none fails.
//!
//! Which disk is whose: the device id of each (target, LUN) is kept in
//! `<state dir>/loopback-devices.json`, and the disk carries a tag of the
//! same (target, LUN) in its target flags (`ublksrv_flags`, fixed for the
//! disk's life), so a stale file (a reboot, another ublk server that got
//! the same id) never makes rtarget take a disk that is not its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use libublk::ctrl::UblkCtrl;
use libublk::{sys, UblkError};

/// The state file's name in the state dir.
pub const STATE_FILE: &str = "loopback-devices.json";

/// How long the kernel may take to notice the old server is gone and
/// quiesce the disk (START_USER_RECOVERY answers EBUSY until then).
const QUIESCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serializes read-modify-write of state files (targets start on
/// different threads).
static FILE_LOCK: Mutex<()> = Mutex::new(());

/// The ctrl flags every disk is added with: recovery, and re-issue of the
/// old server's pending requests where the driver supports it.
pub fn ctrl_flags() -> u64 {
    let want = u64::from(sys::UBLK_F_USER_RECOVERY | sys::UBLK_F_USER_RECOVERY_REISSUE);
    match UblkCtrl::get_features() {
        Some(f) if f & u64::from(sys::UBLK_F_USER_RECOVERY) != 0 => want & f,
        Some(_) => 0,
        // Drivers older than GET_FEATURES (6.0) have both flags.
        None => want,
    }
}

/// FNV-1a of `key`: a stable tag (the same in every rtarget build).
pub fn tag_of(key: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One disk's place in the state file: `<target WWN>/lun<N>`.
#[derive(Debug, Clone)]
pub struct Slot {
    file: PathBuf,
    pub key: String,
}

impl Slot {
    pub fn new(state_dir: &Path, wwn: &str, lun: u64) -> Slot {
        Slot {
            file: state_dir.join(STATE_FILE),
            key: format!("{wwn}/lun{lun}"),
        }
    }

    pub fn tag(&self) -> u64 {
        tag_of(&self.key)
    }

    fn update(&self, f: impl FnOnce(&mut BTreeMap<String, u32>)) {
        update(&self.file, f);
    }

    /// The device id saved for this slot.
    pub fn saved(&self) -> Option<u32> {
        let _g = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        load(&self.file).get(&self.key).copied()
    }

    pub fn record(&self, dev_id: u32) {
        self.update(|m| {
            m.insert(self.key.clone(), dev_id);
        });
    }

    pub fn forget(&self) {
        self.update(|m| {
            m.remove(&self.key);
        });
    }
}

fn load(file: &Path) -> BTreeMap<String, u32> {
    std::fs::read(file)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn update(file: &Path, f: impl FnOnce(&mut BTreeMap<String, u32>)) {
    let _g = FILE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut map = load(file);
    f(&mut map);
    // Write-then-rename: a daemon killed mid-write leaves the old file.
    let tmp = file.with_extension("json.tmp");
    let res = serde_json::to_vec_pretty(&map)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, file));
    if let Err(e) = res {
        tracing::warn!(file = %file.display(), "loopback: saving the device ids: {e}");
    }
}

/// Delete the disks a previous rtarget left that no slot of the running
/// config claims (a target or LUN removed while rtarget was down): left
/// alone, a quiesced disk would hold its I/O forever. Entries whose disk
/// is gone, or is no longer ours, are dropped from the file.
pub fn reap(state_dir: &Path, claimed: &dyn Fn(&str) -> bool) {
    let file = state_dir.join(STATE_FILE);
    if !file.exists() {
        return; // never used loopback disks: no file made
    }
    update(&file, |map| {
        map.retain(|key, &mut id| {
            if claimed(key) {
                return true;
            }
            if !Path::new(&format!("/dev/ublkc{id}")).exists() {
                return false;
            }
            let Ok(ctrl) = UblkCtrl::new_simple(id as i32) else {
                return false;
            };
            let info = ctrl.dev_info();
            if info.ublksrv_flags == tag_of(key) && !alive(info.ublksrv_pid) {
                tracing::info!(dev = id, slot = %key, "loopback: deleting a disk no target claims");
                let _ = ctrl.kill_dev();
                if let Err(e) = ctrl.del_dev() {
                    tracing::warn!(dev = id, "loopback: deleting an unclaimed disk: {e}");
                }
            }
            false
        });
    });
}

/// What the old disk looks like, for the new server's queues.
#[derive(Debug, Clone, Copy)]
pub struct Recovered {
    pub dev_id: u32,
    pub nr_queues: u16,
    pub depth: u16,
    pub io_buf_bytes: u32,
}

/// Whether process `pid` still runs.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence and permission.
    pid > 0 && (unsafe { libc::kill(pid, 0) } == 0 || errno() == libc::EPERM)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Start recovering disk `dev_id` if it is this slot's (tag), its server
/// is gone and it was added for recovery, with `size` bytes of
/// `1 << bs_shift`-byte blocks as the LU has now. `None`: add a new disk
/// (a disk of ours that cannot be recovered is deleted first).
pub fn begin(slot: &Slot, size: u64, bs_shift: u8) -> Option<Recovered> {
    let dev_id = slot.saved()?;
    if !Path::new(&format!("/dev/ublkc{dev_id}")).exists() {
        return None;
    }
    let probe = UblkCtrl::new_simple(dev_id as i32).ok()?;
    let info = probe.dev_info();
    if info.ublksrv_flags != slot.tag() {
        tracing::info!(dev = dev_id, slot = %slot.key, "loopback: saved disk id now belongs to another device");
        return None;
    }
    if info.ublksrv_pid != 0
        && info.ublksrv_pid != std::process::id() as i32
        && alive(info.ublksrv_pid)
    {
        tracing::warn!(
            dev = dev_id,
            pid = info.ublksrv_pid,
            "loopback: disk still served by another process"
        );
        return None;
    }
    let mut params = sys::ublk_params::default();
    let same_shape = probe.get_params(&mut params).is_ok()
        && params.basic.logical_bs_shift == bs_shift
        && params.basic.dev_sectors == size >> 9;
    let recoverable = info.flags & u64::from(sys::UBLK_F_USER_RECOVERY) != 0
        && info.state != sys::UBLK_S_DEV_DEAD as u16;
    let res = if !recoverable || !same_shape {
        Err(format!(
            "not recoverable (state {}, flags {:#x}, same geometry: {same_shape})",
            info.state, info.flags
        ))
    } else {
        start_user_recover(&probe)
    };
    match res {
        Ok(()) => Some(Recovered {
            dev_id,
            nr_queues: info.nr_hw_queues,
            depth: info.queue_depth,
            io_buf_bytes: info.max_io_buf_bytes,
        }),
        Err(e) => {
            tracing::warn!(dev = dev_id, slot = %slot.key, "loopback: old disk {e}: deleting it, adding a new one");
            if let Err(e) = probe.kill_dev().and_then(|_| probe.del_dev()) {
                tracing::warn!(dev = dev_id, "loopback: deleting the old disk: {e}");
            }
            None
        }
    }
}

/// START_USER_RECOVERY, waiting while the kernel still tears down the
/// old server (EBUSY). libublk's own wait never sees EBUSY: its command
/// helper turns the errno into an error first.
fn start_user_recover(ctrl: &UblkCtrl) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        match ctrl.start_user_recover() {
            Ok(_) => return Ok(()),
            Err(UblkError::OtherError(e))
                if e == -libc::EBUSY && t0.elapsed() < QUIESCE_TIMEOUT =>
            {
                // Nothing to wait on: the kernel offers no event for it.
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("START_USER_RECOVERY: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags are stable across builds (a restarted rtarget of another
    /// version still finds its disks) and differ per slot.
    #[test]
    fn tags_are_fnv1a() {
        assert_eq!(tag_of(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(tag_of("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(tag_of("naa.1/lun0"), tag_of("naa.1/lun1"));
    }

    #[test]
    fn slots_record_and_forget_device_ids() {
        let dir = tempfile::tempdir().unwrap();
        let a = Slot::new(dir.path(), "naa.5001405c0ffee0a1", 0);
        let b = Slot::new(dir.path(), "naa.5001405c0ffee0a1", 1);
        assert_eq!(a.saved(), None);
        a.record(3);
        b.record(7);
        assert_eq!((a.saved(), b.saved()), (Some(3), Some(7)));
        a.forget();
        assert_eq!((a.saved(), b.saved()), (None, Some(7)));
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(text.contains("\"naa.5001405c0ffee0a1/lun1\": 7"), "{text}");
        // Unclaimed entries whose disks do not exist are dropped.
        reap(dir.path(), &|k| k == b.key);
        assert_eq!((a.saved(), b.saved()), (None, Some(7)));
        a.record(4);
        reap(dir.path(), &|k| k == b.key);
        assert_eq!(
            (a.saved(), b.saved()),
            (None, Some(7)),
            "/dev/ublkc4 absent here"
        );
        // A broken file is an empty one (and gets rewritten).
        std::fs::write(dir.path().join(STATE_FILE), "{").unwrap();
        assert_eq!(b.saved(), None);
        b.record(2);
        assert_eq!(b.saved(), Some(2));
    }
}
