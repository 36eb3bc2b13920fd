//! Test backstores other crates' tests share (feature `testing`, enabled
//! only through dev-dependencies; the daemon never builds it).

use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::{Backstore, Capabilities, Completion, IoOp, RamBackstore};

/// A RAM backstore that counts [`Backstore::close`] calls, so a test can
/// see when (and how often) the last holder of a device let it go. A
/// test holds its own `Arc` of it: that keeps the store, not the device.
pub struct CountsCloses {
    ram: RamBackstore,
    closes: AtomicUsize,
    /// With [`CountsCloses::gated`]: whether `close` may return.
    gate: Option<(Mutex<bool>, Condvar)>,
}

impl CountsCloses {
    /// `size` bytes of zeros; `close` returns at once.
    pub fn new(size: u64) -> Arc<CountsCloses> {
        CountsCloses::with_gate(size, None)
    }

    /// As [`CountsCloses::new`], with a `close` that blocks (as librbd's
    /// image close can for a second) until [`CountsCloses::open_gate`], or
    /// at most [`GATE_MAX`]; it counts once it returns.
    pub fn gated(size: u64) -> Arc<CountsCloses> {
        CountsCloses::with_gate(size, Some((Mutex::new(false), Condvar::new())))
    }

    fn with_gate(size: u64, gate: Option<(Mutex<bool>, Condvar)>) -> Arc<CountsCloses> {
        Arc::new(CountsCloses {
            ram: RamBackstore::new(size).expect("RAM backstore"),
            closes: AtomicUsize::new(0),
            gate,
        })
    }

    /// Let a gated `close` return.
    pub fn open_gate(&self) {
        if let Some((open, cv)) = &self.gate {
            *open.lock().unwrap() = true;
            cv.notify_all();
        }
    }

    /// How many times `close` returned.
    pub fn closes(&self) -> usize {
        self.closes.load(Ordering::SeqCst)
    }
}

/// The longest a gated close waits for its gate: a test whose caller
/// wrongly waits for the close then fails instead of hanging.
pub const GATE_MAX: Duration = Duration::from_secs(5);

