//! Multiple connections per session (MC/S): a test initiator logs several
//! connections in to one session (same ISID, the TSIH the first login got,
//! a CID each) and spreads commands over them with one CmdSN counter.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use iscsi::IscsiServer;
use iscsi_wire::request::TaskMgmtRequest;
use iscsi_wire::response::{DataIn, LogoutResponse, ScsiResponse, TaskMgmtResponse};
use iscsi_wire::tmf::TmfFunction;
use iscsi_wire::{Bhs, Opcode};

/// A target whose TPG allows `max` connections per session.
fn mcs_server(max: &str) -> (Arc<IscsiServer>, SocketAddr) {
    server(&[("MaxConnections", max)])
}

/// The leading connection, asking for `max` connections.
fn lead(addr: SocketAddr, max: &str) -> Client {
    let mut c = Client::connect(addr);
    let pairs = c.login(Some(IQN), &[("MaxConnections", max)]);
    let got = pairs.iter().find(|p| p.key == "MaxConnections");
    assert!(got.is_some(), "MaxConnections answered");
    c.clear_ua();
    c
}

/// The security stage of a login adding connection `cid` to `lead`'s
/// session with this TSIH: (status class, detail).
fn join_status(addr: SocketAddr, lead: &Client, tsih: u16, cid: u16) -> (u8, u8) {
    let mut c = Client::connect(addr);
    c.isid = lead.isid;
    c.tsih = tsih;
    c.cid = cid;
    c.cmdsn = lead.cmdsn;
    let (r, _) = c.login_pdu(
        0,
        1,
        true,
        &[
            ("InitiatorName", INITIATOR),
            ("AuthMethod", "None"),
            ("SessionType", "Normal"),
            ("TargetName", IQN),
        ],
    );
    (r.status_class, r.status_detail)
}

/// A connection added to `lead`'s session with `cid`.
fn join(addr: SocketAddr, lead: &Client, cid: u16) -> Client {
    let mut c = Client::connect(addr);
    c.isid = lead.isid;
    c.tsih = lead.tsih;
    c.cid = cid;
    c.cmdsn = lead.cmdsn;
    let pairs = c.login(Some(IQN), &[("MaxConnections", "2")]);
    assert_eq!(c.tsih, lead.tsih, "the session's TSIH");
    let get = |k: &str| pairs.iter().find(|p| p.key == k).map(|p| p.value.as_str());
    assert_eq!(get("ImmediateData"), Some("Irrelevant"), "session-wide key");
    assert_eq!(
        get("MaxConnections"),
        Some("Irrelevant"),
        "session-wide key"
    );
    // Session-wide values are the leading login's.
    c.immediate_data = lead.immediate_data;
    c.initial_r2t = lead.initial_r2t;
    c.first_burst = lead.first_burst;
    c
}

/// Run `f` on connection `c` with the session's CmdSN counter `sn`.
fn on<T>(c: &mut Client, sn: &mut u32, f: impl FnOnce(&mut Client) -> T) -> T {
    c.cmdsn = *sn;
    let r = f(c);
    *sn = c.cmdsn;
    r
}

fn cids(srv: &IscsiServer) -> Vec<u16> {
    let d = srv.sessions_detail();
    assert_eq!(d.len(), 1, "one session");
    let mut v: Vec<u16> = d[0].connections.iter().map(|c| c.cid).collect();
    v.sort();
    v
}

