//! Following the flow's CPU at low queue depth (TPG attribute
//! `follow_flow_cpu`, rtarget's own).
//!
//! At queue depth 1 every command is a round trip: the initiator sends,
//! sleeps, our answer wakes it. With the initiator on one CPU and this
//! connection thread on the other, each direction is a cross-CPU wake-up
//! (in a VM an IPI to a halted vCPU, a VM exit): ~20 µs of CPU per round
//! trip for any responder here, against ~6 µs with both on one CPU
//! (BENCHMARKS.md, "The floor"). Where the initiator runs is not ours to
//! choose, but where this thread runs is: while the connection runs one
//! command per wake-up with nothing else in flight, the thread moves onto
//! the CPU its packets are delivered on (`SO_INCOMING_CPU`: the sender's
//! CPU on loopback, the receive softirq's behind a NIC, what RFS steers
//! by), so both wake-ups stay CPU-local. When the load grows (several PDUs
//! a wake-up, an initiator with answers unread, tasks in flight) two CPUs
//! working in parallel pay more: the thread gets its own affinity back.
//!
//! Moving alone is not enough: the scheduler places a woken task on an
//! idle CPU rather than on its waker's busy one, so our answer's wake-up
//! sends the initiator to the CPU this thread just left idle (~1000 times
//! a second at QD1 here), and following it keeps the two apart half the
//! time (no CPU saved). So, moved, the thread sends its answers as
//! `SCHED_IDLE` (see [`FlowCpu::sending`]): a CPU running only idle-policy
//! tasks counts as idle for that placement, the initiator is woken right
//! here and preempts the sender at once, a CPU-local hand-off; the thread
//! takes its own policy back after the send. Only where it may take it
//! back (CAP_SYS_NICE or RLIMIT_NICE: an unprivileged thread may not leave
//! `SCHED_IDLE`), and never for long: a send that comes back late (another
//! task held the CPU meanwhile) pauses the hand-offs for a while.
//!
//! [`Decide`] is the policy (no syscalls); [`FlowCpu`] applies it to the
//! calling thread, only within the CPU mask the thread had before it moved
//! (cpuset, taskset), and restores exactly that mask.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Low-depth wake-ups in a row before the thread moves (~5 ms at QD1 here):
/// a few round trips say nothing, a steady run does.
const ENTER: u32 = 256;
/// Longest wait for a steady run, after moves that did not last.
const MAX_ENTER: u32 = 1 << 16;
/// A move that lasted fewer low-depth wake-ups than this did not pay its
/// two `sched_setaffinity` calls and the migrations: the next needs a run
/// twice as long (hysteresis against a load that flips between depths).
const LASTED: u32 = 4 * ENTER;
/// While moved: the net count of busy wake-ups (each low one takes one
/// back) that sends the thread home. A stray NOP-Out or a pair of
/// commands does not; a pipelined load does within a few wake-ups.
const LEAVE: u32 = 8;
/// While moved: low-depth wake-ups between looks at `SO_INCOMING_CPU`
/// (one cheap syscall). The initiator does migrate: with this thread on
/// its CPU (pinned, spinning or not) the other CPU idles, and the
/// scheduler's balancing moves the initiator there (at QD1 here ~500
/// times a second). Following it within 16 round trips kept the two
/// together; every 1024 left them apart most of the time (QD1 target
/// CPU 17.5 µs/IO, as without the move, against 12 µs).
const RECHECK: u32 = 16;

/// A send as `SCHED_IDLE` that took longer than this had the CPU taken by
/// something other than the initiator's turn (which takes ~10 µs at QD1):
/// the hand-offs pause ([`LatePause`]), as the thread would wait behind
/// any normal task while idle-policy.
const HANDOFF_LATE: Duration = Duration::from_micros(500);
/// Sends without the hand-off after the first late one; each further late
/// one doubles the pause, up to [`MAX_LATE_PAUSE`].
const LATE_PAUSE: u32 = 64;
const MAX_LATE_PAUSE: u32 = 1 << 16;

