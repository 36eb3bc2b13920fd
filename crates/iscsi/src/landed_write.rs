//! Landed writes, the iSCSI half: a Data-Out of a streamed write whose
//! backstore lands data (`Backstore::lands_writes`: a fileio LU on tmpfs)
//! is received from the socket straight into the medium's memory
//! (`WriteStream::land`), not into a task buffer that is then written: one
//! copy per byte instead of two (BENCHMARKS.md, "Session 11: landed
//! writes").
//!
//! Order of a landed Data-Out:
//! 1. Its checks (ITT, TTT, buffer offset and length against the R2T,
//!    DataSN; `accept_data`) run on the header, *before* any byte lands:
//!    a Data-Out that fails them never touches the medium (its data is
//!    received into a scratch buffer and dropped, or the connection ends).
//! 2. The bytes that came with the header (in the receive buffer), up to a
//!    whole block, go to the backstore as an ordinary piece (`pwrite` for
//!    a file: a user-space store into a file mapping could `SIGBUS`).
//! 3. The rest lands in whole blocks of what is queued on the socket (one
//!    `recv` per landing), after one wake-up for the whole rest
//!    (`SO_RCVLOWAT`, as `rx_wait`). A block is therefore never left half
//!    landed, unless the kernel returns less than it said was queued (then
//!    the block's rest follows the buffered way).
//! 4. A unit attention raised on the LU meanwhile (a reset, a preemption,
//!    an ALUA change) stops the landing until the write's checks ran again
//!    (`recheck_streamed_write`); refused, the rest of its data is dropped
//!    and the refusal is its answer, as a gathered write would be answered
//!    once its data is in.
//!
//! The immediate data of such a WRITE (of at least `LAND_MIN`) lands too:
//! the command is handled on its header alone, its immediate data still on
//! the socket (`Imm::Pending`), so the write's checks run before that data
//! is received; then the data lands (streamed), goes into the task buffer
//! (gathered: ORDERED, or a CDB that does not stream) or is dropped
//! (refused, rejected).
//!
//! Anything unusual (a segment or offset not on a block boundary, bytes
//! past the write's extent, a failed write) takes the buffered way for the
//! rest of the segment: into the task buffer, then `feed`.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::Instant;

use iscsi_wire::request::{DataOut, ScsiCommand};
use iscsi_wire::{Bhs, BHS_LEN};
use target_core::engine::Land;

use crate::conn::Io;
use crate::dataout::WriteTask;
use crate::session::{Action, Session};

/// Land the Data-Out whose header `bhs` (segment `dsl` bytes, no digests,
/// no padding) is at the start of the receive buffer, if its task is a
/// landing streamed write expecting exactly this data. `None`: not for
/// landing (nothing consumed), the caller takes its usual way.
pub(crate) fn try_land(
    sess: &mut Session,
    io: &mut Io,
    last_rx: &mut Instant,
    bhs: &Bhs,
    dsl: usize,
) -> Option<Action> {
    let d = DataOut::parse(bhs);
    let t = sess.tasks.iter().find(|t| t.itt == d.itt)?;
    let s = t.stream.as_ref()?;
    let bs = s.block_size();
    if t.poisoned
        || !t.buf.is_empty()
        || t.received() != d.buffer_offset as usize
        || !s.lands()
        || !t.base.is_multiple_of(bs)
        || !dsl.is_multiple_of(bs)
    {
        return None;
    }
    let mut t = sess.claim_data_out(bhs)?;
    let at = t.base;
    let res = sess.accept_data(&mut t, &d, at, dsl, &mut io.tx);
    if res.is_err() {
        // Never on the medium: into scratch, then the usual verdict.
        let have = (io.rx.data().len() - BHS_LEN).min(dsl);
        io.rx.consume(BHS_LEN + have);
        if drain(sess, io, last_rx, dsl - have).is_err() {
            io.tx.recycle(std::mem::take(&mut t.buf));
            return Some(Action::Close);
        }
        return Some(sess.finish_data(t, bhs, res, &mut io.tx));
    }
    sess.shared.direct_rx.landed.fetch_add(1, Ordering::Relaxed);
    take_head(io, &mut t.buf, dsl);
    if land_segment(sess, io, last_rx, &mut t, dsl).is_err() {
        io.tx.recycle(std::mem::take(&mut t.buf));
        return Some(Action::Close);
    }
    Some(sess.finish_data(t, bhs, Ok(()), &mut io.tx))
}

