//! Token, cost and session figures. Every token and cost figure reads
//! `claude_requests FINAL`: one row per API request with its final usage
//! snapshot, so a response that Claude Code logged as several lines counts
//! once. Message counts read `claude_messages` / `claude_sessions`, whose
//! `message_kind` says what each line is.

use super::{echo, filters, first, rows, ApiResult, ApiState, PROJECT, RANGE, TS_RANGE};
use axum::extract::{Query, State};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// One row per API request, the final snapshot (see schema/004_claude_requests.sql).
pub const REQUESTS: &str = "claude_requests FINAL";

/// Token and cost sums over requests, named as every endpoint names them
/// (`tokens` adds the sums above it: ClickHouse resolves those names to the aliases).
const TOKEN_SUMS: &str = "count() AS responses,
    sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
    sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
    sum(cache_read_input_tokens) AS cache_read_input_tokens,
    input_tokens + output_tokens + cache_creation_input_tokens + cache_read_input_tokens AS tokens,
    round(sum(ifNull(cost, 0)), 6) AS cost, countIf(NOT priced) AS unpriced_responses";

/// Session → summary: a summary line describes the conversation that ends at
/// its `leafUuid`, wherever that message was logged (often another file).
pub const SESSION_SUMMARIES: &str = "SELECT m.project AS project, m.session_id AS session_id,
        argMax(s.summary, m.timestamp) AS summary
    FROM claude_summaries AS s FINAL
    INNER JOIN (SELECT project, session_id, uuid, timestamp FROM claude_messages
                WHERE uuid IN (SELECT leaf_uuid FROM claude_summaries)) AS m ON m.uuid = s.leaf_uuid
    GROUP BY project, session_id";

pub(super) async fn overview(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, &["from", "to", "project"], 100)?;
    let scope = format!("{TS_RANGE} AND {PROJECT}");
    let messages = format!(
        "SELECT toDate(timestamp) AS day, uniqExact(session_id) AS sessions, count() AS messages,
                countIf(message_kind = 'prompt') AS prompts, sum(tool_use_count) AS tool_calls
         FROM claude_messages WHERE {scope} GROUP BY day"
    );
    let requests = format!(
        "SELECT toDate(timestamp) AS day, {TOKEN_SUMS} FROM {REQUESTS} WHERE {scope} GROUP BY day"
    );
    let daily = format!(
        "SELECT toString(day) AS day, * EXCEPT day FROM ({messages}) AS m FULL OUTER JOIN ({requests}) AS r USING day
         ORDER BY day"
    );
    let totals = format!(
        "SELECT * FROM
           (SELECT uniqExact(session_id) AS sessions, count() AS messages, countIf(message_kind = 'prompt') AS prompts,
                   sum(tool_use_count) AS tool_calls, uniqExact(project) AS projects,
                   toString(min(toDate(timestamp))) AS first_day, toString(max(toDate(timestamp))) AS last_day
            FROM claude_messages WHERE {scope}) AS m
         CROSS JOIN (SELECT {TOKEN_SUMS} FROM {REQUESTS} WHERE {scope}) AS r"
    );
    let projects = "SELECT DISTINCT project FROM claude_sessions ORDER BY project LIMIT 1000";
    let unpriced = format!(
        "SELECT model, count() AS responses, sum(input_tokens + output_tokens + cache_creation_input_tokens + cache_read_input_tokens) AS tokens
         FROM {REQUESTS} WHERE NOT priced AND {scope} GROUP BY model ORDER BY responses DESC"
    );
    let (daily, totals, projects, unpriced) = tokio::join!(
        rows(&s, &daily, &f),
        rows(&s, &totals, &f),
        rows(&s, projects, &f),
        rows(&s, &unpriced, &f)
    );
    let projects: Vec<Value> = projects?
        .into_iter()
        .filter_map(|mut r| r.remove("project"))
        .collect();
    Ok(Json(
        json!({"filters": echo(&f), "totals": first(totals?), "daily": daily?,
        "projects": projects, "unpriced_models": unpriced?}),
    ))
}