/// The pauses of the hand-off after late sends. One late send in a move
/// (a kworker, a timer, the initiator's own start) used to end the
/// hand-offs for the whole move: the initiator, woken on the idle CPU
/// again, migrated thousands of times a run with the thread chasing it,
/// and iscsi-load's QD1 ran at 31k IOPS instead of 110k (session 10). A
/// CPU held by another task for good still costs at most one late send
/// per pause, the pauses growing.
#[derive(Debug, Default, Clone)]
struct LatePause {
    /// Sends still to make without the hand-off; the length of the next
    /// pause.
    left: u32,
    next: u32,
}

impl LatePause {
    /// Whether this send may hand the CPU off.
    fn allow(&mut self) -> bool {
        if self.left > 0 {
            self.left -= 1;
            return false;
        }
        true
    }

    /// A send came back late.
    fn late(&mut self) {
        self.next = (self.next * 2).clamp(LATE_PAUSE, MAX_LATE_PAUSE);
        self.left = self.next;
    }
}

/// Moved: wake-ups over which the time per command is measured and
/// compared with the run before the move (commands done per unit of
/// time, apart against together). On one CPU nothing overlaps: an
/// initiator with much work of its own after each send (qemu-img, in
/// session 9: its round trip went from 19 to 30 µs) loses what the
/// cheaper wake-ups save; a lean one (bench/iscsi-load: 20 -> 17 µs)
/// gains. A move [`SLOWER`] than before goes back, and the next waits
/// [`SLOWER_BACKOFF`] times longer.
const JUDGE: u32 = 512;
/// See [`JUDGE`]: in 1/20ths of the time per command before the move.
const SLOWER: u32 = 21;
/// A first, early look: a move this much slower (1/20ths) after
/// [`QUICK`] wake-ups is undone at once. An initiator that loses on
/// one CPU loses a third or more (19 -> 30 µs), far beyond the noise of
/// a short window; undoing it after 128 commands instead of 512 is what
/// keeps a short run of such an initiator (qemu-img bench: 40,000
/// commands, a new connection each, so a new back-off) from paying for
/// several trials.
const QUICK: u32 = 128;
/// See [`QUICK`].
const QUICK_SLOWER: u32 = 23;
/// The next move after one judged slower needs a run this many times as
/// long (up to [`MAX_ENTER`]): a trial costs its slow commands, so an
/// initiator that loses on one CPU gets a handful per connection (256,
/// 1024, 4096, 16384, 65536 wake-ups) rather than one every doubling.
const SLOWER_BACKOFF: u32 = 4;

/// What the connection thread should do after a wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Stay,
    /// Look where the flow's packets arrive and move there.
    Move,
    /// Moved: look again, follow if the flow's CPU changed.
    Recheck,
    /// Back to the thread's own mask.
    Restore,
    /// Back to the thread's own mask: the move made the commands slower.
    Slower,
}

/// The policy, free of syscalls: fed each wake-up's batch, it says when to
/// move, look again, or go back.
#[derive(Debug, Clone)]
pub struct Decide {
    moved: bool,
    /// Unmoved: low-depth wake-ups in a row. Moved: since the last look.
    low: u32,
    /// Moved: low-depth wake-ups since the move.
    lasted: u32,
    /// Moved: net busy wake-ups.
    busy: u32,
    /// Low-depth wake-ups in a row a move needs now.
    enter: u32,
    /// Unmoved: when the run of low-depth wake-ups began. Moved: when
    /// the round trip's timing began (`None`: judged).
    since: Option<Instant>,
    /// The time per command of the run before the move.
    before: Duration,
    /// Moved: wake-ups timed so far, and the commands (PDUs) they brought.
    timed: u32,
    cmds: u32,
    /// The last restore was a move judged slower.
    slower: bool,
}

