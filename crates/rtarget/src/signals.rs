//! Signal handling (signal-hook): SIGHUP asks for a reload (systemd's
//! `ExecReload`); the first SIGINT/SIGTERM asks for a clean shutdown; a
//! second one while shutting down exits at once, so a stuck shutdown can
//! always be interrupted.

use std::io;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

pub struct ShutdownSignals {
    signals: Signals,
}

impl ShutdownSignals {
    /// Install the handlers. Call early, so a signal during startup is not
    /// fatal (a SIGHUP that early waits until [`ShutdownSignals::wait`]).
    pub fn install() -> io::Result<ShutdownSignals> {
        Ok(ShutdownSignals {
            signals: Signals::new([SIGINT, SIGTERM, SIGHUP])?,
        })
    }

    /// Run `reload` on each SIGHUP until SIGINT or SIGTERM arrives; returns
    /// its number. Later SIGINT/SIGTERM terminate the process immediately
    /// with status 128+signal (SIGHUP is ignored then).
    pub fn wait(mut self, mut reload: impl FnMut()) -> i32 {
        let mut sig = SIGTERM;
        for s in self.signals.forever() {
            if s == SIGHUP {
                reload();
                continue;
            }
            sig = s;
            break;
        }
        std::thread::spawn(move || {
            if let Some(again) = self.signals.forever().find(|s| *s != SIGHUP) {
                eprintln!("rtarget: second signal {again}; exiting without a clean shutdown");
                std::process::exit(128 + again);
            }
        });
        sig
    }
}

pub fn name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        SIGHUP => "SIGHUP",
        _ => "signal",
    }
}
