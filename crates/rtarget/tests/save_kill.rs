//! SIGKILL during autosave never leaves a truncated or half-written
//! saveconfig.json: the daemon is killed at random moments while a client
//! streams configuration changes through the API, and the file must then
//! parse and be exactly one of the states the daemon wrote (every
//! acknowledged change, plus at most the one in flight).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
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