impl Default for Decide {
    fn default() -> Self {
        Decide {
            moved: false,
            low: 0,
            lasted: 0,
            busy: 0,
            enter: ENTER,
            since: None,
            before: Duration::ZERO,
            timed: 0,
            cmds: 0,
            slower: false,
        }
    }
}

impl Decide {
    /// A wake-up handled `pdus` PDUs; `deep`: the initiator had answers of
    /// ours unread when it sent the last one, or commands are still in
    /// flight (pool tasks, writes waiting for Data-Out). A wake-up with no
    /// whole PDU says nothing.
    /// `now`: when the wake-up's PDUs were handled.
    pub fn batch(&mut self, pdus: u32, deep: bool, now: Instant) -> Step {
        if pdus == 0 {
            return Step::Stay;
        }
        let low = pdus == 1 && !deep;
        if !self.moved {
            self.low = if low { self.low + 1 } else { 0 };
            if self.low == 1 {
                self.since = Some(now);
            }
            if self.low < self.enter {
                return Step::Stay;
            }
            let run = self.since.map_or(Duration::ZERO, |s| now - s);
            self.before = run / (self.low - 1).max(1);
            return Step::Move;
        }
        if self.timed == 0 {
            // The first wake-up after the move: timing starts.
            self.since = Some(now);
            self.timed = 1;
            self.cmds = 0;
        } else if let Some(since) = self.since {
            self.timed += 1;
            self.cmds = self.cmds.saturating_add(pdus);
            if self.timed == QUICK + 1 && self.slower_than(now - since, QUICK_SLOWER) {
                self.slower = true;
                return Step::Slower;
            }
            if self.timed > JUDGE {
                self.since = None;
                if self.slower_than(now - since, SLOWER) {
                    self.slower = true;
                    return Step::Slower;
                }
            }
        }
        if !low {
            self.busy += 1;
            if self.busy >= LEAVE {
                return Step::Restore;
            }
            return Step::Stay;
        }
        self.busy = self.busy.saturating_sub(1);
        self.lasted = self.lasted.saturating_add(1);
        self.low += 1;
        match self.low >= RECHECK {
            true => Step::Recheck,
            false => Step::Stay,
        }
    }

    /// Whether `took` for the commands timed since the move is more than
    /// `twentieths`/20 of the time they took before it (the first
    /// wake-up's command came before the timing began).
    fn slower_than(&self, took: Duration, twentieths: u32) -> bool {
        took / self.cmds.max(1) * 20 > self.before * twentieths
    }

    /// The thread moved (`true`), or could not (the flow's CPU unknown or
    /// outside its mask: try again after another steady run).
    pub fn moved(&mut self, ok: bool) {
        self.low = 0;
        self.busy = 0;
        if ok && !self.moved {
            self.lasted = 0;
            self.timed = 0;
            self.since = None;
        }
        self.moved |= ok;
    }

    /// The thread is back on its own mask.
    pub fn restored(&mut self) {
        self.enter = match (self.slower, self.lasted >= LASTED) {
            (true, _) => (self.enter * SLOWER_BACKOFF).min(MAX_ENTER),
            (false, true) => ENTER,
            (false, false) => (self.enter * 2).min(MAX_ENTER),
        };
        *self = Decide {
            enter: self.enter,
            ..Decide::default()
        };
    }

    #[cfg(test)]
    fn is_moved(&self) -> bool {
        self.moved
    }
}

/// Moves of every connection thread (monitoring).
#[derive(Debug, Default)]
pub struct FlowCpuCounters {
    moved: AtomicU64,
    followed: AtomicU64,
    restored: AtomicU64,
    unknown: AtomicU64,
    late: AtomicU64,
    slower: AtomicU64,
}

