//! One connection thread, run to completion: the receive buffer (one large
//! `recv`, then every complete PDU in it is handled), the login phase, then
//! the full-feature loop that hands PDUs to the session, flushes the
//! responses of the whole batch in one `writev`, pings idle initiators with
//! NOP-In and reacts to stop requests (Async logout request, kill).

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iscsi_wire::pdu::frame_len;
use iscsi_wire::{parse_frame, Bhs, Digests};

use crate::server::{ConnHandle, Shared, STOP_KILL, STOP_LOGOUT, STOP_NONE};
use crate::session::{Action, Session};
use crate::txq::{TxQueue, FLUSH_THRESHOLD};

/// Receive timeout: how often an idle thread looks at timers and stop flags.
pub const TICK: Duration = Duration::from_millis(200);
/// Initial receive buffer: one recv can bring many PDUs or a big segment.
const RX_INITIAL: usize = 1 << 20;
/// How long the initiator gets to log out after an Async logout request.
const LOGOUT_GRACE: Duration = Duration::from_secs(3);

/// Receive buffer with a consumed prefix; compacted before it fills up.
pub struct RxBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RxBuf {
    pub fn new() -> RxBuf {
        RxBuf {
            buf: vec![0; RX_INITIAL],
            start: 0,
            end: 0,
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// One `recv` into the free tail. `need` is the size of the PDU being
    /// assembled (0 if unknown); the buffer grows to hold it.
    pub fn fill(&mut self, stream: &mut TcpStream, need: usize) -> io::Result<usize> {
        self.fill_upto(stream, need, usize::MAX)
    }

    /// `fill`, reading at most `max` bytes.
    pub fn fill_upto(
        &mut self,
        stream: &mut TcpStream,
        need: usize,
        max: usize,
    ) -> io::Result<usize> {
        let stop = self.make_room(need, max);
        let n = stream.read(&mut self.buf[self.end..stop])?;
        self.end += n;
        Ok(n)
    }

    /// `fill_upto` that does not wait: `WouldBlock` when nothing is there
    /// (busy polling, `crate::busypoll`).
    pub fn fill_upto_nonblocking(
        &mut self,
        fd: std::os::fd::RawFd,
        need: usize,
        max: usize,
    ) -> io::Result<usize> {
        let stop = self.make_room(need, max);
        let tail = &mut self.buf[self.end..stop];
        // SAFETY: `tail` is initialised, writable memory of `tail.len()`
        // bytes owned by this buffer; recv writes at most that many.
        let n = unsafe { libc::recv(fd, tail.as_mut_ptr().cast(), tail.len(), libc::MSG_DONTWAIT) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.end += n as usize;
        Ok(n as usize)
    }

    /// Compact and grow so that a PDU of `need` bytes fits; the end of the
    /// free tail one receive of at most `max` bytes may fill.
    fn make_room(&mut self, need: usize, max: usize) -> usize {
        let avail = self.end - self.start;
        let want = need.max(avail + 1);
        if self.buf.len() - self.start < want || self.buf.len() - self.end < 16 * 1024 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end = avail;
            self.start = 0;
        }
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        self.end.saturating_add(max).min(self.buf.len())
    }
}

/// The socket and both buffers of a connection.
pub struct Io {
    pub stream: TcpStream,
    pub rx: RxBuf,
    pub tx: TxQueue,
    pub handle: Arc<ConnHandle>,
}

impl Io {
    pub fn flush(&mut self) -> io::Result<()> {
        // A send in the middle of the batch that failed emptied the queue
        // (`TxQueue::send_live`): the flush reports it.
        if self.tx.is_empty() && !self.tx.is_broken() {
            return Ok(());
        }
        self.tx.flush(&self.stream)
    }

    /// Bytes the next PDU needs in total, if its header has arrived.
    pub fn pending_need(&self, digests: Digests) -> usize {
        Bhs::from_slice(self.rx.data()).map_or(0, |b| frame_len(&b, digests))
    }

    pub fn stop_requested(&self) -> u8 {
        self.handle.stop.load(Ordering::SeqCst)
    }
}

/// The read size between large PDUs (see `full_feature`).
const STREAMING_READ: usize = 4096;

/// Whether a receive error is just the tick timeout.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Close so that the last PDUs (Logout Response, Reject) reach the peer:
/// closing a socket with unread input sends a RST, which can make the peer
/// discard what we sent. Send FIN first, then drain input briefly.
fn graceful_close(io: &mut Io) {
    let _ = io.stream.shutdown(std::net::Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut scratch = [0u8; 4096];
    while Instant::now() < deadline {
        match io.stream.read(&mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// Thread body of one connection.
pub fn run(shared: Arc<Shared>, handle: Arc<ConnHandle>, stream: TcpStream, peer: SocketAddr) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    if stream.set_read_timeout(Some(TICK)).is_err() {
        return;
    }
    // A stuck initiator must not block shutdown forever on a full socket.
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    // Large Data-In batches: copy and transmit in cache-sized steps.
    crate::send_tune::tune(stream.as_raw_fd());
    let mut tx = TxQueue::new();
    tx.bind(stream.as_raw_fd());
    let mut io = Io {
        stream,
        rx: RxBuf::new(),
        tx,
        handle,
    };
    let login = crate::login::run(&shared, &mut io, peer, local);
    shared.login_finished(&io.handle);
    let Some(login) = login else {
        // A login reject must not be lost to a RST.
        graceful_close(&mut io);
        return;
    };
    let mut sess = Session::new(Arc::clone(&shared), login, local, io.handle.id);
    sess.conn = Some(Arc::clone(&io.handle));
    full_feature(&mut sess, &mut io);
    sess.end();
}

fn full_feature(sess: &mut Session, io: &mut Io) {
    let mut last_rx = Instant::now();
    let mut logout_deadline: Option<Instant> = None;
    // While large writes stream in (the last PDU carried a big data
    // segment and write tasks wait for Data-Out), read only up to the end
    // of the PDU at hand, or a little
    // when none is pending: a Data-Out header then arrives with little
    // data behind it and the rest goes straight into its task buffer.
    let mut streaming = false;
    loop {
        if !handle_received(sess, io, &mut streaming) {
            return;
        }
        // Answers of pool tasks that finished meanwhile join this batch.
        if sess.offload.active() {
            sess.reap(&mut io.tx);
        }
        // TMFs of the session's other connections reaching our tasks.
        if !sess.serve_aborts(&mut io.tx) {
            return;
        }
        // Moved onto the flow's CPU, the send hands the CPU to the
        // initiator (`crate::flow_cpu`).
        if let Some(f) = sess.flow_cpu.as_mut() {
            f.sending();
        }
        let sent = io.flush();
        if let Some(f) = sess.flow_cpu.as_mut() {
            f.sent();
        }
        if sent.is_err() {
            return;
        }
        // The bursts received meanwhile go to their streams now that the
        // R2Ts they earned are out (`Session::feed_due`).
        sess.feed_due(&mut io.tx);
        match io.stop_requested() {
            STOP_NONE => {}
            STOP_LOGOUT => {
                if logout_deadline.is_none() {
                    sess.request_logout(&mut io.tx);
                    if io.flush().is_err() {
                        return;
                    }
                    logout_deadline = Some(Instant::now() + LOGOUT_GRACE);
                }
            }
            STOP_KILL => return,
            _ => return,
        }
        if logout_deadline.is_some_and(|d| Instant::now() > d) {
            tracing::info!(initiator = %sess.initiator_name, "no logout after the request, closing");
            return;
        }
        if sess.offload.active() && (sess.offload.congested() || sess.offload.waits_elsewhere()) {
            // Pool tasks in flight: wake for their completions as well as
            // for the socket. (Without any, the plain blocking recv below
            // is the whole wait: the inline path pays nothing for this;
            // nor do streamed writes with no piece in flight, which only
            // this thread moves on.)
            // Congested: only for completions; nothing is read meanwhile,
            // so neither is a NOP-In ping due (its answer could be unread).
            let congested = sess.offload.congested();
            let sock = (!congested).then(|| io.stream.as_raw_fd());
            let ready = crate::offload::wait(&sess.offload, sock, TICK);
            if congested {
                continue;
            }
            if !ready.socket {
                if !ready.sink && idle_tick(sess, last_rx, &mut io.tx) == Action::Close {
                    return;
                }
                continue;
            }
        }
        match crate::direct::recv_direct(sess, io, &mut last_rx) {
            Some(Action::Close) => {
                let _ = io.flush();
                graceful_close(io);
                return;
            }
            Some(Action::Continue) => {
                streaming = true;
                continue;
            }
            None => {}
        }
        let need = io.pending_need(sess.digests);
        let avail = io.rx.data().len();
        let max = match streaming {
            true if need > avail => need - avail,
            true => STREAMING_READ,
            false => usize::MAX,
        };
        // Moved onto the flow's CPU: no spin (`FlowCpu::is_moved`), one
        // blocking receive.
        let spin = sess.flow_cpu.as_ref().is_none_or(|f| !f.is_moved());
        let got = match sess.busy_poll.as_mut() {
            Some(p) if spin => p.recv(&mut io.rx, &mut io.stream, need, max),
            _ => io.rx.fill_upto(&mut io.stream, need, max),
        };
        match got {
            Ok(0) => return,
            Ok(_) => last_rx = Instant::now(),
            Err(e) if is_timeout(&e) => match idle_tick(sess, last_rx, &mut io.tx) {
                Action::Close => return,
                Action::Continue => {}
            },
            Err(_) => return,
        }
    }
}

/// Nothing arrived for a tick. A LUN table the management side installed
/// meanwhile is taken now, not at the next command: an idle session lets go
/// of the devices it lost, and a deleted or replaced object's backstore is
/// closed (its RBD lock released) as soon as its last command ends. Then
/// the NOP-In timer.
fn idle_tick(sess: &mut Session, last_rx: Instant, tx: &mut TxQueue) -> Action {
    sess.refresh_luns();
    sess.nop_timer(last_rx, tx)
}

/// Handles every complete PDU the receive buffer holds, unless the pool
/// tasks hold the connection's memory budget (back-pressure: the rest
/// waits, unread, until some complete) or the session was killed
/// (reinstated, reset): PDUs already read but not handled belong to a
/// session that no longer exists and must not run. False when the
/// connection ends.
fn handle_received(sess: &mut Session, io: &mut Io, streaming: &mut bool) -> bool {
    // Every answer sent before this batch; the batch's last PDU tells
    // (its ExpStatSN) whether the initiator had read them all (see
    // `Poller::peer_behind`).
    let answered = sess.statsn;
    let mut last_exp_statsn = None;
    let mut pdus = 0u32;
    loop {
        if sess.offload.active() && sess.offload.congested() {
            break;
        }
        if io.stop_requested() == STOP_KILL {
            return false;
        }
        let digests = sess.digests;
        let frame = match parse_frame(io.rx.data(), digests, sess.max_recv) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(initiator = %sess.initiator_name, error = %e,
                    "framing error, closing the connection");
                let _ = io.flush();
                return false;
            }
        };
        let n = frame.total_len;
        pdus += 1;
        last_exp_statsn = Some(iscsi_wire::request::exp_statsn(&frame.bhs));
        let big = frame.data.len() >= crate::direct::DIRECT_MIN;
        if let Some(next) = io.rx.data().get(n..) {
            sess.prefetch_next(next);
        }
        let action = sess.handle(&frame, &mut io.tx);
        // Only when Data-Out is still expected: a run of writes whose
        // data all came as immediate data must keep reading in bulk.
        *streaming = big && !sess.tasks.is_empty();
        io.rx.consume(n);
        if action == Action::Close {
            let _ = io.flush();
            graceful_close(io);
            return false;
        }
        // A full queue goes out; so do the answers of a large batch in
        // parts, for the initiator to turn around while we handle the
        // rest (split_flush.rs).
        let queued = io.tx.queued();
        let due =
            queued > FLUSH_THRESHOLD || crate::split_flush::due(pdus, queued, io.rx.data().len());
        if due && io.flush().is_err() {
            return false;
        }
    }
    let behind = last_exp_statsn.is_some_and(|exp| answered.wrapping_sub(exp) as i32 > 0);
    if let (Some(_), Some(p)) = (last_exp_statsn, sess.busy_poll.as_mut()) {
        p.batch(behind, pdus);
    }
    if let Some(f) = sess.flow_cpu.as_mut() {
        let deep = behind || sess.offload.active() || !sess.tasks.is_empty();
        f.batch(io.stream.as_raw_fd(), pdus, deep);
    }
    true
}
