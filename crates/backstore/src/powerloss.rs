//! Power-loss simulation for tests (feature `powerloss`).
//!
//! Killing a process does not lose what it wrote: the kernel still writes
//! its page cache out, so a missing fsync or a wrong write order cannot show
//! in a SIGKILL test. Here a workload runs in a child process under
//! `strace`, which records every write, sync, truncate, rename and unlink
//! with its data; the recorded operations are then replayed onto a model of
//! a disk (and of a directory) that loses whatever was not synced yet when
//! the power is cut after any one of them:
//!
//! - [`file_after_cut`]: one file (an image) as a disk holds it. Everything
//!   before the file's last sync is there; of the operations after it, all
//!   are dropped, or (seeded) each one is kept, dropped or torn at 512-byte
//!   sectors, as a disk with a volatile cache may do.
//! - [`paths_after_cut`]: what a path may read after the cut, over every
//!   possible outcome: a file's data is durable once it was fsynced, a
//!   rename, create or unlink once its directory was fsynced (the journal
//!   keeps them in order, so a prefix of the rest may also have landed).
//!
//! The workload marks its own progress (e.g. "flush returned") by writing to
//! a marker file; markers appear in the trace as [`Op::Write`]s to that path.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// One recorded operation (successful ones only; paths are absolute as
/// `strace -y` resolved them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Write {
        path: String,
        off: u64,
        data: Vec<u8>,
    },
    /// A write that is durable when it returns (pwritev2 with RWF_DSYNC,
    /// or a write to a descriptor opened O_DSYNC/O_SYNC): Linux syncs its
    /// range only, so earlier unsynced writes stay volatile.
    SyncedWrite {
        path: String,
        off: u64,
        data: Vec<u8>,
    },
    /// fsync or fdatasync of a file or a directory.
    Sync {
        path: String,
    },
    Truncate {
        path: String,
        len: u64,
    },
    /// A punched hole or zeroed range (fallocate PUNCH_HOLE / ZERO_RANGE).
    Zero {
        path: String,
        off: u64,
        len: u64,
    },
    /// A file created (openat with O_CREAT that made it).
    Create {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Unlink {
        path: String,
    },
}

impl Op {
    /// The file whose data this operation changes, if any.
    pub fn data_path(&self) -> Option<&str> {
        match self {
            Op::Write { path, .. }
            | Op::SyncedWrite { path, .. }
            | Op::Truncate { path, .. }
            | Op::Zero { path, .. } => Some(path),
            _ => None,
        }
    }
}

/// A small seeded generator (xorshift64*): the seed is printed by the tests
/// so a failing cut replays.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A seed from the clock, or from `POWERLOSS_SEED` to replay one.
pub fn seed() -> u64 {
    if let Some(s) = std::env::var("POWERLOSS_SEED")
        .ok()
        .and_then(|v| v.trim().parse().ok())
    {
        return s;
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1
}

/// Whether strace is installed.
pub fn have_strace() -> bool {
    Command::new("strace")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The syscalls [`trace`] records.
const TRACED: &str = "trace=openat,write,pwrite64,pwritev2,fsync,fdatasync,ftruncate,fallocate,rename,renameat,renameat2,unlink,unlinkat";

/// Run `cmd` under strace and return what it did to files under `under`
/// (other paths, like the test harness's output, are left out). Panics if
/// the command fails.
pub fn trace(cmd: &Command, under: &Path, log: &Path) -> Vec<Op> {
    let mut st = Command::new("strace");
    st.args(["-f", "-y", "-xx", "-s", "67108864", "-e", TRACED, "-o"])
        .arg(log)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => st.env(k, v),
            None => st.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        st.current_dir(d);
    }
    let out = st.output().expect("run strace");
    assert!(
        out.status.success(),
        "traced workload failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(log).expect("read the strace log");
    let under = under.to_string_lossy();
    parse(&text)
        .into_iter()
        .filter(|op| match op {
            Op::Write { path, .. }
            | Op::SyncedWrite { path, .. }
            | Op::Sync { path }
            | Op::Truncate { path, .. }
            | Op::Zero { path, .. }
            | Op::Create { path }
            | Op::Unlink { path } => path.starts_with(&*under),
            Op::Rename { from, to } => from.starts_with(&*under) || to.starts_with(&*under),
        })
        .collect()
}

/// Parse `strace -f -y -xx` output into operations, in order.
pub fn parse(text: &str) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut pending: HashMap<String, String> = HashMap::new();
    let mut offsets: HashMap<i64, (u64, bool)> = HashMap::new();
    for line in text.lines() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("", line));
        let rest = rest.trim_start();
        let full = if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_string(), head.to_string());
            continue;
        } else if let Some(r) = rest.strip_prefix("<... ") {
            let Some((_, tail)) = r.split_once(" resumed>") else {
                continue;
            };
            match pending.remove(pid) {
                Some(head) => head + tail,
                None => continue,
            }
        } else {
            rest.to_string()
        };
        ops.extend(parse_call(&full, &mut offsets));
    }
    ops
}

