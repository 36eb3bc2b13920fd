//! The management client: turns targetcli-style command lines
//! (`[PATH] VERB [ARGS...]`) into API requests, sends them over the unix
//! socket and prints the answers (text, or the raw JSON with `--json`).
//! Shared by the one-shot CLI and the interactive shell ([`crate::shell`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

use crate::api::DEFAULT_SOCKET;
use crate::proto::{Request, Size};
use crate::tree::normalize;

mod render;
pub use render::print;

/// Verbs the client understands (completion and help list them).
pub const VERBS: &[&str] = &[
    "bookmarks",
    "cd",
    "clearconfig",
    "create",
    "delete",
    "disable",
    "enable",
    "exit",
    "get",
    "help",
    "info",
    "ls",
    "pwd",
    "resize",
    "restoreconfig",
    "saveconfig",
    "sessions",
    "set",
    "status",
    "top",
];

/// One connection to the daemon.
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: PathBuf,
}

impl Conn {
    pub fn open(path: &Path) -> Result<Conn> {
        let s = UnixStream::connect(path).with_context(|| {
            format!(
                "cannot reach the rtarget daemon at {} (is `rtarget serve` running? use --socket PATH)",
                path.display()
            )
        })?;
        Ok(Conn {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
            path: path.to_path_buf(),
        })
    }

    /// Send one request, read one response line (decoded by [`print`]).
    pub fn call(&mut self, req: &Request) -> Result<Value> {
        let mut line = serde_json::to_string(req)?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .with_context(|| format!("lost the connection to {}", self.path.display()))?;
        let mut resp = String::new();
        let n = self.reader.read_line(&mut resp)?;
        if n == 0 {
            bail!("the daemon closed the connection");
        }
        serde_json::from_str(&resp).map_err(|e| anyhow!("bad response from the daemon: {e}"))
    }
}

/// How to show a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Ls,
    Info,
    Status,
    Message,
    Values,
    Sessions,
    SessionsDetail,
}

/// What a command line asks for.
#[derive(Debug, PartialEq)]
pub enum Action {
    Nothing,
    Request(Request, Show),
    Cd(String),
    Pwd,
    /// `bookmarks ...` at a path.
    Bookmarks(String, Vec<String>),
    Help,
    Exit,
    /// `top [--json] [INTERVAL] [COUNT]` ([`crate::top`]).
    Top(std::time::Duration, Option<u64>, bool),
    /// `WORD VERB` where VERB is not a command: WORD was taken as a path
    /// (`path`, resolved); whether it exists decides which word is wrong
    /// ([`unknown_verb`]).
    UnknownVerb {
        word: String,
        path: String,
        verb: String,
    },
}

