//! Busy polling of a connection's socket (TPG attribute `busy_poll_us`,
//! rtarget's own: the budget in µs, 0 = off), adaptive.
//!
//! A connection thread that finds nothing to read normally blocks in
//! `recv`: the thread sleeps, its CPU may go idle, and the next PDU pays a
//! wake-up (scheduler, and in a VM an idle vCPU's exit and re-entry) on the
//! round trip. Spinning on a non-blocking `recv` instead picks up a request
//! that arrives soon without any sleep, for CPU time. A fixed spin costs
//! that time on every wait, also where nothing comes soon (an idle or slow
//! initiator) or where the spin takes the CPU the initiator needed; so a
//! [`Gate`] per connection decides from the waits it saw whether to spin
//! and how long (docs/latency.md has the rules and the measurements), and
//! [`PollCounters`] tell whether it pays.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::conn::RxBuf;

/// Largest budget used (the attribute allows as much): a longer spin is a
/// core lost for what a blocking `recv` does as well.
pub const MAX_BUSY_POLL_US: u32 = 1000;

/// The spin budget of a `busy_poll_us` value; `None`: off.
pub fn budget(us: u32) -> Option<Duration> {
    (us > 0).then(|| Duration::from_micros(u64::from(us.min(MAX_BUSY_POLL_US))))
}

/// A spin lasts this many typical waits (capped by the budget): waits
/// vary, and a spin cut just short of the data costs the spin and the
/// sleep.
const SPIN_PER_TYPICAL: u32 = 4;
/// Shortest spin planned (unless the budget is shorter): a few tries; a
/// typical wait near zero would otherwise plan a spin too short to catch
/// anything.
const MIN_SPIN: Duration = Duration::from_micros(10);
/// A wait this many budgets long (and at least [`IDLE_MIN`]) means the
/// initiator paused: what was learnt about its pace no longer holds, and
/// no spin is planned until a wait is seen again.
const IDLE_BUDGETS: u32 = 8;
/// See [`IDLE_BUDGETS`]: with a budget of a few µs, a wait with a wake-up
/// in it is no pause yet.
const IDLE_MIN: Duration = Duration::from_millis(1);
/// Longest back-off after spins that found nothing, in waits.
const MAX_BACKOFF: u32 = 64;
/// While it spins, a connection sleeps through one wait in this many
/// instead: what a wait costs without the spin is what the spin saves.
const SAMPLE_EVERY: u32 = 32;
/// One round of the spin (a `recv` and a yield) that took this long
/// means another thread ran on this CPU meanwhile: the spin competes with
/// something runnable (maybe the initiator), so it stops.
const YIELD_SLOW: Duration = Duration::from_micros(20);
/// The CPU time a sleep and its wake-up cost the thread (the scheduler
/// both ways; ~4 µs in a VM, docs/latency.md): a spin that finds data
/// saves it besides the wake-up's latency.
const SLEEP_CPU: Duration = Duration::from_micros(4);
/// A round of the spin longer than this had the CPU taken from it (the
/// yield let another thread run): of its time, only this much counts
/// as the spin's own CPU.
const ROUND_ON_CPU: Duration = Duration::from_micros(3);
/// PDUs a wait typically brings (all handled between two waits) from
/// which an initiator counts as waiting on us although its ExpStatSN was
/// behind: one that sends its commands in bursts this large turns a whole
/// batch of our answers around at once, so its pipeline drains between
/// bursts and our wake-up delays it (bench/iscsi-load at QD32: ~35 a
/// wait; qemu-img bench at QD32, which trickles them: ~4).
/// BENCHMARKS.md, "The floor".
const BURST_WAITS_ON_US: u32 = 16;

/// How a spin ended (or that none was made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spin {
    /// Data (or end of stream, an error) came during the spin.
    Data,
    /// The planned spin passed with nothing: the thread blocked after all.
    RanOut,
    /// A yield took long (another thread wanted this CPU): stopped early.
    Yielded,
    /// The gate planned no spin.
    Skipped,
}