fn parse_call(line: &str, offsets: &mut HashMap<i64, (u64, bool)>) -> Vec<Op> {
    let mut out = Vec::new();
    parse_into(line, offsets, &mut out);
    out
}

fn parse_into(
    line: &str,
    offsets: &mut HashMap<i64, (u64, bool)>,
    out: &mut Vec<Op>,
) -> Option<()> {
    let (name, args) = line.split_once('(')?;
    let (args, ret) = args.rsplit_once(") = ")?;
    let ret = ret.split_whitespace().next()?;
    if ret.starts_with('-') || ret == "?" {
        return None;
    }
    let a = split_args(args);
    let arg = |i: usize| a.get(i).map(String::as_str).unwrap_or("");
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let op =
        match name {
            "openat" => {
                let (fd, path) = fd_path(ret)?;
                let flags = arg(2);
                let dsync = flags.contains("O_DSYNC") || flags.contains("O_SYNC");
                offsets.insert(fd, (0, dsync));
                // File::create: both (the create is a no-op on an existing file).
                if flags.contains("O_CREAT") {
                    out.push(Op::Create { path: path.clone() });
                }
                if flags.contains("O_TRUNC") {
                    out.push(Op::Truncate { path, len: 0 });
                }
                return Some(());
            }
            "write" | "pwrite64" => {
                let (fd, path) = fd_path(arg(0))?;
                let mut data = unhex(arg(1))?;
                data.truncate(num(ret)? as usize);
                let o = offsets.entry(fd).or_insert((0, false));
                let synced = o.1;
                let off = if name == "write" {
                    let off = o.0;
                    o.0 += data.len() as u64;
                    off
                } else {
                    num(arg(3))?
                };
                Some(if synced {
                    Op::SyncedWrite { path, off, data }
                } else {
                    Op::Write { path, off, data }
                })
            }
            "pwritev2" => {
                // One or more iovecs: their bases, in order.
                let (fd, path) = fd_path(arg(0))?;
                let mut data = Vec::new();
                for part in arg(1).split("iov_base=").skip(1) {
                    let end = part.find("\", iov_len")?;
                    data.extend(unhex(&part[..end + 1])?);
                }
                data.truncate(num(ret)? as usize);
                let synced = arg(4).contains("RWF_DSYNC")
                    || arg(4).contains("RWF_SYNC")
                    || offsets.get(&fd).is_some_and(|o| o.1);
                let off = num(arg(3))?;
                Some(if synced {
                    Op::SyncedWrite { path, off, data }
                } else {
                    Op::Write { path, off, data }
                })
            }
            "fsync" | "fdatasync" => Some(Op::Sync {
                path: fd_path(arg(0))?.1,
            }),
            "ftruncate" => Some(Op::Truncate {
                path: fd_path(arg(0))?.1,
                len: num(arg(1))?,
            }),
            "fallocate" => {
                let path = fd_path(arg(0))?.1;
                let (off, len) = (num(arg(2))?, num(arg(3))?);
                // Plain allocation changes no byte that can be read back.
                (arg(1).contains("PUNCH_HOLE") || arg(1).contains("ZERO_RANGE"))
                    .then_some(Op::Zero { path, off, len })
            }
            "rename" => Some(Op::Rename {
                from: path_arg(arg(0))?,
                to: path_arg(arg(1))?,
            }),
            "renameat" | "renameat2" => Some(Op::Rename {
                from: path_arg(arg(1))?,
                to: path_arg(arg(3))?,
            }),
            "unlink" => Some(Op::Unlink {
                path: path_arg(arg(0))?,
            }),
            "unlinkat" if !arg(2).contains("AT_REMOVEDIR") => Some(Op::Unlink {
                path: path_arg(arg(1))?,
            }),
            _ => None,
        };
    out.extend(op);
    Some(())
}

