//! Configuration management without a daemon: pure functions on the typed
//! saveconfig model (`config`). [`reconcile`] computes the changes that
//! bring a running state built from one config in line with another, so a
//! daemon starts up (from the empty config) and applies live changes
//! through one code path. Nothing here opens a device, binds a socket or
//! knows a session; front ends (the rtarget daemon, tests, other tools)
//! apply the results.

pub mod reconcile;

pub use reconcile::{listen_set, relative_port_id, wanted_portals, Plan, TargetChange};
