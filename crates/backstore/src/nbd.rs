//! nbd: a backstore that is a client of an NBD server (qemu-nbd,
//! qemu-storage-daemon, nbdkit, or a handler anyone writes in any language),
//! over a unix socket or TCP.
//!
//! Handshake: fixed newstyle, `NBD_OPT_STRUCTURED_REPLY` when the server
//! accepts it, then `NBD_OPT_GO` with the export name (asking for block size
//! constraints). Transmission: one request in flight per connection, under
//! its mutex; with servers that advertise `CAN_MULTI_CONN`, `connect_multi`
//! opens a few connections and each request takes an idle one. Replies are
//! parsed as untrusted bytes: every magic, cookie, length and chunk offset is
//! checked, and a protocol violation poisons the connection rather than
//! letting a later request read a misaligned stream. The next request on a
//! poisoned connection opens it again (a restarted server comes back without
//! relogin), unless the owner turned that off.
//!
//! A server that advertises `SEND_FLUSH` may hold acknowledged writes in a
//! volatile cache until a flush. When a connection breaks while such writes
//! are unflushed (the server may have died with them), the loss is recorded
//! in a sticky [`FlushFault`]: every later flush and FUA write fails, so the
//! initiator's SYNCHRONIZE CACHE reports it instead of a silent reconnect
//! hiding it. Every socket has connect and I/O timeouts ([`NbdTimeouts`]).

use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::{Backstore, Capabilities, FlushFault};

mod proto;
mod socket;
use proto::*;
pub use proto::{parse_handshake, parse_reply, ParsedReply};
pub use socket::{NbdTimeouts, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT};

/// Where the NBD server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NbdAddr {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

struct Conn {
    s: Box<dyn Stream>,
    cookie: u64,
    /// A failed or violated exchange left the stream at an unknown position.
    broken: bool,
    /// The id this connection's server gave the `base:allocation` context.
    alloc_ctx: Option<u32>,
}

pub struct NbdBackstore {
    addr: NbdAddr,
    export: String,
    size: u64,
    flags: u16,
    structured: bool,
    max_payload: u32,
    preferred: u32,
    /// The server answers NBD_CMD_BLOCK_STATUS for `base:allocation`.
    block_status: bool,
    /// One connection, or several when the server allows multi-conn.
    conns: Vec<Mutex<Conn>>,
    next: AtomicUsize,
    /// Reconnect a broken connection on its next request.
    reconnect: bool,
    timeouts: NbdTimeouts,
    /// Acknowledged writes that sat in the server's volatile cache, and how
    /// many of them the last successful flush covered.
    writes: AtomicU64,
    flushed: AtomicU64,
    /// Lost writes or a failed flush: later flushes fail (module docs).
    fault: FlushFault,
    /// Broken connections opened again (health, for monitoring).
    reconnects: AtomicU64,
}

/// Connect and negotiate, with `t` bounding every wait.
fn open_conn(
    addr: &NbdAddr,
    export: &str,
    t: &NbdTimeouts,
) -> io::Result<(Box<dyn Stream>, Negotiated)> {
    let mut s = socket::open(addr, t)?;
    let n = handshake(s.as_mut(), export).map_err(|e| socket::explain(e, t))?;
    Ok((s, n))
}

impl NbdBackstore {
    /// Connect, negotiate and enter transmission for export `export`, on
    /// one connection.
    pub fn connect(addr: NbdAddr, export: &str) -> io::Result<Self> {
        Self::connect_multi(addr, export, 1)
    }

    /// Like `connect`, but open up to `max_conns` connections when the
    /// server advertises `CAN_MULTI_CONN` (a flush on one then covers writes
    /// done on all), so requests from different threads run in parallel.
    pub fn connect_multi(addr: NbdAddr, export: &str, max_conns: usize) -> io::Result<Self> {
        Self::connect_with(addr, export, max_conns, NbdTimeouts::default())
    }

