//! A flush failure that stays reported.
//!
//! Linux reports a writeback error (EIO, ENOSPC) to `fsync` once per open
//! file description and then marks the pages clean: the next `fsync`
//! succeeds although the data never reached the medium. An NBD server that
//! died with acknowledged, unflushed writes likewise cannot say so after a
//! reconnect. Either way the initiator must not be told later that its data
//! is durable, so a backstore that meets such a failure records it here and
//! fails every later flush and FUA write with it until the storage object is
//! opened again (an operator's decision, after checking the medium: see
//! docs/durability.md). Plain writes and reads go on, so data can still be
//! read off or copied away.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The first durability failure of one backstore (see the module docs).
#[derive(Default)]
pub struct FlushFault {
    set: AtomicBool,
    why: Mutex<Option<String>>,
}

impl FlushFault {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a failure was recorded.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    /// `Ok` until a failure was recorded; then the error every flush and
    /// FUA write answers. One atomic load on the fast path.
    pub fn check(&self) -> io::Result<()> {
        if !self.is_set() {
            return Ok(());
        }
        let why = self
            .why
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        Err(io::Error::other(format!(
            "an earlier flush failed ({why}): writes acknowledged before it may be lost; \
             every flush fails until the storage object is opened again"
        )))
    }

    /// Record `why` (the first failure is kept), log it once, and return
    /// the error to answer with.
    pub fn record(&self, object: &str, why: &str) -> io::Error {
        {
            let mut w = self.why.lock().unwrap_or_else(|p| p.into_inner());
            if w.is_none() {
                tracing::error!(
                    object,
                    why,
                    "durability lost: every later flush and FUA write fails until the object is re-opened"
                );
                *w = Some(why.to_owned());
            }
        }
        self.set.store(true, Ordering::Release);
        match self.check() {
            Err(e) => e,
            Ok(()) => io::Error::other(why.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_sticks() {
        let f = FlushFault::new();
        assert!(f.check().is_ok());
        let e = f.record("disk0", "fdatasync: EIO");
        assert!(e.to_string().contains("EIO"), "{e}");
        f.record("disk0", "second");
        for _ in 0..3 {
            let e = f.check().unwrap_err();
            assert!(e.to_string().contains("EIO") && !e.to_string().contains("second"));
        }
        assert!(f.is_set());
    }
}
