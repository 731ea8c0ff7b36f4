//! Insight panels, each computed in ClickHouse from the tables the rule pack
//! fills (no extra state): tool execution times and failure modes, redundancy,
//! context efficiency, tool cost attribution, data exposure, and what is
//! happening now. Every query takes the standard filters (`from`, `to`,
//! `project`, `user`, `host`, `limit`) and the caller's scope; its SQL is the
//! one function named after it below.

use super::{
    echo, filters, rows, rows_with, ApiResult, ApiState, Req, CALLS, RANGE, SCOPE, TS_RANGE,
};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

/// Folded tool calls (call and result halves paired), in range and scope.
fn calls() -> String {
    format!("SELECT * FROM {CALLS} WHERE tool_name != '' AND {TS_RANGE} AND {SCOPE}")
}

/// Call → result times per tool (level 1) and the commonest errors per tool
/// (level 0) in one pass over the folded calls: the fold (`FINAL`) is most
/// of the cost, so it is paid once, not once per view.
fn tool_times_sql() -> String {
    format!(
        "SELECT grouping(error) AS level, tool_name, error, count() AS calls, countIf(has_result = 1) AS completed,
                countIf(is_error = 1) AS errors, round(avgIf(ms, has_result = 1), 1) AS avg_ms,
                quantileExactIf(0.5)(ms, has_result = 1) AS p50_ms, quantileExactIf(0.95)(ms, has_result = 1) AS p95_ms,
                maxIf(ms, has_result = 1) AS max_ms, sumIf(ms, has_result = 1) AS total_ms,
                calls AS occurrences, uniqExactIf(sid, is_error = 1) AS sessions,
                toString(max(timestamp)) AS last_seen
         FROM (SELECT tool_name, has_result, is_error, timestamp, cityHash64(session_id) AS sid,
                      greatest(0, dateDiff('millisecond', timestamp, result_timestamp)) AS ms,
                      if(is_error = 1, substringUTF8(error_message, 1, 160), NULL) AS error
               FROM ({}))
         GROUP BY GROUPING SETS ((tool_name), (tool_name, error))
         HAVING level = 1 OR error IS NOT NULL
         ORDER BY level DESC, if(level = 1, toInt64(total_ms), toInt64(calls)) DESC, tool_name, error
         LIMIT {{lim:UInt32}} BY level",
        calls()
    )
}

pub(super) async fn tool_times(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, RANGE, 20)?;
    let both = rows(&s, &tool_times_sql(), &f).await?;
    let times = level_rows(
        &both,
        1,
        &[
            "tool_name",
            "calls",
            "completed",
            "errors",
            "avg_ms",
            "p50_ms",
            "p95_ms",
            "max_ms",
            "total_ms",
        ],
    );
    let fails = level_rows(
        &both,
        0,
        &["tool_name", "error", "occurrences", "sessions", "last_seen"],
    );
    Ok(Json(
        json!({"filters": echo(&f), "tools": times, "failures": fails}),
    ))
}

/// Files read again within one session, and message texts logged more than
/// once (same content hash), with the bytes the repeats added. Sessions are
/// counted by a 64-bit hash of their id: a set of integers, not of strings,
/// is most of the difference on a large store.
fn redundancy_sql() -> [String; 2] {
    [
        format!(
            "SELECT file_path, sum(n) AS reads, sum(n - 1) AS repeated_reads, count() AS sessions,
                    max(n) AS max_reads_in_one_session
             FROM (SELECT session_id, file_path, count() AS n FROM claude_file_access
                   WHERE access_type = 'read' AND {TS_RANGE} AND {SCOPE} GROUP BY session_id, file_path)
             GROUP BY file_path HAVING repeated_reads > 0
             ORDER BY repeated_reads DESC, file_path LIMIT {{lim:UInt32}}"
        ),
        format!(
            "SELECT content_hash, count() AS copies, uniqExact(cityHash64(session_id)) AS sessions, any(content_length) AS bytes,
                    (copies - 1) * bytes AS repeated_bytes, any(message_kind) AS kind,
                    substringUTF8(any(content_preview), 1, 120) AS preview
             FROM claude_messages WHERE content_length > 0 AND {TS_RANGE} AND {SCOPE}
             GROUP BY content_hash HAVING copies > 1
             ORDER BY repeated_bytes DESC, content_hash LIMIT {{lim:UInt32}}"
        ),
    ]
}

pub(super) async fn redundancy(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, RANGE, 20)?;
    let [files, dups] = redundancy_sql();
    let (files, dups) = tokio::join!(rows(&s, &files, &f), rows(&s, &dups, &f));
    Ok(Json(
        json!({"filters": echo(&f), "repeated_reads": files?, "duplicate_content": dups?}),
    ))
}

