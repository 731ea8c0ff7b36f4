-- One row per Claude Code log entry that carries conversation content
-- (user / assistant / system / summary ...), as produced by the rule pack.
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
    entry_type                  LowCardinality(String),
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
    tool_use_count              UInt16,
    tool_result_count           UInt16,
    input_tokens                UInt32,
    output_tokens               UInt32,
    cache_creation_input_tokens UInt32,
    cache_read_input_tokens     UInt32,
    cost_estimate               Float64,
    contains_code               Bool,
    contains_file_paths         Bool,
    contains_sensitive_data     Bool,
    redaction_count             UInt16,
    labels                      Array(LowCardinality(String)),
    source_file                 String,
    source_offset               UInt64,
    ingested_at                 DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project, session_id, timestamp, uuid)
SETTINGS non_replicated_deduplication_window = 100000;