/// The decision, free of sockets and clocks: fed how each wait went, it
/// says how long to spin on the next one.
///
/// - It keeps the typical wait (from finding the socket empty to data
///   arriving; an average weighting recent waits, each capped at two
///   budgets) and spins for [`SPIN_PER_TYPICAL`] typical waits (at least
///   [`MIN_SPIN`], at most the budget).
/// - A spin that found nothing (or yielded to another thread) backs off:
///   the next 1, 2, 4 ... [`MAX_BACKOFF`] waits block at once; a spin that
///   found data halves the back-off, unless spinning does not pay (see
///   `pays`: one wait in [`SAMPLE_EVERY`] sleeps to tell), then it backs
///   off too.
/// - A wait of [`IDLE_BUDGETS`] budgets (at least [`IDLE_MIN`]) or more
///   (the initiator paused, an idle connection's receive timeout) forgets
///   everything: no spin until a wait has been seen again. An idle
///   connection so spins at most once.
#[derive(Debug, Clone)]
pub struct Gate {
    budget: Duration,
    /// The typical wait; `None`: none seen since the last pause.
    typical: Option<Duration>,
    /// Waits still to block at once.
    skip: u32,
    /// The back-off length of the next spin that finds nothing.
    backoff: u32,
    /// Typical wait and typical CPU time of a spin that found data, and
    /// typical wait that slept: `None` until seen.
    spun: Option<Duration>,
    spun_cpu: Option<Duration>,
    slept: Option<Duration>,
    /// Spins since the last wait slept on purpose.
    since_sample: u32,
    /// The initiator sent its latest PDU before reading all our answers
    /// ([`Gate::peer_behind`]).
    peer_behind: bool,
    /// PDUs handled since the last wait ended, and their typical number
    /// per wait ([`BURST_WAITS_ON_US`]).
    since_wait: u32,
    burst: Option<u32>,
}

impl Gate {
    pub fn new(budget: Duration) -> Gate {
        Gate {
            budget,
            typical: None,
            skip: 0,
            backoff: 0,
            spun: None,
            spun_cpu: None,
            slept: None,
            since_sample: 0,
            peer_behind: false,
            since_wait: 0,
            burst: None,
        }
    }

    /// Whether the initiator sent its latest PDU with answers of ours
    /// still unread (its ExpStatSN behind the StatSN we had sent): it is
    /// busy with a pipeline of its own, not waiting for us, so picking
    /// its next command up sooner gains it nothing, and a spin pays only
    /// if it costs less CPU than the sleep it saves (see `pays`). A QD1
    /// initiator, or one that drained every answer, waits on us: there
    /// the shorter round trip counts too.
    pub fn peer_behind(&mut self, behind: bool) {
        self.peer_behind = behind;
    }

    /// `pdus` PDUs were handled (a batch read without a wait counts with
    /// the wait before it).
    pub fn handled(&mut self, pdus: u32) {
        self.since_wait = self.since_wait.saturating_add(pdus);
    }

    /// Whether a sooner pickup gains the initiator anything: it read all
    /// our answers (QD1, or a pipeline it drains faster than we answer),
    /// or it sends bursts large enough that its pipeline empties between
    /// them ([`BURST_WAITS_ON_US`]).
    fn waits_on_us(&self) -> bool {
        !self.peer_behind || self.burst.is_some_and(|b| b >= BURST_WAITS_ON_US)
    }

    /// How long to spin on the wait starting now; `None`: block at once.
    pub fn plan(&mut self) -> Option<Duration> {
        if self.skip > 0 {
            self.skip -= 1;
            return None;
        }
        // A typical wait beyond the budget still gets a spin of the budget
        // now and then (the back-off spaces them): waits that blocked
        // include the wake-up the spin would save, so they overstate.
        let t = self.typical?;
        self.since_sample += 1;
        if self.since_sample >= SAMPLE_EVERY {
            self.since_sample = 0;
            return None;
        }
        Some((t * SPIN_PER_TYPICAL).max(MIN_SPIN).min(self.budget))
    }

