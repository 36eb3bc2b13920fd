//! Command flow limits and stale work (security issue, item 5 and session
//! reinstatement): the command window is enforced (commands past MaxCmdSN
//! never run, immediate commands are bounded), an initiator that pipelines
//! thousands of large READs without reading the answers cannot grow the
//! server's memory past the documented bound, and work of a session that
//! died or was reinstated never lands after the new session's login.
//!
//! The tests share one process (RSS is measured in-process), so they run
//! one at a time.

mod common;

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backstore::{Backstore, Capabilities};
use common::*;
use iscsi::IscsiServer;
use iscsi_wire::response::{DataIn, Reject, ScsiResponse};
use iscsi_wire::{Bhs, Opcode};
use target_core::{Device, DeviceOptions, IoEngine};

/// One test at a time: the RSS test measures the whole process.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// RAM whose writes block while the gate is closed, and which remembers
/// whether a write started after `late` was set.
struct GatedStore {
    mem: Arc<MemStore>,
    open: Mutex<bool>,
    cv: Condvar,
    started: AtomicUsize,
    completed: AtomicUsize,
    late: AtomicBool,
    late_writes: AtomicUsize,
}

impl GatedStore {
    fn new(size: usize) -> Arc<GatedStore> {
        Arc::new(GatedStore {
            mem: MemStore::new(size),
            open: Mutex::new(true),
            cv: Condvar::new(),
            started: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            late: AtomicBool::new(false),
            late_writes: AtomicUsize::new(0),
        })
    }

    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.cv.notify_all();
    }

    /// Open the gate after `after` on another thread.
    fn open_later(self: &Arc<Self>, after: Duration) -> std::thread::JoinHandle<()> {
        let s = Arc::clone(self);
        std::thread::spawn(move || {
            std::thread::sleep(after);
            s.set(true);
        })
    }

    fn pass(&self) {
        let mut g = self.open.lock().unwrap();
        while !*g {
            g = self.cv.wait(g).unwrap();
        }
    }
}

