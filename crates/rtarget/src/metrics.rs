//! The opt-in Prometheus endpoint (`serve --metrics ADDR:PORT`, or the
//! global setting `set global metrics=ADDR:PORT`, applied live): `GET
//! /metrics` answers the OpenMetrics text of what the daemon already
//! counts, read at scrape time (prometheus-client encodes it): sessions,
//! each session's per-LUN commands and bytes (the iSCSI fabric's
//! counters, as `sessions detail` shows them), storage object sizes, ALUA
//! states and backstore recoveries (`Backstore::health`), panics, and the
//! reloads of the config file; the core's per-LU latency histograms, errors,
//! queue depth, unit attentions and ALUA transitions, and the logins by
//! outcome (`lu`). Nothing here is on an I/O path: a scrape takes the same
//! snapshots as the API.
//!
//! A session's counters start at 0 when it logs in and go when it logs
//! out (its labels carry the ISID, so a new session is a new series).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::live::Live;

mod lu;

/// SIGHUP reloads that applied the file / that were refused.
pub static RELOADS_OK: AtomicU64 = AtomicU64::new(0);
pub static RELOADS_FAILED: AtomicU64 = AtomicU64::new(0);

type Labels = Vec<(&'static str, String)>;

/// The running endpoint (at most one): `serve --metrics`, or `set global
/// metrics=ADDR:PORT` live.
static ENDPOINT: Mutex<Option<Endpoint>> = Mutex::new(None);

struct Endpoint {
    /// As asked for (port 0 stays 0 here), to tell a change from a repeat.
    asked: SocketAddr,
    bound: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Endpoint {
    /// Stop accepting: the flag, then a connection to wake `accept`.
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let mut wake = self.bound;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = self.thread.join();
    }
}

/// Serve metrics on `addr`, or stop serving them (`None`). A new address
/// is bound before the old one closes, so a failed change keeps the old
/// endpoint. Returns the bound address (the port may have been 0).
pub fn switch(addr: Option<SocketAddr>, live: &Arc<Live>) -> Result<Option<SocketAddr>> {
    let mut cur = ENDPOINT.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(c), Some(a)) = (cur.as_ref(), addr) {
        if c.asked == a {
            return Ok(Some(c.bound));
        }
    }
    let new = addr.map(|a| start(a, live.clone())).transpose()?;
    let bound = new.as_ref().map(|e| e.bound);
    if let Some(old) = std::mem::replace(&mut *cur, new) {
        old.stop();
    }
    Ok(bound)
}

fn start(addr: SocketAddr, live: Arc<Live>) -> Result<Endpoint> {
    let listener =
        TcpListener::bind(addr).with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                // One scrape at a time: a slow or silent client is cut off
                // by the timeouts, never holds the daemon.
                if let Err(e) = answer(stream, &live) {
                    tracing::debug!("metrics request: {e}");
                }
            }
        })?;
    Ok(Endpoint {
        asked: addr,
        bound,
        stop,
        thread,
    })
}

/// One HTTP/1.x request: `GET /metrics` gets the scrape, anything else 404
/// (or 405); the connection closes after the answer.
fn answer(stream: TcpStream, live: &Live) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?).take(16 << 10);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // The headers are read (and ignored) so the client sees a clean close.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(live),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    out.flush()
}

