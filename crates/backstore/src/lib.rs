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

pub mod aio;
pub mod conformance;
pub mod crypt;
pub mod file;
pub mod iov;
pub mod landing;
pub mod lent;
pub mod nbd;
pub mod null;
pub mod ownership;
#[cfg(any(test, feature = "powerloss"))]
pub mod powerloss;
mod prefetch;
pub mod qcow2;
pub mod qemu;
pub mod qos;
pub mod ram;
mod ram_chunk;
pub mod rbd;
pub mod registry;
pub mod shared_state;
pub mod sticky;
mod stream_copy;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use aio::{Completion, IoOp};
pub use crypt::{CryptBackstore, CryptError};
pub use file::uring::UringBackstore;
pub use file::{Extent, FileBackstore, FileOptions};
pub use iov::IoVecs;
pub use landing::{Area, Fill};
pub use lent::{LentBytes, LentRead};
pub use nbd::{NbdAddr, NbdBackstore, NbdTimeouts};
pub use null::NullBackstore;
pub use ownership::{GatewayReport, Owner, Ownership};
pub use qcow2::{Qcow2Backstore, Qcow2Error, Qcow2Options};
pub use qemu::{QemuBackstore, QemuConfig, QemuError, QemuOptions};
pub use qos::{with_qos, QosBackstore, QosLimits};
pub use ram::RamBackstore;
pub use rbd::{RbdBackstore, RbdConfig, RbdGateway};
pub use registry::{Handler, HandlerError, OpenRequest, Registry, SizePolicy};
pub use shared_state::SharedState;
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

/// Called with the new size when a medium grew underneath
/// ([`Backstore::on_resize`]).
pub type ResizeHook = Box<dyn Fn(u64) + Send + Sync>;

/// What a backstore can do: every capability flag lives here, so the core
/// (and management) read one struct, and a wrapper (QoS, encryption)
/// forwards them all in one call ([`Backstore::capabilities`]) instead of
/// one method per flag that it could forget to forward. The core reads it
/// to fill VPD pages and the thin-provisioning bits, and to decide which
/// commands to offer.
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
    /// [`Backstore::resize`] can grow the medium online.
    pub resize: bool,
    /// [`Backstore::crypto_erase`] works here: the data is stored encrypted
    /// under a key this backstore can replace.
    pub crypto_erase: bool,
    /// [`Backstore::submit`] is truly asynchronous (completes later, on
    /// another thread). Without it the engine calls the synchronous
    /// methods directly and saves the completion's allocation.
    pub async_submit: bool,
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
            resize: false,
            crypto_erase: false,
            async_submit: false,
        }
    }
}

