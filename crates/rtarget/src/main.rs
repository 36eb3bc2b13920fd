//! rtarget: the daemon, its management CLI and shell. `main` only routes:
//! `serve` and `check` (and `--help`/`--version`) go to clap and the daemon
//! side; anything else is the targetcli-style client (`rtarget PATH VERB
//! ARGS`, or the interactive shell when there are no arguments).

mod alua;
mod api;
mod bookmarks;
mod build;
mod build_device;
mod cli;
mod client;
mod demo;
mod handlers;
mod live;
mod panics;
mod proto;
mod reconcile;
mod serve;
mod shell;
mod signals;
mod vhost;

// The configuration edits, the object tree, the verbs' arguments and the
// preferences are the `manage` library's (pure, shared with other front
// ends); named here as they were when they lived in this crate.
use manage::{args, ops, ops_backstore, ops_edit, ops_resize, prefs, tree};

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if !is_daemon_command(&argv[1..]) {
        return client::main(&argv[1..]);
    }
    let cli = cli::Cli::parse();
    init_logging();
    // Objects of every registered handler are valid in saveconfig.json.
    config::set_user_handlers(handlers::registry().names());
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(&args),
        cli::Command::Check(args) => serve::check(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtarget: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `serve`, `check`, and clap's own `--help`/`--version` (the client has
/// its own `help` verb).
fn is_daemon_command(args: &[String]) -> bool {
    matches!(
        args.first().map(String::as_str),
        Some("serve" | "check" | "--help" | "-h" | "--version" | "-V")
    )
}

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
