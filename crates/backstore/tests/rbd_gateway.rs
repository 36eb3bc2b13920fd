//! Two gateways (`alua_group=1` and `=2`) on one RBD image of a real
//! single-node cluster: the exclusive lock moves with the writes, the
//! owner record every gateway reads follows it, the old owner is fenced by
//! blocklisting its exact address, and a fenced gateway neither writes nor
//! takes the lock back while the new owner lives (no ping-pong), unless an
//! explicit takeover (SET TARGET PORT GROUPS) asks it to.

mod ceph;
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backstore::conformance::pattern;
use backstore::ownership::is_path_lost;
use backstore::{Backstore, Owner, RbdConfig, RbdGateway};

const MIB: u64 = 1 << 20;

fn health(b: &dyn Backstore, key: &str) -> u64 {
    b.health()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map_or(0, |(_, v)| v)
}

/// Poll `f` (20 s at most).
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(b: &dyn Backstore, offset: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    b.read_at(&mut buf, offset).unwrap();
    buf
}

#[test]
fn gateways_share_an_image_through_its_exclusive_lock() {
    let Some(c) = ceph::Cluster::start() else {
        return;
    };
    let cfg = |g: u16| {
        RbdConfig::parse(&format!(
            "rbd/gw;conf={};osd_op_timeout=20;alua_group={g}",
            c.conf()
        ))
        .unwrap()
    };
    let a = RbdGateway::open(&cfg(1), Some(16 * MIB), false).unwrap();
    let b = RbdGateway::open(&cfg(2), None, false).unwrap();
    // A write to a gateway that does not own the image takes it over
    // first (blocking RADOS calls): never on the fabric's thread.
    assert!(!a.submit_never_blocks() && !b.submit_never_blocks());
    let (oa, ob) = (a.ownership().unwrap(), b.ownership().unwrap());
    assert_eq!((oa.local_group(), ob.local_group()), (1, 2));
    let changes = Arc::new(AtomicU64::new(0));
    let n = Arc::clone(&changes);
    oa.on_change(Box::new(move || {
        n.fetch_add(1, Ordering::SeqCst);
    }));

    // Nobody owns a fresh image; reads take no lock.
    assert_eq!(oa.owner(true), Owner::Nobody);
    assert_eq!(read(&b, 0), vec![0u8; 4096]);
    assert_eq!(ob.owner(true), Owner::Nobody);

    // A write through A takes the lock; both gateways see group 1.
    a.write_at(&pattern(4096, 1), 0).unwrap();
    assert_eq!(oa.owner(true), Owner::Group(1));
    // (A busy machine may take longer than RTPG waits for a fresh owner.)
    until("B to read A's record", || ob.owner(true) == Owner::Group(1));
    assert!(changes.load(Ordering::SeqCst) >= 1, "A's hook ran");
    assert_eq!(health(&a, "lock_takeovers"), 1);

    // A write through B takes it over: A's exact address is blocklisted.
    let before = c.ceph(&["osd", "blocklist", "ls"]);
    b.write_at(&pattern(4096, 2), 4096).unwrap();
    assert_eq!(ob.owner(true), Owner::Group(2));
    let listed = c.ceph(&["osd", "blocklist", "ls"]);
    let new: Vec<&str> = listed
        .lines()
        .filter(|l| !before.contains(l) && l.contains(':'))
        .collect();
    assert_eq!(new.len(), 1, "one address blocklisted: {listed}");
    assert!(
        new[0].contains('/'),
        "with its nonce, not a whole IP: {listed}"
    );

    // A's next write is refused by the cluster: path lost, A fenced.
    let e = a.write_at(&pattern(4096, 3), 8192).unwrap_err();
    assert!(is_path_lost(&e), "{e}");
    assert_ne!(
        oa.owner(false),
        Owner::Group(1),
        "a fenced A stops claiming"
    );
    until("A to reconnect", || health(&a, "reconnects") >= 1);
    until("A to read B's record", || oa.owner(true) == Owner::Group(2));
    assert_eq!(health(&a, "fenced"), 1);

    // Reconnected, A reads again, but does not take the lock back on a
    // write while B lives.
    assert_eq!(read(&a, 4096), pattern(4096, 2));
    let e = a.write_at(&pattern(4096, 4), 8192).unwrap_err();
    assert!(is_path_lost(&e), "{e}");
    assert_eq!(health(&a, "takeovers_refused"), 1);
    assert_eq!(ob.owner(true), Owner::Group(2));
    b.write_at(&pattern(4096, 5), 12288).unwrap();
    assert_eq!(
        read(&b, 8192),
        vec![0u8; 4096],
        "A's refused writes never landed"
    );

    // An explicit takeover (SET TARGET PORT GROUPS at A) does.
    oa.take_over().unwrap();
    assert_eq!(oa.owner(true), Owner::Group(1));
    a.write_at(&pattern(4096, 6), 8192).unwrap();
    assert!(is_path_lost(&b.write_at(&pattern(4096, 7), 0).unwrap_err()));

    // A gone (its image closed, the lock released): B, though it lost the
    // lock, takes it again.
    drop((a, oa));
    until("B to reconnect", || health(&b, "reconnects") >= 1);
    b.write_at(&pattern(4096, 8), 0).unwrap();
    assert_eq!(ob.owner(true), Owner::Group(2));

    // What the cluster holds: every acknowledged write, none refused.
    let img = c.rbd(&["export", "--no-progress", "rbd/gw", "-"]);
    assert_eq!(&img[..4096], &pattern(4096, 8)[..]);
    assert_eq!(&img[4096..8192], &pattern(4096, 2)[..]);
    assert_eq!(&img[8192..12288], &pattern(4096, 6)[..]);
    assert_eq!(&img[12288..16384], &pattern(4096, 5)[..]);
}

