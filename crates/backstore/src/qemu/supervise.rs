//! Runs one QEMU child (qemu-storage-daemon or qemu-nbd) and keeps it
//! running: a dedicated thread spawns it, waits for its socket, waits for
//! it to exit, logs why, and restarts it with a bounded backoff until the
//! owner stops it.
//!
//! No orphans: the child gets `PR_SET_PDEATHSIG` (SIGTERM) tied to this
//! long-lived thread, so it dies with rtarget even on SIGKILL; `stop` sends
//! SIGTERM (then SIGKILL after a grace period) and the thread reaps it. The
//! thread waits with `waitid(WNOWAIT)` and clears the pid under the state
//! lock before reaping, so a signal is never sent to a recycled pid.
//! At process exit an `atexit` hook stops every live child and waits for
//! it, so that the image is closed (and its lock released) before rtarget
//! is gone: a restarted daemon can open it again at once.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Once, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a child may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Restart delays double from FIRST_DELAY up to MAX_DELAY; a child that
/// ran for STABLE resets them.
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(5);
const STABLE: Duration = Duration::from_secs(30);
/// SIGTERM grace period before SIGKILL on stop.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// stderr lines kept for error messages.
const TAIL: usize = 20;
/// A first start that failed on QEMU's image lock is retried this long:
/// the previous daemon of the same image may still be closing it.
const LOCK_RETRY: Duration = Duration::from_secs(5);

/// Every supervisor alive, for the exit hook.
static LIVE: Mutex<Vec<Weak<Supervisor>>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

extern "C" fn stop_all_at_exit() {
    let live: Vec<_> = match LIVE.lock() {
        Ok(mut l) => l.drain(..).filter_map(|w| w.upgrade()).collect(),
        Err(_) => return,
    };
    // Signal every child first, then wait: they close their images in parallel.
    for s in &live {
        s.begin_stop();
    }
    for s in &live {
        s.stop();
    }
}

#[derive(Default)]
struct State {
    /// The running (not yet reaped) child.
    pid: Option<i32>,
    /// Bumped each time a child becomes ready.
    generation: u64,
    /// Whether the current child is ready (socket exists).
    ready: bool,
    stopping: bool,
    /// Why the first start failed (the supervisor then gives up).
    fatal: Option<String>,
    /// An NBD client has talked to a child of this supervisor: from then
    /// on a dying child is restarted. Before, a child that dies is a start
    /// failure: qemu-nbd creates its socket before it opens the image, so
    /// "socket exists" alone does not prove the configuration works.
    confirmed: bool,
    restarts: u64,
    stderr: VecDeque<String>,
}

pub(super) struct Supervisor {
    /// For log lines: the storage object's name.
    name: String,
    program: PathBuf,
    args: Vec<String>,
    socket: PathBuf,
    state: Mutex<State>,
    cv: Condvar,
}

