//! The `stats` op: every storage object's core counters
//! (`target_core::stats`), for `rtarget top` and scripts. Counters only grow
//! from the object's opening; a reader takes two answers and divides the
//! differences by the time between them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use target_core::stats::{LuStats, OpClass, SENSE_KEYS};

/// `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// When the counters were read: nanoseconds on the daemon's monotonic
    /// clock (from its first `stats`). Rates divide by differences of it,
    /// so the time an answer spends reaching the client does not count.
    #[serde(default)]
    pub at_ns: u64,
    pub storage_objects: Vec<LuCounters>,
}

/// The daemon's clock for [`Stats::at_ns`].
pub fn clock_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let e = EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(e.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Completed commands of one class and the sum of their latencies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct OpCounters {
    pub commands: u64,
    pub nanos: u64,
}

/// One storage object's counters, every fabric together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LuCounters {
    /// Its path, e.g. `/backstores/fileio/disk1`.
    pub storage_object: String,
    /// Commands started and not answered yet.
    pub in_flight: u64,
    pub read: OpCounters,
    pub write: OpCounters,
    pub flush: OpCounters,
    pub other: OpCounters,
    pub read_bytes: u64,
    pub write_bytes: u64,
    /// CHECK CONDITIONs by sense key name (only keys answered).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub check_conditions: BTreeMap<String, u64>,
}

impl LuCounters {
    pub fn new(path: &str, s: &LuStats) -> LuCounters {
        let op = |c: OpClass| OpCounters {
            commands: s.class(c).count(),
            nanos: s.class(c).nanos,
        };
        LuCounters {
            storage_object: path.to_string(),
            in_flight: s.in_flight(),
            read: op(OpClass::Read),
            write: op(OpClass::Write),
            flush: op(OpClass::Flush),
            other: op(OpClass::Other),
            read_bytes: s.read_bytes,
            write_bytes: s.write_bytes,
            check_conditions: SENSE_KEYS
                .iter()
                .zip(s.sense)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.to_string(), n))
                .collect(),
        }
    }

    /// Every class's commands / latencies together.
    pub fn total(&self) -> OpCounters {
        [self.read, self.write, self.flush, self.other].iter().fold(
            OpCounters::default(),
            |a, c| OpCounters {
                commands: a.commands + c.commands,
                nanos: a.nanos + c.nanos,
            },
        )
    }
}