/// A snapshot of [`FlowCpuCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlowCpuStats {
    /// Threads moved onto their flow's CPU (a steady low-depth run).
    pub moved: u64,
    /// Moved threads that followed their flow to another CPU.
    pub followed: u64,
    /// Threads given their own CPU mask back (the load grew, or the
    /// connection ended).
    pub restored: u64,
    /// Moves not made: the flow's CPU unknown or outside the thread's mask.
    pub unknown: u64,
    /// Sends as `SCHED_IDLE` that came back late (another task held the
    /// CPU): each pauses the hand-offs (`LatePause`).
    pub late: u64,
    /// Moves undone because the commands ran slower on one CPU (an
    /// initiator with much work of its own per command); also in
    /// `restored`.
    pub slower: u64,
}

impl FlowCpuCounters {
    pub fn snapshot(&self) -> FlowCpuStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FlowCpuStats {
            moved: get(&self.moved),
            followed: get(&self.followed),
            restored: get(&self.restored),
            unknown: get(&self.unknown),
            late: get(&self.late),
            slower: get(&self.slower),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// The CPU the socket's latest packets were processed on, if known.
pub fn incoming_cpu(fd: RawFd) -> Option<usize> {
    let mut cpu: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `cpu` and `len` are valid for the int-sized option.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            (&mut cpu as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0 && cpu >= 0).then_some(cpu as usize)
}

/// The calling thread's CPU mask.
pub fn thread_mask() -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is a valid empty set; the call writes
    // at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let ok = libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) == 0;
        ok.then_some(set)
    }
}

fn set_mask(set: &libc::cpu_set_t) -> bool {
    // SAFETY: `set` is a valid cpu_set_t; 0 is the calling thread.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(set), set) == 0 }
}

fn has(set: &libc::cpu_set_t, cpu: usize) -> bool {
    // SAFETY: CPU_ISSET bounds-checks against the set's size.
    cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(cpu, set) }
}

fn only(cpu: usize) -> libc::cpu_set_t {
    // SAFETY: as in `thread_mask`; `cpu` is below CPU_SETSIZE (`has`).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        set
    }
}

/// One connection thread's following of its flow. Must be used on that
/// thread (the affinity calls act on the caller).
pub struct FlowCpu {
    decide: Decide,
    /// The thread's own mask, taken when it first moves; the CPU it is on.
    own: Option<libc::cpu_set_t>,
    on: Option<usize>,
    counters: Arc<FlowCpuCounters>,
    /// The hand-off (see the module doc): `None` until the first move
    /// looked whether it may be used; `Some(None)`: not used.
    own_policy: Option<Option<libc::c_int>>,
    /// Hand-offs allowed in this move (the thread may leave `SCHED_IDLE`).
    handoff: bool,
    /// Paused after late sends.
    late: LatePause,
    /// Sending as `SCHED_IDLE` since.
    idle_since: Option<Instant>,
}

/// The calling thread's policy, if it may leave `SCHED_IDLE` for it again
/// (the kernel treats `SCHED_IDLE` as nice 20: going back needs
/// CAP_SYS_NICE or an RLIMIT_NICE of 20 or more).
fn own_policy_if_returnable() -> Option<libc::c_int> {
    // SAFETY: plain calls on the calling thread; `r` is valid.
    let (policy, nice_ok) = unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        let nice = libc::getrlimit(libc::RLIMIT_NICE, &mut r) == 0 && r.rlim_cur >= 20;
        (libc::sched_getscheduler(0), nice)
    };
    if policy != libc::SCHED_OTHER && policy != libc::SCHED_BATCH {
        return None; // real-time or idle already: leave it alone
    }
    const CAP_SYS_NICE: u32 = 23;
    let cap = std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|caps| caps & (1 << CAP_SYS_NICE) != 0);
    (cap || nice_ok).then_some(policy)
}

fn set_policy(policy: libc::c_int) -> bool {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: `p` is valid; 0 is the calling thread.
    unsafe { libc::sched_setscheduler(0, policy, &p) == 0 }
}