/// A SCSI Command whose header `bhs` is at the start of the receive
/// buffer, with `dsl` bytes of immediate data of which only part came with
/// it: when it is a WRITE with more data to come to a LU that lands
/// writes, handle the command *before* receiving its immediate data, so
/// that data lands too once the write's checks passed (`Imm::Pending`);
/// else (or for a write refused or gathered) the data is received as
/// usual, or dropped. `None`: not for this way (nothing consumed).
pub(crate) fn try_land_immediate(
    sess: &mut Session,
    io: &mut Io,
    last_rx: &mut Instant,
    bhs: &Bhs,
    dsl: usize,
) -> Option<Action> {
    let c = ScsiCommand::parse(bhs);
    let edtl = c.expected_data_len as usize;
    if !c.write || dsl >= edtl {
        return None;
    }
    sess.refresh_luns();
    let lun = scsi::lun::decode(c.lun);
    let lands = sess.luns.find(lun).is_some_and(|l| {
        let b = l.device.backstore.as_ref();
        b.lands_writes() && crate::streamed_write::streams(b, edtl)
    });
    if !lands {
        return None;
    }
    let mut head = io.tx.take_buf();
    let have = take_head(io, &mut head, dsl);
    sess.shared
        .direct_rx
        .immediate
        .fetch_add(1, Ordering::Relaxed);
    let action = sess.handle_command_pending(bhs, dsl, &mut io.tx);
    // The write task it started, if any, waits for this data.
    let Some(i) = sess.tasks.iter().position(|t| t.imm_pending > 0) else {
        // Rejected, refused at once, or dropped: the data goes nowhere.
        io.tx.recycle(head);
        if drain(sess, io, last_rx, dsl - have).is_err() {
            return Some(Action::Close);
        }
        return Some(action);
    };
    let mut t = sess.tasks.swap_remove(i);
    t.imm_pending = 0;
    let ok = if t.refusal.is_some() {
        // Refused, its unsolicited data still to come: dropped, counted.
        t.base += dsl;
        io.tx.recycle(head);
        drain(sess, io, last_rx, dsl - have)
    } else {
        io.tx.recycle(std::mem::replace(&mut t.buf, head));
        let landing = t
            .stream
            .as_ref()
            .is_some_and(|s| s.lands() && dsl.is_multiple_of(s.block_size()));
        if landing {
            sess.shared.direct_rx.landed.fetch_add(1, Ordering::Relaxed);
            land_segment(sess, io, last_rx, &mut t, dsl)
        } else {
            crate::direct::recv_exact(sess, io, last_rx, &mut t.buf, dsl)
        }
    };
    if ok.is_err() {
        io.tx.recycle(std::mem::take(&mut t.buf));
        return Some(Action::Close);
    }
    // What did not land is the first burst's rest, as `try_stream` feeds it.
    crate::streamed_write::feed(sess, &mut t, &mut io.tx, false);
    sess.tasks.push(t);
    Some(action)
}

/// Move the header and the segment's bytes that came with it (of `dsl`)
/// out of the receive buffer, those bytes onto `buf`: how many there were.
fn take_head(io: &mut Io, buf: &mut Vec<u8>, dsl: usize) -> usize {
    let have = (io.rx.data().len() - BHS_LEN).min(dsl);
    buf.extend_from_slice(&io.rx.data()[BHS_LEN..BHS_LEN + have]);
    io.rx.consume(BHS_LEN + have);
    have
}

/// Receive `n` bytes from the socket and drop them.
fn drain(sess: &mut Session, io: &mut Io, last_rx: &mut Instant, n: usize) -> Result<(), ()> {
    let mut scratch = io.tx.take_buf();
    let r = crate::direct::recv_exact(sess, io, last_rx, &mut scratch, n);
    io.tx.recycle(scratch);
    r
}

