//! Unit attention conditions, per I_T nexus per device (SAM-5 5.14, SPC-4
//! 7.5.x). A nexus a device has not seen yet starts with POWER ON, RESET, OR
//! BUS DEVICE RESET OCCURRED; resets and mode changes queue more.
//!
//! The per-command check must stay cheap: while no queue holds anything, the
//! `pending` flag is clear and a small lock-free cache of recently confirmed
//! nexus ids lets a READ skip the mutex entirely.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use scsi::Asc;

/// How many recently seen nexuses skip the mutex on the fast path.
const KNOWN_SLOTS: usize = 8;
/// A queue never grows past this; older conditions are the ones that matter.
const MAX_QUEUED: usize = 16;

#[derive(Default)]
struct Inner {
    /// Nexuses that have been given (or are owed) the power-on condition.
    seen: HashSet<u64>,
    queues: HashMap<u64, VecDeque<Asc>>,
    /// Conditions queued / reported since the LU started (monitoring).
    established: u64,
    reported: u64,
}

impl Inner {
    fn any_queued(&self) -> bool {
        self.queues.values().any(|q| !q.is_empty())
    }

    fn push(&mut self, nexus: u64, asc: Asc) {
        let q = self.queues.entry(nexus).or_default();
        if !q.contains(&asc) && q.len() < MAX_QUEUED {
            q.push_back(asc);
            self.established += 1;
        }
    }

    /// Make sure `nexus` has been introduced (owes the power-on UA once).
    fn introduce(&mut self, nexus: u64) {
        if self.seen.insert(nexus) {
            let q = self.queues.entry(nexus).or_default();
            q.clear();
            q.push_back(Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET);
            self.established += 1;
        }
    }
}

/// What the dispatcher should do about unit attentions for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UaPolicy {
    /// Report and clear the oldest condition (most commands).
    Report,
    /// Run the command; conditions stay queued (INQUIRY, REPORT LUNS).
    Ignore,
}

#[derive(Default)]
pub(crate) struct UaState {
    /// Some queue may be non-empty: take the slow path.
    pending: AtomicBool,
    /// Recently confirmed nexus ids plus one (0 = empty slot).
    known: [AtomicU64; KNOWN_SLOTS],
    next_slot: AtomicUsize,
    inner: Mutex<Inner>,
    /// Conditions raised so far (any nexus), and reservation changes: a
    /// streamed write checked before a change runs its checks again before
    /// its next piece lands (`streamed`), as a gathered write is checked
    /// only once all its data is in. Resets, preemptions and ALUA changes
    /// all raise a condition; an SPC-2 RESERVE or a PERSISTENT RESERVE
    /// OUT RESERVE refuses other nexuses' writes without one ([`Self::fence`]).
    raised: AtomicU64,
}

