//! Large data segments received straight from the socket into the write
//! task's buffer (one copy fewer than through the receive buffer): the
//! Data-Out a task expects next, and the immediate data of a SCSI Command.
//! The command's checks all run afterwards exactly as for a framed PDU
//! (the buffer is only the task's, never the backstore's), so a refused
//! command just drops its buffer.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use iscsi_wire::{Bhs, Opcode, BHS_LEN};

use crate::conn::Io;
use crate::server::STOP_KILL;
use crate::session::{Action, Session};

/// PDUs whose data segment was received straight into a task buffer, since
/// the server started (monitoring, tests).
#[derive(Default)]
pub struct DirectCounters {
    pub data_out: AtomicU64,
    pub immediate: AtomicU64,
    /// Data-Out PDUs landed in the medium (`landed_write`), and their
    /// bytes that went straight from the socket into it.
    pub landed: AtomicU64,
    pub landed_bytes: AtomicU64,
}

/// Smallest data segment (Data-Out or immediate data) received straight
/// into its task buffer.
pub const DIRECT_MIN: usize = 32 * 1024;

/// Receive the rest of a large data segment straight into a write task's
/// buffer instead of through the receive buffer and a copy: a Data-Out the
/// task expects exactly next, or the immediate data of a SCSI Command
/// (a fresh pooled buffer, then the command's usual checks). Applies when
/// the receive buffer ends inside the data segment (so nothing follows it
/// there), no digests are used, the PDU has no AHS and the segment is a
/// whole number of words (no padding). `None`: not applicable, take the
/// framed path.
pub fn recv_direct(sess: &mut Session, io: &mut Io, last_rx: &mut Instant) -> Option<Action> {
    if sess.digests.header || sess.digests.data {
        return None;
    }
    let data = io.rx.data();
    let bhs = Bhs::from_slice(data)?;
    let dsl = bhs.data_segment_len() as usize;
    let have = data.len() - BHS_LEN;
    if bhs.total_ahs_words() != 0
        || dsl > sess.max_recv as usize
        || !dsl.is_multiple_of(4)
        || dsl < have + DIRECT_MIN
    {
        return None;
    }
    let landed = match bhs.opcode() {
        Opcode::DATA_OUT => crate::landed_write::try_land(sess, io, last_rx, &bhs, dsl),
        Opcode::SCSI_COMMAND => {
            crate::landed_write::try_land_immediate(sess, io, last_rx, &bhs, dsl)
        }
        _ => None,
    };
    if landed.is_some() {
        return landed;
    }
    let data = io.rx.data();
    let (mut buf, task) = match bhs.opcode() {
        Opcode::DATA_OUT => {
            let mut t = sess.claim_data_out(&bhs)?;
            let n = &sess.shared.direct_rx.data_out;
            n.fetch_add(1, Ordering::Relaxed);
            (std::mem::take(&mut t.buf), Some(t))
        }
        Opcode::SCSI_COMMAND => {
            let n = &sess.shared.direct_rx.immediate;
            n.fetch_add(1, Ordering::Relaxed);
            (io.tx.take_buf(), None)
        }
        _ => return None,
    };
    let base = buf.len();
    buf.reserve(dsl);
    buf.extend_from_slice(&data[BHS_LEN..]);
    io.rx.consume(BHS_LEN + have);
    let got = recv_exact(sess, io, last_rx, &mut buf, base + dsl);
    match task {
        Some(mut t) => {
            t.buf = buf;
            if got.is_err() {
                return Some(Action::Close);
            }
            Some(sess.data_out_placed(t, &bhs, base, &mut io.tx))
        }
        None => {
            if got.is_err() {
                io.tx.recycle(buf);
                return Some(Action::Close);
            }
            Some(sess.handle_command_placed(&bhs, buf, &mut io.tx))
        }
    }
}

/// Receive into `buf` until it holds `until` bytes (`rx_wait`: one
/// wake-up for the rest), keeping NOP-In pings and stop requests going
/// while the initiator is slow. `Err`: the connection ends (closed,
/// failed, killed).
pub(crate) fn recv_exact(
    sess: &mut Session,
    io: &mut Io,
    last_rx: &mut Instant,
    buf: &mut Vec<u8>,
    until: usize,
) -> Result<(), ()> {
    buf.reserve(until.saturating_sub(buf.len()));
    let fd = io.stream.as_raw_fd();
    // Tasks in flight on the engine (an RBD LU's librbd writes) complete
    // while we wait, and their answers would wait for the whole segment:
    // there the one-wake-up mark gains nothing (1 MiB RBD writes: same
    // IOPS, 6% more CPU per I/O; its 0.5x of session 8 was the stall
    // `rx_wait` now avoids, BENCHMARKS.md "Session 9"); it is kept for
    // inline LUs, where nothing but this segment is awaited and it wins
    // 1.2-1.4x, and for streamed writes with no piece in flight (a
    // ramdisk's or a tmpfs file's: nothing completes elsewhere).
    let mark = !sess.offload.waits_elsewhere();
    let idle = |last: Instant| {
        if io.stop_requested() == STOP_KILL
            || sess.nop_timer(last, &mut io.tx) == Action::Close
            || io.flush().is_err()
        {
            return Err(());
        }
        Ok(())
    };
    crate::rx_wait::recv_rest(fd, buf, until, mark, last_rx, idle).map(drop)
}
