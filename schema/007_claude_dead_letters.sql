-- Lines that could not be parsed, routed or mapped: kept with the reason and
-- the raw bytes so nothing is lost silently and the line can be replayed.
CREATE TABLE IF NOT EXISTS claude_dead_letters
(
    source_file   String,
    source_offset UInt64,
    line_length   UInt64,
    stage         LowCardinality(String),
    error         String,
    raw_line      String,
    raw_base64    String,
    raw_truncated Bool,
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    -- Who wrote the row (identity.host / identity.user), stamped by the sink;
    -- part of the key so machines sharing a store never collide.
    host                        LowCardinality(String),
    user_name                   LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (source_file, source_offset, stage, host, user_name)
SETTINGS non_replicated_deduplication_window = 100000;
