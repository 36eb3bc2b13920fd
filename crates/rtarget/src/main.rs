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
mod docs;
mod handlers;
mod import;
mod live;
mod logging;
mod loopback;
mod loopback_scsi;
mod metrics;
mod notify;
mod panics;
mod proto;
mod reconcile;
mod serve;
mod shell;
mod signals;
mod top;
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
    logging::init();
    // Objects of every registered handler are valid in saveconfig.json.
    config::set_user_handlers(handlers::registry().names());
    let result = match cli.command {
        cli::Command::Serve(args) => serve::run(&args),
        cli::Command::Check(args) => serve::check(&args),
        cli::Command::ImportTgt(args) => import::run(&args),
        cli::Command::Completions { shell } => docs::completions(shell, &mut std::io::stdout()),
        cli::Command::Man => docs::man(&mut std::io::stdout()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtarget: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `serve`, `check`, `import-tgt`, `completions`, `man`, and clap's own `--help`/`--version` (the client has
/// its own `help` verb).
fn is_daemon_command(args: &[String]) -> bool {
    matches!(
        args.first().map(String::as_str),
        Some(
            "serve"
                | "check"
                | "import-tgt"
                | "completions"
                | "man"
                | "--help"
                | "-h"
                | "--version"
                | "-V"
        )
    )
}
