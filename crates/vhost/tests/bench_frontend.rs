//! The benchmark's frontend (examples/vhost_bench.rs, driven by
//! bench/vhost.sh) against an in-process vhost target: with `--queues 2`
//! it drives two request virtqueues, each with its own share of the
//! requests in flight, and every I/O succeeds.

mod common;
// The frontend itself, not a copy: its `main` is unused here.
#[allow(dead_code)]
#[path = "../examples/vhost_bench.rs"]
mod vhost_bench;

use std::sync::Arc;

use target_core::{Device, DeviceOptions, Lun, LunTable};
use vhost_scsi::{VhostConfig, VhostServer};

fn run(sock: &std::path::Path, rw: &str, queues: &str) -> String {
    let words = [
        "--socket",
        sock.to_str().unwrap(),
        "--kind",
        "scsi",
        "--rw",
        rw,
        "--bs",
        "4096",
        "--qd",
        "8",
        "--queues",
        queues,
        "--secs",
        "0.3",
        "--size",
        &(8u64 << 20).to_string(),
    ];
    let a = vhost_bench::parse_args(words.iter().map(|w| w.to_string()).collect());
    vhost_bench::run(&a).0
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

#[test]
fn two_request_queues_share_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(backstore::RamBackstore::new(8 << 20).unwrap());
    let dev = Device::new(
        DeviceOptions::new("bench0", "6b2b3c4d-0000-4000-8000-00000000000b"),
        store,
    );
    let luns = LunTable {
        luns: vec![Lun {
            id: 0,
            device: dev,
            write_protect: false,
        }],
    };
    let sock = dir.path().join("vhost.sock");
    let mut cfg = VhostConfig::new(&sock, "naa.5001405a1b2c3d4f", "naa.5001405f00d00002");
    cfg.target_id = 1;
    cfg.request_queues = 2;
    let mut srv = VhostServer::start(cfg, luns).unwrap();
    for rw in ["randwrite", "randread", "read"] {
        let line = run(&sock, rw, "2");
        assert_eq!(field(&line, "errors"), "0", "{line}");
        let per: Vec<u64> = field(&line, "queue_ios")
            .split('/')
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(per.len(), 2, "{line}");
        assert!(per.iter().all(|&n| n > 0), "both queues did I/O: {line}");
        let ios: u64 = field(&line, "ios").parse().unwrap();
        assert_eq!(per.iter().sum::<u64>(), ios);
        // The next run is a new guest: wait for this one's detach.
        common::wait_until("the guest's detach", || !srv.connected());
    }
    srv.stop();
}
