//! Directories that survive a power cut. `fs::create_dir_all` leaves each
//! new directory's entry in its parent unsynced: a file later written and
//! fsynced inside (with its own directory fsynced too) can still vanish
//! after a crash together with the directory that held it. State files
//! (saveconfig, APTPL, encryption keys) create their directories here.
//! A crate of its own so that config (saveconfig) shares it with backstore
//! and target-core without depending on the storage crates.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Create `dir` and its missing ancestors like `fs::create_dir_all`, then
/// fsync the parent of every directory created, top-down, so each new entry
/// is on disk before anything is put below it. Levels that exist are left
/// alone (nothing synced when `dir` exists).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut missing: Vec<&Path> = Vec::new();
    let mut p = dir;
    loop {
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", p.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(p);
                match p.parent() {
                    Some(q) if !q.as_os_str().is_empty() => p = q,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            // Created meanwhile by someone else: still synced below, as
            // nothing says the other creator did it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
        sync_dir(&parent(d))?;
    }
    Ok(())
}

/// The directory holding `p` ("." for a bare name).
fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => q.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(d: &Path) -> io::Result<()> {
    #[cfg(any(test, feature = "trace"))]
    trace::SYNCED.with(|s| s.borrow_mut().push(d.to_path_buf()));
    File::open(d)?.sync_all()
}

/// Test support (feature `trace`): which directories were fsynced, so a
/// caller's tests can check that it creates its directories through here.
#[cfg(any(test, feature = "trace"))]
pub mod trace {
    use std::cell::RefCell;
    use std::path::PathBuf;

    thread_local! {
        /// Directories `sync_dir` fsynced on this thread, in order.
        pub(super) static SYNCED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    /// The directories fsynced on this thread since the last call.
    pub fn synced() -> Vec<PathBuf> {
        SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::trace::synced;
    use super::*;

    #[test]
    fn creates_missing_levels_and_syncs_each_parent() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let deep = root.join("a/b/c");
        synced();
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        assert_eq!(
            synced(),
            vec![root.to_path_buf(), root.join("a"), root.join("a/b")]
        );
        // Everything there: nothing created, nothing synced.
        create_dir_all(&deep).unwrap();
        assert!(synced().is_empty());
        // One new level below existing ones: only its parent.
        create_dir_all(&deep.join("d")).unwrap();
        assert_eq!(synced(), vec![deep.clone()]);
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("f");
        fs::write(&f, b"x").unwrap();
        assert!(create_dir_all(&f).is_err());
        assert!(create_dir_all(&f.join("below")).is_err());
    }
}