/// Cache-hit ratio, context vs output overall (level 3) and per session
/// (level 0: the largest contexts first, with their compactions), in one
/// pass over the folded requests; compactions are joined to the listed
/// sessions only.
fn context_sql() -> String {
    format!(
        "SELECT level, project, session_id, requests, context_tokens, cache_read_tokens, output_tokens,
                cache_hit_ratio, context_per_output_token, max_context_tokens, max_utilization,
                c.compactions AS compactions
         FROM (SELECT grouping(project, session_id) AS level, project, session_id, count() AS requests,
                      sum(ctx) AS context_tokens, sum(cache_read) AS cache_read_tokens, sum(output) AS output_tokens,
                      round(if(context_tokens = 0, 0, cache_read_tokens / context_tokens), 4) AS cache_hit_ratio,
                      round(if(output_tokens = 0, 0, context_tokens / output_tokens), 2) AS context_per_output_token,
                      max(ctx) AS max_context_tokens, round(max(util), 4) AS max_utilization
               FROM (SELECT project, session_id, total_context_tokens AS ctx, cache_read_input_tokens AS cache_read,
                            output_tokens AS output, context_utilization AS util
                     FROM claude_requests FINAL WHERE {TS_RANGE} AND {SCOPE})
               GROUP BY GROUPING SETS ((), (project, session_id))
               ORDER BY level DESC, max_context_tokens DESC, session_id LIMIT {{lim:UInt32}} BY level) AS r
         LEFT JOIN (SELECT project, session_id, compactions FROM claude_sessions FINAL WHERE {SCOPE}) AS c
              USING (project, session_id)
         ORDER BY level DESC, max_context_tokens DESC, session_id"
    )
}

/// The figures of [`context_sql`] both levels share.
const CONTEXT_FIGURES: [&str; 8] = [
    "requests",
    "context_tokens",
    "cache_read_tokens",
    "output_tokens",
    "cache_hit_ratio",
    "context_per_output_token",
    "max_context_tokens",
    "max_utilization",
];

pub(super) async fn context(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, RANGE, 20)?;
    let both = rows(&s, &context_sql(), &f).await?;
    // No request in range: no totals row; the figures are zero.
    let totals = level_rows(&both, 3, &CONTEXT_FIGURES)
        .into_iter()
        .next()
        .unwrap_or_else(|| {
            CONTEXT_FIGURES
                .iter()
                .map(|k| (k.to_string(), json!(0)))
                .collect()
        });
    let keys: Vec<&str> = ["project", "session_id"]
        .into_iter()
        .chain(CONTEXT_FIGURES)
        .chain(["compactions"])
        .collect();
    let sessions = level_rows(&both, 0, &keys);
    Ok(Json(
        json!({"filters": echo(&f), "totals": totals, "sessions": sessions}),
    ))
}

/// Tokens and cost of the API requests that called each tool; a request that
/// made several calls is shared equally among them. A call knows its API
/// message id, and with the project that is its request's key: the calls
/// (folded: a call logged twice counts once) meet their requests on a 64-bit
/// hash of it, without the messages table (joining integers instead of
/// strings is 2.4x faster on a million messages, and a collision among a few
/// million keys is a ~1e-7 event).
fn tool_costs_sql() -> String {
    format!(
        "SELECT tool_name, count() AS calls, round(sum(tok / n)) AS tokens, round(sum(usd / n), 6) AS cost,
                round(sum(output / n)) AS output_tokens
         FROM (SELECT tool_name, req, count() OVER (PARTITION BY req) AS n
               FROM (SELECT cityHash64(project, message_id) AS req, tool_name FROM {CALLS}
                     WHERE tool_name != '' AND message_id != '' AND {TS_RANGE} AND {SCOPE})) AS c
         INNER JOIN (SELECT cityHash64(project, message_id) AS req, ifNull(cost, 0) AS usd, output_tokens AS output,
                            input_tokens + output_tokens + cache_creation_input_tokens + cache_read_input_tokens AS tok
                     FROM claude_requests FINAL WHERE {TS_RANGE} AND {SCOPE}) AS r
               USING (req)
         GROUP BY tool_name ORDER BY cost DESC, tool_name LIMIT {{lim:UInt32}}"
    )
}

pub(super) async fn tool_costs(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, RANGE, 20)?;
    let tools = rows(&s, &tool_costs_sql(), &f).await?;
    Ok(Json(json!({"filters": echo(&f), "tools": tools})))
}

