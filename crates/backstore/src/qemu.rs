//! qemu: a backstore for any image format QEMU reads (vmdk, vhdx, vdi, vpc,
//! qed, luks, qcow2, raw, ...). It runs `qemu-storage-daemon` (or, when
//! that is not installed, `qemu-nbd`) on a unix socket in a private 0700
//! directory, and talks NBD to it with [`NbdBackstore`].
//!
//! Supervision ([`supervise`]): the child is restarted with a bounded
//! backoff when it dies, and killed and reaped when the backstore is
//! dropped (and, through `PR_SET_PDEATHSIG`, when rtarget dies). When a
//! request finds the connection broken, it waits for the child to be ready
//! again, reconnects and is retried once; if the child does not come back
//! within [`RECONNECT_WAIT`], the request fails (MEDIUM ERROR sense for the
//! initiator). Writes acknowledged by a child that then died may have sat
//! in QEMU's own metadata caches (qcow2 L2 tables, vmdk grain tables), so
//! after such a restart every later flush and FUA write fails (a sticky
//! [`FlushFault`], until the object is opened again): the initiator's
//! SYNCHRONIZE CACHE reports the possible loss instead of hiding it (as a
//! disk reports a lost volatile cache). Raw images and `writethrough=on`
//! keep no such cache and are exempt.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::nbd::{NbdAddr, NbdBackstore};
use crate::{Backstore, Capabilities, Extent, FlushFault};

mod config;
mod supervise;

pub use config::{ConfigError, DetectZeroes, Program, QemuConfig};
use supervise::Supervisor;

/// How long a request waits for a restarted child before failing.
pub const RECONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long opening waits for the first child.
const OPEN_WAIT: Duration = Duration::from_secs(30);
/// NBD connections per child (used when QEMU advertises multi-conn).
const CONNS: usize = 4;
const EXPORT: &str = "rtarget";

/// Why a QEMU-served image could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("neither qemu-storage-daemon nor qemu-nbd is installed")]
    NoProgram,
    #[error("cannot create the private socket directory {0}: {1}")]
    RunDir(PathBuf, io::Error),
    #[error("{0}")]
    Start(io::Error),
}

/// How to run the image server.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// For log lines (the storage object's name).
    pub name: String,
    /// Parent of the private socket directory (rtarget's state dir, or the
    /// temp dir); a path too long for a unix socket falls back to /tmp.
    pub run_dir: PathBuf,
    /// `None`: qemu-storage-daemon from PATH, else qemu-nbd.
    pub program: Option<Program>,
    /// Serve read-only whatever the config string says.
    pub read_only: bool,
}

struct Link {
    /// Which child generation `nbd` talks to.
    generation: u64,
    /// `None` only while dropping.
    nbd: Option<NbdBackstore>,
}

pub struct QemuBackstore {
    config: QemuConfig,
    program: Program,
    sup: Arc<Supervisor>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
    link: RwLock<Link>,
    size: u64,
    caps: Capabilities,
    /// QEMU may hold acknowledged writes in memory until a flush.
    volatile: bool,
    writes: AtomicU64,
    flushed: AtomicU64,
    fault: FlushFault,
}

static DIR_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh 0700 directory for the socket; unix socket paths are limited
/// to 107 bytes, so a deep run dir falls back to the temp dir.
fn private_dir(run_dir: &Path) -> Result<PathBuf, QemuError> {
    let leaf = format!(
        "rtarget-qemu-{}-{}",
        std::process::id(),
        DIR_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let mut dir = run_dir.join(&leaf);
    if dir.as_os_str().len() + "/nbd.sock".len() > 100 {
        dir = std::env::temp_dir().join(&leaf);
    }
    let _ = std::fs::create_dir_all(dir.parent().unwrap_or(Path::new("/")));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| QemuError::RunDir(dir.clone(), e))?;
    // The umask may have narrowed it, never widened: make it exact.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| QemuError::RunDir(dir.clone(), e))?;
    Ok(dir)
}

