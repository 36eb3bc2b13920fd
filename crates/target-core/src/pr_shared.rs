//! Reservations shared by several targets serving one medium (the gateways
//! of an RBD image): the registrations, the persistent reservation, the PR
//! generation, APTPL and the SPC-2 reservation live in the backstore's
//! [`SharedState`] rather than in this process alone.
//!
//! Every change goes through [`update`]: under the LU's reservation lock,
//! reload the stored state if its version moved, apply the change, store
//! it with compare-and-swap on the version read (a lost race reloads and
//! applies again), then announce it; the announcement returns once every
//! other live target reloaded (their [`SharedState::subscribe`] hook runs
//! [`refresh`]), so each enforces the new state on its next command from
//! the same cached copy the single-target path uses. PERSISTENT RESERVE IN
//! reloads before answering.
//!
//! The stored form is target-neutral: registrations name the I_T nexus by
//! initiator port and target port names (each gateway serves its own
//! target port group, so the names differ per gateway; an ALL_TG_PT
//! registration covers them all), and registration ids, which the
//! reservation names its holder by, are stored with them. The SPC-2 holder
//! is named the same way, plus the holder id of the target it reached: a
//! target that restarts finds a reservation held through a target that is
//! gone and releases it, as that target's nexus loss would have.
//!
//! Unit attentions for registrants reached through another target travel
//! in the stored state: each change records (by registration identity)
//! whom it must tell, tagged with its version; a target that reloads
//! raises those of the versions it had not seen for its live nexuses. The
//! last [`KEEP_EVENTS`] versions' are kept. A LOGICAL UNIT RESET (or a
//! target reset) through one target is recorded the same way, for every
//! nexus ([`lu_reset`]): the LU is one, whichever port reset it.
//!
//! With a shared state the APTPL file is not used: the state outlives any
//! one target (a restarted gateway loads it) whatever the APTPL bit, which
//! is stored and reported as received.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use backstore::SharedState;
use scsi::Asc;

use crate::error::CmdError;
use crate::pr::{all_registrants, initiator_matches, valid_type, PrState, Registration};
use crate::pr::{Reservation, EX_AC, WR_EX};
use crate::pr_file::{decode, encode};
use crate::reservation::{Inner, Spc2};
use crate::{Device, Nexus};

const MAGIC: &str = "rtarget-pr-shared 1";
/// Versions whose unit attentions are kept in the stored state.
const KEEP_EVENTS: u64 = 16;
/// Compare-and-swap attempts before giving up (each lost one means another
/// target changed the state meanwhile).
const MAX_TRIES: usize = 64;

/// A unit attention for whichever live nexuses a registration identity
/// covers (an empty `initiator`: every nexus), raised by the change that
/// made `version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub version: u64,
    pub asc: Asc,
    pub initiator: String,
    pub target: String,
    pub all_tg_pt: bool,
}

/// What this target knows of the stored state.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cache {
    /// The version the LU's state is a copy of (`None`: nothing loaded).
    pub version: Option<u64>,
    /// The recent versions' unit attentions (stored with the state).
    pub events: Vec<Event>,
}

