//! What travels on the virtqueues: SCSI commands on the request queues,
//! TMF and AN requests on the control queue, events on the event queue.
//! Every chain is answered on the queue it came from; a chain too short
//! for its headers is returned unused (0 bytes) rather than guessed at.

use std::cell::RefCell;
use std::io::{self, Read, Write};

use backstore::iov::Keep;
use scsi::sense::{Asc, Sense, SenseKey};
use target_core::engine::SgBufs;
use target_core::{Outcome, SgOutcome, Status, TaskAttr};
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::GuestAddressSpace;

use crate::backend::{Mem, ScsiBackend};
use crate::chain::{self, ChainBufs};
use crate::nexus::{Refused, Respond, Task, Tmf, TmfAnswer};
use crate::virtio::*;

/// SAM-5 5.9 (not in the scsi crate's table yet).
const OVERLAPPED_COMMANDS_ATTEMPTED: Asc = Asc(0x4e, 0x00);

/// The guest memory as one request sees it (an `Arc` of the mapping).
type Guard = <Mem as GuestAddressSpace>::T;
pub(crate) type Chain = DescriptorChain<Guard>;

/// Pop every available chain and hand it to `f`, which returns the bytes it
/// wrote (`None`: answered later, by [`Reply`]); then notify the guest
/// once for the whole batch, if it wants to be (with EVENT_IDX the guest
/// says when; without it, one notification per batch instead of one per
/// answer saves a syscall and a wake-up each).
fn each_chain(
    mem: &Mem,
    vring: &VringRwLock,
    mut f: impl FnMut(&Chain) -> io::Result<Option<u32>>,
) -> io::Result<()> {
    let mut answered = false;
    loop {
        let chain = vring
            .get_mut()
            .get_queue_mut()
            .pop_descriptor_chain(mem.memory());
        let Some(chain) = chain else { break };
        let len = match f(&chain) {
            Ok(Some(len)) => len,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "malformed virtqueue request");
                0
            }
        };
        // Answer as we go: the guest can reuse the slot at once.
        vring
            .add_used(chain.head_index(), len)
            .map_err(io::Error::other)?;
        answered = true;
    }
    if answered {
        notify(vring)?;
    }
    Ok(())
}

/// Tell the guest about used buffers, if it wants to be told now.
fn notify(vring: &VringRwLock) -> io::Result<()> {
    if vring.needs_notification().map_err(io::Error::other)? {
        vring.signal_used_queue()?;
    }
    Ok(())
}

thread_local! {
    /// Virtqueues given answers by [`Reply::respond`] on this thread and
    /// not notified yet (by queue index): [`Reply::batch_done`] does.
    static UNNOTIFIED: RefCell<Vec<(usize, VringRwLock)>> = const { RefCell::new(Vec::new()) };
}

/// A command the engine answers later: where its answer goes (the chain,
/// on the virtqueue it came from) and what its residual needs.
pub struct Reply {
    vring: VringRwLock,
    /// The virtqueue's index (batches notifications per queue).
    queue: usize,
    chain: Chain,
    /// Guest Data-In bytes (after the response header).
    room: usize,
    /// Data-Out bytes the guest sent.
    sent: usize,
    /// Data-Out bytes the CDB asks for.
    wanted: u64,
}

impl Respond for Reply {
    fn respond(self, out: &Outcome, data_in: usize, aborted: bool) {
        let head = self.chain.head_index();
        let r = (|| {
            let bufs = ChainBufs::new(self.chain.memory(), &self.chain)?;
            let (resp, len) = if aborted {
                let r = CmdResp::response(VIRTIO_SCSI_S_ABORTED).to_bytes();
                (r, CMD_RESP_LEN as u32)
            } else {
                let n = data_in.min(self.room);
                answer(out, n, self.room, self.sent, self.wanted)
            };
            chain::write(&bufs.writable, &resp);
            Ok(len)
        })();
        let len = r.unwrap_or_else(|e: io::Error| {
            tracing::warn!(error = %e, "cannot write a command's answer");
            0
        });
        if let Err(e) = self.vring.add_used(head, len) {
            tracing::warn!(error = %e, "cannot return a chain");
            return;
        }
        UNNOTIFIED.with(|u| {
            let mut u = u.borrow_mut();
            if !u.iter().any(|(q, _)| *q == self.queue) {
                u.push((self.queue, self.vring));
            }
        });
    }

    fn batch_done() {
        let queues = UNNOTIFIED.with(|u| std::mem::take(&mut *u.borrow_mut()));
        for (_, vring) in queues {
            if let Err(e) = notify(&vring) {
                tracing::warn!(error = %e, "cannot notify the guest");
            }
        }
    }
}

/// CDB length from its group code (SPC-4 4.2.5.1); the variable-length
/// group keeps the whole field.
fn cdb_len(cdb: &[u8; CDB_SIZE]) -> usize {
    match cdb[0] >> 5 {
        0 => 6,
        1 | 2 => 10,
        4 => 16,
        5 => 12,
        _ if cdb[0] == 0x7f => (8 + usize::from(cdb[7])).min(CDB_SIZE),
        _ => 16,
    }
}