/// Parse one command line (already split into words) run at `cwd`.
pub fn parse(cwd: &str, words: &[String], width: usize) -> Result<Action> {
    let Some(first) = words.first() else {
        return Ok(Action::Nothing);
    };
    let (path, rest) = if VERBS.contains(&first.as_str()) {
        (cwd.to_string(), words)
    } else {
        (normalize(cwd, first), &words[1..])
    };
    let Some((verb, params)) = rest.split_first() else {
        // A bare path moves there (targetcli does the same).
        return Ok(Action::Cd(path));
    };
    let width = Some(width as u64);
    Ok(match verb.as_str() {
        "ls" => ls(path, params, width)?,
        "cd" => match params {
            [] => Action::Cd("/".into()),
            [p] => Action::Cd(normalize(&path, p)),
            _ => bail!("cd takes one path (e.g. `cd /iscsi`, `cd ..`)"),
        },
        "pwd" => Action::Pwd,
        "bookmarks" => Action::Bookmarks(path.clone(), params.to_vec()),
        "info" if params.is_empty() => Action::Request(Request::Info { path }, Show::Info),
        "status" if params.is_empty() => Action::Request(
            Request::Ls {
                path,
                depth: Some(0),
                width,
            },
            Show::Status,
        ),
        "help" => Action::Help,
        "top" => top_args(params)?,
        "exit" => Action::Exit,
        "create" | "delete" => {
            let argv = absolutize_backing(&path, verb, params)?;
            let args = Map::new();
            let req = if verb == "create" {
                Request::Create { path, argv, args }
            } else {
                Request::Delete { path, argv, args }
            };
            Action::Request(req, Show::Message)
        }
        "set" | "get" => {
            let Some((group, rest)) = params.split_first() else {
                bail!("{verb} needs a group: attribute, parameter, auth, discovery_auth, alua or global (e.g. `{verb} attribute`)");
            };
            let (group, argv) = (group.clone(), rest.to_vec());
            if verb == "get" {
                let names = Vec::new();
                let get = Request::Get {
                    path,
                    group,
                    names,
                    argv,
                };
                Action::Request(get, Show::Values)
            } else {
                let values = Map::new();
                let set = Request::Set {
                    path,
                    group,
                    values,
                    argv,
                };
                Action::Request(set, Show::Message)
            }
        }
        "saveconfig" => Action::Request(
            Request::Saveconfig {
                file: savefile(verb, params)?,
            },
            Show::Message,
        ),
        "restoreconfig" => Action::Request(
            Request::Restoreconfig {
                file: savefile(verb, params)?,
            },
            Show::Message,
        ),
        "clearconfig" => {
            let confirm = match params {
                [] => false,
                [c] => crate::args::parse_bool("confirm", c.strip_prefix("confirm=").unwrap_or(c))?,
                _ => bail!("clearconfig takes confirm=true (e.g. `clearconfig confirm=true`)"),
            };
            Action::Request(Request::Clearconfig { confirm }, Show::Message)
        }
        "enable" if params.is_empty() => Action::Request(Request::Enable { path }, Show::Message),
        "disable" if params.is_empty() => Action::Request(Request::Disable { path }, Show::Message),
        "resize" => {
            let size = match params {
                [] => None,
                [s] => Some(Size::Text(s.strip_prefix("size=").unwrap_or(s).to_string())),
                _ => bail!("resize takes [SIZE] (e.g. 2G, or +1G to add)"),
            };
            let argv = Vec::new();
            Action::Request(Request::Resize { path, size, argv }, Show::Message)
        }
        "sessions" => match params {
            [] => Action::Request(Request::Sessions { detail: false }, Show::Sessions),
            [d] if d == "detail" => {
                Action::Request(Request::Sessions { detail: true }, Show::SessionsDetail)
            }
            _ => bail!("sessions takes no argument or 'detail' (e.g. `sessions detail`)"),
        },
        other if !VERBS.contains(&first.as_str()) => Action::UnknownVerb {
            word: first.clone(),
            path,
            verb: other.to_string(),
        },
        other => bail!("unknown command {other:?} (commands: {})", VERBS.join(", ")),
    })
}

/// The error for [`Action::UnknownVerb`]: the first word is the wrong one
/// when no such path exists (`bogus command`), else the second
/// (`/iscsi frobnicate`).
pub fn unknown_verb(word: &str, path: &str, verb: &str, path_exists: bool) -> String {
    let commands = VERBS.join(", ");
    if path_exists {
        format!("unknown command {verb:?} after the path {path} (commands: {commands}; e.g. `{word} ls`)")
    } else {
        format!(
            "{word:?} is neither a command nor a path ({path} does not exist); commands: {commands}; \
             e.g. `ls`, `/backstores/fileio create disk1 /var/lib/rtarget/disk1.img 1G`"
        )
    }
}

/// `top [--json] [INTERVAL] [COUNT]` (or `interval=S count=N`): seconds,
/// 1 by default; `--json`: one JSON line per frame.
fn top_args(params: &[String]) -> Result<Action> {
    let usage = "top takes [--json] [INTERVAL] [COUNT] (e.g. `top 1` or `top --json 0.5 10`)";
    let json = params.iter().any(|p| p == "--json");
    let params: Vec<String> = params.iter().filter(|p| *p != "--json").cloned().collect();
    if params.len() > 2 {
        bail!("{usage}");
    }
    let get = |i: usize, key: &str| {
        params
            .get(i)
            .map(|p| p.strip_prefix(key).unwrap_or(p).to_string())
    };
    let interval = match get(0, "interval=") {
        None => 1.0,
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|s| (0.1..=3600.0).contains(s))
            .ok_or_else(|| anyhow!("interval {s:?} is not 0.1 to 3600 seconds; {usage}"))?,
    };
    let count = match get(1, "count=") {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| anyhow!("count {s:?} is not a number; {usage}"))?,
        ),
    };
    Ok(Action::Top(
        std::time::Duration::from_secs_f64(interval),
        count,
        json,
    ))
}

