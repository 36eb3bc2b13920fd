//! nullio: reads return zeroes, writes are dropped (LIO's ramdisk with
//! `nullio`). Useful to measure the fabric and core without storage cost.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Backstore, Capabilities};

pub struct NullBackstore {
    /// Grows online (`resize`); nothing else depends on it.
    size: AtomicU64,
}

impl NullBackstore {
    pub fn new(size: u64) -> NullBackstore {
        NullBackstore {
            size: AtomicU64::new(size),
        }
    }

    fn check(&self, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "I/O beyond size",
            )),
        }
    }
}

impl Backstore for NullBackstore {
    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn resize(&self, new_size: u64) -> io::Result<()> {
        self.size
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                (new_size >= old).then_some(new_size)
            })
            .map(|_| ())
            .map_err(|old| crate::refuse_shrink(old, new_size))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            discard: true,
            write_zeroes: true,
            write_cache: false,
            resize: true,
            ..Capabilities::default()
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        buf.fill(0);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_dropped_reads_are_zero() {
        let n = NullBackstore::new(1 << 20);
        n.write_at(&[0xFF; 4096], 0).unwrap();
        let mut buf = [0xAAu8; 4096];
        n.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&x| x == 0));
        n.discard(0, 1 << 20).unwrap();
    }

    #[test]
    fn bounds_are_checked() {
        let n = NullBackstore::new(4096);
        let mut buf = [0u8; 512];
        assert!(n.read_at(&mut buf, 4000).is_err());
        assert!(n.write_at(&buf, 4096).is_err());
        assert!(n.discard(u64::MAX, 2).is_err());
    }

    #[test]
    fn grows_and_refuses_shrink() {
        let n = NullBackstore::new(4096);
        n.resize(8192).unwrap();
        n.write_at(&[0u8; 512], 8192 - 512).unwrap();
        assert_eq!(
            n.resize(4096).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(n.size(), 8192);
    }
}