/// What a change raises ([`update`]'s closure fills it in).
#[derive(Default)]
pub(crate) struct Raised {
    /// Unit attentions for the other targets' nexuses (stored with it).
    pub events: Vec<Event>,
    /// Unit attentions for this target's nexuses.
    pub here: Vec<(u64, Asc)>,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// The stored form of the LU's reservations, with `events`.
fn render(inner: &Inner, events: &[Event]) -> String {
    let pr = &inner.pr;
    let mut s = format!(
        "{MAGIC}\ngeneration={}\nnext_id={}\naptpl={}\n",
        pr.generation,
        pr.next_id,
        u8::from(pr.aptpl)
    );
    for r in &pr.regs {
        s.push_str(&format!(
            "reg={} {:#x} {} {} {} {}\n",
            r.id,
            r.key,
            u8::from(r.all_tg_pt),
            r.rel_port,
            encode(&r.initiator),
            encode(&r.target)
        ));
    }
    if let Some(res) = &pr.reservation {
        s.push_str(&format!(
            "reservation={} {}\n",
            res.holder.unwrap_or(0),
            res.rtype
        ));
    }
    if let Some(h) = &inner.holder {
        s.push_str(&format!(
            "spc2={} {} {}\n",
            h.gateway,
            encode(&h.initiator),
            encode(&h.target)
        ));
    }
    for e in events {
        s.push_str(&format!(
            "event={} {} {} {} {} {}\n",
            e.version,
            e.asc.0,
            e.asc.1,
            u8::from(e.all_tg_pt),
            encode(&e.initiator),
            encode(&e.target)
        ));
    }
    s
}

/// What a stored state holds.
#[derive(Default)]
struct Stored {
    pr: PrState,
    spc2: Option<(u64, String, String)>,
    events: Vec<Event>,
}

fn parse(text: &str) -> io::Result<Stored> {
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad("not an rtarget shared reservation state"));
    }
    let mut out = Stored::default();
    let mut res = None;
    for line in lines {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| bad("line without '='"))?;
        let f: Vec<&str> = v.split(' ').collect();
        let num = |i: usize| -> io::Result<u64> {
            let v = f.get(i).ok_or_else(|| bad("missing field"))?;
            match v.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => v.parse(),
            }
            .map_err(|_| bad("bad number"))
        };
        let small =
            |i: usize| -> io::Result<u8> { u8::try_from(num(i)?).map_err(|_| bad("bad number")) };
        let name = |i: usize| decode(f.get(i).ok_or_else(|| bad("missing name"))?);
        match k {
            "generation" => {
                out.pr.generation = u32::try_from(num(0)?).map_err(|_| bad("generation"))?
            }
            "next_id" => out.pr.next_id = num(0)?,
            "aptpl" => out.pr.aptpl = num(0)? != 0,
            "reg" => {
                let id = num(0)?;
                if id == 0 || id > out.pr.next_id || out.pr.regs.iter().any(|r| r.id == id) {
                    return Err(bad("bad registration id"));
                }
                out.pr.regs.push(Registration {
                    id,
                    key: num(1)?,
                    all_tg_pt: num(2)? != 0,
                    rel_port: u16::try_from(num(3)?).map_err(|_| bad("rel_port"))?,
                    initiator: name(4)?,
                    target: name(5)?,
                });
            }
            "reservation" => res = Some((num(0)?, small(1)?)),
            "spc2" => out.spc2 = Some((num(0)?, name(1)?, name(2)?)),
            "event" => out.events.push(Event {
                version: num(0)?,
                asc: Asc(small(1)?, small(2)?),
                all_tg_pt: num(3)? != 0,
                initiator: name(4)?,
                target: name(5)?,
            }),
            _ => return Err(bad("unexpected line")),
        }
    }
    if let Some((holder, rtype)) = res {
        let holder = (holder != 0).then_some(holder);
        let known = holder.is_none_or(|h| out.pr.regs.iter().any(|r| r.id == h));
        if !valid_type(rtype) || !known || holder.is_none() != all_registrants(rtype) {
            return Err(bad("bad reservation"));
        }
        out.pr.reservation = Some(Reservation { holder, rtype });
    }
    Ok(out)
}

/// Unit attentions to raise here after a reload.
#[derive(Default)]
struct Uas {
    /// For these live nexuses.
    each: Vec<(u64, Asc)>,
    /// For every nexus (a reset elsewhere).
    all: Option<Asc>,
}

/// The unit attentions of `events` for this target's live nexuses.
fn resolve(pr: &PrState, events: &[&Event]) -> Uas {
    let mut out = Uas::default();
    for e in events {
        if e.initiator.is_empty() {
            // A reset supersedes what came before it.
            out = Uas {
                each: Vec::new(),
                all: Some(e.asc),
            };
            continue;
        }
        for l in &pr.live {
            if initiator_matches(&e.initiator, &l.initiator_port)
                && (e.all_tg_pt || e.target == l.target_port)
            {
                out.each.push((l.id, e.asc));
            }
        }
    }
    out
}

