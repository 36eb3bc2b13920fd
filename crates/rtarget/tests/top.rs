//! `rtarget top`: while an initiator reads steadily, the view shows the
//! storage object's IOPS and MiB/s close to what the initiator measures,
//! its read latency and queue depth; `--json` gives the same frames.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use common::initiator::{read10, Client};
use common::*;

#[test]
fn top_shows_the_running_io_rate() {
    let d = Served::start();
    d.ok(&["/backstores/ramdisk", "create", "r1", "16M"]);
    d.demo_target(IQN, &["/backstores/ramdisk/r1"]);
    let mut c = Client::connect(SocketAddr::from(([127, 0, 0, 1], d.port())));
    c.login(Some(IQN), &[]);
    c.clear_ua();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let io = {
        let (stop, done) = (stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut lba = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(c.read_cmd(&read10(lba, 8), 4096).0, 0);
                lba = (lba + 8) % 32768;
                done.fetch_add(1, Ordering::Relaxed);
            }
            c.logout();
        })
    };
    // The initiator's own rate over the same window as top's.
    let (t0, n0) = (Instant::now(), done.load(Ordering::Relaxed));
    let out = d.ok(&["top", "0.5", "3"]);
    let (secs, n1) = (t0.elapsed().as_secs_f64(), done.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    io.join().unwrap();

    assert_eq!(out.matches("rtarget top: every 0.5 s").count(), 3, "{out}");
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("/backstores/ramdisk/r1 "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    let iops: f64 = rows
        .iter()
        .map(|r| r[2].parse::<f64>().unwrap())
        .sum::<f64>()
        / 3.0;
    let mibs: f64 = rows
        .iter()
        .map(|r| r[3].parse::<f64>().unwrap())
        .sum::<f64>()
        / 3.0;
    let measured = (n1 - n0) as f64 / secs;
    eprintln!("top: {iops:.0} IOPS {mibs:.1} MiB/s; initiator: {measured:.0} IOPS");
    assert_eq!(rows[0][1], "1", "one session");
    assert!(iops > 0.0 && mibs > 0.0, "{out}");
    // Same window up to the sampling edges and the API round trips.
    assert!(
        (iops / measured - 1.0).abs() < 0.10,
        "top {iops:.0} IOPS vs initiator {measured:.0}\n{out}"
    );
    // 4 KiB per read.
    assert!((mibs * 1024.0 / 4.0 / iops - 1.0).abs() < 0.05, "{out}");
    // One command at a time: a read latency, a queue depth of at most one
    // (the initiator waits for each answer), nothing written.
    for r in &rows {
        let (rlat, wlat, qd): (f64, f64, f64) = (
            r[5].parse().unwrap(),
            r[6].parse().unwrap(),
            r[7].parse().unwrap(),
        );
        assert!(rlat > 0.0 && wlat == 0.0, "{out}");
        assert!(qd > 0.0 && qd <= 1.0, "{out}");
        assert!(r[8] == "0" || r[8] == "1", "{out}");
    }
}

/// `top --json`: one JSON object per frame, with every column.
#[test]
fn top_json_prints_one_line_per_frame() {
    let d = Served::start();
    d.ok(&["/backstores/ramdisk", "create", "r1", "16M"]);
    let out = d.ok(&["top", "--json", "0.2", "2"]);
    let frames: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(frames.len(), 2, "{out}");
    let lu = &frames[1]["storage_objects"][0];
    assert_eq!(lu["storage_object"], "/backstores/ramdisk/r1", "{out}");
    for k in [
        "sessions",
        "iops",
        "read_mib_s",
        "write_mib_s",
        "read_lat_us",
        "write_lat_us",
        "queue_depth",
        "in_flight",
    ] {
        assert!(lu[k].is_number(), "{k}: {out}");
    }
}