impl Backstore for GatedStore {
    fn size(&self) -> u64 {
        self.mem.size()
    }
    fn capabilities(&self) -> Capabilities {
        self.mem.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.pass();
        self.mem.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.late.load(Ordering::SeqCst) {
            self.late_writes.fetch_add(1, Ordering::SeqCst);
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        self.pass();
        let r = self.mem.write_at(buf, offset);
        self.completed.fetch_add(1, Ordering::SeqCst);
        r
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

fn server_on(
    store: Arc<dyn Backstore>,
    engine: IoEngine,
) -> (Arc<IscsiServer>, std::net::SocketAddr) {
    let mut opts = DeviceOptions::new("flow0", "5b3c9a2e-0000-4000-8000-0000000000f1");
    opts.io_engine = engine;
    let dev = Device::new(opts, store);
    let (s, addr) = serve_device(dev);
    (s, addr)
}

fn read16(lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = 0x88;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn vm_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb << 10
}

/// MaxCmdSN and ExpCmdSN of a PDU that carries them.
fn window_of(p: &Pdu) -> (u32, u32) {
    (p.bhs.u32_at(28), p.bhs.u32_at(32))
}

/// The attack of item 5: 20,000 pipelined READ(16) of 8 MiB on a pool LU,
/// then 2,000 more with CmdSN far past MaxCmdSN, answers never read. The
/// server's memory must stay below the bound docs/io-engines-and-qos.md
/// states for one connection (pool budget + answers being flushed +
/// buffer cache + receive buffer).
#[test]
fn pipelined_large_reads_without_reading_answers_keep_memory_bounded() {
    read_attack(IoEngine::Pool, 8 << 20);
}

/// The same with an Expected Data Transfer Length of 0: the CDB still
/// asks for 8 MiB, which the core reads and the fabric must not keep.
#[test]
fn pipelined_reads_with_a_short_edtl_keep_memory_bounded() {
    read_attack(IoEngine::Pool, 0);
}

/// On an inline LU the connection answers each READ before reading on.
#[test]
fn pipelined_large_reads_on_an_inline_lu_keep_memory_bounded() {
    read_attack(IoEngine::Inline, 8 << 20);
}

fn read_attack(engine: IoEngine, edtl: u32) {
    /// Growth of the process RSS the test allows: the documented bound of
    /// one connection (see "Command window and memory bounds" in
    /// docs/io-engines-and-qos.md), with room for the allocator.
    const BOUND: u64 = 256 << 20;
    let _g = serial();
    let (srv, addr) = server_on(MemStore::new(16 << 20), engine);
    let mut c = session(addr, &[]);
    // Warm up the pool and this connection's buffers.
    let (st, data, _) = c.read_cmd(&read16(0, 16384), 8 << 20);
    assert_eq!((st, data.len()), (0, 8 << 20));
    drop(data);
    let base = vm_rss();
    // Build the whole stream up front: the sender only writes.
    let mut stream = Vec::new();
    for _ in 0..20_000 {
        let cmd = c.scsi_cmd_header(&read16(0, 16384), true, false, edtl);
        stream.extend_from_slice(&c.encode_cmd(&cmd, &[]));
    }
    let far = c.cmdsn.wrapping_add(1_000_000);
    for i in 0..2_000u32 {
        let mut cmd = c.scsi_cmd_header(&read16(0, 16384), true, false, edtl);
        cmd.cmdsn = far.wrapping_add(i);
        stream.extend_from_slice(&c.encode_cmd(&cmd, &[]));
    }
    let mut sock = c.sock.try_clone().unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let done2 = Arc::clone(&done);
    let sender = std::thread::spawn(move || {
        // A write timeout means the server stopped reading: back-pressure.
        let r = sock.write_all(&stream);
        done2.store(true, Ordering::SeqCst);
        r.is_ok()
    });
    let mut peak = 0u64;
    let mut quiet_since: Option<Instant> = None;
    let hard_end = Instant::now() + Duration::from_secs(20);
    loop {
        let grown = vm_rss().saturating_sub(base);
        peak = peak.max(grown);
        if grown > BOUND {
            break;
        }
        if done.load(Ordering::SeqCst) {
            // Watch a while after the last byte went (or could not go) out.
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        if Instant::now() > hard_end {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // End the attack before judging, so a failure does not leave the
    // server eating memory.
    let _ = c.sock.shutdown(std::net::Shutdown::Both);
    let all_sent = sender.join().unwrap();
    srv.shutdown();
    eprintln!(
        "{engine:?} EDTL {edtl}: RSS growth peak {} MiB, all commands sent: {all_sent}",
        peak >> 20
    );
    assert!(
        peak <= BOUND,
        "server memory grew by {} MiB (bound {} MiB)",
        peak >> 20,
        BOUND >> 20
    );
}

/// Commands past the window never run: a WRITE sent in order but past the
/// announced MaxCmdSN (the window full of running READs), and one with a
/// CmdSN far beyond it. Immediate commands get a slot of their own, and
/// past a few of them Reject "too many immediate commands".
#[test]
fn commands_past_max_cmdsn_never_run_and_immediates_are_bounded() {
    let _g = serial();
    let store = GatedStore::new(8 << 20);
    let (srv, addr) = server_on(Arc::clone(&store) as Arc<dyn Backstore>, IoEngine::Pool);
    let mut c = session(addr, &[]);
    let (exp, max) = window_of(&c.nop(&[]));
    assert_eq!(exp, c.cmdsn);
    let window = max.wrapping_sub(exp).wrapping_add(1);
    assert!(window >= 2);
    // READs that fill the window and stay running.
    store.set(false);
    let mut reads = std::collections::HashSet::new();
    for _ in 0..window {
        let cmd = c.scsi_cmd_header(&read10(0, 1), true, false, 512);
        reads.insert(cmd.itt);
        c.send_raw(&c.encode_cmd(&cmd, &[])).unwrap();
    }
    // In order, but past MaxCmdSN: dropped.
    let data = pattern(512, 0x5a);
    let past = c.scsi_cmd_header(&write10(100, 1), false, true, 512);
    assert_eq!(past.cmdsn, max.wrapping_add(1));
    c.send_raw(&c.encode_cmd(&past, &data)).unwrap();
    // Far past it: dropped.
    let mut far = c.scsi_cmd_header(&write10(101, 1), false, true, 512);
    far.cmdsn = max.wrapping_add(100_000);
    c.send_raw(&c.encode_cmd(&far, &data)).unwrap();
    // The target never took those two CmdSNs.
    c.cmdsn = max.wrapping_add(1);
    // Immediate READs: some run, the rest are rejected.
    let mut imm = std::collections::HashSet::new();
    for _ in 0..64 {
        let mut cmd = c.scsi_cmd_header(&read10(0, 1), true, false, 512);
        cmd.immediate = true;
        cmd.cmdsn = max.wrapping_add(1);
        imm.insert(cmd.itt);
        c.send_raw(&c.encode_cmd(&cmd, &[])).unwrap();
    }
    c.cmdsn = max.wrapping_add(1);
    let opener = store.open_later(Duration::from_millis(200));
    let (mut read_answers, mut imm_answers, mut imm_rejects) = (0, 0, 0);
    while read_answers + imm_answers + imm_rejects < window as usize + imm.len() {
        let p = c.recv().expect("an answer");
        match p.bhs.opcode() {
            Opcode::DATA_IN => {
                let d = DataIn::parse(&p.bhs);
                assert_eq!(d.status, Some(0));
                assert_ne!(d.itt, past.itt, "the WRITE past MaxCmdSN ran");
                if reads.contains(&d.itt) {
                    read_answers += 1;
                } else {
                    assert!(imm.contains(&d.itt), "unknown ITT {}", d.itt);
                    imm_answers += 1;
                }
                c.exp_statsn = d.sn.statsn.wrapping_add(1);
            }
            Opcode::REJECT => {
                let r = Reject::parse(&p.bhs);
                assert_eq!(r.reason.0, 0x06, "too many immediate commands");
                let itt = u32::from_be_bytes(p.data[16..20].try_into().unwrap());
                assert!(imm.contains(&itt));
                imm_rejects += 1;
            }
            Opcode::SCSI_RESPONSE => {
                let r = ScsiResponse::parse(&p.bhs);
                panic!(
                    "unexpected SCSI Response for ITT {} (status {})",
                    r.itt, r.status
                );
            }
            op => panic!("unexpected {op:?}"),
        }
    }
    opener.join().unwrap();
    assert_eq!(read_answers, window as usize);
    assert!(imm_answers >= 1, "at least one immediate command may run");
    assert!(imm_rejects >= 1, "immediate commands are bounded");
    // Nothing else comes: the dropped WRITEs never answer.
    let p = c.nop(&[]);
    let (exp, max) = window_of(&p);
    assert_eq!(exp, c.cmdsn, "the dropped commands did not take a CmdSN");
    assert_eq!(
        max.wrapping_sub(exp).wrapping_add(1),
        window,
        "slots are back"
    );
    for lba in [100, 101] {
        let (st, got, _) = c.read_cmd(&read10(lba, 1), 512);
        assert_eq!(st, 0);
        assert!(
            got.iter().all(|&b| b == 0),
            "a dropped WRITE reached LBA {lba}"
        );
    }
    c.logout();
    srv.shutdown();
}

/// Queue more pool WRITEs than there are workers, all blocked on the gate,
/// then end the session by `end`; log in again with the same ISID while
/// the gate is still closed. The new login is admitted only once the old
/// session's running writes have finished, and no write of the old session
/// starts after it.
fn stale_pool_writes_case(end: impl FnOnce(Client)) {
    let store = GatedStore::new(8 << 20);
    let (srv, addr) = server_on(Arc::clone(&store) as Arc<dyn Backstore>, IoEngine::Pool);
    let mut c = session(addr, &[]);
    store.set(false);
    let mut stream = Vec::new();
    for i in 0..100u32 {
        let cmd = c.scsi_cmd_header(&write10(i, 1), false, true, 512);
        stream.extend_from_slice(&c.encode_cmd(&cmd, &pattern(512, i as u8 | 1)));
    }
    c.send_raw(&stream).unwrap();
    // Wait until the first writes are running (the rest queue behind them).
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.started.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no write started");
        std::thread::sleep(Duration::from_millis(5));
    }
    end(c);
    let opener = store.open_later(Duration::from_millis(300));
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    let started = store.started.load(Ordering::SeqCst);
    let completed = store.completed.load(Ordering::SeqCst);
    store.late.store(true, Ordering::SeqCst);
    opener.join().unwrap();
    assert_eq!(
        started, completed,
        "the new session was admitted while the old one's writes still ran"
    );
    assert!(
        started < 100,
        "every write of the old session ran: queued ones were not dropped"
    );
    c.clear_ua();
    // Fresh data everywhere, then check that no stale write followed it.
    for i in 0..100u32 {
        let r = c.write_cmd(&write10(i, 1), &pattern(512, 0xf0));
        assert_eq!(r.status, 0);
    }
    for i in 0..100u32 {
        let (st, got, _) = c.read_cmd(&read10(i, 1), 512);
        assert_eq!(st, 0);
        assert!(got == pattern(512, 0xf0), "a stale write landed on LBA {i}");
    }
    // Only the 200 writes of the new session started after its login.
    assert_eq!(store.late_writes.load(Ordering::SeqCst), 100);
    c.logout();
    srv.shutdown();
}

#[test]
fn queued_writes_of_a_lost_connection_never_land_after_the_new_login() {
    let _g = serial();
    stale_pool_writes_case(drop);
}

#[test]
fn queued_writes_of_a_reinstated_session_never_land_after_the_new_login() {
    let _g = serial();
    // The old connection stays open: the new login reinstates the session.
    let keep = Arc::new(Mutex::new(None));
    let k2 = Arc::clone(&keep);
    stale_pool_writes_case(move |c| *k2.lock().unwrap() = Some(c));
    drop(keep);
}

/// An inline LU: the connection thread is stuck in one WRITE while more
/// WRITEs sit in its receive buffer when the session is reinstated. Those
/// were never started, and must not run after the reinstatement.
#[test]
fn pdus_already_read_do_not_run_after_reinstatement() {
    let _g = serial();
    let store = GatedStore::new(8 << 20);
    let (srv, addr) = server_on(Arc::clone(&store) as Arc<dyn Backstore>, IoEngine::Inline);
    let mut old = session(addr, &[]);
    store.set(false);
    let mut stream = Vec::new();
    for i in 0..20u32 {
        let cmd = old.scsi_cmd_header(&write10(i, 1), false, true, 512);
        stream.extend_from_slice(&old.encode_cmd(&cmd, &pattern(512, 0x11)));
    }
    old.send_raw(&stream).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.started.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no write started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let opener = store.open_later(Duration::from_millis(300));
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    opener.join().unwrap();
    c.clear_ua();
    let (st, got, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!(st, 0);
    assert!(got == pattern(512, 0x11), "the running write completed");
    for i in 1..20u32 {
        let (st, got, _) = c.read_cmd(&read10(i, 1), 512);
        assert_eq!(st, 0);
        assert!(
            got.iter().all(|&b| b == 0),
            "WRITE to LBA {i} ran after the session was reinstated"
        );
    }
    drop(old);
    c.logout();
    srv.shutdown();
}

/// Write data is solicited within a budget: 80 WRITEs of 4 MiB announced
/// at once get R2Ts for at most the connection's write budget (64 MiB, not
/// 80 x MaxOutstandingR2T x MaxBurstLength), and still all complete as the
/// initiator answers the R2Ts it gets.
#[test]
fn solicited_write_data_is_bounded_and_every_write_completes() {
    const BUDGET: u64 = 64 << 20;
    const LEN: usize = 4 << 20;
    let _g = serial();
    let (srv, addr) = server_on(MemStore::new(8 << 20), IoEngine::Inline);
    let mut c = session(addr, &[("ImmediateData", "No"), ("InitialR2T", "Yes")]);
    let data = pattern(LEN, 0x33);
    let mut stream = Vec::new();
    let mut itts = std::collections::HashSet::new();
    for _ in 0..80 {
        let mut cmd = c.scsi_cmd_header(&write10(0, (LEN / 512) as u16), false, true, LEN as u32);
        cmd.final_bit = true;
        itts.insert(cmd.itt);
        stream.extend_from_slice(&c.encode_cmd(&cmd, &[]));
    }
    c.send_raw(&stream).unwrap();
    // The NOP-In comes after every R2T the commands got at once.
    let r2ts = c.r2ts_until_nop();
    let asked: u64 = r2ts.iter().map(|r| u64::from(r.desired_len)).sum();
    assert!(
        asked <= BUDGET,
        "{} MiB of write data solicited at once (budget {} MiB)",
        asked >> 20,
        BUDGET >> 20
    );
    // Answer every R2T, old and new, until every write has its answer.
    let seg = c.target_mrdsl as usize;
    let mut answered = 0;
    let mut pending: std::collections::VecDeque<_> = r2ts.into();
    while answered < itts.len() {
        while let Some(r) = pending.pop_front() {
            let mut off = r.buffer_offset as usize;
            let end = off + r.desired_len as usize;
            let mut sn = 0;
            let mut out = Vec::new();
            while off < end {
                let n = (end - off).min(seg);
                let d = iscsi_wire::request::DataOut {
                    final_bit: off + n == end,
                    lun: [0; 8],
                    itt: r.itt,
                    ttt: r.ttt,
                    exp_statsn: c.exp_statsn,
                    datasn: sn,
                    buffer_offset: off as u32,
                };
                let mut b = Bhs::default();
                d.write_to(&mut b);
                iscsi_wire::pdu::encode(&mut out, &b, &data[off..off + n], c.digests);
                off += n;
                sn += 1;
            }
            c.send_raw(&out).unwrap();
        }
        let p = c.recv().expect("R2T or SCSI Response");
        match p.bhs.opcode() {
            Opcode::R2T => pending.push_back(iscsi_wire::response::R2t::parse(&p.bhs)),
            Opcode::SCSI_RESPONSE => {
                let r = ScsiResponse::parse(&p.bhs);
                assert_eq!(r.status, 0);
                assert!(itts.contains(&r.itt));
                c.exp_statsn = r.sn.statsn.wrapping_add(1);
                answered += 1;
            }
            op => panic!("unexpected {op:?}"),
        }
    }
    let (st, got, _) = c.read_cmd(&read10(0, 8), 4096);
    assert_eq!(st, 0);
    assert!(got == data[..4096]);
    c.logout();
    srv.shutdown();
}

/// A pool READ whose CDB asks for more than the Expected Data Transfer
/// Length: EDTL bytes are sent and the residual counts the rest, also
/// when the excess was dropped before the answer waited to be sent.
#[test]
fn pool_read_past_edtl_reports_the_full_overflow() {
    let _g = serial();
    let (srv, addr) = server_on(MemStore::new(16 << 20), IoEngine::Pool);
    let mut c = session(addr, &[]);
    for (blocks, edtl) in [(16u32, 512u32), (16384, 4096), (16384, 0)] {
        let cmd = c.scsi_cmd_header(&read16(0, blocks), true, false, edtl);
        c.send_raw(&c.encode_cmd(&cmd, &[])).unwrap();
        let mut got = 0usize;
        let residual = loop {
            let p = c.recv().unwrap();
            match p.bhs.opcode() {
                Opcode::DATA_IN => {
                    let d = DataIn::parse(&p.bhs);
                    got += p.data.len();
                    if let Some(st) = d.status {
                        assert_eq!(st, 0);
                        c.exp_statsn = d.sn.statsn.wrapping_add(1);
                        break d.residual;
                    }
                }
                Opcode::SCSI_RESPONSE => {
                    let r = ScsiResponse::parse(&p.bhs);
                    assert_eq!(r.status, 0);
                    c.exp_statsn = r.sn.statsn.wrapping_add(1);
                    break r.residual;
                }
                op => panic!("unexpected {op:?}"),
            }
        };
        assert_eq!(got, edtl as usize);
        assert!(residual.overflow && !residual.underflow);
        assert_eq!(residual.count, blocks * 512 - edtl, "blocks {blocks}");
    }
    c.logout();
    srv.shutdown();
}

/// A SANITIZE goes on through reconnects by design: a new login of the
/// same I_T nexus is not held back by it (only short commands are waited
/// for), and sees SANITIZE IN PROGRESS.
#[test]
fn a_running_sanitize_does_not_hold_back_the_next_login() {
    let _g = serial();
    let store = GatedStore::new(1 << 20);
    let (srv, addr) = server_on(Arc::clone(&store) as Arc<dyn Backstore>, IoEngine::Inline);
    let mut c = session(addr, &[]);
    store.set(false);
    // SANITIZE OVERWRITE, IMMED=0, one-byte pattern.
    let param = [0x01, 0, 0, 1, 0xa5];
    let cdb = [0x48, 0x01, 0, 0, 0, 0, 0, 0, param.len() as u8, 0];
    let cmd = c.scsi_cmd_header(&cdb, false, true, param.len() as u32);
    c.send_raw(&c.encode_cmd(&cmd, &param)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.started.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the sanitize never wrote");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(c);
    let t0 = Instant::now();
    let mut c = Client::connect(addr);
    c.login(Some(IQN), &[]);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the login waited for the sanitize"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (st, _, _) = c.read_cmd(&[0; 6], 0);
        if st == 2 && c.last_sense.get(12..14) == Some(&[0x04, 0x1b]) {
            break;
        }
        assert!(Instant::now() < deadline, "never saw SANITIZE IN PROGRESS");
    }
    store.set(true);
    c.logout();
    srv.shutdown();
}
