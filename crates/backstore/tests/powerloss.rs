//! Backstores under power loss, not just process death: a seeded workload
//! (writes, FUA writes, discards, flushes) runs in a child process under
//! strace; every recorded write, sync and truncate of the image is then
//! replayed onto a disk model that loses what was not synced when the power
//! is cut after any one of them (all of it, or a seeded random subset with
//! torn sectors). At every cut every sector acknowledged before the cut (by
//! a flush that returned, or by its own FUA write) must read back, or a
//! value written after it.
//! - qcow2 (caches small enough that tables are evicted mid-run): the image
//!   must also open and `qemu-img check` find no corruption, which checks
//!   its metadata order.
//! - fileio: FUA rides on pwritev2(RWF_DSYNC), flush on fdatasync.
//!
//! A failure prints the seed: `POWERLOSS_SEED=N` replays it.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use backstore::powerloss::{self, Loss, Op, Rng};
use backstore::{Backstore, FileBackstore, FileOptions, Qcow2Backstore, Qcow2Options};

const SIZE: u64 = 32 << 20;
const CLUSTER: u64 = 4096;
const STEPS: usize = 200;
const CHILD_ENV: &str = "POWERLOSS_CHILD_DIR";
const BACKEND_ENV: &str = "POWERLOSS_BACKEND";

#[derive(Debug, Clone, Copy)]
enum Step {
    /// `sectors` 512-byte sectors at sector `at`, each stamped (step, sector).
    Write {
        at: u64,
        sectors: u64,
        fua: bool,
    },
    /// Whole clusters at sector `at` (cluster aligned).
    Discard {
        at: u64,
        sectors: u64,
    },
    Flush,
}

