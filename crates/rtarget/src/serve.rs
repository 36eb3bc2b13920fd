//! `rtarget serve` and `rtarget check`: load the config (or create the demo
//! one), build the runtime objects, start the iSCSI fabric on the portals,
//! open the management API socket, then wait for SIGINT/SIGTERM and shut
//! down cleanly (log sessions out, flush every backstore, remove the socket).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use config::SaveConfig;
use iscsi::IscsiServer;

use crate::cli::{CheckArgs, ServeArgs};
use crate::live::{Live, Settings};
use crate::prefs::Prefs;
use crate::signals::{self, ShutdownSignals};
use crate::{api, demo};

pub fn run(args: &ServeArgs) -> Result<()> {
    crate::panics::install();
    let shutdown = ShutdownSignals::install().context("installing signal handlers")?;
    let (cfg, demo_image) = load_or_create_demo(args)?;
    let pr_dir = std::path::absolute(&args.state_dir)
        .unwrap_or_else(|_| args.state_dir.clone())
        .join("pr");
    let server = IscsiServer::new();
    // --listen replaces the portals: listen first (ports may be 0), then
    // advertise what was actually bound, or SendTargets would send
    // initiators to addresses nobody listens on.
    let mut bound = Vec::new();
    for addr in &args.listen {
        bound.push(listen(&server, *addr)?);
    }
    let settings = Settings {
        config_path: args.config.clone(),
        fixed_portals: (!args.listen.is_empty()).then(|| bound.clone()),
        default_portal: args.default_portal,
        prefs: load_prefs(&args.config),
        pr_dir: Some(pr_dir.clone()),
    };
    // Start-up is a reconcile from the empty running state: the same path
    // as every live change. Every object opens before anything else.
    let live = Arc::new(Live::new(server.clone(), settings));
    let ready = live.prepare(cfg)?;
    let (targets, devices) = (ready.targets.len(), ready.opened.len());
    if let Some(image) = &demo_image {
        // Saved only once the demo could actually be built; never overwrites.
        save_new(&ready.cfg, &args.config)?;
        tracing::info!(config = %args.config.display(), image = %image.display(), "created the demo target");
    }

    // The API socket comes first: with it, a daemon without portals is
    // useful (targets get created through it); without it, it is not.
    let socket = api_socket(args)?;
    if args.listen.is_empty() && ready.plan.listen.is_empty() && socket.is_none() {
        bail!(
            "nothing to listen on: no enabled iSCSI TPG in {} has a portal (add one, or pass --listen ADDR:PORT)",
            args.config.display()
        );
    }
    let (listening, warnings) = live.commit(ready)?;
    if let Some(state_dir) = pr_dir.parent() {
        crate::loopback::reap_orphans(&live.config(), state_dir);
    }
    for w in &warnings {
        tracing::warn!("{w}");
    }
    bound.extend(listening);
    // Before the API line: scripts that wait for it may scrape at once.
    metrics(args, &live)?;
    if let Some(s) = &socket {
        s.serve(live.clone())?;
        eprintln!("rtarget: API on {}", s.path().display());
    }
    // Printed once targets are set: tests and scripts connect right after it.
    for addr in &bound {
        eprintln!("rtarget: listening on {addr}");
    }
    if let Some(image) = &demo_image {
        eprint!("{}", demo::instructions(bound[0], &args.config, image));
    }
    tracing::info!(targets, devices, "ready");
    // systemd (Type=notify): only now do the portals accept connections.
    crate::notify::notify(&format!(
        "READY=1\nSTATUS=serving {targets} target(s), {devices} storage object(s)"
    ));

    let sig = shutdown.wait(|| reload(&live));
    crate::notify::notify("STOPPING=1");
    tracing::info!(signal = signals::name(sig), "shutting down");
    server.shutdown();
    // Threads that panicked did not stop the daemon: say so where the
    // tests look (tests-e2e/lib.sh panics_in), whatever the exit status.
    match crate::panics::count() {
        0 => {}
        n => eprintln!("rtarget: {n} panic(s) while serving (see \"panicked at\" above)"),
    }
    let mut failed = false;
    for d in &live.devices() {
        if let Err(e) = d.backstore.flush() {
            tracing::error!(object = %d.options.name, error = %e, "flush failed");
            failed = true;
        }
    }
    // What the cluster holds for an RBD image (its header watch, the
    // exclusive lock) goes now, not when the OSDs time this process out:
    // the other gateways take over at once. The state itself stays
    // (forgotten below), so nothing else is torn down.
    for d in &live.devices() {
        d.backstore.close();
    }
    if failed {
        bail!("some backstores could not be flushed");
    }
    // The loopback disks stay for the next rtarget (ublk user recovery:
    // a restart is a handover); dropping the running state would delete
    // them (the API thread's clone usually keeps it alive anyway).
    std::mem::forget(live);
    tracing::info!("stopped");
    Ok(())
}

