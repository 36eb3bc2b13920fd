//! SIGKILL during autosave never leaves a truncated or half-written
//! saveconfig.json: the daemon is killed at random moments while a client
//! streams configuration changes through the API, and the file must then
//! parse and be exactly one of the states the daemon wrote (every
//! acknowledged change, plus at most the one in flight).
//!
//! The clock-timed kills rarely land inside a save's few system calls, so
//! a second test aims them: strace, attached to the daemon, delivers the
//! SIGKILL as the daemon enters the Nth open, unlink, write, fsync or rename
//! of saveconfig.json or its temporary file. A save that wrote the file in
//! place would be caught at its first write (an empty or partial file).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::host::Rng;
use common::*;

#[test]
fn sigkill_during_saves_leaves_a_whole_file() {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Seeded from the clock: kill times differ per iteration and per run.
    let mut rng = Rng(seed | 1);
    let started = Instant::now();
    let mut total_acked = 0;
    let mut in_flight_saved = 0;
    for iteration in 0..20 {
        let s = setup();
        let mut d = Daemon::start(&s.config, &s.socket, s.port);
        let stream = UnixStream::connect(&s.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        // Kill after a random number of acknowledged changes, while the
        // next one is being applied and saved.
        let kill_after = rng.next() % 12;
        let spin = Duration::from_micros(rng.next() % 3000);
        let mut acked = 0u64;
        loop {
            let req = format!(
                "{{\"op\":\"create\",\"path\":\"/backstores/ramdisk\",\"args\":{{\"name\":\"r{acked}\",\"size\":\"1M\"}}}}\n"
            );
            writer.write_all(req.as_bytes()).unwrap();
            if acked == kill_after {
                std::thread::sleep(spin);
                d.child.kill().unwrap();
                d.child.wait().unwrap();
                break;
            }
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            assert!(line.contains("\"ok\":true"), "{line}");
            acked += 1;
        }
        let text = std::fs::read_to_string(&s.config).unwrap();
        let cfg: config::SaveConfig = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("iteration {iteration}: saveconfig.json does not parse ({e}):\n{text}")
        });
        let names: Vec<&str> = cfg
            .storage_objects
            .iter()
            .map(|so| so.name.as_str())
            .collect();
        let n = names.len() as u64;
        assert!(
            n == acked || n == acked + 1,
            "iteration {iteration}: {n} objects saved, {acked} acknowledged"
        );
        let want: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        assert_eq!(names, want, "iteration {iteration}: a state never written");
        assert!(config::validate(&cfg).is_ok());
        total_acked += acked;
        if n == acked + 1 {
            in_flight_saved += 1;
        }
    }
    eprintln!(
        "{total_acked} changes acknowledged over 20 kills; {in_flight_saved} kills came after the in-flight change was saved"
    );
    assert!(total_acked > 0, "the kills came before any change");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// The kill lands on a system call of the save itself: as the daemon enters
/// the Nth (random) open, unlink, write, fsync or rename that names
/// saveconfig.json or its temporary file.
#[test]
fn sigkill_aimed_at_the_save_syscalls_leaves_a_whole_file() {
    if !common::host::require_tool("strace") {
        return;
    }
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed | 1);
    let mut hits: std::collections::BTreeMap<String, u32> = Default::default();
    let mut total_acked = 0;
    for iteration in 0..24 {
        let s = setup();
        let mut d = Daemon::start(&s.config, &s.socket, s.port);
        let pid = d.child.id();
        let dir = s.config.parent().unwrap();
        let tmp = dir.join(format!(".saveconfig.json.tmp-{pid}"));
        let log = dir.join("strace.log");
        // strace counts each system call on its own: pick one, then one of
        // its calls in the first ten saves (a save opens the file to compare,
        // unlinks a stale temporary file, creates, writes, fsyncs and
        // renames it).
        let call = ["openat", "unlink", "write", "fsync", "rename"][iteration % 5];
        let per_save = if call == "openat" { 2 } else { 1 };
        let nth = 1 + rng.next() % (10 * per_save);
        let mut st = Command::new("strace")
            .args([
                "-f",
                "-qq",
                "-y",
                "-e",
                "trace=openat,unlink,write,fsync,rename",
            ])
            .arg("-e")
            .arg(format!("inject={call}:signal=SIGKILL:when={nth}"))
            .arg("-P")
            .arg(&s.config)
            .arg("-P")
            .arg(&tmp)
            .arg("-o")
            .arg(&log)
            .arg("-p")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // strace says nothing once attached (-qq): wait until the daemon's
        // status shows a tracer.
        let attached = Instant::now();
        while !std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|t| {
            t.lines()
                .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
        }) {
            assert!(
                attached.elapsed() < Duration::from_secs(10),
                "strace did not attach"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let stream = UnixStream::connect(&s.socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut acked = 0u64;
        for i in 0..30 {
            let req = format!(
                "{{\"op\":\"create\",\"path\":\"/backstores/ramdisk\",\"args\":{{\"name\":\"r{i}\",\"size\":\"1M\"}}}}\n"
            );
            if writer.write_all(req.as_bytes()).is_err() {
                break;
            }
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(n) if n > 0 => {
                    assert!(line.contains("\"ok\":true"), "{line}");
                    acked += 1;
                }
                _ => break,
            }
        }
        let status = d.child.wait().unwrap();
        let _ = st.wait();
        let killed = std::os::unix::process::ExitStatusExt::signal(&status) == Some(9);
        let text = std::fs::read_to_string(&s.config).unwrap();
        let cfg: config::SaveConfig = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("iteration {iteration} (kill at {call} {nth}): saveconfig.json does not parse ({e}):\n{text}")
        });
        let names: Vec<&str> = cfg
            .storage_objects
            .iter()
            .map(|so| so.name.as_str())
            .collect();
        let n = names.len() as u64;
        assert!(
            n == acked || n == acked + 1,
            "iteration {iteration}: {n} objects saved, {acked} acknowledged"
        );
        let want: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        assert_eq!(names, want, "iteration {iteration}: a state never written");
        total_acked += acked;
        // What the kill interrupted: the last call strace logged.
        let traced = std::fs::read_to_string(&log).unwrap_or_default();
        let last = traced.lines().rev().find(|l| l.contains('('));
        let what = match last.and_then(|l| l.split_whitespace().nth(1)?.split_once('(')) {
            Some((name, _)) if killed => {
                let tmp = last.is_some_and(|l| l.contains(".tmp-"));
                format!("{name}{}", if tmp { " tmp" } else { "" })
            }
            _ => "(not killed)".into(),
        };
        *hits.entry(what).or_default() += 1;
        if !killed {
            let _ = d.child.kill();
        }
    }
    eprintln!("{total_acked} changes acknowledged over 24 aimed kills; killed entering: {hits:?}");
    assert!(
        hits.keys().any(|k| k.starts_with("rename")) && hits.keys().any(|k| k.starts_with("write")),
        "the kills missed the write or the rename: {hits:?}"
    );
}
