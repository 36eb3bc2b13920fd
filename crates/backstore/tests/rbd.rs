//! The rbd backstore against a real single-node Ceph cluster
//! (`../shared/tools/ceph/ceph-up.sh`, started and purged by this test).
//! Skips with a message where librbd, Ceph or the script is missing (a
//! failure under CI=true, where scripts/install-deps.sh installs them).

mod ceph;
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use backstore::conformance::{check, pattern, Expect};
use backstore::{Backstore, Completion, IoOp, RbdBackstore, RbdGateway};
use ceph::Cluster;

/// One request through `submit`, awaited: its result and whether it
/// completed on another thread (librbd's) than the caller's.
fn submit(b: &dyn Backstore, op: IoOp) -> (IoOp, std::io::Result<()>, bool) {
    let (tx, rx) = mpsc::channel();
    let me = std::thread::current().id();
    b.submit(
        op,
        Completion::new(move |op, r| tx.send((op, r, std::thread::current().id() != me)).unwrap()),
    );
    rx.recv_timeout(Duration::from_secs(30)).unwrap()
}

const MIB: u64 = 1 << 20;

/// One cluster for every check (it takes a few seconds to start).
#[test]
fn rbd_backstore_on_a_real_cluster() {
    let Some(c) = Cluster::start() else { return };

    // A missing image without a size is an error, not a new image.
    let e = RbdBackstore::open(&c.cfg("rbd/img"), None, false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound, "{e}");

    // Created with the size given, then the shared conformance checks.
    let b = RbdBackstore::open(&c.cfg("rbd/img"), Some(16 * MIB), false).unwrap();
    assert_eq!(b.size(), 16 * MIB);
    let caps = b.capabilities();
    assert!(caps.async_submit && caps.discard && caps.resize && !caps.write_cache);
    assert_eq!(caps.optimal_io_size, 4 << 20, "the object size");
    // librbd's AIO only queues: the engine starts READ/WRITE on the
    // fabric's thread.
    assert!(b.submit_never_blocks());
    check("rbd", &b, &Expect::default());
    let grown = b.size();
    assert_eq!(grown, 19 * MIB);

    // The asynchronous path completes on librbd's thread.
    let data = pattern(64 << 10, 3);
    let (op, r, other) = submit(
        &b,
        IoOp::Write {
            offset: MIB,
            buf: data.clone(),
            len: data.len(),
            fua: true,
        },
    );
    r.unwrap();
    assert!(other, "a write completed on the submitting thread");
    // With the C++ shim built, librbd took the buffer instead of a copy.
    let IoOp::Write { buf, .. } = op else {
        panic!()
    };
    assert_eq!(
        buf.is_empty(),
        backstore::rbd::zero_copy_writes(),
        "the write's buffer came back {} bytes",
        buf.len()
    );
    let (op, r, other) = submit(
        &b,
        IoOp::Read {
            offset: MIB,
            buf: vec![0; 64 << 10],
        },
    );
    r.unwrap();
    assert!(other, "a read completed on the submitting thread");
    let IoOp::Read { buf, .. } = op else { panic!() };
    assert!(buf == data, "async read-back differs");
    let (_, r, _) = submit(
        &b,
        IoOp::Read {
            offset: grown - 512,
            buf: vec![0; 1024],
        },
    );
    assert!(r.is_err(), "an async read past the end was accepted");
    submit(&b, IoOp::Flush).1.unwrap();

    // Thin provisioning: GET LBA STATUS's view (object-map or not).
    b.discard(8 * MIB, 4 * MIB).unwrap();
    let hole = b.allocation_at(8 * MIB).unwrap().unwrap();
    assert!(!hole.allocated && hole.len >= 4 * MIB, "{hole:?}");
    b.write_at(&pattern(4096, 9), 10 * MIB).unwrap();
    // (librbd 16 reports a written object from its start: the 2 MiB before
    // the write may count as mapped, which GET LBA STATUS may always say.)
    let before = b.allocation_at(8 * MIB).unwrap().unwrap();
    assert!(before.allocated || before.len <= 2 * MIB, "{before:?}");
    let data_ext = b.allocation_at(10 * MIB).unwrap().unwrap();
    assert!(data_ext.allocated && data_ext.len >= 4096, "{data_ext:?}");

    // COMPARE AND WRITE, done by the cluster (one 512-byte block, as
    // VMware's ATS sends it).
    let new = pattern(512, 4);
    assert_eq!(b.compare_and_write(&data[..512], &new, MIB).unwrap(), None);
    let mut back = vec![0; 512];
    b.read_at(&mut back, MIB).unwrap();
    assert!(back == new, "compare-and-write did not write");
    let mut wrong = new.clone();
    wrong[100] ^= 1;
    assert_eq!(
        b.compare_and_write(&wrong, &data[..512], MIB).unwrap(),
        Some(100)
    );
    b.read_at(&mut back, MIB).unwrap();
    assert!(back == new, "a miscompare wrote");
    let four_k = b.compare_and_write(&pattern(4096, 1), &pattern(4096, 2), 2 * MIB);
    // librbd 16 compares within one 512-byte sector only.
    if let Err(e) = four_k {
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    }

    // A resize made elsewhere reaches the backstore through the watch.
    let (tx, rx) = mpsc::channel();
    b.on_resize(Box::new(move |s| {
        let _ = tx.send(s);
    }));
    c.rbd(&["resize", "--size", "24M", "rbd/img"]);
    assert_eq!(rx.recv_timeout(Duration::from_secs(20)).unwrap(), 24 * MIB);
    assert_eq!(b.size(), 24 * MIB);
    // (The conformance run's own resize may have been counted too.)
    assert!(b.health()[0].1 >= 1, "{:?}", b.health());

    // A snapshot is served read-only.
    c.rbd(&["snap", "create", "rbd/img@s1"]);
    let s = RbdBackstore::open(&c.cfg("rbd/img@s1"), None, false).unwrap();
    assert!(s.capabilities().read_only);
    s.read_at(&mut back, MIB).unwrap();
    assert!(back == new, "snapshot content");
    check(
        "rbd snapshot",
        &s,
        &Expect {
            writable: false,
            ..Expect::default()
        },
    );
    drop(s);

    // Reopened through the registry, without a size: the image's.
    drop(b);
    let h = backstore::Registry::with_builtin();
    let cfgstring = format!("rbd/img;conf={}", c.conf());
    let b: Arc<dyn Backstore> = h
        .get("rbd")
        .unwrap()
        .open(&backstore::OpenRequest {
            object: "/backstores/user:rbd/img",
            config: &cfgstring,
            size: None,
            read_only: false,
            state_dir: None,
        })
        .unwrap();
    assert_eq!(b.size(), 24 * MIB);
    b.read_at(&mut back, MIB).unwrap();
    assert!(back == new, "data after reopen");
    drop(b);
    shared_state_between_two_gateways(&c);
    close_lets_go_of_the_image(&c);
    io_racing_close_fails_cleanly(&c);
    submit_never_waits_for_a_stalled_osd(&c);
    blocklisted_writes_fail(&c);
}

