//! claude-ingest: tails Claude Code session logs (JSONL), routes every entry
//! through declarative YAML rules and sandboxed WASM plugins, and stores the
//! resulting rows in ClickHouse exactly once.
//!
//! The modules read like the pipeline:
//! `source` (discover / tail / checkpoint) → `parse` → `rules` + `plugins`
//! → `sink` (batch, spool, ClickHouse, dead letters) → `api` (HTTP + dashboard)
//! and `report` (ccusage-style usage reports on the command line).

pub mod api;
pub mod builtin;
pub mod config;
pub mod ops;
pub mod parse;
pub mod pipeline;
pub mod plugins;
pub mod report;
pub mod row;
pub mod rules;
pub mod sink;
pub mod source;
pub mod watch;
