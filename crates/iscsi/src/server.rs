//! Server-wide state: the target table, listener threads, the registry of
//! live connections and sessions (for TSIH assignment, session
//! reinstatement and shutdown), and thread bookkeeping.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::admission::{peer_key, Admit, LoginSlots, LISTEN_BACKLOG, MAX_CONNECTIONS};
use crate::session_core::{ConnSlot, SessionCore};
use crate::sessions::{live_access, SessionLive};
use crate::{ChapCredentials, TargetConfig};

/// No stop requested.
pub const STOP_NONE: u8 = 0;
/// Ask the initiator to log out (Async Message), then close.
pub const STOP_LOGOUT: u8 = 1;
/// Close now (reinstatement, cold reset, forced shutdown).
pub const STOP_KILL: u8 = 2;

/// How long a login waits for the session it reinstates (or a session of
/// the same I_T nexus that just ended) to release its commands.
pub const REINSTATE_WAIT: Duration = Duration::from_secs(5);

/// What the server keeps about one connection thread.
pub struct ConnHandle {
    pub id: u64,
    pub stream: TcpStream,
    pub stop: AtomicU8,
    /// Peer key of the login limits (`admission::peer_key`).
    peer: IpAddr,
    accepted: Instant,
    /// Still in the login phase, holding a login slot.
    in_login: AtomicBool,
}

impl ConnHandle {
    pub fn kill(&self) {
        self.stop.store(STOP_KILL, Ordering::SeqCst);
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// An I_T nexus identity: initiator name, ISID, target name, TPGT.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub initiator: String,
    pub isid: [u8; 6],
    pub target: String,
    pub tpgt: u16,
}

pub(crate) struct SessionEntry {
    pub(crate) tsih: u16,
    /// The leading connection's peer.
    pub(crate) peer: SocketAddr,
    pub(crate) live: Arc<SessionLive>,
    /// Its connections (MC/S) and what they share.
    pub(crate) core: Arc<SessionCore>,
}

/// A bound portal: the address asked for, the one bound, the socket and
/// its accept thread.
struct Listener {
    asked: SocketAddr,
    bound: SocketAddr,
    socket: TcpListener,
    thread: JoinHandle<()>,
}

pub struct Shared {
    pub targets: RwLock<BTreeMap<String, Arc<TargetConfig>>>,
    pub stopping: AtomicBool,
    conns: Mutex<HashMap<u64, Arc<ConnHandle>>>,
    sessions: Mutex<HashMap<SessionKey, SessionEntry>>,
    /// Ended sessions whose pool commands still run, per I_T nexus (a
    /// count: the same nexus may end twice before the first drains).
    draining: Mutex<HashMap<SessionKey, usize>>,
    drained: Condvar,
    threads: Mutex<Vec<JoinHandle<()>>>,
    listeners: Mutex<Vec<Listener>>,
    discovery_auth: RwLock<Option<ChapCredentials>>,
    next_id: AtomicU64,
    next_tsih: Mutex<u16>,
    logins: Mutex<LoginSlots>,
    /// Refusals not logged yet, and when the next may be (a flood must not
    /// flood the log too).
    refusals: Mutex<(u64, Instant)>,
    /// Logins by outcome (monitoring).
    pub login_counts: crate::login::LoginCounters,
    /// Busy polling of every connection (monitoring).
    pub busy_polls: Arc<crate::busypoll::PollCounters>,
    /// Connection threads following their flow's CPU (monitoring).
    pub flow_cpu: Arc<crate::flow_cpu::FlowCpuCounters>,
    /// Data segments received straight into task buffers (monitoring).
    pub direct_rx: crate::direct::DirectCounters,
    /// Live lent READs sent (monitoring).
    pub lent_tx: crate::lent_read::LentCounters,
    /// Drops what connection threads let go of (`closer`).
    pub closer: crate::closer::Closer,
}

/// Nexus ids are unique for the life of the process, across servers.
static NEXUS_IDS: AtomicU64 = AtomicU64::new(1);

pub fn next_nexus_id() -> u64 {
    NEXUS_IDS.fetch_add(1, Ordering::Relaxed)
}

impl Shared {
    pub fn new() -> Shared {
        Shared {
            targets: RwLock::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            draining: Mutex::new(HashMap::new()),
            drained: Condvar::new(),
            threads: Mutex::new(Vec::new()),
            listeners: Mutex::new(Vec::new()),
            discovery_auth: RwLock::new(None),
            next_id: AtomicU64::new(1),
            next_tsih: Mutex::new(0),
            logins: Mutex::new(LoginSlots::default()),
            refusals: Mutex::new((0, Instant::now())),
            login_counts: Default::default(),
            busy_polls: Default::default(),
            flow_cpu: Default::default(),
            direct_rx: Default::default(),
            lent_tx: Default::default(),
            closer: Default::default(),
        }
    }

