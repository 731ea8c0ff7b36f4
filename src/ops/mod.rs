//! The operator's commands: `setup` (install the embedded engine and the
//! example plugins), `service` (run `ingest` under systemd / launchd) and
//! `sql` (read-only queries on the same store).

pub mod plugin_sdk;
pub mod service;
pub mod setup;
pub mod sql;
pub mod trial;
