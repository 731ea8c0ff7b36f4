-- Thinking blocks, for the session replay: `claude_messages.content` keeps the
-- conversational text only. One row per thinking block, filled by
-- rules/35-replay.yaml; keyed by session for the replay's lookup, then by
-- identity like every table (see 001).
CREATE TABLE IF NOT EXISTS claude_thinking
(
    project                     LowCardinality(String),
    session_id                  String,
    message_uuid                String,
    block_index                 UInt32,
    timestamp                   DateTime64(3, 'UTC'),
    thinking                    String CODEC(ZSTD(3)),
    source_file                 String,
    source_offset               UInt64,
    host                        LowCardinality(String),
    user_name                   LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY (session_id, message_uuid, block_index, host, user_name)
SETTINGS non_replicated_deduplication_window = 100000;
