//! The sink: batches rows, spools them durably, inserts them into ClickHouse
//! exactly once, then commits source checkpoints.

pub mod budget;
pub mod clickhouse;
pub mod embedded;
pub mod spool;
pub mod status;
pub mod store;
pub mod testing;
pub mod writer;
