//! The daemon's management API: a unix stream socket (mode 0600) carrying
//! one JSON request object per line and one JSON response object per line
//! (docs/api.md). Each connection has its own thread; a bad request, even
//! one that panics a handler, gets `{"ok":false,"error":...}` and never
//! takes the daemon down.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::args::Args;
use crate::live::Live;
use crate::ops;
use crate::proto::{
    Answer, Change, Info, Listing, Request, Response, Saved, Sessions, Values, Version,
};
use crate::tree;

/// Where the daemon listens and the CLI connects unless `--socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/rtarget/rtarget.sock";
/// Longest request line accepted.
const MAX_LINE: usize = 1 << 20;

/// A bound API socket; the file is removed on drop if it is still ours.
pub struct Socket {
    listener: UnixListener,
    path: PathBuf,
    ino: (u64, u64),
}

impl Socket {
    /// Bind `path` (creating its directory, mode 0700), replacing a stale
    /// socket file but never one a live daemon answers on.
    pub fn bind(path: &Path) -> Result<Socket> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            }
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                bail!("another daemon is already serving {}", path.display());
            }
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot bind the API socket {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot chmod {}", path.display()))?;
        let md = std::fs::metadata(path)?;
        Ok(Socket {
            listener,
            path: path.to_path_buf(),
            ino: (md.dev(), md.ino()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept connections on a background thread, forever.
    pub fn serve(&self, live: Arc<Live>) -> Result<()> {
        let listener = self.listener.try_clone()?;
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => {
                            let live = live.clone();
                            let _ = std::thread::Builder::new()
                                .name("api-conn".into())
                                .spawn(move || connection(stream, &live));
                        }
                        Err(e) => tracing::warn!(error = %e, "API accept failed"),
                    }
                }
            })?;
        Ok(())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Only our own file: a newer daemon may have replaced it.
        if let Ok(md) = std::fs::metadata(&self.path) {
            if (md.dev(), md.ino()) == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn connection(stream: UnixStream, live: &Live) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let resp = match read_line(&mut reader, &mut buf) {
            Ok(false) => return,
            Ok(true) => {
                let line = String::from_utf8_lossy(&buf);
                if line.trim().is_empty() {
                    continue;
                }
                respond(live, line.trim())
            }
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        };
        let mut text = resp.to_string();
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// One line into `buf` (without the newline); false at end of stream. A
/// line longer than MAX_LINE is consumed and reported as an error.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<bool> {
    let mut too_long = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(!buf.is_empty() || too_long);
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            buf.extend_from_slice(&chunk[..take]);
            if buf.len() > MAX_LINE {
                too_long = true;
                buf.clear();
            }
        }
        r.consume(take);
        if done {
            if too_long {
                bail!("request longer than {MAX_LINE} bytes");
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            return Ok(true);
        }
    }
}

/// Answer one request line (never panics: a handler panic becomes an error).
pub fn respond(live: &Live, line: &str) -> Value {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(live, line)));
    let answer = match result {
        Ok(Ok(r)) => Answer::Ok(r),
        Ok(Err(e)) => Answer::Err(format!("{e:#}")),
        Err(_) => Answer::Err(
            "internal error while handling the request (see the daemon log)".to_string(),
        ),
    };
    serde_json::to_value(answer).unwrap_or_else(|e| json!({"ok": false, "error": e.to_string()}))
}

