//! Reading and writing saveconfig.json on disk.
//!
//! Loading reports JSON errors with line and column and runs validation.
//! Saving is atomic and durable: a `0600` temp file in the same directory is
//! written, fsynced, renamed over the target, and the directory fsynced, so a
//! crash leaves either the old or the new file. The previous file is first
//! copied into `backup/` next to it (as targetcli does in
//! `/etc/target/backup`), keeping the newest [`MAX_BACKUPS`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::model::SaveConfig;
use crate::validate::{validate, Issue};
use crate::ConfigError;

/// Rotated backups kept in `<dir>/backup/` (targetcli's default is 10).
pub const MAX_BACKUPS: usize = 10;

/// Parse saveconfig JSON text. `origin` names the source in errors.
pub fn parse_str(text: &str, origin: &Path) -> Result<SaveConfig, ConfigError> {
    serde_json::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e.to_string()),
    })
}

/// serde_json appends " at line L column C"; we print the position up front.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

/// Read, parse and validate a file. Returns the config and its warnings.
pub fn load(path: &Path) -> Result<(SaveConfig, Vec<Issue>), ConfigError> {
    let text = fs::read_to_string(path).map_err(|e| ConfigError::Io {
        path: path.to_path_buf(),
        error: e,
    })?;
    let cfg = parse_str(&text, path)?;
    let warnings = validate(&cfg).map_err(|issues| ConfigError::Invalid {
        path: path.to_path_buf(),
        issues,
    })?;
    Ok((cfg, warnings))
}

/// The JSON text rtslib would write: keys sorted, two-space indent, final newline.
pub fn to_json(cfg: &SaveConfig) -> String {
    let mut v = serde_json::to_value(cfg).expect("SaveConfig serializes to JSON");
    sort_keys(&mut v);
    let mut s = serde_json::to_string_pretty(&v).expect("a JSON value serializes");
    s.push('\n');
    s
}

fn sort_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.sort_keys();
            m.values_mut().for_each(sort_keys);
        }
        Value::Array(a) => a.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// Validate, then write `cfg` to `path` atomically (see the module docs).