/// `ls [PATH] [DEPTH]` (or `depth=N`) at `path`.
fn ls(path: String, params: &[String], width: Option<u64>) -> Result<Action> {
    let mut target = path.clone();
    let mut depth: Option<u64> = None;
    for p in params {
        if let Some(d) = p.strip_prefix("depth=") {
            depth = Some(
                d.parse()
                    .map_err(|_| anyhow!("depth {d:?} is not a number (e.g. `ls / 2`)"))?,
            );
        } else if let Ok(d) = p.parse::<u64>() {
            depth = Some(d);
        } else if p.contains('=') {
            bail!("ls takes [PATH] [DEPTH] (e.g. `ls /iscsi 2`)");
        } else {
            target = normalize(&path, p);
        }
    }
    let ls = Request::Ls {
        path: target,
        depth,
        width,
    };
    Ok(Action::Request(ls, Show::Ls))
}

/// `saveconfig` / `restoreconfig`'s optional `[savefile=]FILE`, made
/// absolute against the client's directory.
fn savefile(verb: &str, params: &[String]) -> Result<Option<String>> {
    match params {
        [] => Ok(None),
        [f] => Ok(Some(absolute(f.strip_prefix("savefile=").unwrap_or(f))?)),
        _ => bail!("{verb} takes [savefile] (e.g. `{verb} /root/backup.json`)"),
    }
}

/// Backing files are named relative to the client's directory, as in
/// targetcli; the daemon needs absolute paths.
fn absolutize_backing(path: &str, verb: &str, params: &[String]) -> Result<Vec<String>> {
    let backing = verb == "create" && (path == "/backstores/fileio" || path == "/backstores/block");
    let qcow = verb == "create" && path == "/backstores/user:qcow";
    let mut positional = 0;
    params
        .iter()
        .map(|p| {
            if !backing && !qcow {
                return Ok(p.clone());
            }
            if let Some((k, v)) = p.split_once('=') {
                if matches!(k, "file_or_dev" | "dev" | "cfgstring") {
                    return Ok(format!("{k}={}", absolute(v)?));
                }
                return Ok(p.clone());
            }
            positional += 1;
            // user:qcow: `NAME SIZE IMAGE`, or `NAME IMAGE` for an
            // existing one (see manage::ops_backstore).
            let image = match positional {
                2 => !qcow || crate::args::parse_size(p).is_err(),
                3 => qcow,
                _ => false,
            };
            if image {
                absolute(p)
            } else {
                Ok(p.clone())
            }
        })
        .collect()
}

fn absolute(p: &str) -> Result<String> {
    Ok(std::path::absolute(p)
        .with_context(|| format!("bad path {p:?}"))?
        .to_string_lossy()
        .into_owned())
}

pub const HELP: &str = "\
rtarget management (targetcli-style). Commands, at the current path or at PATH:
  [PATH] ls [PATH] [DEPTH]           show the object tree
  [PATH] create ARGS...              create a child (positional or key=value)
  [PATH] delete ARGS...              delete a child, or PATH itself without ARGS
  [PATH] set attribute|parameter|auth|discovery_auth|global NAME=VALUE...
  [PATH] get attribute|parameter|auth|discovery_auth|global [NAME...]
  [PATH] enable|disable              switch a TPG on or off
  [PATH] resize [SIZE|+SIZE]         grow a backstore online (fileio, block, ramdisk,
                                     user:qcow); initiators see the new capacity
  [PATH] info | status               saved settings | one-line summary
  saveconfig [FILE]                  save now (changes are saved automatically)
  restoreconfig [FILE]               replace the live configuration with FILE
  clearconfig confirm=true           delete everything
  sessions [detail]                  list logged-in initiators (detail: connections,
                                     negotiated parameters, per-LUN I/O counters)
  top [--json] [INTERVAL] [COUNT]    live IOPS, MiB/s, latency and queue depth per
                                     storage object (like iostat)
  bookmarks add|del|go NAME | show   named paths; @NAME works as a path
  cd PATH, pwd, help, exit           (shell)
