//! Configuration management without a daemon: pure functions on the typed
//! saveconfig model (`config`), reusable by any front end and testable
//! alone. [`ops`] (with [`ops_edit`], [`ops_backstore`], [`ops_resize`]
//! and [`alua`]) are targetcli's verbs as edits of a config, [`tree`] its
//! object tree, [`args`] the verbs' arguments, [`prefs`] the global
//! preferences. [`reconcile`] computes the changes that bring a running
//! state built from one config in line with another, so a daemon starts
//! up (from the empty config) and applies live changes through one code
//! path. Nothing here opens a device, binds a socket or knows a session.

pub mod alua;
pub mod args;
pub mod examples;
pub mod handlers;
pub mod import_tgt;
pub mod locate;
pub mod ops;
pub mod ops_backstore;
pub mod ops_edit;
pub mod ops_loopback;
mod ops_naa;
pub mod ops_resize;
pub mod prefs;
pub mod reconcile;
pub mod reconcile_loopback;
pub mod reconcile_vhost;
pub mod tree;

pub use reconcile::{listen_set, relative_port_id, wanted_portals, Plan, TargetChange};
pub use reconcile_loopback::LoopbackChange;
pub use reconcile_vhost::{vhost_port_id, VhostChange};
