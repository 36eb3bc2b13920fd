//! One ublk block device (/dev/ublkbN) for one LUN, with the `libublk`
//! crate: the control device is added and started here, each hardware
//! queue gets one thread that takes requests from its io_uring and runs
//! them to completion through [`LuPath::serve`] (no hand-off per request:
//! the same run-to-completion rule as the iSCSI connections).

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::io::{BufDescList, UblkDev, UblkIOCtx, UblkQueue};
use libublk::{sys, BufDesc, UblkFlags, UblkIORes};

use crate::lu::{Geometry, LuPath};
use crate::recovery::{self, Slot};
use crate::request::BlockRequest;
use crate::{LoopbackError, QueueConfig};

/// A running ublk device; [`UblkDevice::stop`] (or drop) removes it.
pub struct UblkDevice {
    ctrl: Arc<UblkCtrl>,
    thread: Option<JoinHandle<()>>,
    pub dev_id: u32,
    pub geometry: Geometry,
    /// Where the device id is kept for a restarted daemon to recover.
    slot: Option<Slot>,
    /// Taken over from a previous rtarget rather than added.
    pub recovered: bool,
}

/// How long the kernel may take to bring the disk up (partition scan
/// included; slow under TCG).
const START_TIMEOUT: Duration = Duration::from_secs(60);

impl UblkDevice {
    /// Start the disk of `path`: recover the one `slot` names if a
    /// previous rtarget left it (see [`recovery`]), else add a new one.
    pub fn start(
        path: Arc<LuPath>,
        queues: &QueueConfig,
        slot: Option<Slot>,
    ) -> Result<UblkDevice, LoopbackError> {
        let g = path.probe().map_err(LoopbackError::Probe)?;
        let bs = g.block_size;
        // One request fits one CDB and the core's maximum transfer length.
        let mut io_bytes = queues.max_io_bytes.max(bs);
        if g.max_transfer > 0 {
            io_bytes = io_bytes.min(g.max_transfer.saturating_mul(bs));
        }
        io_bytes -= io_bytes % bs;
        let size = g.blocks * u64::from(bs);
        let old = slot
            .as_ref()
            .and_then(|s| recovery::begin(s, size, bs.trailing_zeros() as u8));
        let builder = UblkCtrlBuilder::default()
            .name("rtarget")
            .ctrl_flags(recovery::ctrl_flags())
            .ctrl_target_flags(slot.as_ref().map_or(0, Slot::tag));
        let built = match old {
            // The old disk's layout: the kernel keeps it.
            Some(r) => builder
                .id(r.dev_id as i32)
                .nr_queues(r.nr_queues)
                .depth(r.depth)
                .io_buf_bytes(r.io_buf_bytes)
                .dev_flags(UblkFlags::UBLK_DEV_F_RECOVER_DEV)
                .build(),
            None => builder
                .id(-1)
                .nr_queues(queues.queues.max(1))
                .depth(queues.depth.max(1))
                .io_buf_bytes(io_bytes)
                .dev_flags(UblkFlags::UBLK_DEV_F_ADD_DEV)
                .build(),
        };
        let ctrl = built.map_err(|e| LoopbackError::Ublk(format!("adding the device: {e}")))?;
        let ctrl = Arc::new(ctrl);
        let dev_id = ctrl.dev_info().dev_id;
        if let Some(s) = &slot {
            s.record(dev_id);
        }
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let runner = ctrl.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ublk{dev_id}"))
            .spawn(move || {
                ensure_ctrl_ring();
                let tgt_init = move |dev: &mut UblkDev| {
                    set_params(dev, &g);
                    Ok(())
                };
                let q_fn = move |qid: u16, dev: &UblkDev| serve_queue(qid, dev, &path, bs);
                let started = tx.clone();
                let on_start = move |_: &UblkCtrl| {
                    let _ = started.send(Ok(()));
                };
                if let Err(e) = runner.run_target(tgt_init, q_fn, on_start) {
                    let _ = tx.send(Err(e.to_string()));
                }
            })
            .map_err(|e| LoopbackError::Ublk(format!("spawning the device thread: {e}")))?;
        let dev = UblkDevice {
            ctrl,
            thread: Some(thread),
            dev_id,
            geometry: g,
            slot,
            recovered: old.is_some(),
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => Ok(dev),
            Ok(Err(e)) => Err(LoopbackError::Ublk(format!(
                "starting /dev/ublkb{dev_id}: {e}"
            ))),
            Err(_) => Err(LoopbackError::Ublk(format!(
                "/dev/ublkb{dev_id} did not start"
            ))),
        }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/ublkb{}", self.dev_id))
    }

    /// Stop the disk: the kernel fails new I/O, requests in flight finish
    /// on their queue threads (they run to completion, nothing waits on
    /// us), the queue threads see the queue go down and exit; dropping the
    /// control device then deletes it.
    pub fn stop(mut self) {
        self.shutdown();
        if let Some(s) = &self.slot {
            s.forget();
        }
    }

