//! `rtarget top [INTERVAL] [COUNT]`: a live per-LU view like iostat, from
//! the API's `sessions detail` counters (commands, bytes read and written
//! per session and LUN, since each login). Two samples INTERVAL seconds
//! apart give each storage object's IOPS and MiB/s: the sum over the
//! sessions that use it of what their counters moved. A session that
//! logged in between two samples counts from zero; one that left drops
//! out.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use serde::Deserialize;

use crate::client::Conn;
use crate::proto::{Answer, Request, SessionDetail, Sessions};

/// Counters of one session's LUN: (commands, read bytes, written bytes).
type Counters = (u64, u64, u64);

/// One reading of every session's LUN counters.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    at: Option<Instant>,
    /// (target, tsih, isid, lun) -> (storage object, counters).
    luns: BTreeMap<(String, u16, String, u64), (String, Counters)>,
}

impl Sample {
    pub fn from_sessions(sessions: &[SessionDetail], at: Instant) -> Sample {
        let mut luns = BTreeMap::new();
        for s in sessions {
            let k = &s.session;
            for l in &s.luns {
                luns.insert(
                    (k.target.clone(), k.tsih, k.isid.clone(), l.lun),
                    (
                        l.storage_object.clone(),
                        (l.commands, l.read_bytes, l.write_bytes),
                    ),
                );
            }
        }
        Sample { at: Some(at), luns }
    }
}

/// One line of the view.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub storage_object: String,
    pub sessions: usize,
    pub iops: f64,
    pub read_mib_s: f64,
    pub write_mib_s: f64,
}

/// Rates per storage object between two samples (by name, sorted).
pub fn rows(prev: &Sample, cur: &Sample) -> Vec<Row> {
    let secs = match (prev.at, cur.at) {
        (Some(a), Some(b)) => b.saturating_duration_since(a).as_secs_f64().max(1e-6),
        _ => 1.0,
    };
    let mut by_object: BTreeMap<&str, (usize, Counters)> = BTreeMap::new();
    for (key, (so, now)) in &cur.luns {
        let before = prev.luns.get(key).map(|(_, c)| *c).unwrap_or_default();
        // A counter that went back is a new session under an old key.
        let d = |n: u64, b: u64| if n >= b { n - b } else { n };
        let e = by_object.entry(so).or_default();
        e.0 += 1;
        e.1 .0 += d(now.0, before.0);
        e.1 .1 += d(now.1, before.1);
        e.1 .2 += d(now.2, before.2);
    }
    const MIB: f64 = (1 << 20) as f64;
    by_object
        .into_iter()
        .map(|(so, (n, (c, r, w)))| Row {
            storage_object: so.to_string(),
            sessions: n,
            iops: c as f64 / secs,
            read_mib_s: r as f64 / MIB / secs,
            write_mib_s: w as f64 / MIB / secs,
        })
        .collect()
}

pub fn render(rows: &[Row], interval: Duration) -> String {
    let mut out = format!(
        "rtarget top: every {:.1} s\n{:<32} {:>8} {:>10} {:>10} {:>10}\n",
        interval.as_secs_f64(),
        "STORAGE OBJECT",
        "SESSIONS",
        "IOPS",
        "READ MiB/s",
        "WRITE MiB/s"
    );
    if rows.is_empty() {
        out.push_str("(no sessions)\n");
    }
    for r in rows {
        out.push_str(&format!(
            "{:<32} {:>8} {:>10.1} {:>10.2} {:>10.2}\n",
            r.storage_object, r.sessions, r.iops, r.read_mib_s, r.write_mib_s
        ));
    }
    out
}

fn sample(conn: &mut Conn) -> Result<Sample> {
    let resp = conn.call(&Request::Sessions { detail: true })?;
    match Answer::<Sessions<SessionDetail>>::deserialize(&resp) {
        Ok(Answer::Ok(s)) => Ok(Sample::from_sessions(&s.sessions, Instant::now())),
        Ok(Answer::Err(e)) => Err(anyhow!("{e}")),
        Err(e) => Err(anyhow!("bad response from the daemon: {e}")),
    }
}

/// Refresh every `interval`, `count` times (forever without one). On a
/// terminal each frame replaces the last; otherwise frames follow.
pub fn run(socket: &Path, interval: Duration, count: Option<u64>) -> Result<bool> {
    let mut conn = Conn::open(socket)?;
    let mut prev = sample(&mut conn)?;
    let tty = std::io::stdout().is_terminal();
    let mut shown = 0;
    while count.is_none_or(|c| shown < c) {
        std::thread::sleep(interval);
        let cur = sample(&mut conn)?;
        let frame = render(&rows(&prev, &cur), interval);
        let mut out = std::io::stdout().lock();
        if tty {
            write!(out, "\x1b[H\x1b[2J")?;
        }
        write!(out, "{frame}")?;
        if !tty {
            writeln!(out)?;
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

    fn session(tsih: u16, luns: &[(u64, &str, u64, u64, u64)]) -> SessionDetail {
        SessionDetail {
            session: SessionSummary {
                initiator: "iqn.i".into(),
                isid: format!("{tsih:012x}"),
                target: "iqn.t".into(),
                tpg: 1,
                tsih,
                peer: "127.0.0.1:1".parse().unwrap(),
            },
            acl: AclKind::Generated,
            authenticated: false,
            connections: Vec::new(),
            parameters: Vec::new(),
            luns: luns
                .iter()
                .map(|&(lun, so, c, r, w)| LunIo {
                    lun,
                    storage_object: so.into(),
                    write_protect: false,
                    commands: c,
                    read_bytes: r,
                    write_bytes: w,
                })
                .collect(),
        }
    }

    #[test]
    fn rates_sum_sessions_per_object_over_the_interval() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let before = Sample::from_sessions(
            &[session(
                1,
                &[(0, "d1", 100, 1 << 20, 0), (1, "d2", 10, 0, 0)],
            )],
            t0,
        );
        let after = Sample::from_sessions(
            &[
                session(1, &[(0, "d1", 300, 5 << 20, 0), (1, "d2", 10, 0, 0)]),
                // Logged in meanwhile: everything since login counts.
                session(2, &[(0, "d1", 100, 0, 2 << 20)]),
            ],
            t1,
        );
        let r = rows(&before, &after);
        assert_eq!(
            r[0],
            Row {
                storage_object: "d1".into(),
                sessions: 2,
                iops: 150.0,
                read_mib_s: 2.0,
                write_mib_s: 1.0
            }
        );
        assert_eq!((r[1].storage_object.as_str(), r[1].iops), ("d2", 0.0));
        let text = render(&r, Duration::from_secs(2));
        assert!(text.contains("d1") && text.contains("150.0"), "{text}");
    }
}
