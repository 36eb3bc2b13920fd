//! Host-side helpers shared by the integration tests that drive real
//! programs and devices: a seeded random generator (runs are repeatable),
//! "is this tool installed" with a SKIP line (a failure under CI=true), running a tool that must
//! succeed, a child process reaped on drop, polling until something is
//! ready, and a loop device detached on drop. Also compiled into rtarget's
//! daemon tests (through `#[path]`), so it uses nothing of this crate.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// xorshift64: cheap, seedable, the same stream on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

/// Whether this run is CI: the environment's `CI` is set and not "", "0",
/// "false" or "no" (`.ci/run` sets CI=true). There every tool and device the
/// tests use is installed (scripts/install-deps.sh, root), so one missing is
/// a broken machine, and a test that quietly did nothing must not pass.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
}

/// The one way a test gives up for want of something on the host (a tool,
/// a loop device): a SKIP line locally, a panic when [`in_ci`].
#[track_caller]
pub fn skip(why: &str) {
    assert!(
        !in_ci(),
        "CI=true, and {why}: a missing tool or device fails in CI"
    );
    eprintln!("SKIP: {why}");
}

/// Whether `program` is installed (found on PATH and runnable); when not,
/// [`skip`]s naming it (a panic under CI=true). The caller returns on false.
#[track_caller]
pub fn require_tool(program: &str) -> bool {
    let found = Command::new(program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        skip(&format!("{program} is not installed"));
    }
    found
}

/// Runs `program args` that must succeed; returns its stdout and stderr.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// A child process (a server the test started) killed and reaped on drop.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Calls `attempt` every `every` until it gives a value; panics naming
/// `what` and the last error once `limit` has passed.
pub fn retry<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> T {
    let start = Instant::now();
    loop {
        match attempt() {
            Ok(v) => return v,
            Err(_) if start.elapsed() < limit => std::thread::sleep(every),
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// Waits up to `limit` for `path` to appear (a server's socket).
pub fn wait_for_path(path: &Path, limit: Duration) {
    let start = Instant::now();
    while !path.exists() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loop device over a sparse image file, detached on drop.
pub struct LoopDevice {
    pub dev: String,
    image: std::path::PathBuf,
}

impl LoopDevice {
    /// Creates `image` sparse at `size` bytes and attaches it; `None` (after
    /// [`skip`] naming `test`) when loop devices are unavailable (not root).
    pub fn attach(image: &Path, size: u64, test: &str) -> Option<LoopDevice> {
        std::fs::File::create(image).unwrap().set_len(size).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(LoopDevice {
                dev: String::from_utf8_lossy(&o.stdout).trim().to_string(),
                image: image.to_path_buf(),
            }),
            _ => {
                skip(&format!("{test}: no loop device (needs root and losetup)"));
                None
            }
        }
    }

    /// Grows the image file underneath and tells the kernel (`losetup -c`).
    pub fn grow(&self, size: u64) {
        self.grower()(size);
    }

    /// [`LoopDevice::grow`] as an owned closure (for a `'static` callback).
    pub fn grower(&self) -> impl Fn(u64) + 'static {
        let (image, dev) = (self.image.clone(), self.dev.clone());
        move |size| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&image)
                .unwrap()
                .set_len(size)
                .unwrap();
            assert!(Command::new("losetup")
                .args(["-c", &dev])
                .status()
                .unwrap()
                .success());
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}
