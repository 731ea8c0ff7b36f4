//! The sink: batches rows, spools them durably, inserts them into ClickHouse
//! exactly once, then commits source checkpoints.

pub mod budget;
pub mod clickhouse;
pub mod cluster;
pub mod embedded;
pub mod grants;
pub mod identity;
pub mod migrations;
pub mod privacy;
pub mod retention;
pub mod spool;
pub mod status;
pub mod store;
pub mod testing;
pub mod writer;
