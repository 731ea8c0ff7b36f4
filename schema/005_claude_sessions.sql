-- One logical row per session, folded from one partial row per entry.
-- Sums rely on exactly-once delivery (spooled batches + insert_deduplication_token),
-- min / max / uniq columns are idempotent on their own. Read with FINAL or GROUP BY.
-- Token and cost figures are not here (a response logged as several lines would
-- add its usage several times): they come from claude_requests. The summary is
-- not here either: a `summary` line names the session it describes through
-- `leafUuid`, which may sit in another file (see claude_summaries).
CREATE TABLE IF NOT EXISTS claude_sessions
(
    project            LowCardinality(String),
    session_id         String,
    project_path       SimpleAggregateFunction(max, String),
    git_branch         SimpleAggregateFunction(max, String),
    version            SimpleAggregateFunction(max, String),
    -- Nullable so rows without a timestamp do not drag the minimum to 1970:
    -- min() ignores NULLs.
    first_timestamp    SimpleAggregateFunction(min, Nullable(DateTime64(3, 'UTC'))),
    last_timestamp     SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    entries            SimpleAggregateFunction(sum, UInt64),
    -- user lines by kind: typed prompts, tool results, slash commands and their
    -- output, meta lines, subagent prompts, compact summaries, interruptions
    prompts            SimpleAggregateFunction(sum, UInt64),
    tool_results       SimpleAggregateFunction(sum, UInt64),
    slash_commands     SimpleAggregateFunction(sum, UInt64),
    meta_messages      SimpleAggregateFunction(sum, UInt64),
    subagent_prompts   SimpleAggregateFunction(sum, UInt64),
    compactions        SimpleAggregateFunction(sum, UInt64),
    interruptions      SimpleAggregateFunction(sum, UInt64),
    user_lines         SimpleAggregateFunction(sum, UInt64),
    -- assistant lines (one response is often several lines: count responses in claude_requests)
    assistant_lines    SimpleAggregateFunction(sum, UInt64),
    tool_calls         SimpleAggregateFunction(sum, UInt64),
    sidechain_entries  SimpleAggregateFunction(sum, UInt64),
    models             SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    -- Who wrote the row (identity.host / identity.user), stamped by the sink;
    -- part of the key so machines sharing a store never collide.
    host                        LowCardinality(String),
    user_name                   LowCardinality(String)
)
ENGINE = AggregatingMergeTree
ORDER BY (project, session_id, host, user_name)
-- A table quiet for a minute is merged into one part, which FINAL reads
-- without folding (the table holds one row per session: the merge is cheap).
SETTINGS non_replicated_deduplication_window = 100000,
         min_age_to_force_merge_seconds = 60, min_age_to_force_merge_on_partition_only = 1;