impl Backstore for CountsCloses {
    fn size(&self) -> u64 {
        self.ram.size()
    }
    fn capabilities(&self) -> Capabilities {
        self.ram.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.ram.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.ram.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn close(&self) {
        if let Some((open, cv)) = &self.gate {
            let g = open.lock().unwrap();
            let _ = cv.wait_timeout_while(g, GATE_MAX, |open| !*open).unwrap();
        }
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Records the [`Backstore::prefetch`] hints it gets; `takes` is its
/// answer to [`Backstore::takes_prefetch_hints`] (a backstore that says
/// no must not be asked to prefetch). Reads zeros, writes nothing.
pub struct RecordsHints {
    takes: bool,
    hints: Mutex<Vec<(u64, usize)>>,
}

impl RecordsHints {
    pub fn new(takes: bool) -> Arc<RecordsHints> {
        Arc::new(RecordsHints {
            takes,
            hints: Mutex::default(),
        })
    }

    /// The hints so far, as (offset, length).
    pub fn hints(&self) -> Vec<(u64, usize)> {
        self.hints.lock().unwrap().clone()
    }
}

impl Backstore for RecordsHints {
    fn size(&self) -> u64 {
        1 << 30
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn prefetch(&self, offset: u64, len: usize) {
        self.hints.lock().unwrap().push((offset, len));
    }
    fn takes_prefetch_hints(&self) -> bool {
        self.takes
    }
}

/// One write [`RecordsPieces`] received through `submit`.
#[derive(Debug, Clone, Copy)]
pub struct Piece {
    pub offset: u64,
    pub len: usize,
    pub fua: bool,
    pub at: Instant,
    /// Where the piece's buffer is (which buffers the fabric reuses).
    pub addr: usize,
}

type Held = (IoOp, io::Result<()>, Completion);

/// A RAM backstore that takes streamed writes
/// ([`Backstore::streams_writes`]) and records every write that reaches
/// its asynchronous path, with the time it came. A write covering
/// [`RecordsPieces::fail_at`] fails (nothing written); while
/// [`RecordsPieces::hold`] is on, completions (flushes' too) wait until
/// [`RecordsPieces::release`] (the data is written at once). Flushes are
/// counted ([`RecordsPieces::flushes`]).
pub struct RecordsPieces {
    ram: RamBackstore,
    pieces: Mutex<Vec<Piece>>,
    fail: AtomicU64,
    held: Mutex<Option<Vec<Held>>>,
    flushes: AtomicUsize,
    /// While set, a write's `submit` waits (up to 5 s) before it writes.
    blocked: (Mutex<bool>, Condvar),
}

impl RecordsPieces {
    pub fn new(size: u64) -> Arc<RecordsPieces> {
        Arc::new(RecordsPieces {
            ram: RamBackstore::new(size).expect("RAM backstore"),
            pieces: Mutex::default(),
            fail: AtomicU64::new(u64::MAX),
            held: Mutex::default(),
            flushes: AtomicUsize::new(0),
            blocked: Default::default(),
        })
    }

    /// Flushes submitted so far.
    pub fn flushes(&self) -> usize {
        self.flushes.load(Ordering::SeqCst)
    }

    /// The writes received so far, in order of arrival.
    pub fn pieces(&self) -> Vec<Piece> {
        self.pieces.lock().unwrap().clone()
    }

    /// Fail every later write that covers byte `offset`.
    pub fn fail_at(&self, offset: u64) {
        self.fail.store(offset, Ordering::SeqCst);
    }

    /// Make every later write's `submit` wait in the caller's thread
    /// (at most 5 s) until [`RecordsPieces::unblock_writes`].
    pub fn block_writes(&self) {
        *self.blocked.0.lock().unwrap() = true;
    }

    pub fn unblock_writes(&self) {
        *self.blocked.0.lock().unwrap() = false;
        self.blocked.1.notify_all();
    }

    /// Keep completions back until [`RecordsPieces::release`].
    pub fn hold(&self) {
        *self.held.lock().unwrap() = Some(Vec::new());
    }

    /// Complete the held writes (and stop holding); how many there were.
    pub fn release(&self) -> usize {
        let held = self.held.lock().unwrap().take().unwrap_or_default();
        complete_all(held)
    }

    /// Complete the requests held so far and hold later ones (those the
    /// completions submit included); how many completed.
    pub fn release_held(&self) -> usize {
        let held = self.held.lock().unwrap().as_mut().map(std::mem::take);
        complete_all(held.unwrap_or_default())
    }
}

/// Complete `held` in order (the lock is not held: a completion may submit).
fn complete_all(held: Vec<Held>) -> usize {
    let n = held.len();
    for (op, r, done) in held {
        done.complete(op, r);
    }
    n
}

impl Backstore for RecordsPieces {
    fn size(&self) -> u64 {
        self.ram.size()
    }
    fn capabilities(&self) -> Capabilities {
        self.ram.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.ram.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.ram.write_at(buf, offset)
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn submit(&self, mut op: IoOp, done: Completion) {
        let r = match &op {
            IoOp::Write {
                offset,
                len,
                fua,
                buf,
            } => {
                self.pieces.lock().unwrap().push(Piece {
                    offset: *offset,
                    len: *len,
                    fua: *fua,
                    at: Instant::now(),
                    addr: buf.as_ptr() as usize,
                });
                let (lock, cv) = &self.blocked;
                let g = lock.lock().unwrap();
                drop(
                    cv.wait_timeout_while(g, Duration::from_secs(5), |b| *b)
                        .unwrap(),
                );
                let fail = self.fail.load(Ordering::SeqCst);
                if (*offset..*offset + *len as u64).contains(&fail) {
                    Err(io::Error::other("injected write failure"))
                } else {
                    op.run_sync(&self.ram)
                }
            }
            IoOp::Flush => {
                self.flushes.fetch_add(1, Ordering::SeqCst);
                op.run_sync(&self.ram)
            }
            _ => op.run_sync(&self.ram),
        };
        let mut held = self.held.lock().unwrap();
        match held.as_mut() {
            Some(v) => v.push((op, r, done)),
            None => {
                drop(held);
                done.complete(op, r);
            }
        }
    }
    fn submit_never_blocks(&self) -> bool {
        true
    }
    fn streams_writes(&self) -> bool {
        true
    }
}
