//! rtarget: the daemon and its command line. `main` only parses the command
//! line, sets up logging and hands over to the subcommand's module.

mod build;
mod cli;
mod demo;
mod serve;
mod signals;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
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
