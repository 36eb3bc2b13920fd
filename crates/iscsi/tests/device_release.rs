//! A device whose LUN is removed while a session uses it is released (its
//! backstore closed, once) as soon as nothing runs on it, also when the
//! session goes idle and sends nothing more: LIO frees a device once its
//! LUNs are gone and their commands drained. Before, each connection kept
//! the LUN table it last used until its next command, and with it an RBD
//! image's header watch and exclusive lock.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backstore::testing::CountsCloses;
use common::*;
use iscsi::IscsiServer;
use target_core::{Device, DeviceOptions, Lun, LunTable};

fn lun(id: u64, device: &Arc<Device>) -> Lun {
    Lun {
        id,
        device: Arc::clone(device),
        write_protect: false,
    }
}

/// Polls `done` for up to `secs` (a tick is 200 ms); whether it came true.
fn within(secs: u64, done: impl Fn() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while !done() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    done()
}

/// A server exporting a device as LUN 0 and `store`'s device (held by
/// nothing else) as LUN 1, and a session that used LUN 1 (its connection
/// holds the table with it). Then LUN 1 goes (targetcli deletes an
/// object's LUNs first) and the initiator sends nothing more: returns once
/// LUN 1's device is let go of (its close begins).
fn lun_1_removed_under_an_idle_session(store: &Arc<CountsCloses>) -> (Arc<IscsiServer>, Client) {
    let keep = Device::new(
        DeviceOptions::new("keep", "5b3c9a2e-0000-4000-8000-0000000000b1"),
        MemStore::new(1 << 20),
    );
    let gone = Device::new(
        DeviceOptions::new("gone", "5b3c9a2e-0000-4000-8000-0000000000b2"),
        store.clone(),
    );
    let weak = Arc::downgrade(&gone);
    let mut t = one_lun_target(IQN, Arc::clone(&keep), Default::default());
    t.tpgs[0].luns = Arc::new(LunTable {
        luns: vec![lun(0, &keep), lun(1, &gone)],
    });
    drop(gone);
    let (s, addr) = serve_device(keep.clone());
    s.set_target(t.clone());
    let mut c = session(addr, &[]);
    c.lun = 1;
    c.clear_ua();
    let (st, data, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!((st, data.len()), (0, 512));

    t.tpgs[0].luns = Arc::new(LunTable {
        luns: vec![lun(0, &keep)],
    });
    s.set_target(t);
    assert!(
        within(5, || weak.strong_count() == 0),
        "the idle session still holds it"
    );
    c.lun = 0;
    (s, c)
}

#[test]
fn an_idle_session_lets_go_of_a_removed_device() {
    let store = CountsCloses::new(1 << 20);
    let (s, mut c) = lun_1_removed_under_an_idle_session(&store);
    // (On the server's closer thread.)
    assert!(within(5, || store.closes() == 1), "closed once");
    // The session goes on, with LUN 0.
    c.clear_ua();
    let (st, _, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!(st, 0);
    s.shutdown();
}

/// A session of a target removed entirely lets go of the target's devices
/// at its next idle tick, not when it ends (the logout it is asked for
/// has a grace period of 3 s; an initiator that does not answer keeps the
/// connection that long): before, it kept its login-time configuration,
/// and with it every LU of the target, until then. LIO ends such sessions
/// at once (`iscsit_tpg_del_portal_group` releases them before the LUNs).
#[test]
fn a_removed_targets_session_lets_go_of_its_devices_at_once() {
    let store = CountsCloses::new(1 << 20);
    let dev = Device::new(
        DeviceOptions::new("gone", "5b3c9a2e-0000-4000-8000-0000000000b3"),
        store.clone(),
    );
    let weak = Arc::downgrade(&dev);
    let (s, addr) = serve_device(dev);
    let mut c = session(addr, &[]);
    c.clear_ua();
    let (st, data, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!((st, data.len()), (0, 512));

    // The whole target goes; the initiator sends nothing more (and does
    // not answer the logout request).
    assert!(s.remove_target(IQN));
    // Well within the logout grace period (the idle tick is 200 ms).
    assert!(
        within(2, || weak.strong_count() == 0),
        "the session still holds it"
    );
    assert!(within(2, || store.closes() == 1), "closed once");
    s.shutdown();
}

/// The close of a device a session lets go of (an RBD image's close can
/// take a second) does not hold up the connection: a command sent while
/// that close is still running is answered before it ends.
#[test]
fn a_slow_close_does_not_block_the_connection() {
    let store = CountsCloses::gated(1 << 20);
    let (s, mut c) = lun_1_removed_under_an_idle_session(&store);
    // The connection answers meanwhile (the inventory-changed UA first).
    c.clear_ua();
    let (st, _, _) = c.read_cmd(&read10(0, 1), 512);
    assert_eq!(st, 0);
    assert_eq!(store.closes(), 0, "answered only once the close ended");
    store.open_gate();
    assert!(within(5, || store.closes() == 1), "closed once");
    s.shutdown();
}
