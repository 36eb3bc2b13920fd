//! Per-device SCSI state that is not part of the public contract: cached
//! backstore capabilities, unit attention queues, mode page values and
//! reservations, plus the small derived facts (thin? write protected?) that
//! every handler asks about.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use backstore::Capabilities;

use crate::reservation::Reservations;
use crate::ua::UaState;
use crate::{DeviceOptions, Lun};

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
    /// PREVENT ALLOW MEDIUM REMOVAL state (informational on a fixed LU).
    pub prevent: AtomicBool,
    /// Serializes read-modify-write commands (COMPARE AND WRITE, ORWRITE)
    /// against each other so their read and write are atomic together.
    pub rmw_lock: Mutex<()>,
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
            prevent: AtomicBool::new(false),
            rmw_lock: Mutex::new(()),
        }
    }

    /// Back to power-on values (LOGICAL UNIT RESET, target reset).
    pub(crate) fn reset_mode(&self, options: &DeviceOptions) {
        self.mode.wce.store(options.write_cache, Ordering::Relaxed);
        self.mode.swp.store(false, Ordering::Relaxed);
        self.prevent.store(false, Ordering::Relaxed);
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

    /// Largest transfer in blocks (Block Limits VPD).
    pub(crate) fn max_transfer_blocks(&self) -> u32 {
        u32::try_from(MAX_TRANSFER_BYTES / self.block_size()).unwrap_or(u32::MAX)
    }
}
