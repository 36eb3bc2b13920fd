//! The clock of the per-LU latency stats ([`crate::stats`]): two stamps
//! per command. `clock_gettime` through the vDSO (an `lfence; rdtsc`, a
//! seqlock and a scaling per read) showed as 3-4% of the daemon's own
//! CPU at 4 KiB QD32; a stamp here is a bare `rdtsc`, and only the
//! difference of two is scaled to nanoseconds, once per command.
//!
//! quanta uses the TSC only where it is invariant (constant rate across
//! frequency changes and sleep states, the same on every CPU), which a
//! command started on one thread and completed on another needs, and
//! calibrates it against `CLOCK_MONOTONIC`; elsewhere its raw reading is
//! that monotonic clock itself. Calibration runs once per process (at
//! most 200 ms, usually a few): [`warm_up`] does it when an LU is
//! created so no command pays for it.

use std::sync::OnceLock;

static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();

#[inline]
fn clock() -> &'static quanta::Clock {
    CLOCK.get_or_init(quanta::Clock::new)
}

/// Calibrate now rather than in the first command.
pub(crate) fn warm_up() {
    clock();
}

/// A raw stamp: only meaningful to [`nanos_between`].
#[inline]
pub(crate) fn stamp() -> u64 {
    clock().raw()
}

/// Nanoseconds from stamp `start` to stamp `end`; 0 if `end` is not later
/// (stamps of two CPUs a few ticks apart).
#[inline]
pub(crate) fn nanos_between(start: u64, end: u64) -> u64 {
    clock().delta_as_nanos(start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Stamps taken on two threads measure what the monotonic clock does
    /// (the latency of a command completed on another thread than the
    /// one that started it), to within a millisecond.
    #[test]
    fn stamps_measure_monotonic_time_across_threads() {
        warm_up();
        let (t0, a) = (Instant::now(), stamp());
        let (b, t1) = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            (stamp(), Instant::now())
        })
        .join()
        .unwrap();
        let got = nanos_between(a, b);
        let want = t1.duration_since(t0).as_nanos() as u64;
        assert!(got >= 30_000_000, "{got} ns");
        assert!(
            got.abs_diff(want) < 1_000_000,
            "{got} ns, monotonic {want} ns"
        );
        assert_eq!(nanos_between(b, a), 0, "never negative");
    }
}
