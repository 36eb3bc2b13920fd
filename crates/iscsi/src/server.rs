//! Server-wide state: the target table, listener threads, the registry of
//! live connections and sessions (for TSIH assignment, session
//! reinstatement and shutdown), and thread bookkeeping.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::TargetConfig;

/// No stop requested.
pub const STOP_NONE: u8 = 0;
/// Ask the initiator to log out (Async Message), then close.
pub const STOP_LOGOUT: u8 = 1;
/// Close now (reinstatement, cold reset, forced shutdown).
pub const STOP_KILL: u8 = 2;

/// What the server keeps about one connection thread.
pub struct ConnHandle {
    pub id: u64,
    pub stream: TcpStream,
    pub stop: AtomicU8,
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

struct SessionEntry {
    tsih: u16,
    conn_id: u64,
    peer: SocketAddr,
}

pub struct Shared {
    pub targets: RwLock<BTreeMap<String, Arc<TargetConfig>>>,
    pub stopping: AtomicBool,
    conns: Mutex<HashMap<u64, Arc<ConnHandle>>>,
    sessions: Mutex<HashMap<SessionKey, SessionEntry>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    listeners: Mutex<Vec<(TcpListener, JoinHandle<()>)>>,
    next_id: AtomicU64,
    next_tsih: Mutex<u16>,
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
            threads: Mutex::new(Vec::new()),
            listeners: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            next_tsih: Mutex::new(0),
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
        let mut m = self.targets.write().unwrap_or_else(|e| e.into_inner());
        m.insert(t.iqn.clone(), Arc::new(t));
    }

    fn lock_conns(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnHandle>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, SessionEntry>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register a session that finished login on `conn_id`; returns its
    /// TSIH. An existing session with the same key is reinstated: its
    /// connection is closed and we wait (bounded) for it to clean up.
    pub fn register_session(&self, key: SessionKey, conn_id: u64, peer: SocketAddr) -> u16 {
        let old = self.lock_sessions().get(&key).map(|e| e.conn_id);
        if let Some(old_conn) = old {
            tracing::info!(initiator = %key.initiator, target = %key.target,
                "session reinstatement: closing the old session");
            let h = self.lock_conns().get(&old_conn).cloned();
            if let Some(h) = h {
                h.kill();
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline && self.lock_conns().contains_key(&old_conn) {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        let tsih = self.alloc_tsih();
        self.lock_sessions().insert(
            key,
            SessionEntry {
                tsih,
                conn_id,
                peer,
            },
        );
        tsih
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
            })
            .collect();
        v.sort_by(|a, b| (&a.target, a.tsih).cmp(&(&b.target, b.tsih)));
        v
    }

    /// Close every session of `iqn` except the one on connection `keep`.
    pub fn close_target_sessions(&self, iqn: &str, keep: u64) {
        let victims: Vec<u64> = self
            .lock_sessions()
            .iter()
            .filter(|(k, e)| k.target == iqn && e.conn_id != keep)
            .map(|(_, e)| e.conn_id)
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
        self.close_target_sessions(iqn, u64::MAX);
        removed
    }

    pub fn unregister_session(&self, key: &SessionKey, conn_id: u64) {
        let mut s = self.lock_sessions();
        if s.get(key).is_some_and(|e| e.conn_id == conn_id) {
            s.remove(key);
        }
    }

    fn unregister_conn(&self, id: u64) {
        self.lock_conns().remove(&id);
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

/// Bind and start the accept thread of one portal.
pub fn listen(shared: &Arc<Shared>, addr: SocketAddr) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
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
        .push((listener, h));
    tracing::info!(%local, "iSCSI portal listening");
    Ok(local)
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(s) => s,
            Err(e) => {
                if shared.stopping.load(Ordering::SeqCst) {
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

/// Most simultaneous connections (each is a thread); beyond this new
/// connections are closed at once so a flood cannot exhaust the process.
const MAX_CONNECTIONS: usize = 4096;

fn spawn_conn(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
    if shared.lock_conns().len() >= MAX_CONNECTIONS {
        tracing::warn!(%peer, "too many connections, refusing");
        return Ok(());
    }
    stream.set_nodelay(true)?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let handle = Arc::new(ConnHandle {
        id,
        stream: stream.try_clone()?,
        stop: AtomicU8::new(STOP_NONE),
    });
    shared.lock_conns().insert(id, Arc::clone(&handle));
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
    for (l, h) in listeners {
        // SAFETY: shutdown(2) on a listening socket we own wakes the thread
        // blocked in accept(2) on its clone; the fd stays valid until `l`
        // is dropped below.
        unsafe {
            libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR);
        }
        let _ = h.join();
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
}
