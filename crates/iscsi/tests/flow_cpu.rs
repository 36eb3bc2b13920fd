//! follow_flow_cpu: a connection running one command at a time moves its
//! thread onto the CPU its packets arrive on (the initiator's, over
//! loopback), and gets its own CPU mask back when the load grows.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use common::*;

/// One server at a time in this binary: its connection thread is then the
/// only `iscsi-conn-*` thread of the process.
static SERIAL: Mutex<()> = Mutex::new(());

fn allowed() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set; the call fills it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set),
            0
        );
        set
    };
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

fn pin(cpu: usize) {
    // SAFETY: as in `allowed`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0
        );
    }
}

/// `Cpus_allowed_list` ("0-1,3") as CPUs.
fn parse_list(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

/// The CPUs the server's one connection thread may run on.
fn conn_thread_cpus() -> Vec<usize> {
    let mut found = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("iscsi-conn-") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap();
        found.push(parse_list(list));
    }
    assert_eq!(found.len(), 1, "one connection thread: {found:?}");
    found.pop().unwrap()
}

fn serve(follow: bool) -> (std::sync::Arc<iscsi::IscsiServer>, std::net::SocketAddr) {
    let srv = iscsi::IscsiServer::new();
    let mut t = target(IQN, 1 << 20, &[]);
    t.tpgs[0].attributes.follow_flow_cpu = follow;
    srv.set_target(t);
    let addr = srv.listen("127.0.0.1:0".parse().unwrap()).unwrap();
    (srv, addr)
}

fn qd1(c: &mut Client, n: u32) {
    for i in 0..n {
        assert_eq!(c.read_cmd(&read10(i % 64, 8), 4096).0, 0);
    }
}

/// 32 READs in one write, then their answers: several PDUs a wake-up.
fn burst(c: &mut Client) {
    let mut out = Vec::new();
    let mut want = HashMap::new();
    for i in 0..32u32 {
        let cmd = c.scsi_cmd_header(&read10(i, 1), true, false, 512);
        out.extend(c.encode_cmd(&cmd, &[]));
        want.insert(cmd.itt, vec![0u8; 512]);
    }
    c.send_raw(&out).unwrap();
    c.expect_reads(want);
}

#[test]
fn a_qd1_connection_moves_to_the_initiators_cpu_and_back_under_load() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = allowed();
    if cpus.len() < 2 {
        eprintln!("one CPU allowed: nothing to move between");
        return;
    }
    let (srv, addr) = serve(true);
    let cpu = *cpus.last().unwrap();
    let srv2 = std::sync::Arc::clone(&srv);
    std::thread::spawn(move || {
        pin(cpu);
        let mut c = session(addr, &[]);
        assert_eq!(conn_thread_cpus(), cpus, "starts with the process's mask");
        // The move happens before the answer that follows the steady
        // run (256 wake-ups) is sent: by the last answer the thread is
        // there (and not yet judged: the first look comes 128 later).
        qd1(&mut c, 260);
        assert_eq!(conn_thread_cpus(), [cpu], "on the initiator's CPU");
        let s = srv2.flow_cpu_counts();
        assert_eq!((s.moved, s.restored), (1, 0), "{s:?}");
        // Moved, the connection no longer busy-polls: the initiator's
        // send wakes it on this CPU (no wait is spun for, or counted). An
        // initiator that takes a little time between commands, so that
        // the thread finds the socket empty after its send (with the
        // hand-off a lean one has sent the next command by then).
        let polls = srv2.busy_poll_counts();
        for i in 0..100 {
            std::thread::sleep(std::time::Duration::from_micros(30));
            assert_eq!(c.read_cmd(&read10(i % 64, 8), 4096).0, 0);
        }
        assert_eq!(srv2.busy_poll_counts(), polls, "no spin while moved");
        for _ in 0..20 {
            burst(&mut c);
        }
        assert_eq!(conn_thread_cpus(), cpus, "its own mask again");
        let s = srv2.flow_cpu_counts();
        assert_eq!((s.moved, s.restored), (1, 1), "{s:?}");
        c.logout();
    })
    .join()
    .unwrap();
    srv.shutdown();
}

#[test]
fn with_follow_flow_cpu_off_the_thread_never_moves() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cpus = allowed();
    if cpus.len() < 2 {
        eprintln!("one CPU allowed: nothing to move between");
        return;
    }
    let (srv, addr) = serve(false);
    let cpu = *cpus.last().unwrap();
    let srv2 = std::sync::Arc::clone(&srv);
    std::thread::spawn(move || {
        pin(cpu);
        let mut c = session(addr, &[]);
        qd1(&mut c, 2000);
        assert_eq!(conn_thread_cpus(), cpus);
        assert_eq!(srv2.flow_cpu_counts(), iscsi::FlowCpuStats::default());
        c.logout();
    })
    .join()
    .unwrap();
    srv.shutdown();
}