    /// Like `connect_multi`, with explicit timeouts for every connect and
    /// every request.
    pub fn connect_with(
        addr: NbdAddr,
        export: &str,
        max_conns: usize,
        timeouts: NbdTimeouts,
    ) -> io::Result<Self> {
        let (s, n) = open_conn(&addr, export, &timeouts)?;
        let conn = |s, alloc_ctx| {
            Mutex::new(Conn {
                s,
                cookie: 0,
                broken: false,
                alloc_ctx,
            })
        };
        let mut conns = vec![conn(s, n.alloc_ctx)];
        if n.flags & TF_CAN_MULTI_CONN != 0 {
            while conns.len() < max_conns {
                let (s, m) = open_conn(&addr, export, &timeouts)?;
                let same = (m.size, m.flags, m.structured) == (n.size, n.flags, n.structured);
                if !same || m.alloc_ctx.is_some() != n.alloc_ctx.is_some() {
                    return Err(proto("connections to the same export disagree"));
                }
                conns.push(conn(s, m.alloc_ctx));
            }
        }
        Ok(NbdBackstore {
            addr,
            export: export.to_owned(),
            size: n.size,
            flags: n.flags,
            structured: n.structured,
            max_payload: n.max_payload,
            preferred: n.preferred,
            block_status: n.alloc_ctx.is_some(),
            conns,
            next: AtomicUsize::new(0),
            reconnect: true,
            timeouts,
            writes: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            fault: FlushFault::new(),
            reconnects: AtomicU64::new(0),
        })
    }

    /// The timeouts every connect and request of this client runs with.
    pub fn timeouts(&self) -> NbdTimeouts {
        self.timeouts
    }

    /// Whether acknowledged writes may have been lost (or a flush failed):
    /// every flush and FUA write then fails until a new client is opened.
    pub fn lost_writes(&self) -> bool {
        self.fault.is_set()
    }

    /// The server may hold acknowledged writes until a flush.
    fn volatile(&self) -> bool {
        self.has(TF_SEND_FLUSH) && !self.has(TF_READ_ONLY)
    }