pub(super) async fn sessions(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, RANGE, 50)?;
    let grouped = format!(
        "SELECT project, session_id,
                min(first_timestamp) AS first_activity, max(last_timestamp) AS last_activity,
                sum(entries) AS entries, sum(prompts) AS prompts, sum(tool_results) AS tool_results,
                sum(slash_commands) AS slash_commands, sum(meta_messages) AS meta_messages,
                sum(subagent_prompts) AS subagent_prompts, sum(compactions) AS compactions,
                sum(interruptions) AS interruptions, sum(user_lines) AS user_lines,
                sum(assistant_lines) AS assistant_lines, sum(tool_calls) AS tool_calls,
                sum(sidechain_entries) AS sidechain_entries, groupUniqArrayArray(models) AS models,
                max(git_branch) AS git_branch, max(project_path) AS project_path,
                dateDiff('second', min(first_timestamp), max(last_timestamp)) AS duration_s
         FROM claude_sessions WHERE {PROJECT}
         GROUP BY project, session_id
         HAVING last_activity >= {{from:DateTime64(3, 'UTC')}} AND first_activity < {{to:DateTime64(3, 'UTC')}}"
    );
    let in_range =
        format!("(project, session_id) IN (SELECT project, session_id FROM ({grouped}))");
    let usage = format!(
        "SELECT project, session_id, {TOKEN_SUMS} FROM {REQUESTS} WHERE {PROJECT} AND {in_range}
         GROUP BY project, session_id"
    );
    let list = format!(
        "SELECT project, session_id, toString(first_activity) AS first_activity,
                toString(last_activity) AS last_activity, * EXCEPT (project, session_id, first_activity, last_activity)
         FROM (SELECT * FROM ({grouped}) ORDER BY last_activity DESC LIMIT {{lim:UInt32}}) AS g
         LEFT JOIN ({usage}) AS u USING (project, session_id)
         LEFT JOIN ({SESSION_SUMMARIES}) AS sm USING (project, session_id)
         ORDER BY last_activity DESC"
    );
    let totals = format!(
        "SELECT * FROM (SELECT count() AS sessions, sum(entries) AS entries, sum(prompts) AS prompts,
                               round(avg(duration_s), 1) AS avg_duration_s FROM ({grouped})) AS g
         CROSS JOIN (SELECT {TOKEN_SUMS} FROM {REQUESTS} WHERE {PROJECT} AND {in_range}) AS u"
    );
    let (list, totals) = tokio::join!(rows(&s, &list, &f), rows(&s, &totals, &f));
    Ok(Json(
        json!({"filters": echo(&f), "totals": first(totals?), "sessions": list?}),
    ))
}

pub(super) async fn context_trends(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, &["from", "to", "project", "bucket"], 100)?;
    let bucket_fn = f.bucket.function();
    let series = format!(
        "SELECT toString({bucket_fn}(timestamp)) AS bucket, count() AS turns,
                round(avg(total_context_tokens)) AS avg_context_tokens, max(total_context_tokens) AS max_context_tokens,
                sum(input_tokens) AS input, sum(output_tokens) AS output,
                sum(cache_creation_input_tokens) AS cache_write, sum(cache_read_input_tokens) AS cache_read,
                round(if(sum(total_context_tokens) = 0, 0, sum(cache_read_input_tokens) / sum(total_context_tokens)), 4) AS cache_read_ratio,
                round(avg(context_utilization), 4) AS avg_utilization
         FROM {REQUESTS} WHERE {TS_RANGE} AND {PROJECT}
         GROUP BY bucket ORDER BY bucket LIMIT 5000"
    );
    let models = format!(
        "SELECT model, count() AS turns, round(avg(total_context_tokens)) AS avg_context_tokens,
                round(if(sum(total_context_tokens) = 0, 0, sum(cache_read_input_tokens) / sum(total_context_tokens)), 4) AS cache_read_ratio,
                round(max(context_utilization), 4) AS max_utilization
         FROM {REQUESTS} WHERE {TS_RANGE} AND {PROJECT} GROUP BY model ORDER BY turns DESC"
    );
    let (series, models) = tokio::join!(rows(&s, &series, &f), rows(&s, &models, &f));
    Ok(Json(
        json!({"filters": echo(&f), "bucket": if bucket_fn == "toStartOfHour" {"hour"} else {"day"},
        "series": series?, "models": models?}),
    ))
}

