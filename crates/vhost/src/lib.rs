//! vhost-user-scsi fabric: rtarget's LUNs as a virtio-scsi controller
//! (VIRTIO 1.x device type 8) in a QEMU/KVM guest, over a vhost-user unix
//! socket. rust-vmm's `vhost-user-backend` speaks the vhost-user protocol
//! and `virtio-queue` walks the rings; this crate is the SCSI part.
//!
//! - `virtio`: the virtio-scsi wire formats and LUN addressing.
//! - `backend`: one guest connection: features, queue -> thread layout.
//! - `queue`: request / control / event queue contents.
//! - `nexus`: THE seam to target-core (execute, TMF, nexus end).
//! - `server`: the socket, one guest at a time, start/stop.
//!
//! One vhost target (a WWN with its TPG) is one socket and, while a guest
//! is attached, one I_T nexus named by the TPG's `nexus` WWN. The guest
//! addresses it as virtio target `target_id` (LIO's tcm_vhost uses the TPG
//! tag the same way).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use target_core::{LunTable, Nexus};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

mod backend;
mod chain;
pub mod nexus;
mod queue;
mod server;
pub mod virtio;

pub use backend::offered_features;
pub use server::VhostServer;

use nexus::GuestNexus;
use virtio::Event;

/// Request queues a backend offers at most: the queue-to-thread masks of
/// `vhost-user-backend` are 64 bits, two of them control and event. QEMU's
/// `num_queues` (default: the guest's vCPUs) must not exceed it.
pub const MAX_REQUEST_QUEUES: usize = 62;

/// How one vhost target is served.
#[derive(Debug, Clone)]
pub struct VhostConfig {
    /// The vhost-user socket (created mode 0600, removed on stop).
    pub socket: PathBuf,
    /// The target's WWN (`naa.<16 hex>`).
    pub wwn: String,
    /// The TPG's nexus WWN: the guest's initiator port name.
    pub nexus_wwn: String,
    pub tpg_tag: u16,
    pub relative_port_id: u16,
    /// virtio target number the guest addresses (byte 1 of the LUN field).
    pub target_id: u8,
    /// Request queues offered (GET_QUEUE_NUM answers this + 2); must be at
    /// least QEMU's `num_queues` (default = guest vCPUs).
    pub request_queues: usize,
    /// Worker threads for the request queues (control + event have one).
    pub workers: usize,
}

impl VhostConfig {
    pub fn new(socket: impl Into<PathBuf>, wwn: &str, nexus_wwn: &str) -> VhostConfig {
        VhostConfig {
            socket: socket.into(),
            wwn: wwn.to_string(),
            nexus_wwn: nexus_wwn.to_string(),
            tpg_tag: 1,
            relative_port_id: 1,
            target_id: 0,
            request_queues: MAX_REQUEST_QUEUES,
            workers: 2,
        }
    }
}

/// Nexus ids of vhost guests: a range of their own, so they never meet the
/// iSCSI fabric's ids (which count up from 1) on an LU both export.
/// The fabric-neutral engine will hand these out for every fabric.
static NEXUS_IDS: AtomicU64 = AtomicU64::new(1 << 48);

/// Pending events for the event queue.
#[derive(Default)]
struct Events {
    queue: VecDeque<Event>,
    /// Some were dropped: the next one delivered says so.
    missed: bool,
}

/// Events kept while the guest posts no buffers; past this the oldest go
/// and the guest is told it missed some (it then rescans everything).
const MAX_PENDING_EVENTS: usize = 64;

/// State of one vhost target shared by its server and its guest's threads.
pub struct TargetShared {
    config: VhostConfig,
    pub(crate) target_id: u8,
    luns: RwLock<Arc<LunTable>>,
    events: Mutex<Events>,
    /// Wakes thread 0 to deliver events queued by management.
    kick: EventFd,
    guest: Mutex<Option<Arc<GuestNexus>>>,
}

