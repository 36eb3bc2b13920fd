//! One of several gateways serving the same RBD image (`alua_group=N` in
//! the cfgstring): the image's exclusive lock decides which gateway writes,
//! and the core turns that into implicit ALUA ([`crate::ownership`]).
//!
//! The lock is taken in librbd's managed mode (`rbd_lock_acquire`, as
//! tcmu-runner does), so librbd never passes it on by itself. A write that
//! reaches a gateway not owning the image takes it over first: break the
//! owner's lock, which makes librbd blocklist the owner's exact address
//! (IP, port and nonce, never a whole host: several gateways may share one),
//! acquire, and record this gateway's group in the image metadata
//! ([`lock::OWNER_KEY`]), which every gateway reads for REPORT TARGET PORT
//! GROUPS. SET TARGET PORT GROUPS naming this gateway's group does the same.
//!
//! A gateway whose I/O comes back ESHUTDOWN (blocklisted) or EROFS (the
//! lock gone) is fenced: it stops claiming the image, fails that I/O as
//! "path lost" (the core answers NOT READY, ASYMMETRIC ACCESS STATE
//! TRANSITION, so initiators retry on another path), and opens a new
//! cluster connection (a new address, not blocklisted) to serve again.
//!
//! No ping-pong: a gateway that lost the lock takes it back on a write
//! only when the owner is dead, i.e. its address no longer watches the
//! image header (crashed, or cut off past the OSDs' watch timeout). An
//! explicit SET TARGET PORT GROUPS still takes it (the initiator asked).
//! A gateway that never lost the lock takes it on any write: that is the
//! failover of an initiator whose path to the owner broke.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use super::lock;
use super::service::Service;
use super::{RbdBackstore, RbdConfig};
use crate::ownership::{is_path_lost, path_lost, GatewayReport, Owner, OwnerHook, Ownership};
use crate::{Backstore, Capabilities, Completion, Extent, IoOp, ResizeHook};

type Hook = Arc<dyn Fn() + Send + Sync>;
type SizeHook = Arc<dyn Fn(u64) + Send + Sync>;

/// An [`RbdBackstore`] that shares its image with other gateways.
pub struct RbdGateway {
    g: Arc<Gw>,
}

struct Conn {
    rbd: Arc<RbdBackstore>,
    /// Bumped per reconnect: an error from an older connection fences nothing.
    gen: u64,
}

struct Gw {
    cfg: RbdConfig,
    group: u16,
    read_only: bool,
    conn: RwLock<Conn>,
    /// Serialises takeovers and reconnects.
    change: Mutex<()>,
    /// This gateway holds the lock (as far as it knows; the OSDs decide).
    owned: AtomicBool,
    /// It lost the lock to another gateway since it last held it.
    lost: AtomicBool,
    /// The current connection is blocklisted: reconnect before serving.
    fenced: AtomicBool,
    /// Closed at the daemon's stop: no reconnecting any more.
    closed: AtomicBool,
    owner: Mutex<Owner>,
    hook: Mutex<Option<Hook>>,
    resize: Arc<Mutex<Option<SizeHook>>>,
    takeovers: AtomicU64,
    fences: AtomicU64,
    refused: AtomicU64,
    reconnects: AtomicU64,
    /// The addresses this gateway blocklisted (the last [`BLOCKLIST_KEPT`]).
    blocklisted: Mutex<Vec<String>>,
    /// Its entry in the service map (none when registering failed, or
    /// once closed: shutting its connection down takes it off the map).
    service: Mutex<Option<Service>>,
    /// The shared state objects handed out (each on a connection of its
    /// own), closed with the gateway.
    states: super::shared::States,
    /// The owner reads REPORT TARGET PORT GROUPS asked for ([`Gw::refresh_bounded`]).
    refreshes: Mutex<Refreshes>,
    refreshed: Condvar,
}

/// Owner reads in the background: one at a time, counted when done.
#[derive(Default)]
struct Refreshes {
    running: bool,
    done: u64,
}

/// How long REPORT TARGET PORT GROUPS waits for a fresh owner before it
/// answers with the last one seen: reading the owner is a cluster round
/// trip (milliseconds), but an unreachable cluster holds it until
/// osd_op_timeout, and initiators time RTPG out well before that.
const REFRESH_WAIT: Duration = Duration::from_millis(250);

/// How many blocklisted peers a gateway reports.
const BLOCKLIST_KEPT: usize = 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a takeover attempt came to.
enum Take {
    Done,
    /// The no-ping-pong rule said no (why).
    Refused(String),
}

