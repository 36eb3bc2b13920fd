//! Per-device SCSI state that is not part of the public contract: cached
//! backstore capabilities, unit attention queues, mode page values and
//! reservations, plus the small derived facts (thin? write protected?) that
//! every handler asks about.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use backstore::Capabilities;

use crate::medium::MediumState;
use crate::reservation::Reservations;
use crate::sanitize::SanitizeState;
use crate::ua::UaState;
use crate::xcopy::CopyResults;
use crate::{Device, DeviceOptions, Lun};

/// See [`Device::io_async_begin`].
pub(crate) struct AsyncIoToken(Arc<Device>);

/// The counters a completion holding the token counts in.
impl AsRef<crate::stats::Counters> for AsyncIoToken {
    fn as_ref(&self) -> &crate::stats::Counters {
        &self.0.state.stats
    }
}

impl Drop for AsyncIoToken {
    fn drop(&mut self) {
        let s = &self.0.state;
        // The lock and the wake-up only when an exclusive holder waits:
        // the data path pays one atomic.
        if s.io_async.fetch_sub(1, Ordering::SeqCst) == 1
            && s.io_async_waiter.load(Ordering::SeqCst)
        {
            let _g = s.io_async_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.io_async_idle.notify_all();
        }
    }
}

/// Largest single transfer (bytes) the core accepts; advertised in the
/// Block Limits VPD page. Bounds the Data-In buffer a command can demand.
pub(crate) const MAX_TRANSFER_BYTES: u64 = 8 << 20;

/// Mode page values that can change at run time (MODE SELECT).
pub(crate) struct ModeState {
    /// Caching page WCE.
    pub wce: AtomicBool,
    /// Control page SWP (software write protect).
    pub swp: AtomicBool,
}

pub(crate) struct DeviceState {
    pub caps: Capabilities,
    pub ua: UaState,
    pub mode: ModeState,
    pub res: Reservations,
    /// Removable medium state (RMB, loaded, PREVENT per nexus).
    pub medium: MediumState,
    /// Orders medium access: commands whose effect must be atomic with
    /// respect to every other command (COMPARE AND WRITE, ORWRITE, WRITE
    /// ATOMIC) hold it exclusively; plain reads and writes hold it shared.
    /// Uncontended, a shared acquire is one compare-and-swap, no syscall.
    pub io_order: RwLock<()>,
    /// Reads and writes of the asynchronous path in flight: they started
    /// under `io_order` shared but cannot hold a guard until they complete
    /// (on another thread), so an exclusive holder waits for this to drop
    /// to zero before it touches the medium.
    pub io_async: AtomicUsize,
    /// An exclusive holder waits for `io_async` to reach zero (on
    /// `io_async_idle`, under `io_async_lock`).
    pub io_async_waiter: AtomicBool,
    pub io_async_lock: Mutex<()>,
    pub io_async_idle: Condvar,
    /// Results of finished EXTENDED COPY commands.
    pub copies: CopyResults,
    /// SANITIZE in progress / failed.
    pub sanitize: SanitizeState,
    /// ALUA target port groups and the access-state gate.
    pub alua: crate::alua::AluaState,
    /// A failed flush: every later SYNCHRONIZE CACHE and FUA write fails
    /// too, whatever the backstore answers (see `rw::flush`). Not cleared
    /// by resets; only re-opening the storage object starts afresh.
    pub flush_fault: backstore::FlushFault,
    /// Monitoring counters (`stats`).
    pub stats: crate::stats::Counters,
}

impl DeviceState {
    pub(crate) fn new(options: &DeviceOptions, caps: Capabilities) -> DeviceState {
        DeviceState {
            caps,
            ua: UaState::default(),
            mode: ModeState {
                wce: AtomicBool::new(options.write_cache),
                swp: AtomicBool::new(false),
            },
            res: Reservations::default(),
            medium: MediumState::default(),
            io_order: RwLock::new(()),
            io_async: AtomicUsize::new(0),
            io_async_waiter: AtomicBool::new(false),
            io_async_lock: Mutex::new(()),
            io_async_idle: Condvar::new(),
            copies: CopyResults::default(),
            sanitize: SanitizeState::default(),
            alua: crate::alua::AluaState::default(),
            flush_fault: backstore::FlushFault::new(),
            stats: {
                // Calibrate the stats clock before the first command.
                crate::stats_clock::warm_up();
                crate::stats::Counters::default()
            },
        }
    }

    /// Back to power-on values (LOGICAL UNIT RESET, target reset).
    pub(crate) fn reset_mode(&self, options: &DeviceOptions) {
        self.mode.wce.store(options.write_cache, Ordering::Relaxed);
        self.mode.swp.store(false, Ordering::Relaxed);
        self.medium.allow_all();
    }
}

impl crate::Device {
    pub(crate) fn block_size(&self) -> u64 {
        u64::from(self.options.block_size.max(1))
    }

    /// Thin provisioning offered (UNMAP, WRITE SAME with UNMAP, LBPME).
    pub(crate) fn thin(&self) -> bool {
        self.options.thin_provisioning
    }