/// Poll the session list (connections leave asynchronously).
fn wait_for(srv: &IscsiServer, what: impl Fn(&IscsiServer) -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !what(srv) {
        assert!(Instant::now() < end, "session list never reached the state");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read(c: &mut Client, lba: u32, len: usize) -> Vec<u8> {
    let (st, data, _) = c.read_cmd(&read10(lba, (len / 512) as u16), len as u32);
    assert_eq!(st, 0);
    data
}

fn write(c: &mut Client, lba: u32, data: &[u8]) -> ScsiResponse {
    let r = c.write_cmd(&write10(lba, (data.len() / 512) as u16), data);
    assert_eq!(r.status, 0);
    r
}

#[test]
fn two_connections_share_one_session() {
    let (srv, addr) = mcs_server("2");
    let mut a = lead(addr, "2");
    let mut b = join(addr, &a, 1);
    assert_eq!(srv.sessions().len(), 1);
    assert_eq!(srv.sessions()[0].cids, vec![0, 1]);
    assert_eq!(cids(&srv), vec![0, 1]);
    let mut sn = a.cmdsn;
    // Small writes (immediate data) and large ones (R2Ts) on each, read
    // back on the other; StatSN runs per connection (the client checks).
    let small = pattern(4096, 1);
    let big = pattern(512 * 1024, 2);
    let r = on(&mut a, &mut sn, |c| write(c, 0, &small));
    assert_eq!(r.sn.exp_cmdsn, sn, "ExpCmdSN is the session's");
    let r = on(&mut b, &mut sn, |c| write(c, 64, &big));
    assert_eq!(r.sn.exp_cmdsn, sn, "ExpCmdSN is the session's");
    assert!(!iscsi_wire::bhs::sn_lt(r.sn.max_cmdsn, sn));
    assert_eq!(on(&mut b, &mut sn, |c| read(c, 0, 4096)), small);
    assert_eq!(on(&mut a, &mut sn, |c| read(c, 64, big.len())), big);
    on(&mut a, &mut sn, |c| write(c, 2048, &big));
    assert_eq!(on(&mut b, &mut sn, |c| read(c, 2048, big.len())), big);
    // A NOP-Out on each connection answers with its own StatSN.
    let pa = a.nop(b"a");
    let pb = b.nop(b"b");
    assert_eq!(pa.data, b"a");
    assert_eq!(pb.data, b"b");
    srv.shutdown();
}

/// CmdSN n+1 arrives on B before n on A: B's READ of the block A's WRITE
/// changes must run after it (commands reach the SCSI layer in CmdSN order).
#[test]
fn commands_run_in_cmdsn_order_across_connections() {
    let (srv, addr) = mcs_server("2");
    let mut a = lead(addr, "2");
    let mut b = join(addr, &a, 1);
    let n = a.cmdsn;
    let data = pattern(4096, 7);
    b.cmdsn = n.wrapping_add(1);
    let rd = b.scsi_cmd_header(&read10(40, 8), true, false, 4096);
    let mut h = Bhs::default();
    rd.write_to(&mut h);
    b.send(&h, &[]);
    a.cmdsn = n;
    write(&mut a, 40, &data);
    let mut got = Vec::new();
    loop {
        let p = b.recv().expect("B's READ answered once CmdSN n arrived");
        assert_eq!(p.bhs.opcode(), Opcode::DATA_IN);
        let d = DataIn::parse(&p.bhs);
        got.extend_from_slice(&p.data);
        if let Some(st) = d.status {
            assert_eq!(st, 0);
            assert_eq!(d.sn.statsn, b.exp_statsn, "B's own StatSN");
            assert_eq!(d.sn.exp_cmdsn, n.wrapping_add(2));
            b.exp_statsn += 1;
            break;
        }
    }
    assert!(got == data, "the READ ran after the WRITE before it");
    let mut sn = n.wrapping_add(2);
    assert_eq!(on(&mut a, &mut sn, |c| read(c, 40, 4096)), data);
    srv.shutdown();
}

#[test]
fn logout_of_one_connection_keeps_the_session() {
    let (srv, addr) = mcs_server("2");
    let mut a = lead(addr, "2");
    let mut b = join(addr, &a, 1);
    let mut sn = a.cmdsn;
    // B closes itself (reason 1, its own CID).
    let p = on(&mut b, &mut sn, |c| c.logout_for(1, 1));
    assert_eq!(LogoutResponse::parse(&p.bhs).response, 0);
    assert!(b.closed());
    wait_for(&srv, |s| s.sessions_detail()[0].connections.len() == 1);
    let d = pattern(8192, 3);
    on(&mut a, &mut sn, |c| write(c, 8, &d));
    assert_eq!(on(&mut a, &mut sn, |c| read(c, 8, 8192)), d);
    // A closes another connection (a new B with CID 1) for it.
    a.cmdsn = sn;
    let mut b = join(addr, &a, 1);
    assert_eq!(cids(&srv), vec![0, 1]);
    let p = on(&mut a, &mut sn, |c| c.logout_for(1, 1));
    assert_eq!(LogoutResponse::parse(&p.bhs).response, 0);
    assert!(b.closed());
    assert_eq!(cids(&srv), vec![0], "closed before the answer");
    // An unknown CID: "CID not found", nothing closes.
    let p = on(&mut a, &mut sn, |c| c.logout_for(1, 9));
    assert_eq!(LogoutResponse::parse(&p.bhs).response, 1);
    assert_eq!(on(&mut a, &mut sn, |c| read(c, 8, 8192)), d);
    srv.shutdown();
}

#[test]
fn session_logout_closes_every_connection() {
    let (srv, addr) = mcs_server("2");
    let mut a = lead(addr, "2");
    let mut b = join(addr, &a, 1);
    let p = a.logout_for(0, 0);
    assert_eq!(LogoutResponse::parse(&p.bhs).response, 0);
    assert!(a.closed());
    assert!(b.closed());
    wait_for(&srv, |s| s.sessions().is_empty());
    srv.shutdown();
}

#[test]
fn connections_beyond_max_connections_are_refused() {
    let (srv, addr) = mcs_server("2");
    let a = lead(addr, "2");
    let _b = join(addr, &a, 1);
    assert_eq!(
        join_status(addr, &a, a.tsih, 2),
        (2, 6),
        "too many connections"
    );
    assert_eq!(
        join_status(addr, &a, a.tsih.wrapping_add(1), 2),
        (2, 10),
        "session does not exist"
    );
    srv.shutdown();
    // LIO's default (1), or an initiator that did not ask for more.
    let (srv, addr) = mcs_server("1");
    let a = lead(addr, "2");
    assert_eq!(join_status(addr, &a, a.tsih, 1), (2, 6));
    srv.shutdown();
    let (srv, addr) = mcs_server("4");
    let mut a = Client::connect(addr);
    a.login(Some(IQN), &[]);
    assert_eq!(join_status(addr, &a, a.tsih, 1), (2, 6));
    srv.shutdown();
}

#[test]
fn a_dropped_connection_ends_only_itself() {
    let (srv, addr) = mcs_server("2");
    let mut a = lead(addr, "2");
    let b = join(addr, &a, 1);
    drop(b);
    wait_for(&srv, |s| s.sessions_detail()[0].connections.len() == 1);
    let mut sn = a.cmdsn;
    let d = pattern(4096, 9);
    on(&mut a, &mut sn, |c| write(c, 100, &d));
    assert_eq!(on(&mut a, &mut sn, |c| read(c, 100, 4096)), d);
    drop(a);
    wait_for(&srv, |s| s.sessions().is_empty());
    srv.shutdown();
}

#[test]
fn same_cid_reinstates_the_connection_and_tsih_zero_the_session() {
    let (srv, addr) = mcs_server("2");
    let mut a = lead(addr, "2");
    let mut b = join(addr, &a, 1);
    let mut b2 = join(addr, &a, 1);
    assert!(b.closed(), "the old connection with CID 1 is closed");
    assert_eq!(cids(&srv), vec![0, 1]);
    let mut sn = a.cmdsn;
    let d = pattern(4096, 4);
    on(&mut b2, &mut sn, |c| write(c, 200, &d));
    assert_eq!(on(&mut a, &mut sn, |c| read(c, 200, 4096)), d);
    // A new session of the same I_T nexus replaces both connections.
    let mut n = Client::connect(addr);
    n.login(Some(IQN), &[("MaxConnections", "2")]);
    assert!(a.closed());
    assert!(b2.closed());
    assert_eq!(srv.sessions().len(), 1);
    assert_eq!(cids(&srv), vec![0]);
    srv.shutdown();
}

/// A write on B waiting for its Data-Out (an R2T is out), B's CmdSN taken
/// from the session counter `sn`: (ITT, CmdSN).
fn pending_write(b: &mut Client, sn: &mut u32) -> (u32, u32) {
    b.cmdsn = *sn;
    let cmd = b.scsi_cmd_header(&write10(300, 8), false, true, 4096);
    *sn = b.cmdsn;
    let mut h = Bhs::default();
    cmd.write_to(&mut h);
    b.send(&h, &[]);
    assert_eq!(b.recv().unwrap().bhs.opcode(), Opcode::R2T);
    (cmd.itt, cmd.cmdsn)
}

/// An immediate TMF on `c`: the response code.
fn tmf(c: &mut Client, function: u8, itt: u32, referenced: (u32, u32), sn: u32) -> u8 {
    let tm = TaskMgmtRequest {
        immediate: true,
        function: TmfFunction::from_code(function),
        lun: [0; 8],
        itt,
        referenced_tag: referenced.0,
        cmdsn: sn,
        exp_statsn: c.exp_statsn,
        ref_cmdsn: referenced.1,
        exp_datasn: 0,
    };
    let mut h = Bhs::default();
    tm.write_to(&mut h);
    c.send(&h, &[]);
    let p = c.recv().unwrap();
    assert_eq!(p.bhs.opcode(), Opcode::TASK_MGMT_RESPONSE);
    c.exp_statsn += 1;
    TaskMgmtResponse::parse(&p.bhs).response.code()
}

/// ABORT TASK and LUN RESET on A end B's write waiting for its Data-Out
/// (RFC 7143 §11.5.1: the task may be on any connection of the session).
#[test]
fn task_management_reaches_the_other_connection() {
    let (srv, addr) = mcs_server("2");
    let mut a = Client::connect(addr);
    a.login(
        Some(IQN),
        &[
            ("MaxConnections", "2"),
            ("ImmediateData", "No"),
            ("InitialR2T", "Yes"),
        ],
    );
    a.clear_ua();
    let mut b = join(addr, &a, 1);
    let mut sn = a.cmdsn;
    let task = pending_write(&mut b, &mut sn);
    assert_eq!(
        tmf(&mut a, 1, 0x7001, task, sn),
        0,
        "ABORT TASK: function complete"
    );
    assert_eq!(
        tmf(&mut a, 1, 0x7002, task, sn),
        1,
        "gone: task does not exist"
    );
    let _task = pending_write(&mut b, &mut sn);
    assert_eq!(tmf(&mut a, 5, 0x7003, (0xffff_ffff, 0), sn), 0, "LUN RESET");
    // B goes on (the reset's unit attention first).
    b.cmdsn = sn;
    b.clear_ua();
    let d = pattern(4096, 5);
    write(&mut b, 300, &d);
    a.cmdsn = b.cmdsn;
    a.clear_ua();
    assert_eq!(read(&mut a, 300, 4096), d);
    srv.shutdown();
}

/// A session that loses its access (target removed) is asked to log out
/// on every connection.
#[test]
fn lost_access_asks_every_connection_to_log_out() {
    let (srv, addr) = mcs_server("2");
    let mut a = lead(addr, "2");
    let mut b = join(addr, &a, 1);
    assert!(srv.remove_target(IQN));
    for c in [&mut a, &mut b] {
        let p = c.recv().expect("async message");
        assert_eq!(p.bhs.opcode(), Opcode::ASYNC_MESSAGE);
    }
    srv.shutdown();
}

/// RAM whose reads wait until [`GatedReads::open`] (at most 20 s, so a
/// wrong test fails rather than hangs): an inline READ keeps its
/// connection's thread busy until then, as a hung backstore would.
struct GatedReads {
    ram: Arc<MemStore>,
    open: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl GatedReads {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

impl backstore::Backstore for GatedReads {
    fn size(&self) -> u64 {
        self.ram.size()
    }
    fn capabilities(&self) -> backstore::Capabilities {
        self.ram.capabilities()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let g = self.open.lock().unwrap();
        let _ = self
            .cv
            .wait_timeout_while(g, Duration::from_secs(20), |open| !*open)
            .unwrap();
        self.ram.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.ram.write_at(buf, offset)
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A session logout whose other connection does not end in time (its
/// thread is held by a backstore that hangs) answers "cleanup failed"
/// after the wait and leaves the logging-out connection up: a later
/// logout, once the other connection ended, closes the session.
#[test]
fn session_logout_answers_cleanup_failed_when_a_connection_hangs() {
    let gated = Arc::new(GatedReads {
        ram: MemStore::new(1 << 20),
        open: std::sync::Mutex::new(false),
        cv: std::sync::Condvar::new(),
    });
    let dev = target_core::Device::new(
        target_core::DeviceOptions::new("gated0", "5b3c9a2e-0000-4000-8000-0000000000c5"),
        Arc::clone(&gated) as Arc<dyn backstore::Backstore>,
    );
    let srv = IscsiServer::new();
    let offer = iscsi::tpg_offer([("MaxConnections", "2")]).unwrap();
    srv.set_target(one_lun_target(IQN, dev, offer));
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut a = lead(addr, "2");
    let mut b = join(addr, &a, 1);
    let mut sn = a.cmdsn;
    // b's thread runs the READ inline and waits in the backstore.
    on(&mut b, &mut sn, |c| {
        let cmd = c.scsi_cmd_header(&read10(0, 1), true, false, 512);
        c.send_cmd(&cmd, &[]);
    });
    std::thread::sleep(Duration::from_millis(100));
    a.cmdsn = sn;
    let started = Instant::now();
    let p = a.logout_for(0, 0);
    assert_eq!(LogoutResponse::parse(&p.bhs).response, 3, "cleanup failed");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "answered after waiting for the other connection"
    );
    gated.open();
    assert!(b.closed(), "the other connection ends once free");
    wait_for(&srv, |s| cids(s) == [0]);
    // The logging-out connection is still up: a logout now closes it all.
    let p = a.logout_for(0, 0);
    assert_eq!(LogoutResponse::parse(&p.bhs).response, 0);
    assert!(a.closed());
    wait_for(&srv, |s| s.sessions().is_empty());
    srv.shutdown();
}