/// The metrics endpoint: `--metrics`, else the global setting (a setting
/// that cannot be served is reported, not fatal: it is a convenience);
/// later `set global metrics=...` moves or stops it live.
fn metrics(args: &ServeArgs, live: &Arc<Live>) -> Result<()> {
    let from_prefs = || live.prefs().metrics.parse::<SocketAddr>().ok();
    if let Some(addr) = args.metrics.or_else(from_prefs) {
        match crate::metrics::switch(Some(addr), live) {
            Ok(Some(bound)) => eprintln!("rtarget: metrics on http://{bound}/metrics"),
            Ok(None) => {}
            Err(e) if args.metrics.is_none() => tracing::warn!("global metrics: {e:#}"),
            Err(e) => return Err(e),
        }
    }
    let weak = Arc::downgrade(live);
    let hook: crate::live::PrefsHook = Box::new(move |old, new| {
        if old.metrics == new.metrics {
            return Ok(());
        }
        let Some(live) = weak.upgrade() else {
            return Ok(());
        };
        let addr = new.metrics.parse::<SocketAddr>().ok();
        if let Some(bound) = crate::metrics::switch(addr, &live)? {
            eprintln!("rtarget: metrics on http://{bound}/metrics");
        }
        Ok(())
    });
    let _ = live.on_prefs.set(hook);
    Ok(())
}

/// SIGHUP (systemd's reload): `restoreconfig` of the config file. The
/// file is parsed and validated, and every object opened, before anything
/// running changes: a bad file changes nothing (it is reported, and the
/// running configuration stays).
fn reload(live: &Live) {
    crate::notify::reloading();
    let path = live.config_path().display().to_string();
    let status = match api::restore(live, None) {
        Ok(out) => {
            for w in &out.warnings {
                tracing::warn!("{w}");
            }
            crate::metrics::RELOADS_OK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(config = %path, "reloaded: {}", out.message);
            format!("reloaded {path}")
        }
        Err(e) => {
            crate::metrics::RELOADS_FAILED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(config = %path, "reload failed, the running configuration is unchanged: {e:#}");
            format!("reload of {path} failed (running configuration unchanged): {e:#}")
        }
    };
    crate::notify::notify(&format!("READY=1\nSTATUS={}", status.replace('\n', " ")));
}

/// Global preferences; a broken file is reported and the defaults used (it
/// holds conveniences, not configuration).
fn load_prefs(config: &Path) -> Prefs {
    let path = Prefs::path_for(config);
    Prefs::load(&path).unwrap_or_else(|e| {
        tracing::warn!("{e:#}; using the default preferences");
        Prefs::default()
    })
}

/// `--socket PATH` must work; the default path is best effort (several
/// daemons on one host, e.g. in tests, must not fail on it).
fn api_socket(args: &ServeArgs) -> Result<Option<api::Socket>> {
    match &args.socket {
        Some(p) => Ok(Some(api::Socket::bind(p)?)),
        None => match api::Socket::bind(Path::new(api::DEFAULT_SOCKET)) {
            Ok(s) => Ok(Some(s)),
            Err(e) => {
                tracing::warn!("management API disabled: {e:#}");
                Ok(None)
            }
        },
    }
}

fn listen(server: &std::sync::Arc<IscsiServer>, addr: SocketAddr) -> Result<SocketAddr> {
    server
        .listen(addr)
        .with_context(|| format!("cannot listen on {addr}"))
}

/// The config from `--config`, or the demo one when that file does not exist
/// (then also the demo image path). A file that exists but does not parse or
/// validate is an error and is left untouched.
fn load_or_create_demo(args: &ServeArgs) -> Result<(SaveConfig, Option<PathBuf>)> {
    let exists = args
        .config
        .try_exists()
        .with_context(|| format!("cannot check {}", args.config.display()))?;
    if exists {
        return Ok((load(&args.config)?, None));
    }
    let state_dir = std::path::absolute(&args.state_dir)
        .with_context(|| format!("bad --state-dir {}", args.state_dir.display()))?;
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create state dir {}", state_dir.display()))?;
    let cfg = demo::config(&state_dir)?;
    let image = state_dir.join(format!("{}.img", demo::DEMO_OBJECT));
    Ok((cfg, Some(image)))
}

fn load(path: &Path) -> Result<SaveConfig> {
    // ConfigError's message carries the path and line:column.
    let (cfg, warnings) = config::load(path)?;
    for w in &warnings {
        tracing::warn!(config = %path.display(), "{w}");
    }
    Ok(cfg)
}

/// Save a config to a path that did not exist when we looked.
fn save_new(cfg: &SaveConfig, path: &Path) -> Result<()> {
    if path.try_exists().unwrap_or(true) {
        bail!(
            "{} appeared while starting; not overwriting it",
            path.display()
        );
    }
    config::save(cfg, path)
        .with_context(|| format!("cannot save the demo config to {}", path.display()))
}

pub fn check(args: &CheckArgs) -> Result<()> {
    let (cfg, warnings) = config::load(&args.config)?;
    for w in &warnings {
        println!("warning: {w}");
    }
    println!(
        "{}: OK ({} storage objects, {} targets, {} warnings)",
        args.config.display(),
        cfg.storage_objects.len(),
        cfg.targets.len(),
        warnings.len()
    );
    Ok(())
}