/// The header watches on `image` (`rbd status`).
fn watchers(c: &Cluster, image: &str) -> usize {
    let out = String::from_utf8(c.rbd(&["status", image])).unwrap();
    out.matches("watcher=").count()
}

/// The watches on the shared state object of `image` (`rados
/// listwatchers rtarget_pr.<image id>`).
fn state_watchers(c: &Cluster, image: &str) -> usize {
    let info = String::from_utf8(c.rbd(&["info", image, "--format", "json"])).unwrap();
    let id = info
        .split("\"id\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no image id in {info}"));
    let (pool, _) = image.split_once('/').unwrap();
    let out = c.rados(&["-p", pool, "listwatchers", &format!("rtarget_pr.{id}")]);
    out.matches("watcher=").count()
}

/// `close` (the daemon's stop, which keeps the backstores alive) unwatches
/// the image header and releases the exclusive lock at once, instead of
/// leaving them until the OSDs time the process out (30 s), and later I/O
/// fails instead of reaching a closed image. The shared state objects the
/// core keeps (alive past the stop too) stop watching as well, and fail
/// later calls.
fn close_lets_go_of_the_image(c: &Cluster) {
    c.rbd(&["create", "--size", "16M", "rbd/cl"]);
    let plain = RbdBackstore::open(&c.cfg("rbd/cl"), None, false).unwrap();
    let gw = RbdGateway::open(&c.cfg("rbd/cl;alua_group=1"), None, false).unwrap();
    // Kept, as the core keeps them.
    let states = [plain.shared_state().unwrap(), gw.shared_state().unwrap()];
    assert_eq!(state_watchers(c, "rbd/cl"), 2);
    gw.write_at(&pattern(4096, 1), 0).unwrap();
    assert_eq!(watchers(c, "rbd/cl"), 2);
    let locks = String::from_utf8(c.rbd(&["lock", "ls", "rbd/cl"])).unwrap();
    assert!(
        locks.contains("client."),
        "the gateway holds the lock: {locks}"
    );
    plain.close();
    gw.close();
    // No waiting: gone when close returns.
    assert_eq!(watchers(c, "rbd/cl"), 0, "a closed image still watched");
    let locks = String::from_utf8(c.rbd(&["lock", "ls", "rbd/cl"])).unwrap();
    assert!(
        !locks.contains("client."),
        "a closed gateway holds the lock: {locks}"
    );
    assert_eq!(
        state_watchers(c, "rbd/cl"),
        0,
        "a closed backstore's shared state still watched"
    );
    for s in &states {
        assert!(s.load().is_err(), "a closed shared state still reads");
        assert!(s.compare_and_swap(None, b"x").is_err());
        s.announce();
    }
    let mut buf = [0u8; 512];
    assert!(plain.read_at(&mut buf, 0).is_err());
    assert!(gw.read_at(&mut buf, 0).is_err());
    let (_, r, _) = submit(&plain, IoOp::Flush);
    assert!(r.is_err());
    assert!(plain.resize(32 * MIB).is_err());
    // Dropping after close closes nothing twice.
    drop(plain);
    drop(gw);
    drop(states);
}

