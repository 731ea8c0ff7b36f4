-- One logical row per session, folded from one partial row per entry.
-- Sums rely on exactly-once delivery (spooled batches + insert_deduplication_token),
-- min / max / uniq columns are idempotent on their own. Read with FINAL or GROUP BY.
CREATE TABLE IF NOT EXISTS claude_sessions
(
    project            LowCardinality(String),
    session_id         String,
    project_path       SimpleAggregateFunction(max, String),
    git_branch         SimpleAggregateFunction(max, String),
    version            SimpleAggregateFunction(max, String),
    -- Nullable so rows without a timestamp (summaries) do not drag the minimum to 1970:
    -- min() ignores NULLs.
    first_timestamp    SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    last_timestamp     SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    entries            SimpleAggregateFunction(sum, UInt64),
    user_messages      SimpleAggregateFunction(sum, UInt64),
    assistant_messages SimpleAggregateFunction(sum, UInt64),
    tool_calls         SimpleAggregateFunction(sum, UInt64),
    sidechain_entries  SimpleAggregateFunction(sum, UInt64),
    input_tokens       SimpleAggregateFunction(sum, UInt64),
    output_tokens      SimpleAggregateFunction(sum, UInt64),
    cache_creation_input_tokens SimpleAggregateFunction(sum, UInt64),
    cache_read_input_tokens     SimpleAggregateFunction(sum, UInt64),
    total_cost         SimpleAggregateFunction(sum, Float64),
    models             SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    summary            SimpleAggregateFunction(max, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (project, session_id)
SETTINGS non_replicated_deduplication_window = 100000;
