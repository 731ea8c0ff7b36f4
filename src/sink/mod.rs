//! The sink: batches rows, spools them durably, inserts them into ClickHouse
//! exactly once, then commits source checkpoints.

pub mod clickhouse;
pub mod embedded;
pub mod testing;
pub mod status;
pub mod spool;
pub mod writer;
