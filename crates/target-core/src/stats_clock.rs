//! The clock of the per-LU latency stats ([`crate::stats`]): two stamps
//! per command. `clock_gettime` through the vDSO (an `lfence; rdtsc`, a
//! seqlock and a scaling per read) showed as 3-4% of the daemon's own
//! CPU at 4 KiB QD32; a stamp here is a bare `rdtsc`, and only the
//! difference of two is scaled to nanoseconds, once per command.
//!
//! A command may start on one thread and complete on another, so the
//! TSC is used only where it is the same on every CPU: quanta requires
//! an invariant TSC (constant rate across frequency changes and sleep
//! states), and the kernel must have kept `tsc` as its clocksource (it
//! drops it when it finds the CPUs' TSCs out of step, which a hypervisor
//! that passes the invariant bit through does not prevent). Elsewhere
//! the stamps are `CLOCK_MONOTONIC` nanoseconds, as before. quanta
//! calibrates once per process (at most 200 ms, usually a few): [`warm_up`]
//! does it when an LU is created so no command pays for it.

use std::sync::OnceLock;

enum Source {
    /// quanta's raw counter (the TSC, calibrated against the monotonic
    /// clock; or that clock itself where the TSC is not invariant).
    Tsc(quanta::Clock),
    /// `CLOCK_MONOTONIC` nanoseconds.
    Monotonic,
}

impl Source {
    fn detect() -> Source {
        let kernel = std::fs::read_to_string(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        );
        if kernel.is_ok_and(|k| k.trim() == "tsc") {
            Source::Tsc(quanta::Clock::new())
        } else {
            Source::Monotonic
        }
    }

    #[inline]
    fn stamp(&self) -> u64 {
        match self {
            Source::Tsc(c) => c.raw(),
            Source::Monotonic => monotonic_ns(),
        }
    }

    #[inline]
    fn nanos_between(&self, start: u64, end: u64) -> u64 {
        match self {
            Source::Tsc(c) => c.delta_as_nanos(start, end),
            Source::Monotonic => end.saturating_sub(start),
        }
    }
}

/// `clock_gettime` without `Instant`'s checked arithmetic.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

static SOURCE: OnceLock<Source> = OnceLock::new();

#[inline]
fn source() -> &'static Source {
    SOURCE.get_or_init(Source::detect)
}

/// Calibrate now rather than in the first command.
pub(crate) fn warm_up() {
    source();
}

/// A raw stamp: only meaningful to [`nanos_between`].
#[inline]
pub(crate) fn stamp() -> u64 {
    source().stamp()
}

/// Nanoseconds from stamp `start` to stamp `end`; 0 if `end` is not later
/// (stamps of two CPUs a few ticks apart).
#[inline]
pub(crate) fn nanos_between(start: u64, end: u64) -> u64 {
    source().nanos_between(start, end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Stamps taken on two threads measure what the monotonic clock does
    /// (the latency of a command completed on another thread than the
    /// one that started it), to within a millisecond: with this
    /// machine's choice and with the fallback.
    #[test]
    fn stamps_measure_monotonic_time_across_threads() {
        warm_up();
        for s in [source(), &Source::Monotonic] {
            let (t0, a) = (Instant::now(), s.stamp());
            let (b, t1) = std::thread::scope(|sc| {
                sc.spawn(|| {
                    std::thread::sleep(Duration::from_millis(30));
                    (s.stamp(), Instant::now())
                })
                .join()
                .unwrap()
            });
            let got = s.nanos_between(a, b);
            let want = t1.duration_since(t0).as_nanos() as u64;
            assert!(got >= 30_000_000, "{got} ns");
            assert!(
                got.abs_diff(want) < 1_000_000,
                "{got} ns, monotonic {want} ns"
            );
            assert_eq!(s.nanos_between(b, a), 0, "never negative");
        }
    }
}
