-- Per day and project, folded from claude_messages as rows arrive: the table
-- holds the aggregates, the materialized view feeds it on every insert.
CREATE TABLE IF NOT EXISTS daily_session_summary
(
    date                        Date,
    project                     LowCardinality(String),
    sessions                    AggregateFunction(uniq, String),
    messages                    SimpleAggregateFunction(sum, UInt64),
    user_messages               SimpleAggregateFunction(sum, UInt64),
    assistant_messages          SimpleAggregateFunction(sum, UInt64),
    tool_calls                  SimpleAggregateFunction(sum, UInt64),
    input_tokens                SimpleAggregateFunction(sum, UInt64),
    output_tokens               SimpleAggregateFunction(sum, UInt64),
    cache_creation_input_tokens SimpleAggregateFunction(sum, UInt64),
    cache_read_input_tokens     SimpleAggregateFunction(sum, UInt64),
    cost                        SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
ORDER BY (date, project)
-- The view's blocks are deduplicated too (deduplicate_blocks_in_dependent_materialized_views),
-- which needs a dedup window on this table as well.
SETTINGS non_replicated_deduplication_window = 100000;

CREATE MATERIALIZED VIEW IF NOT EXISTS daily_session_summary_mv TO daily_session_summary
AS SELECT
    toDate(timestamp)                          AS date,
    project,
    uniqState(session_id)                      AS sessions,
    toUInt64(count())                          AS messages,
    toUInt64(countIf(entry_type = 'user'))     AS user_messages,
    toUInt64(countIf(entry_type = 'assistant')) AS assistant_messages,
    toUInt64(sum(tool_use_count))              AS tool_calls,
    toUInt64(sum(input_tokens))                AS input_tokens,
    toUInt64(sum(output_tokens))               AS output_tokens,
    toUInt64(sum(cache_creation_input_tokens)) AS cache_creation_input_tokens,
    toUInt64(sum(cache_read_input_tokens))     AS cache_read_input_tokens,
    sum(cost_estimate)                         AS cost
FROM claude_messages
GROUP BY date, project;
