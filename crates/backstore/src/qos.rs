//! Quality of service: a throughput and/or IOPS limit per backstore, like
//! SPDK's bdev QoS (`rw_mbytes_per_sec`, `rw_ios_per_sec`). [`with_qos`]
//! wraps any backstore in a token-bucket limiter; with no limit set it
//! returns the backstore itself, so an unlimited LU pays nothing.
//!
//! Reads, writes, write-zeroes and discards are charged before they run:
//! one I/O each, and their length in bytes (a discard moves no data, so it
//! costs an I/O only). Flush and metadata calls pass through free. A request
//! takes its tokens at once, even into debt, and then sleeps until the
//! bucket would have held them: callers are served in arrival order and a
//! request larger than the burst still completes, at the configured rate.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Backstore, Capabilities, Completion, Extent, IoOp};

/// Limits of one backstore; 0 means no limit on that dimension.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QosLimits {
    /// Bytes per second, reads and writes together.
    pub bytes_per_sec: u64,
    /// I/O requests per second, reads and writes together.
    pub ios_per_sec: u64,
}

impl QosLimits {
    pub fn is_unlimited(&self) -> bool {
        self.bytes_per_sec == 0 && self.ios_per_sec == 0
    }
}

/// Credit a bucket may save up: this much time at its rate.
const BURST: Duration = Duration::from_millis(100);

/// One token bucket. `tokens` may go negative (debt).
#[derive(Debug)]
struct Bucket {
    rate: f64,
    cap: f64,
    tokens: f64,
}

impl Bucket {
    fn new(rate: u64) -> Option<Bucket> {
        (rate > 0).then(|| {
            let rate = rate as f64;
            let cap = (rate * BURST.as_secs_f64()).max(1.0);
            Bucket {
                rate,
                cap,
                tokens: cap,
            }
        })
    }

    fn refill(&mut self, secs: f64) {
        self.tokens = (self.tokens + secs * self.rate).min(self.cap);
    }

    /// Take `cost` tokens; how long to wait until they were there.
    fn take(&mut self, cost: f64) -> f64 {
        self.tokens -= cost;
        if self.tokens >= 0.0 {
            0.0
        } else {
            -self.tokens / self.rate
        }
    }
}

#[derive(Debug)]
struct Buckets {
    bytes: Option<Bucket>,
    ios: Option<Bucket>,
    last: Instant,
}

/// Time as the limiter sees it: the real clock, or in tests a virtual one
/// whose `sleep` only moves it forward, so rates are checked exactly and
/// without asserting on wall-clock time.
trait Clock: Send + Sync {
    fn now(&self) -> Instant;
    fn sleep(&self, d: Duration);
}

struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A backstore behind a rate limiter.
pub struct QosBackstore {
    inner: Arc<dyn Backstore>,
    limits: QosLimits,
    buckets: Mutex<Buckets>,
    clock: Arc<dyn Clock>,
}

/// `inner` limited to `limits`; `inner` itself when there is no limit.
pub fn with_qos(inner: Arc<dyn Backstore>, limits: QosLimits) -> Arc<dyn Backstore> {
    if limits.is_unlimited() {
        return inner;
    }
    Arc::new(QosBackstore::new(inner, limits))
}

impl QosBackstore {
    pub fn new(inner: Arc<dyn Backstore>, limits: QosLimits) -> QosBackstore {
        Self::with_clock(inner, limits, Arc::new(RealClock))
    }

    fn with_clock(
        inner: Arc<dyn Backstore>,
        limits: QosLimits,
        clock: Arc<dyn Clock>,
    ) -> QosBackstore {
        QosBackstore {
            inner,
            limits,
            buckets: Mutex::new(Buckets {
                bytes: Bucket::new(limits.bytes_per_sec),
                ios: Bucket::new(limits.ios_per_sec),
                last: clock.now(),
            }),
            clock,
        }
    }

    pub fn limits(&self) -> QosLimits {
        self.limits
    }