/// SIGSTOPs the cluster's daemons while alive (SIGCONT on drop, also when
/// a check fails).
struct Frozen(Vec<i32>);

impl Frozen {
    fn new(pids: Vec<i32>) -> Frozen {
        for p in &pids {
            // SAFETY: a plain kill(2) of a daemon this test started.
            unsafe { libc::kill(*p, libc::SIGSTOP) };
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for p in &self.0 {
            // SAFETY: as above.
            unsafe { libc::kill(*p, libc::SIGCONT) };
        }
    }
}

/// The owner REPORT TARGET PORT GROUPS asks for comes back at once while
/// the cluster is unreachable (the last one seen), not after
/// osd_op_timeout, and the fresh one follows once the cluster is back.
#[test]
fn owner_answers_from_the_last_one_seen_while_the_cluster_is_unreachable() {
    let Some(c) = ceph::Cluster::start() else {
        return;
    };
    let cfg = |g: u16| {
        RbdConfig::parse(&format!(
            "rbd/gwu;conf={};osd_op_timeout=8;alua_group={g}",
            c.conf()
        ))
        .unwrap()
    };
    let a = RbdGateway::open(&cfg(1), Some(16 * MIB), false).unwrap();
    let b = RbdGateway::open(&cfg(2), None, false).unwrap();
    let (oa, ob) = (a.ownership().unwrap(), b.ownership().unwrap());
    a.write_at(&pattern(4096, 1), 0).unwrap();
    until("B to read A's record", || ob.owner(true) == Owner::Group(1));

    let frozen = Frozen::new(vec![c.pid("osd.0"), c.pid("mon.a")]);
    for (o, who) in [(&ob, "B"), (&oa, "A"), (&ob, "B again")] {
        let t0 = Instant::now();
        let owner = o.owner(true);
        let took = t0.elapsed();
        assert_eq!(owner, Owner::Group(1), "{who}: the last owner seen");
        assert!(
            took < Duration::from_secs(2),
            "{who}: the owner took {took:?} with the cluster stopped (osd_op_timeout 8 s)"
        );
    }
    drop(frozen);
    // Back: reads go through again (the background read finishes too).
    until("B to read the owner again", || {
        ob.owner(true) == Owner::Group(1)
    });
    assert_eq!(read(&b, 0), pattern(4096, 1));
}