/// Split a syscall's argument list at top-level commas.
fn split_args(s: &str) -> Vec<String> {
    let (mut out, mut cur) = (Vec::new(), String::new());
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    for c in s.chars() {
        if quoted {
            cur.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
            continue;
        }
        match c {
            '"' => quoted = true,
            '<' | '[' | '{' | '(' => depth += 1,
            '>' | ']' | '}' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

/// `"\x41\x42"` (strace -xx) to bytes; a trailing `...` (cut short) is None.
fn unhex(s: &str) -> Option<Vec<u8>> {
    let body = s.strip_prefix('"')?;
    let (body, after) = body.rsplit_once('"')?;
    if after.starts_with("...") {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 4);
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
            out.push(u8::from_str_radix(std::str::from_utf8(b.get(i + 2..i + 4)?).ok()?, 16).ok()?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn path_arg(s: &str) -> Option<String> {
    String::from_utf8(unhex(s)?).ok()
}

/// `3<\x2f\x74>` (strace -y -xx) to (3, "/t").
fn fd_path(s: &str) -> Option<(i64, String)> {
    let (fd, rest) = s.split_once('<')?;
    let path = rest.strip_suffix('>')?;
    let path = String::from_utf8(unhex(&format!("\"{path}\""))?).ok()?;
    Some((fd.trim().parse().ok()?, path))
}

fn apply(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { off, data, .. } | Op::SyncedWrite { off, data, .. } => {
            let end = *off as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*off as usize..end].copy_from_slice(data);
        }
        Op::Truncate { len, .. } => buf.resize(*len as usize, 0),
        Op::Zero { off, len, .. } => {
            let end = (*off + *len) as usize;
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*off as usize..end].fill(0);
        }
        _ => {}
    }
}

/// How the operations after the last sync fare at the cut.
#[derive(Debug, Clone)]
pub enum Loss {
    /// All of them are lost.
    All,
    /// Each is kept, lost, or (a write) torn: a random subset of its
    /// 512-byte sectors lands.
    Random(Rng),
}

/// The content of `path` on the disk after a power cut following the first
/// `cut` operations, starting from `base`.
pub fn file_after_cut(base: &[u8], ops: &[Op], path: &str, cut: usize, mut loss: Loss) -> Vec<u8> {
    let mine =
        |op: &&Op| op.data_path() == Some(path) || matches!(op, Op::Sync { path: p } if p == path);
    let before = &ops[..cut.min(ops.len())];
    let synced = before
        .iter()
        .rposition(|op| matches!(op, Op::Sync { path: p } if p == path))
        .map_or(0, |i| i + 1);
    let mut buf = base.to_vec();
    for op in before[..synced].iter().filter(mine) {
        apply(&mut buf, op);
    }
    for op in before[synced..].iter().filter(mine) {
        // Only what was synced on its own survives for sure.
        if matches!(op, Op::SyncedWrite { .. }) {
            apply(&mut buf, op);
            continue;
        }
        let Loss::Random(rng) = &mut loss else {
            continue;
        };
        match (rng.below(3), op) {
            (0, _) => apply(&mut buf, op),
            (1, _) => {}
            (_, Op::Write { path, off, data }) => {
                for (i, sector) in data.chunks(512).enumerate() {
                    if rng.below(2) == 0 {
                        let w = Op::Write {
                            path: path.clone(),
                            off: off + i as u64 * 512,
                            data: sector.to_vec(),
                        };
                        apply(&mut buf, &w);
                    }
                }
            }
            _ => apply(&mut buf, op),
        }
    }
    buf
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

/// Every content `target` may have (None: absent) after a power cut
/// following the first `cut` operations, given the files that existed
/// durably before (`initial`, path -> content). Exhaustive: each prefix of
/// the directory operations not yet made durable by a directory sync,
/// combined with each prefix of the unsynced data operations of the file
/// `target` then names.
pub fn paths_after_cut(
    initial: &HashMap<String, Vec<u8>>,
    ops: &[Op],
    cut: usize,
    target: &str,
) -> Vec<Option<Vec<u8>>> {
    // Inodes: durable content plus the data operations since its last sync.
    struct Inode {
        durable: Vec<u8>,
        pending: Vec<Op>,
    }
    let mut inodes: Vec<Inode> = Vec::new();
    let mut live: HashMap<String, usize> = HashMap::new();
    let mut durable_ns: HashMap<String, usize> = HashMap::new();
    // Directory operations not yet durable, as (path, inode or None) edits.
    let mut pending_ns: Vec<Vec<(String, Option<usize>)>> = Vec::new();
    for (p, c) in initial {
        inodes.push(Inode {
            durable: c.clone(),
            pending: Vec::new(),
        });
        live.insert(p.clone(), inodes.len() - 1);
        durable_ns.insert(p.clone(), inodes.len() - 1);
    }
    for op in &ops[..cut.min(ops.len())] {
        match op {
            Op::Create { path } => {
                if !live.contains_key(path) {
                    inodes.push(Inode {
                        durable: Vec::new(),
                        pending: Vec::new(),
                    });
                    live.insert(path.clone(), inodes.len() - 1);
                    pending_ns.push(vec![(path.clone(), Some(inodes.len() - 1))]);
                }
            }
            Op::Rename { from, to } => {
                if let Some(i) = live.remove(from) {
                    live.insert(to.clone(), i);
                    pending_ns.push(vec![(from.clone(), None), (to.clone(), Some(i))]);
                }
            }
            Op::Unlink { path } => {
                if live.remove(path).is_some() {
                    pending_ns.push(vec![(path.clone(), None)]);
                }
            }
            Op::Sync { path } => {
                if let Some(&i) = live.get(path) {
                    let ino = &mut inodes[i];
                    for op in std::mem::take(&mut ino.pending) {
                        apply(&mut ino.durable, &op);
                    }
                } else {
                    // A directory: its entries, and (journal order) every
                    // directory operation before the last one touching it.
                    let dir = path.trim_end_matches('/');
                    if let Some(last) = pending_ns
                        .iter()
                        .rposition(|e| e.iter().any(|(p, _)| parent(p) == dir))
                    {
                        for edit in pending_ns.drain(..=last) {
                            for (p, i) in edit {
                                match i {
                                    Some(i) => durable_ns.insert(p, i),
                                    None => durable_ns.remove(&p),
                                };
                            }
                        }
                    }
                }
            }
            _ => {
                if let Some(&i) = op.data_path().and_then(|p| live.get(p)) {
                    let ino = &mut inodes[i];
                    ino.pending.push(op.clone());
                    if matches!(op, Op::SyncedWrite { .. }) {
                        // Lenient (Linux syncs the range only): the file's
                        // earlier writes count as durable too. The saves
                        // checked here never write that way.
                        for op in std::mem::take(&mut ino.pending) {
                            apply(&mut ino.durable, &op);
                        }
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut ns = durable_ns;
    for k in 0..=pending_ns.len() {
        if k > 0 {
            for (p, i) in &pending_ns[k - 1] {
                match i {
                    Some(i) => ns.insert(p.clone(), *i),
                    None => ns.remove(p),
                };
            }
        }
        match ns.get(target) {
            None => out.push(None),
            Some(&i) => {
                let ino = &inodes[i];
                let mut c = ino.durable.clone();
                out.push(Some(c.clone()));
                for op in &ino.pending {
                    apply(&mut c, op);
                    out.push(Some(c.clone()));
                }
            }
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> String {
        s.bytes().map(|b| format!("\\x{b:02x}")).collect()
    }

    #[test]
    fn parses_strace_lines() {
        let (d, f, t) = (hex("/d"), hex("/d/f"), hex("/d/.f.tmp"));
        let log = format!(
            "10 openat(AT_FDCWD, \"{t}\", O_WRONLY|O_CREAT|O_EXCL|O_CLOEXEC, 0600) = 3<{t}>\n\
             10 openat(AT_FDCWD, \"{f}\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 5<{f}>\n\
             10 write(3<{t}>, \"{}\", 2) = 2\n\
             11 pwrite64(3<{t}>, \"{}\", 1, 7 <unfinished ...>\n\
             10 fsync(4<{d}>) = 0\n\
             11 <... pwrite64 resumed>) = 1\n\
             10 fdatasync(3<{t}>) = -1 EIO (Input/output error)\n\
             10 rename(\"{t}\", \"{f}\") = 0\n\
             10 pwritev2(5<{f}>, [{{iov_base=\"{}\", iov_len=1}}], 1, 9, RWF_DSYNC) = 1\n",
            hex("ab"),
            hex("c"),
            hex("d")
        );
        let ops = parse(&log);
        assert_eq!(
            ops,
            vec![
                Op::Create {
                    path: "/d/.f.tmp".into()
                },
                Op::Create {
                    path: "/d/f".into()
                },
                Op::Truncate {
                    path: "/d/f".into(),
                    len: 0
                },
                Op::Write {
                    path: "/d/.f.tmp".into(),
                    off: 0,
                    data: b"ab".to_vec()
                },
                Op::Sync { path: "/d".into() },
                Op::Write {
                    path: "/d/.f.tmp".into(),
                    off: 7,
                    data: b"c".to_vec()
                },
                Op::Rename {
                    from: "/d/.f.tmp".into(),
                    to: "/d/f".into()
                },
                Op::SyncedWrite {
                    path: "/d/f".into(),
                    off: 9,
                    data: b"d".to_vec()
                },
            ]
        );
    }

    fn w(path: &str, off: u64, data: &[u8]) -> Op {
        Op::Write {
            path: path.into(),
            off,
            data: data.to_vec(),
        }
    }

    fn sync(path: &str) -> Op {
        Op::Sync { path: path.into() }
    }

    #[test]
    fn unsynced_writes_are_lost() {
        let ops = vec![w("/i", 0, b"aa"), sync("/i"), w("/i", 0, b"b")];
        assert_eq!(file_after_cut(b"", &ops, "/i", 3, Loss::All), b"aa");
        assert_eq!(file_after_cut(b"", &ops, "/i", 1, Loss::All), b"");
        // A write synced on its own survives; the plain one before it need not.
        let ops = vec![
            w("/i", 0, b"aa"),
            Op::SyncedWrite {
                path: "/i".into(),
                off: 2,
                data: b"s".to_vec(),
            },
        ];
        assert_eq!(file_after_cut(b"", &ops, "/i", 2, Loss::All), b"\0\0s");
    }

    /// The atomic replace pattern survives every cut; writing in place or
    /// renaming before the fsync does not.
    #[test]
    fn directory_model_sees_torn_replacements() {
        let initial: HashMap<String, Vec<u8>> = [("/d/f".to_string(), b"old".to_vec())].into();
        let create = Op::Create {
            path: "/d/t".into(),
        };
        let rename = Op::Rename {
            from: "/d/t".into(),
            to: "/d/f".into(),
        };
        let good = vec![
            create.clone(),
            w("/d/t", 0, b"new"),
            sync("/d/t"),
            rename.clone(),
            sync("/d"),
        ];
        for cut in 0..=good.len() {
            for c in paths_after_cut(&initial, &good, cut, "/d/f") {
                let c = c.expect("never absent");
                assert!(c == b"old" || c == b"new", "cut {cut}: {c:?}");
            }
        }
        assert_eq!(
            paths_after_cut(&initial, &good, 5, "/d/f"),
            vec![Some(b"new".to_vec())]
        );
        // No fsync before the rename: an empty file can be what is left.
        let torn = vec![create, w("/d/t", 0, b"new"), rename, sync("/d")];
        assert!(paths_after_cut(&initial, &torn, 4, "/d/f").contains(&Some(Vec::new())));
        // No directory fsync: the old file can come back after the save.
        let lost = &good[..4];
        assert!(paths_after_cut(&initial, lost, 4, "/d/f").contains(&Some(b"old".to_vec())));
    }
}
