//! The interactive shell (`rtarget` without arguments): targetcli's
//! commands at a current path, with rustyline line editing, history in
//! `~/.rtarget_history` and tab completion of paths, verbs, groups and
//! attribute names. When stdin is not a terminal it reads commands line by
//! line without prompts (for scripts) and exits non-zero if any failed.

use std::cell::RefCell;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;

use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, Helper};
use serde::Deserialize;
use serde_json::Value;

use crate::bookmarks::{Bookmarks, Outcome};
use crate::client::{self, Action, Conn, Show, HELP, VERBS};
use crate::ops_edit::{acl_attributes, so_attributes, tpg_attributes, tpg_parameters, AUTH};
use crate::proto::{Answer, Listing, Request};
use crate::tree::normalize;

struct Session {
    socket: PathBuf,
    conn: Option<Conn>,
    cwd: String,
    as_json: bool,
    bookmarks: Bookmarks,
}

impl Session {
    /// One request; reconnects once if the daemon restarted meanwhile.
    fn call(&mut self, req: &Request) -> anyhow::Result<Value> {
        if let Some(c) = &mut self.conn {
            if let Ok(v) = c.call(req) {
                return Ok(v);
            }
        }
        let mut c = Conn::open(&self.socket)?;
        let v = c.call(req);
        self.conn = Some(c);
        v
    }

    /// Run one line; false if it failed.
    fn run_line(&mut self, line: &str) -> Result<bool, ()> {
        let parsed = client::split_words(line).and_then(|mut w| {
            self.bookmarks.expand(&mut w)?;
            client::parse(&self.cwd, &w, client::width())
        });
        let action = match parsed {
            Ok(a) => a,
            Err(e) => {
                eprintln!("rtarget: error: {e:#}");
                return Ok(false);
            }
        };
        let action = match action {
            Action::Bookmarks(path, args) => match self.bookmarks.run(&path, &args) {
                Ok(Outcome::Print(s)) => {
                    println!("{s}");
                    return Ok(true);
                }
                Ok(Outcome::Go(p)) => Action::Cd(p),
                Err(e) => {
                    eprintln!("rtarget: error: {e:#}");
                    return Ok(false);
                }
            },
            other => other,
        };
        match action {
            // Already resolved above.
            Action::Nothing | Action::Bookmarks(..) => Ok(true),
            Action::Exit => Err(()),
            Action::Help => {
                println!("{HELP}");
                Ok(true)
            }
            Action::Pwd => {
                println!("{}", self.cwd);
                Ok(true)
            }
            Action::Top(interval, count, json) => {
                match crate::top::run(&self.socket, interval, count, json) {
                    Ok(ok) => Ok(ok),
                    Err(e) => {
                        eprintln!("rtarget: error: {e:#}");
                        Ok(false)
                    }
                }
            }
            Action::UnknownVerb { word, path, verb } => {
                let exists = self
                    .call(&ls(&path, 0))
                    .is_ok_and(|v| v["ok"] == Value::Bool(true));
                eprintln!(
                    "rtarget: error: {}",
                    client::unknown_verb(&word, &path, &verb, exists)
                );
                Ok(false)
            }
            Action::Cd(path) => match self.call(&ls(&path, 0)) {
                Ok(v) if v["ok"] == Value::Bool(true) => {
                    self.cwd = path;
                    Ok(true)
                }
                Ok(v) => Ok(client::print(&v, Show::Ls, false)),
                Err(e) => {
                    eprintln!("rtarget: error: {e:#}");
                    Ok(false)
                }
            },
            Action::Request(req, show) => match self.call(&req) {
                Ok(v) => Ok(client::print(&v, show, self.as_json)),
                Err(e) => {
                    eprintln!("rtarget: error: {e:#}");
                    Ok(false)
                }
            },
        }
    }

    /// Names of the children of `path` (for completion).
    fn children(&mut self, path: &str) -> Vec<String> {
        match self.call(&ls(path, 1)).map(Answer::<Listing>::deserialize) {
            Ok(Ok(Answer::Ok(l))) => l.tree.children.into_iter().map(|c| c.name).collect(),
            _ => Vec::new(),
        }
    }
}

