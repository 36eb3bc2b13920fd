//! Backstores: the storage engines behind logical units (LIO's "backstores").
//!
//! A backstore only reads, writes, flushes, discards and reports its size and
//! capabilities. It never sees SCSI types: the target core (`target-core`)
//! translates CDBs into these calls and turns `io::Error`s into sense data.
//!
//! Every method takes `&self` because one backstore is shared by all
//! connections that reach its LU; each connection thread calls it directly
//! (run to completion, no hand-off), so implementations must be `Sync` and use
//! positional I/O (`pread`/`pwrite`) rather than a shared file cursor.

use std::io;

pub mod conformance;
pub mod crypt;
pub mod file;
pub mod nbd;
pub mod null;
pub mod qcow2;
pub mod qemu;
pub mod qos;
pub mod ram;
pub mod registry;
pub mod sticky;

pub use crypt::{CryptBackstore, CryptError};
pub use file::{Extent, FileBackstore, FileOptions};
pub use nbd::{NbdAddr, NbdBackstore, NbdTimeouts};
pub use null::NullBackstore;
pub use qcow2::{Qcow2Backstore, Qcow2Error, Qcow2Options};
pub use qemu::{QemuBackstore, QemuConfig, QemuError, QemuOptions};
pub use qos::{with_qos, QosBackstore, QosLimits};
pub use ram::RamBackstore;
pub use registry::{Handler, HandlerError, OpenRequest, Registry, SizePolicy};
pub use sticky::FlushFault;

/// The error every backstore answers a shrinking resize with: data past the
/// new end could still be in use by an initiator, so rtarget (like LIO's
/// users expect) only grows.
pub fn refuse_shrink(current: u64, wanted: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "cannot shrink from {current} to {wanted} bytes: data past the new end would be lost (only growing is supported)"
        ),
    )
}

/// What a backstore can do; the core reads it to fill VPD pages and the
/// thin-provisioning bits, and to decide which commands to offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `discard` deallocates (punches holes); reads of discarded ranges return zeroes.
    pub discard: bool,
    /// `write_zeroes` is cheaper than writing a zero buffer.
    pub write_zeroes: bool,
    /// Writes may sit in a volatile cache until `flush` (SCSI WCE=1).
    pub write_cache: bool,
    /// The medium refuses writes.
    pub read_only: bool,
    /// Rotational medium (false: report a non-rotating medium in VPD B1).
    pub rotational: bool,
    /// Preferred I/O granularity in bytes (0: no preference).
    pub optimal_io_size: u32,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            discard: false,
            write_zeroes: false,
            write_cache: true,
            read_only: false,
            rotational: false,
            optimal_io_size: 0,
        }
    }
}

/// A storage engine. Offsets and lengths are in bytes; the core only issues
/// requests that are inside `size()` and aligned to the LU's block size.
pub trait Backstore: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// What this backstore can do.
    fn capabilities(&self) -> Capabilities;

    /// Fill `buf` from `offset`. Must fill the whole buffer or fail.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Write all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// Write all of `buf` at `offset` and make it durable before returning
    /// (SCSI FUA). The default writes, then flushes everything.
    fn write_at_fua(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(buf, offset)?;
        self.flush()
    }

    /// Make every completed write durable (SYNCHRONIZE CACHE).
    fn flush(&self) -> io::Result<()>;

    /// Deallocate a range; later reads of it return zeroes.
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// Whether the range starting at `offset` is allocated or a hole, and how
    /// far that state extends (GET LBA STATUS). `None`: this backstore can't
    /// tell, so the core reports everything as mapped.
    fn allocation_at(&self, _offset: u64) -> io::Result<Option<Extent>> {
        Ok(None)
    }

    /// Grow the medium to `new_size` bytes while I/O continues (online
    /// resize). Requests already in flight finish against the old size; once
    /// this returns, `size()` reports the new one to every thread and the new
    /// range reads as zeroes (or from a backing image). Shrinking would
    /// discard data an initiator may still use, so it is refused with
    /// `InvalidInput` ([`refuse_shrink`]); the same size is a no-op. The
    /// default answers `Unsupported`, which [`Backstore::can_resize`] must
    /// agree with.
    fn resize(&self, _new_size: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this backstore cannot be resized",
        ))
    }

    /// Whether [`Backstore::resize`] can grow this backstore (a capability
    /// kept out of [`Capabilities`] so existing struct literals keep compiling).
    fn can_resize(&self) -> bool {
        false
    }

    /// Make a range read back as zeroes. The default writes zero buffers.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeroes = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done) as usize;
            self.write_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Whether [`Backstore::crypto_erase`] works here (the data is stored
    /// encrypted under a key this backstore can replace).
    fn can_crypto_erase(&self) -> bool {
        false
    }

    /// Cryptographic erase (SANITIZE CRYPTO ERASE): replace the media key
    /// and destroy the old one, so everything written before reads back as
    /// unrelated data. Ranges that read as zeroes may stay zeroes.
    fn crypto_erase(&self) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}
