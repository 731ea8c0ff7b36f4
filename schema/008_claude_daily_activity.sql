-- Message counts per day and project, folded from claude_messages as rows
-- arrive (the view feeds the table on every insert). Exact: claude_messages
-- rows are written exactly once (spool + insert_deduplication_token, and the
-- view's blocks are deduplicated too). Token and cost figures are NOT here:
-- snapshots of one request arrive in different inserts, so they come from
-- claude_requests FINAL.
CREATE TABLE IF NOT EXISTS claude_daily_activity
(
    date       Date,
    project    LowCardinality(String),
    sessions   AggregateFunction(uniq, String),
    messages   SimpleAggregateFunction(sum, UInt64),
    prompts    SimpleAggregateFunction(sum, UInt64),
    tool_calls SimpleAggregateFunction(sum, UInt64),
    -- Who wrote the row (identity.host / identity.user), stamped by the sink;
    -- part of the key so machines sharing a store never collide.
    host                        LowCardinality(String),
    user_name                   LowCardinality(String)
)
ENGINE = AggregatingMergeTree
ORDER BY (date, project, host, user_name)
SETTINGS non_replicated_deduplication_window = 100000;

CREATE MATERIALIZED VIEW IF NOT EXISTS claude_daily_activity_mv TO claude_daily_activity
AS SELECT
    toDate(timestamp)                          AS date,
    project,
    host,
    user_name,
    uniqState(session_id)                      AS sessions,
    toUInt64(count())                          AS messages,
    toUInt64(countIf(message_kind = 'prompt')) AS prompts,
    toUInt64(sum(tool_use_count))              AS tool_calls
FROM claude_messages
GROUP BY date, project, host, user_name;