/// Bytes of tool results sent to the model per file and per directory
/// (file tools; one pass, grouping sets: level 1 = file, 2 = directory), and
/// per command (Bash); sensitive files flagged. Accesses meet their results
/// on a 64-bit hash of (session, tool call): hashing and joining integers
/// costs half of doing it on the two strings. The results are the folded
/// calls (`FINAL`, cheap once a partition is one part: 20 % faster than
/// grouping the result halves). The scope filters the accesses only.
fn exposure_sql() -> [String; 2] {
    [
        format!(
            "SELECT grouping(file_path, directory) AS level, file_path, directory,
                    max(is_sensitive) AS sensitive, countIf(is_sensitive) AS sensitive_reads, count() AS reads,
                    sum(bytes) AS bytes, uniqExact(sid) AS sessions, uniqExact(file_path) AS files
             FROM (SELECT cityHash64(session_id, tool_use_id) AS call, cityHash64(session_id) AS sid,
                          file_path, directory, is_sensitive FROM claude_file_access
                   WHERE access_type IN ('read', 'search', 'list') AND {TS_RANGE} AND {SCOPE}) AS a
             INNER JOIN (SELECT cityHash64(session_id, tool_use_id) AS call, result_size AS bytes
                         FROM {CALLS} WHERE has_result = 1) AS r USING (call)
             GROUP BY GROUPING SETS ((file_path), (directory))
             ORDER BY level, bytes DESC, file_path, directory LIMIT {{lim:UInt32}} BY level"
        ),
        format!(
            "SELECT command, count() AS runs, sum(result_size) AS bytes FROM ({})
             WHERE tool_name = 'Bash' GROUP BY command ORDER BY bytes DESC, command LIMIT {{lim:UInt32}}",
            calls()
        ),
    ]
}

/// The columns `keys` of the rows at grouping `level`.
fn level_rows(all: &super::Rows, level: u64, keys: &[&str]) -> Vec<Value> {
    all.iter()
        .filter(|r| r.get("level").and_then(Value::as_u64) == Some(level))
        .map(|r| {
            keys.iter()
                .map(|k| (k.to_string(), r.get(*k).cloned().unwrap_or(Value::Null)))
                .collect::<serde_json::Map<String, Value>>()
                .into()
        })
        .collect()
}

pub(super) async fn exposure(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, RANGE, 20)?;
    let [both, cmds] = exposure_sql();
    let (both, cmds) = tokio::join!(rows(&s, &both, &f), rows(&s, &cmds, &f));
    let both = both?;
    let files = level_rows(
        &both,
        1,
        &["file_path", "sensitive", "reads", "bytes", "sessions"],
    );
    let dirs = level_rows(
        &both,
        2,
        &["directory", "sensitive_reads", "reads", "bytes", "files"],
    );
    Ok(Json(
        json!({"filters": echo(&f), "files": files, "directories": dirs, "commands": cmds?}),
    ))
}

/// Sessions active in the last `minutes` with their latest context size, and
/// today's (UTC) tokens and cost per project directory. Both windows are closed
/// above: a line dated in the future (a machine whose clock is ahead by more
/// than the 5 minutes of skew allowed here) is not "now", and on a store with
/// many such sessions the open window made the context lookup scan them all.
fn now_sql() -> [String; 2] {
    [
        format!(
            "WITH active AS (
               SELECT project, session_id, max(project_path) AS directory, max(last_timestamp) AS last
               FROM claude_sessions WHERE {SCOPE} GROUP BY project, session_id
               HAVING last >= now64(3) - toIntervalMinute({{minutes:UInt32}})
                  AND last <= now64(3) + toIntervalMinute(5))
             SELECT project, session_id, directory, toString(last) AS last_activity, ifNull(ctx, 0) AS context_tokens
             FROM active AS a
             LEFT JOIN (SELECT project, session_id, argMax(total_context_tokens, timestamp) AS ctx FROM claude_requests
                        WHERE session_id IN (SELECT session_id FROM active) GROUP BY project, session_id) AS r
                  USING (project, session_id)
             ORDER BY last_activity DESC, session_id LIMIT {{lim:UInt32}}"
        ),
        format!(
            "SELECT project, count() AS requests, sum(tok) AS tokens, sum(out) AS output_tokens,
                    round(sum(usd), 6) AS cost
             FROM (SELECT project, output_tokens AS out, ifNull(cost, 0) AS usd,
                          input_tokens + output_tokens + cache_creation_input_tokens + cache_read_input_tokens AS tok
                   FROM claude_requests FINAL
                   WHERE timestamp >= toStartOfDay(now64(3)) AND timestamp < toStartOfDay(now64(3)) + INTERVAL 1 DAY
                     AND {SCOPE})
             GROUP BY project ORDER BY tokens DESC, project LIMIT {{lim:UInt32}}"
        ),
    ]
}

pub(super) async fn now(State(s): State<ApiState>, req: Req) -> ApiResult {
    let minutes = match req.q.get("minutes").map(|v| v.trim()) {
        None | Some("") => 15,
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=1440).contains(&n) => n,
            _ => {
                return Err(super::ApiError::BadRequest(format!(
                    "`minutes` must be an integer from 1 to 1440, not `{v}`"
                )))
            }
        },
    };
    let mut q = req.q.clone();
    q.remove("minutes");
    let req = Req {
        q,
        scope: req.scope,
    };
    let f = filters(&req, &["project", "user", "host", "limit"], 50)?;
    let [active, today] = now_sql();
    let m = [("minutes", Value::from(minutes))];
    let (active, today) = tokio::join!(rows_with(&s, &active, &f, m), rows(&s, &today, &f));
    Ok(Json(
        json!({"filters": echo(&f), "minutes": minutes, "active_sessions": active?, "today_by_directory": today?}),
    ))
}