/// `ls` of `path`, `depth` levels deep, for the shell's own use.
fn ls(path: &str, depth: u64) -> Request {
    Request::Ls {
        path: path.to_string(),
        depth: Some(depth),
        width: None,
    }
}

pub fn run(socket: &Path, as_json: bool) -> ExitCode {
    let session = Rc::new(RefCell::new(Session {
        socket: socket.to_path_buf(),
        conn: None,
        cwd: "/".into(),
        as_json,
        bookmarks: Bookmarks::load(),
    }));
    if let Err(e) = session.borrow_mut().call(&Request::Ping) {
        eprintln!("rtarget: error: {e:#}");
        return ExitCode::from(2);
    }
    if !std::io::stdin().is_terminal() {
        return script(&session);
    }
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(true)
        .history_ignore_space(true)
        .build();
    let mut rl = match Editor::<ShellHelper, _>::with_config(config) {
        Ok(rl) => rl,
        Err(e) => {
            eprintln!("rtarget: error: cannot start the line editor: {e}");
            return ExitCode::FAILURE;
        }
    };
    rl.set_helper(Some(ShellHelper {
        session: session.clone(),
    }));
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rtarget_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    println!("rtarget shell. Type help for commands, Tab to complete, exit to leave.");
    loop {
        let prompt = format!("{}> ", session.borrow().cwd);
        match rl.readline(&prompt) {
            Ok(line) => {
                if session.borrow_mut().run_line(&line).is_err() {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("rtarget: error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    ExitCode::SUCCESS
}

fn script(session: &Rc<RefCell<Session>>) -> ExitCode {
    let mut failed = false;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match session.borrow_mut().run_line(&line) {
            Ok(true) => {}
            Ok(false) => failed = true,
            Err(()) => break,
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

struct ShellHelper {
    session: Rc<RefCell<Session>>,
}

impl ShellHelper {
    /// Candidates for the word `word`, which is word number `index` of `before`.
    fn candidates(&self, before: &[String], word: &str) -> Vec<String> {
        let mut s = self.session.borrow_mut();
        let cwd = s.cwd.clone();
        let first_is_path = before.first().is_some_and(|w| !VERBS.contains(&w.as_str()));
        let verb_pos = usize::from(first_is_path);
        let path_verb = before.get(verb_pos).is_some_and(|v| v == "ls" || v == "cd");
        // `storage_object=/backstores/...`: complete the value as a path.
        let (key, word) = match word.split_once('=') {
            Some((k, v)) if v.starts_with('/') => (&word[..=k.len()], v),
            _ => ("", word),
        };
        let path_like = word.contains('/') || word.starts_with('.') || path_verb;
        let mut out = Vec::new();
        if before.len() == verb_pos || path_like {
            // A path: complete its last component against the tree.
            let (dir, partial) = match word.rfind('/') {
                Some(i) => (&word[..=i], &word[i + 1..]),
                None => ("", word),
            };
            let base = normalize(&cwd, if dir.is_empty() { "." } else { dir });
            for c in s.children(&base) {
                if c.starts_with(partial) {
                    out.push(format!("{key}{dir}{c}/"));
                }
            }
            if before.len() == verb_pos && !path_like {
                out.extend(
                    VERBS
                        .iter()
                        .filter(|v| v.starts_with(word))
                        .map(|v| format!("{v} ")),
                );
            }
            return out;
        }
        let verb = before.get(verb_pos).map(String::as_str).unwrap_or("");
        let at = match before.first() {
            Some(p) if first_is_path => normalize(&cwd, p),
            _ => cwd,
        };
        let names: &[&str] = match (verb, before.len() - verb_pos) {
            ("set" | "get", 1) => &[
                "attribute",
                "parameter",
                "auth",
                "discovery_auth",
                "global",
                "alua",
            ],
            ("set" | "get", _) => match before[verb_pos + 1].as_str() {
                "parameter" => tpg_parameters(),
                "global" => crate::prefs::NAMES,
                "auth" => AUTH,
                "discovery_auth" => crate::ops_edit::DISCOVERY_AUTH,
                "alua" if at.contains("/luns/") => manage::alua::LUN_ALUA_PARAMS,
                "alua" => config::alua::ALUA_PARAMS,
                _ if at.starts_with("/backstores/") => so_attributes(),
                _ if at.contains("/acls/") => acl_attributes(),
                _ => tpg_attributes(),
            },
            ("create", _) => create_params(&at),
            _ => &[],
        };
        // Names (not groups) take a value: `set attribute name=`, `create
        // name=`; a complete word (a group, a `get` name) ends with a space.
        let eq = if verb == "create" || (verb == "set" && before.len() - verb_pos >= 2) {
            "="
        } else {
            " "
        };
        out.extend(
            names
                .iter()
                .filter(|n| n.starts_with(word))
                .map(|n| format!("{n}{eq}")),
        );
        out
    }
}

/// targetcli's `create` parameters at a path (for completion).
fn create_params(at: &str) -> &'static [&'static str] {
    let parts: Vec<&str> = at.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        ["backstores", plugin] => crate::ops_backstore::create_params(plugin).0,
        [config::fabric::ISCSI] => &["wwn"],
        [config::fabric::ISCSI, _] => &["tag"],
        [config::fabric::VHOST] => &["wwn", "socket"],
        ["backstores", _, _, "alua"] => &["name", "tag"],
        [.., "luns"] => &["storage_object", "lun", "add_mapped_luns"],
        [.., "portals"] => &["ip_address", "ip_port"],
        [.., "acls"] => &["wwn", "add_mapped_luns"],
        [.., "acls", _] => &["mapped_lun", "tpg_lun_or_backstore", "write_protect"],
        _ => &[],
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let upto = &line[..pos];
        let start = upto.rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
        let before = client::split_words(&upto[..start]).unwrap_or_default();
        let word = &upto[start..];
        let pairs = self
            .candidates(&before, word)
            .into_iter()
            .map(|c| Pair {
                display: c.clone(),
                replacement: c,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}
impl Highlighter for ShellHelper {}
impl Validator for ShellHelper {}
impl Helper for ShellHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn helper(cwd: &str) -> ShellHelper {
        ShellHelper {
            session: Rc::new(RefCell::new(Session {
                socket: PathBuf::from("/nonexistent/rtarget.sock"),
                conn: None,
                cwd: cwd.into(),
                as_json: false,
                bookmarks: Bookmarks::load(),
            })),
        }
    }

    fn words(s: &str) -> Vec<String> {
        client::split_words(s).unwrap()
    }

    #[test]
    fn completes_verbs_groups_names_and_parameters() {
        let h = helper("/iscsi/iqn.2026-11.x:y/tpg1");
        assert_eq!(h.candidates(&[], "sa"), ["saveconfig "]);
        assert_eq!(
            h.candidates(&words("set"), "a"),
            ["attribute ", "auth ", "alua "]
        );
        assert_eq!(h.candidates(&words("set global"), "auto_s"), ["auto_save="]);
        assert_eq!(
            h.candidates(&words("set attribute"), "generate"),
            ["generate_node_acls="]
        );
        assert_eq!(
            h.candidates(&words("get parameter"), "Immediate"),
            ["ImmediateData "]
        );
        assert_eq!(
            h.candidates(&words("luns create"), "stor"),
            ["storage_object="]
        );
        let h = helper("/backstores/fileio");
        assert_eq!(h.candidates(&words("create"), "file"), ["file_or_dev="]);
        assert_eq!(
            h.candidates(&words("set attribute"), "emulate_tp"),
            ["emulate_tpu=", "emulate_tpws="]
        );
    }

    /// `create` completes from the parameters `create` itself binds, per
    /// backstore type (user:qcow's backing=, any registered handler's).
    #[test]
    fn create_completion_follows_the_backstore_parameters() {
        assert!(create_params("/backstores/user:qcow").contains(&"backing"));
        assert!(!create_params("/backstores/user:qemu").contains(&"backing"));
        assert!(create_params("/backstores/user:pattern").contains(&"cfgstring"));
        assert_eq!(
            create_params("/backstores/ramdisk"),
            &["name", "size", "nullio", "wwn"]
        );
        assert!(create_params("/backstores/bogus").is_empty());
    }
}