pub fn save(cfg: &SaveConfig, path: &Path) -> Result<(), ConfigError> {
    validate(cfg).map_err(|issues| ConfigError::Invalid {
        path: path.to_path_buf(),
        issues,
    })?;
    let text = to_json(cfg);
    let io_err = |p: &Path| {
        let p = p.to_path_buf();
        move |e| ConfigError::Io { path: p, error: e }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    durable::create_dir_all(&dir).map_err(io_err(&dir))?;
    if let Ok(old) = fs::read(path) {
        if old == text.as_bytes() {
            return Ok(());
        }
        backup(&dir, path, &old).map_err(io_err(&dir.join("backup")))?;
    }
    let file_name = path.file_name().ok_or_else(|| ConfigError::Io {
        path: path.to_path_buf(),
        error: io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    // A stale temp file may carry wider permissions: remove it, then create exclusively.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Copy the previous contents into `<dir>/backup/<stem>-YYYYMMDD-HHMMSS.json`
/// and prune to [`MAX_BACKUPS`].
fn backup(dir: &Path, path: &Path, old: &[u8]) -> io::Result<()> {
    let bdir = dir.join("backup");
    durable::create_dir_all(&bdir)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "saveconfig".into());
    let stamp = utc_stamp(SystemTime::now());
    let mut name = bdir.join(format!("{stem}-{stamp}.json"));
    let mut n = 1;
    while name.exists() {
        name = bdir.join(format!("{stem}-{stamp}-{n}.json"));
        n += 1;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&name)?;
    f.write_all(old)?;
    f.sync_all()?;
    let prefix = format!("{stem}-");
    let mut backups: Vec<(SystemTime, PathBuf)> = fs::read_dir(&bdir)?
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".json")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    // Oldest first by mtime, then by name (same-second backups sort by suffix).
    backups.sort();
    let excess = backups.len().saturating_sub(MAX_BACKUPS);
    for (_, p) in backups.into_iter().take(excess) {
        fs::remove_file(p)?;
    }
    Ok(())
}

/// `YYYYMMDD-HHMMSS` in UTC, without a date crate (civil-from-days).
fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    /// Found by fuzz/saveconfig: a number kept as is (an unknown key, or
    /// an attribute value) must be written back exactly, not one ulp off
    /// after every load and save (serde_json's default float parser is
    /// not exact; the workspace enables its `float_roundtrip`).
    #[test]
    fn numbers_survive_load_and_save_exactly() {
        // 93 nines: the nearest double is 2e92; the inexact parser was one
        // ulp off, so each save moved the value (fuzz input, trimmed).
        let big = format!("1{}", "9".repeat(92));
        let text = format!(r#"{{"fabric_modules": [{{"name": "iscsi", "x": {big}, "y": 0.1}}]}}"#);
        let cfg = parse_str(&text, Path::new("t.json")).unwrap();
        let json = to_json(&cfg);
        assert!(
            json.contains("\"x\": 2e92") || json.contains("\"x\": 2e+92"),
            "{json}"
        );
        let again = parse_str(&json, Path::new("t.json")).unwrap();
        assert_eq!(again, cfg);
        assert_eq!(to_json(&again), json);
    }

    fn sample() -> SaveConfig {
        serde_json::from_value(serde_json::json!({
            "storage_objects": [{"plugin": "ramdisk", "name": "r0", "size": 1048576}],
            "targets": [], "fabric_modules": []
        }))
        .unwrap()
    }

    #[test]
    fn stamp_is_utc_calendar() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101-000000");
        // 2026-11-26 08:39:33 UTC
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(1_795_682_373)),
            "20261126-083933"
        );
        // Leap day 2024-02-29 12:00:00
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(1_709_208_000)),
            "20240229-120000"
        );
    }

    #[test]
    fn save_is_0600_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/saveconfig.json");
        save(&sample(), &p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (back, warnings) = load(&p).unwrap();
        assert_eq!(back, sample());
        assert!(warnings.is_empty());
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("saveconfig.json")]);
    }

    #[test]
    fn save_keeps_rotated_backups() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("saveconfig.json");
        let mut c = sample();
        for i in 0..(MAX_BACKUPS as u64 + 4) {
            c.storage_objects[0].size = Some((i + 1) * 4096);
            save(&c, &p).unwrap();
        }
        let bdir = dir.path().join("backup");
        let n = fs::read_dir(&bdir).unwrap().count();
        assert_eq!(n, MAX_BACKUPS);
        // The newest backup holds the previous version.
        let newest = fs::read_dir(&bdir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                fs::read_to_string(p)
                    .unwrap()
                    .contains(&format!("{}", (MAX_BACKUPS as u64 + 3) * 4096))
            })
            .count();
        assert_eq!(newest, 1);
        // Saving identical content makes no new backup.
        save(&c, &p).unwrap();
        assert_eq!(fs::read_dir(&bdir).unwrap().count(), MAX_BACKUPS);
    }

    #[test]
    fn invalid_config_is_not_saved() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("saveconfig.json");
        let mut c = sample();
        c.storage_objects.push(c.storage_objects[0].clone());
        assert!(matches!(save(&c, &p), Err(ConfigError::Invalid { .. })));
        assert!(!p.exists());
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("saveconfig.json");
        fs::write(
            &p,
            "{\n  \"targets\": [\n    {\"fabric\": \"iscsi\",, }\n  ]\n}\n",
        )
        .unwrap();
        match load(&p) {
            Err(ConfigError::Parse { line, column, .. }) => {
                assert_eq!(line, 3);
                assert!(column > 20, "column {column}");
            }
            other => panic!("{other:?}"),
        }
        let msg = load(&p).unwrap_err().to_string();
        assert!(msg.starts_with(&format!("{}:3:", p.display())), "{msg}");
    }

    #[test]
    fn type_error_has_line() {
        let e = parse_str("{\n\"storage_objects\": [\n{\"plugin\": \"ramdisk\", \"name\": \"r\", \"size\": \"big\"}\n]}", Path::new("x.json"))
            .unwrap_err();
        match e {
            ConfigError::Parse {
                line, ref message, ..
            } => {
                assert!(line >= 3, "{e}");
                assert!(!message.is_empty());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn output_keys_are_sorted_like_rtslib() {
        let text = to_json(&sample());
        let fm = text.find("\"fabric_modules\"").unwrap();
        let so = text.find("\"storage_objects\"").unwrap();
        let t = text.find("\"targets\"").unwrap();
        assert!(fm < so && so < t);
        let name = text.find("\"name\"").unwrap();
        let plugin = text.find("\"plugin\"").unwrap();
        assert!(name < plugin);
        assert!(text.ends_with("}\n"));
    }

    /// `save` into a directory that does not exist yet creates it (and its
    /// backup directory on the next save) through `durable`, which fsyncs
    /// the parent of each new directory.
    #[test]
    fn save_syncs_the_directories_it_creates() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("etc/target/saveconfig.json");
        let mut cfg = crate::model::SaveConfig::default();
        durable::trace::synced();
        save(&cfg, &path).unwrap();
        let s = durable::trace::synced();
        assert!(s.contains(&t.path().to_path_buf()), "{s:?}");
        assert!(s.contains(&t.path().join("etc")), "{s:?}");
        // A changed save backs the old file up into a new backup/.
        cfg.extra.insert("note".into(), "second".into());
        save(&cfg, &path).unwrap();
        assert!(t.path().join("etc/target/backup").is_dir());
        let s = durable::trace::synced();
        let dir = t.path().join("etc/target");
        assert!(s.contains(&dir), "{s:?}");
    }
}
