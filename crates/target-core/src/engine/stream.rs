//! Streamed writes in the engine ([`WriteStream`]): a WRITE checked when it
//! arrived (`LunTable::check_streamed_write`) whose data the fabric hands
//! over burst by burst, each written with its own asynchronous backstore
//! call as soon as it is in. The task is a flight of its queue from the
//! start ([`super::TaskQueue::start_stream`]): it holds a window slot, task
//! ordering sees it (an ORDERED task waits for it), ABORT TASK and the
//! queue's close find it. It finishes when the fabric sealed it (all data
//! in, or the task dropped) and its last piece completed: GOOD if every
//! piece did, else one CHECK CONDITION with the first failure's sense.
//! After a failure later pieces are not written (the command fails anyway;
//! SCSI allows a failed or aborted WRITE to leave part of its data).
//!
//! Each piece in flight holds the LU's shared medium order (as an
//! asynchronous WRITE does) and counts as a busy task of the LU for resets
//! (`pool::lu_enter`); between pieces the stream holds nothing, so a
//! COMPARE AND WRITE or a reset never waits for an initiator's data.
//! FUA (or the write cache off): one flush after the last piece.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use backstore::{Completion, Fill, IoOp};

use super::pool;
use super::sink::Sink;
use super::{Cdb, Done};
use crate::dispatch::{self, GOOD};
use crate::error::CmdError;
use crate::stats::Started;
use crate::streamed::{DevStats, WritePlan};
use crate::{Device, Outcome};

/// The fabric's handle on a streamed write. Dropping it seals the stream
/// (no more pieces): the task then finishes once its pieces complete.
pub struct WriteStream {
    shared: Arc<Shared>,
    dev: Arc<Device>,
    offset: u64,
    len: usize,
    /// The LU's unit-attention count its checks saw (`WritePlan::fence`).
    fence: u64,
}

/// What [`WriteStream::land`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Land {
    /// This many bytes landed (fewer than asked: the fill stopped there).
    Landed(usize),
    /// Nothing landed: a unit attention was raised on the LU since the
    /// write's checks ran; run them again
    /// (`LunTable::recheck_streamed_write`), then [`WriteStream::checked`]
    /// or [`WriteStream::refuse`], and try again.
    Fenced,
    /// Nothing landed: not for landing (the backstore does not land, the
    /// range leaves the write's extent, or the write already failed); take
    /// the buffered way ([`WriteStream::piece`]).
    Declined,
}

/// What the pieces' completions share.
pub(super) struct Shared {
    /// No more pieces will come.
    sealed: AtomicBool,
    state: Mutex<State>,
}

struct State {
    in_flight: usize,
    err: Option<CmdError>,
    /// Bytes written (for the statistics and the fabric's counters).
    written: usize,
    /// The pieces' buffers, handed back with the answer for reuse (a fresh
    /// 256 KiB allocation per piece costs its page faults, ~60 µs).
    spares: Vec<Vec<u8>>,
    /// The write's answer when its checks, run again, refused it
    /// ([`WriteStream::refuse`]): nothing more is written.
    refused: Option<Outcome>,
    /// Taken by whoever finishes the task.
    fin: Option<Finish>,
    fua: bool,
    dev: Arc<Device>,
}

