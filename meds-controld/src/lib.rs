//! meds-controld: the unprivileged Meds controller.
//!
//! It owns the policy: [`store`] keeps it in SQLite, [`core`] is the single place where it
//! changes, [`api`] serves the REST API (Basic Auth), and [`grpc`] serves the sync stream the
//! dataplane connects to and the admin service behind `medsctl`; [`totals`] folds the
//! dataplane's counters per instance into persisted totals and [`metrics`] exposes them to
//! Prometheus. [`run`] wires them together.
//!
//! Must not: need root or any capability, touch packets, or trust what the dataplane sends
//! beyond counters and acknowledgements (which are validated).

pub mod api;
pub mod config;
pub mod core;
pub mod events;
pub mod explain;
pub mod feeds;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod store;
pub mod totals;

mod runtime;

pub use runtime::{RunError, run};
