//! The `user:qemu` configuration string and the command lines built from
//! it for `qemu-storage-daemon` (preferred) or `qemu-nbd` (fallback).
//!
//! rtslib stores a user object's `config` as `<handler>/<cfgstring>` and
//! tcmu-runner handlers take `qcow/<path>`, `rbd/<pool>/<image>;opt=val`, so
//! the string follows that shape. Two spellings are accepted:
//!
//! - `FORMAT/PATH[;KEY=VALUE...]`, e.g. `vmdk//srv/disk.vmdk` or
//!   `luks//srv/d.luks;key-secret=/etc/rtarget/d.pass`
//! - `KEY=VALUE[;KEY=VALUE...]` with `file=` and `format=`, e.g.
//!   `format=vhdx;file=/srv/disk.vhdx;readonly=on`
//!
//! Keys: `file` (absolute path), `format` (any QEMU block driver name, e.g.
//! raw, qcow2, vmdk, vhdx, vdi, vpc, qed, luks, parallels), `readonly`
//! (on/off), `writethrough` (on/off: QEMU flushes after every write),
//! `detect-zeroes` (off/on/unmap; default unmap when writable), `discard`
//! (unmap/ignore; default unmap) and `key-secret` (a file holding the LUKS
//! passphrase). Options are separated by `;` only, so paths may contain
//! commas. The image format is never probed: a raw image whose first bytes
//! look like a qcow2 header must not be opened as one.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why a configuration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0}: expected FORMAT/PATH[;KEY=VALUE...] or format=FORMAT;file=PATH[;...]")]
    Syntax(String),
    #[error("image path {0:?} must be absolute")]
    RelativePath(String),
    #[error("format {0:?} is not a QEMU block driver name")]
    BadFormat(String),
    #[error("unknown option {0:?} (known: file, format, readonly, writethrough, detect-zeroes, discard, key-secret)")]
    UnknownKey(String),
    #[error("option {key}: {value:?} is not one of {allowed}")]
    BadValue {
        key: String,
        value: String,
        allowed: &'static str,
    },
    #[error("option {0} given twice")]
    Duplicate(String),
}

/// QEMU's `detect-zeroes` block option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetectZeroes {
    Off,
    On,
    Unmap,
}

impl DetectZeroes {
    fn as_str(self) -> &'static str {
        match self {
            DetectZeroes::Off => "off",
            DetectZeroes::On => "on",
            DetectZeroes::Unmap => "unmap",
        }
    }
}

/// One image served through QEMU, parsed from the configuration string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    pub file: PathBuf,
    pub format: String,
    pub read_only: bool,
    pub writethrough: bool,
    /// `None`: unmap when writable, off when read-only.
    pub detect_zeroes: Option<DetectZeroes>,
    /// Pass discards (UNMAP, WRITE SAME with UNMAP) down to the image.
    pub discard: bool,
    pub key_secret: Option<PathBuf>,
}

fn on_off(key: &str, v: &str) -> Result<bool, ConfigError> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(ConfigError::BadValue {
            key: key.into(),
            value: v.into(),
            allowed: "on, off",
        }),
    }
}

fn absolute(p: &str) -> Result<PathBuf, ConfigError> {
    if p.starts_with('/') {
        Ok(PathBuf::from(p))
    } else {
        Err(ConfigError::RelativePath(p.into()))
    }
}