Examples:
  /backstores/fileio create disk1 /var/lib/d.img 1G
  /iscsi create iqn.2026-11.org.example:t1
  /iscsi/iqn.2026-11.org.example:t1/tpg1/luns create /backstores/fileio/disk1
  /iscsi/iqn.2026-11.org.example:t1/tpg1 set attribute generate_node_acls=1
Options: --socket PATH (default /run/rtarget/rtarget.sock), --json.
Daemon: rtarget serve --help";

/// Columns for `ls`: the terminal's, else 80.
pub fn width() -> usize {
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; failure leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if r == 0 && ws.ws_col >= 40 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

/// `rtarget [--socket PATH] [--json] [PATH] VERB [ARGS...]`, or the shell.
pub fn main(argv: &[String]) -> ExitCode {
    let mut socket = PathBuf::from(DEFAULT_SOCKET);
    let mut as_json = false;
    let mut i = 0;
    while i < argv.len() {
        match argv[i].as_str() {
            "--json" => as_json = true,
            "--socket" => {
                let Some(p) = argv.get(i + 1) else {
                    eprintln!("rtarget: error: --socket needs a PATH (e.g. --socket /run/rtarget/rtarget.sock)");
                    return ExitCode::from(2);
                };
                socket = PathBuf::from(p);
                i += 1;
            }
            s if s.starts_with("--socket=") => socket = PathBuf::from(&s["--socket=".len()..]),
            s if s.starts_with("--") => {
                eprintln!("rtarget: error: unknown option {s}: the options are --socket PATH and --json (e.g. `rtarget --json ls`; rtarget help lists the commands)");
                return ExitCode::from(2);
            }
            _ => break,
        }
        i += 1;
    }
    let words = &argv[i..];
    if words.is_empty() {
        return crate::shell::run(&socket, as_json);
    }
    match one_shot(&socket, words, as_json) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rtarget: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn one_shot(socket: &Path, words: &[String], as_json: bool) -> Result<bool> {
    let mut words = words.to_vec();
    let mut marks = crate::bookmarks::Bookmarks::load();
    marks.expand(&mut words)?;
    let action = parse("/", &words, width())?;
    let (req, show) = match action {
        Action::Request(r, s) => (r, s),
        Action::Help => {
            println!("{HELP}");
            return Ok(true);
        }
        // One-shot: a bare path lists it.
        Action::Cd(path) => {
            let width = Some(width() as u64);
            let ls = Request::Ls {
                path,
                depth: None,
                width,
            };
            (ls, Show::Ls)
        }
        Action::Pwd => {
            println!("/");
            return Ok(true);
        }
        Action::Bookmarks(path, args) => {
            match marks.run(&path, &args)? {
                crate::bookmarks::Outcome::Print(s) | crate::bookmarks::Outcome::Go(s) => {
                    println!("{s}")
                }
            }
            return Ok(true);
        }
        Action::Nothing | Action::Exit => return Ok(true),
        Action::Top(interval, count, json) => {
            return crate::top::run(socket, interval, count, json)
        }
        Action::UnknownVerb { word, path, verb } => {
            let exists = Conn::open(socket)
                .and_then(|mut c| {
                    c.call(&Request::Ls {
                        path: path.clone(),
                        depth: Some(0),
                        width: None,
                    })
                })
                .is_ok_and(|v| v["ok"] == Value::Bool(true));
            bail!("{}", unknown_verb(&word, &path, &verb, exists));
        }
    };
    let resp = Conn::open(socket)?.call(&req)?;
    Ok(print(&resp, show, as_json))
}

/// Split a shell line into words: whitespace separates, quotes group, `#`
/// starts a comment.
pub fn split_words(line: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => cur.extend(chars.next()),
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unterminated quote (e.g. `create d1 \"/path with spaces/d.img\" 1G`)");
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn w(s: &str) -> Vec<String> {
        split_words(s).unwrap()
    }

    /// The request line a command sends (at `cwd`), as JSON, and how its
    /// answer is shown.
    fn sent(cwd: &str, line: &str) -> (Value, Show) {
        match parse(cwd, &w(line), 80).unwrap() {
            Action::Request(r, show) => (serde_json::to_value(&r).unwrap(), show),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn command_lines_become_requests() {
        assert_eq!(
            sent("/", "/backstores/fileio create d1 /x.img 1G"),
            (
                json!({"op": "create", "path": "/backstores/fileio", "argv": ["d1", "/x.img", "1G"]}),
                Show::Message
            )
        );
        let Action::Request(r, Show::Ls) = parse("/iscsi", &w("ls .. 2"), 100).unwrap() else {
            panic!()
        };
        assert_eq!(
            r,
            Request::Ls {
                path: "/".into(),
                depth: Some(2),
                width: Some(100)
            }
        );
        let (r, _) = sent("/iscsi/x/tpg1", "set attribute a=1 b=2");
        assert_eq!(r["group"], "attribute");
        assert_eq!(r["argv"], json!(["a=1", "b=2"]));
        // Every verb that asks the daemon sends the op docs/api.md names.
        for (line, want) in [
            (
                "get attribute a",
                json!({"op": "get", "path": "/", "group": "attribute", "argv": ["a"]}),
            ),
            ("info", json!({"op": "info", "path": "/"})),
            (
                "status",
                json!({"op": "ls", "path": "/", "depth": 0, "width": 80}),
            ),
            (
                "/iscsi/x/tpg1 enable",
                json!({"op": "enable", "path": "/iscsi/x/tpg1"}),
            ),
            (
                "/iscsi/x/tpg1 disable",
                json!({"op": "disable", "path": "/iscsi/x/tpg1"}),
            ),
            (
                "/backstores/ramdisk/r resize size=+1G",
                json!({"op": "resize", "path": "/backstores/ramdisk/r", "size": "+1G"}),
            ),
            ("saveconfig", json!({"op": "saveconfig"})),
            (
                "restoreconfig /x.json",
                json!({"op": "restoreconfig", "file": "/x.json"}),
            ),
            (
                "clearconfig confirm=yes",
                json!({"op": "clearconfig", "confirm": true}),
            ),
            ("sessions", json!({"op": "sessions"})),
            ("sessions detail", json!({"op": "sessions", "detail": true})),
            (
                "/iscsi delete iqn.x",
                json!({"op": "delete", "path": "/iscsi", "argv": ["iqn.x"]}),
            ),
        ] {
            assert_eq!(sent("/", line).0, want, "{line}");
        }
        assert!(parse("/", &w("clearconfig confirm=maybe"), 80).is_err());
        assert_eq!(
            parse("/iscsi", &w("x/tpg1"), 80).unwrap(),
            Action::Cd("/iscsi/x/tpg1".into())
        );
        assert_eq!(
            parse("/iscsi", &w("cd"), 80).unwrap(),
            Action::Cd("/".into())
        );
        assert_eq!(
            parse("/", &w("/iscsi frobnicate"), 80).unwrap(),
            Action::UnknownVerb {
                word: "/iscsi".into(),
                path: "/iscsi".into(),
                verb: "frobnicate".into()
            }
        );
        assert!(parse("/", &w("ls frobnicate x"), 80).is_ok());
        assert!(
            parse("/", &w("frobnicate"), 80).is_ok_and(|a| a == Action::Cd("/frobnicate".into()))
        );
        assert!(parse("/", &w("get"), 80).is_err());
    }

    #[test]
    fn backing_files_become_absolute() {
        let cwd = std::env::current_dir().unwrap();
        let (r, _) = sent("/backstores/fileio", "create d1 rel.img 1G");
        assert_eq!(r["argv"][1], json!(cwd.join("rel.img").to_string_lossy()));
        let (r, _) = sent("/", "/backstores/fileio create name=d1 file_or_dev=r.img");
        assert_eq!(
            r["argv"][1],
            json!(format!("file_or_dev={}", cwd.join("r.img").display()))
        );
        let (r, _) = sent("/", "/iscsi/x/tpg1/luns create lun0");
        assert_eq!(r["argv"][0], "lun0");
    }

    #[test]
    fn words_split_like_a_shell() {
        assert_eq!(
            w("create  a 'b c' \"d\\\"e\" # comment"),
            ["create", "a", "b c", "d\"e"]
        );
        assert!(split_words("a 'b").is_err());
        assert!(w("   ").is_empty());
    }
}