    /// Count an acknowledged write the server may still hold in its cache.
    fn wrote(&self) {
        if self.volatile() {
            self.writes.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn unflushed(&self) -> u64 {
        self.writes
            .load(Ordering::Acquire)
            .saturating_sub(self.flushed.load(Ordering::Acquire))
    }

    /// For log lines and errors.
    fn name(&self) -> String {
        let addr = match &self.addr {
            NbdAddr::Unix(p) => p.display().to_string(),
            NbdAddr::Tcp(a) => a.to_string(),
        };
        format!("nbd {addr} export {:?}", self.export)
    }

    /// How many connections requests are spread over.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// An idle connection, or (all busy) the next one in turn.
    fn pick(&self) -> io::Result<MutexGuard<'_, Conn>> {
        for c in &self.conns {
            if let Ok(g) = c.try_lock() {
                return Ok(g);
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i]
            .lock()
            .map_err(|_| io::Error::other("nbd lock poisoned"))
    }

    /// Whether a connection failed mid-exchange (server gone, stream out of
    /// sync): requests on it fail until the caller connects anew. A server's
    /// error answer to one request does not break the connection.
    pub fn is_broken(&self) -> bool {
        self.conns
            .iter()
            .any(|c| c.lock().map_or(true, |c| c.broken))
    }

    /// Whether a broken connection is opened again (and the export
    /// renegotiated) by the next request that picks it, so a restarted
    /// server is picked up; the request that saw the failure still fails.
    /// On by default; a caller that supervises the server itself (the qemu
    /// backstore) turns it off to learn about every restart.
    pub fn set_reconnect(&mut self, on: bool) {
        self.reconnect = on;
    }

    /// Open `c` again; the export must look exactly as before.
    fn reopen(&self, c: &mut Conn) -> io::Result<()> {
        let (s, n) = open_conn(&self.addr, &self.export, &self.timeouts)?;
        let same = (n.size, n.flags, n.structured) == (self.size, self.flags, self.structured);
        if !same || n.alloc_ctx.is_some() != self.block_status {
            return Err(proto("the export changed across a reconnect"));
        }
        tracing::info!(addr = ?self.addr, export = %self.export, "nbd: reconnected");
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        *c = Conn {
            s,
            cookie: 0,
            broken: false,
            alloc_ctx: n.alloc_ctx,
        };
        Ok(())
    }

    pub fn addr(&self) -> &NbdAddr {
        &self.addr
    }

    pub fn export(&self) -> &str {
        &self.export
    }

    /// Whether the server agreed to structured replies.
    pub fn structured_replies(&self) -> bool {
        self.structured
    }

    fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    fn check(&self, off: u64, len: u64) -> io::Result<()> {
        match off.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "beyond the end of the export",
            )),
        }
    }

    /// Send one request and read its reply; READ data lands in `read`.
    fn request(
        &self,
        cmd: u16,
        flags: u16,
        off: u64,
        len: u32,
        payload: &[u8],
        reply: Reply<'_>,
    ) -> io::Result<()> {
        self.exchange(cmd, flags, off, len, payload, reply)?
    }

    /// [`NbdBackstore::request`], telling a broken connection (outer
    /// error) from the server's answer (inner).
    fn exchange(
        &self,
        cmd: u16,
        flags: u16,
        off: u64,
        len: u32,
        payload: &[u8],
        reply: Reply<'_>,
    ) -> Exchange {
        let mut c = self.pick()?;
        if c.broken {
            let why = if self.reconnect {
                match self.reopen(&mut c) {
                    Ok(()) => None,
                    Err(e) => Some(e.to_string()),
                }
            } else {
                Some("reconnecting is off".into())
            };
            if let Some(why) = why {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    format!("nbd connection failed earlier ({why})"),
                ));
            }
        }
        c.cookie = c.cookie.wrapping_add(1);
        let cookie = c.cookie;
        let mut h = [0u8; 28];
        h[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        h[4..6].copy_from_slice(&flags.to_be_bytes());
        h[6..8].copy_from_slice(&cmd.to_be_bytes());
        h[8..16].copy_from_slice(&cookie.to_be_bytes());
        h[16..24].copy_from_slice(&off.to_be_bytes());
        h[24..28].copy_from_slice(&len.to_be_bytes());
        let ctx = c.alloc_ctx;
        let s = c.s.as_mut();
        let r =
            write_all_vectored(s, &mut [IoSlice::new(&h), IoSlice::new(payload)]).and_then(|()| {
                if self.structured {
                    read_structured(s, cookie, off, reply, ctx)
                } else {
                    read_simple(s, cookie, reply)
                }
            });
        match r {
            Ok(answer) => Ok(answer),
            Err(e) => {
                c.broken = true;
                let e = socket::explain(e, &self.timeouts);
                let n = self.unflushed();
                if n > 0 {
                    // The server may be gone with them; a reconnect must
                    // not make the next flush look like it saved them.
                    self.fault.record(
                        &self.name(),
                        &format!(
                            "connection lost ({e}) with {n} acknowledged writes not yet flushed"
                        ),
                    );
                }
                Err(e)
            }
        }
    }

    /// Split a data transfer at the server's payload limit.
    fn chunks(&self, off: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize)> {
        let max = self.max_payload as usize;
        (0..len)
            .step_by(max.max(1))
            .map(move |done| (off + done as u64, done, max.min(len - done)))
    }

    fn write_flags(&self, buf: &[u8], offset: u64, flags: u16) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        if self.has(TF_READ_ONLY) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "read-only NBD export",
            ));
        }
        for (off, done, n) in self.chunks(offset, buf.len()) {
            self.request(
                CMD_WRITE,
                flags,
                off,
                n as u32,
                &buf[done..done + n],
                Reply::Empty,
            )?;
            if flags & CMD_FLAG_FUA == 0 {
                self.wrote();
            }
        }
        Ok(())
    }
}

impl Backstore for NbdBackstore {
    fn size(&self) -> u64 {
        self.size
    }