fn handle(live: &Live, line: &str) -> Result<Response> {
    let req = Request::parse(line).map_err(|e| anyhow!(e))?;
    tracing::debug!(op = req.op(), path = req.path(), "API request");
    let change = |o: crate::live::Outcome| {
        Response::Change(Change {
            message: o.message,
            warnings: o.warnings,
        })
    };
    Ok(match req {
        Request::Ping => Response::Version(Version {
            version: env!("CARGO_PKG_VERSION").to_string(),
            panics: crate::panics::count(),
        }),
        Request::Ls { path, depth, width } => {
            let path = tree::normalize("/", &path);
            let depth = depth.map(|d| d as usize);
            let width = width.unwrap_or(80).clamp(40, 1000) as usize;
            let root = live.tree();
            let node = root
                .find(&path)
                .ok_or_else(|| manage::locate::no_such_path(&path))?;
            Response::Listing(Listing {
                text: tree::render(node, depth, width),
                tree: node.pruned(depth),
            })
        }
        Request::Create { path, argv, args } => {
            change(create_delete(live, true, &path, &argv, &args)?)
        }
        Request::Delete { path, argv, args } => {
            change(create_delete(live, false, &path, &argv, &args)?)
        }
        Request::Set {
            path,
            group,
            values,
            argv,
        } => set(live, &tree::normalize("/", &path), &group, &values, &argv)?,
        Request::Get {
            path,
            group,
            mut names,
            argv,
        } => {
            names.splice(0..0, argv);
            get(live, &tree::normalize("/", &path), &group, &names)?
        }
        Request::Saveconfig { file } => {
            let saved = live.save(file.as_deref().map(Path::new))?;
            Response::Saved(Saved {
                message: format!("Configuration saved to {}", saved.display()),
            })
        }
        Request::Info { path } => {
            let info = ops::info(&live.config(), &tree::normalize("/", &path))?;
            Response::Info(Info {
                info: match info {
                    Some(Value::Object(m)) => Some(m),
                    _ => None,
                },
            })
        }
        Request::Restoreconfig { file } => change(restore(live, file)?),
        Request::Clearconfig { confirm } => {
            if !confirm {
                bail!("clearconfig deletes every object: repeat with confirm=true");
            }
            change(live.change(|cfg| {
                *cfg = config::SaveConfig::default();
                Ok("All configuration cleared".into())
            })?)
        }
        Request::Resize { path, size, argv } => {
            // "size": "2G" / "+1G" / bytes, or the first word of "argv".
            let size = size
                .map(|s| s.to_string())
                .or_else(|| argv.into_iter().next());
            change(live.resize(&tree::normalize("/", &path), size.as_deref())?)
        }
        Request::Enable { path } => {
            let path = tree::normalize("/", &path);
            change(live.change(|cfg| ops::enable(cfg, &path, true))?)
        }
        Request::Disable { path } => {
            let path = tree::normalize("/", &path);
            change(live.change(|cfg| ops::enable(cfg, &path, false))?)
        }
        Request::Sessions { detail: true } => Response::SessionsDetail(Sessions {
            sessions: live.sessions_detail().iter().map(Into::into).collect(),
            guests: live.vhost_guests(),
            gateways: live.gateways(),
        }),
        Request::Sessions { detail: false } => Response::Sessions(Sessions {
            sessions: live.sessions().iter().map(Into::into).collect(),
            guests: live.vhost_guests(),
            gateways: live.gateways(),
        }),
        Request::Stats => Response::Stats(crate::proto::Stats {
            at_ns: crate::proto::stats::clock_ns(),
            storage_objects: live
                .devices_by_path()
                .iter()
                .map(|(path, d)| crate::proto::stats::LuCounters::new(path, &d.stats()))
                .collect(),
        }),
    })
}

/// `create` / `delete` at `path` with targetcli's words and named values.
fn create_delete(
    live: &Live,
    create: bool,
    path: &str,
    argv: &[String],
    named: &Map<String, Value>,
) -> Result<crate::live::Outcome> {
    let path = tree::normalize("/", path);
    let mut args = Args::from_words(argv)?;
    args.add_json(named)?;
    let prefs = live.prefs();
    let mut ctx = ops::Ctx {
        default_portal: live.default_portal,
        add_default_portal: prefs.auto_add_default_portal,
        auto_add_mapped_luns: prefs.auto_add_mapped_luns,
        new_uuid: Box::new(crate::build::random_uuid),
        stat: Box::new(stat),
    };
    // A vhost target with a guest attached goes only when forced (the
    // guest loses its disks at once).
    let force = match args.named.remove("force").as_deref() {
        None | Some("false" | "0" | "no") => false,
        Some("true" | "1" | "yes") => true,
        Some(v) => anyhow::bail!("force={v}: true or false"),
    };
    let guests = live.vhost_guests();
    let run = |ctx: &ops::Ctx| {
        live.change(|cfg| {
            if create {
                return ops::create(cfg, &path, &args, ctx);
            }
            let msg = ops::delete(cfg, &path, &args)?;
            if let Some(g) = guests
                .iter()
                .find(|g| !force && !cfg.vhost_targets().any(|t| t.wwn == g.target))
            {
                anyhow::bail!(
                    "vhost target {} has a guest attached (nexus {}); \
                     delete it with force=true",
                    g.target,
                    g.nexus
                );
            }
            Ok(msg)
        })
    };
    match run(&ctx) {
        // As targetcli: a default portal that cannot be bound (the
        // port is taken) leaves the new target without one.
        Err(e) if create && path == "/iscsi" && ctx.add_default_portal => {
            let Some(lf) = e.downcast_ref::<crate::live::ListenFailed>() else {
                return Err(e);
            };
            let note = format!(
                "{lf}; the target has no portal yet: add one with \
                 `.../tpg1/portals create IP PORT`"
            );
            ctx.add_default_portal = false;
            let mut out = run(&ctx)?;
            out.warnings.insert(0, note);
            Ok(out)
        }
        other => other,
    }
}

