//! Token, cost and session figures. Every token and cost figure reads
//! `claude_requests FINAL`: one row per API request with its final usage
//! snapshot, so a response that Claude Code logged as several lines counts
//! once. Message counts read `claude_messages` / `claude_sessions`, whose
//! `message_kind` says what each line is.

use super::{
    echo, filters, first, rows, ApiResult, ApiState, Req, IDENTITY, RANGE, SCOPE, TS_RANGE,
};
use axum::extract::State;
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

/// [`SESSION_SUMMARIES`] for the sessions `sessions` (a query of project,
/// session_id) only: their messages are found through the primary key instead
/// of scanning every message's uuid.
fn summaries_of(sessions: &str) -> String {
    format!(
        "SELECT m.project AS project, m.session_id AS session_id, argMax(s.summary, m.timestamp) AS summary
         FROM claude_summaries AS s FINAL
         INNER JOIN (SELECT project, session_id, uuid, timestamp FROM claude_messages
                     WHERE (project, session_id) IN ({sessions})
                       AND uuid IN (SELECT leaf_uuid FROM claude_summaries)) AS m ON m.uuid = s.leaf_uuid
         GROUP BY project, session_id"
    )
}

pub(super) async fn overview(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, &["from", "to", "project", "user", "host"], 100)?;
    let scope = format!("{TS_RANGE} AND {SCOPE}");
    // Message counts from the per-day view, usage from one scan of the requests.
    let day_scope = format!("date >= toDate({{from:DateTime64(3, 'UTC')}}) AND date < toDate({{to:DateTime64(3, 'UTC')}}) + 1 AND {SCOPE}");
    let activity = format!(
        "SELECT date AS day, uniqMerge(sessions) AS sessions, sum(messages) AS messages, sum(prompts) AS prompts,
                sum(tool_calls) AS tool_calls
         FROM claude_daily_activity WHERE {day_scope} GROUP BY day"
    );
    let requests = format!(
        "SELECT toDate(timestamp) AS day, {TOKEN_SUMS} FROM {REQUESTS} WHERE {scope} GROUP BY day"
    );
    let daily = format!(
        "SELECT toString(day) AS day, * EXCEPT day FROM ({activity}) AS m FULL OUTER JOIN ({requests}) AS r USING day
         ORDER BY day"
    );
    let totals = format!(
        "SELECT uniqMerge(sessions) AS sessions, sum(messages) AS messages, sum(prompts) AS prompts,
                sum(tool_calls) AS tool_calls, uniqExact(project) AS projects,
                toString(min(date)) AS first_day, toString(max(date)) AS last_day
         FROM claude_daily_activity WHERE {day_scope}"
    );
    // The project picker lists every project the caller may choose from.
    let projects = format!(
        "SELECT DISTINCT project FROM claude_sessions WHERE {IDENTITY} ORDER BY project LIMIT 1000"
    );
    let unpriced = unpriced_models(&scope);
    let (daily, totals, projects, unpriced) = tokio::join!(
        rows(&s, &daily, &f),
        rows(&s, &totals, &f),
        rows(&s, &projects, &f),
        rows(&s, &unpriced, &f)
    );
    let daily = daily?;
    let mut totals = first(totals?);
    add_usage_sums(&mut totals, &daily);
    let projects: Vec<Value> = projects?
        .into_iter()
        .filter_map(|mut r| r.remove("project"))
        .collect();
    Ok(Json(
        json!({"filters": echo(&f), "totals": totals, "daily": daily,
        "projects": projects, "unpriced_models": unpriced?}),
    ))
}

/// Models without a price, with their requests and tokens. Only the few
/// unpriced rows are read (no FINAL over the table): each request's final
/// snapshot is picked by `argMax` on the same rank the table keeps.
fn unpriced_models(scope: &str) -> String {
    format!(
        "SELECT model, count() AS responses, sum(t) AS tokens
         FROM (SELECT model, argMax(input_tokens + output_tokens + cache_creation_input_tokens + cache_read_input_tokens,
                                    snapshot_rank) AS t
               FROM claude_requests WHERE NOT priced AND {scope}
               GROUP BY project, message_id, request_id, model)
         GROUP BY model ORDER BY responses DESC"
    )
}

/// The usage sums of `TOKEN_SUMS` over `parts` (per-day or per-session
/// rows), added to `totals`: the same figures without a second scan.
fn add_usage_sums(totals: &mut Value, parts: &[Map<String, Value>]) {
    const SUMS: [&str; 7] = [
        "responses",
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "tokens",
        "unpriced_responses",
    ];
    let Some(t) = totals.as_object_mut() else {
        return;
    };
    for key in SUMS {
        let n: u64 = parts.iter().filter_map(|r| r.get(key)?.as_u64()).sum();
        t.insert(key.into(), Value::from(n));
    }
    let cost: f64 = parts.iter().filter_map(|r| r.get("cost")?.as_f64()).sum();
    t.insert("cost".into(), Value::from((cost * 1e6).round() / 1e6));
}

