//! Commands that run on the worker pool (an LU with `io_engine` pool, and
//! long commands like SANITIZE): answers with the right sequence numbers
//! while the connection keeps serving, the command window shrinking with
//! the tasks in flight, task management waiting for them and never letting
//! an aborted task's answer through, and sessions ending with tasks running.

mod common;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use backstore::{Backstore, Capabilities};
use common::*;
use iscsi::IscsiServer;
use iscsi_wire::request::{Attr, TaskMgmtRequest};
use iscsi_wire::response::{DataIn, ScsiResponse, TaskMgmtResponse};
use iscsi_wire::tmf::TmfFunction;
use iscsi_wire::Opcode;
use target_core::{Device, DeviceOptions, IoEngine};

/// RAM whose I/O blocks while the gate is closed: a backstore that is
/// "slow" exactly as long as the test wants.
struct GatedStore {
    mem: Arc<MemStore>,
    open: Mutex<bool>,
    cv: Condvar,
    /// Every read and write as it reaches the store and as it leaves it
    /// (`true` = entered, offset): the order the LU really ran them in,
    /// which the order of the answers on the wire need not show.
    log: Mutex<Vec<(bool, u64)>>,
    logged: Condvar,
}

impl GatedStore {
    fn new(size: usize) -> Arc<GatedStore> {
        Arc::new(GatedStore {
            mem: MemStore::new(size),
            open: Mutex::new(true),
            cv: Condvar::new(),
            log: Mutex::new(Vec::new()),
            logged: Condvar::new(),
        })
    }

    fn set(&self, open: bool) {
        *self.open.lock().unwrap() = open;
        self.cv.notify_all();
    }

    fn pass(&self) {
        let mut g = self.open.lock().unwrap();
        while !*g {
            g = self.cv.wait(g).unwrap();
        }
    }

    fn note(&self, entered: bool, offset: u64) {
        self.log.lock().unwrap().push((entered, offset));
        self.logged.notify_all();
    }

    /// Wait until `n` I/Os have entered the store.
    fn wait_entered(&self, n: usize) {
        let mut g = self.log.lock().unwrap();
        while g.iter().filter(|e| e.0).count() < n {
            g = self.logged.wait(g).unwrap();
        }
    }

    /// Wait until every I/O that entered the store has left it.
    fn wait_idle(&self) {
        let mut g = self.log.lock().unwrap();
        while g.iter().filter(|e| e.0).count() != g.iter().filter(|e| !e.0).count() {
            g = self.logged.wait(g).unwrap();
        }
    }