impl Supervisor {
    pub(super) fn start(
        name: String,
        program: PathBuf,
        args: Vec<String>,
        socket: PathBuf,
    ) -> io::Result<(Arc<Supervisor>, JoinHandle<()>)> {
        let s = Arc::new(Supervisor {
            name,
            program,
            args,
            socket,
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
        });
        HOOK.call_once(|| {
            // SAFETY: registering a plain extern "C" fn without arguments.
            unsafe { libc::atexit(stop_all_at_exit) };
        });
        if let Ok(mut l) = LIVE.lock() {
            l.retain(|w| w.strong_count() > 0);
            l.push(Arc::downgrade(&s));
        }
        let t = s.clone();
        let h = std::thread::Builder::new()
            .name("qemu-supervisor".into())
            .spawn(move || t.run())?;
        Ok((s, h))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn pid(&self) -> Option<u32> {
        let st = self.lock();
        st.pid.filter(|_| st.ready).map(|p| p as u32)
    }

    /// The opener connected: later deaths are restarted, not fatal.
    pub(super) fn confirm(&self) {
        self.lock().confirmed = true;
    }

    pub(super) fn restarts(&self) -> u64 {
        self.lock().restarts
    }

    fn tail(st: &State) -> String {
        st.stderr.iter().cloned().collect::<Vec<_>>().join(" | ")
    }

    /// Wait until a child is ready; its generation. Errors when stopping,
    /// when the first start failed, or after `timeout`.
    pub(super) fn wait_ready(&self, timeout: Duration) -> io::Result<u64> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            if let Some(f) = &st.fatal {
                return Err(io::Error::other(f.clone()));
            }
            if st.stopping {
                return Err(io::Error::other(format!("{}: stopped", self.name)));
            }
            if st.ready {
                return Ok(st.generation);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{}: {} is not running (restarted {} times; last output: {})",
                        self.name,
                        self.program.display(),
                        st.restarts,
                        Self::tail(&st)
                    ),
                ));
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Ask the child to terminate (SIGTERM) and the thread to end.
    fn begin_stop(&self) {
        let mut st = self.lock();
        if !st.stopping {
            st.stopping = true;
            signal(st.pid, libc::SIGTERM);
        }
        self.cv.notify_all();
    }

    /// Terminate the child, waiting for it (SIGKILL after a grace period),
    /// and let the thread end (the caller joins it).
    pub(super) fn stop(&self) {
        self.begin_stop();
        let mut st = self.lock();
        let deadline = Instant::now() + STOP_GRACE;
        while st.pid.is_some() {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(object = %self.name, "QEMU child ignored SIGTERM; killing it");
                signal(st.pid, libc::SIGKILL);
                break;
            }
            st = self
                .cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn spawn(self: &Arc<Self>) -> io::Result<Child> {
        let _ = std::fs::remove_file(&self.socket);
        let parent = std::process::id() as i32;
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        if let Some(err) = child.stderr.take() {
            let me = self.clone();
            let _ = std::thread::Builder::new()
                .name("qemu-stderr".into())
                .spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        tracing::warn!(object = %me.name, "qemu: {line}");
                        let mut st = me.lock();
                        if st.stderr.len() == TAIL {
                            st.stderr.pop_front();
                        }
                        st.stderr.push_back(line);
                    }
                });
        }
        Ok(child)
    }

    /// Whether `pid` has exited, without reaping it.
    fn exited(pid: i32, block: bool) -> bool {
        // SAFETY: siginfo_t is plain data; waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
        loop {
            // SAFETY: valid pointer to a local siginfo_t.
            let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
            if r == 0 {
                // SAFETY: reading the pid field of a siginfo filled by waitid.
                return unsafe { info.si_pid() } != 0;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                // ECHILD: already gone.
                return true;
            }
        }
    }

    /// Spawn a child and wait for its socket; the child once ready.
    fn start_one(self: &Arc<Self>) -> Result<Child, String> {
        let mut child = self
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        let pid = child.id() as i32;
        {
            let mut st = self.lock();
            st.stderr.clear();
            st.pid = Some(pid);
            if st.stopping {
                signal(Some(pid), libc::SIGTERM);
            }
        }
        let t0 = Instant::now();
        loop {
            if Self::exited(pid, false) {
                let mut st = self.lock();
                st.pid = None;
                drop(st);
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                // Let the stderr thread catch the last lines.
                std::thread::sleep(Duration::from_millis(50));
                self.cv.notify_all();
                return Err(format!(
                    "{} exited during start ({status}): {}",
                    self.program.display(),
                    Self::tail(&self.lock())
                ));
            }
            if self.socket.exists() {
                return Ok(child);
            }
            if t0.elapsed() > START_TIMEOUT {
                signal(Some(pid), libc::SIGKILL);
                Self::exited(pid, true);
                self.lock().pid = None;
                let _ = child.wait();
                self.cv.notify_all();
                return Err(format!(
                    "{} did not create {} within {START_TIMEOUT:?}",
                    self.program.display(),
                    self.socket.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn run(self: Arc<Self>) {
        let mut delay = FIRST_DELAY;
        let t0 = Instant::now();
        loop {
            if self.lock().stopping {
                break;
            }
            let started = Instant::now();
            match self.start_one() {
                Ok(mut child) => {
                    let pid = child.id() as i32;
                    {
                        let mut st = self.lock();
                        st.ready = true;
                        st.generation += 1;
                        self.cv.notify_all();
                    }
                    tracing::info!(object = %self.name, pid, program = %self.program.display(), socket = %self.socket.display(), "QEMU image server ready");
                    Self::exited(pid, true);
                    let stopping = {
                        let mut st = self.lock();
                        st.pid = None;
                        st.ready = false;
                        st.stopping
                    };
                    let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                    self.cv.notify_all();
                    if stopping {
                        tracing::info!(object = %self.name, pid, %status, "QEMU image server stopped");
                        break;
                    }
                    if !self.lock().confirmed {
                        // Let the stderr thread catch the last lines.
                        std::thread::sleep(Duration::from_millis(50));
                        let mut st = self.lock();
                        let e = format!(
                            "{} exited during start ({status}): {}",
                            self.program.display(),
                            Self::tail(&st)
                        );
                        tracing::error!(object = %self.name, error = %e, "QEMU image server failed to start");
                        st.fatal = Some(e);
                        self.cv.notify_all();
                        break;
                    }
                    if started.elapsed() > STABLE {
                        delay = FIRST_DELAY;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    let mut st = self.lock();
                    st.restarts += 1;
                    tracing::error!(
                        object = %self.name, pid, %status, restart_in = ?delay,
                        last_output = %Self::tail(&st),
                        "QEMU image server died; restarting it (I/O waits, then fails with MEDIUM ERROR if it does not come back)"
                    );
                }
                Err(e) => {
                    let mut st = self.lock();
                    if st.stopping {
                        break;
                    }
                    // QEMU's words for an image another process holds.
                    let locked = e.contains("Is another process using the image")
                        && t0.elapsed() < LOCK_RETRY;
                    if st.generation == 0 && !locked {
                        // A config that never worked won't start working by
                        // retrying: report it to whoever opens the object.
                        tracing::error!(object = %self.name, error = %e, "QEMU image server failed to start");
                        st.fatal = Some(e);
                        self.cv.notify_all();
                        break;
                    }
                    st.restarts += 1;
                    tracing::error!(object = %self.name, error = %e, restart_in = ?delay, "QEMU image server failed to restart");
                }
            }
            let deadline = Instant::now() + delay;
            let mut st = self.lock();
            while !st.stopping && Instant::now() < deadline {
                st = self
                    .cv
                    .wait_timeout(st, deadline - Instant::now())
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            delay = (delay * 2).min(MAX_DELAY);
        }
        let _ = std::fs::remove_file(&self.socket);
        self.cv.notify_all();
    }
}

fn signal(pid: Option<i32>, sig: libc::c_int) {
    if let Some(pid) = pid {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(pid, sig) };
    }
}