pub(super) async fn sessions(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, RANGE, 50)?;
    // FINAL folds each session's partial rows while reading, in key order:
    // much cheaper than a hash GROUP BY over tens of thousands of sessions,
    // and this set is read three times below.
    let grouped = format!(
        "SELECT project, session_id, first_timestamp AS first_activity, last_timestamp AS last_activity,
                entries, prompts, tool_results, slash_commands, meta_messages, subagent_prompts, compactions,
                interruptions, user_lines, assistant_lines, tool_calls, sidechain_entries, models,
                git_branch, project_path, dateDiff('second', first_timestamp, last_timestamp) AS duration_s
         FROM claude_sessions FINAL
         WHERE {SCOPE} AND last_timestamp >= {{from:DateTime64(3, 'UTC')}} AND first_timestamp < {{to:DateTime64(3, 'UTC')}}"
    );
    let listed =
        format!("SELECT * FROM ({grouped}) ORDER BY last_activity DESC LIMIT {{lim:UInt32}}");
    let list = format!(
        "SELECT project, session_id, toString(first_activity) AS first_activity,
                toString(last_activity) AS last_activity, * EXCEPT (project, session_id, first_activity, last_activity)
         FROM ({listed}) AS g
         LEFT JOIN ({}) AS sm USING (project, session_id)
         ORDER BY last_activity DESC",
        summaries_of(&format!("SELECT project, session_id FROM ({listed})"))
    );
    // Usage of the listed sessions only; the totals add the usage of every
    // session in range in SQL, so only a page of rows leaves ClickHouse
    // however many sessions there are. `session_id IN` (with the project in
    // SCOPE), not `(project, session_id) IN`: under FINAL the tuple form was
    // 4-6x slower on 50k sessions. attach_usage matches on both.
    let usage = format!(
        "SELECT project, session_id, {TOKEN_SUMS} FROM {REQUESTS}
         WHERE {SCOPE} AND session_id IN (SELECT session_id FROM ({listed}))
         GROUP BY project, session_id"
    );
    let totals = format!(
        "SELECT * FROM
           (SELECT count() AS sessions, sum(entries) AS entries, sum(prompts) AS prompts,
                   round(avg(duration_s), 1) AS avg_duration_s FROM ({grouped})) AS t
         CROSS JOIN
           (SELECT {TOKEN_SUMS} FROM {REQUESTS}
            WHERE {SCOPE} AND session_id IN (SELECT session_id FROM ({grouped}))) AS u"
    );
    let (list, usage, totals) = tokio::join!(
        rows(&s, &list, &f),
        rows(&s, &usage, &f),
        rows(&s, &totals, &f)
    );
    let usage = usage?;
    let totals = first(totals?);
    let list = attach_usage(list?, &usage);
    Ok(Json(
        json!({"filters": echo(&f), "totals": totals, "sessions": list}),
    ))
}