    /// Does spinning pay: does a spin that finds data save more than its
    /// CPU time? It saves the sleep's CPU ([`SLEEP_CPU`]) and the
    /// latency of the wake-up: how much shorter the waits it ends are
    /// than those that sleep (long where an idle CPU halts, as in a VM).
    /// A spin whose yields let the initiator run on this CPU costs little
    /// however long it waits. One that burns the whole wait while a
    /// sleeping thread sees the data nearly as soon (a busy host: no
    /// halted CPU to wake; an initiator in another scheduling group,
    /// which a yield does not let in) does not pay.
    fn pays(&self) -> bool {
        match (self.spun, self.spun_cpu, self.slept) {
            (Some(spun), Some(cpu), Some(slept)) => {
                let sooner = match self.waits_on_us() {
                    false => Duration::ZERO,
                    true => slept.saturating_sub(spun),
                };
                sooner + SLEEP_CPU >= cpu
            }
            (_, Some(cpu), _) if !self.waits_on_us() => SLEEP_CPU >= cpu,
            _ => true,
        }
    }

    fn back_off(&mut self) {
        self.backoff = (self.backoff * 2).clamp(1, MAX_BACKOFF);
        self.skip = self.backoff;
    }

    /// A spin found data using `cpu` of this thread's time (call before
    /// `record`).
    pub fn spin_cost(&mut self, cpu: Duration) {
        let cpu = cpu.min(self.budget * 2);
        self.spun_cpu = Some(match self.spun_cpu {
            None => cpu,
            Some(t) => (t * 3 + cpu) / 4,
        });
    }

    /// A wait is over: it took `waited` and its spin ended `how`.
    pub fn record(&mut self, how: Spin, waited: Duration) {
        if waited >= (self.budget * IDLE_BUDGETS).max(IDLE_MIN) {
            *self = Gate::new(self.budget);
            return;
        }
        // The PDUs since the previous wait came with it. Quick to fall,
        // slow to rise: a sleep of ours lets a trickling initiator's
        // commands pile up into one large batch now and then, a bursting
        // one sends every batch large.
        let pdus = std::mem::take(&mut self.since_wait);
        self.burst = Some(match self.burst {
            None => pdus,
            Some(b) if pdus < b => (b + pdus) / 2,
            Some(b) => (b * 7 + pdus) / 8,
        });
        let sample = waited.min(self.budget * 2);
        // Weight 1/4 for the newest wait: a few waits move it, one odd
        // wait does not.
        let average = |a: Option<Duration>| {
            Some(match a {
                None => sample,
                Some(t) => (t * 3 + sample) / 4,
            })
        };
        self.typical = average(self.typical);
        match how {
            Spin::Data => {
                self.spun = average(self.spun);
                if self.pays() {
                    self.backoff /= 2;
                } else {
                    self.back_off();
                }
            }
            Spin::RanOut | Spin::Yielded => self.back_off(),
            Spin::Skipped => self.slept = average(self.slept),
        }
    }
}

/// Spin on non-blocking receives into `rx` until `len` after `start`.
/// `Some`: what one receive returned (bytes, 0 at end of stream, or an
/// error other than "nothing yet"); `None`: go block, for the reason given.
/// And the spin's estimated own CPU time (rounds the yield did not give
/// away).
fn spin(
    rx: &mut RxBuf,
    fd: RawFd,
    (need, max): (usize, usize),
    start: Instant,
    len: Duration,
) -> (Option<io::Result<usize>>, Spin, Duration) {
    let (mut last, mut cpu) = (start, Duration::ZERO);
    loop {
        let got = rx.fill_upto_nonblocking(fd, need, max);
        let now = Instant::now();
        cpu += (now - last).min(ROUND_ON_CPU);
        match got {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return (Some(r), Spin::Data, cpu),
        }
        if now - start >= len {
            return (None, Spin::RanOut, cpu);
        }
        // Checked after the receive: when the yield let the initiator run
        // and it sent the next request, that is data, not contention.
        if now - last >= YIELD_SLOW {
            return (None, Spin::Yielded, cpu);
        }
        last = now;
        // Spin politely: a thread of the initiator (or anything else)
        // waiting for this CPU runs first; on an idle CPU this returns at
        // once.
        std::thread::yield_now();
    }
}

