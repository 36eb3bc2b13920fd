//! The vhost-user backend of one guest connection: feature negotiation
//! (rust-vmm's `vhost-user-backend` speaks the protocol), which worker
//! thread serves which virtqueue, and the virtqueue loops. The request,
//! control and event queue contents are handled in `queue`.
//!
//! Virtqueues (VIRTIO 1.x 5.6.2): 0 = control, 1 = event, 2.. = requests.
//! Thread 0 serves control + event (and management's event kicks); the
//! request queues are spread round-robin over `workers` threads, each of
//! which replies on the queue the request came from. Commands that run in
//! the engine (pool LUs, ORDERED, long ones) are answered by thread 0,
//! woken by the engine's completion eventfd, on their own virtqueue.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::nexus::GuestNexus;
use crate::queue;
use crate::virtio::{VIRTIO_SCSI_F_CHANGE, VIRTIO_SCSI_F_HOTPLUG};
use crate::TargetShared;

pub(crate) type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

pub(crate) const CONTROL_QUEUE: usize = 0;
pub(crate) const EVENT_QUEUE: usize = 1;
pub(crate) const FIRST_REQUEST_QUEUE: usize = 2;
/// Ring size we accept (QEMU's vhost-user-scsi uses 128 by default).
pub(crate) const MAX_QUEUE_SIZE: usize = 1024;
/// epoll token of the management-side event kick (past the queue tokens).
pub(crate) fn event_kick_token(num_queues: usize) -> u64 {
    num_queues as u64 + 1
}

/// epoll token of the engine's completion eventfd (thread 0 reaps
/// answers of commands that ran off the virtqueue threads).
pub(crate) fn completion_token(num_queues: usize) -> u64 {
    num_queues as u64 + 2
}

/// The virtio features offered: VERSION_1, indirect descriptors, EVENT_IDX,
/// hotplug and parameter-change events, and vhost-user protocol features.
pub fn offered_features() -> u64 {
    (1u64 << VIRTIO_F_VERSION_1)
        | (1u64 << VIRTIO_RING_F_INDIRECT_DESC)
        | (1u64 << VIRTIO_RING_F_EVENT_IDX)
        | (1u64 << VIRTIO_SCSI_F_HOTPLUG)
        | (1u64 << VIRTIO_SCSI_F_CHANGE)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// One guest connection's backend (cloned into each worker thread).
pub(crate) struct ScsiBackend {
    pub(crate) target: Arc<TargetShared>,
    pub(crate) nexus: Arc<GuestNexus>,
    mem: RwLock<Option<Mem>>,
    event_idx: AtomicBool,
    acked: AtomicU64,
    /// Per worker thread, the bit mask of the virtqueues it serves.
    masks: Vec<u64>,
    num_queues: usize,
    /// Queues that answered something since the guest connected (see
    /// [`resignal_later`]).
    started: std::sync::Mutex<std::collections::HashSet<usize>>,
}

impl ScsiBackend {
    pub(crate) fn new(
        target: Arc<TargetShared>,
        nexus: Arc<GuestNexus>,
        request_queues: usize,
        workers: usize,
    ) -> ScsiBackend {
        let request_queues = request_queues.clamp(1, crate::MAX_REQUEST_QUEUES);
        let workers = workers.clamp(1, request_queues);
        let mut masks = vec![(1u64 << CONTROL_QUEUE) | (1u64 << EVENT_QUEUE)];
        masks.extend(std::iter::repeat_n(0u64, workers));
        for q in 0..request_queues {
            masks[1 + q % workers] |= 1u64 << (FIRST_REQUEST_QUEUE + q);
        }
        ScsiBackend {
            target,
            nexus,
            mem: RwLock::new(None),
            event_idx: AtomicBool::new(false),
            acked: AtomicU64::new(0),
            masks,
            num_queues: FIRST_REQUEST_QUEUE + request_queues,
            started: Default::default(),
        }
    }

    /// The global virtqueue index of thread-local event `local` of `thread`.
    fn queue_index(&self, thread: usize, local: u16) -> Option<usize> {
        let mask = *self.masks.get(thread)?;
        (0..64)
            .filter(|i| mask & (1u64 << i) != 0)
            .nth(usize::from(local))
    }

    /// Run `work` over `vring` until it stays empty; with EVENT_IDX the
    /// guest's kicks are off while we drain, and a race with a late kick is
    /// closed by re-checking after enabling them again.
    fn drain(
        &self,
        vring: &VringRwLock,
        work: impl Fn(&Mem, &VringRwLock) -> io::Result<()>,
    ) -> io::Result<()> {
        self.drain_while(vring, work, || true)
    }

    /// Deliver pending events into the event queue's buffers.
    fn drain_events(&self, vring: &VringRwLock) -> io::Result<()> {
        let events = |mem: &Mem, v: &VringRwLock| queue::deliver_events(self, mem, v);
        self.drain_while(vring, events, || self.target.has_events())
    }

    /// [`Self::drain`], re-running `work` for buffers that came meanwhile
    /// only while `wanted` says they will be used: the event queue's
    /// buffers wait for events, so buffers alone must not keep the thread
    /// looping (it would spin, and never reap the engine's answers).
    fn drain_while(
        &self,
        vring: &VringRwLock,
        work: impl Fn(&Mem, &VringRwLock) -> io::Result<()>,
        wanted: impl Fn() -> bool,
    ) -> io::Result<()> {
        let Some(mem) = self.mem.read().unwrap().clone() else {
            return Ok(());
        };
        if !self.event_idx.load(Ordering::Acquire) {
            return work(&mem, vring);
        }
        loop {
            vring.disable_notification().map_err(io::Error::other)?;
            work(&mem, vring)?;
            // Re-enabling also tells the guest to kick for its next buffer.
            if !vring.enable_notification().map_err(io::Error::other)? || !wanted() {
                return Ok(());
            }
        }
    }
}

/// After a reconnect QEMU rewinds each ring to its used index, so the
/// requests the old backend had taken but not answered come again and are
/// answered as soon as the ring starts, while QEMU is still starting the
/// device: it drops that used-buffer notification, and the guest would
/// wait for those requests forever. So the first batch a ring answers is
/// notified once more a little later (a spurious notification is harmless
/// to virtio drivers: they find nothing new in the used ring).
fn resignal_later(vring: VringRwLock, index: usize) {
    let _ = std::thread::Builder::new()
        .name("vhost resignal".into())
        .spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(500));
            tracing::debug!(queue = index, "used-buffer notification repeated");
            let _ = vring.signal_used_queue();
        });
}