    /// Open the gate after `after` on another thread, raising the returned
    /// flag just before: an answer that must wait for the gate checks the
    /// flag (an ordering), not how long it took.
    fn open_later(self: &Arc<Self>, after: Duration) -> (Arc<AtomicBool>, JoinHandle<()>) {
        let (s, opened) = (Arc::clone(self), Arc::new(AtomicBool::new(false)));
        let flag = Arc::clone(&opened);
        let h = std::thread::spawn(move || {
            // The window in which a wrong answer would come early: nothing
            // can be awaited for "did not answer".
            std::thread::sleep(after);
            flag.store(true, Ordering::SeqCst);
            s.set(true);
        });
        (opened, h)
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
        self.note(true, offset);
        self.pass();
        let r = self.mem.read_at(buf, offset);
        self.note(false, offset);
        r
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.note(true, offset);
        self.pass();
        let r = self.mem.write_at(buf, offset);
        self.note(false, offset);
        r
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

fn pool_server(
    store: Arc<GatedStore>,
    engine: IoEngine,
) -> (Arc<IscsiServer>, std::net::SocketAddr) {
    let mut opts = DeviceOptions::new("gated0", "5b3c9a2e-0000-4000-8000-0000000000b1");
    opts.io_engine = engine;
    let dev = Device::new(opts, store);
    let (s, addr) = serve_device(dev);
    (s, addr)
}

fn send_cmd(c: &mut Client, cdb: &[u8], read: bool, edtl: u32, data: &[u8]) -> (u32, u32) {
    let cmd = c.scsi_cmd_header(cdb, read, !data.is_empty(), edtl);
    c.send_cmd(&cmd, data);
    (cmd.itt, cmd.cmdsn)
}

fn tmf(c: &mut Client, function: u8, itt: u32, referenced: u32, ref_cmdsn: u32) {
    let tm = TaskMgmtRequest {
        immediate: true,
        function: TmfFunction::from_code(function),
        lun: [0; 8],
        itt,
        referenced_tag: referenced,
        cmdsn: c.cmdsn,
        exp_statsn: c.exp_statsn,
        ref_cmdsn,
        exp_datasn: 0,
    };
    c.send_tmf(&tm);
}

/// MaxCmdSN from a NOP-In.
fn max_cmdsn(p: &Pdu) -> u32 {
    p.bhs.u32_at(32)
}

#[test]
fn pipelined_pool_io_is_answered_in_statsn_order_with_right_data() {
    let store = GatedStore::new(8 << 20);
    let (srv, addr) = pool_server(Arc::clone(&store), IoEngine::Pool);
    let mut c = session(addr, &[]);
    // Writes through every Data-Out path (immediate, unsolicited, R2T).
    for (n, len) in [512usize, 65536, 300 * 1024, 1 << 20].iter().enumerate() {
        let data = pattern(*len, n as u8 + 1);
        let r = c.write_cmd(&write10(n as u32 * 4096, (*len / 512) as u16), &data);
        assert_eq!(r.status, 0);
    }
    // 24 reads in flight at once; each answer must carry its own data.
    let mut want = std::collections::HashMap::new();
    for i in 0..24u32 {
        let (itt, _) = send_cmd(&mut c, &read10((i % 4) * 4096, 1), true, 512, &[]);
        want.insert(itt, pattern(512, (i % 4) as u8 + 1));
    }
    c.expect_reads(want);
    c.logout();
    srv.shutdown();
}

#[test]
fn window_shrinks_with_tasks_in_flight_and_abort_task_set_waits_for_them() {
    let store = GatedStore::new(8 << 20);
    let (srv, addr) = pool_server(Arc::clone(&store), IoEngine::Pool);
    let mut c = session(addr, &[]);
    let full = max_cmdsn(&c.nop(&[])).wrapping_sub(c.cmdsn);
    store.set(false);
    for _ in 0..4 {
        send_cmd(&mut c, &read10(0, 1), true, 512, &[]);
    }
    // The reads hold 4 slots: MaxCmdSN does not advance past what was
    // already announced (ExpCmdSN moved on by 4).
    let p = c.nop(&[]);
    assert_eq!(p.bhs.u32_at(28), c.cmdsn, "ExpCmdSN");
    assert_eq!(max_cmdsn(&p).wrapping_sub(c.cmdsn), full - 4);
    // ABORT TASK SET cannot answer before the reads have finished; their
    // answers are never sent.
    let (opened, opener) = store.open_later(Duration::from_millis(300));
    tmf(&mut c, 2, 0x5000, 0xffff_ffff, 0);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::TASK_MGMT_RESPONSE, "no read answer");
    assert!(opened.load(Ordering::SeqCst), "waited for the tasks");
    let r = TaskMgmtResponse::parse(&p.bhs);
    assert_eq!(r.response.code(), 0);
    c.exp_statsn = r.sn.statsn.wrapping_add(1);
    opener.join().unwrap();
    // Slots are back.
    let p = c.nop(&[]);
    assert_eq!(max_cmdsn(&p).wrapping_sub(c.cmdsn), full);
    let (st, got, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!((st, got.len()), (0, 512));
    c.logout();
    srv.shutdown();
}

#[test]
fn ordered_task_waits_for_older_ones() {
    let store = GatedStore::new(8 << 20);
    let (srv, addr) = pool_server(Arc::clone(&store), IoEngine::Pool);
    let mut c = session(addr, &[]);
    store.set(false);
    let (simple, _) = send_cmd(&mut c, &read10(0, 1), true, 512, &[]);
    // The SIMPLE read is running (held at the gate) before the ORDERED
    // one is sent.
    store.wait_entered(1);
    let mut cmd = c.scsi_cmd_header(&read10(8, 1), true, false, 512);
    cmd.attr = Attr::Ordered;
    c.send_cmd(&cmd, &[]);
    // Without ordering, one of the idle pool workers would start the
    // ORDERED read at once and it would reach the store while the SIMPLE
    // one still waits. Nothing can be awaited for "did not start": give it
    // the time a worker needs to pick a job up many times over.
    std::thread::sleep(Duration::from_millis(200));
    let early = store.log.lock().unwrap().clone();
    assert_eq!(early, [(true, 0)], "the ORDERED read started early");
    store.set(true);
    let first = DataIn::parse(&c.recv().unwrap().bhs);
    let second = DataIn::parse(&c.recv().unwrap().bhs);
    assert_eq!((first.itt, second.itt), (simple, cmd.itt));
    // The store saw the SIMPLE read end before the ORDERED one began.
    let log = store.log.lock().unwrap().clone();
    assert_eq!(
        log,
        [(true, 0), (false, 0), (true, 8 * 512), (false, 8 * 512)]
    );
    c.exp_statsn = second.sn.statsn.wrapping_add(1);
    c.logout();
    srv.shutdown();
}

#[test]
fn long_command_runs_off_the_connection_and_survives_abort_and_logout() {
    // An inline LU: SANITIZE goes to the pool anyway.
    let store = GatedStore::new(1 << 20);
    let (srv, addr) = pool_server(Arc::clone(&store), IoEngine::Inline);
    let mut c = session(addr, &[]);
    store.set(false);
    // SANITIZE OVERWRITE, IMMED=0, one-byte pattern.
    let param = [0x01, 0, 0, 1, 0xa5];
    let cdb = [0x48, 0x01, 0, 0, 0, 0, 0, 0, param.len() as u8, 0];
    let (san_itt, san_cmdsn) = send_cmd(&mut c, &cdb, false, param.len() as u32, &param);
    // The connection still answers: NOT READY, SANITIZE IN PROGRESS.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (st, _, _) = c.read_cmd(&[0; 6], 0);
        if st == 2 && c.last_sense.get(12..14) == Some(&[0x04, 0x1b]) {
            break;
        }
        assert!(Instant::now() < deadline, "never saw SANITIZE IN PROGRESS");
        std::thread::sleep(Duration::from_millis(20));
    }
    // ABORT TASK does not wait for a long task; its answer never comes.
    tmf(&mut c, 1, 0x6000, san_itt, san_cmdsn);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::TASK_MGMT_RESPONSE);
    let r = TaskMgmtResponse::parse(&p.bhs);
    assert_eq!(r.response.code(), 0);
    c.exp_statsn = r.sn.statsn.wrapping_add(1);
    store.set(true);
    // Poll until the sanitize is over: only TUR answers arrive.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cmd = c.scsi_cmd_header(&[0; 6], false, false, 0);
        c.send_cmd(&cmd, &[]);
        let p = c.recv().unwrap();
        assert_eq!(p.bhs.opcode(), Opcode::SCSI_RESPONSE);
        let r = ScsiResponse::parse(&p.bhs);
        assert_eq!(r.itt, cmd.itt, "no answer for the aborted SANITIZE");
        c.exp_statsn = r.sn.statsn.wrapping_add(1);
        if r.status == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "sanitize never ended");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second one, left running while the session logs out: the logout
    // is answered at once and the daemon shuts down cleanly after it.
    store.set(false);
    send_cmd(&mut c, &cdb, false, param.len() as u32, &param);
    let p = c.logout();
    assert_eq!(p.bhs.opcode(), Opcode::LOGOUT_RESPONSE);
    store.set(true);
    srv.shutdown();
}