/// The daemon's stop closes while requests may still be in flight (the
/// fabric stopped, librbd not done): the image and the connections close
/// only after librbd handed back every completion, requests that race the
/// close fail instead of reaching a closed image, and each completes
/// exactly once; the shared state's calls racing the close return too (a
/// use-after-free in the FFI would crash or hang here).
fn io_racing_close_fails_cleanly(c: &Cluster) {
    c.rbd(&["create", "--size", "16M", "rbd/race"]);
    let b = Arc::new(RbdBackstore::open(&c.cfg("rbd/race"), None, false).unwrap());
    let state = b.shared_state().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<std::io::Result<()>>();
    let mut workers = Vec::new();
    for t in 0..3u64 {
        let (b, stop, tx) = (Arc::clone(&b), Arc::clone(&stop), tx.clone());
        workers.push(std::thread::spawn(move || {
            // At most 16 requests in flight per thread (a token each).
            let (tokens, token) = mpsc::channel();
            for _ in 0..16 {
                tokens.send(()).unwrap();
            }
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                token.recv().unwrap();
                let offset = ((n * 3 + t) % 128) * 65536;
                let op = match n % 3 {
                    0 => IoOp::Read {
                        offset,
                        buf: vec![0; 65536],
                    },
                    r => IoOp::Write {
                        offset,
                        buf: pattern(65536, n),
                        len: 65536,
                        fua: r == 2,
                    },
                };
                let (tx, tokens) = (tx.clone(), tokens.clone());
                b.submit(
                    op,
                    Completion::new(move |_, r| {
                        let _ = tx.send(r);
                        let _ = tokens.send(());
                    }),
                );
                n += 1;
            }
            n
        }));
    }
    let (st, stop2) = (Arc::clone(&state), Arc::clone(&stop));
    let pr = std::thread::spawn(move || {
        while !stop2.load(Ordering::Acquire) {
            let _ = st.load();
            let _ = st.compare_and_swap(None, b"x");
            st.announce();
        }
    });
    drop(tx);
    // Some requests done, more in flight: close under them.
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut count = |r: std::io::Result<()>| match r {
        Ok(()) => ok += 1,
        Err(_) => failed += 1,
    };
    for _ in 0..64 {
        count(rx.recv_timeout(Duration::from_secs(30)).unwrap());
    }
    b.close();
    // Requests keep coming after the close: they fail.
    for _ in 0..64 {
        count(rx.recv_timeout(Duration::from_secs(30)).unwrap());
    }
    stop.store(true, Ordering::Release);
    let submitted: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    pr.join().unwrap();
    loop {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(r) => count(r),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("a request never completed: {e}"),
        }
    }
    assert_eq!(ok + failed, submitted, "every request completes once");
    assert!(ok > 0 && failed > 0, "{ok} ok, {failed} failed");
    assert!(state.load().is_err());
    assert_eq!(state_watchers(c, "rbd/race"), 0);
}