    pub fn target(&self, iqn: &str) -> Option<Arc<TargetConfig>> {
        let t = self.targets.read().unwrap_or_else(|e| e.into_inner());
        t.get(iqn).cloned()
    }

    pub fn all_targets(&self) -> Vec<Arc<TargetConfig>> {
        let t = self.targets.read().unwrap_or_else(|e| e.into_inner());
        t.values().cloned().collect()
    }

    pub fn set_target(&self, t: TargetConfig) {
        let t = Arc::new(t);
        self.targets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(t.iqn.clone(), Arc::clone(&t));
        self.refresh_sessions(&t);
    }

    /// Bring the live sessions of `t` in line with it: a new LUN table
    /// where theirs changed; where they lost access (TPG disabled, ACL
    /// removed without demo mode, authentication they did not pass: see
    /// `live_access`), no LUN at once and a logout request.
    fn refresh_sessions(&self, t: &TargetConfig) {
        let mut leave = Vec::new();
        for (k, e) in self
            .lock_sessions()
            .iter()
            .filter(|(k, _)| k.target == t.iqn)
        {
            if !apply_access(Some(t), k, &e.live) {
                leave.extend(e.core.conn_ids());
            }
        }
        self.ask_logout(&leave);
    }

    /// `refresh_sessions` for one session that just registered (its login
    /// may have raced with a change).
    pub fn refresh_session(&self, k: &SessionKey, conn_ids: &[u64], live: &SessionLive) {
        let t = self.target(&k.target);
        if !apply_access(t.as_deref(), k, live) {
            self.ask_logout(conn_ids);
        }
    }