impl RbdGateway {
    /// Open the image as [`RbdBackstore::open`] does; `cfg.alua_group` is
    /// this gateway's target port group. The image needs the
    /// exclusive-lock feature (on by default for new images).
    pub fn open(cfg: &RbdConfig, size: Option<u64>, read_only: bool) -> io::Result<RbdGateway> {
        let group = cfg.alua_group.ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no alua_group in the config")
        })?;
        let rbd = RbdBackstore::open(cfg, size, read_only)?;
        if !rbd.locks()?.has_exclusive_lock_feature()? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: alua_group needs the image's exclusive-lock feature \
                     (rbd feature enable {} exclusive-lock)",
                    rbd.name(),
                    rbd.name()
                ),
            ));
        }
        let resize: Arc<Mutex<Option<SizeHook>>> = Arc::default();
        forward_resize(&rbd, &resize);
        // Best effort: a gateway serves without its service map entry.
        let service = Service::register(cfg, group)
            .inspect_err(|e| {
                tracing::warn!(image = %rbd.name(), error = %e,
                "rbd gateway: not registered in the service map")
            })
            .ok();
        let g = Arc::new(Gw {
            cfg: cfg.clone(),
            group,
            read_only: read_only || cfg.snap.is_some(),
            conn: RwLock::new(Conn {
                rbd: Arc::new(rbd),
                gen: 0,
            }),
            change: Mutex::new(()),
            owned: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            fenced: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            owner: Mutex::new(Owner::Nobody),
            hook: Mutex::new(None),
            resize,
            takeovers: AtomicU64::new(0),
            fences: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            blocklisted: Mutex::new(Vec::new()),
            service: Mutex::new(service),
            states: Default::default(),
            refreshes: Mutex::default(),
            refreshed: Condvar::new(),
        });
        g.refresh();
        Ok(RbdGateway { g })
    }

    pub fn name(&self) -> String {
        self.g.current().0.name().to_string()
    }

    /// See [`RbdBackstore::compare_and_write`]; a write for the lock.
    pub fn compare_and_write(
        &self,
        cmp: &[u8],
        data: &[u8],
        offset: u64,
    ) -> io::Result<Option<u64>> {
        self.g.ensure_owner()?;
        let (rbd, gen) = self.g.current();
        rbd.compare_and_write(cmp, data, offset)
            .map_err(|e| self.g.check(gen, e, true))
    }

    /// Run a write-type call on the current connection, taking the lock
    /// first; errors that mean a fence fence.
    fn write<T>(&self, f: impl FnOnce(&RbdBackstore) -> io::Result<T>) -> io::Result<T> {
        self.g.ensure_owner()?;
        let (rbd, gen) = self.g.current();
        f(&rbd).map_err(|e| self.g.check(gen, e, true))
    }

    fn read<T>(&self, f: impl FnOnce(&RbdBackstore) -> io::Result<T>) -> io::Result<T> {
        let (rbd, gen) = self.g.current();
        f(&rbd).map_err(|e| self.g.check(gen, e, false))
    }
}

/// Hand a connection's resize notices to the gateway's hook (which
/// outlives connections).
fn forward_resize(rbd: &RbdBackstore, hook: &Arc<Mutex<Option<SizeHook>>>) {
    let h = Arc::clone(hook);
    rbd.on_resize(Box::new(move |n| {
        let f = lock(&h).clone();
        if let Some(f) = f {
            f(n);
        }
    }));
}

impl Gw {
    fn current(&self) -> (Arc<RbdBackstore>, u64) {
        let c = self.conn.read().unwrap_or_else(|e| e.into_inner());
        (Arc::clone(&c.rbd), c.gen)
    }

    fn name(&self) -> String {
        self.current().0.name().to_string()
    }

    fn set_owner(&self, o: Owner) {
        let changed = {
            let mut cur = lock(&self.owner);
            let changed = *cur != o;
            *cur = o;
            changed
        };
        if changed {
            tracing::info!(image = %self.name(), group = self.group, owner = ?o, "rbd gateway: owner changed");
            let h = lock(&self.hook).clone();
            if let Some(h) = h {
                h();
            }
        }
        // Every state change ends here (takeover, fence, another owner):
        // the service map follows (an unchanged status is not sent).
        let status = self.report().status();
        if let Some(s) = lock(&self.service).as_ref() {
            s.update(status);
        }
    }

