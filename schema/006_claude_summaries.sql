-- Session summaries. Claude Code writes a `summary` line at the top of a later
-- session file; it describes the conversation ending at message `leafUuid`,
-- usually in another file. The session it belongs to is resolved on read by
-- joining leaf_uuid to claude_messages.uuid, so the order files are read in
-- does not matter. The same summary repeated in several files is one row.
CREATE TABLE IF NOT EXISTS claude_summaries
(
    project       LowCardinality(String),
    leaf_uuid     String,
    summary       String,
    -- the session whose file holds the line (not the one it describes)
    file_session  String,
    source_file   String,
    source_offset UInt64,
    -- when the row was stored (the summary line has no time of its own): what retention expires by
    ingested_at   DateTime64(3, 'UTC') DEFAULT now64(3),
    -- Who wrote the row (identity.host / identity.user), stamped by the sink;
    -- part of the key so machines sharing a store never collide.
    host                        LowCardinality(String),
    user_name                   LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (project, leaf_uuid, host, user_name)
SETTINGS non_replicated_deduplication_window = 100000;