fn set(
    live: &Live,
    path: &str,
    group: &str,
    named: &Map<String, Value>,
    argv: &[String],
) -> Result<Response> {
    let group = need_group(group)?;
    let mut values: Vec<(String, String)> = named
        .iter()
        .map(|(k, v)| (k.clone(), config::value_string(v)))
        .collect();
    for w in argv {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| anyhow!("{w:?} is not name=value"))?;
        values.push((k.to_string(), v.to_string()));
    }
    let out = if group == "global" {
        crate::live::Outcome {
            message: live.set_prefs(&values)?,
            warnings: Vec::new(),
        }
    } else {
        live.change(|cfg| ops::set(cfg, path, group, &values))?
    };
    Ok(Response::Change(Change {
        message: out.message,
        warnings: out.warnings,
    }))
}

fn get(live: &Live, path: &str, group: &str, names: &[String]) -> Result<Response> {
    let group = need_group(group)?;
    if group == "global" {
        return Ok(Response::Values(Values {
            values: live.prefs().get(names)?,
        }));
    }
    let mut values = ops::get(&live.config(), path, group, names)?;
    if group == "attribute" {
        if let Some(dev) = live.device(path) {
            effective_attributes(&mut values, &dev.options);
        }
    }
    Ok(Response::Values(Values { values }))
}

fn need_group(group: &str) -> Result<&str> {
    if group.is_empty() {
        bail!("missing \"group\" (attribute, parameter, auth, discovery_auth, alua, global)");
    }
    Ok(group)
}

/// `restoreconfig`: replace the live configuration with a file's.
pub fn restore(live: &Live, file: Option<String>) -> Result<crate::live::Outcome> {
    let file = file.map_or_else(|| live.config_path().to_path_buf(), PathBuf::from);
    let (loaded, issues) = config::load(&file)?;
    let out = live.change(|cfg| {
        *cfg = loaded;
        Ok(format!("Configuration restored from {}", file.display()))
    })?;
    let mut warnings: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    warnings.extend(out.warnings);
    warnings.dedup();
    Ok(crate::live::Outcome {
        message: out.message,
        warnings,
    })
}

/// Fill storage object attributes that were never set with what the
/// running device actually uses.
fn effective_attributes(values: &mut Map<String, Value>, o: &target_core::DeviceOptions) {
    let flag = |b: bool| Value::from(u8::from(b));
    for (k, v) in values.iter_mut() {
        if !v.is_null() {
            continue;
        }
        *v = match k.as_str() {
            "block_size" => Value::from(o.block_size),
            "emulate_write_cache" => flag(o.write_cache),
            "emulate_tpu" | "emulate_tpws" => flag(o.thin_provisioning),
            _ => continue,
        };
    }
}