fn task_attr(a: u8) -> TaskAttr {
    match u32::from(a) {
        VIRTIO_SCSI_S_ORDERED => TaskAttr::Ordered,
        VIRTIO_SCSI_S_HEAD => TaskAttr::HeadOfQueue,
        VIRTIO_SCSI_S_ACA => TaskAttr::Aca,
        _ => TaskAttr::Simple,
    }
}

/// The request queues: one SCSI command per chain.
pub(crate) fn requests(
    b: &ScsiBackend,
    mem: &Mem,
    vring: &VringRwLock,
    queue: usize,
) -> io::Result<()> {
    let guard = mem.memory();
    each_chain(mem, vring, |chain| command(b, &guard, vring, queue, chain))
}

fn command(
    b: &ScsiBackend,
    mem: &Guard,
    vring: &VringRwLock,
    queue: usize,
    chain: &Chain,
) -> io::Result<Option<u32>> {
    let c = ChainBufs::new(mem, chain)?;
    if chain::len(&c.readable) < CMD_REQ_LEN || chain::len(&c.writable) < CMD_RESP_LEN {
        return Err(io::Error::other("request or response header short"));
    }
    let mut hdr = [0u8; CMD_REQ_LEN];
    chain::read(&c.readable, &mut hdr);
    let req = CmdReq::parse(&hdr);
    let addr = decode_lun(&req.lun).filter(|a| a.target == b.target.target_id);
    let Some(addr) = addr else {
        chain::write(
            &c.writable,
            &CmdResp::response(VIRTIO_SCSI_S_BAD_TARGET).to_bytes(),
        );
        return Ok(Some(CMD_RESP_LEN as u32));
    };
    // The guest's data buffers, lent to the core without a copy: the
    // device-readable bytes after the request header (Data-Out) and the
    // device-writable bytes after the response header (Data-In).
    let keep: Keep = mem.clone().into_inner();
    let bufs = SgBufs {
        data_out: chain::lend(&c.readable, CMD_REQ_LEN, &keep),
        data_in: chain::lend(&c.writable, CMD_RESP_LEN, &keep),
    };
    let (sent, room) = (bufs.data_out.len(), bufs.data_in.len());
    // Per command, so a LUN removed meanwhile is never served from a
    // stale table (`GuestNexus::lus_removed` waits only for commands
    // already running).
    let luns = b.target.luns();
    let cdb = &req.cdb[..cdb_len(&req.cdb)];
    tracing::trace!(
        tag = req.id,
        lun = addr.lun,
        op = cdb[0],
        sent,
        room,
        "command"
    );
    let wanted = if sent > 0 {
        b.nexus
            .data_out_len(&luns, addr.lun, cdb)
            .unwrap_or(sent as u64)
    } else {
        0
    };
    let task = Task {
        tag: req.id,
        lun: addr.lun,
        cdb,
        attr: task_attr(req.task_attr),
        bufs,
        expected_len: if sent > 0 { sent as u32 } else { room as u32 },
    };
    let reply = || Reply {
        vring: vring.clone(),
        queue,
        chain: chain.clone(),
        room,
        sent,
        wanted,
    };
    let done = match b.nexus.execute(&luns, task, reply) {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(None),
        Err(Refused::Overlapped) => SgOutcome {
            out: Outcome {
                status: Status::CheckCondition,
                sense: Some(
                    Sense::new(SenseKey::AbortedCommand, OVERLAPPED_COMMANDS_ATTEMPTED)
                        .to_fixed()
                        .to_vec(),
                ),
            },
            data_in: 0,
        },
    };
    let n = done.data_in.min(room);
    let (resp, len) = answer(&done.out, n, room, sent, wanted);
    chain::write(&c.writable, &resp);
    Ok(Some(len))
}

/// A command's response header (its `n` bytes of Data-In are in the
/// guest's buffers already) and the bytes the chain returns in all.
fn answer(
    outcome: &Outcome,
    n: usize,
    room: usize,
    sent: usize,
    wanted: u64,
) -> ([u8; CMD_RESP_LEN], u32) {
    let resid = if sent > 0 {
        (sent as u64).saturating_sub(wanted) as u32
    } else {
        (room - n) as u32
    };
    let mut resp = CmdResp::response(VIRTIO_SCSI_S_OK);
    resp.status = outcome.status as u8;
    resp.resid = resid;
    if let Some(s) = &outcome.sense {
        let k = s.len().min(SENSE_SIZE);
        resp.sense[..k].copy_from_slice(&s[..k]);
        resp.sense_len = k as u32;
    }
    (resp.to_bytes(), (CMD_RESP_LEN + n) as u32)
}