    fn capabilities(&self) -> Capabilities {
        let ro = self.has(TF_READ_ONLY);
        Capabilities {
            // TRIM doesn't promise zeroes on read; WRITE_ZEROES (holes allowed) does.
            discard: !ro && self.has(TF_SEND_WRITE_ZEROES),
            write_zeroes: !ro && self.has(TF_SEND_WRITE_ZEROES),
            write_cache: !ro && self.has(TF_SEND_FLUSH),
            read_only: ro,
            rotational: self.has(TF_ROTATIONAL),
            optimal_io_size: self.preferred,
            // NBD has no resize request.
            resize: false,
            crypto_erase: false,
            async_submit: false,
        }
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(offset, buf.len() as u64)?;
        let len = buf.len();
        for (off, done, n) in self.chunks(offset, len) {
            self.request(
                CMD_READ,
                0,
                off,
                n as u32,
                &[],
                Reply::Read(&mut buf[done..done + n]),
            )?;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_flags(buf, offset, 0)
    }

    fn write_at_fua(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.fault.check()?;
        if self.has(TF_SEND_FUA) {
            self.write_flags(buf, offset, CMD_FLAG_FUA)
        } else {
            self.write_at(buf, offset)?;
            self.flush()
        }
    }

    fn flush(&self) -> io::Result<()> {
        self.fault.check()?;
        if !self.volatile() {
            // No volatile cache advertised: writes are already stable.
            return Ok(());
        }
        let upto = self.writes.load(Ordering::Acquire);
        let mut answer = self.exchange(CMD_FLUSH, 0, 0, 0, &[], Reply::Empty);
        if answer.is_err() && self.reconnect && !self.fault.is_set() {
            // The connection broke with nothing unflushed: nothing was
            // lost, and a flush is idempotent, so ask again on a new one.
            answer = self.exchange(CMD_FLUSH, 0, 0, 0, &[], Reply::Empty);
        }
        match answer {
            Ok(Ok(())) => {
                self.flushed.fetch_max(upto, Ordering::AcqRel);
                Ok(())
            }
            // The server's own writeback failed: what it held may be gone.
            Ok(Err(e)) => Err(self
                .fault
                .record(&self.name(), &format!("the server failed a flush: {e}"))),
            Err(e) => Err(self.fault.check().err().unwrap_or(e)),
        }
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        if !self.has(TF_SEND_WRITE_ZEROES) {
            return Err(io::ErrorKind::Unsupported.into());
        }
        self.write_zeroes(offset, len)
    }

    fn allocation_at(&self, offset: u64) -> io::Result<Option<crate::Extent>> {
        self.block_status(offset)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        if !self.has(TF_SEND_WRITE_ZEROES) {
            let zero = vec![0u8; (self.max_payload as u64).min(len) as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zero.len() as u64);
                self.write_at(&zero[..n as usize], offset + done)?;
                done += n;
            }
            return Ok(());
        }
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MAX_ZERO_REQUEST);
            self.request(
                CMD_WRITE_ZEROES,
                0,
                offset + done,
                n as u32,
                &[],
                Reply::Empty,
            )?;
            self.wrote();
            done += n;
        }
        Ok(())
    }

    fn health(&self) -> Vec<(&'static str, u64)> {
        vec![("reconnects", self.reconnects.load(Ordering::Relaxed))]
    }
}

impl NbdBackstore {
    /// `allocation_at` through NBD_CMD_BLOCK_STATUS (one extent).
    fn block_status(&self, offset: u64) -> io::Result<Option<crate::Extent>> {
        if !self.block_status {
            return Ok(None);
        }
        if offset >= self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "offset beyond size",
            ));
        }
        let len = (self.size - offset).min(1 << 30) as u32;
        let mut st = None;
        self.request(
            CMD_BLOCK_STATUS,
            CMD_FLAG_REQ_ONE,
            offset,
            len,
            &[],
            Reply::Status(&mut st),
        )?;
        let (n, flags) = st.ok_or_else(|| proto("block status reply without an extent"))?;
        if n == 0 {
            return Err(proto("empty block status extent"));
        }
        Ok(Some(crate::Extent {
            // Only a hole that also reads as zeroes is unmapped for the core.
            allocated: flags & (STATE_HOLE | STATE_ZERO) != STATE_HOLE | STATE_ZERO,
            len: u64::from(n).min(self.size - offset),
        }))
    }
}

impl Drop for NbdBackstore {
    fn drop(&mut self) {
        let mut h = [0u8; 28];
        h[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        h[6..8].copy_from_slice(&CMD_DISC.to_be_bytes());
        for c in &mut self.conns {
            if let Ok(c) = c.get_mut() {
                if !c.broken {
                    let _ = c.s.write_all(&h);
                }
            }
        }
    }
}