pub fn stat(path: &str) -> Option<ops::PathKind> {
    use std::os::unix::fs::FileTypeExt;
    let md = std::fs::metadata(path).ok()?;
    let ft = md.file_type();
    Some(if ft.is_file() {
        ops::PathKind::File(md.len())
    } else if ft.is_block_device() {
        ops::PathKind::BlockDevice
    } else {
        ops::PathKind::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(dir: &Path) -> Live {
        Live::new(
            iscsi::IscsiServer::new(),
            crate::live::Settings {
                config_path: dir.join("saveconfig.json"),
                fixed_portals: None,
                default_portal: "127.0.0.1:3260".parse().unwrap(),
                prefs: crate::prefs::Prefs::default(),
                pr_dir: None,
            },
        )
    }

    #[test]
    fn requests_get_json_answers_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let l = live(dir.path());
        let r = |s: &str| respond(&l, s);
        assert!(r("nope")["error"].as_str().unwrap().starts_with("bad JSON"));
        assert_eq!(r("[1]")["ok"], false);
        assert!(r(r#"{"op":"x"}"#)["error"]
            .as_str()
            .unwrap()
            .contains("unknown op"));
        assert!(r(r#"{"path":"/"}"#)["error"]
            .as_str()
            .unwrap()
            .contains("missing \"op\""));
        assert_eq!(r(r#"{"op":"ls","depth":-1}"#)["ok"], false);
        let ls = r(r#"{"op":"ls","path":"/backstores","depth":1}"#);
        assert_eq!(ls["ok"], true);
        assert_eq!(
            ls["tree"]["children"].as_array().unwrap().len(),
            tree::plugins().len()
        );
        assert!(ls["text"].as_str().unwrap().starts_with("o- backstores "));
        let c =
            r(r#"{"op":"create","path":"/backstores/ramdisk","args":{"name":"r0","size":"1M"}}"#);
        assert_eq!(c["ok"], true, "{c}");
        let g = r(
            r#"{"op":"get","path":"/backstores/ramdisk/r0","group":"attribute","names":["block_size","emulate_pr"]}"#,
        );
        assert_eq!(g["values"], json!({"block_size": 512, "emulate_pr": null}));
        let s = r(
            r#"{"op":"set","path":"/backstores/ramdisk/r0","group":"attribute","values":{"is_nonrot":1}}"#,
        );
        assert_eq!(s["ok"], true, "{s}");
        assert_eq!(r(r#"{"op":"clearconfig"}"#)["ok"], false);
        assert_eq!(r(r#"{"op":"sessions"}"#)["sessions"], json!([]));
        // The daemon's panic count (crate::panics), which the e2e scripts require to be 0.
        assert!(r(r#"{"op":"ping"}"#)["panics"].is_u64());
        assert_eq!(
            r(r#"{"op":"create","path":"/backstores/ramdisk","args":{"name":[1]}}"#)["ok"],
            false
        );
    }

    /// `resize`: size as a string, a byte count or the first argv word;
    /// refusals are answers, not crashes; the device is grown in place.
    #[test]
    fn resize_op() {
        let dir = tempfile::tempdir().unwrap();
        let l = live(dir.path());
        let r = |s: &str| respond(&l, s);
        let c =
            r(r#"{"op":"create","path":"/backstores/ramdisk","args":{"name":"r0","size":"1M"}}"#);
        assert_eq!(c["ok"], true, "{c}");
        let dev = l.device("/backstores/ramdisk/r0").unwrap();
        let g = r(r#"{"op":"resize","path":"/backstores/ramdisk/r0","size":"2M"}"#);
        assert_eq!(g["ok"], true, "{g}");
        assert_eq!(dev.backstore.size(), 2 << 20);
        let g = r(r#"{"op":"resize","path":"/backstores/ramdisk/r0","size":4194304}"#);
        assert_eq!(g["ok"], true, "{g}");
        let g = r(r#"{"op":"resize","path":"/backstores/ramdisk/r0","argv":["+1M"]}"#);
        assert_eq!(g["ok"], true, "{g}");
        assert_eq!(dev.backstore.size(), 5 << 20);
        assert!(Arc::ptr_eq(
            &dev,
            &l.device("/backstores/ramdisk/r0").unwrap()
        ));
        for (req, want) in [
            (
                r#"{"op":"resize","path":"/backstores/ramdisk/r0","size":"1M"}"#,
                "cannot shrink",
            ),
            (
                r#"{"op":"resize","path":"/backstores/ramdisk/r0","size":true}"#,
                "\"size\" must be",
            ),
            (
                r#"{"op":"resize","path":"/backstores/ramdisk/r0"}"#,
                "needs a SIZE",
            ),
            (
                r#"{"op":"resize","path":"/backstores","size":"1G"}"#,
                "only a storage object",
            ),
            (
                r#"{"op":"resize","path":"/backstores/ramdisk/nope","size":"1G"}"#,
                "no such path",
            ),
        ] {
            let e = r(req);
            assert_eq!(e["ok"], false, "{req}");
            assert!(e["error"].as_str().unwrap().contains(want), "{req}: {e}");
        }
        assert_eq!(dev.backstore.size(), 5 << 20);
        let saved = std::fs::read_to_string(dir.path().join("saveconfig.json")).unwrap();
        assert!(saved.contains("\"size\": 5242880"), "{saved}");
    }

    #[test]
    fn long_lines_are_refused_and_skipped() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\n{\"op\":\"ping\"}\n");
        let mut r = BufReader::new(&input[..]);
        let mut buf = Vec::new();
        assert!(read_line(&mut r, &mut buf).is_err());
        buf.clear();
        assert!(read_line(&mut r, &mut buf).unwrap());
        assert_eq!(buf, b"{\"op\":\"ping\"}");
        buf.clear();
        assert!(!read_line(&mut r, &mut buf).unwrap());
    }
}
