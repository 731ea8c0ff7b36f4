-- One row per Claude Code log line that carries conversation content
-- (user / assistant / system), as produced by the rule pack. Token usage is not
-- here: one API response is often logged as several lines repeating the same
-- usage, so usage lives once per request in claude_requests.
-- ReplacingMergeTree keyed by the entry identity: a replayed insert that slips
-- past insert-deduplication still collapses to one row (read with FINAL).
CREATE TABLE IF NOT EXISTS claude_messages
(
    uuid                        String,
    parent_uuid                 String,
    session_id                  String,
    project                     LowCardinality(String),
    project_path                String,
    timestamp                   DateTime64(3, 'UTC'),
    -- The line had no usable timestamp: `timestamp` is the previous line's (or the file's).
    timestamp_inferred          Bool,
    entry_type                  LowCardinality(String),
    -- What the line is: prompt, tool_result, slash_command, command_output, meta,
    -- subagent_prompt, compact_summary, interrupt (user lines); response (assistant);
    -- system:<subtype> (system lines). Counts say what they count.
    message_kind                LowCardinality(String),
    -- The API message id (assistant lines): several lines can share one.
    message_id                  String,
    role                        LowCardinality(String),
    model                       LowCardinality(String),
    request_id                  String,
    user_type                   LowCardinality(String),
    is_sidechain                Bool,
    git_branch                  String,
    version                     LowCardinality(String),
    content                     String CODEC(ZSTD(3)),
    content_preview             String,
    content_hash                String,
    content_length              UInt32,
    tool_use_count              UInt32,
    tool_result_count           UInt32,
    contains_code               Bool,
    contains_file_paths         Bool,
    contains_sensitive_data     Bool,
    redaction_count             UInt32,
    labels                      Array(LowCardinality(String)),
    source_file                 String,
    source_offset               UInt64,
    ingested_at                 DateTime64(3, 'UTC') DEFAULT now64(3),
    -- Who wrote the row (identity.host / identity.user), stamped by the sink;
    -- part of the key so machines sharing a store never collide.
    host                        LowCardinality(String),
    user_name                   LowCardinality(String),
    -- Full-text search (the API's `hasAllTokens(lower(content), …)`) and the
    -- replay's per-session lookup (the key does not start with session_id).
    INDEX content_text lower(content) TYPE text(tokenizer = splitByNonAlpha),
    INDEX session_bf session_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project, session_id, timestamp, uuid, host, user_name)
SETTINGS non_replicated_deduplication_window = 100000;

