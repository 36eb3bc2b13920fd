//! A device whose LUN is removed, or whose vhost target is stopped, while
//! the guest stays idle is released (its backstore closed, once) as soon
//! as nothing runs on it: the queue threads take the LUN table anew for
//! every request and keep none between them, so nothing of the guest's
//! holds the old table (as iSCSI's idle connections now let go too:
//! crates/iscsi/tests/device_release.rs).

mod common;

use std::sync::{Arc, Weak};

use backstore::testing::CountsCloses;
use common::*;
use target_core::{Device, DeviceOptions, IoEngine, Lun, LunTable};
use vhost_scsi::virtio::encode_lun;
use vhost_scsi::{VhostConfig, VhostServer};

const TARGET: u8 = 1;

/// A device counting its closes in `store`, held only by the caller.
fn device(name: &str, uuid: &str, engine: IoEngine, store: &Arc<CountsCloses>) -> Arc<Device> {
    let mut opts = DeviceOptions::new(name, uuid);
    opts.io_engine = engine;
    Device::new(opts, store.clone())
}

fn table(devs: &[(u64, &Arc<Device>)]) -> LunTable {
    LunTable {
        luns: devs
            .iter()
            .map(|(id, d)| Lun {
                id: *id,
                device: Arc::clone(d),
                write_protect: false,
            })
            .collect(),
    }
}

/// TUR (the power-on unit attention) then a READ(10) of one block.
fn use_lun(g: &mut Guest, l: u64, tag: u64) {
    let _ = g.scsi(0, encode_lun(TARGET, l), tag, &[0; 6], &[], 0, false);
    let r = g.scsi(
        0,
        encode_lun(TARGET, l),
        tag + 1,
        &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0],
        &[],
        512,
        false,
    );
    assert_eq!(r.status, 0, "{r:?}");
}

fn released(weak: &Weak<Device>, store: &CountsCloses, what: &str) {
    wait_until(what, || weak.strong_count() == 0);
    assert_eq!(store.closes(), 1, "{what}: closed once");
}

#[test]
fn an_idle_guest_lets_go_of_removed_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (kept_closes, gone_closes) = (CountsCloses::new(1 << 20), CountsCloses::new(1 << 20));
    let uuid = "6b2b3c4d-0000-4000-8000-0000000000e";
    let keep = device("keep", &format!("{uuid}1"), IoEngine::Inline, &kept_closes);
    // Through the engine's pool: its finished tasks must not hold it either.
    let gone = device("gone", &format!("{uuid}2"), IoEngine::Pool, &gone_closes);
    let mut cfg = VhostConfig::new(
        dir.path().join("vhost.sock"),
        "naa.5001405a1b2c3d4f",
        "naa.5001405f00d00002",
    );
    cfg.target_id = TARGET;
    let mut srv = VhostServer::start(cfg, table(&[(0, &keep), (1, &gone)])).unwrap();
    let (weak_keep, weak_gone) = (Arc::downgrade(&keep), Arc::downgrade(&gone));
    drop(gone);
    let mut g = Guest::connect(&dir.path().join("vhost.sock"), 3);
    wait_until("guest attached", || srv.connected());
    use_lun(&mut g, 0, 1);
    use_lun(&mut g, 1, 3);

    // Reconcile takes LUN 1 away; the guest sends nothing more.
    srv.shared().set_luns(table(&[(0, &keep)]));
    released(&weak_gone, &gone_closes, "LUN 1's device released");
    // The guest goes on with LUN 0 (after the inventory-changed UA).
    use_lun(&mut g, 0, 5);

    // Reconcile removes the whole vhost target, the guest still attached.
    drop(keep);
    assert_eq!(kept_closes.closes(), 0, "LUN 0 holds it");
    srv.stop();
    drop(srv);
    released(&weak_keep, &kept_closes, "LUN 0's device released");
}
