//! saveconfig.json under power loss: a child process saves a series of
//! configurations under strace, and the recorded creates, writes, fsyncs and
//! renames are replayed onto a file-system model that loses whatever was
//! not made durable (file data before its fsync, a rename before its
//! directory's fsync) when the power is cut after any one of them. At every
//! cut, every possible outcome must be a whole configuration: the last one
//! whose save returned, or the one being saved; never a torn or empty file,
//! and never an older one once a save returned.

mod common;

use std::collections::HashMap;
use std::process::Command;

use backstore::powerloss::{self, Op};

const CHILD_ENV: &str = "SAVE_POWERCUT_CHILD";
const SAVES: usize = 6;

/// Configuration `k`: ramdisks r0..r(k-1).
fn config_with(k: usize) -> config::SaveConfig {
    let objects: Vec<String> = (0..k)
        .map(|i| format!(r#"{{"plugin":"ramdisk","name":"r{i}","size":1048576}}"#))
        .collect();
    config::parse_str(
        &format!(r#"{{"storage_objects":[{}]}}"#, objects.join(",")),
        std::path::Path::new("test"),
    )
    .expect("a valid configuration")
}

#[test]
fn save_powercut_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only runs as the parent's traced child
    };
    let dir = std::path::PathBuf::from(dir);
    let mut marker = std::fs::File::create(dir.join("marker")).unwrap();
    for k in 1..=SAVES {
        config::save(&config_with(k), &dir.join("saveconfig.json")).unwrap();
        use std::io::Write;
        marker.write_all(&[k as u8]).unwrap();
    }
}

#[test]
fn saveconfig_is_whole_after_a_power_cut_anywhere() {
    if !powerloss::have_strace() {
        common::host::skip("strace is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("saveconfig.json");
    config::save(&config_with(0), &path).unwrap();
    let initial: HashMap<String, Vec<u8>> = [(
        path.to_string_lossy().into_owned(),
        std::fs::read(&path).unwrap(),
    )]
    .into();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "save_powercut_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path());
    let ops = powerloss::trace(&child, dir.path(), &dir.path().join("strace.log"));
    let target = path.to_string_lossy().into_owned();
    let marker = dir.path().join("marker").to_string_lossy().into_owned();
    let renames = ops
        .iter()
        .filter(|o| matches!(o, Op::Rename { .. }))
        .count();
    assert_eq!(renames, SAVES, "one rename per save: {ops:?}");
    let mut acked = 0usize;
    let mut outcomes = 0;
    for cut in 0..=ops.len() {
        if let Some(Op::Write { path, data, .. }) = cut.checked_sub(1).map(|i| &ops[i]) {
            if *path == marker {
                acked = data[0] as usize;
            }
        }
        for c in powerloss::paths_after_cut(&initial, &ops, cut, &target) {
            let text = c.unwrap_or_else(|| panic!("cut after op {cut}: saveconfig.json is gone"));
            let cfg =
                config::parse_str(&String::from_utf8_lossy(&text), &path).unwrap_or_else(|e| {
                    panic!(
                        "cut after op {cut}: a torn saveconfig.json ({e}): {:?}",
                        String::from_utf8_lossy(&text)
                    )
                });
            let n = cfg.storage_objects.len();
            assert!(
                n == acked || n == acked + 1,
                "cut after op {cut}: configuration {n} on disk, {acked} saves had returned"
            );
            outcomes += 1;
        }
    }
    eprintln!(
        "{} power cuts over {SAVES} saves, {outcomes} possible outcomes: all whole, none older than the last save that returned",
        ops.len() + 1
    );
}