impl TargetShared {
    pub(crate) fn new(config: VhostConfig, luns: LunTable) -> std::io::Result<Arc<TargetShared>> {
        Ok(Arc::new(TargetShared {
            target_id: config.target_id,
            config,
            luns: RwLock::new(Arc::new(luns)),
            events: Mutex::default(),
            kick: EventFd::new(EFD_NONBLOCK)?,
            guest: Mutex::new(None),
        }))
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Arc<TargetShared> {
        TargetShared::new(
            VhostConfig::new(
                "/nonexistent",
                "naa.5001405000000001",
                "naa.5001405000000002",
            ),
            LunTable::default(),
        )
        .unwrap()
    }

    pub fn config(&self) -> &VhostConfig {
        &self.config
    }

    /// The LUN table commands run against now.
    pub(crate) fn luns(&self) -> Arc<LunTable> {
        Arc::clone(&self.luns.read().unwrap())
    }

    /// The I_T nexus of a new guest connection.
    pub(crate) fn nexus_template(&self, id: u64) -> Nexus {
        Nexus {
            id,
            initiator_port: self.config.nexus_wwn.clone(),
            target_port: format!("{},t,0x{:04x}", self.config.wwn, self.config.tpg_tag),
            relative_port_id: self.config.relative_port_id,
            tpg_tag: self.config.tpg_tag,
        }
    }

    pub(crate) fn new_nexus(&self) -> Arc<GuestNexus> {
        GuestNexus::new(self.nexus_template(NEXUS_IDS.fetch_add(1, Ordering::Relaxed)))
    }

    pub(crate) fn set_guest(&self, g: Option<Arc<GuestNexus>>) {
        *self.guest.lock().unwrap() = g;
    }

    /// The attached guest's initiator port, if one is attached.
    pub fn guest(&self) -> Option<String> {
        self.guest
            .lock()
            .unwrap()
            .as_ref()
            .map(|g| g.nexus().initiator_port.clone())
    }

    /// Install a new LUN table (management added, removed or remapped
    /// LUNs). An attached guest gets TRANSPORT_RESET RESCAN / REMOVED
    /// events per LUN (hotplug) and REPORTED LUNS DATA HAS CHANGED; LUs it
    /// no longer sees forget its nexus.
    pub fn set_luns(&self, table: LunTable) {
        let new = Arc::new(table);
        let old = std::mem::replace(&mut *self.luns.write().unwrap(), Arc::clone(&new));
        let guest = self.guest.lock().unwrap().clone();
        let Some(guest) = guest else { return };
        let gone = LunTable {
            luns: old
                .luns
                .iter()
                .filter(|o| !new.luns.iter().any(|n| Arc::ptr_eq(&n.device, &o.device)))
                .cloned()
                .collect(),
        };
        if !gone.luns.is_empty() {
            guest.lus_removed(&gone);
        }
        guest.luns_changed(&new);
        let t = self.target_id;
        let mut evs = Vec::new();
        for o in &old.luns {
            match new.find(o.id) {
                Some(n) if Arc::ptr_eq(&n.device, &o.device) => {}
                // Remapped: remove then rescan the same LUN.
                Some(_) => evs.extend([reset_event(t, o.id, true), reset_event(t, o.id, false)]),
                None => evs.push(reset_event(t, o.id, true)),
            }
        }
        for n in &new.luns {
            if old.find(n.id).is_none() {
                evs.push(reset_event(t, n.id, false));
            }
        }
        self.push_events(evs);
    }

    /// LUN `lun` changed capacity: PARAM_CHANGE with CAPACITY DATA HAS
    /// CHANGED (2A/09), which makes Linux revalidate the disk's size. (The
    /// unit attention itself is queued by `Device::resize`.)
    pub fn lun_resized(&self, lun: u64) {
        if self.guest.lock().unwrap().is_none() {
            return;
        }
        self.push_events([Event {
            event: virtio::VIRTIO_SCSI_T_PARAM_CHANGE,
            lun: virtio::event_lun(self.target_id, lun),
            reason: 0x2a | (0x09 << 8),
        }]);
    }

    fn push_events(&self, evs: impl IntoIterator<Item = Event>) {
        {
            let mut e = self.events.lock().unwrap();
            for ev in evs {
                if e.queue.len() >= MAX_PENDING_EVENTS {
                    e.queue.pop_front();
                    e.missed = true;
                }
                e.queue.push_back(ev);
            }
        }
        let _ = self.kick.write(1);
    }

    /// The next event to deliver (with the missed flag folded in).
    pub(crate) fn peek_event(&self) -> Option<Event> {
        let e = self.events.lock().unwrap();
        let mut ev = *e.queue.front()?;
        if e.missed {
            ev.event |= virtio::VIRTIO_SCSI_T_EVENTS_MISSED;
        }
        Some(ev)
    }

    /// Events wait for the guest's buffers.
    pub(crate) fn has_events(&self) -> bool {
        !self.events.lock().unwrap().queue.is_empty()
    }

    pub(crate) fn pop_event(&self) {
        let mut e = self.events.lock().unwrap();
        e.queue.pop_front();
        e.missed = false;
    }

    pub(crate) fn consume_event_kick(&self) {
        let _ = self.kick.read();
    }

    pub(crate) fn kick_fd(&self) -> &EventFd {
        &self.kick
    }

    /// A new guest starts with no stale events from the last one.
    pub(crate) fn clear_events(&self) {
        *self.events.lock().unwrap() = Events::default();
    }
}

fn reset_event(target: u8, lun: u64, removed: bool) -> Event {
    Event {
        event: virtio::VIRTIO_SCSI_T_TRANSPORT_RESET,
        lun: virtio::event_lun(target, lun),
        reason: if removed {
            virtio::VIRTIO_SCSI_EVT_RESET_REMOVED
        } else {
            virtio::VIRTIO_SCSI_EVT_RESET_RESCAN
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events wait for buffers up to a limit; past it the oldest go and
    /// the next one delivered carries VIRTIO_SCSI_T_EVENTS_MISSED, once.
    #[test]
    fn missed_events_are_flagged() {
        let t = TargetShared::for_tests();
        t.push_events((0..MAX_PENDING_EVENTS as u64 + 2).map(|l| reset_event(0, l, false)));
        let first = t.peek_event().unwrap();
        assert_eq!(
            first.event,
            virtio::VIRTIO_SCSI_T_TRANSPORT_RESET | virtio::VIRTIO_SCSI_T_EVENTS_MISSED
        );
        assert_eq!(first.lun, virtio::event_lun(0, 2), "the two oldest went");
        t.pop_event();
        let next = t.peek_event().unwrap();
        assert_eq!(next.event, virtio::VIRTIO_SCSI_T_TRANSPORT_RESET);
        t.clear_events();
        assert!(t.peek_event().is_none());
    }
}