/// The control queue: TMFs through the nexus, AN answered as QEMU does
/// (no asynchronous notification events supported: event_actual 0).
pub(crate) fn control(b: &ScsiBackend, mem: &Mem, vring: &VringRwLock) -> io::Result<()> {
    let guard = mem.memory();
    each_chain(mem, vring, |chain| {
        let mut r = chain.clone().reader(&*guard).map_err(io::Error::other)?;
        let mut w = chain.clone().writer(&*guard).map_err(io::Error::other)?;
        let mut ty = [0u8; 4];
        r.read_exact(&mut ty)?;
        match u32::from_le_bytes(ty) {
            VIRTIO_SCSI_T_TMF => {
                let mut req = [0u8; TMF_REQ_LEN];
                req[..4].copy_from_slice(&ty);
                r.read_exact(&mut req[4..])?;
                let response = tmf(b, &TmfReq::parse(&req));
                w.write_all(&[response as u8])?;
                Ok(Some(1))
            }
            VIRTIO_SCSI_T_AN_QUERY | VIRTIO_SCSI_T_AN_SUBSCRIBE => {
                let mut rest = [0u8; AN_REQ_LEN - 4];
                r.read_exact(&mut rest)?;
                let mut resp = [0u8; 5];
                resp[4] = VIRTIO_SCSI_S_OK as u8;
                w.write_all(&resp)?;
                Ok(Some(5))
            }
            other => {
                tracing::debug!(ty = other, "unknown control request");
                w.write_all(&[VIRTIO_SCSI_S_FAILURE as u8])?;
                Ok(Some(1))
            }
        }
    })
}

fn tmf(b: &ScsiBackend, req: &TmfReq) -> u32 {
    let Some(addr) = decode_lun(&req.lun).filter(|a| a.target == b.target.target_id) else {
        return VIRTIO_SCSI_S_BAD_TARGET;
    };
    let f = match req.subtype {
        VIRTIO_SCSI_T_TMF_ABORT_TASK => Tmf::AbortTask(req.id),
        VIRTIO_SCSI_T_TMF_ABORT_TASK_SET => Tmf::AbortTaskSet,
        VIRTIO_SCSI_T_TMF_CLEAR_ACA => Tmf::ClearAca,
        VIRTIO_SCSI_T_TMF_CLEAR_TASK_SET => Tmf::ClearTaskSet,
        VIRTIO_SCSI_T_TMF_I_T_NEXUS_RESET => Tmf::ItNexusReset,
        VIRTIO_SCSI_T_TMF_LOGICAL_UNIT_RESET => Tmf::LogicalUnitReset,
        VIRTIO_SCSI_T_TMF_QUERY_TASK => Tmf::QueryTask(req.id),
        VIRTIO_SCSI_T_TMF_QUERY_TASK_SET => Tmf::QueryTaskSet,
        _ => return VIRTIO_SCSI_S_FUNCTION_REJECTED,
    };
    let luns = b.target.luns();
    let answer = b.nexus.task_management(&luns, addr.lun, f);
    tracing::info!(tmf = ?f, lun = addr.lun, ?answer, "task management");
    match answer {
        // FUNCTION COMPLETE is VIRTIO_SCSI_S_OK.
        TmfAnswer::Complete => VIRTIO_SCSI_S_OK,
        TmfAnswer::Succeeded => VIRTIO_SCSI_S_FUNCTION_SUCCEEDED,
        TmfAnswer::IncorrectLun => VIRTIO_SCSI_S_INCORRECT_LUN,
        TmfAnswer::Rejected => VIRTIO_SCSI_S_FUNCTION_REJECTED,
    }
}

/// The event queue: the guest posts empty buffers; each pending event
/// fills one. Events wait for buffers (up to a limit, then the next one
/// delivered carries VIRTIO_SCSI_T_EVENTS_MISSED).
pub(crate) fn deliver_events(b: &ScsiBackend, mem: &Mem, vring: &VringRwLock) -> io::Result<()> {
    let guard = mem.memory();
    loop {
        let Some(ev) = b.target.peek_event() else {
            return Ok(());
        };
        let chain = vring
            .get_mut()
            .get_queue_mut()
            .pop_descriptor_chain(mem.memory());
        let Some(chain) = chain else { return Ok(()) };
        let mut w = chain.clone().writer(&*guard).map_err(io::Error::other)?;
        let len = if w.available_bytes() >= EVENT_LEN {
            w.write_all(&ev.to_bytes())?;
            b.target.pop_event();
            EVENT_LEN as u32
        } else {
            0
        };
        vring
            .add_used(chain.head_index(), len)
            .map_err(io::Error::other)?;
        if vring.needs_notification().map_err(io::Error::other)? {
            vring.signal_used_queue()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdb_lengths() {
        let mut c = [0u8; CDB_SIZE];
        for (op, len) in [(0x12u8, 6), (0x28, 10), (0x88, 16), (0xa0, 12), (0x5e, 10)] {
            c[0] = op;
            assert_eq!(cdb_len(&c), len, "{op:02x}");
        }
        c[0] = 0x7f;
        c[7] = 0x18;
        assert_eq!(cdb_len(&c), 32);
    }
}