#[test]
fn connection_loss_with_tasks_in_flight_sends_nothing_and_frees_the_session() {
    let store = GatedStore::new(8 << 20);
    let (srv, addr) = pool_server(Arc::clone(&store), IoEngine::Pool);
    let mut c = session(addr, &[]);
    store.set(false);
    for _ in 0..8 {
        let data = pattern(4096, 9);
        let cmd = c.scsi_cmd_header(&write10(0, 8), false, true, 4096);
        c.send_cmd(&cmd, &data);
    }
    // Vanish once the writes reach the workers.
    store.wait_entered(1);
    drop(c);
    // The session ends while its writes are still held at the gate.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !srv.sessions().is_empty() {
        assert!(Instant::now() < deadline, "the session ends at once");
        std::thread::sleep(Duration::from_millis(5));
    }
    store.set(true);
    store.wait_idle();
    // The same initiator logs in again and sees the writes' data.
    let mut c = session(addr, &[]);
    let (st, got, _) = c.read_cmd(&read10(0, 8), 4096);
    assert_eq!(st, 0);
    assert!(got == pattern(4096, 9));
    c.logout();
    srv.shutdown();
}

#[test]
fn lun_reset_waits_for_other_sessions_pool_tasks() {
    let store = GatedStore::new(8 << 20);
    let (srv, addr) = pool_server(Arc::clone(&store), IoEngine::Pool);
    let mut a = session(addr, &[]);
    let mut b = Client::connect(addr);
    b.isid[5] = 0x77;
    b.login(Some(IQN), &[]);
    b.clear_ua();
    store.set(false);
    let (itt, _) = send_cmd(&mut a, &write10(0, 1), false, 512, &pattern(512, 3));
    store.wait_entered(1);
    let (opened, opener) = store.open_later(Duration::from_millis(300));
    tmf(&mut b, 5, 0x5100, 0xffff_ffff, 0);
    let p = b.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::TASK_MGMT_RESPONSE);
    assert!(
        opened.load(Ordering::SeqCst),
        "the reset answered while another session's write was still running"
    );
    opener.join().unwrap();
    // A's write was not A's to abort: it completed, and says so.
    let p = a.recv().unwrap();
    let r = ScsiResponse::parse(&p.bhs);
    assert_eq!((r.itt, r.status), (itt, 0));
    srv.shutdown();
}
