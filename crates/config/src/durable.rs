//! New directories that survive a power cut, for saveconfig and its
//! backups: `fs::create_dir_all` leaves each new directory's entry in its
//! parent unsynced, so the file saved inside could vanish with it after a
//! crash. The twin of `backstore::durable` (config stays free of the
//! storage crates); the parent of every directory created is fsynced,
//! top-down.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

/// Create `dir` and its missing ancestors, fsyncing the parent of each
/// directory created. Existing levels are left alone.
pub(crate) fn create_dir_all(dir: &Path) -> io::Result<()> {
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
            // Created meanwhile by someone else: synced all the same.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
        let parent = match d.parent() {
            Some(q) if !q.as_os_str().is_empty() => q.to_path_buf(),
            _ => PathBuf::from("."),
        };
        sync_dir(&parent)?;
    }
    Ok(())
}

fn sync_dir(d: &Path) -> io::Result<()> {
    #[cfg(test)]
    tests::SYNCED.with(|s| s.borrow_mut().push(d.to_path_buf()));
    File::open(d)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    thread_local! {
        /// Directories `sync_dir` fsynced on this thread, in order.
        pub(super) static SYNCED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    fn synced() -> Vec<PathBuf> {
        SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    #[test]
    fn creates_missing_levels_and_syncs_each_parent() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let deep = root.join("a/b");
        synced();
        create_dir_all(&deep).unwrap();
        assert!(deep.is_dir());
        assert_eq!(synced(), vec![root.to_path_buf(), root.join("a")]);
        create_dir_all(&deep).unwrap();
        assert!(synced().is_empty(), "nothing new, nothing synced");
        let f = root.join("f");
        fs::write(&f, b"x").unwrap();
        assert!(create_dir_all(&f).is_err());
    }

    /// `store::save` into a directory that does not exist yet creates it
    /// (and its backup directory on the next save) through the helper.
    #[test]
    fn save_syncs_the_directories_it_creates() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("etc/target/saveconfig.json");
        let mut cfg = crate::model::SaveConfig::default();
        synced();
        crate::store::save(&cfg, &path).unwrap();
        let s = synced();
        assert!(s.contains(&t.path().to_path_buf()), "{s:?}");
        assert!(s.contains(&t.path().join("etc")), "{s:?}");
        // A changed save backs the old file up into a new backup/.
        cfg.extra.insert("note".into(), "second".into());
        crate::store::save(&cfg, &path).unwrap();
        assert!(t.path().join("etc/target/backup").is_dir());
        let s = synced();
        let dir = t.path().join("etc/target");
        assert!(s.contains(&dir), "{s:?}");
    }
}
