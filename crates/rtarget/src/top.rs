//! `rtarget top [--json] [INTERVAL] [COUNT]`: a live per-LU view like
//! iostat, from the API's `stats` (the core's counters per storage object,
//! every fabric together) and `sessions detail` (which iSCSI sessions use
//! each one). Two samples INTERVAL seconds apart give each storage
//! object's IOPS, MiB/s read and written, the average latency of its reads
//! and writes (the core's: from a command's start to the backstore's
//! completion), the average number of commands in the core over the
//! interval (QD: the sum of latencies per second, iostat's aqu-sz) and
//! those in flight at the second sample. `--json` prints each frame as
//! one JSON line instead, for scripts.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::client::Conn;
use crate::proto::stats::{LuCounters, OpCounters};
use crate::proto::{Answer, Request, SessionDetail, Sessions, Stats};

/// One reading of every storage object's counters.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// When the daemon read the counters (`Stats::at_ns`), else when the
    /// answer arrived.
    at: Option<Duration>,
    /// By path.
    objects: BTreeMap<String, LuCounters>,
    /// Sessions using each storage object, by name (as the fabric names it).
    sessions: BTreeMap<String, usize>,
}

impl Sample {
    pub fn new(stats: Stats, sessions: &[SessionDetail], arrived: Duration) -> Sample {
        let mut users = BTreeMap::new();
        for s in sessions {
            let mut names: Vec<&str> = s.luns.iter().map(|l| l.storage_object.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for n in names {
                *users.entry(n.to_string()).or_default() += 1;
            }
        }
        let at = match stats.at_ns {
            0 => arrived,
            ns => Duration::from_nanos(ns),
        };
        Sample {
            at: Some(at),
            objects: stats
                .storage_objects
                .into_iter()
                .map(|o| (o.storage_object.clone(), o))
                .collect(),
            sessions: users,
        }
    }
}

/// One line of the view.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub storage_object: String,
    pub sessions: usize,
    pub iops: f64,
    pub read_mib_s: f64,
    pub write_mib_s: f64,
    /// Average latency of the interval's reads / writes (0: none).
    pub read_lat_us: f64,
    pub write_lat_us: f64,
    /// Average commands in the core over the interval.
    pub queue_depth: f64,
    /// Commands in the core at the second sample.
    pub in_flight: u64,
}

/// Rates per storage object between two samples (by path, sorted).
pub fn rows(prev: &Sample, cur: &Sample) -> Vec<Row> {
    let secs = match (prev.at, cur.at) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64().max(1e-6),
        _ => 1.0,
    };
    const MIB: f64 = (1 << 20) as f64;
    let zero = LuCounters::default();
    cur.objects
        .iter()
        .map(|(path, now)| {
            let b = prev.objects.get(path).unwrap_or(&zero);
            // A counter that went back is an object opened anew.
            let d = |n: u64, b: u64| if n >= b { n - b } else { n };
            let op = |n: OpCounters, b: OpCounters| OpCounters {
                commands: d(n.commands, b.commands),
                nanos: d(n.nanos, b.nanos),
            };
            let lat = |c: OpCounters| {
                if c.commands == 0 {
                    0.0
                } else {
                    c.nanos as f64 / c.commands as f64 / 1e3
                }
            };
            let total = op(now.total(), b.total());
            let name = path.rsplit('/').next().unwrap_or(path);
            Row {
                storage_object: path.clone(),
                sessions: cur.sessions.get(name).copied().unwrap_or(0),
                iops: total.commands as f64 / secs,
                read_mib_s: d(now.read_bytes, b.read_bytes) as f64 / MIB / secs,
                write_mib_s: d(now.write_bytes, b.write_bytes) as f64 / MIB / secs,
                read_lat_us: lat(op(now.read, b.read)),
                write_lat_us: lat(op(now.write, b.write)),
                queue_depth: total.nanos as f64 / 1e9 / secs,
                in_flight: now.in_flight,
            }
        })
        .collect()
}

pub fn render(rows: &[Row], interval: Duration) -> String {
    let mut out = format!(
        "rtarget top: every {:.1} s\n{:<32} {:>8} {:>10} {:>10} {:>11} {:>9} {:>9} {:>6} {:>6}\n",
        interval.as_secs_f64(),
        "STORAGE OBJECT",
        "SESSIONS",
        "IOPS",
        "READ MiB/s",
        "WRITE MiB/s",
        "R LAT us",
        "W LAT us",
        "QD",
        "INFLT"
    );
    if rows.is_empty() {
        out.push_str("(no storage objects)\n");
    }
    for r in rows {
        out.push_str(&format!(
            "{:<32} {:>8} {:>10.1} {:>10.2} {:>11.2} {:>9.1} {:>9.1} {:>6.2} {:>6}\n",
            r.storage_object,
            r.sessions,
            r.iops,
            r.read_mib_s,
            r.write_mib_s,
            r.read_lat_us,
            r.write_lat_us,
            r.queue_depth,
            r.in_flight
        ));
    }
    out
}

/// A frame as one JSON line (`--json`).
pub fn render_json(rows: &[Row], interval: Duration) -> String {
    serde_json::json!({"interval": interval.as_secs_f64(), "storage_objects": rows}).to_string()
}