impl QemuBackstore {
    /// Start the image server and connect to it.
    pub fn open(config: QemuConfig, opts: &QemuOptions) -> Result<Self, QemuError> {
        let mut config = config;
        config.read_only |= opts.read_only;
        let program = opts
            .program
            .clone()
            .or_else(Program::find)
            .ok_or(QemuError::NoProgram)?;
        let dir = private_dir(&opts.run_dir)?;
        let socket = dir.join("nbd.sock");
        let args = program.args(&config, &socket, EXPORT);
        let started = Supervisor::start(
            opts.name.clone(),
            program.path().to_path_buf(),
            args,
            socket.clone(),
        );
        let (sup, thread) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                return Err(QemuError::Start(e));
            }
        };
        let mut me = QemuBackstore {
            volatile: !(config.writethrough || config.format == "raw"),
            config,
            program,
            sup,
            thread: Some(thread),
            dir,
            link: RwLock::new(Link {
                generation: 0,
                nbd: None,
            }),
            size: 0,
            caps: Capabilities::default(),
            writes: AtomicU64::new(0),
            flushed: AtomicU64::new(0),
            fault: FlushFault::new(),
        };
        // On error `me` drops here, which stops and reaps the child.
        let (generation, nbd) = me.connect(OPEN_WAIT).map_err(QemuError::Start)?;
        me.sup.confirm();
        let _ = std::fs::set_permissions(
            me.dir.join("nbd.sock"),
            std::fs::Permissions::from_mode(0o600),
        );
        me.size = nbd.size();
        me.caps = nbd.capabilities();
        me.caps.read_only |= me.config.read_only;
        let link = me.link.get_mut().unwrap_or_else(|p| p.into_inner());
        *link = Link {
            generation,
            nbd: Some(nbd),
        };
        Ok(me)
    }

    pub fn config(&self) -> &QemuConfig {
        &self.config
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    /// The running child's pid (`None` while it is being restarted).
    pub fn daemon_pid(&self) -> Option<u32> {
        self.sup.pid()
    }

    /// How many times the child died and was started again.
    pub fn restarts(&self) -> u64 {
        self.sup.restarts()
    }

    /// Wait for a ready child and connect to it: (its generation, client).
    fn connect(&self, wait: Duration) -> io::Result<(u64, NbdBackstore)> {
        let deadline = Instant::now() + wait;
        let addr = NbdAddr::Unix(self.dir.join("nbd.sock"));
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let generation = self.sup.wait_ready(left)?;
            match NbdBackstore::connect_multi(addr.clone(), EXPORT, CONNS) {
                Ok(mut n) => {
                    // Restarts are seen here, not hidden inside the client.
                    n.set_reconnect(false);
                    return Ok((generation, n));
                }
                // Socket there but not accepting yet, or the child just died.
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "qemu: connect failed, retrying");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Replace the broken connection to generation `seen` (unless another
    /// thread did already).
    fn reconnect(&self, seen: u64) -> io::Result<()> {
        let mut link = self
            .link
            .write()
            .map_err(|_| io::Error::other("qemu link lock poisoned"))?;
        if link.generation != seen || link.nbd.as_ref().is_some_and(|n| !n.is_broken()) {
            return Ok(());
        }
        let (generation, nbd) = self.connect(RECONNECT_WAIT)?;
        if nbd.size() != self.size {
            return Err(io::Error::other(format!(
                "image size changed across a restart ({} -> {})",
                self.size,
                nbd.size()
            )));
        }
        if generation != link.generation
            && self.volatile
            && self.writes.load(Ordering::Acquire) != self.flushed.load(Ordering::Acquire)
        {
            self.fault.record(
                &self.config.file.display().to_string(),
                "QEMU image server restarted with acknowledged writes not yet flushed",
            );
        }
        tracing::info!(image = %self.config.file.display(), generation, "reconnected to the QEMU image server");
        *link = Link {
            generation,
            nbd: Some(nbd),
        };
        Ok(())
    }

    /// Run `op` on the current connection; when the connection (not the
    /// server's answer) failed, reconnect and retry once. Reads, writes,
    /// flushes and zeroing are all idempotent, so a retry is safe.
    fn io<T>(&self, mut op: impl FnMut(&NbdBackstore) -> io::Result<T>) -> io::Result<T> {
        let seen = {
            let link = self
                .link
                .read()
                .map_err(|_| io::Error::other("qemu link lock poisoned"))?;
            let nbd = link.nbd.as_ref().ok_or_else(stopped)?;
            match op(nbd) {
                Err(e) if nbd.is_broken() => {
                    tracing::warn!(image = %self.config.file.display(), error = %e, "connection to the QEMU image server lost");
                    link.generation
                }
                r => return r,
            }
        };
        self.reconnect(seen)?;
        let link = self
            .link
            .read()
            .map_err(|_| io::Error::other("qemu link lock poisoned"))?;
        op(link.nbd.as_ref().ok_or_else(stopped)?)
    }

    fn wrote(&self) {
        if self.volatile {
            self.writes.fetch_add(1, Ordering::AcqRel);
        }
    }
}

fn stopped() -> io::Error {
    io::Error::other("qemu backstore stopped")
}

impl Backstore for QemuBackstore {
    fn size(&self) -> u64 {
        self.size
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.io(|n| n.read_at(buf, offset))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.wrote();
        self.io(|n| n.write_at(buf, offset))
    }

    fn write_at_fua(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.fault.check()?;
        self.io(|n| n.write_at_fua(buf, offset))
    }

    fn flush(&self) -> io::Result<()> {
        self.fault.check()?;
        let upto = self.writes.load(Ordering::Acquire);
        self.io(|n| n.flush())?;
        // A restart seen while this flush reconnected.
        self.fault.check()?;
        self.flushed.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.wrote();
        self.io(|n| n.discard(offset, len))
    }

    fn allocation_at(&self, offset: u64) -> io::Result<Option<Extent>> {
        self.io(|n| n.allocation_at(offset))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.wrote();
        self.io(|n| n.write_zeroes(offset, len))
    }

    fn health(&self) -> Vec<(&'static str, u64)> {
        vec![("restarts", self.restarts())]
    }
}

impl Drop for QemuBackstore {
    fn drop(&mut self) {
        // Disconnect politely first so QEMU doesn't log a dropped client.
        if let Ok(link) = self.link.get_mut() {
            link.nbd = None;
        }
        self.sup.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(self.dir.join("nbd.sock"));
        let _ = std::fs::remove_dir(&self.dir);
    }
}