/// The workload for a seed: the child runs it, the parent derives from it
/// what each acknowledgement covered.
fn workload(seed: u64) -> Vec<Step> {
    let mut rng = Rng(seed);
    let total = SIZE / 512;
    let per_cluster = CLUSTER / 512;
    // A few hot areas, so writes hit the same L2 tables and clusters again
    // and discards free clusters that were written.
    let hot: Vec<u64> = (0..6).map(|_| rng.below(total - 4096)).collect();
    (0..STEPS)
        .map(|_| {
            let base = hot[rng.below(hot.len() as u64) as usize] + rng.below(2048);
            match rng.below(20) {
                0..=2 => Step::Flush,
                3..=4 => Step::Discard {
                    at: base / per_cluster * per_cluster,
                    sectors: per_cluster * (1 + rng.below(4)),
                },
                _ => Step::Write {
                    at: base,
                    sectors: 1 + rng.below(24),
                    fua: rng.below(5) == 0,
                },
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

fn file_options(path: &Path) -> FileOptions {
    let mut o = FileOptions::new(path);
    o.size = Some(SIZE);
    o.rotational = Some(false);
    o
}

/// The traced side: run the workload, and after each flush or FUA write
/// that returned write its kind and step number to the marker file.
#[test]
fn powercut_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only runs as the parent's traced child
    };
    let dir = PathBuf::from(dir);
    let seed: u64 = std::env::var("POWERLOSS_SEED").unwrap().parse().unwrap();
    let store: Box<dyn Backstore> = match std::env::var(BACKEND_ENV).unwrap().as_str() {
        "qcow2" => Box::new(Qcow2Backstore::open(dir.join("img"), &small_caches()).unwrap()),
        _ => Box::new(FileBackstore::open(&file_options(&dir.join("img"))).unwrap()),
    };
    let mut marker = std::fs::File::create(dir.join("marker")).unwrap();
    let mut mark = |kind: char, i: usize| {
        use std::io::Write;
        marker
            .write_all(format!("{kind}{i:08}").as_bytes())
            .unwrap();
    };
    for (i, step) in workload(seed).into_iter().enumerate() {
        match step {
            Step::Write { at, sectors, fua } => {
                let buf: Vec<u8> = (at..at + sectors).flat_map(|s| stamp(i, s)).collect();
                if fua {
                    store.write_at_fua(&buf, at * 512).unwrap();
                    mark('U', i);
                } else {
                    store.write_at(&buf, at * 512).unwrap();
                }
            }
            Step::Discard { at, sectors } => store.discard(at * 512, sectors * 512).unwrap(),
            Step::Flush => {
                store.flush().unwrap();
                mark('F', i);
            }
        }
    }
}

/// What was acknowledged at a cut: every step before the last flush that
/// returned, and the FUA writes that returned.
#[derive(Clone, Default)]
struct Acked {
    flushed_before: Option<usize>,
    fua: HashSet<usize>,
}

impl Acked {
    fn covers(&self, i: usize) -> bool {
        self.flushed_before.is_some_and(|f| i < f) || self.fua.contains(&i)
    }
}

/// Per sector, what it may read after a cut: the last acknowledged value
/// (None: never written, or discarded: reads zero), and every value written
/// after it.
struct Expect {
    acked: HashMap<u64, Option<usize>>,
    later: HashMap<u64, Vec<Option<usize>>>,
}

fn expectations(steps: &[Step], acked: &Acked) -> Expect {
    let mut e = Expect {
        acked: HashMap::new(),
        later: HashMap::new(),
    };
    for (i, step) in steps.iter().enumerate() {
        let (at, n, v) = match *step {
            Step::Write { at, sectors, .. } => (at, sectors, Some(i)),
            Step::Discard { at, sectors } => (at, sectors, None),
            Step::Flush => continue,
        };
        for s in at..at + n {
            if acked.covers(i) {
                // What was written before an acknowledged value is gone.
                e.acked.insert(s, v);
                e.later.remove(&s);
            } else {
                e.later.entry(s).or_default().push(v);
            }
        }
    }
    e
}

/// Every sector the workload touched reads what `acked` allows.
fn check_sectors(read: impl Fn(u64, &mut [u8]), steps: &[Step], acked: &Acked, what: &str) {
    let e = expectations(steps, acked);
    let mut sectors: Vec<_> = e.acked.keys().chain(e.later.keys()).copied().collect();
    sectors.sort_unstable();
    sectors.dedup();
    let mut buf = vec![0u8; 512];
    for s in sectors {
        read(s, &mut buf);
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
}

/// The qcow2 image after a cut: it opens, its sectors are right, and (when
/// `qemu_check`) `qemu-img check` finds no corruption. Returns whether
/// clusters leaked.
fn check_qcow2(img: &Path, steps: &[Step], acked: &Acked, what: &str, qemu_check: bool) -> bool {
    let ro = Qcow2Options {
        read_only: true,
        ..Qcow2Options::default()
    };
    let q = Qcow2Backstore::open(img, &ro).unwrap_or_else(|e| panic!("{what}: open: {e}"));
    check_sectors(
        |s, buf| q.read_at(buf, s * 512).unwrap(),
        steps,
        acked,
        what,
    );
    if !qemu_check {
        return false;
    }
    let out = Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(img)
        .output()
        .expect("run qemu-img");
    let code = out.status.code().unwrap_or(-1);
    // 0: clean; 3: leaked clusters only (a cut between allocating a cluster
    // and pointing to it leaks it; qemu-img check -r leaks reclaims them).
    assert!(
        code == 0 || code == 3,
        "{what}: qemu-img check exit {code}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    code == 3
}

/// Trace the workload on `backend`, then cut the power after every image
/// operation.
fn power_cuts(backend: &str) {
    if backend == "qcow2" && !common::require_tool("qemu-img") {
        return;
    }
    if !powerloss::have_strace() {
        common::skip("strace is not installed");
        return;
    }
    let seed = powerloss::seed();
    eprintln!("POWERLOSS_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("img");
    match backend {
        "qcow2" => drop(Qcow2Backstore::create(&img, SIZE, CLUSTER).unwrap()),
        _ => drop(FileBackstore::open(&file_options(&img)).unwrap()),
    }
    let base = std::fs::read(&img).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "--exact",
            "powercut_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .env(BACKEND_ENV, backend)
        .env("POWERLOSS_SEED", seed.to_string());
    let ops = powerloss::trace(&child, dir.path(), &dir.path().join("strace.log"));
    let steps = workload(seed);
    let img_s = img.to_string_lossy().into_owned();
    let marker = dir.path().join("marker").to_string_lossy().into_owned();
    let syncs = ops
        .iter()
        .filter(|o| matches!(o, Op::Sync { path } if *path == img_s))
        .count();
    let synced_writes = ops
        .iter()
        .filter(|o| matches!(o, Op::SyncedWrite { path, .. } if *path == img_s))
        .count();
    assert!(
        syncs > 10,
        "the workload synced {syncs} times: nothing to cut"
    );
    // After each op: what the markers before it acknowledged.
    let mut acked = Vec::with_capacity(ops.len() + 1);
    let mut now = Acked::default();
    acked.push(now.clone());
    for op in &ops {
        if let Op::Write { path, data, .. } = op {
            if *path == marker {
                let text = std::str::from_utf8(data).unwrap();
                let i: usize = text[1..].parse().unwrap();
                match &text[..1] {
                    "F" => now.flushed_before = Some(i),
                    _ => {
                        now.fua.insert(i);
                    }
                }
            }
        }
        acked.push(now.clone());
    }
    let probe = dir.path().join("cut");
    let mut rng = Rng(seed);
    let (mut cuts, mut leaky, mut checks) = (0, 0, 0);
    // With everything unsynced lost the image only changes at a sync:
    // `qemu-img check` runs once per distinct image.
    let mut last_checked: Vec<u8> = Vec::new();
    // Every cut loses everything unsynced; a seeded random loss (subsets,
    // torn sectors) at every sixth cut and at each one right before a sync.
    for (cut, acked_then) in acked.iter().enumerate() {
        let before_sync = matches!(ops.get(cut), Some(Op::Sync { .. }));
        let mut modes = vec![("all lost", Loss::All)];
        if cut % 6 == 0 || before_sync {
            modes.push(("random loss", Loss::Random(Rng(rng.next_u64()))));
        }
        for (name, loss) in modes {
            let disk = powerloss::file_after_cut(&base, &ops, &img_s, cut, loss);
            let what = format!(
                "{backend}, seed {seed}, cut after op {cut}/{} ({name})",
                ops.len()
            );
            if backend == "qcow2" {
                std::fs::write(&probe, &disk).unwrap();
                let fresh = disk != last_checked;
                leaky += check_qcow2(&probe, &steps, acked_then, &what, fresh) as u32;
                if fresh {
                    checks += 1;
                    last_checked = disk;
                }
            } else {
                let read = |s: u64, buf: &mut [u8]| {
                    let at = (s * 512) as usize;
                    buf.fill(0);
                    if at < disk.len() {
                        let n = buf.len().min(disk.len() - at);
                        buf[..n].copy_from_slice(&disk[at..at + n]);
                    }
                };
                check_sectors(read, &steps, acked_then, &what);
            }
            cuts += 1;
        }
    }
    eprintln!(
        "{backend}: {cuts} power cuts over {} image operations ({syncs} syncs, {synced_writes} \
         synced writes): every acknowledged sector read back; {checks} distinct images passed \
         qemu-img check, {leaky} with leaked clusters",
        ops.len()
    );
}

#[test]
fn qcow2_metadata_survives_power_loss_at_every_point() {
    power_cuts("qcow2");
}

#[test]
fn fileio_acknowledged_writes_survive_power_loss_at_every_point() {
    power_cuts("file");
}
