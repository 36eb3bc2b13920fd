//! A throw-away single-node Ceph cluster for integration tests
//! (`../shared/tools/ceph/ceph-up.sh` on free ports in a temp dir, purged
//! on drop). `None` (with a SKIP line; a failure under CI=true) where
//! librbd, the script or the Ceph daemons are missing.
//!
//! The daemons double-fork out of the test's process group, so nothing
//! the test process does on its way out (or fails to do: a `timeout` or
//! Ctrl-C killing the group, a librbd assertion aborting) stops them. A
//! reaper process, in its own process group, waits for the test side of a
//! pipe to close (the cluster dropped, or the process gone however it
//! died) and then tears the cluster down: see [`REAPER`].
#![allow(dead_code)]

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use super::common;

/// The reaper (bash, given the temp dir in `D` and ceph-down.sh in
/// `DOWN`): each line on stdin is the process group of a ceph-up.sh run;
/// at EOF it kills those groups (an interrupted start would go on starting
/// daemons), resumes daemons a test SIGSTOPped (they would sit out
/// ceph-down.sh's 30 s SIGTERM grace), runs ceph-down.sh --purge, then
/// SIGKILLs whatever still has the dir on its command line (a daemon
/// caught before it wrote its pid file) and removes the dir. Only
/// builtins touch the command lines, so the scan never sees its own
/// helpers; the dir is in the environment, not in the reaper's own
/// command line.
const REAPER: &str = r#"
trap '' INT HUP TERM
groups=()
while read -r g; do groups+=("$g"); done
for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null; done
for pf in "$D"/c/run/*.pid; do
    [ -f "$pf" ] && kill -CONT "$(<"$pf")" 2>/dev/null
done
[ -d "$D/c" ] && bash "$DOWN" "$D/c" --purge >/dev/null 2>&1
for p in /proc/[0-9]*; do
    mapfile -d '' a <"$p/cmdline" 2>/dev/null || continue
    [[ " ${a[*]} " == *"$D/"* ]] && kill -KILL "${p#/proc/}" 2>/dev/null
done
rm -rf "$D"
exit 0
"#;

pub struct Cluster {
    dir: tempfile::TempDir,
    /// The reaper and the write end of its stdin (closed on drop).
    reaper: Child,
    reaper_in: Option<ChildStdin>,
}

impl Cluster {
    pub fn start() -> Option<Cluster> {
        if let Err(e) = backstore::rbd::available() {
            common::skip(&format!("librbd: {e}"));
            return None;
        }
        let tools = std::env::var_os("RTARGET_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools"));
        let script_dir = tools.join("ceph");
        if !script_dir.join("ceph-up.sh").exists() {
            common::skip(&format!("{} is missing", script_dir.display()));
            return None;
        }
        if !common::require_tool("ceph-mon") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut reaper = Command::new("bash")
            .args(["-c", REAPER, "ceph-reaper"])
            .env("D", dir.path())
            .env("DOWN", script_dir.join("ceph-down.sh"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of the test's process group: signals sent to the group
            // (a `timeout`, Ctrl-C) must leave it alive to do its job.
            .process_group(0)
            .spawn()
            .unwrap();
        let mut reaper_in = reaper.stdin.take();
        let (p1, p2) = loop {
            let (a, b) = (free_port(), free_port());
            if a != b {
                break (a, b);
            }
        };
        let up = Command::new("bash")
            .arg(script_dir.join("ceph-up.sh"))
            .arg(dir.path().join("c"))
            .env("MON_PORT", p1.to_string())
            .env("MON_PORT_V1", p2.to_string())
            .env("SKIP_SMOKE", "1")
            // The monitor refuses to start on a nearly full disk otherwise.
            .env("EXTRA_CONF", "[mon]\\nmon_data_avail_crit = -1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, which the reaper kills if the test dies
            // while the script runs.
            .process_group(0)
            .spawn()
            .unwrap();
        let sent = reaper_in
            .as_mut()
            .map(|w| writeln!(w, "{}", up.id()).and_then(|_| w.flush()));
        let out = up.wait_with_output().unwrap();
        let c = Cluster {
            dir,
            reaper,
            reaper_in,
        };
        sent.unwrap().unwrap();
        assert!(
            out.status.success(),
            "ceph-up.sh: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(c)
    }

    pub fn conf(&self) -> String {
        self.dir.path().join("c/ceph.conf").display().to_string()
    }

    /// The temp dir holding the cluster (in its `c/`), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The pid of daemon `name` (`osd.0`, `mon.a`).
    pub fn pid(&self, name: &str) -> i32 {
        let f = self.dir.path().join(format!("c/run/{name}.pid"));
        let s = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        s.trim().parse().unwrap()
    }

    /// The backstore config of `spec` (pool/image[@snap]) on this cluster.
    pub fn cfg(&self, spec: &str) -> backstore::RbdConfig {
        backstore::RbdConfig::parse(&format!("{spec};conf={};osd_op_timeout=20", self.conf()))
            .unwrap()
    }

    /// Run the `rbd` CLI on this cluster; its stdout.
    pub fn rbd(&self, args: &[&str]) -> Vec<u8> {
        self.cli("rbd", args)
    }

    /// Run the `rados` CLI on this cluster; its stdout.
    pub fn rados(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cli("rados", args)).into_owned()
    }

    /// Run the `ceph` CLI on this cluster; its stdout.
    pub fn ceph(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cli("ceph", args)).into_owned()
    }

    /// Run a Ceph CLI tool with this cluster's configuration; its stdout
    /// (panics with its stderr when it fails).
    fn cli(&self, tool: &str, args: &[&str]) -> Vec<u8> {
        let out = Command::new(tool)
            .args(["-c", &self.conf()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// Closing the reaper's stdin starts the teardown; waiting for it keeps
/// the drop synchronous (the next test's cluster never races this one's).
impl Drop for Cluster {
    fn drop(&mut self) {
        drop(self.reaper_in.take());
        let _ = self.reaper.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