    /// Async logout request to these connections, then close (the
    /// connection thread enforces the grace period).
    fn ask_logout(&self, conn_ids: &[u64]) {
        let conns = self.lock_conns();
        for id in conn_ids {
            if let Some(h) = conns.get(id) {
                tracing::info!(conn = id, "session lost its access: asking for logout");
                let _ = h.stop.compare_exchange(
                    STOP_NONE,
                    STOP_LOGOUT,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
        }
    }

    pub fn set_discovery_auth(&self, creds: Option<ChapCredentials>) {
        *self
            .discovery_auth
            .write()
            .unwrap_or_else(|e| e.into_inner()) = creds;
    }

    pub fn discovery_auth(&self) -> Option<ChapCredentials> {
        self.discovery_auth
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn lock_conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnHandle>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn lock_sessions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SessionKey, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a session that finished login on connection `slot`;
    /// returns its core (`make` builds it for the TSIH assigned). An
    /// existing session with the same key is reinstated: all its
    /// connections are closed. Like LIO, the new session is admitted only
    /// once the old one's commands are released: its connection thread has
    /// ended (so no PDU it had read runs later) and its pool commands have
    /// finished or were dropped unstarted (`drain_begin`), so no stale
    /// WRITE lands after the initiator retried it. `None` if that does not
    /// happen within [`REINSTATE_WAIT`] (a hung backstore): the login is
    /// refused and the initiator tries again.
    pub fn register_session(
        &self,
        key: SessionKey,
        slot: ConnSlot,
        live: Arc<SessionLive>,
        make: impl FnOnce(u16) -> SessionCore,
    ) -> Option<Arc<SessionCore>> {
        let deadline = Instant::now() + REINSTATE_WAIT;
        let old = self.lock_sessions().get(&key).map(|e| Arc::clone(&e.core));
        if let Some(old) = old {
            tracing::info!(initiator = ?key.initiator, target = %key.target,
                "session reinstatement: closing the old session");
            if !self.stop_conns(&old, &old.conn_ids(), deadline) {
                tracing::warn!(initiator = %key.initiator, target = %key.target,
                    "the reinstated session's connections did not end in time, refusing the login");
                return None;
            }
        }
        if !self.wait_drained(&key, deadline) {
            tracing::warn!(initiator = %key.initiator, target = %key.target,
                "the previous session's commands still run, refusing the login");
            return None;
        }
        let tsih = self.alloc_tsih();
        let peer = slot.peer;
        let core = Arc::new(make(tsih));
        core.attach(slot);
        self.lock_sessions().insert(
            key,
            SessionEntry {
                tsih,
                peer,
                live,
                core: Arc::clone(&core),
            },
        );
        Some(core)
    }

    fn lock_draining(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, usize>> {
        self.draining.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A session of `key` ended with commands possibly still on the pool;
    /// `drain_end` follows once the last one has finished.
    pub fn drain_begin(&self, key: &SessionKey) {
        *self.lock_draining().entry(key.clone()).or_insert(0) += 1;
    }

    pub fn drain_end(&self, key: &SessionKey) {
        let mut d = self.lock_draining();
        if let Some(n) = d.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                d.remove(key);
                self.drained.notify_all();
            }
        }
    }

    /// Wait until no ended session of `key` has commands left; false if
    /// some remain at `deadline`.
    fn wait_drained(&self, key: &SessionKey, deadline: Instant) -> bool {
        let mut d = self.lock_draining();
        while d.contains_key(key) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            d = self
                .drained
                .wait_timeout(d, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// A fresh non-zero TSIH.
    pub fn alloc_tsih(&self) -> u16 {
        let mut n = self.next_tsih.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.wrapping_add(1);
        if *n == 0 {
            *n = 1;
        }
        *n
    }

    /// Does a session with this TSIH exist (for logins adding a connection)?
    pub fn session_exists(&self, key: &SessionKey, tsih: u16) -> bool {
        self.lock_sessions()
            .get(key)
            .is_some_and(|e| e.tsih == tsih)
    }

    /// Live normal sessions.
    pub fn sessions(&self) -> Vec<crate::SessionInfo> {
        let mut v: Vec<_> = self
            .lock_sessions()
            .iter()
            .map(|(k, e)| crate::SessionInfo {
                initiator: k.initiator.clone(),
                isid: k.isid,
                target: k.target.clone(),
                tpg_tag: k.tpgt,
                tsih: e.tsih,
                peer: e.peer,
                cids: e.core.conns().iter().map(|c| c.cid).collect(),
            })
            .collect();
        v.sort_by(|a, b| (&a.target, a.tsih).cmp(&(&b.target, b.tsih)));
        v
    }

    /// Live normal sessions in detail.
    pub fn sessions_detail(&self) -> Vec<crate::SessionDetail> {
        let mut v: Vec<_> = self
            .lock_sessions()
            .iter()
            .map(|(k, e)| crate::SessionDetail {
                info: crate::SessionInfo {
                    initiator: k.initiator.clone(),
                    isid: k.isid,
                    target: k.target.clone(),
                    tpg_tag: k.tpgt,
                    tsih: e.tsih,
                    peer: e.peer,
                    cids: e.core.conns().iter().map(|c| c.cid).collect(),
                },
                local: e.live.local,
                cid: e.live.cid,
                connections: e
                    .core
                    .conns()
                    .into_iter()
                    .map(|c| crate::ConnectionInfo {
                        cid: c.cid,
                        peer: c.peer,
                        local: c.local,
                    })
                    .collect(),
                acl: e.live.acl.load(Ordering::Relaxed),
                authenticated: e.live.authenticated,
                parameters: crate::sessions::param_list(&e.live.params),
                luns: e.live.lun_io(),
            })
            .collect();
        v.sort_by(|a, b| (&a.info.target, a.info.tsih).cmp(&(&b.info.target, b.info.tsih)));
        v
    }

    /// Kill every session of `iqn` except the one on connection `keep`
    /// (target cold reset).
    pub fn close_target_sessions(&self, iqn: &str, keep: u64) {
        let victims: Vec<u64> = self
            .lock_sessions()
            .iter()
            .filter(|(k, _)| k.target == iqn)
            .flat_map(|(_, e)| e.core.conn_ids())
            .filter(|id| *id != keep)
            .collect();
        let conns = self.lock_conns();
        for id in victims {
            if let Some(h) = conns.get(&id) {
                h.kill();
            }
        }
    }

    /// Remove a target and close its sessions; false if it was not there.
    pub fn remove_target(&self, iqn: &str) -> bool {
        let removed = self
            .targets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(iqn)
            .is_some();
        let victims: Vec<u64> = self
            .lock_sessions()
            .iter()
            .filter(|(k, _)| k.target == iqn)
            .flat_map(|(k, e)| {
                apply_access(None, k, &e.live);
                e.core.conn_ids()
            })
            .collect();
        self.ask_logout(&victims);
        removed
    }

    fn unregister_conn(&self, id: u64) {
        let h = self.lock_conns().remove(&id);
        if let Some(h) = h {
            self.login_finished(&h);
        }
    }

    fn lock_logins(&self) -> std::sync::MutexGuard<'_, LoginSlots> {
        self.logins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection left the login phase (logged in, failed or closed):
    /// its login slot is free again.
    pub fn login_finished(&self, h: &ConnHandle) {
        if h.in_login.swap(false, Ordering::SeqCst) {
            self.lock_logins().release(h.peer);
        }
    }

    /// Close the connection that has been in login longest (one not
    /// already closing).
    fn evict_oldest_login(&self) {
        let conns = self.lock_conns();
        let oldest = conns
            .values()
            .filter(|h| {
                h.in_login.load(Ordering::SeqCst) && h.stop.load(Ordering::SeqCst) == STOP_NONE
            })
            .min_by_key(|h| h.accepted);
        if let Some(h) = oldest.cloned() {
            drop(conns);
            self.refused(
                h.stream.peer_addr().ok(),
                "closing the oldest connection in login",
            );
            h.kill();
            // Its slot is free now, not when its thread has noticed.
            self.login_finished(&h);
        }
    }

    /// Log a refused or evicted connection, at most one line per 10 s.
    fn refused(&self, peer: Option<SocketAddr>, why: &str) {
        self.login_counts.count(crate::login::LoginEnd::Admission);
        let mut r = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        r.0 += 1;
        let now = Instant::now();
        if now >= r.1 {
            let peer = peer.map(|p| p.to_string()).unwrap_or_default();
            tracing::warn!(%peer, since_last = r.0, "{why} (connection limits)");
            *r = (0, now + Duration::from_secs(10));
        }
    }

    fn push_thread(&self, h: JoinHandle<()>) {
        let mut t = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        // Reap finished threads so the list does not grow without bound.
        let mut i = 0;
        while i < t.len() {
            if t[i].is_finished() {
                let done = t.swap_remove(i);
                let _ = done.join();
            } else {
                i += 1;
            }
        }
        t.push(h);
    }
}

/// Give a live session what `live_access` allows under target `t`, or
/// revoke its access; false when it must be logged out.
fn apply_access(t: Option<&TargetConfig>, k: &SessionKey, live: &SessionLive) -> bool {
    match live_access(t, k.tpgt, &k.initiator, live.proved.as_ref()) {
        Ok((table, acl)) => {
            if live.install(table, acl) {
                tracing::info!(initiator = %k.initiator, target = %k.target,
                    "LUN table changed under a live session");
            }
            true
        }
        Err(why) => {
            if live.revoke() {
                tracing::warn!(initiator = %k.initiator, target = %k.target, reason = why,
                    "live session lost its access");
            }
            false
        }
    }
}

/// Bind and start the accept thread of one portal.
pub fn listen(shared: &Arc<Shared>, addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    // SAFETY: listen(2) again on a socket we own and that is listening
    // only resizes its backlog (std listens with a backlog of 128).
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let local = listener.local_addr()?;
    let accept_side = listener.try_clone()?;
    let sh = Arc::clone(shared);
    let h = std::thread::Builder::new()
        .name(format!("iscsi-listen-{}", local.port()))
        .spawn(move || accept_loop(sh, accept_side))?;
    shared
        .listeners
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Listener {
            asked: addr,
            bound: local,
            socket: listener,
            thread: h,
        });
    tracing::info!(%local, "iSCSI portal listening");
    Ok(local)
}

/// Wake the accept thread of `l` and wait for it to end.
fn close_listener(l: Listener) {
    // SAFETY: shutdown(2) on a listening socket we own wakes the thread
    // blocked in accept(2) on its clone; the fd stays valid until
    // `l.socket` is dropped at the end of this function.
    unsafe {
        libc::shutdown(l.socket.as_raw_fd(), libc::SHUT_RDWR);
    }
    let _ = l.thread.join();
}

/// Close the listener of one portal; established connections continue.
pub fn stop_listening(shared: &Arc<Shared>, addr: SocketAddr) -> bool {
    let found = {
        let mut ls = shared.listeners.lock().unwrap_or_else(|e| e.into_inner());
        ls.iter()
            .position(|l| l.asked == addr || l.bound == addr)
            .map(|i| ls.swap_remove(i))
    };
    match found {
        Some(l) => {
            tracing::info!(local = %l.bound, "iSCSI portal closed");
            close_listener(l);
            true
        }
        None => false,
    }
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                // EINVAL: our socket was shut down (stop_listening).
                if shared.stopping.load(Ordering::SeqCst) || e.kind() == io::ErrorKind::InvalidInput
                {
                    return;
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::warn!(error = %e, "accept failed");
                // EMFILE and friends: back off instead of spinning.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if let Err(e) = spawn_conn(&shared, stream, peer) {
            tracing::warn!(error = %e, %peer, "could not start a connection thread");
        }
    }
}

/// Start the thread of a new connection, within the limits of
/// `admission` (a connection beyond them is closed at once).
fn spawn_conn(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    if shared.lock_conns().len() >= MAX_CONNECTIONS {
        shared.refused(Some(peer), "too many connections, refusing");
        return Ok(());
    }
    let key = peer_key(peer.ip());
    let admit = shared.lock_logins().admit(key);
    match admit {
        Admit::PeerFull => {
            shared.refused(
                Some(peer),
                "too many connections in login from this peer, refusing",
            );
            return Ok(());
        }
        Admit::EvictOldest => shared.evict_oldest_login(),
        Admit::Yes => {}
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let clone = stream.try_clone();
    let handle = Arc::new(ConnHandle {
        id,
        stream: match clone {
            Ok(s) => s,
            Err(e) => {
                shared.lock_logins().release(key);
                return Err(e);
            }
        },
        stop: AtomicU8::new(STOP_NONE),
        peer: key,
        accepted: Instant::now(),
        in_login: AtomicBool::new(true),
    });
    // From here on the connection's login slot is released with it.
    shared.lock_conns().insert(id, Arc::clone(&handle));
    if let Err(e) = stream.set_nodelay(true) {
        shared.unregister_conn(id);
        return Err(e);
    }
    let sh = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name(format!("iscsi-conn-{id}"))
        .spawn(move || {
            // Unregisters even if the connection code panics.
            struct Guard(Arc<Shared>, u64);
            impl Drop for Guard {
                fn drop(&mut self) {
                    self.0.unregister_conn(self.1);
                }
            }
            let _g = Guard(Arc::clone(&sh), id);
            crate::conn::run(sh, handle, stream, peer);
        });
    match spawned {
        Ok(h) => {
            shared.push_thread(h);
            Ok(())
        }
        Err(e) => {
            shared.unregister_conn(id);
            Err(e)
        }
    }
}

/// Stop listeners, ask every session to log out, close what remains after a
/// grace period and join all threads.
pub fn shutdown(shared: &Arc<Shared>) {
    shared.stopping.store(true, Ordering::SeqCst);
    let listeners: Vec<_> =
        std::mem::take(&mut *shared.listeners.lock().unwrap_or_else(|e| e.into_inner()));
    for l in listeners {
        close_listener(l);
    }
    let conns: Vec<Arc<ConnHandle>> = shared.lock_conns().values().cloned().collect();
    for c in &conns {
        let _ = c
            .stop
            .compare_exchange(STOP_NONE, STOP_LOGOUT, Ordering::SeqCst, Ordering::SeqCst);
    }
    let deadline = Instant::now() + Duration::from_secs(4);
    while Instant::now() < deadline && !shared.lock_conns().is_empty() {
        std::thread::sleep(Duration::from_millis(10));
    }
    for c in shared.lock_conns().values() {
        c.kill();
    }
    let threads: Vec<_> =
        std::mem::take(&mut *shared.threads.lock().unwrap_or_else(|e| e.into_inner()));
    for t in threads {
        let _ = t.join();
    }
    shared.closer.finish();
}
