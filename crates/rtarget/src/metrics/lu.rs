//! The core's per-LU counters in a scrape (`target_core::stats`): latency
//! histograms per command class, bytes, CHECK CONDITIONs by sense key,
//! reservation conflicts, commands in flight, unit attentions and ALUA
//! transitions; and the iSCSI logins by outcome and busy polling. The core keeps them in
//! relaxed atomics on the data path; a scrape reads a snapshot of each LU
//! and encodes it here, so no prometheus-client metric (whose histogram
//! takes a lock per observation) is ever touched per command.

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use target_core::stats::{bucket_upper_secs, LuStats, OpClass, BUCKETS, SENSE_KEYS};

use super::Labels;
use crate::live::Live;

/// Each storage object's latency histograms, encoded from snapshots.
#[derive(Debug)]
struct Latency(Vec<(String, LuStats)>);

impl prometheus_client::collector::Collector for Latency {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "lu_latency",
            "Time the core took to answer a command, from its start to the backstore's completion, by class (read, write, flush, other)",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let mut buckets = [(0.0, 0); BUCKETS];
        for (path, s) in &self.0 {
            for class in OpClass::ALL {
                let c = s.class(class);
                for (i, b) in buckets.iter_mut().enumerate() {
                    *b = (bucket_upper_secs(i), c.buckets[i]);
                }
                let labels: Labels = vec![
                    ("storage_object", path.clone()),
                    ("op", class.name().to_string()),
                ];
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(
                        c.nanos as f64 * 1e-9,
                        c.count(),
                        &buckets,
                        None,
                    )?;
            }
        }
        Ok(())
    }
}

/// Every LU's counters (by storage object path).
pub(super) fn register(reg: &mut Registry, live: &Live) {
    let snaps: Vec<(String, LuStats)> = live
        .devices_by_path()
        .into_iter()
        .map(|(path, d)| (path, d.stats()))
        .collect();
    let read = Family::<Labels, Counter>::default();
    let written = Family::<Labels, Counter>::default();
    let in_flight = Family::<Labels, Gauge>::default();
    let checks = Family::<Labels, Counter>::default();
    let conflicts = Family::<Labels, Counter>::default();
    let uas = Family::<Labels, Counter>::default();
    let alua = Family::<Labels, Counter>::default();
    for (path, s) in &snaps {
        let so = || vec![("storage_object", path.clone())];
        read.get_or_create(&so()).inc_by(s.read_bytes);
        written.get_or_create(&so()).inc_by(s.write_bytes);
        in_flight.get_or_create(&so()).set(s.in_flight() as i64);
        conflicts
            .get_or_create(&so())
            .inc_by(s.reservation_conflicts);
        // Only the sense keys an LU answered (16 mostly-zero series per
        // LU would crowd the scrape).
        for (key, n) in SENSE_KEYS.iter().zip(s.sense).filter(|(_, n)| *n > 0) {
            let mut l = so();
            l.push(("sense_key", key.to_string()));
            checks.get_or_create(&l).inc_by(n);
        }
        for (event, n) in [
            ("established", s.ua_established),
            ("reported", s.ua_reported),
        ] {
            let mut l = so();
            l.push(("event", event.to_string()));
            uas.get_or_create(&l).inc_by(n);
        }
        for (kind, n) in [
            ("explicit", s.alua_explicit_transitions),
            ("implicit", s.alua_implicit_transitions),
        ] {
            let mut l = so();
            l.push(("kind", kind.to_string()));
            alua.get_or_create(&l).inc_by(n);
        }
    }
    reg.register_collector(Box::new(Latency(snaps)));
    reg.register_with_unit(
        "lu_read",
        "Data-In bytes of successful READs of a storage object (every fabric)",
        Unit::Bytes,
        read,
    );
    reg.register_with_unit(
        "lu_write",
        "Data-Out bytes of successful writes to a storage object (every fabric)",
        Unit::Bytes,
        written,
    );
    reg.register(
        "lu_in_flight",
        "Commands the core started and has not answered yet (the LU's queue depth in the core)",
        in_flight,
    );
    reg.register(
        "lu_check_conditions",
        "CHECK CONDITION answers by sense key (unit_attention ones report a condition, the others are errors)",
        checks,
    );
    reg.register(
        "lu_reservation_conflicts",
        "RESERVATION CONFLICT answers",
        conflicts,
    );
    reg.register(
        "lu_unit_attentions",
        "Unit attention conditions queued for an I_T nexus (established) and reported to it",
        uas,
    );
    reg.register(
        "alua_transitions",
        "ALUA group state changes of a storage object: by SET TARGET PORT GROUPS (explicit) or by management (implicit)",
        alua,
    );
    logins(reg, live);
    busy_polls(reg, live);
    flow_cpu(reg, live);
    landed(reg, live);
    live_lent(reg, live);
}