    fn shutdown(&mut self) {
        // Also for the control device's own drop, which deletes it.
        ensure_ctrl_ring();
        if let Some(t) = self.thread.take() {
            if let Err(e) = self.ctrl.kill_dev() {
                tracing::warn!(dev = self.dev_id, "ublk: stopping the device: {e}");
            }
            let _ = t.join();
            // DEL_DEV waits until every opener is gone: with a file system
            // still mounted on the disk it would hang the caller. The
            // asynchronous delete (Linux 6.9+) returns at once; on older
            // kernels the wait happens on a thread of its own.
            if let Err(e) = self.ctrl.del_dev_async() {
                tracing::debug!(dev = self.dev_id, "ublk: asynchronous delete: {e}");
                let ctrl = self.ctrl.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("ublk{}-del", self.dev_id))
                    .spawn(move || {
                        ensure_ctrl_ring();
                        if let Err(e) = ctrl.del_dev() {
                            tracing::debug!("ublk: deleting the device: {e}");
                        }
                    });
            }
        }
    }
}

impl Drop for UblkDevice {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// libublk sends control commands on a ring of the calling thread: every
/// thread that starts, stops or drops a device needs one.
fn ensure_ctrl_ring() {
    let r = libublk::ctrl::ublk_init_ctrl_task_ring(|ring| {
        if ring.is_none() {
            *ring = Some(
                io_uring::IoUring::builder()
                    .build(16)
                    .map_err(libublk::UblkError::IOError)?,
            );
        }
        Ok(())
    });
    if let Err(e) = r {
        tracing::warn!("ublk: control ring: {e}");
    }
}

/// The block device's limits from the LU's geometry.
fn set_params(dev: &mut UblkDev, g: &Geometry) {
    let bs_shift = g.block_size.trailing_zeros() as u8;
    let phys_shift = bs_shift + g.lbppb_exponent;
    dev.set_default_params(g.blocks * u64::from(g.block_size));
    let p = &mut dev.tgt.params;
    p.basic.logical_bs_shift = bs_shift;
    p.basic.physical_bs_shift = phys_shift;
    p.basic.io_min_shift = phys_shift;
    p.basic.io_opt_shift = phys_shift;
    let mut attrs = 0;
    if g.write_cache {
        // A volatile cache: the block layer sends flushes and FUA writes,
        // which become SYNCHRONIZE CACHE and WRITE(16) FUA=1.
        attrs |= sys::UBLK_ATTR_VOLATILE_CACHE | sys::UBLK_ATTR_FUA;
    }
    if g.read_only {
        attrs |= sys::UBLK_ATTR_READ_ONLY;
    }
    p.basic.attrs = attrs;
    let to_sectors = |blocks: u64| {
        (blocks.saturating_mul(u64::from(g.block_size)) >> 9).min(u64::from(u32::MAX >> 1)) as u32
    };
    let max_discard = to_sectors(u64::from(g.max_unmap));
    let max_zeroes = if g.read_only {
        0
    } else {
        // WRITE SAME carries one block; its length is limited by the LU.
        let limit = if g.max_write_same > 0 {
            g.max_write_same
        } else {
            u64::from(g.max_transfer)
        };
        to_sectors(limit)
    };
    if max_discard > 0 || max_zeroes > 0 {
        p.types |= sys::UBLK_PARAM_TYPE_DISCARD;
        p.discard = sys::ublk_param_discard {
            discard_granularity: g.block_size << g.lbppb_exponent,
            max_discard_sectors: if g.read_only { 0 } else { max_discard },
            max_write_zeroes_sectors: max_zeroes,
            max_discard_segments: 1,
            ..Default::default()
        };
    }
}

fn serve_queue(qid: u16, dev: &UblkDev, path: &LuPath, block_size: u32) {
    let bufs = Rc::new(dev.alloc_queue_io_bufs());
    let queue = match UblkQueue::new(qid, dev)
        .and_then(|q| q.submit_fetch_commands_unified(BufDescList::Slices(Some(&bufs))))
    {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(qid, "ublk: setting up the queue: {e}");
            return;
        }
    };
    let mut data_in = Vec::new();
    let handler = move |q: &UblkQueue, tag: u16, _: &UblkIOCtx| {
        let iod = q.get_iod(tag);
        let req = BlockRequest {
            op: (iod.op_flags & 0xff) as u8,
            flags: iod.op_flags,
            start_sector: iod.start_sector,
            nr_sectors: iod.nr_sectors,
        };
        let io = &bufs[usize::from(tag)];
        // SAFETY: between fetching a request and committing its result the
        // tag's buffer belongs to this thread alone (the kernel copies in
        // before the fetch completes and out after the commit), and no
        // other Rust reference to its bytes exists while this one lives.
        let buf = unsafe { std::slice::from_raw_parts_mut(io.as_mut_ptr(), io.len()) };
        let res = path.serve(&req, block_size, buf, &mut data_in);
        if let Err(e) = q.complete_io_cmd_unified(
            tag,
            BufDesc::Slice(io.as_slice()),
            Ok(UblkIORes::Result(res)),
        ) {
            tracing::warn!(tag, "ublk: completing a request: {e}");
        }
    };
    queue.wait_and_handle_io(handler);
}