/// Bring `inner` up to the stored state; returns the unit attentions the
/// changes since the cached version raise here.
fn refresh_locked(store: &dyn SharedState, inner: &mut Inner) -> io::Result<Uas> {
    let Some((version, blob)) = store.load()? else {
        // Nothing stored (yet, or any more): no reservations.
        if inner.shared.version.is_some() {
            reset(inner, Stored::default(), None);
        }
        return Ok(Uas::default());
    };
    if inner.shared.version == Some(version) {
        return Ok(Uas::default());
    }
    let text = std::str::from_utf8(&blob).map_err(|_| bad("not UTF-8"))?;
    let stored = parse(text)?;
    let uas = match inner.shared.version {
        Some(old) => {
            let new: Vec<&Event> = stored
                .events
                .iter()
                .filter(|e| e.version > old && e.version <= version)
                .collect();
            resolve(&inner.pr, &new)
        }
        None => Uas::default(),
    };
    reset(inner, stored, Some(version));
    Ok(uas)
}

/// Replace `inner`'s reservations with `stored` (version `version`),
/// keeping what only this target knows: its live nexuses, and the local
/// nexus of an SPC-2 reservation still held through it.
fn reset(inner: &mut Inner, stored: Stored, version: Option<u64>) {
    let mut pr = stored.pr;
    pr.live = std::mem::take(&mut inner.pr.live);
    pr.file = inner.pr.file.take();
    inner.pr = pr;
    let local = inner.holder.take();
    inner.holder = stored.spc2.map(|(gateway, initiator, target)| {
        let nexus = local
            .filter(|h| h.gateway == gateway && h.initiator == initiator && h.target == target)
            .and_then(|h| h.nexus);
        Spc2 {
            nexus,
            initiator,
            target,
            gateway,
        }
    });
    inner.shared = Cache {
        version,
        events: stored.events,
    };
}

/// Queue the unit attentions a change raises here. Called with the
/// reservation lock held, before the change can decide any command: a
/// command the change refuses finds the condition pending and reports it
/// first (SAM-5 5.14; `dispatch::gated`).
fn deliver(dev: &Device, uas: Uas) {
    if let Some(asc) = uas.all {
        dev.state.ua.reset_all(asc);
    }
    for (id, asc) in uas.each {
        dev.state.ua.queue_for(id, asc);
    }
}

/// Milliseconds since the first call (never 0): the clock of
/// [`Reservations::synced`](crate::reservation::Reservations).
pub(crate) fn now_ms() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    epoch.elapsed().as_millis() as u64 + 1
}

fn fresh(dev: &Device, store: &dyn SharedState) -> bool {
    let synced = dev.state.res.synced.load(Ordering::Acquire);
    synced != 0 && now_ms() - synced < store.cache_for().as_millis() as u64
}

/// Reload before deciding on a command if the cached copy is older than the
/// store allows ([`SharedState::cache_for`]): an announcement this target
/// did not acknowledge in time (it was stopped) was answered GOOD by its
/// sender without it. With steady I/O that is one small read per lease.
pub(crate) fn ensure_fresh(dev: &Device) {
    let Some(store) = dev.state.res.shared.get() else {
        return;
    };
    if !fresh(dev, &**store) {
        reload(dev, &**store, true);
    }
}

/// Reload the stored state if it changed (an announcement came, or a
/// PERSISTENT RESERVE IN is about to answer). A store that cannot be read
/// leaves the cached state in force.
pub(crate) fn refresh(dev: &Device) {
    if let Some(store) = dev.state.res.shared.get() {
        reload(dev, &**store, false);
    }
}

/// `only_if_stale`: skip it if another command reloaded while this one
/// waited for the lock. The time is taken before the read (what it returns
/// is at least that recent) and kept on failure too, so an unreachable
/// store costs one wait per lease, not one per command.
fn reload(dev: &Device, store: &dyn SharedState, only_if_stale: bool) {
    let res = &dev.state.res;
    let mut inner = res.lock();
    if only_if_stale && fresh(dev, store) {
        return;
    }
    let started = now_ms();
    let before = inner.shared.version;
    let r = refresh_locked(store, &mut inner);
    res.synced.store(started, Ordering::Release);
    match r {
        Ok(uas) => deliver(dev, uas),
        Err(e) => {
            tracing::error!(lu = %dev.options.name, error = %e, "shared reservations not reloaded")
        }
    }
    res.publish(&inner);
    if inner.shared.version != before {
        fence_streams(dev);
    }
}

