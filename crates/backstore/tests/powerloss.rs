//! qcow2 metadata ordering under power loss, not just process death: a
//! seeded workload (writes, discards, flushes, with caches small enough that
//! tables get evicted mid-run) runs in a child process under strace; every
//! recorded write, sync and truncate of the image is then replayed onto a
//! disk model that loses what was not synced when the power is cut after
//! any one of them (all of it, or a seeded random subset with torn
//! sectors). At every cut the image must open, `qemu-img check` must find
//! no corruption, and every sector acknowledged by a flush that returned
//! before the cut must read back (or a value written after that flush).
//! A failure prints the seed: `POWERLOSS_SEED=N` replays it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use backstore::powerloss::{self, Loss, Op, Rng};
use backstore::{Backstore, Qcow2Backstore, Qcow2Options};

const SIZE: u64 = 32 << 20;
const CLUSTER: u64 = 4096;
const STEPS: usize = 240;
const CHILD_ENV: &str = "POWERLOSS_QCOW2_CHILD";

#[derive(Debug, Clone, Copy)]
enum Step {
    /// `sectors` 512-byte sectors at sector `at`, each stamped (step, sector).
    Write {
        at: u64,
        sectors: u64,
    },
    /// Whole clusters at sector `at` (cluster aligned).
    Discard {
        at: u64,
        sectors: u64,
    },
    Flush,
}

/// The workload for a seed: the child runs it, the parent derives from it
/// what each flush acknowledged.
fn workload(seed: u64) -> Vec<Step> {
    let mut rng = Rng(seed);
    let total = SIZE / 512;
    let per_cluster = CLUSTER / 512;
    // A few hot areas, so writes hit the same L2 tables and clusters again
    // and discards free clusters that were written.
    let hot: Vec<u64> = (0..6).map(|_| rng.below(total - 4096)).collect();
    (0..STEPS)
        .map(|_| match rng.below(20) {
            0..=2 => Step::Flush,
            3..=4 => {
                let base = hot[rng.below(hot.len() as u64) as usize] + rng.below(2048);
                Step::Discard {
                    at: base / per_cluster * per_cluster,
                    sectors: per_cluster * (1 + rng.below(4)),
                }
            }
            _ => {
                let base = hot[rng.below(hot.len() as u64) as usize] + rng.below(2048);
                Step::Write {
                    at: base,
                    sectors: 1 + rng.below(24),
                }
            }
        })
        .collect()
}

fn stamp(step: usize, sector: u64) -> Vec<u8> {
    let mut s = Vec::with_capacity(512);
    while s.len() < 512 {
        s.extend_from_slice(&(step as u32 + 1).to_le_bytes());
        s.extend_from_slice(&(sector as u32).to_le_bytes());
    }
    s
}

fn small_caches() -> Qcow2Options {
    Qcow2Options {
        read_only: false,
        l2_cache_bytes: 3 * CLUSTER,
        refcount_cache_bytes: 2 * CLUSTER,
    }
}

/// The traced side: run the workload, and after each flush that returned
/// write its step number to the marker file.
#[test]
fn qcow2_powercut_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only runs as the parent's traced child
    };
    let dir = PathBuf::from(dir);
    let seed: u64 = std::env::var("POWERLOSS_SEED").unwrap().parse().unwrap();
    let q = Qcow2Backstore::open(dir.join("img.qcow2"), &small_caches()).unwrap();
    let mut marker = std::fs::File::create(dir.join("marker")).unwrap();
    for (i, step) in workload(seed).into_iter().enumerate() {
        match step {
            Step::Write { at, sectors } => {
                let buf: Vec<u8> = (at..at + sectors).flat_map(|s| stamp(i, s)).collect();
                q.write_at(&buf, at * 512).unwrap();
            }
            Step::Discard { at, sectors } => q.discard(at * 512, sectors * 512).unwrap(),
            Step::Flush => {
                q.flush().unwrap();
                use std::io::Write;
                marker.write_all(format!("{i:08}").as_bytes()).unwrap();
            }
        }
    }
}

/// Per sector, what it may read after a cut: the value acknowledged by the
/// last flush that returned (None: never written or discarded, reads zero),
/// and every value written after it.
struct Expect {
    acked: HashMap<u64, Option<usize>>,
    later: HashMap<u64, Vec<Option<usize>>>,
}

