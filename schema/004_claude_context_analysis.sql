-- One row per assistant entry that reports token usage: how full the context
-- was and how much of it came from the prompt cache. Ratios are derived here,
-- once, so every reader agrees on them.
CREATE TABLE IF NOT EXISTS claude_context_analysis
(
    uuid                        String,
    session_id                  String,
    project                     LowCardinality(String),
    timestamp                   DateTime64(3, 'UTC'),
    model                       LowCardinality(String),
    is_sidechain                Bool,
    input_tokens                UInt32,
    output_tokens               UInt32,
    cache_creation_input_tokens UInt32,
    cache_read_input_tokens     UInt32,
    context_window              UInt32,
    total_context_tokens        UInt64 MATERIALIZED toUInt64(input_tokens) + cache_creation_input_tokens + cache_read_input_tokens,
    cache_hit_ratio             Float64 MATERIALIZED if(total_context_tokens = 0, 0, cache_read_input_tokens / total_context_tokens),
    context_utilization         Float64 MATERIALIZED if(context_window = 0, 0, total_context_tokens / context_window)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (project, session_id, timestamp, uuid)
SETTINGS non_replicated_deduplication_window = 100000;