fn call<T: DeserializeOwned>(conn: &mut Conn, req: &Request) -> Result<T> {
    let resp = conn.call(req)?;
    match Answer::<T>::deserialize(&resp) {
        Ok(Answer::Ok(s)) => Ok(s),
        Ok(Answer::Err(e)) => Err(anyhow!("{e}")),
        Err(e) => Err(anyhow!("bad response from the daemon: {e}")),
    }
}

fn sample(conn: &mut Conn, start: Instant) -> Result<Sample> {
    let stats: Stats = call(conn, &Request::Stats)?;
    let at = start.elapsed();
    let s: Sessions<SessionDetail> = call(conn, &Request::Sessions { detail: true })?;
    Ok(Sample::new(stats, &s.sessions, at))
}

/// Refresh every `interval`, `count` times (forever without one). On a
/// terminal each frame replaces the last; otherwise frames follow.
pub fn run(socket: &Path, interval: Duration, count: Option<u64>, json: bool) -> Result<bool> {
    let mut conn = Conn::open(socket)?;
    let start = Instant::now();
    let mut prev = sample(&mut conn, start)?;
    let tty = std::io::stdout().is_terminal() && !json;
    let mut shown = 0;
    while count.is_none_or(|c| shown < c) {
        std::thread::sleep(interval);
        let cur = sample(&mut conn, start)?;
        let r = rows(&prev, &cur);
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", render_json(&r, interval))?;
        } else {
            if tty {
                write!(out, "\x1b[H\x1b[2J")?;
            }
            write!(out, "{}", render(&r, interval))?;
            if !tty {
                writeln!(out)?;
            }
        }
        out.flush()?;
        prev = cur;
        shown += 1;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::session::LunIo;
    use crate::proto::{AclKind, SessionSummary};

    fn session(tsih: u16, objects: &[&str]) -> SessionDetail {
        SessionDetail {
            session: SessionSummary {
                initiator: "iqn.i".into(),
                isid: format!("{tsih:012x}"),
                target: "iqn.t".into(),
                tpg: 1,
                tsih,
                peer: "127.0.0.1:1".parse().unwrap(),
                cids: Vec::new(),
            },
            acl: AclKind::Generated,
            authenticated: false,
            connections: Vec::new(),
            parameters: Vec::new(),
            luns: objects
                .iter()
                .enumerate()
                .map(|(lun, so)| LunIo {
                    lun: lun as u64,
                    storage_object: so.to_string(),
                    write_protect: false,
                    commands: 0,
                    read_bytes: 0,
                    write_bytes: 0,
                })
                .collect(),
        }
    }

    /// (path, reads, read ns, writes, write ns, read bytes, written, in flight)
    type Lu = (&'static str, u64, u64, u64, u64, u64, u64, u64);

    fn stats(at_s: u64, lus: &[Lu]) -> Stats {
        Stats {
            at_ns: at_s * 1_000_000_000,
            storage_objects: lus
                .iter()
                .map(|&(path, r, rn, w, wn, rb, wb, inf)| LuCounters {
                    storage_object: path.into(),
                    in_flight: inf,
                    read: OpCounters {
                        commands: r,
                        nanos: rn,
                    },
                    write: OpCounters {
                        commands: w,
                        nanos: wn,
                    },
                    flush: OpCounters::default(),
                    other: OpCounters::default(),
                    read_bytes: rb,
                    write_bytes: wb,
                    check_conditions: BTreeMap::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn rates_latency_and_queue_depth_over_the_interval() {
        // The daemon's clock decides, not the arrival.
        let (t0, t1) = (Duration::from_secs(7), Duration::from_secs(8));
        let d1 = "/backstores/ramdisk/d1";
        let before = Sample::new(
            stats(10, &[(d1, 100, 1_000_000, 0, 0, 1 << 20, 0, 0)]),
            &[session(1, &["d1"])],
            t0,
        );
        // 200 reads of 0.5 ms and 100 writes of 2 ms in 2 s: 150 IOPS, an
        // average of (0.1 + 0.2) / 2 = 0.15 commands in the core.
        let after = Sample::new(
            stats(
                12,
                &[
                    (d1, 300, 101_000_000, 100, 200_000_000, 5 << 20, 2 << 20, 3),
                    // Opened meanwhile: everything counts.
                    ("/backstores/fileio/d2", 10, 10_000, 0, 0, 0, 0, 0),
                ],
            ),
            &[session(1, &["d1", "d1"]), session(2, &["d1"])],
            t1,
        );
        let r = rows(&before, &after);
        assert_eq!(r.len(), 2);
        let d2 = &r[0];
        assert_eq!(
            (d2.storage_object.as_str(), d2.iops, d2.sessions),
            ("/backstores/fileio/d2", 5.0, 0)
        );
        assert_eq!(
            r[1],
            Row {
                storage_object: d1.into(),
                sessions: 2,
                iops: 150.0,
                read_mib_s: 2.0,
                write_mib_s: 1.0,
                read_lat_us: 500.0,
                write_lat_us: 2000.0,
                queue_depth: 0.15,
                in_flight: 3
            }
        );
        let text = render(&r, Duration::from_secs(2));
        let line = text.lines().find(|l| l.starts_with(d1)).unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cols,
            [d1, "2", "150.0", "2.00", "1.00", "500.0", "2000.0", "0.15", "3"]
        );
        let json: serde_json::Value =
            serde_json::from_str(&render_json(&r, Duration::from_secs(2))).unwrap();
        assert_eq!(json["storage_objects"][1]["iops"], 150.0);
        assert_eq!(json["storage_objects"][1]["read_lat_us"], 500.0);
    }
}
