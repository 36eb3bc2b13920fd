//! Test backstores other crates' tests share (feature `testing`, enabled
//! only through dev-dependencies; the daemon never builds it).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::{Backstore, Capabilities, RamBackstore};

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