/// Each session row gets its usage figures (zeros when it has none).
fn attach_usage(
    mut list: Vec<Map<String, Value>>,
    usage: &[Map<String, Value>],
) -> Vec<Map<String, Value>> {
    let key = |r: &Map<String, Value>| {
        (
            r.get("project")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            r.get("session_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    };
    let by_session: HashMap<_, _> = usage.iter().map(|u| (key(u), u)).collect();
    for row in &mut list {
        let mut sums = json!({});
        match by_session.get(&key(row)) {
            Some(u) => sums = Value::Object((*u).clone()),
            None => add_usage_sums(&mut sums, &[]),
        }
        if let Value::Object(m) = sums {
            for (k, v) in m {
                if k != "project" && k != "session_id" {
                    row.insert(k, v);
                }
            }
        }
    }
    list
}

pub(super) async fn context_trends(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(
        &req,
        &["from", "to", "project", "user", "host", "bucket"],
        100,
    )?;
    let bucket_fn = f.bucket.function();
    let series = format!(
        "SELECT toString({bucket_fn}(timestamp)) AS bucket, count() AS turns,
                round(avg(total_context_tokens)) AS avg_context_tokens, max(total_context_tokens) AS max_context_tokens,
                sum(input_tokens) AS input, sum(output_tokens) AS output,
                sum(cache_creation_input_tokens) AS cache_write, sum(cache_read_input_tokens) AS cache_read,
                round(if(sum(total_context_tokens) = 0, 0, sum(cache_read_input_tokens) / sum(total_context_tokens)), 4) AS cache_read_ratio,
                round(avg(context_utilization), 4) AS avg_utilization
         FROM {REQUESTS} WHERE {TS_RANGE} AND {SCOPE}
         GROUP BY bucket ORDER BY bucket LIMIT 5000"
    );
    let models = format!(
        "SELECT model, count() AS turns, round(avg(total_context_tokens)) AS avg_context_tokens,
                round(if(sum(total_context_tokens) = 0, 0, sum(cache_read_input_tokens) / sum(total_context_tokens)), 4) AS cache_read_ratio,
                round(max(context_utilization), 4) AS max_utilization
         FROM {REQUESTS} WHERE {TS_RANGE} AND {SCOPE} GROUP BY model ORDER BY turns DESC"
    );
    let (series, models) = tokio::join!(rows(&s, &series, &f), rows(&s, &models, &f));
    Ok(Json(
        json!({"filters": echo(&f), "bucket": if bucket_fn == "toStartOfHour" {"hour"} else {"day"},
        "series": series?, "models": models?}),
    ))
}

/// The cost panels' three queries, run at once over the folded requests:
/// per day and per model in one grouping-sets pass (kept whole: the chart
/// and the burn rate need every row), then the `limit` most costly projects
/// and sessions. Separate statements, because ranking inside one pass (a
/// window over every session) cost more than a second scan, and sessions are
/// counted by a 64-bit hash of their id (a set of integers, not strings):
/// the endpoint went from 214 to 105 ms p50 on 470k requests.
fn cost_analysis_sql() -> [String; 3] {
    let base = format!(
        "SELECT toDate(timestamp) AS day, project, model, session_id, timestamp, output_tokens, priced,
                input_tokens + output_tokens + cache_creation_input_tokens + cache_read_input_tokens AS tok,
                ifNull(cost, 0) AS usd
         FROM {REQUESTS} WHERE {TS_RANGE} AND {SCOPE}"
    );
    [
        format!(
            "SELECT grouping(day, model) AS level, toString(day) AS day, model,
                    count() AS responses, sum(tok) AS tokens, round(sum(usd), 6) AS cost,
                    sum(output_tokens) AS output_tokens, countIf(NOT priced) AS unpriced_responses,
                    toUnixTimestamp64Milli(min(timestamp)) AS first_ms, toUnixTimestamp64Milli(max(timestamp)) AS last_ms,
                    sumIf(usd, timestamp >= now64(3) - INTERVAL 24 HOUR) AS cost_last_24h
             FROM ({base}) GROUP BY GROUPING SETS ((day), (model))"
        ),
        format!(
            "SELECT project, count() AS responses, round(sum(usd), 6) AS cost,
                    uniqExact(cityHash64(session_id)) AS sessions
             FROM ({base}) GROUP BY project ORDER BY cost DESC, project LIMIT {{lim:UInt32}}"
        ),
        format!(
            "SELECT project, session_id, round(sum(usd), 6) AS cost, toString(max(timestamp)) AS last_activity
             FROM ({base}) GROUP BY project, session_id
             ORDER BY cost DESC, project, session_id LIMIT {{lim:UInt32}}"
        ),
    ]
}

pub(super) async fn cost_analysis(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, RANGE, 10)?;
    let [days_models, projects, sessions] = cost_analysis_sql();
    let (days_models, projects, sessions) = tokio::join!(
        rows(&s, &days_models, &f),
        rows(&s, &projects, &f),
        rows(&s, &sessions, &f)
    );
    let days_models = days_models?;
    let part = |level: u64, keep: &[&str]| -> Vec<Map<String, Value>> {
        days_models
            .iter()
            .filter(|r| r.get("level").and_then(Value::as_u64) == Some(level))
            .map(|r| {
                keep.iter()
                    .filter_map(|k| Some((k.to_string(), r.get(*k)?.clone())))
                    .collect()
            })
            .collect()
    };
    // grouping() sets a bit for each column NOT in the set: day, model
    let mut by_day = part(0b01, &["day", "cost", "tokens"]);
    let mut models = part(
        0b10,
        &[
            "model",
            "cost",
            "responses",
            "output_tokens",
            "tokens",
            "unpriced_responses",
            "first_ms",
            "last_ms",
            "cost_last_24h",
        ],
    );
    let by_project = projects?;
    let top = sessions?;
    let text = |r: &Map<String, Value>, k: &str| {
        r.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let cost = |r: &Map<String, Value>| r.get("cost").and_then(Value::as_f64).unwrap_or(0.0);
    by_day.sort_by_key(|r| text(r, "day"));
    models.sort_by(|a, b| cost(b).total_cmp(&cost(a)));
    models.retain(|r| !text(r, "model").is_empty());
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
        json!({"filters": echo(&f), "burn_rate": burn, "by_day": by_day, "by_project": by_project,
        "by_model": models, "top_sessions": top, "unpriced_models": unpriced}),
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