/// The data segment of `dsl` bytes that starts at `t.base` (its first
/// bytes already in `t.buf`, `t.buf` otherwise empty): what is in `t.buf`,
/// completed to a block, goes to the stream as a piece; the rest lands
/// (steps 2 and 3 of the module comment); what could not land is left in
/// `t.buf`, from `t.base` on. `Err`: the connection ends.
fn land_segment(
    sess: &mut Session,
    io: &mut Io,
    last_rx: &mut Instant,
    t: &mut WriteTask,
    dsl: usize,
) -> Result<(), ()> {
    let Some(bs) = t.stream.as_ref().map(|s| s.block_size()) else {
        return Err(());
    };
    let head = t.buf.len().next_multiple_of(bs).min(dsl);
    crate::direct::recv_exact(sess, io, last_rx, &mut t.buf, head)?;
    put_piece(sess, t, &mut io.tx);
    let (lun, edtl, cdb) = (t.cmd.lun, t.cmd.expected_data_len, t.cdb.clone());
    let mut pos = head;
    let fd = io.stream.as_raw_fd();
    while pos < dsl {
        let queued = wait_queued(sess, io, last_rx, dsl - pos)?;
        let want = queued.min(dsl - pos) / bs * bs;
        if want == 0 {
            // Less than a block is queued although the rest was awaited
            // (the kernel woke us for its window): take what comes.
            break;
        }
        let Some(s) = t.stream.as_mut() else { break };
        let mut fill = |a: &backstore::Area| recv_into(fd, a);
        match s.land(t.base, want, &mut fill) {
            Ok(Land::Landed(n)) => {
                t.base += n;
                pos += n;
                let c = &sess.shared.direct_rx.landed_bytes;
                c.fetch_add(n as u64, Ordering::Relaxed);
                // Short of a block, or nothing although it was queued:
                // the rest the buffered way (which waits properly).
                if n == 0 || !n.is_multiple_of(bs) {
                    break;
                }
            }
            Ok(Land::Fenced) => crate::streamed_write::recheck(sess, lun, cdb.as_slice(), edtl, s),
            Ok(Land::Declined) => break,
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                // The medium's page is gone (file truncated, tmpfs full):
                // the write has failed; its data is dropped below.
                tracing::warn!(itt = t.itt, error = %e, "landing a write's data failed");
                break;
            }
            Err(_) => return Err(()),
        }
    }
    // The rest, if any, the buffered way (`feed` drops it for a failed or
    // refused write).
    if pos < dsl {
        crate::direct::recv_exact(sess, io, last_rx, &mut t.buf, dsl - pos)?;
    }
    Ok(())
}

/// Hand what `t.buf` holds to the stream now, as one piece (the bytes
/// that came with a header; dropped if the write failed).
fn put_piece(sess: &Session, t: &mut WriteTask, tx: &mut crate::txq::TxQueue) {
    if t.buf.is_empty() {
        return;
    }
    let piece = std::mem::replace(&mut t.buf, tx.take_buf());
    let at = t.base;
    t.base += piece.len();
    crate::streamed_write::give(sess, t, at, piece, tx);
}

/// `recv(2)` of the whole area, which is queued (`wait_queued`): bytes
/// received; 0 if nothing was after all.
fn recv_into(fd: RawFd, a: &backstore::Area) -> std::io::Result<usize> {
    // SAFETY: the area is writable memory of `a.len()` bytes while the
    // fill runs; only the kernel writes it.
    let n = unsafe { libc::recv(fd, a.ptr().cast(), a.len(), libc::MSG_DONTWAIT) };
    match n {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        n if n > 0 => Ok(n as usize),
        _ => {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Ok(0)
            } else {
                Err(e)
            }
        }
    }
}

/// Wait until `rest` bytes (or as many as the kernel lets queue) are on
/// the socket, keeping NOP-In pings and stop requests going: the bytes
/// queued. `Err`: the connection ends.
fn wait_queued(
    sess: &mut Session,
    io: &mut Io,
    last_rx: &mut Instant,
    rest: usize,
) -> Result<usize, ()> {
    let fd = io.stream.as_raw_fd();
    loop {
        let q = crate::rx_wait::queued(fd);
        if q >= rest {
            return Ok(q);
        }
        match crate::rx_wait::wait_marked(fd, rest) {
            Ok(true) => {
                *last_rx = Instant::now();
                let q = crate::rx_wait::queued(fd);
                if q == 0 {
                    // Readable with nothing queued: the peer closed.
                    return Err(());
                }
                return Ok(q);
            }
            Ok(false) => {
                if io.stop_requested() == crate::server::STOP_KILL
                    || sess.nop_timer(*last_rx, &mut io.tx) == Action::Close
                    || io.flush().is_err()
                {
                    return Err(());
                }
            }
            Err(()) => return Err(()),
        }
    }
}
