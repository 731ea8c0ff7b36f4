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
ENGINE = AggregatingMergeTree
ORDER BY (session_id, tool_use_id, host, user_name)
SETTINGS non_replicated_deduplication_window = 100000;
