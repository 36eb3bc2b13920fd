//! Shell bookmarks (targetcli's `bookmarks add|del|go|show [NAME]` and
//! `cd @NAME`): named tree paths kept per user in `~/.rtarget_bookmarks`
//! (a JSON object), so they survive across shell sessions.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};

pub struct Bookmarks {
    file: Option<PathBuf>,
    map: BTreeMap<String, String>,
}

/// What a `bookmarks` command asks the shell to do next.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Print(String),
    Go(String),
}

impl Bookmarks {
    /// The user's bookmarks (none, and not saved, without `$HOME`).
    pub fn load() -> Bookmarks {
        let file = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rtarget_bookmarks"));
        Bookmarks::from_file(file)
    }

    fn from_file(file: Option<PathBuf>) -> Bookmarks {
        let map = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        Bookmarks { file, map }
    }

    fn save(&self) -> Result<()> {
        let Some(f) = &self.file else {
            return Ok(());
        };
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(&self.map)? + "\n")
            .and_then(|()| std::fs::rename(&tmp, f))
            .with_context(|| format!("cannot save {}", f.display()))
    }

    /// `bookmarks ACTION [NAME]` run at `path`.
    pub fn run(&mut self, path: &str, args: &[String]) -> Result<Outcome> {
        let usage = "usage: bookmarks add|del|go NAME, or bookmarks show";
        match args {
            [] => Ok(Outcome::Print(self.show())),
            [a] if a == "show" => Ok(Outcome::Print(self.show())),
            [a, name] if a == "add" => {
                if name.is_empty() || name.contains(['/', '@', ' ']) {
                    bail!("bookmark names cannot contain '/', '@' or spaces (e.g. `bookmarks add t1`)");
                }
                self.map.insert(name.clone(), path.to_string());
                self.save()?;
                Ok(Outcome::Print(format!("Bookmarked {path} as {name}.")))
            }
            [a, name] if a == "del" => {
                self.map
                    .remove(name)
                    .ok_or_else(|| anyhow!("no bookmark {name:?} (`bookmarks show` lists them)"))?;
                self.save()?;
                Ok(Outcome::Print(format!("Deleted bookmark {name}.")))
            }
            [a, name] if a == "go" => Ok(Outcome::Go(self.get(name)?.to_string())),
            _ => bail!("{usage}"),
        }
    }

    fn get(&self, name: &str) -> Result<&str> {
        self.map
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("no bookmark {name:?} (`bookmarks show` lists them; e.g. `bookmarks add {name}` at a path)"))
    }

    fn show(&self) -> String {
        if self.map.is_empty() {
            return "No bookmarks yet.".into();
        }
        self.map
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Replace `@NAME` and `@NAME/rest` words with the bookmarked path.
    pub fn expand(&self, words: &mut [String]) -> Result<()> {
        for w in words.iter_mut() {
            if let Some(rest) = w.strip_prefix('@') {
                let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
                let base = self.get(name)?;
                *w = if tail.is_empty() {
                    base.to_string()
                } else {
                    format!("{}/{tail}", base.trim_end_matches('/'))
                };
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_go_expand_del_persist() {
        let dir = tempfile::tempdir().unwrap();
        let file = Some(dir.path().join("bm"));
        let mut b = Bookmarks::from_file(file.clone());
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        b.run("/iscsi/iqn.x:y/tpg1", &s(&["add", "t1"])).unwrap();
        let mut b = Bookmarks::from_file(file.clone());
        assert_eq!(
            b.run("/", &s(&["go", "t1"])).unwrap(),
            Outcome::Go("/iscsi/iqn.x:y/tpg1".into())
        );
        let mut w = s(&["cd", "@t1/luns"]);
        b.expand(&mut w).unwrap();
        assert_eq!(w[1], "/iscsi/iqn.x:y/tpg1/luns");
        assert!(b.expand(&mut s(&["@nope"])).is_err());
        assert!(b.run("/", &s(&["add", "a/b"])).is_err());
        b.run("/", &s(&["del", "t1"])).unwrap();
        assert_eq!(
            Bookmarks::from_file(file).run("/", &[]).unwrap(),
            Outcome::Print("No bookmarks yet.".into())
        );
    }
}