impl QemuConfig {
    /// Parse a configuration string (without rtslib's `qemu/` prefix).
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let syntax = || ConfigError::Syntax(s.to_string());
        let mut parts = s.split(';');
        let first = parts.next().unwrap_or("");
        let mut file = None;
        let mut format = None;
        // `FORMAT/PATH` when a '/' comes before any '='.
        let kv_form = match (first.find('='), first.find('/')) {
            (Some(e), Some(sl)) => e < sl,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let mut opts: Vec<&str> = parts.collect();
        if kv_form {
            opts.insert(0, first);
        } else {
            let (f, path) = first.split_once('/').ok_or_else(syntax)?;
            if f.is_empty() {
                // A bare path: the format is never guessed.
                return Err(syntax());
            }
            format = Some(f.to_string());
            file = Some(absolute(path)?);
        }
        let mut c = QemuConfig {
            file: PathBuf::new(),
            format: String::new(),
            read_only: false,
            writethrough: false,
            detect_zeroes: None,
            discard: true,
            key_secret: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        for o in opts.into_iter().filter(|o| !o.is_empty()) {
            let (k, v) = o.split_once('=').unwrap_or((o, "on"));
            if seen.contains(&k) {
                return Err(ConfigError::Duplicate(k.into()));
            }
            seen.push(k);
            match k {
                "file" if file.is_none() => file = Some(absolute(v)?),
                "format" if format.is_none() => format = Some(v.to_string()),
                "file" | "format" => return Err(ConfigError::Duplicate(k.into())),
                "readonly" => c.read_only = on_off(k, v)?,
                "writethrough" => c.writethrough = on_off(k, v)?,
                "detect-zeroes" => {
                    c.detect_zeroes = Some(match v {
                        "off" => DetectZeroes::Off,
                        "on" => DetectZeroes::On,
                        "unmap" => DetectZeroes::Unmap,
                        _ => {
                            return Err(ConfigError::BadValue {
                                key: k.into(),
                                value: v.into(),
                                allowed: "off, on, unmap",
                            })
                        }
                    })
                }
                "discard" => {
                    c.discard = match v {
                        "unmap" | "on" => true,
                        "ignore" | "off" => false,
                        _ => {
                            return Err(ConfigError::BadValue {
                                key: k.into(),
                                value: v.into(),
                                allowed: "unmap, ignore",
                            })
                        }
                    }
                }
                "key-secret" => c.key_secret = Some(absolute(v)?),
                _ => return Err(ConfigError::UnknownKey(k.into())),
            }
        }
        c.file = file.ok_or_else(syntax)?;
        c.format = format.ok_or_else(syntax)?;
        let name_ok = |f: &str| {
            !f.is_empty()
                && f.len() <= 32
                && f.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if !name_ok(&c.format) {
            return Err(ConfigError::BadFormat(c.format));
        }
        Ok(c)
    }

    fn detect_zeroes(&self) -> DetectZeroes {
        match self.detect_zeroes {
            _ if self.read_only => DetectZeroes::Off,
            // QEMU refuses unmap without discard=unmap.
            Some(DetectZeroes::Unmap) | None if !self.discard => DetectZeroes::On,
            Some(d) => d,
            None => DetectZeroes::Unmap,
        }
    }
}

/// The canonical `FORMAT/PATH[;opts]` spelling (what is saved).
impl fmt::Display for QemuConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.format, self.file.display())?;
        if self.read_only {
            f.write_str(";readonly=on")?;
        }
        if self.writethrough {
            f.write_str(";writethrough=on")?;
        }
        if let Some(d) = self.detect_zeroes {
            write!(f, ";detect-zeroes={}", d.as_str())?;
        }
        if !self.discard {
            f.write_str(";discard=ignore")?;
        }
        if let Some(k) = &self.key_secret {
            write!(f, ";key-secret={}", k.display())?;
        }
        Ok(())
    }
}

/// A JSON string literal (the QAPI arguments below are JSON so that any
/// path survives, where QEMU's key=value syntax would need `,,` escaping).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// QEMU's key=value syntax escapes a comma by doubling it.
fn kv_escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// Which QEMU program serves the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    StorageDaemon(PathBuf),
    QemuNbd(PathBuf),
}

