//! What travels on the virtqueues: SCSI commands on the request queues,
//! TMF and AN requests on the control queue, events on the event queue.
//! Every chain is answered on the queue it came from; a chain too short
//! for its headers is returned unused (0 bytes) rather than guessed at.

use std::cell::RefCell;
use std::io::{self, Read, Write};

use scsi::sense::{Asc, Sense, SenseKey};
use target_core::{Outcome, Status, TaskAttr};
use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::{DescriptorChain, QueueT, Writer};
use vm_memory::GuestAddressSpace;

use crate::backend::{Mem, ScsiBackend};
use crate::nexus::{Refused, Respond, Task, Tmf, TmfAnswer};
use crate::virtio::*;

/// SAM-5 5.9 (not in the scsi crate's table yet).
const OVERLAPPED_COMMANDS_ATTEMPTED: Asc = Asc(0x4e, 0x00);

type Chain = DescriptorChain<<Mem as GuestAddressSpace>::T>;

thread_local! {
    /// Per worker thread: Data-Out gathered from the guest and the core's
    /// Data-In, reused so steady-state I/O allocates nothing.
    static BUFS: RefCell<(Vec<u8>, Vec<u8>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Pop every available chain and hand it to `f`, which returns the bytes it
/// wrote (`None`: answered later, by [`Reply`]); then notify the guest if
/// it wants to be.
fn each_chain(
    mem: &Mem,
    vring: &VringRwLock,
    mut f: impl FnMut(&Chain) -> io::Result<Option<u32>>,
) -> io::Result<()> {
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
        used(vring, chain.head_index(), len)?;
    }
    Ok(())
}

/// Return one chain to the guest. Answer as we go: the guest can reuse
/// the slot at once.
fn used(vring: &VringRwLock, head: u16, len: u32) -> io::Result<()> {
    vring.add_used(head, len).map_err(io::Error::other)?;
    let notify = vring.needs_notification().map_err(io::Error::other)?;
    tracing::trace!(head, len, notify, "used");
    if notify {
        vring.signal_used_queue()?;
    }
    Ok(())
}

/// A command the engine answers later: where its answer goes (the chain,
/// on the virtqueue it came from) and what its residual needs.
pub struct Reply {
    vring: VringRwLock,
    chain: Chain,
    /// Guest Data-In bytes (after the response header).
    room: usize,
    /// Data-Out bytes the guest sent.
    sent: usize,
    /// Data-Out bytes the CDB asks for.
    wanted: u64,
}

impl Respond for Reply {
    fn respond(self, out: &Outcome, data_in: &[u8], aborted: bool) {
        let head = self.chain.head_index();
        let r = (|| {
            let mem = self.chain.memory();
            let mut w = self.chain.clone().writer(mem).map_err(io::Error::other)?;
            let mut din = w.split_at(CMD_RESP_LEN).map_err(io::Error::other)?;
            if aborted {
                w.write_all(&CmdResp::response(VIRTIO_SCSI_S_ABORTED).to_bytes())?;
                return Ok(CMD_RESP_LEN as u32);
            }
            answer(
                &mut w,
                &mut din,
                out,
                data_in,
                self.room,
                self.sent,
                self.wanted,
            )
        })();
        let len = r.unwrap_or_else(|e: io::Error| {
            tracing::warn!(error = %e, "cannot write a command's answer");
            0
        });
        if let Err(e) = used(&self.vring, head, len) {
            tracing::warn!(error = %e, "cannot return a chain");
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
pub(crate) fn requests(b: &ScsiBackend, mem: &Mem, vring: &VringRwLock) -> io::Result<()> {
    let guard = mem.memory();
    each_chain(mem, vring, |chain| {
        BUFS.with(|bufs| {
            let (data_out, data_in) = &mut *bufs.borrow_mut();
            command(b, &guard, vring, chain, data_out, data_in)
        })
    })
}

fn command(
    b: &ScsiBackend,
    mem: &<Mem as GuestAddressSpace>::M,
    vring: &VringRwLock,
    chain: &Chain,
    data_out: &mut Vec<u8>,
    data_in: &mut Vec<u8>,
) -> io::Result<Option<u32>> {
    let mut r = chain.clone().reader(mem).map_err(io::Error::other)?;
    let mut w = chain.clone().writer(mem).map_err(io::Error::other)?;
    if r.available_bytes() < CMD_REQ_LEN || w.available_bytes() < CMD_RESP_LEN {
        return Err(io::Error::other("request or response header short"));
    }
    let mut hdr = [0u8; CMD_REQ_LEN];
    r.read_exact(&mut hdr)?;
    let req = CmdReq::parse(&hdr);
    // `w` keeps the response header, `din` the guest's Data-In buffers.
    let mut din = w.split_at(CMD_RESP_LEN).map_err(io::Error::other)?;
    let room = din.available_bytes();
    let addr = decode_lun(&req.lun).filter(|a| a.target == b.target.target_id);
    let Some(addr) = addr else {
        w.write_all(&CmdResp::response(VIRTIO_SCSI_S_BAD_TARGET).to_bytes())?;
        return Ok(Some(CMD_RESP_LEN as u32));
    };
    // Copy 1 of at most 1 per direction: guest Data-Out into one buffer.
    data_out.clear();
    let sent = r.available_bytes();
    data_out.resize(sent, 0);
    r.read_exact(data_out)?;
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
        data_out,
        expected_len: if sent > 0 { sent as u32 } else { room as u32 },
    };
    let reply = || Reply {
        vring: vring.clone(),
        chain: chain.clone(),
        room,
        sent,
        wanted,
    };
    let outcome = match b.nexus.execute(&luns, task, data_in, reply) {
        Ok(Some(o)) => o,
        Ok(None) => return Ok(None),
        Err(Refused::Overlapped) => {
            data_in.clear();
            Outcome {
                status: Status::CheckCondition,
                sense: Some(
                    Sense::new(SenseKey::AbortedCommand, OVERLAPPED_COMMANDS_ATTEMPTED)
                        .to_fixed()
                        .to_vec(),
                ),
            }
        }
    };
    answer(&mut w, &mut din, &outcome, data_in, room, sent, wanted).map(Some)
}

/// Write a command's answer: Data-In into the guest's buffers (copy 2:
/// the core's Data-In into guest memory), then the response header.
/// Returns the bytes written.
fn answer(
    w: &mut Writer<'_>,
    din: &mut Writer<'_>,
    outcome: &Outcome,
    data_in: &[u8],
    room: usize,
    sent: usize,
    wanted: u64,
) -> io::Result<u32> {
    let n = data_in.len().min(room);
    din.write_all(&data_in[..n])?;
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
    w.write_all(&resp.to_bytes())?;
    Ok((CMD_RESP_LEN + n) as u32)
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