fn expectations(steps: &[Step], acked_through: Option<usize>) -> Expect {
    let mut e = Expect {
        acked: HashMap::new(),
        later: HashMap::new(),
    };
    for (i, step) in steps.iter().enumerate() {
        let (at, n, v) = match *step {
            Step::Write { at, sectors } => (at, sectors, Some(i)),
            Step::Discard { at, sectors } => (at, sectors, None),
            Step::Flush => continue,
        };
        for s in at..at + n {
            if acked_through.is_some_and(|a| i < a) {
                e.acked.insert(s, v);
            } else {
                e.later.entry(s).or_default().push(v);
            }
        }
    }
    e
}

fn check_cut(img: &Path, steps: &[Step], acked_through: Option<usize>, what: &str) -> bool {
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(img)
        .output()
        .expect("run qemu-img");
    let code = out.status.code().unwrap_or(-1);
    let text = String::from_utf8_lossy(&out.stdout);
    // 0: clean; 3: leaked clusters only (a cut between allocating a cluster
    // and pointing to it leaks it; qemu-img check -r leaks reclaims them).
    assert!(
        code == 0 || code == 3,
        "{what}: qemu-img check exit {code}:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ro = Qcow2Options {
        read_only: true,
        ..Qcow2Options::default()
    };
    let q = Qcow2Backstore::open(img, &ro).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    let e = expectations(steps, acked_through);
    let mut sectors: Vec<_> = e.acked.keys().chain(e.later.keys()).copied().collect();
    sectors.sort_unstable();
    sectors.dedup();
    let mut buf = vec![0u8; 512];
    for s in sectors {
        q.read_at(&mut buf, s * 512).unwrap();
        let got = if buf.iter().all(|&b| b == 0) {
            None
        } else {
            let step = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
            assert!(step > 0, "{what}: sector {s} holds something never written");
            assert_eq!(
                buf,
                stamp(step - 1, s),
                "{what}: sector {s} torn or misplaced"
            );
            Some(step - 1)
        };
        let acked = e.acked.get(&s).copied().flatten();
        let later = e.later.get(&s).map_or(&[][..], Vec::as_slice);
        assert!(
            got == acked || later.contains(&got),
            "{what}: sector {s} reads {got:?}; acknowledged {acked:?}, written later {later:?}"
        );
    }
    code == 3
}

#[test]
fn qcow2_metadata_survives_power_loss_at_every_point() {
    if !common::require_tool("qemu-img") {
        return;
    }
    if !powerloss::have_strace() {
        common::skip("strace is not installed");
        return;
    }
    let seed = powerloss::seed();
    eprintln!("POWERLOSS_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img.qcow2");
    drop(Qcow2Backstore::create(&img, SIZE, CLUSTER).unwrap());
    let base = std::fs::read(&img).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "qcow2_powercut_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .env("POWERLOSS_SEED", seed.to_string());
    let ops = powerloss::trace(&child, dir.path(), &dir.path().join("strace.log"));
    let steps = workload(seed);
    let img_s = img.to_string_lossy().into_owned();
    let marker = dir.path().join("marker").to_string_lossy().into_owned();
    let syncs = ops
        .iter()
        .filter(|o| matches!(o, Op::Sync { path } if *path == img_s))
        .count();
    assert!(
        syncs > 10,
        "the workload synced {syncs} times: nothing to cut"
    );
    // After each op: the flush acknowledged last (its marker came before).
    let mut acked = Vec::with_capacity(ops.len() + 1);
    let mut last = None;
    acked.push(None);
    for op in &ops {
        if let Op::Write { path, data, .. } = op {
            if *path == marker {
                last = Some(std::str::from_utf8(data).unwrap().parse::<usize>().unwrap());
            }
        }
        acked.push(last);
    }
    let probe = dir.path().join("cut.qcow2");
    let mut rng = Rng(seed);
    let (mut cuts, mut leaky) = (0, 0);
    // Every cut loses everything unsynced; a seeded random loss (subsets,
    // torn sectors) at every third cut and at each one right before a sync.
    for (cut, &acked_then) in acked.iter().enumerate() {
        let before_sync = matches!(ops.get(cut), Some(Op::Sync { .. }));
        let mut modes = vec![("all lost", Loss::All)];
        if cut % 3 == 0 || before_sync {
            modes.push(("random loss", Loss::Random(Rng(rng.next_u64()))));
        }
        for (name, loss) in modes {
            let disk = powerloss::file_after_cut(&base, &ops, &img_s, cut, loss);
            std::fs::write(&probe, &disk).unwrap();
            let what = format!("seed {seed}, cut after op {cut}/{} ({name})", ops.len());
            leaky += check_cut(&probe, &steps, acked_then, &what) as u32;
            cuts += 1;
        }
    }
    eprintln!(
        "{cuts} power cuts over {} image operations ({syncs} syncs): all opened, no corruption, \
         every acknowledged sector read back; {leaky} left leaked clusters",
        ops.len()
    );
}
