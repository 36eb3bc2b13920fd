//! SIGINT/SIGTERM handling (signal-hook): the first signal asks for a clean
//! shutdown; a second one while shutting down exits at once, so a stuck
//! shutdown can always be interrupted.

use std::io;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

pub struct ShutdownSignals {
    signals: Signals,
}

impl ShutdownSignals {
    /// Install the handlers. Call early, so a signal during startup is not fatal.
    pub fn install() -> io::Result<ShutdownSignals> {
        Ok(ShutdownSignals {
            signals: Signals::new([SIGINT, SIGTERM])?,
        })
    }

    /// Block until SIGINT or SIGTERM arrives; returns its number. Later
    /// signals terminate the process immediately with status 128+signal.
    pub fn wait(mut self) -> i32 {
        let sig = self.signals.forever().next().unwrap_or(SIGTERM);
        std::thread::spawn(move || {
            if let Some(again) = self.signals.forever().next() {
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
        _ => "signal",
    }
}
