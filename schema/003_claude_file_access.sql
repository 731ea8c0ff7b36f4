-- One row per file touched by a tool call (Read / Write / Edit / MultiEdit /
-- NotebookEdit / Glob / Grep / LS ...), keyed by the call and the path.
CREATE TABLE IF NOT EXISTS claude_file_access
(
    session_id     String,
    project        LowCardinality(String),
    timestamp      DateTime64(3, 'UTC'),
    tool_use_id    String,
    message_uuid   String,
    tool_name      LowCardinality(String),
    file_path      String,
    access_type    LowCardinality(String),
    file_extension LowCardinality(String),
    directory      String,
    is_sensitive   Bool,
    labels         Array(LowCardinality(String)),
    -- Who wrote the row (identity.host / identity.user), stamped by the sink;
    -- part of the key so machines sharing a store never collide.
    host                        LowCardinality(String),
    user_name                   LowCardinality(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project, session_id, tool_use_id, file_path, host, user_name)
SETTINGS non_replicated_deduplication_window = 100000;
