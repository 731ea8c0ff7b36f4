-- One row per API request (an assistant response), the only source of token
-- and cost figures. Claude Code logs one response as several lines (one per
-- content block, plus streaming snapshots), each repeating the response's
-- `message.usage`; early snapshots carry a partial `output_tokens`. Every such
-- line is inserted here with the same key, and the ReplacingMergeTree keeps the
-- row with the highest `snapshot_rank` (largest output_tokens, ties broken by a
-- hash of the line's position so the winner does not depend on arrival order).
-- No partitioning: snapshots of one request around midnight at a month's end must
-- still meet in one part. Read with FINAL (or argMax by the key): then each request counts once, across
-- restarts, replays and live appends.
--
-- Key: the project (directory), the API message id and the request id. A session
-- continued with --resume repeats earlier requests in a new session file of the
-- same project; they were billed once, so they count once. Lines without a
-- message id get their own key (request_id = file:offset); lines with a message
-- id but no requestId (some Claude Code paths) dedupe by message id alone.
--
-- The key ends with (host, user_name), although an API message id is unique
-- worldwide: a request is billed to the machine whose Claude Code made it, and
-- only that machine's log files hold it (Claude Code keeps sessions per machine;
-- a `--resume` on another machine starts from that machine's own files). Without
-- the identity, the rows keyed by position (request_id = file:offset, for lines
-- without a message id) would collide between machines with the same paths, and
-- one machine's snapshots could replace another's. The one case it counts twice
-- is the same log files ingested by two machines (a synced ~/.claude): point
-- only one engine at a given set of files.
CREATE TABLE IF NOT EXISTS claude_requests
(
    project                     LowCardinality(String),
    message_id                  String,
    request_id                  String,
    session_id                  String,
    timestamp                   DateTime64(3, 'UTC'),
    model                       LowCardinality(String),
    is_sidechain                Bool,
    input_tokens                UInt64,
    output_tokens               UInt64,
    -- all cache writes; cache_creation_1h_tokens is the part written with a 1-hour TTL
    cache_creation_input_tokens UInt64,
    cache_creation_1h_tokens    UInt64,
    cache_read_input_tokens     UInt64,
    -- USD from the pricing table; NULL when the model has no price (`priced` false)
    cost                        Nullable(Float64),
    priced                      Bool,
    context_window              UInt32,
    uuid                        String,
    source_file                 String,
    source_offset               UInt64,
    snapshot_rank               UInt64 MATERIALIZED
        bitShiftLeft(output_tokens, 32) + (cityHash64(source_file, source_offset) % 4294967296),
    total_context_tokens        UInt64 MATERIALIZED input_tokens + cache_creation_input_tokens + cache_read_input_tokens,
    cache_hit_ratio             Float64 MATERIALIZED if(total_context_tokens = 0, 0, cache_read_input_tokens / total_context_tokens),
    context_utilization         Float64 MATERIALIZED if(context_window = 0, 0, total_context_tokens / context_window),
    -- Who wrote the row (identity.host / identity.user), stamped by the sink;
    -- part of the key so machines sharing a store never collide.
    host                        LowCardinality(String),
    user_name                   LowCardinality(String),
    -- The replay reads one session's requests (the key does not start with it).
    INDEX session_bf session_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree(snapshot_rank)
ORDER BY (project, message_id, request_id, host, user_name)
-- Once nothing has been written for five minutes, the parts are merged into
-- one: FINAL over a single part needs no fold (2-3x faster on a 1M-message
-- store). The wait bounds what the forced merge costs while Claude Code is in
-- use (~0.3 s of CPU per 333k requests, once per quiet spell).
SETTINGS non_replicated_deduplication_window = 100000,
         min_age_to_force_merge_seconds = 300, min_age_to_force_merge_on_partition_only = 1;
