//! The vhost-user socket of one target: bind it (mode 0600), wait for a
//! guest, run it until it disconnects, wait for the next. One guest at a
//! time (vhost-user is point to point). Stopping closes the guest's
//! connection and joins every thread.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use target_core::LunTable;
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::backend::{completion_token, event_kick_token, ScsiBackend};
use crate::{TargetShared, VhostConfig};

/// A running vhost target.
pub struct VhostServer {
    shared: Arc<TargetShared>,
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

struct Stop {
    flag: AtomicBool,
    fd: EventFd,
    conn: Mutex<Option<ShutdownHandle>>,
}

impl VhostServer {
    /// Bind the socket and start waiting for a guest.
    pub fn start(config: VhostConfig, luns: LunTable) -> io::Result<VhostServer> {
        if let Some(dir) = config.socket.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // A socket left by a killed daemon would make bind fail.
        if std::fs::symlink_metadata(&config.socket).is_ok() {
            std::fs::remove_file(&config.socket)?;
        }
        let listener = UnixListener::bind(&config.socket)?;
        std::fs::set_permissions(&config.socket, std::fs::Permissions::from_mode(0o600))?;
        let shared = TargetShared::new(config, luns)?;
        let stop = Arc::new(Stop {
            flag: AtomicBool::new(false),
            fd: EventFd::new(EFD_NONBLOCK)?,
            conn: Mutex::new(None),
        });
        let (s, st) = (Arc::clone(&shared), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name(format!("vhost {}", shared.config.wwn))
            .spawn(move || accept_loop(&s, &st, listener))?;
        tracing::info!(wwn = %shared.config.wwn, socket = %shared.config.socket.display(),
            "vhost target listening");
        Ok(VhostServer {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    pub fn shared(&self) -> &Arc<TargetShared> {
        &self.shared
    }

    /// Whether a guest is attached now.
    pub fn connected(&self) -> bool {
        self.shared.guest().is_some()
    }

    /// Close the guest's connection (if any), stop listening, join.
    pub fn stop(&mut self) {
        self.stop.flag.store(true, Ordering::Release);
        let _ = self.stop.fd.write(1);
        if let Some(h) = self.stop.conn.lock().unwrap().as_ref() {
            h.shutdown();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.shared.config.socket);
    }
}

impl Drop for VhostServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait until the listener is readable (true) or stop was asked (false).
fn wait_for_guest(listener: &UnixListener, stop: &Stop) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        if stop.flag.load(Ordering::Acquire) {
            return false;
        }
        // SAFETY: `fds` is a valid array of two pollfd for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
        if fds[1].revents != 0 || stop.flag.load(Ordering::Acquire) {
            return false;
        }
        if fds[0].revents != 0 {
            return true;
        }
    }
}

fn accept_loop(shared: &Arc<TargetShared>, stop: &Stop, listener: UnixListener) {
    while wait_for_guest(&listener, stop) {
        if let Err(e) = serve_one(shared, stop, &listener) {
            tracing::warn!(wwn = %shared.config.wwn, error = %e, "vhost guest connection failed");
        }
    }
}

/// One guest: from accept to disconnect.
fn serve_one(shared: &Arc<TargetShared>, stop: &Stop, listener: &UnixListener) -> io::Result<()> {
    let nexus = shared.new_nexus();
    let backend = Arc::new(ScsiBackend::new(
        Arc::clone(shared),
        Arc::clone(&nexus),
        shared.config.request_queues,
        shared.config.workers,
    ));
    let num_queues = vhost_user_backend::VhostUserBackend::num_queues(&backend);
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let mut daemon =
        VhostUserDaemon::new(format!("vhost-scsi {}", shared.config.wwn), backend, mem)
            .map_err(|e| io::Error::other(e.to_string()))?;
    // Management's event kick wakes thread 0 (control + event queues).
    daemon.get_epoll_handlers()[0].register_listener(
        shared.kick_fd().as_raw_fd(),
        EventSet::IN,
        event_kick_token(num_queues),
    )?;
    // The engine's answers wake thread 0 too (its eventfd exists once the
    // first command went to the engine).
    let handler = Arc::clone(&daemon.get_epoll_handlers()[0]);
    nexus.set_waker(Box::new(move |fd| {
        if let Err(e) = handler.register_listener(fd, EventSet::IN, completion_token(num_queues)) {
            tracing::warn!(error = %e, "cannot watch the engine's completions");
        }
    }));
    let mut l = Listener::from(listener.try_clone()?);
    if let Err(e) = daemon.start(&mut l) {
        // Drops the waker, which holds thread 0's handler (and so the nexus).
        nexus.gone(&shared.luns());
        return Err(io::Error::other(e.to_string()));
    }
    shared.clear_events();
    shared.set_guest(Some(Arc::clone(&nexus)));
    *stop.conn.lock().unwrap() = daemon.shutdown_handle();
    if stop.flag.load(Ordering::Acquire) {
        daemon.request_shutdown();
    }
    tracing::info!(wwn = %shared.config.wwn, nexus = nexus.nexus().id, "vhost guest attached");
    let r = daemon.wait();
    *stop.conn.lock().unwrap() = None;
    shared.set_guest(None);
    // Joins the queue threads: no command of this guest runs after this.
    drop(daemon);
    nexus.gone(&shared.luns());
    tracing::info!(wwn = %shared.config.wwn, result = ?r.as_ref().err().map(|e| e.to_string()),
        "vhost guest detached");
    Ok(())
}