    fn report(&self) -> GatewayReport {
        GatewayReport {
            medium: format!("{}/{}", self.cfg.pool, self.cfg.image),
            group: self.group,
            lock_owner: self.owned.load(Ordering::Acquire) && !self.fenced.load(Ordering::Acquire),
            owner: *lock(&self.owner),
            failovers: self.takeovers.load(Ordering::Relaxed),
            fenced: self.fences.load(Ordering::Relaxed),
            blocklisted: lock(&self.blocklisted).clone(),
        }
    }

    /// An error from connection `gen`, fencing this gateway when it says
    /// the cluster cut it off; what the caller should answer.
    fn check(self: &Arc<Self>, gen: u64, e: io::Error, write: bool) -> io::Error {
        if is_path_lost(&e) {
            self.fence(gen, &e);
            return e;
        }
        if write && lock::errno(&e) == Some(libc::EROFS) {
            self.fence(gen, &e);
            return path_lost(format!("{}: the exclusive lock is lost: {e}", self.name()));
        }
        e
    }

    /// Stop claiming the image and reconnect in the background.
    fn fence(self: &Arc<Self>, gen: u64, why: &io::Error) {
        if self.current().1 != gen || self.fenced.swap(true, Ordering::AcqRel) {
            return;
        }
        self.owned.store(false, Ordering::Release);
        self.lost.store(true, Ordering::Release);
        self.fences.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(image = %self.name(), group = self.group, error = %why,
            "rbd gateway: fenced (another gateway took the image); reconnecting");
        self.set_owner(Owner::Elsewhere);
        let g = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("rbd-reconnect".into())
            .spawn(move || {
                if let Err(e) = g.reconnect() {
                    tracing::warn!(image = %g.name(), error = %e, "rbd gateway: reconnect failed; retried on the next command");
                }
                g.refresh();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "rbd gateway: no reconnect thread; reconnecting on the next command");
        }
    }

    fn reconnect(&self) -> io::Result<()> {
        let _c = lock(&self.change);
        self.reconnect_locked()
    }

