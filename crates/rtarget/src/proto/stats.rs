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
    pub storage_objects: Vec<LuCounters>,
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
