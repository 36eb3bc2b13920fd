//! The command line of the daemon side (clap derive): `rtarget serve` and
//! `rtarget check`. Everything else on the command line is the management
//! client ([`crate::client`]).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// The iSCSI port when an address has none.
pub const DEFAULT_ISCSI_PORT: u16 = 3260;

#[derive(Debug, Parser)]
#[command(
    name = "rtarget",
    version,
    about = "A userspace SCSI target (iSCSI)",
    after_help = "Management: rtarget [--socket PATH] [--json] [PATH] VERB [ARGS...] talks to a running \
                  daemon (rtarget help lists the verbs); rtarget alone opens the interactive shell."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the target daemon. Without a config file, creates a demo target.
    Serve(ServeArgs),
    /// Parse and validate a config file, print its warnings, and exit.
    Check(CheckArgs),
    /// Convert a tgt configuration (tgt-admin's targets.conf) to a
    /// saveconfig.json; what cannot be carried over is listed.
    ImportTgt(ImportTgtArgs),
    /// Print a shell completion script (e.g. `source <(rtarget completions bash)`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `rtarget man | man -l -`).
    Man,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen on ADDR[:PORT] (repeatable). When given, ONLY these addresses
    /// are listened on and advertised, instead of the TPG portals.
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen)]
    pub listen: Vec<SocketAddr>,
    /// saveconfig.json (rtslib-fb schema).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/rtarget/saveconfig.json"
    )]
    pub config: PathBuf,
    /// Where the demo target's backing file lives.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/rtarget")]
    pub state_dir: PathBuf,
    /// The management API's unix socket (mode 0600). Without this option the
    /// default path is tried and the daemon runs without an API if it is taken.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The portal `tpg1` of a target created through the API gets
    /// (targetcli's default portal; rtarget uses loopback by default).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen, default_value = "127.0.0.1:3260")]
    pub default_portal: SocketAddr,
    /// Serve Prometheus metrics on http://ADDR:PORT/metrics (off by
    /// default; e.g. 127.0.0.1:9550).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen_metrics)]
    pub metrics: Option<SocketAddr>,
}

/// `--metrics`: an address with a port (there is no default port to guess).
fn parse_listen_metrics(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s:?} is not ADDR:PORT (e.g. 127.0.0.1:9550)"))
}

#[derive(Debug, Args)]
pub struct ImportTgtArgs {
    /// tgt's configuration (its `include` lines are followed).
    #[arg(value_name = "TARGETS_CONF", default_value = "/etc/tgt/targets.conf")]
    pub file: PathBuf,
    /// Write the saveconfig.json here (default: print it).
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace --output if it exists.
    #[arg(long)]
    pub force: bool,
    /// The portal of every imported target (tgt listens on all addresses).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_listen, default_value = "0.0.0.0:3260")]
    pub portal: SocketAddr,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// saveconfig.json (rtslib-fb schema).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/etc/rtarget/saveconfig.json"
    )]
    pub config: PathBuf,
}

/// `127.0.0.1:3260`, `[::1]:3260`, or a bare address (port 3260).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DEFAULT_ISCSI_PORT))
        .map_err(|_| format!("{s:?} is not ADDR:PORT or ADDR (e.g. 127.0.0.1:3260, [::1]:3260)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("127.0.0.1:13400").unwrap().port(), 13400);
        assert_eq!(parse_listen("127.0.0.1").unwrap().port(), 3260);
        assert_eq!(parse_listen("[::1]").unwrap().port(), 3260);
        assert!(parse_listen("[::1]:0").unwrap().ip().is_ipv6());
        assert!(parse_listen("localhost:1").is_err());
    }

    /// The packaged unit's ExecStart is a valid `serve` command line.
    #[test]
    fn unit_exec_start_parses() {
        let unit = include_str!("../debian/rtarget.service");
        let line = unit
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[0], "/usr/bin/rtarget");
        let cli = Cli::try_parse_from(&words).unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("{line}")
        };
        assert_eq!(a.config, PathBuf::from("/etc/rtarget/saveconfig.json"));
    }

    #[test]
    fn serve_defaults() {
        let cli = Cli::try_parse_from(["rtarget", "serve"]).unwrap();
        let Command::Serve(a) = cli.command else {
            panic!()
        };
        assert!(a.listen.is_empty());
        assert_eq!(a.config, PathBuf::from("/etc/rtarget/saveconfig.json"));
        assert_eq!(a.state_dir, PathBuf::from("/var/lib/rtarget"));
        let cli = Cli::try_parse_from([
            "rtarget",
            "serve",
            "--listen",
            "127.0.0.1:1",
            "--listen",
            "127.0.0.1:2",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!()
        };
        assert_eq!(a.listen.len(), 2);
    }
}