    /// A new cluster connection (a new client address) in place of a
    /// blocklisted one. Caller holds `change`.
    fn reconnect_locked(&self) -> io::Result<()> {
        if !self.fenced.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "closed"));
        }
        let rbd = RbdBackstore::open(&self.cfg, None, self.read_only)?;
        forward_resize(&rbd, &self.resize);
        let old = {
            let mut c = self.conn.write().unwrap_or_else(|e| e.into_inner());
            c.gen += 1;
            std::mem::replace(&mut c.rbd, Arc::new(rbd))
        };
        self.fenced.store(false, Ordering::Release);
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(image = %self.name(), group = self.group, "rbd gateway: reconnected");
        // Closing waits for the old connection's requests (failing now that
        // it is blocklisted): not on this thread, which may be serving.
        let _ = std::thread::Builder::new()
            .name("rbd-close".into())
            .spawn(move || drop(old));
        Ok(())
    }

    /// Read the owner from the cluster and publish it.
    fn refresh(self: &Arc<Self>) -> Owner {
        // Fenced: reconnect first (or wait for the thread doing it), so
        // that this gateway answers with the owner the others see.
        if self.fenced.load(Ordering::Acquire) && self.reconnect().is_err() {
            return *lock(&self.owner);
        }
        let (rbd, gen) = self.current();
        match self.read_owner(&rbd) {
            Ok(o) if self.owned.load(Ordering::Acquire) && o != Owner::Group(self.group) => {
                // Someone else holds or recorded it: unless librbd says we
                // still hold the lock, it was broken under us.
                if rbd.locks().and_then(|l| l.is_owner()).unwrap_or(false) {
                    let o = Owner::Group(self.group);
                    self.set_owner(o);
                    return o;
                }
                self.fence(gen, &path_lost("the lock moved to another gateway"));
                *lock(&self.owner)
            }
            Ok(o) => {
                self.set_owner(o);
                o
            }
            Err(e) => {
                let e = self.check(gen, e, false);
                tracing::debug!(error = %e, "rbd gateway: cannot read the owner");
                *lock(&self.owner)
            }
        }
    }

    /// [`Gw::refresh`] on a thread of its own, waited for at most `wait`:
    /// then the owner as last seen, the read going on in the background
    /// (its result published when it comes, as any owner change is).
    fn refresh_bounded(self: &Arc<Self>, wait: Duration) -> Owner {
        let mut st = lock(&self.refreshes);
        // A read already under way counts (it started just before).
        let want = st.done + 1;
        if !st.running {
            let g = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("rbd-owner".into())
                .spawn(move || {
                    g.refresh();
                    let mut st = lock(&g.refreshes);
                    st.running = false;
                    st.done += 1;
                    g.refreshed.notify_all();
                });
            match spawned {
                Ok(_) => st.running = true,
                Err(e) => {
                    tracing::warn!(error = %e, "rbd gateway: no thread to read the owner");
                    drop(st);
                    return *lock(&self.owner);
                }
            }
        }
        let (st, _) = self
            .refreshed
            .wait_timeout_while(st, wait, |s| s.done < want)
            .unwrap_or_else(|e| e.into_inner());
        drop(st);
        *lock(&self.owner)
    }

    fn read_owner(&self, rbd: &RbdBackstore) -> io::Result<Owner> {
        let l = rbd.locks()?;
        let owners = l.owners()?;
        let Some(holder) = owners.first() else {
            return Ok(Owner::Nobody);
        };
        let record = l.metadata_get(lock::OWNER_KEY)?;
        Ok(match record.as_deref().and_then(lock::parse_owner_record) {
            // The record is the holder's: it names its group.
            Some((g, addr)) if lock::is_alive(holder, std::slice::from_ref(&addr)) => {
                Owner::Group(g)
            }
            // Held by a client that did not record itself (yet).
            _ => Owner::Elsewhere,
        })
    }

    fn ensure_owner(self: &Arc<Self>) -> io::Result<()> {
        if self.owned.load(Ordering::Acquire) && !self.fenced.load(Ordering::Acquire) {
            return Ok(());
        }
        self.take_over(false)
    }

    fn take_over(self: &Arc<Self>, explicit: bool) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is read-only", self.name()),
            ));
        }
        let _c = lock(&self.change);
        if self.fenced.load(Ordering::Acquire) {
            self.reconnect_locked()
                .map_err(|e| path_lost(format!("{}: reconnecting: {e}", self.name())))?;
        }
        if self.owned.load(Ordering::Acquire) {
            return Ok(());
        }
        let (rbd, gen) = self.current();
        match self.take_over_on(&rbd, explicit) {
            Ok(Take::Done) => {
                self.owned.store(true, Ordering::Release);
                self.lost.store(false, Ordering::Release);
                self.takeovers.fetch_add(1, Ordering::Relaxed);
                tracing::info!(image = %rbd.name(), group = self.group, explicit, "rbd gateway: took the exclusive lock");
                self.set_owner(Owner::Group(self.group));
                Ok(())
            }
            Ok(Take::Refused(why)) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!(image = %rbd.name(), group = self.group, "rbd gateway: {why}");
                Err(path_lost(why))
            }
            Err(e) => {
                let e = self.check(gen, e, true);
                if is_path_lost(&e) {
                    return Err(e);
                }
                // A race with another gateway or a cluster hiccup: the
                // initiator retries, on this path or another.
                Err(path_lost(format!("{}: taking the lock: {e}", rbd.name())))
            }
        }
    }

    fn take_over_on(&self, rbd: &RbdBackstore, explicit: bool) -> io::Result<Take> {
        let l = rbd.locks()?;
        let me = l.my_addr()?;
        for owner in l.owners()? {
            if lock::is_alive(&owner, std::slice::from_ref(&me)) {
                // Ours already (librbd re-acquired it): just record it.
                continue;
            }
            if !explicit
                && self.lost.load(Ordering::Acquire)
                && lock::is_alive(&owner, &l.watchers()?)
            {
                return Ok(Take::Refused(format!(
                    "{}: {owner} holds the lock and is alive; this gateway lost it and does not \
                     take it back on I/O (no ping-pong; SET TARGET PORT GROUPS would)",
                    rbd.name()
                )));
            }
            tracing::warn!(image = %rbd.name(), owner = %owner, "rbd gateway: breaking the lock (blocklisting that address)");
            l.break_lock(&owner)?;
            let mut b = lock(&self.blocklisted);
            b.push(owner.clone());
            let extra = b.len().saturating_sub(BLOCKLIST_KEPT);
            b.drain(..extra);
        }
        l.acquire()?;
        l.metadata_set(lock::OWNER_KEY, &lock::owner_record(self.group, &me))?;
        Ok(Take::Done)
    }
}

/// The ownership side of a gateway, as the core keeps it.
struct Handle(Arc<Gw>);

impl Ownership for Handle {
    fn local_group(&self) -> u16 {
        self.0.group
    }
    fn owner(&self, refresh: bool) -> Owner {
        if refresh {
            self.0.refresh_bounded(REFRESH_WAIT)
        } else {
            *lock(&self.0.owner)
        }
    }
    fn take_over(&self) -> io::Result<()> {
        self.0.take_over(true)
    }
    fn on_change(&self, hook: OwnerHook) {
        *lock(&self.0.hook) = Some(Arc::from(hook));
    }
    fn report(&self) -> Option<GatewayReport> {
        Some(self.0.report())
    }
}