impl VhostUserBackend for ScsiBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        self.num_queues
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        offered_features()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // MQ: QEMU asks GET_QUEUE_NUM and refuses a backend offering fewer
        // queues than its num_queues + 2.
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK
    }

    fn set_event_idx(&self, enabled: bool) {
        tracing::debug!(enabled, "EVENT_IDX");
        self.event_idx.store(enabled, Ordering::Release);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let space = crate::virtio::config_space((self.num_queues - FIRST_REQUEST_QUEUE) as u32);
        let start = (offset as usize).min(space.len());
        let end = (start + size as usize).min(space.len());
        space[start..end].to_vec()
    }

    fn acked_features(&self, features: u64) {
        tracing::debug!(
            features = format_args!("{features:#x}"),
            "features acknowledged"
        );
        self.acked.store(features, Ordering::Release);
    }

    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        tracing::debug!("guest memory table set");
        *self.mem.write().unwrap() = Some(mem);
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        self.masks.clone()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK).ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(io::Error::other(format!("unexpected events {evset:?}")));
        }
        if u64::from(device_event) == completion_token(self.num_queues) {
            self.nexus.reap();
            return Ok(());
        }
        if u64::from(device_event) == event_kick_token(self.num_queues) {
            // Management queued events: deliver them on the event queue.
            self.target.consume_event_kick();
            // Only thread 0 registers the kick; its vrings are [control, event].
            let Some(vring) = vrings.get(EVENT_QUEUE).filter(|_| thread_id == 0) else {
                return Ok(());
            };
            return self.drain_events(vring);
        }
        let Some(index) = self.queue_index(thread_id, device_event) else {
            return Ok(());
        };
        tracing::trace!(thread = thread_id, queue = index, "virtqueue kick");
        let Some(vring) = vrings.get(usize::from(device_event)) else {
            return Ok(());
        };
        let first = self.started.lock().unwrap().insert(index);
        let used_before = vring.queue_used_idx().ok();
        let r = match index {
            CONTROL_QUEUE => self.drain(vring, |mem, v| queue::control(self, mem, v)),
            EVENT_QUEUE => self.drain_events(vring),
            _ => self.drain(vring, |mem, v| queue::requests(self, mem, v, index)),
        };
        if first && vring.queue_used_idx().ok() != used_before {
            resignal_later(vring.clone(), index);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_spread_over_workers() {
        let target = crate::TargetShared::for_tests();
        let nexus = GuestNexus::new(target.nexus_template(1));
        let b = ScsiBackend::new(target, nexus, 4, 2);
        assert_eq!(b.num_queues(), 6);
        assert_eq!(b.queues_per_thread(), vec![0b11, 0b01_0100, 0b10_1000]);
        assert_eq!(b.queue_index(0, 1), Some(EVENT_QUEUE));
        assert_eq!(b.queue_index(1, 1), Some(4));
        assert_eq!(b.queue_index(2, 0), Some(3));
        assert_eq!(b.queue_index(2, 2), None);
        assert!(b.features() & (1 << VIRTIO_RING_F_EVENT_IDX) != 0);
    }
}