fn logins(reg: &mut Registry, live: &Live) {
    let logins = Family::<Labels, Counter>::default();
    for (result, reason, n) in live.login_counts() {
        logins
            .get_or_create(&vec![
                ("result", result.to_string()),
                ("reason", reason.to_string()),
            ])
            .inc_by(n);
    }
    reg.register(
        "iscsi_logins",
        "iSCSI login attempts by outcome: success (normal, discovery) or failure by reason",
        logins,
    );
}

/// The iSCSI connections' busy polling (`busy_poll_us`): whether spins
/// find data (pays) or run out (CPU spent for nothing), and the time spun.
fn busy_polls(reg: &mut Registry, live: &Live) {
    let c = live.busy_poll_counts();
    let polls = Family::<Labels, Counter>::default();
    for (result, n) in [
        ("data", c.data),
        ("ran_out", c.ran_out),
        ("yielded", c.yielded),
        ("skipped", c.skipped),
    ] {
        polls
            .get_or_create(&vec![("result", result.to_string())])
            .inc_by(n);
    }
    reg.register(
        "iscsi_busy_polls",
        "Waits of iSCSI connections for a request (busy_poll_us): spun and found data, spun and ran out, spun and yielded the CPU to another thread, or not spun (the adaptive gate skipped it)",
        polls,
    );
    let spin = Counter::<f64, std::sync::atomic::AtomicU64>::default();
    spin.inc_by(c.spin_ns as f64 * 1e-9);
    reg.register_with_unit(
        "iscsi_busy_poll_spin",
        "Time iSCSI connections spent spinning on their sockets (busy_poll_us; wall clock: the spin's yields let other threads run meanwhile)",
        Unit::Seconds,
        spin,
    );
}

/// Connection threads moved onto their flow's CPU at queue depth 1 and
/// back (`follow_flow_cpu`): how often, and whether they thrash.
fn flow_cpu(reg: &mut Registry, live: &Live) {
    let c = live.flow_cpu_counts();
    let moves = Family::<Labels, Counter>::default();
    for (to, n) in [
        ("flow", c.moved),
        ("followed", c.followed),
        ("own", c.restored),
        ("unknown", c.unknown),
        ("late", c.late),
        ("slower", c.slower),
    ] {
        moves.get_or_create(&vec![("to", to.to_string())]).inc_by(n);
    }
    reg.register(
        "iscsi_flow_cpu_moves",
        "iSCSI connection threads moved (follow_flow_cpu): onto the CPU their packets arrive on (flow), after that CPU changed (followed), back to their own CPU mask when the load grew (own), or not moved because the flow's CPU was unknown or outside the mask (unknown); late: sends as SCHED_IDLE that came back late (another task held the CPU), each pausing the hand-offs; slower: moves undone because the commands ran slower on one CPU than apart (also counted in own)",
        moves,
    );
}

/// WRITE data received straight into the medium (landed writes: fileio
/// LUs on tmpfs), in bytes.
fn landed(reg: &mut Registry, live: &Live) {
    let bytes = Counter::<u64>::default();
    bytes.inc_by(live.landed_receives().1);
    reg.register_with_unit(
        "iscsi_landed",
        "WRITE data received from the socket straight into the medium's memory (landed writes: fileio LUs on tmpfs), one copy fewer than a receive buffer",
        Unit::Bytes,
        bytes,
    );
}

/// READ data sent straight from a tmpfs fileio LU's pages (live lent
/// reads), in bytes: `how` sent (no copy of ours) or copied (the initiator
/// was slow to read and the bytes had to leave the file before the next
/// command).
fn live_lent(reg: &mut Registry, live: &Live) {
    let (bytes, copied) = live.live_lent_sends();
    let fam = Family::<Labels, Counter>::default();
    for (how, n) in [("sent", bytes.saturating_sub(copied)), ("copied", copied)] {
        fam.get_or_create(&vec![("how", how.to_string())]).inc_by(n);
    }
    reg.register_with_unit(
        "iscsi_live_lent",
        "READ data of fileio LUs on tmpfs answered from the file's own pages (live lent reads): sent from them with no copy of ours, or copied after all because the initiator was slow to read",
        Unit::Bytes,
        fam,
    );
}