/// A storage engine. Offsets and lengths are in bytes; the core only issues
/// requests that are inside `size()` and aligned to the LU's block size.
pub trait Backstore: Send + Sync + 'static {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// What this backstore can do. Required (no default), so a wrapper
    /// must say what it forwards; each flag's operation must agree with it
    /// (the [`conformance`] checks verify that).
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

    /// Fill all of `bufs` from `offset`: memory a fabric lends ([`iov`]:
    /// a guest's buffers, which may change under us and are never seen as
    /// a slice). The default bounces through a per-thread buffer and
    /// [`Backstore::read_at`]; a backstore that can hand the segments to
    /// the kernel (fileio: `preadv`) overrides it and copies nothing.
    fn read_vectored_at(&self, bufs: &IoVecs, offset: u64) -> io::Result<()> {
        iov::bounce_read(self, bufs, offset)
    }

    /// A READ of `len` bytes at `offset` answered with the backstore's own
    /// memory ([`lent`]), for a fabric that sends it without a copy. The
    /// pieces must be a snapshot (nothing the backstore does later may
    /// change bytes they show) unless the read is marked live
    /// ([`LentRead::is_live`]; then the zero-length call's answer is marked
    /// too, so callers that cannot honour it decline before the gates).
    /// `None` (the default): not offered, the
    /// caller reads with [`Backstore::read_at`]. A zero-length call must be
    /// cheap (callers ask with one whether lending is offered). Wrappers do
    /// not forward it (they transform or meter what they read).
    fn read_lent(&self, _offset: u64, _len: usize) -> Option<io::Result<LentRead>> {
        None
    }

    /// Hint: a READ of `len` bytes at `offset` comes next. A backstore in
    /// RAM starts loading those bytes into the CPU cache, so the copy of
    /// that READ does not wait on memory (a random 4 KiB read otherwise
    /// stalls on each of its cache lines in turn). Never fails, never
    /// blocks; the default does nothing. Wrappers do not forward it.
    fn prefetch(&self, _offset: u64, _len: usize) {}

    /// Whether [`Backstore::prefetch`] does anything: a fabric asks once
    /// (when it takes a LUN table) and skips finding the next READ for a
    /// table none of whose backstores would use the hint. False unless the
    /// backstore implements `prefetch`.
    fn takes_prefetch_hints(&self) -> bool {
        false
    }

    /// Write all of `bufs` at `offset`, durable before returning when
    /// `fua` (as [`Backstore::write_at_fua`]). The default bounces (one
    /// volatile copy of the lent memory) and calls the slice methods.
    fn write_vectored_at(&self, bufs: &IoVecs, offset: u64, fua: bool) -> io::Result<()> {
        iov::bounce_write(self, bufs, offset, fua)
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
    /// default answers `Unsupported`, which [`Capabilities::resize`] must
    /// agree with.
    fn resize(&self, _new_size: u64) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this backstore cannot be resized",
        ))
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

    /// Cryptographic erase (SANITIZE CRYPTO ERASE), offered when
    /// [`Capabilities::crypto_erase`] is set: replace the media key
    /// and destroy the old one, so everything written before reads back as
    /// unrelated data. Ranges that read as zeroes may stay zeroes.
    fn crypto_erase(&self) -> io::Result<()> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }

    /// The asynchronous path ([`aio`]): start `op` and call `done` once it
    /// finished, possibly later and on another thread. The default runs
    /// the synchronous method here and completes before returning, so a
    /// simple backstore implements only the methods above. A wrapper must
    /// forward it (its inner backstore may be truly asynchronous).
    fn submit(&self, mut op: IoOp, done: Completion) {
        let r = op.run_sync(self);
        done.complete(op, r);
    }

    /// Run `hook` with the new size whenever the medium's size changes
    /// underneath (a resize made elsewhere, e.g. `rbd resize` on another
    /// host), so the core can tell initiators (2A/09). A later call
    /// replaces the hook. The default never calls it (such backstores
    /// only change size through [`Backstore::resize`]); wrappers forward it.
    fn on_resize(&self, _hook: ResizeHook) {}

    /// Counters of the engine's health for monitoring, by name (e.g. a
    /// supervised child's `restarts`, a client's `reconnects`); read, never
    /// reset. None by default; wrappers forward their inner backstore's.
    fn health(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// Set when several gateways serve this medium and one at a time owns
    /// it ([`ownership`]): the core drives implicit ALUA from it. None by
    /// default; wrappers forward their inner backstore's.
    fn ownership(&self) -> Option<std::sync::Arc<dyn Ownership>> {
        None
    }

    /// State shared with every other target serving this medium (the
    /// persistent reservations of an image several gateways export), kept
    /// with the medium: [`shared_state`]. `None` (the default): the medium
    /// is this process's alone. Wrappers forward it.
    fn shared_state(&self) -> Option<std::sync::Arc<dyn SharedState>> {
        None
    }

    /// The daemon is stopping: give back now what other systems hold for
    /// this backstore (an RBD image's header watch and exclusive lock),
    /// which would otherwise stay until they time the dead process out (the
    /// OSDs' watch timeout, 30 s), making the other gateways of the image
    /// wait as long. I/O after it fails. Nothing by default; wrappers
    /// forward it.
    fn close(&self) {}

    /// [`Backstore::submit`] of a READ or WRITE only queues the request
    /// (librbd's AIO with `rbd_non_blocking_aio`): it never waits, not
    /// even for a lock held across a slow operation, so the engine may
    /// start it on the fabric's thread instead of waking a worker for it
    /// (a thread hop per I/O). False by default; a wrapper that may wait
    /// in `submit` (QoS) must not forward it.
    fn submit_never_blocks(&self) -> bool {
        false
    }

    /// WRITEs may reach this backstore in pieces ("streamed writes"): the
    /// fabric checks a WRITE when it arrives, then [`Backstore::submit`]s
    /// each burst of its data as a write of its own as soon as it is in,
    /// on the fabric's thread, and answers once every piece completed. So
    /// while this says true, `submit` of a write must never block (as
    /// [`Backstore::submit_never_blocks`]), and the pieces of one command
    /// may complete in any order. Pays where a write's latency is long
    /// next to its data phase (an RBD image: the OSDs see a write's first
    /// bytes while the initiator still sends the rest). False by default;
    /// wrappers do not forward it (they meter or transform whole writes).
    fn streams_writes(&self) -> bool {
        false
    }

    /// WRITEs of 256 KiB or more may reach this backstore in pieces, as
    /// for [`Backstore::streams_writes`] (smaller ones come whole): each
    /// burst is written while it is still in the cache it was received
    /// into, on the fabric's thread, instead of all of them from a
    /// buffer long evicted once the last is in. For memory backstores,
    /// whose `submit` is a short copy. False by default; wrappers do not
    /// forward it.
    fn streams_large_writes(&self) -> bool {
        false
    }

    /// WRITE data may be received straight into this backstore's memory
    /// ([`Backstore::land`], [`landing`]): the fabric then streams such a
    /// WRITE (checks at arrival, as for [`Backstore::streams_writes`]) and
    /// lands each burst as it arrives. False by default; wrappers do not
    /// forward it (they transform or meter what is written).
    fn lands_writes(&self) -> bool {
        false
    }

    /// Land `len` bytes at `offset` ([`landing`]): call `fill` on each
    /// contiguous [`Area`] of the medium that holds them, in order, and
    /// stop after one it did not fill. Returns the bytes landed; an error
    /// of `fill` is returned as is (what it landed before stays). Called
    /// only while [`Backstore::lands_writes`] says true.
    fn land(&self, _offset: u64, _len: usize, _fill: Fill<'_>) -> io::Result<usize> {
        Err(landing::unsupported())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A backstore that claims whatever capabilities it is given and records
    /// every call that reaches it.
    struct Probe {
        caps: Capabilities,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Probe {
        fn new(caps: Capabilities) -> Arc<Probe> {
            Arc::new(Probe {
                caps,
                calls: Mutex::new(Vec::new()),
            })
        }

        fn call(&self, name: &'static str) -> io::Result<()> {
            self.calls.lock().unwrap().push(name);
            Ok(())
        }

        fn take(&self) -> Vec<&'static str> {
            std::mem::take(&mut self.calls.lock().unwrap())
        }
    }

    impl Backstore for Probe {
        fn size(&self) -> u64 {
            1 << 20
        }
        fn capabilities(&self) -> Capabilities {
            self.caps
        }
        fn read_at(&self, buf: &mut [u8], _offset: u64) -> io::Result<()> {
            buf.fill(0);
            self.call("read_at")
        }
        fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
            self.call("write_at")
        }
        fn write_at_fua(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
            self.call("write_at_fua")
        }
        fn read_vectored_at(&self, _bufs: &IoVecs, _offset: u64) -> io::Result<()> {
            self.call("read_vectored_at")
        }
        fn write_vectored_at(&self, _bufs: &IoVecs, _offset: u64, _fua: bool) -> io::Result<()> {
            self.call("write_vectored_at")
        }
        fn flush(&self) -> io::Result<()> {
            self.call("flush")
        }
        fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
            self.call("discard")
        }
        fn allocation_at(&self, _offset: u64) -> io::Result<Option<Extent>> {
            self.call("allocation_at").map(|()| None)
        }
        fn resize(&self, _new_size: u64) -> io::Result<()> {
            self.call("resize")
        }
        fn write_zeroes(&self, _offset: u64, _len: u64) -> io::Result<()> {
            self.call("write_zeroes")
        }
        fn crypto_erase(&self) -> io::Result<()> {
            self.call("crypto_erase")
        }
        fn submit(&self, op: IoOp, done: Completion) {
            // Completes from another thread, as librbd or io_uring would.
            let r = self.call("submit");
            std::thread::spawn(move || done.complete(op, r));
        }

        fn on_resize(&self, _hook: ResizeHook) {
            self.calls.lock().unwrap().push("on_resize");
        }

        fn health(&self) -> Vec<(&'static str, u64)> {
            vec![("probes", 7)]
        }

        fn ownership(&self) -> Option<std::sync::Arc<dyn Ownership>> {
            self.calls.lock().unwrap().push("ownership");
            None
        }

        fn shared_state(&self) -> Option<std::sync::Arc<dyn SharedState>> {
            self.calls.lock().unwrap().push("shared_state");
            None
        }

        fn close(&self) {
            self.calls.lock().unwrap().push("close");
        }
    }

    /// The default, then one set of capabilities per flag that differs from
    /// the default in that flag only.
    fn each_flag() -> Vec<Capabilities> {
        let d = Capabilities::default();
        // No `..`: a new flag does not compile until it is listed below.
        let Capabilities {
            discard,
            write_zeroes,
            write_cache,
            read_only,
            rotational,
            optimal_io_size,
            resize,
            crypto_erase,
            async_submit,
        } = d;
        vec![
            d,
            Capabilities {
                discard: !discard,
                ..d
            },
            Capabilities {
                write_zeroes: !write_zeroes,
                ..d
            },
            Capabilities {
                write_cache: !write_cache,
                ..d
            },
            Capabilities {
                read_only: !read_only,
                ..d
            },
            Capabilities {
                rotational: !rotational,
                ..d
            },
            Capabilities {
                optimal_io_size: optimal_io_size + 65536,
                ..d
            },
            Capabilities {
                resize: !resize,
                ..d
            },
            Capabilities {
                crypto_erase: !crypto_erase,
                ..d
            },
            Capabilities {
                async_submit: !async_submit,
                ..d
            },
        ]
    }

    fn limited() -> QosLimits {
        QosLimits {
            bytes_per_sec: 1 << 40,
            ios_per_sec: 0,
        }
    }

    /// The wrappers change nothing about what the wrapped backstore can do
    /// (encryption adds the one thing it brings: a key to destroy).
    #[test]
    fn wrappers_report_the_inner_capabilities_for_every_flag() {
        let dir = tempfile::tempdir().unwrap();
        for (i, caps) in each_flag().into_iter().enumerate() {
            let inner = Probe::new(caps);
            let q = with_qos(inner.clone(), limited());
            assert_eq!(q.capabilities(), caps, "qos");
            let key = dir.path().join(format!("k{i}"));
            let c = CryptBackstore::open(inner.clone(), &key).unwrap();
            let want = Capabilities {
                crypto_erase: true,
                ..caps
            };
            assert_eq!(c.capabilities(), want, "crypt");
            // Stacked, as rtarget builds them: QoS outside encryption.
            let both = with_qos(Arc::new(c), limited());
            assert_eq!(both.capabilities(), want, "qos(crypt)");
        }
    }

    /// Every operation reaches the wrapped backstore, so a wrapped LU never
    /// falls back to a trait default (e.g. `Unsupported` for discard) while
    /// its capabilities say the operation works.
    #[test]
    fn wrappers_forward_every_operation() {
        let all = Capabilities {
            discard: true,
            write_zeroes: true,
            resize: true,
            crypto_erase: true,
            ..Capabilities::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let inner = Probe::new(all);
        let crypt = CryptBackstore::open(inner.clone(), &dir.path().join("k")).unwrap();
        let qos = with_qos(inner.clone(), limited());
        let ops = [
            "size",
            "read_at",
            "write_at",
            "write_at_fua",
            "read_vectored_at",
            "write_vectored_at",
            "flush",
            "discard",
            "allocation_at",
            "resize",
            "write_zeroes",
            "crypto_erase",
            "submit_read",
            "submit_write",
            "on_resize",
            "ownership",
            "shared_state",
            "close",
        ];
        for (name, w) in [("qos", &*qos), ("crypt", &crypt as &dyn Backstore)] {
            for op in ops {
                let mut buf = [0u8; 512];
                let r = match op {
                    "size" => {
                        assert_eq!(w.size(), inner.size(), "{name}: size");
                        assert_eq!(w.health(), [("probes", 7)], "{name}: health");
                        continue;
                    }
                    "read_at" => w.read_at(&mut buf, 0),
                    "write_at" => w.write_at(&buf, 0),
                    "write_at_fua" => w.write_at_fua(&buf, 0),
                    "read_vectored_at" | "write_vectored_at" => {
                        let p = buf.as_mut_ptr();
                        // SAFETY: `buf` outlives the lent segment.
                        let v = unsafe { IoVecs::new([(p, 512)], Arc::new(())) };
                        if op == "read_vectored_at" {
                            w.read_vectored_at(&v, 0)
                        } else {
                            w.write_vectored_at(&v, 0, true)
                        }
                    }
                    "flush" => w.flush(),
                    "discard" => w.discard(0, 512),
                    "allocation_at" => w.allocation_at(0).map(|_| ()),
                    "resize" => w.resize(2 << 20),
                    "write_zeroes" => w.write_zeroes(0, 512),
                    "crypto_erase" => w.crypto_erase(),
                    "on_resize" => {
                        w.on_resize(Box::new(|_| {}));
                        Ok(())
                    }
                    "ownership" => {
                        assert!(w.ownership().is_none());
                        Ok(())
                    }
                    "shared_state" => {
                        assert!(w.shared_state().is_none());
                        Ok(())
                    }
                    "close" => {
                        w.close();
                        Ok(())
                    }
                    "submit_read" => submit(
                        w,
                        IoOp::Read {
                            offset: 0,
                            buf: vec![0; 512],
                        },
                    ),
                    "submit_write" => submit(
                        w,
                        IoOp::Write {
                            offset: 0,
                            buf: vec![0; 512],
                            len: 512,
                            fua: false,
                        },
                    ),
                    _ => unreachable!(),
                };
                r.unwrap_or_else(|e| panic!("{name}: {op}: {e}"));
                let reached = inner.take();
                // Encryption destroys its own key: erase stays in the wrapper.
                let want: &[&str] = if name == "crypt" && op == "crypto_erase" {
                    &[]
                } else if name == "crypt" && op == "read_vectored_at" {
                    // Encryption needs the bytes: it bounces through its
                    // own slice methods (which decrypt / encrypt).
                    &["read_at"]
                } else if name == "crypt" && op == "write_vectored_at" {
                    &["write_at_fua"]
                } else if op.starts_with("submit") {
                    // Not the synchronous default: the inner asynchronous path.
                    &["submit"]
                } else {
                    &[op]
                };
                assert_eq!(reached, want, "{name}: {op}");
            }
        }
    }

    /// One request through `submit`, awaited (the probe completes it from
    /// another thread).
    fn submit(w: &dyn Backstore, op: IoOp) -> io::Result<()> {
        let (tx, rx) = std::sync::mpsc::channel();
        w.submit(op, Completion::new(move |_, r| tx.send(r).unwrap()));
        rx.recv().unwrap()
    }
}