    /// Charge one request of `bytes` and sleep off any debt (outside the
    /// lock, so other requests keep taking their place in line).
    fn charge(&self, bytes: u64) {
        let wait = {
            let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let now = self.clock.now();
            let secs = now.duration_since(b.last).as_secs_f64();
            b.last = now;
            let mut wait = 0.0f64;
            if let Some(k) = b.ios.as_mut() {
                k.refill(secs);
                wait = wait.max(k.take(1.0));
            }
            if let Some(k) = b.bytes.as_mut() {
                k.refill(secs);
                wait = wait.max(k.take(bytes as f64));
            }
            wait
        };
        if wait > 0.0 {
            self.clock.sleep(Duration::from_secs_f64(wait));
        }
    }
}

// Every trait method is forwarded, defaults included, so the wrapper never
// changes what the backstore can do (the test below lists them).
impl Backstore for QosBackstore {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.charge(buf.len() as u64);
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.charge(buf.len() as u64);
        self.inner.write_at(buf, offset)
    }

    fn write_at_fua(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.charge(buf.len() as u64);
        self.inner.write_at_fua(buf, offset)
    }

    fn read_vectored_at(&self, bufs: &crate::IoVecs, offset: u64) -> io::Result<()> {
        self.charge(bufs.len() as u64);
        self.inner.read_vectored_at(bufs, offset)
    }

    fn write_vectored_at(&self, bufs: &crate::IoVecs, offset: u64, fua: bool) -> io::Result<()> {
        self.charge(bufs.len() as u64);
        self.inner.write_vectored_at(bufs, offset, fua)
    }

    fn flush(&self) -> io::Result<()> {
        self.inner.flush()
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.charge(0);
        self.inner.discard(offset, len)
    }

    fn allocation_at(&self, offset: u64) -> io::Result<Option<Extent>> {
        self.inner.allocation_at(offset)
    }

    fn resize(&self, new_size: u64) -> io::Result<()> {
        self.inner.resize(new_size)
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.charge(len);
        self.inner.write_zeroes(offset, len)
    }

    fn crypto_erase(&self) -> io::Result<()> {
        self.inner.crypto_erase()
    }

    /// Charged (and throttled) on the submitting thread, like the
    /// synchronous calls; the request then goes on to the inner backstore.
    fn submit(&self, op: IoOp, done: Completion) {
        if !matches!(op, IoOp::Flush) {
            self.charge(op.len() as u64);
        }
        self.inner.submit(op, done)
    }

    fn on_resize(&self, hook: crate::ResizeHook) {
        self.inner.on_resize(hook)
    }

    fn health(&self) -> Vec<(&'static str, u64)> {
        self.inner.health()
    }

    fn ownership(&self) -> Option<std::sync::Arc<dyn crate::Ownership>> {
        self.inner.ownership()
    }

    fn shared_state(&self) -> Option<std::sync::Arc<dyn crate::SharedState>> {
        self.inner.shared_state()
    }

    fn close(&self) {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RamBackstore;

    fn ram() -> Arc<dyn Backstore> {
        Arc::new(RamBackstore::new(8 << 20).unwrap())
    }

    #[test]
    fn unlimited_is_the_backstore_itself() {
        let r = ram();
        let q = with_qos(Arc::clone(&r), QosLimits::default());
        assert!(Arc::ptr_eq(&r, &q));
    }

    /// Virtual time: `sleep` moves the clock forward and adds to `slept`.
    struct VirtualClock {
        now: Mutex<Instant>,
        slept: Mutex<Duration>,
    }

    impl VirtualClock {
        fn new() -> Arc<VirtualClock> {
            Arc::new(VirtualClock {
                now: Mutex::new(Instant::now()),
                slept: Mutex::new(Duration::ZERO),
            })
        }

        fn slept(&self) -> f64 {
            self.slept.lock().unwrap().as_secs_f64()
        }
    }

    impl Clock for VirtualClock {
        fn now(&self) -> Instant {
            *self.now.lock().unwrap()
        }

        fn sleep(&self, d: Duration) {
            *self.now.lock().unwrap() += d;
            *self.slept.lock().unwrap() += d;
        }
    }

    fn virtual_qos(limits: QosLimits) -> (QosBackstore, Arc<VirtualClock>) {
        let clock = VirtualClock::new();
        (
            QosBackstore::with_clock(ram(), limits, clock.clone()),
            clock,
        )
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn byte_rate_is_enforced() {
        // 4 MiB/s: the burst (0.4 MiB) goes at once, the other 2.1 MiB of
        // 2.5 MiB wait 2.1 / 4 = 0.525 s in all.
        let (q, clock) = virtual_qos(QosLimits {
            bytes_per_sec: 4 << 20,
            ios_per_sec: 0,
        });
        let buf = vec![7u8; 256 << 10];
        q.write_at(&buf, 0).unwrap();
        assert_eq!(clock.slept(), 0.0, "inside the burst");
        for i in 1..10u64 {
            q.write_at(&buf, i * (256 << 10)).unwrap();
        }
        let want = (2.5 - 0.4) / 4.0;
        assert!(close(clock.slept(), want), "slept {}s", clock.slept());
        let mut back = vec![0u8; 256 << 10];
        q.read_at(&mut back, 0).unwrap();
        assert_eq!(back, buf);
    }

    #[test]
    fn iops_rate_is_enforced_and_flush_is_free() {
        let (q, clock) = virtual_qos(QosLimits {
            bytes_per_sec: 0,
            ios_per_sec: 100,
        });
        for _ in 0..40 {
            q.flush().unwrap();
        }
        assert_eq!(clock.slept(), 0.0, "flushes are free");
        // Burst of 10, then 20 more at 100/s = 0.2 s.
        let mut b = [0u8; 512];
        for i in 0..30u64 {
            q.read_at(&mut b, i * 512).unwrap();
        }
        assert!(close(clock.slept(), 0.2), "slept {}s", clock.slept());
    }

    /// Idle time refills the bucket up to the burst, not beyond.
    #[test]
    fn idle_time_refills_up_to_the_burst() {
        let (q, clock) = virtual_qos(QosLimits {
            bytes_per_sec: 0,
            ios_per_sec: 100,
        });
        let mut b = [0u8; 512];
        for i in 0..10u64 {
            q.read_at(&mut b, i * 512).unwrap();
        }
        assert_eq!(clock.slept(), 0.0);
        // A minute idle saves up 10 I/Os (100 ms at 100/s), no more.
        *clock.now.lock().unwrap() += Duration::from_secs(60);
        for i in 0..11u64 {
            q.read_at(&mut b, i * 512).unwrap();
        }
        assert!(close(clock.slept(), 0.01), "slept {}s", clock.slept());
    }

    /// The real clock really waits: a token bucket serves at most the burst
    /// plus rate x time, so the elapsed time has a floor (and no ceiling is
    /// asserted: a loaded machine may take longer).
    #[test]
    fn the_real_clock_sleeps_off_the_debt() {
        let q = with_qos(
            ram(),
            QosLimits {
                bytes_per_sec: 0,
                ios_per_sec: 200,
            },
        );
        let mut b = [0u8; 512];
        let t = Instant::now();
        // Burst of 20, then 20 more at 200/s = 0.1 s at least.
        for i in 0..40u64 {
            q.read_at(&mut b, i * 512).unwrap();
        }
        assert!(
            t.elapsed() >= Duration::from_millis(99),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn wrapper_forwards_capabilities_size_and_discard() {
        let r = ram();
        let q = QosBackstore::new(
            Arc::clone(&r),
            QosLimits {
                bytes_per_sec: 1 << 30,
                ios_per_sec: 0,
            },
        );
        assert_eq!(q.size(), r.size());
        assert_eq!(q.capabilities(), r.capabilities());
        assert_eq!(q.discard(0, 4096).is_ok(), r.discard(0, 4096).is_ok());
    }
}