impl UaState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every mutation is a single push/pop), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_known(&self, nexus: u64) -> bool {
        let tag = nexus.wrapping_add(1);
        self.known.iter().any(|s| s.load(Ordering::Relaxed) == tag)
    }

    fn remember(&self, nexus: u64) {
        if !self.is_known(nexus) {
            let i = self.next_slot.fetch_add(1, Ordering::Relaxed) % KNOWN_SLOTS;
            self.known[i].store(nexus.wrapping_add(1), Ordering::Relaxed);
        }
    }

    /// The condition to report for this command, if any (removed from the
    /// queue when `policy` is `Report`).
    pub(crate) fn check(&self, nexus: u64, policy: UaPolicy) -> Option<Asc> {
        if !self.pending.load(Ordering::Acquire) && self.is_known(nexus) {
            return None;
        }
        let mut inner = self.lock();
        inner.introduce(nexus);
        let asc = match policy {
            UaPolicy::Ignore => None,
            UaPolicy::Report => inner.queues.get_mut(&nexus).and_then(|q| q.pop_front()),
        };
        inner.reported += u64::from(asc.is_some());
        let mine_empty = inner.queues.get(&nexus).is_none_or(VecDeque::is_empty);
        if mine_empty {
            self.remember(nexus);
        }
        self.pending.store(inner.any_queued(), Ordering::Release);
        asc
    }

    /// Queue `asc` for every nexus this device has seen except `except`.
    pub(crate) fn queue_others(&self, except: Option<u64>, asc: Asc) {
        let mut inner = self.lock();
        let targets: Vec<u64> = inner
            .seen
            .iter()
            .copied()
            .filter(|&n| Some(n) != except)
            .collect();
        for n in targets {
            inner.push(n, asc);
        }
        self.pending.store(inner.any_queued(), Ordering::Release);
        self.raised.fetch_add(1, Ordering::SeqCst);
    }

    /// Queue `asc` for one nexus (persistent reservation changes).
    pub(crate) fn queue_for(&self, nexus: u64, asc: Asc) {
        let mut inner = self.lock();
        inner.push(nexus, asc);
        self.pending.store(inner.any_queued(), Ordering::Release);
        self.raised.fetch_add(1, Ordering::SeqCst);
    }

    /// A reset: every nexus gets `asc`, replacing what was queued (a reset
    /// supersedes older conditions, SAM-5 5.14).
    pub(crate) fn reset_all(&self, asc: Asc) {
        let mut inner = self.lock();
        let seen: Vec<u64> = inner.seen.iter().copied().collect();
        for n in seen {
            let q = inner.queues.entry(n).or_default();
            q.clear();
            q.push_back(asc);
            inner.established += 1;
        }
        self.pending.store(inner.any_queued(), Ordering::Release);
        self.raised.fetch_add(1, Ordering::SeqCst);
    }

    /// The condition `nexus` would be told next, left queued (QUERY
    /// ASYNCHRONOUS EVENT). A nexus the device has not seen owes the
    /// power-on condition.
    pub(crate) fn peek(&self, nexus: u64) -> Option<(Asc, usize)> {
        let mut inner = self.lock();
        inner.introduce(nexus);
        let asc = inner
            .queues
            .get(&nexus)
            .and_then(|q| Some((*q.front()?, q.len())));
        self.pending.store(inner.any_queued(), Ordering::Release);
        asc
    }

    /// A reset of one nexus (I_T NEXUS RESET): it gets `asc` in place of
    /// what was queued for it, as `reset_all` does for every nexus.
    pub(crate) fn reset_nexus(&self, nexus: u64, asc: Asc) {
        let mut inner = self.lock();
        inner.seen.insert(nexus);
        let q = inner.queues.entry(nexus).or_default();
        q.clear();
        q.push_back(asc);
        inner.established += 1;
        self.pending.store(true, Ordering::Release);
        self.raised.fetch_add(1, Ordering::SeqCst);
    }

    /// A change that may refuse writes without raising a condition (a
    /// reservation taken): streamed writes checked before it run their
    /// checks again before their next piece. Call after the change is
    /// visible to those checks.
    pub(crate) fn fence(&self) {
        self.raised.fetch_add(1, Ordering::SeqCst);
    }

    /// How many times conditions were raised (see the field).
    pub(crate) fn raised(&self) -> u64 {
        self.raised.load(Ordering::SeqCst)
    }

    /// (established, reported) conditions, for monitoring.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let inner = self.lock();
        (inner.established, inner.reported)
    }

    /// Forget a nexus (logout or connection loss).
    pub(crate) fn forget(&self, nexus: u64) {
        let mut inner = self.lock();
        inner.seen.remove(&nexus);
        inner.queues.remove(&nexus);
        let tag = nexus.wrapping_add(1);
        for s in &self.known {
            let _ = s.compare_exchange(tag, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
        self.pending.store(inner.any_queued(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_nexus_gets_power_on_once() {
        let ua = UaState::default();
        assert_eq!(
            ua.check(1, UaPolicy::Report),
            Some(Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET)
        );
        assert_eq!(ua.check(1, UaPolicy::Report), None);
        assert!(ua.is_known(1));
    }

    #[test]
    fn ignore_policy_keeps_the_condition() {
        let ua = UaState::default();
        assert_eq!(ua.check(1, UaPolicy::Ignore), None);
        assert_eq!(
            ua.check(1, UaPolicy::Report),
            Some(Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET)
        );
    }

    #[test]
    fn queue_others_skips_the_origin() {
        let ua = UaState::default();
        ua.check(1, UaPolicy::Report);
        ua.check(2, UaPolicy::Report);
        ua.queue_others(Some(1), Asc::MODE_PARAMETERS_CHANGED);
        assert_eq!(ua.check(1, UaPolicy::Report), None);
        assert_eq!(
            ua.check(2, UaPolicy::Report),
            Some(Asc::MODE_PARAMETERS_CHANGED)
        );
        assert_eq!(ua.check(2, UaPolicy::Report), None);
        assert!(!ua.pending.load(Ordering::Acquire));
    }

    #[test]
    fn reset_replaces_queued_conditions() {
        let ua = UaState::default();
        ua.check(1, UaPolicy::Report);
        ua.queue_others(None, Asc::MODE_PARAMETERS_CHANGED);
        ua.reset_all(Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED);
        assert_eq!(
            ua.check(1, UaPolicy::Report),
            Some(Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED)
        );
        assert_eq!(ua.check(1, UaPolicy::Report), None);
    }

    #[test]
    fn forgotten_nexus_starts_over() {
        let ua = UaState::default();
        ua.check(1, UaPolicy::Report);
        ua.forget(1);
        assert!(!ua.is_known(1));
        assert_eq!(
            ua.check(1, UaPolicy::Report),
            Some(Asc::POWER_ON_RESET_OR_BUS_DEVICE_RESET)
        );
    }

    /// Every condition queued counts as established once (a duplicate
    /// not), every one a command reports as reported.
    #[test]
    fn counts_established_and_reported() {
        let ua = UaState::default();
        ua.check(1, UaPolicy::Report);
        ua.check(2, UaPolicy::Ignore);
        assert_eq!(ua.counts(), (2, 1), "two power-on, one reported");
        ua.queue_others(None, Asc::MODE_PARAMETERS_CHANGED);
        ua.queue_others(None, Asc::MODE_PARAMETERS_CHANGED);
        ua.queue_for(1, Asc::RESERVATIONS_PREEMPTED);
        assert_eq!(ua.counts(), (5, 1));
        ua.reset_all(Asc::BUS_DEVICE_RESET_FUNCTION_OCCURRED);
        assert_eq!(ua.counts(), (7, 1));
        for n in [1, 2] {
            while ua.check(n, UaPolicy::Report).is_some() {}
        }
        assert_eq!(ua.counts(), (7, 3));
    }

    #[test]
    fn duplicates_are_not_queued_twice() {
        let ua = UaState::default();
        ua.check(1, UaPolicy::Report);
        ua.queue_others(None, Asc::MODE_PARAMETERS_CHANGED);
        ua.queue_others(None, Asc::MODE_PARAMETERS_CHANGED);
        assert!(ua.check(1, UaPolicy::Report).is_some());
        assert_eq!(ua.check(1, UaPolicy::Report), None);
    }
}
