//! The APTPL state file: persistent reservation state that must survive a
//! power loss (SPC-4 5.9.5, "Activate Persist Through Power Loss").
//!
//! While the last APTPL bit received is one, every change rewrites the file
//! atomically (temporary file, fsync, rename, fsync of the directory) before
//! the PERSISTENT RESERVE OUT returns GOOD; when APTPL goes back to zero the
//! file is removed, so a restart restores nothing. The format is plain text,
//! one `key=value` per line, in blocks:
//!
//! ```text
//! rtarget-pr 1
//! generation=7
//! reg
//! key=0x00000000000000aa
//! initiator=iqn.1994-05.com.redhat:abc,i,0x23d000000001
//! target=iqn.2026-11.org.rtarget:t1,t,0x0001
//! all_tg_pt=0
//! rel_port=1
//! holder=1
//! end
//! reservation_type=1
//! ```
//!
//! `holder=1` marks the registration holding the reservation (every
//! registrant holds an all-registrants one).
//!
//! Initiator and target ports are names a peer chose, and the file must
//! hold any of them (a newline in a name once split a line and left a file
//! the daemon refused to restore). Version 2 of the format percent-encodes
//! the `initiator` and `target` values: every byte outside printable ASCII
//! (`!`..`~`), and `%` itself, is written `%HH`. A file whose names need no
//! encoding is written as version 1, byte for byte what earlier releases
//! wrote and read; version 1 files are read as before (values raw).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::pr::{all_registrants, valid_type, PrState, Reservation};

/// Values are written as they are.
const MAGIC: &str = "rtarget-pr 1";
/// `initiator` and `target` values are percent-encoded.
const MAGIC_ENCODED: &str = "rtarget-pr 2";

/// Whether `v` can be written raw in a version 1 file.
fn plain(v: &str) -> bool {
    v.bytes().all(|b| b.is_ascii_graphic() && b != b'%')
}