/// What the task's answer needs.
struct Finish {
    seq: u64,
    sink: Option<Arc<Sink>>,
    cdb: Cdb,
    started: Option<Started<DevStats>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the stream is still fed (the queue's waits for "every task
    /// finished" leave it out, as they leave out writes still gathering).
    pub(super) fn open(&self) -> bool {
        !self.sealed.load(Ordering::Acquire)
    }

    /// Still fed, with no piece in flight: only the fabric's own calls
    /// (a piece, the seal) can move it on.
    pub(super) fn idle(&self) -> bool {
        self.open() && self.lock().in_flight == 0
    }

    /// A piece ended (`r`), with its buffer when the backstore gave it back.
    fn piece_done(self: &Arc<Self>, len: usize, r: std::io::Result<()>, buf: Option<Vec<u8>>) {
        let mut s = self.lock();
        s.in_flight -= 1;
        match r {
            Ok(()) => s.written += len,
            Err(e) => {
                if s.err.is_none() {
                    s.err = Some(CmdError::WriteError(e));
                }
            }
        }
        if let Some(b) = buf {
            s.spares.push(b);
        }
        self.maybe_finish(s);
    }

    /// Finish the task if it is sealed and nothing is in flight (with a
    /// flush first for a durable write that succeeded).
    fn maybe_finish(self: &Arc<Self>, mut s: MutexGuard<'_, State>) {
        if s.in_flight > 0 || !self.sealed.load(Ordering::Acquire) || s.fin.is_none() {
            return;
        }
        if s.fua && s.err.is_none() && s.refused.is_none() && s.written > 0 {
            s.fua = false;
            s.in_flight += 1;
            let dev = Arc::clone(&s.dev);
            drop(s);
            let me = Arc::clone(self);
            let key = dev.id();
            pool::lu_enter(key);
            dev.backstore.submit(
                IoOp::Flush,
                Completion::new(move |_, r| {
                    pool::lu_leave(key);
                    me.piece_done(0, r, None);
                }),
            );
            return;
        }
        let Some(fin) = s.fin.take() else { return };
        let err = s.err.take();
        let refused = s.refused.take();
        let written = s.written;
        let spares = std::mem::take(&mut s.spares);
        drop(s);
        let out = refused.unwrap_or_else(|| err.as_ref().map_or(GOOD, dispatch::outcome_for));
        fin.finish(out, written, spares);
    }

    fn seal(self: &Arc<Self>) {
        self.sealed.store(true, Ordering::Release);
        let s = self.lock();
        self.maybe_finish(s);
    }
}

impl Finish {
    fn finish(mut self, out: Outcome, written: usize, spares: Vec<Vec<u8>>) {
        let Some(sink) = self.sink.take() else { return };
        if let Some(started) = self.started.take() {
            started.end(&out, 0, written);
        }
        let d = Done {
            seq: self.seq,
            cdb: std::mem::replace(&mut self.cdb, Cdb::Short([0; 16])),
            out,
            data_out: Vec::new(),
            data_in: Vec::new(),
            overflow: 0,
            sg_in: 0,
            streamed: written,
            spares,
        };
        sink.complete(Some(d), false);
    }
}

impl Drop for Finish {
    /// Never answered (a panic on the way): answer HARDWARE ERROR, so the
    /// fabric does not wait for ever (as the pool's `Pending`).
    fn drop(&mut self) {
        let Some(sink) = self.sink.take() else { return };
        tracing::error!(seq = self.seq, "a streamed write was never answered");
        let d = Done::internal_failure(
            self.seq,
            std::mem::replace(&mut self.cdb, Cdb::Short([0; 16])),
        );
        sink.complete(Some(d), false);
    }
}

/// A piece in flight: its completion, or its drop uncalled (a backstore
/// that lost it), ends it exactly once.
struct PieceGuard {
    shared: Arc<Shared>,
    key: u64,
    len: usize,
    done: bool,
}

impl PieceGuard {
    fn complete(mut self, r: std::io::Result<()>, buf: Option<Vec<u8>>) {
        self.done = true;
        pool::lu_leave(self.key);
        self.shared.piece_done(self.len, r, buf);
    }
}

impl Drop for PieceGuard {
    fn drop(&mut self) {
        if !self.done {
            pool::lu_leave(self.key);
            let e = std::io::Error::other("write piece dropped uncompleted");
            self.shared.piece_done(self.len, Err(e), None);
        }
    }
}

/// Build the stream of `plan`, task `seq` of `sink` (the queue has counted
/// it as started).
pub(super) fn new_stream(
    plan: WritePlan,
    seq: u64,
    sink: Arc<Sink>,
    cdb: Cdb,
) -> (WriteStream, Arc<Shared>) {
    let WritePlan {
        dev,
        offset,
        len,
        fua,
        started,
        fence,
    } = plan;
    let shared = Arc::new(Shared {
        sealed: AtomicBool::new(false),
        state: Mutex::new(State {
            in_flight: 0,
            err: None,
            refused: None,
            written: 0,
            spares: Vec::new(),
            fin: Some(Finish {
                seq,
                sink: Some(sink),
                cdb,
                started: Some(started),
            }),
            fua,
            dev: Arc::clone(&dev),
        }),
    });
    let s = WriteStream {
        shared: Arc::clone(&shared),
        dev,
        offset,
        len,
        fence,
    };
    (s, shared)
}

impl WriteStream {
    /// Pieces other than the last must be whole logical blocks.
    pub fn block_size(&self) -> usize {
        self.dev.block_size() as usize
    }