/// Run `f` on the LU's reservations and, if it reports a change, make it
/// the stored state (see the module documentation); `f` may run several
/// times. `f` pushes the unit attentions its change raises to its second
/// argument: those other targets must raise (their `version` is filled in
/// here) and those of this target's nexuses, queued (once the change is
/// made) before the lock is released.
pub(crate) fn update<T>(
    dev: &Device,
    mut f: impl FnMut(&mut Inner, &mut Raised) -> Result<(T, bool), CmdError>,
) -> Result<T, CmdError> {
    let res = &dev.state.res;
    let Some(store) = res.shared.get() else {
        let mut inner = res.lock();
        let mut raised = Raised::default();
        let r = f(&mut inner, &mut raised);
        if r.is_ok() {
            for (id, asc) in raised.here {
                dev.state.ua.queue_for(id, asc);
            }
        }
        res.publish(&inner);
        if matches!(r, Ok((_, true))) {
            fence_streams(dev);
        }
        return r.map(|(t, _)| t);
    };
    let mut uas = Uas::default();
    // Another target's change was loaded on the way (`fence_streams`).
    let mut moved = false;
    for _ in 0..MAX_TRIES {
        let mut inner = res.lock();
        let before = inner.shared.version;
        let loaded = refresh_locked(&**store, &mut inner);
        moved |= inner.shared.version != before;
        let fail = |inner: &Inner, what: &str, e: io::Error| {
            res.publish(inner);
            tracing::error!(lu = %dev.options.name, error = %e, "shared reservations: {what}");
            CmdError::InternalTargetFailure
        };
        match loaded {
            Ok(u) => {
                if u.all.is_some() {
                    uas = Uas::default();
                }
                uas.all = u.all.or(uas.all);
                uas.each.extend(u.each);
            }
            Err(e) => return Err(fail(&inner, "cannot load", e)),
        }
        let saved = (inner.pr.clone(), inner.holder.clone());
        let mut raised = Raised::default();
        let (t, changed) = match f(&mut inner, &mut raised) {
            Ok(r) => r,
            Err(e) => {
                deliver(dev, uas);
                res.publish(&inner);
                if moved {
                    fence_streams(dev);
                }
                return Err(e);
            }
        };
        let Raised { events, here } = raised;
        if !changed {
            uas.each.extend(here);
            deliver(dev, uas);
            res.publish(&inner);
            if moved {
                fence_streams(dev);
            }
            return Ok(t);
        }
        let old = inner.shared.version;
        let new = old.map_or(1, |v| v.wrapping_add(1));
        let mut kept: Vec<Event> = inner
            .shared
            .events
            .iter()
            .filter(|e| e.version.saturating_add(KEEP_EVENTS) > new)
            .cloned()
            .collect();
        kept.extend(events.into_iter().map(|e| Event { version: new, ..e }));
        let text = render(&inner, &kept);
        match store.compare_and_swap(old, text.as_bytes()) {
            Ok(true) => {
                inner.shared = Cache {
                    version: Some(new),
                    events: kept,
                };
                uas.each.extend(here);
                deliver(dev, uas);
                res.publish(&inner);
                fence_streams(dev);
                drop(inner);
                store.announce();
                return Ok(t);
            }
            // Another target stored first: start again from its state.
            Ok(false) => (inner.pr, inner.holder) = saved,
            Err(e) => {
                (inner.pr, inner.holder) = saved;
                return Err(fail(&inner, "cannot store", e));
            }
        }
    }
    tracing::error!(lu = %dev.options.name, "shared reservations: too many concurrent changes");
    Err(CmdError::InternalTargetFailure)
}

/// A reservation change made here, or another target's loaded here
/// (published: `conflicts` sees it), may refuse writes of other nexuses
/// without raising a unit attention (SPC-2 RESERVE, PERSISTENT RESERVE OUT
/// RESERVE): streamed writes checked before it run their checks again
/// before their next piece, as a gathered write is checked when all its
/// data is in. Another target's change is loaded when it announces it
/// (`refresh`), or by the next command past the lease (`ensure_fresh`);
/// a piece itself reloads nothing.
fn fence_streams(dev: &Device) {
    dev.state.ua.fence();
}

