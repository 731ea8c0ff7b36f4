-- Session replay and search (issue 13).
--
-- Thinking blocks: the `content` column keeps the conversational text only, so
-- a replay could not show what the model thought. One row per thinking block,
-- filled by rules/35-replay.yaml; keyed by session for the replay's lookup.
CREATE TABLE IF NOT EXISTS claude_thinking
(
    project      LowCardinality(String),
    session_id   String,
    message_uuid String,
    block_index  UInt32,
    timestamp    DateTime64(3, 'UTC'),
    thinking     String CODEC(ZSTD(3)),
    host         LowCardinality(String),
    user_name    LowCardinality(String),
    source_file  String,
    source_offset UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (session_id, message_uuid, block_index)
SETTINGS non_replicated_deduplication_window = 100000;

-- Full-text search: an inverted index over the lowered text of every message
-- (prompts, replies, tool results) and every tool call's input. The API's search
-- queries `hasAllTokens(lower(col), ...)`, which this index answers. Parts written
-- before the index existed are still searched, only without the index.
ALTER TABLE claude_messages ADD INDEX IF NOT EXISTS content_text lower(content) TYPE text(tokenizer = splitByNonAlpha);
ALTER TABLE claude_tool_usage ADD INDEX IF NOT EXISTS parameters_text lower(parameters) TYPE text(tokenizer = splitByNonAlpha);

-- The replay and the per-session insights read requests and file accesses of one
-- session; their sorting keys do not start with session_id.
ALTER TABLE claude_requests ADD INDEX IF NOT EXISTS session_bf session_id TYPE bloom_filter(0.01) GRANULARITY 1;
ALTER TABLE claude_messages ADD INDEX IF NOT EXISTS session_bf session_id TYPE bloom_filter(0.01) GRANULARITY 1;
