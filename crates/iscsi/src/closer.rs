//! What a connection thread lets go of (a LUN table or target config it
//! no longer uses) is dropped on a thread of its own: when it was the last
//! holder of a device, the device's drop closes its backstore, and an RBD
//! image's close (librbd: flush, release the exclusive lock, unwatch) can
//! take a second, during which the connection would answer nothing.

use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;

type Parcel = Box<dyn Send>;

/// The dropping thread, started on first use; [`Closer::finish`] waits for
/// what it was given (the daemon's stop closes every device after it).
#[derive(Default)]
pub struct Closer {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tx: Option<Sender<Parcel>>,
    thread: Option<JoinHandle<()>>,
    finished: bool,
}

impl Closer {
    /// Drop `x` on the closer thread (here, once finished or if the thread
    /// cannot start).
    pub fn drop_later<T: Send + 'static>(&self, x: T) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.finished {
            return;
        }
        if s.tx.is_none() {
            let (tx, rx) = channel::<Parcel>();
            let spawned = std::thread::Builder::new()
                .name("iscsi-closer".into())
                .spawn(move || rx.into_iter().for_each(drop));
            let Ok(h) = spawned else { return };
            s.tx = Some(tx);
            s.thread = Some(h);
        }
        let parcel: Parcel = Box::new(x);
        if let Some(Err(back)) = s.tx.as_ref().map(|tx| tx.send(parcel)) {
            drop(s);
            drop(back);
        }
    }

    /// Drop everything given so far and stop the thread; later parcels are
    /// dropped by their caller.
    pub fn finish(&self) {
        let thread = {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.finished = true;
            s.tx = None;
            s.thread.take()
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};

    use super::Closer;

    /// Signals its drop, after waiting at `gate`.
    struct Slow(Arc<Barrier>, Arc<AtomicBool>);

    impl Drop for Slow {
        fn drop(&mut self) {
            self.0.wait();
            self.1.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn drops_elsewhere_and_finish_waits_for_them() {
        let c = Closer::default();
        let (gate, dropped) = (Arc::new(Barrier::new(2)), Arc::new(AtomicBool::new(false)));
        // Returns at once although the drop waits for this thread.
        c.drop_later(Slow(gate.clone(), dropped.clone()));
        assert!(!dropped.load(Ordering::SeqCst));
        gate.wait();
        c.finish();
        assert!(dropped.load(Ordering::SeqCst));
        // After finish: dropped by the caller.
        let late = Arc::new(AtomicBool::new(false));
        c.drop_later(Slow(Arc::new(Barrier::new(1)), late.clone()));
        assert!(late.load(Ordering::SeqCst));
    }
}