/// The scrape: a registry filled from the daemon's state right now.
pub fn render(live: &Live) -> String {
    let mut reg = Registry::with_prefix("rtarget");

    let info = Family::<Labels, Gauge>::default();
    info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION").to_string())])
        .set(1);
    reg.register("build_info", "rtarget's version", info);

    let panics = Counter::<u64>::default();
    panics.inc_by(crate::panics::count());
    reg.register(
        "panics",
        "Panics caught while serving (each is a bug; the daemon kept running)",
        panics,
    );

    let reloads = Family::<Labels, Counter>::default();
    for (result, n) in [("ok", &RELOADS_OK), ("failed", &RELOADS_FAILED)] {
        reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc_by(n.load(Ordering::Relaxed));
    }
    reg.register(
        "config_reloads",
        "Reloads of the config file (SIGHUP); a failed one changed nothing",
        reloads,
    );

    let cfg = live.config();
    let targets = Gauge::<i64>::default();
    targets.set(cfg.iscsi_targets().count() as i64);
    reg.register("targets", "Configured iSCSI targets", targets);

    sessions(&mut reg, live, &cfg);
    objects(&mut reg, live);
    lu::register(&mut reg, live);

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Sessions per target portal group, and each session's per-LUN counters.
/// The fabric names a LUN's storage object by name; the label is its path
/// (as in the other series) when that name is unique.
fn sessions(reg: &mut Registry, live: &Live, cfg: &config::SaveConfig) {
    let path_of = |name: &str| {
        let mut it = cfg.storage_objects.iter().filter(|so| so.name == name);
        match (it.next(), it.next()) {
            (Some(so), None) => so.path(),
            _ => name.to_string(),
        }
    };
    let count = Family::<Labels, Gauge>::default();
    let commands = Family::<Labels, Counter>::default();
    let read = Family::<Labels, Counter>::default();
    let written = Family::<Labels, Counter>::default();
    for s in live.sessions_detail() {
        let i = &s.info;
        let tpg = vec![("target", i.target.clone()), ("tpg", i.tpg_tag.to_string())];
        count.get_or_create(&tpg).inc();
        let isid: String = i.isid.iter().map(|b| format!("{b:02x}")).collect();
        for l in &s.luns {
            let mut labels = tpg.clone();
            labels.extend([
                ("initiator", i.initiator.clone()),
                ("isid", isid.clone()),
                ("lun", l.lun.to_string()),
                ("storage_object", path_of(&l.device)),
            ]);
            commands.get_or_create(&labels).inc_by(l.commands);
            read.get_or_create(&labels).inc_by(l.read_bytes);
            written.get_or_create(&labels).inc_by(l.write_bytes);
        }
    }
    reg.register("sessions", "Logged-in iSCSI sessions", count);
    reg.register(
        "session_lun_commands",
        "SCSI commands a session sent to a LUN",
        commands,
    );
    reg.register_with_unit(
        "session_lun_read",
        "Data-In bytes a session read from a LUN",
        Unit::Bytes,
        read,
    );
    reg.register_with_unit(
        "session_lun_write",
        "Data-Out bytes a session wrote to a LUN",
        Unit::Bytes,
        written,
    );
}

/// Storage objects: size, the access state of each ALUA group, and the
/// backstore's health counters (user:qemu restarts, NBD reconnects).
fn objects(reg: &mut Registry, live: &Live) {
    let size = Family::<Labels, Gauge>::default();
    let alua = Family::<Labels, Gauge>::default();
    let health = Family::<Labels, Counter>::default();
    let owner = Family::<Labels, Gauge>::default();
    for (path, d) in live.devices_by_path() {
        // A medium several gateways share (RBD with alua_group): which
        // gateway's group holds it, as last seen (no cluster I/O here).
        if let Some(o) = d.backstore.ownership() {
            let group = match o.owner(false) {
                backstore::Owner::Group(g) => i64::from(g),
                backstore::Owner::Nobody => 0,
                backstore::Owner::Elsewhere => -1,
            };
            owner
                .get_or_create(&vec![
                    ("storage_object", path.clone()),
                    ("local_group", o.local_group().to_string()),
                ])
                .set(group);
        }
        size.get_or_create(&vec![("storage_object", path.clone())])
            .set(d.backstore.size() as i64);
        for (event, n) in d.backstore.health() {
            health
                .get_or_create(&vec![
                    ("storage_object", path.clone()),
                    ("event", event.to_string()),
                ])
                .inc_by(n);
        }
        for g in d.alua_groups() {
            alua.get_or_create(&vec![
                ("storage_object", path.clone()),
                ("group", g.name.clone()),
            ])
            .set(g.state as i64);
        }
    }
    reg.register_with_unit(
        "storage_object_size",
        "Capacity of a storage object",
        Unit::Bytes,
        size,
    );
    reg.register(
        "backstore_events",
        "Backstore recoveries: restarts of a user:qemu child, reconnects of an NBD client",
        health,
    );
    reg.register(
        "storage_object_owner_group",
        "Shared medium (RBD gateways): the ALUA group of the gateway holding its exclusive lock (0 nobody, -1 another gateway, not yet known)",
        owner,
    );
    reg.register(
        "alua_access_state",
        "ALUA access state of a group (SPC codes: 0 active/optimized, 1 active/non-optimized, 2 standby, 3 unavailable, 14 offline, 15 transitioning)",
        alua,
    );
}
