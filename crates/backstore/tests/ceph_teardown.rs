//! A test's Ceph cluster (tests/ceph) does not outlive the test: not when
//! the test panics, and not when its process dies without unwinding (a
//! `timeout` or Ctrl-C killing the process group, a librbd assertion
//! aborting). Ceph's daemons double-fork out of the process group, so
//! before the reaper an orphaned ceph-mon/ceph-osd ran on after a killed
//! test run (and held whatever the test process had open, a flock).

mod ceph;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Set in the child test process of [`a_killed_test_leaves_no_daemon`].
const CHILD: &str = "RTARGET_CEPH_TEARDOWN_CHILD";
/// The child's line naming its cluster's dir (on a line of its own: the
/// harness has written "test NAME ... " without a newline).
const DIR_LINE: &str = "cluster dir: ";

/// The processes (pid, command line) with `dir` on their command line.
fn survivors(dir: &Path) -> Vec<(i32, String)> {
    let needle = format!("{}/", dir.display());
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle) {
            found.push((pid, cmd));
        }
    }
    found
}

/// Waits up to `limit` for every process of `dir` to exit and `dir` to be
/// removed; the survivors when they do not.
fn torn_down(dir: &Path, limit: Duration) -> Result<(), Vec<(i32, String)>> {
    let start = Instant::now();
    loop {
        let left = survivors(dir);
        if left.is_empty() && !dir.exists() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(left);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills what is left of `dir` when the check fails, so that this test
/// failing does not itself leave a cluster behind.
struct Leftovers(PathBuf);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for (pid, _) in survivors(&self.0) {
            // SAFETY: a plain kill(2) of a daemon of this test's cluster.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_panicking_test_leaves_no_daemon() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let mut dir = None;
    let r = catch_unwind(AssertUnwindSafe(|| {
        let Some(c) = ceph::Cluster::start() else {
            return;
        };
        dir = Some(c.dir().to_path_buf());
        assert!(!survivors(c.dir()).is_empty(), "no daemon to begin with");
        panic!("on purpose, with the cluster up");
    }));
    let Some(dir) = dir else { return };
    assert!(r.is_err());
    let _left = Leftovers(dir.clone());
    if let Err(left) = torn_down(&dir, Duration::from_secs(5)) {
        panic!("alive after the panic: {left:?}");
    }
}

#[test]
fn a_killed_test_leaves_no_daemon() {
    if std::env::var_os(CHILD).is_some() {
        // The child: a cluster up, its OSD stopped (as a test holding a
        // SIGSTOP guard), then wait for the SIGKILL.
        let Some(c) = ceph::Cluster::start() else {
            return;
        };
        // SAFETY: a plain kill(2) of a daemon this test started.
        unsafe { libc::kill(c.pid("osd.0"), libc::SIGSTOP) };
        let mut out = std::io::stdout();
        writeln!(out, "\n{DIR_LINE}{}", c.dir().display()).unwrap();
        out.flush().unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_killed_test_leaves_no_daemon"])
        .args(["--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let dir = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix(DIR_LINE).map(PathBuf::from));
    let Some(dir) = dir else {
        // No cluster: skipped (a SKIP line), or failed under CI=true.
        let st = child.wait().unwrap();
        assert!(st.success(), "the child test failed: {st}");
        return;
    };
    let _left = Leftovers(dir.clone());
    assert!(!survivors(&dir).is_empty(), "no daemon to begin with");
    child.kill().unwrap();
    child.wait().unwrap();
    // ceph-down.sh stops the daemons with SIGTERM (a few seconds for the
    // OSD to save its memstore).
    if let Err(left) = torn_down(&dir, Duration::from_secs(60)) {
        panic!("alive after the test process was killed: {left:?}");
    }
}