pub(super) async fn cost_analysis(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, RANGE, 10)?;
    let scope = format!("{TS_RANGE} AND {PROJECT}");
    let by_day = format!(
        "SELECT toString(toDate(timestamp)) AS day, round(sum(ifNull(cost, 0)), 6) AS cost,
                sum(input_tokens + output_tokens + cache_creation_input_tokens + cache_read_input_tokens) AS tokens
         FROM {REQUESTS} WHERE {scope} GROUP BY day ORDER BY day"
    );
    let by_project = format!(
        "SELECT project, round(sum(ifNull(cost, 0)), 6) AS cost, uniqExact(session_id) AS sessions, count() AS responses
         FROM {REQUESTS} WHERE {scope} GROUP BY project ORDER BY cost DESC LIMIT {{lim:UInt32}}"
    );
    // Per model, with what the burn rate needs: one scan of the requests.
    let by_model = format!(
        "SELECT model, {TOKEN_SUMS},
                toUnixTimestamp64Milli(min(timestamp)) AS first_ms, toUnixTimestamp64Milli(max(timestamp)) AS last_ms,
                sumIf(ifNull(claude_requests.cost, 0), timestamp >= now64(3) - INTERVAL 24 HOUR) AS cost_last_24h
         FROM {REQUESTS} WHERE model != '' AND {scope}
         GROUP BY model ORDER BY cost DESC"
    );
    let by_session = format!(
        "SELECT project, session_id, round(sum(ifNull(cost, 0)), 6) AS cost, toString(max(timestamp)) AS last_activity
         FROM {REQUESTS} WHERE {scope}
         GROUP BY project, session_id ORDER BY cost DESC LIMIT {{lim:UInt32}}"
    );
    let (d, p, m, se) = tokio::join!(
        rows(&s, &by_day, &f),
        rows(&s, &by_project, &f),
        rows(&s, &by_model, &f),
        rows(&s, &by_session, &f)
    );
    let mut models = m?;
    let burn = burn_rate(&models);
    let unpriced: Vec<Value> = models
        .iter()
        .filter(|r| r.get("unpriced_responses").and_then(Value::as_u64) > Some(0))
        .filter_map(|r| r.get("model").cloned())
        .collect();
    for r in &mut models {
        r.remove("first_ms");
        r.remove("last_ms");
        r.remove("cost_last_24h");
    }
    models.truncate(f.limit as usize);
    Ok(Json(
        json!({"filters": echo(&f), "burn_rate": burn, "by_day": d?, "by_project": p?, "by_model": models,
        "top_sessions": se?, "unpriced_models": unpriced}),
    ))
}

/// Cost over the whole range and the last 24 hours, per hour of activity.
fn burn_rate(models: &[Map<String, Value>]) -> Value {
    let num = |r: &Map<String, Value>, k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let cost: f64 = models.iter().map(|r| num(r, "cost")).sum();
    let last24: f64 = models.iter().map(|r| num(r, "cost_last_24h")).sum();
    let first_ms = models
        .iter()
        .map(|r| num(r, "first_ms"))
        .fold(f64::INFINITY, f64::min);
    let last_ms = models.iter().map(|r| num(r, "last_ms")).fold(0.0, f64::max);
    let hours = if models.is_empty() {
        0.0
    } else {
        (last_ms - first_ms) / 3_600_000.0
    };
    let ms_to_text = |ms: f64| {
        chrono::DateTime::from_timestamp_millis(ms as i64)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
            .unwrap_or_default()
    };
    let round6 = |x: f64| (x * 1e6).round() / 1e6;
    json!({
        "cost": round6(cost),
        "first": if models.is_empty() { String::new() } else { ms_to_text(first_ms) },
        "last": if models.is_empty() { String::new() } else { ms_to_text(last_ms) },
        "cost_per_hour": if hours > 0.0 { round6(cost / hours) } else { 0.0 },
        "cost_last_24h": round6(last24),
        "cost_per_hour_last_24h": round6(last24 / 24.0),
    })
}