/// SIGCONT on drop (also when a check panics) for a SIGSTOPped daemon.
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Stopped {
        // SAFETY: a plain kill(2) of a daemon this test started.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as in `new`.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The engine starts READ and WRITE on the fabric's thread
/// (`submit_never_blocks`), where librbd dispatches them down to the
/// objecter (`rbd_non_blocking_aio=false`): with the OSD not answering,
/// more requests than the objecter's default budget (1024 ops) are
/// accepted without waiting, and all complete once it answers again.
fn submit_never_waits_for_a_stalled_osd(c: &Cluster) {
    const N: usize = 1500;
    c.rbd(&[
        "create",
        "--size",
        "16M",
        "--image-feature",
        "layering",
        "rbd/stall",
    ]);
    let b = Arc::new(RbdBackstore::open(&c.cfg("rbd/stall"), None, false).unwrap());
    b.write_at(&pattern(4096, 1), 0).unwrap();
    let stopped = Stopped::new(c.pid("osd.0"));
    let (tx, rx) = mpsc::channel();
    let (sub_tx, sub_rx) = mpsc::channel();
    let w = Arc::clone(&b);
    let data = pattern(4096, 5);
    std::thread::spawn(move || {
        for i in 0..N {
            let tx = tx.clone();
            w.submit(
                IoOp::Write {
                    offset: (i as u64 % 4096) * 4096,
                    buf: data.clone(),
                    len: data.len(),
                    fua: false,
                },
                Completion::new(move |_, r| {
                    let _ = tx.send(r);
                }),
            );
        }
        let _ = sub_tx.send(());
    });
    sub_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("a submit waited for the stalled OSD");
    drop(stopped);
    for _ in 0..N {
        rx.recv_timeout(Duration::from_secs(60))
            .expect("a request never completed")
            .unwrap();
    }
}

/// A client whose exclusive lock was broken (and so blocklisted: another
/// gateway took the image, or an operator ran `rbd lock rm`) gets its
/// writes failed, never left hanging: fencing depends on it. (With
/// librbd's zero-copy writes, `rbd_disable_zero_copy_writes=false`, this
/// write hangs: librbd holds the completion back until it released the
/// buffer, which a write failed for want of the lock keeps until that very
/// completion fired.)
fn blocklisted_writes_fail(c: &Cluster) {
    // The default features: the write takes the exclusive lock (librbd's
    // automatic mode), which `rbd lock rm` breaks, blocklisting the holder.
    c.rbd(&["create", "--size", "16M", "rbd/bl"]);
    let b = Arc::new(RbdBackstore::open(&c.cfg("rbd/bl"), None, false).unwrap());
    b.write_at(&pattern(4096, 1), 0).unwrap();
    // "client.4321  auto 140234  127.0.0.1:0/1234": locker, id, address.
    let locks = String::from_utf8(c.rbd(&["lock", "ls", "rbd/bl"])).unwrap();
    let t: Vec<&str> = locks
        .lines()
        .find(|l| l.starts_with("client."))
        .unwrap_or_else(|| panic!("no lock holder in {locks}"))
        .split_whitespace()
        .collect();
    let id = format!("{} {}", t[1], t[2]);
    c.rbd(&["lock", "rm", "rbd/bl", &id, t[0]]);
    let (tx, rx) = mpsc::channel();
    let w = Arc::clone(&b);
    std::thread::spawn(move || {
        let _ = tx.send(w.write_at(&pattern(4096, 2), 4096));
    });
    // osd_op_timeout is 20 s: an answer well within it, not a hang.
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a blocklisted client's write hangs");
    assert!(r.is_err(), "a blocklisted client's write succeeded");
    // The engine's path too (librbd owns a zero-copy write's buffer: its
    // failure must not wait for it), and the close after it.
    let (tx, rx) = mpsc::channel();
    b.submit(
        IoOp::Write {
            offset: 2 * MIB,
            buf: pattern(MIB as usize, 4),
            len: MIB as usize,
            fua: false,
        },
        Completion::new(move |_, r| tx.send(r).unwrap()),
    );
    let r = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a blocklisted client's submitted write hangs");
    assert!(
        r.is_err(),
        "a blocklisted client's submitted write succeeded"
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        drop(b);
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("closing a blocklisted image hangs");
}

/// The image's shared state object as two gateways (two connections) see
/// it: compare-and-swap on the version, an announcement that returns only
/// after the other's hook ran, liveness of the holders.
fn shared_state_between_two_gateways(c: &Cluster) {
    let a = RbdBackstore::open(&c.cfg("rbd/img"), None, false).unwrap();
    let b = RbdBackstore::open(&c.cfg("rbd/img"), None, false).unwrap();
    let (sa, sb) = (a.shared_state().unwrap(), b.shared_state().unwrap());
    assert_eq!(sa.load().unwrap(), None, "nothing stored yet");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    // Weak: the hook lives in the state object it reads.
    let (s2, sb2) = (Arc::clone(&seen), Arc::downgrade(&sb));
    sb.subscribe(Box::new(move || {
        if let Some(sb) = sb2.upgrade() {
            s2.lock().unwrap().push(sb.load().unwrap());
        }
    }));
    assert!(sa.compare_and_swap(None, b"one").unwrap());
    assert!(
        !sb.compare_and_swap(None, b"lost").unwrap(),
        "a stale version won"
    );
    sa.announce();
    // The announcement waited for B's hook, which saw the new version.
    assert_eq!(*seen.lock().unwrap(), vec![Some((1, b"one".to_vec()))]);
    assert!(sb.compare_and_swap(Some(1), b"two").unwrap());
    assert!(!sa.compare_and_swap(Some(1), b"lost").unwrap());
    assert_eq!(sa.load().unwrap(), Some((2, b"two".to_vec())));
    // B's own announcement does not run B's hook.
    sb.announce();
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(sa.holder_alive(sb.holder_id()));
    let gone = sb.holder_id();
    drop(sb);
    drop(b);
    assert!(!sa.holder_alive(gone), "a closed gateway counts as alive");
    // A snapshot (read-only) has none.
    let s = RbdBackstore::open(&c.cfg("rbd/img@s1"), None, false).unwrap();
    assert!(s.shared_state().is_none());
}