impl Program {
    /// `qemu-storage-daemon` from PATH, else `qemu-nbd`.
    pub fn find() -> Option<Program> {
        let path = std::env::var_os("PATH")?;
        let find = |name: &str| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        };
        find("qemu-storage-daemon")
            .map(Program::StorageDaemon)
            .or_else(|| find("qemu-nbd").map(Program::QemuNbd))
    }

    pub fn path(&self) -> &Path {
        match self {
            Program::StorageDaemon(p) | Program::QemuNbd(p) => p,
        }
    }

    /// Arguments that serve `c` as NBD export `export` on unix socket `sock`.
    ///
    /// Cache choice: the host page cache is used (`cache.direct=off`) and
    /// QEMU honours flushes (no `cache.no-flush`), so what the initiator
    /// got acknowledged is durable after its SYNCHRONIZE CACHE, and the
    /// export advertises a volatile cache so that the initiator sends one.
    /// `writethrough=on` makes every write durable on its own.
    pub fn args(&self, c: &QemuConfig, sock: &Path, export: &str) -> Vec<String> {
        let file = c.file.to_string_lossy();
        let sock = sock.to_string_lossy();
        let discard = if c.discard { "unmap" } else { "ignore" };
        let dz = c.detect_zeroes().as_str();
        let mut a = Vec::new();
        match self {
            Program::StorageDaemon(_) => {
                let mut fmt_node = format!(
                    r#"{{"driver":{},"node-name":"fmt0","file":"file0","read-only":{},"discard":"{discard}","detect-zeroes":"{dz}""#,
                    json_str(&c.format),
                    c.read_only
                );
                if let Some(k) = &c.key_secret {
                    a.push("--object".into());
                    a.push(format!(
                        r#"{{"qom-type":"secret","id":"sec0","file":{}}}"#,
                        json_str(&k.to_string_lossy())
                    ));
                    fmt_node.push_str(r#","key-secret":"sec0""#);
                }
                fmt_node.push('}');
                a.push("--blockdev".into());
                a.push(format!(
                    r#"{{"driver":"file","node-name":"file0","filename":{},"read-only":{},"aio":"threads","discard":"{discard}","cache":{{"direct":false,"no-flush":false}}}}"#,
                    json_str(&file),
                    c.read_only
                ));
                a.push("--blockdev".into());
                a.push(fmt_node);
                a.push("--nbd-server".into());
                a.push(format!(
                    r#"{{"addr":{{"type":"unix","path":{}}}}}"#,
                    json_str(&sock)
                ));
                a.push("--export".into());
                a.push(format!(
                    r#"{{"type":"nbd","id":"exp0","node-name":"fmt0","name":{},"writable":{},"writethrough":{}}}"#,
                    json_str(export),
                    !c.read_only,
                    c.writethrough
                ));
            }
            Program::QemuNbd(_) => {
                if let Some(k) = &c.key_secret {
                    a.push("--object".into());
                    a.push(format!(
                        "secret,id=sec0,file={}",
                        kv_escape(&k.to_string_lossy())
                    ));
                }
                a.push(format!("--socket={sock}"));
                a.push(format!("--export-name={export}"));
                a.push(format!(
                    "--cache={}",
                    if c.writethrough {
                        "writethrough"
                    } else {
                        "writeback"
                    }
                ));
                a.push("--aio=threads".into());
                a.push(format!("--discard={discard}"));
                a.push(format!("--detect-zeroes={dz}"));
                a.push("--persistent".into());
                a.push("--shared=8".into());
                if c.read_only {
                    a.push("--read-only".into());
                }
                a.push("--image-opts".into());
                let mut img = format!(
                    "driver={},file.driver=file,file.filename={}",
                    kv_escape(&c.format),
                    kv_escape(&file)
                );
                if c.key_secret.is_some() {
                    img.push_str(",key-secret=sec0");
                }
                a.push(img);
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_parse_to_the_same_config() {
        let a = QemuConfig::parse("vmdk//srv/a,b.vmdk;readonly=on").unwrap();
        let b = QemuConfig::parse("format=vmdk;file=/srv/a,b.vmdk;readonly").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.format, "vmdk");
        assert_eq!(a.file, PathBuf::from("/srv/a,b.vmdk"));
        assert!(a.read_only);
        // The canonical form parses back to itself.
        assert_eq!(QemuConfig::parse(&a.to_string()).unwrap(), a);
        let c = QemuConfig::parse("luks/d.luks");
        assert_eq!(c, Err(ConfigError::RelativePath("d.luks".into())));
        let c = QemuConfig::parse(
            "luks//d/x.luks;key-secret=/etc/p;detect-zeroes=off;discard=ignore;writethrough=on",
        )
        .unwrap();
        assert_eq!(QemuConfig::parse(&c.to_string()).unwrap(), c);
        assert!(c.writethrough && !c.discard);
    }

    #[test]
    fn bad_strings_are_refused() {
        for bad in [
            "",
            "vmdk",
            "/srv/a.vmdk",
            "file=/srv/a.vmdk",
            "format=vmdk",
            "VMDK//srv/a",
            "vm dk//srv/a",
            "vmdk/srv/a",
            "vmdk//a;bogus=1",
            "vmdk//a;readonly=maybe",
            "vmdk//a;readonly=on;readonly=off",
            "format=raw;file=/a;file=/b",
            "vmdk//a;key-secret=rel",
        ] {
            assert!(QemuConfig::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn daemon_arguments_are_safe_json() {
        let c = QemuConfig::parse("qcow2//srv/we\"ird,name.qcow2").unwrap();
        let p = Program::StorageDaemon("/usr/bin/qemu-storage-daemon".into());
        let a = p.args(&c, Path::new("/run/x/nbd.sock"), "disk");
        let blockdev = &a[1];
        assert!(blockdev.contains(r#""filename":"/srv/we\"ird,name.qcow2""#));
        assert!(blockdev.contains(r#""cache":{"direct":false,"no-flush":false}"#));
        assert!(a[3].contains(r#""detect-zeroes":"unmap""#));
        assert!(a[3].contains(r#""read-only":false"#));
        assert!(a.last().unwrap().contains(r#""writable":true"#));
        // Read-only: not writable, no zero detection.
        let c = QemuConfig::parse("vhdx//srv/a.vhdx;readonly=on").unwrap();
        let a = p.args(&c, Path::new("/s"), "e");
        assert!(a.last().unwrap().contains(r#""writable":false"#));
        assert!(a[3].contains(r#""detect-zeroes":"off""#));
        // No discard: zero detection may not unmap.
        let c = QemuConfig::parse("raw//srv/a;discard=ignore").unwrap();
        let a = p.args(&c, Path::new("/s"), "e");
        assert!(a[3].contains(r#""detect-zeroes":"on""#));
    }

    #[test]
    fn qemu_nbd_fallback_escapes_commas() {
        let c = QemuConfig::parse("vdi//srv/a,b.vdi;readonly=on").unwrap();
        let a = Program::QemuNbd("/usr/bin/qemu-nbd".into()).args(&c, Path::new("/s"), "e");
        assert!(a.contains(&"--read-only".to_string()));
        assert_eq!(
            a.last().unwrap(),
            "driver=vdi,file.driver=file,file.filename=/srv/a,,b.vdi"
        );
    }
}