/// Busy polling totals of a server's connections (monitoring: does the
/// spin pay?). Connections add theirs in batches ([`Poller`]).
#[derive(Debug, Default)]
pub struct PollCounters {
    data: AtomicU64,
    ran_out: AtomicU64,
    yielded: AtomicU64,
    skipped: AtomicU64,
    spin_ns: AtomicU64,
}

/// A snapshot of [`PollCounters`], or a connection's unreported part.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PollStats {
    /// Waits whose spin received data.
    pub data: u64,
    /// Waits whose spin found nothing in its time (the thread slept after).
    pub ran_out: u64,
    /// Waits whose spin stopped because another thread wanted the CPU.
    pub yielded: u64,
    /// Waits the gate blocked at once (idle, slow or backed-off peer).
    pub skipped: u64,
    /// Time spent spinning, in nanoseconds.
    pub spin_ns: u64,
}

impl PollCounters {
    pub fn snapshot(&self) -> PollStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PollStats {
            data: get(&self.data),
            ran_out: get(&self.ran_out),
            yielded: get(&self.yielded),
            skipped: get(&self.skipped),
            spin_ns: get(&self.spin_ns),
        }
    }

    fn add(&self, s: &PollStats) {
        for (a, n) in [
            (&self.data, s.data),
            (&self.ran_out, s.ran_out),
            (&self.yielded, s.yielded),
            (&self.skipped, s.skipped),
            (&self.spin_ns, s.spin_ns),
        ] {
            if n > 0 {
                a.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

/// Waits counted before a connection reports them, unless it sleeps
/// first: the shared counters stay off the fast path.
const REPORT_EVERY: u64 = 64;

/// A connection's busy polling: its gate and its uncounted waits.
pub struct Poller {
    gate: Gate,
    counters: Arc<PollCounters>,
    pending: PollStats,
}

impl Poller {
    pub fn new(budget: Duration, counters: Arc<PollCounters>) -> Poller {
        Poller {
            gate: Gate::new(budget),
            counters,
            pending: PollStats::default(),
        }
    }

    /// `rx.fill_upto` (a blocking receive of at most `max` bytes, room for
    /// `need`), spinning first when the gate says it pays.
    pub fn recv(
        &mut self,
        rx: &mut RxBuf,
        stream: &mut TcpStream,
        need: usize,
        max: usize,
    ) -> io::Result<usize> {
        let fd = stream.as_raw_fd();
        // Data already there is no wait: nothing to learn, nothing to count.
        match rx.fill_upto_nonblocking(fd, need, max) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
        let start = Instant::now();
        let how = match self.gate.plan() {
            Some(len) => {
                let (got, how, cpu) = spin(rx, fd, (need, max), start, len);
                let spun = start.elapsed();
                self.pending.spin_ns += spun.as_nanos() as u64;
                if let Some(r) = got {
                    self.gate.spin_cost(cpu);
                    self.gate.record(how, spun);
                    self.pending.data += 1;
                    if self.pending.data.is_multiple_of(REPORT_EVERY) {
                        self.report();
                    }
                    return r;
                }
                how
            }
            None => Spin::Skipped,
        };
        match how {
            Spin::RanOut => self.pending.ran_out += 1,
            Spin::Yielded => self.pending.yielded += 1,
            _ => self.pending.skipped += 1,
        }
        // About to sleep: reporting costs nothing that matters now.
        self.report();
        let r = rx.fill_upto(stream, need, max);
        self.gate.record(how, start.elapsed());
        r
    }

    /// See [`Gate::peer_behind`] and [`Gate::handled`].
    pub fn batch(&mut self, behind: bool, pdus: u32) {
        self.gate.peer_behind(behind);
        self.gate.handled(pdus);
    }

    fn report(&mut self) {
        self.counters.add(&std::mem::take(&mut self.pending));
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.report();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    #[test]
    fn budget_is_off_at_zero_and_capped() {
        assert_eq!(budget(0), None);
        assert_eq!(budget(50), Some(us(50)));
        assert_eq!(budget(5000), Some(us(1000)));
    }

    /// A model initiator: it answers `answer` after the connection starts
    /// to wait; a connection that sleeps sees it `wake` later. Feeds `n`
    /// waits: how many were spun for.
    fn run(g: &mut Gate, n: usize, answer: Duration, wake: Duration) -> usize {
        let mut spins = 0;
        for _ in 0..n {
            let (how, waited) = match g.plan() {
                None => (Spin::Skipped, answer + wake),
                Some(len) if len >= answer => {
                    g.spin_cost(answer);
                    (Spin::Data, answer)
                }
                Some(_) => (Spin::RanOut, answer + wake),
            };
            spins += usize::from(how != Spin::Skipped);
            g.record(how, waited);
        }
        spins
    }

    #[test]
    fn spins_only_once_a_wait_was_seen() {
        let mut g = Gate::new(us(50));
        assert_eq!(g.plan(), None, "nothing known yet");
        g.record(Spin::Skipped, us(8));
        // Four typical waits, within the budget.
        assert_eq!(g.plan(), Some(us(32)));
        g.record(Spin::Data, us(5));
        g.record(Spin::Skipped, us(40));
        assert_eq!(g.plan(), Some(us(50)), "capped by the budget");
        // A typical wait near zero still gets a few tries.
        let mut g = Gate::new(us(50));
        g.record(Spin::Skipped, us(0));
        assert_eq!(g.plan(), Some(MIN_SPIN));
        let mut g = Gate::new(us(1));
        g.record(Spin::Skipped, us(0));
        assert_eq!(g.plan(), Some(us(1)), "never past the budget");
    }

    #[test]
    fn a_fast_peer_is_spun_for_but_one_wait_in_32() {
        // QD1 on a VM: the answer comes 15 µs after the response, a
        // sleeping thread sees it 30 µs later.
        let mut g = Gate::new(us(50));
        let spins = run(&mut g, 3200, us(15), us(30));
        assert!(spins >= 3200 - 3200 / 32 - 2, "{spins}");
        assert!(g.pays());
    }

    #[test]
    fn a_peer_with_answers_unread_is_spun_for_only_when_cheap() {
        // QD32 from an initiator slower than the target (qemu-img): it
        // sends each command while our earlier answers are still unread,
        // 15 µs apart; a sleeping thread would see it 30 µs later. Waking
        // sooner gains that initiator nothing (its pipeline is full), so
        // a 15 µs spin costs more than the 4 µs sleep it saves.
        let mut g = Gate::new(us(50));
        g.peer_behind(true);
        let spins = run(&mut g, 3200, us(15), us(30));
        assert!(spins <= 10 + 3200 / 64, "{spins}");
        // Answers 2 µs apart (a fast pipelined initiator): cheaper than
        // sleeping, spun for.
        let mut g = Gate::new(us(50));
        g.peer_behind(true);
        assert!(run(&mut g, 3200, us(2), us(30)) >= 3000);
        // The same initiator catching up (QD1): the round trip counts.
        let mut g = Gate::new(us(50));
        g.peer_behind(true);
        run(&mut g, 640, us(15), us(30));
        g.peer_behind(false);
        run(&mut g, 200, us(15), us(30));
        assert!(run(&mut g, 320, us(15), us(30)) >= 300);
    }

    #[test]
    fn a_peer_with_answers_unread_that_sends_bursts_is_spun_for() {
        // bench/iscsi-load at QD32: its ExpStatSN lags (our answers stream
        // while it sends) but it turns a whole batch around at once, ~35
        // PDUs a wait: our wake-up delays its next burst.
        let burst = |pdus: u32| {
            let mut g = Gate::new(us(50));
            g.peer_behind(true);
            let mut spins = 0;
            for _ in 0..3200 {
                g.handled(pdus);
                spins += run(&mut g, 1, us(15), us(30));
            }
            spins
        };
        let spins = burst(32);
        assert!(spins >= 3000, "{spins}");
        // The same waits bringing a few PDUs each (qemu-img bench, busy
        // with its own CPU): as when nothing is known, rarely; also when
        // one wait in four brings a pile (it slept, commands queued up).
        let spins = burst(4);
        assert!(spins <= 10 + 3200 / 64, "{spins}");
        let mut g = Gate::new(us(50));
        g.peer_behind(true);
        let mut spins = 0;
        for i in 0..3200 {
            g.handled(if i % 4 == 3 { 40 } else { 4 });
            spins += run(&mut g, 1, us(15), us(30));
        }
        assert!(spins <= 10 + 3200 / 64, "{spins}");
    }

    #[test]
    fn a_slow_peer_is_spun_for_rarely() {
        let mut g = Gate::new(us(50));
        // Answers after 120 µs: a 50 µs spin never catches one. Spins back
        // off to one in 64 waits (a probe, in case the peer sped up).
        let spins = run(&mut g, 1000, us(120), us(20));
        assert!(spins <= 7 + 1000 / 64, "{spins}");
        // It speeds up: within two back-offs the spin is back for good.
        assert!(run(&mut g, 128, us(10), us(20)) >= 1);
        assert!(run(&mut g, 100, us(10), us(20)) >= 96);
    }

    #[test]
    fn a_spin_that_saves_little_backs_off() {
        // The spin finds the data, but a sleeping thread would have seen
        // it nearly as soon (no halted CPU to wake; or the spin delays an
        // initiator that needs this CPU): one spin in 64 waits.
        let mut g = Gate::new(us(50));
        let spins = run(&mut g, 2000, us(30), us(5));
        assert!(spins <= 10 + 2000 / 64, "{spins}");
        // Waking gets dear (the host went idle): spinning resumes.
        assert!(run(&mut g, 200, us(30), us(40)) >= 1);
        assert!(run(&mut g, 320, us(30), us(40)) >= 300);
    }

    #[test]
    fn a_spin_that_yields_to_the_initiator_pays_however_long() {
        // The spin's yields let the initiator run on this CPU: the wait is
        // as long as a sleeping one, but the spin used 2 µs of CPU.
        let mut g = Gate::new(us(50));
        g.record(Spin::Skipped, us(30));
        for _ in 0..1000 {
            match g.plan() {
                Some(_) => {
                    g.spin_cost(us(2));
                    g.record(Spin::Data, us(28));
                }
                None => g.record(Spin::Skipped, us(30)),
            }
        }
        assert!(g.pays());
        assert_eq!(g.backoff, 0);
    }

    #[test]
    fn spins_that_find_nothing_back_off_exponentially() {
        let mut g = Gate::new(us(50));
        g.record(Spin::Skipped, us(25));
        let mut skipped = Vec::new();
        for _ in 0..8 {
            assert!(g.plan().is_some());
            // Ran out, and the data came just after (not an idle pause).
            g.record(Spin::RanOut, us(25));
            let mut n = 0;
            while g.plan().is_none() {
                n += 1;
                g.record(Spin::Skipped, us(25));
            }
            skipped.push(n);
        }
        assert_eq!(skipped, [1, 2, 4, 8, 16, 32, 64, 64]);
        // Finding data (in a third less than sleeping) shortens it again.
        g.record(Spin::Data, us(5));
        g.record(Spin::Data, us(5));
        assert_eq!(g.backoff, 16);
        // Contention backs off like a spin that ran out.
        g.record(Spin::Yielded, us(5));
        assert_eq!(g.skip, 32);
    }

    #[test]
    fn an_idle_connection_spins_at_most_once() {
        let mut g = Gate::new(us(50));
        // Busy at QD1: the spins find the next request.
        assert!(run(&mut g, 1000, us(10), us(30)) >= 900);
        // Then idle: each wait is a 200 ms receive timeout.
        let spins = run(&mut g, 1000, Duration::from_millis(200), us(30));
        assert_eq!(spins, 1);
        // Traffic again: spinning resumes after one wait is seen.
        assert_eq!(g.plan(), None);
        g.record(Spin::Skipped, us(10));
        assert!(g.plan().is_some());
    }

    #[test]
    fn a_tiny_budget_keeps_learning_through_wake_ups() {
        // 1 µs (one yield): a 30 µs wait that slept is no pause.
        let mut g = Gate::new(us(1));
        g.record(Spin::Skipped, us(30));
        assert_eq!(g.plan(), Some(us(1)));
        g.record(Spin::RanOut, Duration::from_millis(1));
        assert_eq!(g.plan(), None);
        assert_eq!(g.plan(), None, "forgotten after 1 ms");
    }

    #[test]
    fn bimodal_waits_spin_on_a_bounded_share() {
        // Every fourth answer is slow (the initiator does something else):
        // spins that run out must not cost more than the budget would on
        // every wait; the short waits keep most of their spins.
        let mut g = Gate::new(us(50));
        let (mut spins, mut wasted) = (0, Duration::ZERO);
        for i in 0..4000 {
            let answer = if i % 4 == 3 { us(300) } else { us(10) };
            let (how, waited) = match g.plan() {
                None => (Spin::Skipped, answer + us(30)),
                Some(len) if len >= answer => {
                    spins += 1;
                    (Spin::Data, answer)
                }
                Some(len) => {
                    wasted += len;
                    (Spin::RanOut, answer + us(30))
                }
            };
            g.record(how, waited);
        }
        assert!(spins >= 1000, "{spins} short waits spun for");
        assert!(wasted < us(50) * 1000, "{wasted:?}");
    }

    #[test]
    fn nothing_to_read_gives_up_when_planned() {
        let (_peer, s) = pair();
        let mut rx = RxBuf::new();
        let t = Instant::now();
        let (got, how, _) = spin(&mut rx, s.as_raw_fd(), (0, usize::MAX), t, us(5000));
        assert!(got.is_none());
        // On a loaded machine a yield may take long: that ends it too.
        assert!(how == Spin::RanOut || how == Spin::Yielded, "{how:?}");
        assert!(how == Spin::Yielded || t.elapsed() >= us(5000));
        assert!(rx.data().is_empty());
    }

    #[test]
    fn data_arriving_during_the_spin_is_received_and_counted() {
        let (mut peer, mut s) = pair();
        let counters = Arc::new(PollCounters::default());
        let mut p = Poller::new(us(1000), Arc::clone(&counters));
        let mut rx = RxBuf::new();
        for round in 0..50u8 {
            let writer = std::thread::spawn(move || {
                std::thread::sleep(us(100));
                peer.write_all(&[round; 16]).unwrap();
                peer
            });
            let mut got = 0;
            while got < 16 {
                match p.recv(&mut rx, &mut s, 0, usize::MAX) {
                    Ok(n) if n > 0 => got += n,
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(rx.data(), [round; 16]);
            rx.consume(16);
            peer = writer.join().unwrap();
        }
        drop(peer);
        assert!(matches!(p.recv(&mut rx, &mut s, 0, usize::MAX), Ok(0)));
        drop(p);
        let c = counters.snapshot();
        // The first wait only teaches the gate, then it spins (on a
        // loaded machine other threads may take the CPU mid-spin: those
        // spins stop, and the gate backs off).
        assert!(c.data + c.ran_out + c.yielded >= 1, "{c:?}");
        assert!(c.spin_ns > 0, "{c:?}");
        // At most one wait a round (none when the data beat the receive).
        assert!(c.data + c.ran_out + c.yielded + c.skipped <= 50, "{c:?}");
    }
}
