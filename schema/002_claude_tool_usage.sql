-- One logical row per tool call. The tool_use block (assistant entry) and its
-- tool_result block (a later user entry) arrive as two partial rows with the
-- same (session_id, tool_use_id). Every other column is a SimpleAggregateFunction
-- whose neutral value ('' / 0 / epoch) loses to the real one, so merging - or
-- reading with FINAL / GROUP BY - pairs them no matter which arrived first, and
-- a duplicate partial row changes nothing (max is idempotent).
CREATE TABLE IF NOT EXISTS claude_tool_usage
(
    session_id        String,
    tool_use_id       String,
    project           SimpleAggregateFunction(max, String),
    message_uuid      SimpleAggregateFunction(max, String),
    -- The API message (`message.id`) the call was made in: with the project,
    -- the key of its request in claude_requests (tool cost attribution).
    message_id        SimpleAggregateFunction(max, String),
    result_uuid       SimpleAggregateFunction(max, String),
    timestamp         SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    tool_name         SimpleAggregateFunction(max, String),
    tool_category     SimpleAggregateFunction(max, String),
    file_path         SimpleAggregateFunction(max, String),
    command           SimpleAggregateFunction(max, String),
    query             SimpleAggregateFunction(max, String),
    parameters        SimpleAggregateFunction(max, String),
    is_sidechain      SimpleAggregateFunction(max, UInt8),
    labels            SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    has_result        SimpleAggregateFunction(max, UInt8),
    result_timestamp  SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    success           SimpleAggregateFunction(max, UInt8),
    is_error          SimpleAggregateFunction(max, UInt8),
    error_message     SimpleAggregateFunction(max, String),
    result_size       SimpleAggregateFunction(max, UInt64),
    result_preview    SimpleAggregateFunction(max, String),
    -- Who wrote the row (identity.host / identity.user), stamped by the sink;
    -- part of the key so machines sharing a store never collide.
    host                        LowCardinality(String),
    user_name                   LowCardinality(String),
    -- Full-text search over a tool call's input.
    INDEX parameters_text lower(parameters) TYPE text(tokenizer = splitByNonAlpha)
)
-- Partitioned by a hash of the session (both halves of a call share it, so
-- they meet in one partition), and a partition quiet for a minute is merged
-- into one part: FINAL then reads it as it is (ClickHouse skips the fold of a
-- single-part partition when the partition key is made of key columns), and
-- only partitions still being written (the live sessions') are folded while
-- read. On a 1M-message store the tool-usage panel went from ~110 ms (4
-- intersecting parts, every one spanning all sessions) to ~32 ms.
ENGINE = AggregatingMergeTree
PARTITION BY cityHash64(session_id) % 16
ORDER BY (session_id, tool_use_id, host, user_name)
SETTINGS non_replicated_deduplication_window = 100000,
         min_age_to_force_merge_seconds = 60, min_age_to_force_merge_on_partition_only = 1;