    /// Write `buf`, the Data-Out bytes from `at` on, to the medium (bytes
    /// past the write's extent are dropped). The buffer comes back when
    /// nothing of it is written: past the extent, or an earlier piece
    /// failed. A piece that does not end the data must be whole blocks.
    /// Also when [`Self::fenced`] (nothing written: check again, then
    /// retry).
    pub fn piece(&mut self, at: usize, buf: Vec<u8>) -> Option<Vec<u8>> {
        let n = buf.len().min(self.len.saturating_sub(at));
        if n == 0 {
            return Some(buf);
        }
        let key = self.dev.id();
        // Counted busy before the fence is read: a reset that raises its
        // unit attention after this read waits for the piece (`wait_lus_idle`).
        pool::lu_enter(key);
        let taken = !self.fenced() && {
            let mut s = self.shared.lock();
            let ok = s.err.is_none() && s.refused.is_none();
            s.in_flight += usize::from(ok);
            ok
        };
        if !taken {
            pool::lu_leave(key);
            return Some(buf);
        }
        // The LU's shared medium order, for this piece only.
        let token = self.dev.io_async_begin();
        let guard = PieceGuard {
            shared: Arc::clone(&self.shared),
            key,
            len: n,
            done: false,
        };
        let op = IoOp::Write {
            offset: self.offset + at as u64,
            buf,
            len: n,
            // Durability comes from the flush after the last piece.
            fua: false,
        };
        self.dev.backstore.submit(
            op,
            Completion::new(move |op, r| {
                drop(token);
                let buf = match op {
                    IoOp::Write { buf, .. } => Some(buf),
                    _ => None,
                };
                guard.complete(r, buf);
            }),
        );
        None
    }
}

impl WriteStream {
    /// The buffer of a piece already written, if one came back: a memory
    /// backstore writes a piece before [`Self::piece`] returns, so the
    /// fabric can receive the next burst into the buffer it just wrote
    /// from, still in the cache, instead of a pooled one long evicted
    /// (the spares otherwise come back with the answer).
    pub fn take_spare(&self) -> Option<Vec<u8>> {
        self.shared.lock().spares.pop()
    }

    /// A unit attention was raised on the LU since the write's checks ran
    /// (see [`Land::Fenced`]).
    pub fn fenced(&self) -> bool {
        self.dev.state.ua.raised() != self.fence
    }

    /// The checks ran again and passed, at unit-attention count `fence`.
    pub fn checked(&mut self, fence: u64) {
        self.fence = fence;
    }

    /// The checks ran again and refused the write: `out` is its answer,
    /// and none of its remaining data reaches the medium.
    pub fn refuse(&mut self, out: Outcome) {
        let mut s = self.shared.lock();
        if s.refused.is_none() {
            s.refused = Some(out);
        }
    }

    /// The write failed or was refused: its remaining data is dropped.
    pub fn failed(&self) -> bool {
        let s = self.shared.lock();
        s.err.is_some() || s.refused.is_some()
    }

    /// Its backstore takes data straight into its memory ([`Self::land`]).
    pub fn lands(&self) -> bool {
        self.dev.backstore.lands_writes()
    }

    /// Land the Data-Out bytes `at..at + len` straight in the medium:
    /// `fill` receives them into each area the backstore hands out
    /// (`backstore::landing`), under the LU's shared medium order and
    /// counted busy for resets, like a piece. An error (of the fill or the
    /// medium) fails the write and is returned; what landed before stays.
    pub fn land(&mut self, at: usize, len: usize, fill: Fill<'_>) -> std::io::Result<Land> {
        let end = at.checked_add(len);
        if !self.lands() || end.is_none_or(|e| e > self.len) || self.failed() {
            return Ok(Land::Declined);
        }
        let key = self.dev.id();
        pool::lu_enter(key);
        if self.fenced() {
            pool::lu_leave(key);
            return Ok(Land::Fenced);
        }
        let token = self.dev.io_async_begin();
        let r = self.dev.backstore.land(self.offset + at as u64, len, fill);
        drop(token);
        pool::lu_leave(key);
        let mut s = self.shared.lock();
        match r {
            Ok(n) => {
                s.written += n;
                Ok(Land::Landed(n))
            }
            Err(e) => {
                if s.err.is_none() {
                    let copy = std::io::Error::new(e.kind(), e.to_string());
                    s.err = Some(CmdError::WriteError(copy));
                }
                Err(e)
            }
        }
    }
}

impl Drop for WriteStream {
    fn drop(&mut self) {
        self.shared.seal();
    }
}