    /// Whether the medium as seen through `lun` refuses writes.
    pub(crate) fn write_protected(&self, lun: &Lun) -> bool {
        lun.write_protect
            || self.options.read_only
            || self.state.caps.read_only
            || self.state.mode.swp.load(Ordering::Relaxed)
    }

    pub(crate) fn wce(&self) -> bool {
        self.state.mode.wce.load(Ordering::Relaxed)
    }

    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT (READ CAPACITY 16). The
    /// "physical block" is the backstore's preferred granularity, or the
    /// 4 KiB page every page-cache backed engine reads and writes in: a
    /// smaller write is a read-modify-write of that page.
    pub(crate) fn lbppb_exponent(&self) -> u8 {
        let bs = self.options.block_size.max(1);
        let opt = self.state.caps.optimal_io_size;
        let physical = if opt.is_power_of_two() && opt >= bs {
            opt
        } else {
            4096
        };
        if physical <= bs || !bs.is_power_of_two() {
            return 0;
        }
        ((physical / bs).trailing_zeros() as u8).min(15)
    }

    /// Present the LU as a removable medium (RMB=1): START STOP UNIT can
    /// then eject and load it, and PREVENT ALLOW MEDIUM REMOVAL matters.
    /// Not part of `DeviceOptions` so existing constructors keep compiling.
    pub fn set_removable(&self, removable: bool) {
        self.state.medium.set_removable(removable);
    }

    /// Shared access to the medium (see `DeviceState::io_order`). Never
    /// take it twice in one thread: a waiting exclusive holder would
    /// deadlock the second shared acquire.
    pub(crate) fn io_shared(&self) -> RwLockReadGuard<'_, ()> {
        self.state
            .io_order
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Exclusive access to the medium, for commands that must be atomic.
    pub(crate) fn io_exclusive(&self) -> RwLockWriteGuard<'_, ()> {
        let g = self
            .state
            .io_order
            .write()
            .unwrap_or_else(|e| e.into_inner());
        // No asynchronous I/O starts while `g` is held (it needs the shared
        // side); wait for those already started. One exclusive holder at a
        // time, so one waiter flag.
        let st = &self.state;
        if st.io_async.load(Ordering::SeqCst) > 0 {
            st.io_async_waiter.store(true, Ordering::SeqCst);
            let mut l = st.io_async_lock.lock().unwrap_or_else(|e| e.into_inner());
            while st.io_async.load(Ordering::SeqCst) > 0 {
                l = st.io_async_idle.wait(l).unwrap_or_else(|e| e.into_inner());
            }
            drop(l);
            st.io_async_waiter.store(false, Ordering::SeqCst);
        }
        g
    }

    /// One read or write of the asynchronous path starts: counted until
    /// the returned token drops (in its completion), as if it held
    /// `io_shared` all along.
    pub(crate) fn io_async_begin(self: &Arc<Self>) -> AsyncIoToken {
        let _order = self.io_shared();
        self.state.io_async.fetch_add(1, Ordering::SeqCst);
        AsyncIoToken(Arc::clone(self))
    }

    /// MAXIMUM ATOMIC TRANSFER LENGTH (Block Limits VPD): WRITE ATOMIC
    /// is one backstore write under the exclusive lock, so any transfer
    /// the LU accepts can be atomic; the 16-bit CDB field caps it.
    pub(crate) fn max_atomic_blocks(&self) -> u32 {
        self.max_transfer_blocks().min(u32::from(u16::MAX))
    }

    /// ATOMIC ALIGNMENT and ATOMIC TRANSFER LENGTH GRANULARITY (Block
    /// Limits VPD): logical blocks per physical block.
    pub(crate) fn atomic_granularity(&self) -> u64 {
        1 << self.lbppb_exponent()
    }

    /// Largest transfer in blocks (Block Limits VPD).
    pub(crate) fn max_transfer_blocks(&self) -> u32 {
        u32::try_from(MAX_TRANSFER_BYTES / self.block_size()).unwrap_or(u32::MAX)
    }
}

/// The last user let go (no LUN exports the device and no command runs on
/// it: those hold the device): what other systems hold for the backstore
/// (an RBD image's header watch and exclusive lock) goes now. LIO frees a
/// device the same way, once its LUNs are gone and their commands drained;
/// a replaced device must not keep the lock its successor waits for.
/// The daemon's stop keeps its devices and closes them itself.
impl Drop for crate::Device {
    fn drop(&mut self) {
        self.backstore.close();
    }
}

#[cfg(test)]
mod tests {
    use backstore::testing::CountsCloses;

    /// The backstore is closed once, when the last holder of the device
    /// drops it, not before.
    #[test]
    fn the_last_holder_dropping_the_device_closes_its_backstore_once() {
        let store = CountsCloses::new(1 << 20);
        let opts = crate::DeviceOptions::new("d", "00000000-0000-4000-8000-000000000000");
        let dev = crate::Device::new(opts, store.clone());
        let lun = crate::Lun {
            id: 0,
            device: dev.clone(),
            write_protect: false,
        };
        drop(dev);
        assert_eq!(store.closes(), 0, "a LUN still holds it");
        drop(lun);
        assert_eq!(store.closes(), 1);
    }
}
