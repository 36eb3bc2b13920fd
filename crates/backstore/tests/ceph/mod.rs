//! A throw-away single-node Ceph cluster for integration tests
//! (`../shared/tools/ceph/ceph-up.sh` on free ports in a temp dir, purged
//! on drop). `None` (with a SKIP line; a failure under CI=true) where
//! librbd, the script or the Ceph daemons are missing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::common;

pub struct Cluster {
    dir: tempfile::TempDir,
    script_dir: PathBuf,
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
        let (p1, p2) = loop {
            let (a, b) = (free_port(), free_port());
            if a != b {
                break (a, b);
            }
        };
        let out = Command::new("bash")
            .arg(script_dir.join("ceph-up.sh"))
            .arg(dir.path().join("c"))
            .env("MON_PORT", p1.to_string())
            .env("MON_PORT_V1", p2.to_string())
            .env("SKIP_SMOKE", "1")
            // The monitor refuses to start on a nearly full disk otherwise.
            .env("EXTRA_CONF", "[mon]\\nmon_data_avail_crit = -1")
            .output()
            .unwrap();
        let c = Cluster { dir, script_dir };
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

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(self.script_dir.join("ceph-down.sh"))
            .arg(self.dir.path().join("c"))
            .arg("--purge")
            .output();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