impl Backstore for RbdGateway {
    fn size(&self) -> u64 {
        self.g.current().0.size()
    }

    fn capabilities(&self) -> Capabilities {
        self.g.current().0.capabilities()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read(|r| r.read_at(buf, offset))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write(|r| r.write_at(buf, offset))
    }

    fn write_at_fua(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write(|r| r.write_at_fua(buf, offset))
    }

    fn flush(&self) -> io::Result<()> {
        self.read(|r| r.flush())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write(|r| r.discard(offset, len))
    }

    fn allocation_at(&self, offset: u64) -> io::Result<Option<Extent>> {
        self.read(|r| r.allocation_at(offset))
    }

    fn resize(&self, new_size: u64) -> io::Result<()> {
        self.write(|r| r.resize(new_size))
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write(|r| r.write_zeroes(offset, len))
    }

    fn submit(&self, op: IoOp, done: Completion) {
        let write = matches!(op, IoOp::Write { .. });
        if write {
            if let Err(e) = self.g.ensure_owner() {
                return done.complete(op, Err(e));
            }
        }
        let (rbd, gen) = self.g.current();
        let g = Arc::clone(&self.g);
        rbd.submit(
            op,
            Completion::new(move |op, r| {
                let r = r.map_err(|e| g.check(gen, e, write));
                done.complete(op, r)
            }),
        );
    }

    fn on_resize(&self, hook: ResizeHook) {
        *lock(&self.g.resize) = Some(Arc::from(hook));
    }

    /// With `stream_writes=1` (see [`RbdBackstore`]'s), and only while
    /// this gateway holds the lock: then `submit` of a write
    /// does not wait (`ensure_owner` is two loads). A gateway that would
    /// first take the lock over (cluster round trips) takes the whole
    /// write on a worker, as before. (Losing the lock between a WRITE's
    /// arrival and one of its pieces makes that piece take it back on the
    /// fabric's thread: rare, and bounded by the lock's own timeouts.)
    fn streams_writes(&self) -> bool {
        let g = &self.g;
        g.cfg.stream_writes
            && !g.read_only
            && g.owned.load(Ordering::Acquire)
            && !g.fenced.load(Ordering::Acquire)
    }

    /// Counters only (never decreasing): whether the lock is held shows in
    /// REPORT TARGET PORT GROUPS.
    fn health(&self) -> Vec<(&'static str, u64)> {
        let g = &self.g;
        let mut h = g.current().0.health();
        h.extend([
            ("lock_takeovers", g.takeovers.load(Ordering::Relaxed)),
            ("fenced", g.fences.load(Ordering::Relaxed)),
            ("takeovers_refused", g.refused.load(Ordering::Relaxed)),
            ("reconnects", g.reconnects.load(Ordering::Relaxed)),
        ]);
        h
    }

    fn ownership(&self) -> Option<Arc<dyn Ownership>> {
        Some(Arc::new(Handle(Arc::clone(&self.g))))
    }

    /// The image closes (its watch goes, the lock is released for the
    /// other gateways); a fenced gateway does not reconnect any more. Then
    /// the shared state's watch goes, and the service map entry: librados
    /// shutting the registered connection down tells the mgr (MMgrClose,
    /// waiting up to `mgr_client_service_daemon_unregister_timeout`, 1 s),
    /// which drops the daemon from the map it publishes next.
    fn close(&self) {
        {
            let _c = lock(&self.g.change);
            self.g.closed.store(true, Ordering::Release);
            self.g.current().0.close();
        }
        self.g.states.close();
        // Taken out under the lock, shut down outside it (up to a second).
        let service = lock(&self.g.service).take();
        drop(service);
    }

    /// The reservations live on a cluster connection of their own: a fenced
    /// gateway replaces its image connection (blocklisted by the gateway
    /// that took the lock), and the shared state must outlive that. Only
    /// the image id is read through the extra image handle, which closes
    /// at once; the state keeps its connection.
    fn shared_state(&self) -> Option<Arc<dyn crate::SharedState>> {
        if self.g.read_only {
            return None;
        }
        match RbdBackstore::open(&self.g.cfg, None, false) {
            Ok(own) => {
                let s = own.rados_state()?;
                self.g.states.add(&s);
                Some(s)
            }
            Err(e) => {
                tracing::error!(image = %self.name(), error = %e,
                    "rbd gateway: no connection for the shared state");
                None
            }
        }
    }
}