/// LOGICAL UNIT RESET (and target resets) of the LU through this target:
/// the SPC-2 reservation goes and, with a shared store, every other target
/// raises `asc` for all its nexuses too. The caller raises it here.
pub(crate) fn lu_reset(dev: &Device, asc: Asc) {
    let shared = dev.state.res.shared.get().is_some();
    if !shared {
        dev.state.res.clear_spc2(dev, None);
        return;
    }
    let r = update(dev, |inner, raised| {
        inner.holder = None;
        raised.events.push(Event {
            version: 0,
            asc,
            initiator: String::new(),
            target: String::new(),
            all_tg_pt: true,
        });
        Ok(((), true))
    });
    if let Err(e) = r {
        tracing::error!(lu = %dev.options.name, "reset not shared: {e:?}");
    }
}

/// The unit attentions a PERSISTENT RESERVE OUT with service action `sa`
/// from `n` raises for registrants other targets reach (by registration
/// identity), from the state `before` and `after` it, as [`crate::pr_out`]
/// raises them for its own nexuses: registrations CLEAR removed were told
/// RESERVATIONS PREEMPTED, those another removed REGISTRATIONS PREEMPTED;
/// a reservation of a type other than WR_EX / EX_AC that RELEASE or an
/// unregistering holder ended tells every remaining registrant.
pub(crate) fn events_of(
    before: &PrState,
    after: &PrState,
    n: &Nexus,
    sa: u8,
    out: &mut Vec<Event>,
) {
    const CLEAR: u8 = 3;
    const PREEMPT: u8 = 4;
    const PREEMPT_AND_ABORT: u8 = 5;
    let ev = |r: &Registration, asc: Asc| Event {
        version: 0,
        asc,
        initiator: r.initiator.clone(),
        target: r.target.clone(),
        all_tg_pt: r.all_tg_pt,
    };
    let removed_asc = match sa {
        CLEAR => Asc::RESERVATIONS_PREEMPTED,
        _ => Asc::REGISTRATIONS_PREEMPTED,
    };
    for r in &before.regs {
        if !r.is(n) && !after.regs.iter().any(|a| a.id == r.id) {
            out.push(ev(r, removed_asc));
        }
    }
    let released = before
        .reservation
        .as_ref()
        .is_some_and(|r| !matches!(r.rtype, WR_EX | EX_AC))
        && after.reservation.is_none()
        && !matches!(sa, CLEAR | PREEMPT | PREEMPT_AND_ABORT);
    if released {
        for r in after.regs.iter().filter(|r| !r.is(n)) {
            out.push(ev(r, Asc::RESERVATIONS_RELEASED));
        }
    }
}

/// Whether `a` and `b` differ in what is stored (not the live nexuses).
pub(crate) fn pr_changed(a: &PrState, b: &PrState) -> bool {
    a.generation != b.generation
        || a.regs != b.regs
        || a.reservation != b.reservation
        || a.aptpl != b.aptpl
        || a.next_id != b.next_id
}

impl Device {
    /// Keep this LU's reservations in `store`, shared with every other
    /// target serving the same medium (`Backstore::shared_state`), instead
    /// of in this process (and the APTPL file): load what is stored now and
    /// reload whenever another target announces a change. An SPC-2
    /// reservation held through a target that is no longer alive is
    /// released.
    pub fn set_pr_store(self: &Arc<Self>, store: Arc<dyn SharedState>) -> io::Result<()> {
        let res = &self.state.res;
        if res.shared.set(Arc::clone(&store)).is_err() {
            return Err(io::Error::other("the reservation store is already set"));
        }
        {
            let mut inner = res.lock();
            let started = now_ms();
            refresh_locked(&*store, &mut inner)?;
            res.synced.store(started, Ordering::Release);
            res.publish(&inner);
        }
        let weak = Arc::downgrade(self);
        store.subscribe(Box::new(move || {
            if let Some(d) = weak.upgrade() {
                refresh(&d);
            }
        }));
        let me = store.holder_id();
        let stale = res
            .lock()
            .holder
            .as_ref()
            .is_some_and(|h| h.gateway != me && !store.holder_alive(h.gateway));
        if stale {
            tracing::info!(lu = %self.options.name, "releasing an SPC-2 reservation held through a target that is gone");
            update(self, |inner, _| {
                let gone = inner
                    .holder
                    .as_ref()
                    .is_some_and(|h| h.gateway != me && !store.holder_alive(h.gateway));
                if gone {
                    inner.holder = None;
                }
                Ok(((), gone))
            })
            .map_err(|e| io::Error::other(format!("{e:?}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "pr_shared_tests.rs"]
mod tests;