/// `v` with every byte that is not printable ASCII, and `%`, as `%HH`.
pub(crate) fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_graphic() && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode`]; malformed escapes and non-UTF-8 results are
/// errors.
pub(crate) fn decode(v: &str) -> io::Result<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("name is not UTF-8"))
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// The file's text for `pr`.
pub(crate) fn render(pr: &PrState) -> String {
    let raw = pr
        .regs
        .iter()
        .all(|r| plain(&r.initiator) && plain(&r.target));
    let (magic, name): (_, fn(&str) -> String) = match raw {
        true => (MAGIC, str::to_string),
        false => (MAGIC_ENCODED, encode),
    };
    let mut s = format!("{magic}\ngeneration={}\n", pr.generation);
    for r in &pr.regs {
        s.push_str(&format!(
            "reg\nkey={:#018x}\ninitiator={}\ntarget={}\nall_tg_pt={}\nrel_port={}\nholder={}\nend\n",
            r.key,
            name(&r.initiator),
            name(&r.target),
            u8::from(r.all_tg_pt),
            r.rel_port,
            u8::from(pr.holds(r)),
        ));
    }
    if let Some(res) = &pr.reservation {
        s.push_str(&format!("reservation_type={}\n", res.rtype));
    }
    s
}

/// Parse a state file into `pr` (registrations, reservation, generation;
/// APTPL on). Nothing is changed when the file is malformed.
pub(crate) fn parse(text: &str, pr: &mut PrState) -> io::Result<()> {
    let mut lines = text.lines();
    let name: fn(&str) -> io::Result<String> = match lines.next() {
        Some(MAGIC) => |v| Ok(v.to_string()),
        Some(MAGIC_ENCODED) => decode,
        _ => return Err(bad("not an rtarget persistent reservation file")),
    };
    let mut out = PrState::default();
    let mut holder = None;
    let mut rtype = None;
    let mut cur: Option<(u64, String, String, bool, u16, bool)> = None;
    for line in lines {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match (line, cur.as_mut()) {
            ("reg", None) => cur = Some((0, String::new(), String::new(), false, 0, false)),
            ("end", Some(_)) => {
                let Some((key, i, t, all, rel, h)) = cur.take() else {
                    continue;
                };
                if i.is_empty() || (t.is_empty() && !all) {
                    return Err(bad("registration without initiator or target"));
                }
                let id = out.add(key, i, t, all, rel);
                if h {
                    holder = Some(id);
                }
            }
            (_, cur) => {
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| bad("line without '='"))?;
                let num = |v: &str| -> io::Result<u64> {
                    let r = match v.strip_prefix("0x") {
                        Some(h) => u64::from_str_radix(h, 16),
                        None => v.parse(),
                    };
                    r.map_err(|_| bad("bad number"))
                };
                match (k, cur) {
                    ("key", Some(c)) => c.0 = num(v)?,
                    ("initiator", Some(c)) => c.1 = name(v)?,
                    ("target", Some(c)) => c.2 = name(v)?,
                    ("all_tg_pt", Some(c)) => c.3 = num(v)? != 0,
                    ("rel_port", Some(c)) => {
                        c.4 = u16::try_from(num(v)?).map_err(|_| bad("bad rel_port"))?
                    }
                    ("holder", Some(c)) => c.5 = num(v)? != 0,
                    ("generation", None) => {
                        out.generation =
                            u32::try_from(num(v)?).map_err(|_| bad("bad generation"))?
                    }
                    ("reservation_type", None) => {
                        rtype = Some(u8::try_from(num(v)?).map_err(|_| bad("bad type"))?)
                    }
                    _ => return Err(bad("unexpected line")),
                }
            }
        }
    }
    if cur.is_some() {
        return Err(bad("unterminated registration"));
    }
    if let Some(t) = rtype {
        if !valid_type(t) || out.regs.is_empty() {
            return Err(bad("bad reservation"));
        }
        let holder = if all_registrants(t) {
            None
        } else {
            Some(holder.ok_or_else(|| bad("reservation without holder"))?)
        };
        out.reservation = Some(Reservation { holder, rtype: t });
    }
    out.aptpl = true;
    out.file = pr.file.take();
    out.live = std::mem::take(&mut pr.live);
    *pr = out;
    Ok(())
}

/// Write `text` to `path` atomically: a crash leaves the old or the new
/// file, never a torn one.
fn write_atomic(path: &Path, text: &str) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    durable::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Bring the state file in line with `pr` after a change: written while
/// APTPL is active, removed otherwise. No file configured: nothing to do.
pub(crate) fn sync(pr: &PrState) -> io::Result<()> {
    let Some(path) = &pr.file else {
        return Ok(());
    };
    if pr.aptpl {
        return write_atomic(path, &render(pr));
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        // The removal is only durable once the directory is synced: without
        // it a power cut can bring back the state APTPL=0 just dropped.
        Ok(()) => match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => File::open(d)?.sync_all(),
            _ => File::open(".")?.sync_all(),
        },
    }
}

impl crate::Device {
    /// Keep APTPL persistent reservation state in `path` (LIO keeps it in
    /// `/var/target/pr/aptpl_<wwn>`). Whatever a previous run saved there is
    /// restored now: registrations, the reservation, the generation, and
    /// APTPL stays active. From then on every PERSISTENT RESERVE OUT with
    /// APTPL=1 in effect rewrites it atomically. A file that cannot be read
    /// or parsed is an error and leaves the device's state unchanged.
    pub fn set_pr_state_file(&self, path: std::path::PathBuf) -> io::Result<()> {
        let text = match fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let res = &self.state.res;
        let mut inner = res.lock();
        let mut pr = inner.pr.clone();
        pr.file = Some(path);
        if let Some(text) = text {
            parse(&text, &mut pr)?;
        }
        inner.pr = pr;
        res.publish(&inner);
        Ok(())
    }
}

/// Fuzz entry (fuzz/fuzz_targets/aptpl.rs): parse untrusted file text; what
/// parses must render to a file that parses back to the same state.
#[cfg(feature = "fuzzing")]
pub fn fuzz_pr_file(text: &str) {
    let mut pr = PrState::default();
    if parse(text, &mut pr).is_err() {
        return;
    }
    let saved = render(&pr);
    let mut again = PrState::default();
    parse(&saved, &mut again).expect("a rendered state file parses");
    assert_eq!(render(&again), saved, "state file round trip");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PrState {
        let mut pr = PrState {
            generation: 9,
            ..PrState::default()
        };
        pr.add(0xaa, "iqn.x:a,i,0x1".into(), "iqn.t,t,0x1".into(), false, 1);
        let b = pr.add(0xbb, "iqn.x:b".into(), "iqn.t,t,0x1".into(), true, 0);
        pr.live.push(crate::pr::LiveNexus {
            id: 3,
            initiator_port: "iqn.x:a,i,0x1".into(),
            target_port: "iqn.t,t,0x1".into(),
        });
        pr.reservation = Some(Reservation {
            holder: Some(b),
            rtype: 3,
        });
        pr.aptpl = true;
        pr
    }

    #[test]
    fn render_parse_round_trip() {
        let pr = sample();
        let mut back = PrState::default();
        parse(&render(&pr), &mut back).expect("parse");
        assert_eq!(back.generation, 9);
        assert_eq!(back.regs.len(), 2);
        assert_eq!(back.regs[0].key, 0xaa);
        assert_eq!(back.regs[1].initiator, "iqn.x:b");
        assert!(back.regs[1].all_tg_pt);
        assert!(back.live.is_empty(), "nexus ids do not survive");
        assert_eq!(back.holder_key(), Some(0xbb));
        assert_eq!(back.reservation.as_ref().map(|r| r.rtype), Some(3));
        assert!(back.aptpl);
    }

    #[test]
    fn malformed_files_are_refused_without_change() {
        let good = render(&sample());
        let cases = [
            String::new(),
            "rtarget-pr 3\n".to_string(),
            good.replace("key=0x00000000000000aa", "key=zz"),
            good.replace("end\n", ""),
            good.replace("holder=1", "holder=0"),
            good.replace("reservation_type=3", "reservation_type=4"),
            good.replace("all_tg_pt=0", "bogus=1"),
        ];
        for text in cases {
            let mut pr = PrState {
                generation: 42,
                ..PrState::default()
            };
            assert!(parse(&text, &mut pr).is_err(), "{text:?}");
            assert_eq!(pr.generation, 42);
        }
    }

    /// Names no iSCSI login accepts any more, but the file must hold
    /// whatever reaches it (and what older releases let in).
    const HOSTILE: &[&str] = &[
        "iqn.x:a\nreg\nkey=0x1\nend",
        "iqn.x:cr\r",
        "iqn.x:\u{1b}[31mred",
        "iqn.x:100%25 % %zz",
        "iqn.x:a=b c\tq",
        " lead and trail ",
        "iqn.x:h\u{f6}st\u{202e}",
        "#not-a-comment",
        "end",
    ];

    fn hostile() -> PrState {
        let mut pr = sample();
        for (i, n) in HOSTILE.iter().enumerate() {
            pr.add(i as u64 + 1, format!("{n},i,0x1"), n.to_string(), false, 1);
        }
        let long = "n".repeat(8192) + "\n";
        pr.add(0x77, long.clone(), long, false, 2);
        pr
    }

    #[test]
    fn hostile_names_round_trip() {
        let pr = hostile();
        let text = render(&pr);
        assert!(text.starts_with("rtarget-pr 2\n"));
        assert_eq!(
            text.lines().count(),
            3 + pr.regs.len() * 8,
            "one value a line"
        );
        let mut back = PrState::default();
        parse(&text, &mut back).expect("parse");
        let names = |p: &PrState| {
            p.regs
                .iter()
                .map(|r| (r.key, r.initiator.clone(), r.target.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&back), names(&pr));
        assert_eq!(back.holder_key(), Some(0xbb));
        // Broken escapes are refused.
        for bad in ["%", "%4", "%zz", "%ff", "%+f"] {
            let t = text.replace("initiator=iqn.x:a,i,0x1", &format!("initiator={bad}"));
            assert!(parse(&t, &mut PrState::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn plain_names_keep_version_1() {
        // Files of earlier releases read as before, and what they could
        // read is still what is written when no name needs encoding.
        let text = render(&sample());
        assert!(text.starts_with("rtarget-pr 1\n"));
        assert!(text.contains("\ninitiator=iqn.x:a,i,0x1\n"));
        let old = "rtarget-pr 1\ngeneration=3\nreg\nkey=0x5\ninitiator=iqn.x:%41,i,0x1\n\
                   target=iqn.t,t,0x1\nall_tg_pt=0\nrel_port=1\nholder=0\nend\n";
        let mut back = PrState::default();
        parse(old, &mut back).expect("parse");
        assert_eq!(
            back.regs[0].initiator, "iqn.x:%41,i,0x1",
            "version 1 is raw"
        );
    }

    #[test]
    fn hostile_names_are_restored_by_a_new_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("aptpl_x");
        let mut pr = hostile();
        pr.file = Some(path.clone());
        sync(&pr).expect("write");
        let store = std::sync::Arc::new(crate::testutil::MemStore::new(1 << 20, false));
        let dev = crate::Device::new(crate::DeviceOptions::new("d", "wwn-1"), store);
        dev.set_pr_state_file(path).expect("restore");
        let back = dev.state.res.lock().pr.clone();
        assert_eq!(back.regs.len(), pr.regs.len());
        for (a, b) in back.regs.iter().zip(&pr.regs) {
            assert_eq!((&a.initiator, &a.target), (&b.initiator, &b.target));
        }
        assert!(back.aptpl);
    }

    #[test]
    fn sync_writes_while_aptpl_and_removes_after() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pr").join("aptpl_x");
        let mut pr = sample();
        pr.file = Some(path.clone());
        sync(&pr).expect("write");
        assert_eq!(fs::read_to_string(&path).expect("read"), render(&pr));
        assert!(!dir.path().join("pr").join("aptpl_x.tmp").exists());
        pr.aptpl = false;
        sync(&pr).expect("remove");
        assert!(!path.exists());
        sync(&pr).expect("already gone is fine");
    }
}