impl FlowCpu {
    pub fn new(counters: Arc<FlowCpuCounters>) -> FlowCpu {
        FlowCpu {
            decide: Decide::default(),
            own: None,
            on: None,
            counters,
            own_policy: None,
            handoff: false,
            late: LatePause::default(),
            idle_since: None,
        }
    }

    /// Before sending a wake-up's answers: moved, the thread sends as
    /// `SCHED_IDLE` (the hand-off, module doc); [`FlowCpu::sent`] after.
    pub fn sending(&mut self) {
        if !self.handoff || self.on.is_none() || !self.late.allow() {
            return;
        }
        if set_policy(libc::SCHED_IDLE) {
            self.idle_since = Some(Instant::now());
        }
    }

    /// After the send: the thread's own policy again.
    pub fn sent(&mut self) {
        let Some(since) = self.idle_since.take() else {
            return;
        };
        let own = self.own_policy.flatten().unwrap_or(libc::SCHED_OTHER);
        if !set_policy(own) {
            // Checked before the first hand-off; should it fail anyway,
            // the thread stays idle-policy: say so loudly.
            tracing::error!("follow_flow_cpu: cannot leave SCHED_IDLE");
            self.own_policy = Some(None);
        }
        if since.elapsed() > HANDOFF_LATE {
            self.late.late();
            bump(&self.counters.late);
        }
    }

    /// After a wake-up's batch (see [`Decide::batch`]); `fd`: the socket.
    pub fn batch(&mut self, fd: RawFd, pdus: u32, deep: bool) {
        match self.decide.batch(pdus, deep, Instant::now()) {
            Step::Stay => {}
            Step::Move | Step::Recheck => self.follow(fd),
            Step::Restore => self.restore(),
            Step::Slower => {
                bump(&self.counters.slower);
                self.restore();
            }
        }
    }

    fn follow(&mut self, fd: RawFd) {
        let own = match self.own {
            Some(m) => m,
            None => match thread_mask() {
                Some(m) => *self.own.insert(m),
                None => return self.decide.moved(false),
            },
        };
        // Only within the thread's own mask, and only where it has a
        // choice (a thread bound to one CPU is where it must be).
        // SAFETY: CPU_COUNT reads the set.
        let choice = unsafe { libc::CPU_COUNT(&own) } > 1;
        let cpu = incoming_cpu(fd).filter(|&c| choice && has(&own, c));
        match cpu {
            Some(c) if self.on == Some(c) => self.decide.moved(true),
            Some(c) if set_mask(&only(c)) => {
                if self.on.is_none() {
                    let policy = *self.own_policy.get_or_insert_with(own_policy_if_returnable);
                    self.handoff = policy.is_some();
                    self.late = LatePause::default();
                }
                bump(match self.on {
                    None => &self.counters.moved,
                    Some(_) => &self.counters.followed,
                });
                self.on = Some(c);
                self.decide.moved(true);
            }
            _ => {
                if self.on.is_none() {
                    bump(&self.counters.unknown);
                }
                self.decide.moved(self.on.is_some());
            }
        }
    }

    fn restore(&mut self) {
        self.sent();
        self.handoff = false;
        if let (Some(own), Some(_)) = (self.own, self.on.take()) {
            set_mask(&own);
            bump(&self.counters.restored);
        }
        self.decide.restored();
    }

    /// Whether the thread is on its flow's CPU now: the initiator's send
    /// wakes it on the initiator's own CPU, so the connection does not
    /// busy-poll (a spin there only takes turns with the initiator; with
    /// it, session 9 measured 19.8 µs of CPU per QD1 command, without it
    /// 10.6).
    pub fn is_moved(&self) -> bool {
        self.on.is_some()
    }
}

impl Drop for FlowCpu {
    /// The thread may outlive the connection's session (and a pooled
    /// thread would otherwise keep the pin): give its mask back.
    fn drop(&mut self) {
        if self.on.is_some() {
            self.restore();
        }
    }
}

#[cfg(test)]
mod tests;
