//! HTTP API and dashboard over the ClickHouse tables the engine fills.
//!
//! Every endpoint validates its query string (`params`), binds the values as
//! ClickHouse server-side parameters (`{name:Type}`) and runs its queries
//! concurrently. Sums over the AggregatingMergeTree tables use GROUP BY on
//! their keys (not FINAL), and day series come from `daily_session_summary`,
//! which keeps the dashboard fast on millions of messages.

pub mod params;

use crate::sink::clickhouse::ChClient;
use crate::sink::status::IngestStatus;
use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use params::Filters;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

#[derive(Clone)]
pub struct ApiState {
    pub client: ChClient,
    pub status: Arc<IngestStatus>,
}

/// Errors become JSON with a status that says whose fault it is.
pub enum ApiError {
    BadRequest(String),
    Upstream(anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, msg) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Upstream(e) => {
                tracing::warn!(error = %format!("{e:#}"), "API query failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("ClickHouse query failed: {e:#}"),
                )
            }
        };
        (code, Json(json!({ "error": msg }))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;
type Rows = Vec<Map<String, Value>>;

const RANGE: &[&str] = &["from", "to", "project", "limit"];
const DASHBOARD: &str = include_str!("dashboard.html");

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/api/overview", get(overview))
        .route("/api/claude-sessions", get(sessions))
        .route("/api/claude-tool-usage", get(tool_usage))
        .route("/api/claude-file-access", get(file_access))
        .route("/api/claude-context-trends", get(context_trends))
        .route("/api/claude-cost-analysis", get(cost_analysis))
        .route("/api/security-events", get(security_events))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no such endpoint"})),
            )
        })
        .with_state(state)
}

/// Bind `addr`, log the URL, serve until `shutdown` resolves.
pub async fn serve(
    addr: &str,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(url = %format!("http://{}", listener.local_addr()?), "dashboard and API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("API server failed")
}

async fn dashboard() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(DASHBOARD))
}

fn filters(
    q: &HashMap<String, String>,
    allowed: &[&str],
    default_limit: u32,
) -> Result<Filters, ApiError> {
    params::parse(q, allowed, default_limit).map_err(ApiError::BadRequest)
}

/// Run one query with the standard bound parameters.
async fn rows(s: &ApiState, sql: &str, f: &Filters) -> Result<Rows, ApiError> {
    s.client
        .query_json(
            sql,
            &[
                ("from", Value::from(f.from.clone())),
                ("to", Value::from(f.to.clone())),
                ("project", Value::from(f.project.clone())),
                ("session", Value::from(f.session.clone())),
                ("lim", Value::from(f.limit)),
            ],
        )
        .await
        .map_err(ApiError::Upstream)
}

fn first(r: Rows) -> Value {
    r.into_iter()
        .next()
        .map(Value::Object)
        .unwrap_or_else(|| json!({}))
}

fn echo(f: &Filters) -> Value {
    json!({"from": f.from, "to": f.to, "project": f.project, "limit": f.limit})
}

// Reusable SQL fragments: they only reference bound parameters.
const TS_RANGE: &str =
    "timestamp >= {from:DateTime64(3, 'UTC')} AND timestamp < {to:DateTime64(3, 'UTC')}";
const PROJECT: &str = "({project:String} = '' OR project = {project:String})";

async fn healthz(State(s): State<ApiState>) -> (StatusCode, Json<Value>) {
    let snap = s.status.snapshot();
    let ch = s.client.ping().await;
    let ok = ch.is_ok() && !snap.clickhouse_down;
    let mut body = serde_json::to_value(&snap).unwrap_or_default();
    body["clickhouse_reachable"] = Value::Bool(ch.is_ok());
    if let Err(e) = ch {
        body["clickhouse_error"] = Value::from(format!("{e:#}"));
    }
    body["status"] = Value::from(if ok { "ok" } else { "degraded" });
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

async fn overview(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, &["from", "to", "project"], 100)?;
    let day_where = "date >= toDate({from:DateTime64(3, 'UTC')}) AND date < toDate({to:DateTime64(3, 'UTC')}) + 1 AND ({project:String} = '' OR project = {project:String})";
    let daily = format!(
        "SELECT toString(date) AS day, uniqMerge(sessions) AS sessions, sum(messages) AS messages,
                sum(user_messages) AS user_messages, sum(assistant_messages) AS assistant_messages,
                sum(tool_calls) AS tool_calls, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
                sum(cache_read_input_tokens) AS cache_read_input_tokens, round(sum(cost), 6) AS cost
         FROM daily_session_summary WHERE {day_where} GROUP BY date ORDER BY date"
    );
    let totals = format!(
        "SELECT uniqMerge(sessions) AS sessions, sum(messages) AS messages, sum(tool_calls) AS tool_calls,
                sum(input_tokens) + sum(output_tokens) + sum(cache_creation_input_tokens) + sum(cache_read_input_tokens) AS tokens,
                round(sum(cost), 6) AS cost, uniqExact(project) AS projects, toString(min(date)) AS first_day, toString(max(date)) AS last_day
         FROM daily_session_summary WHERE {day_where}"
    );
    let projects = "SELECT DISTINCT project FROM daily_session_summary ORDER BY project LIMIT 1000";
    let (daily, totals, projects) = tokio::join!(
        rows(&s, &daily, &f),
        rows(&s, &totals, &f),
        rows(&s, projects, &f)
    );
    let projects: Vec<Value> = projects?
        .into_iter()
        .filter_map(|mut r| r.remove("project"))
        .collect();
    Ok(Json(
        json!({"filters": echo(&f), "totals": first(totals?), "daily": daily?, "projects": projects}),
    ))
}

async fn sessions(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, RANGE, 50)?;
    let grouped = format!(
        "SELECT project, session_id,
                min(first_timestamp) AS first_activity, max(last_timestamp) AS last_activity,
                sum(entries) AS entries, sum(user_messages) AS user_messages, sum(assistant_messages) AS assistant_messages,
                sum(tool_calls) AS tool_calls, sum(sidechain_entries) AS sidechain_entries,
                sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                sum(cache_creation_input_tokens) AS cache_creation_input_tokens,
                sum(cache_read_input_tokens) AS cache_read_input_tokens,
                round(sum(total_cost), 6) AS cost, groupUniqArrayArray(models) AS models,
                max(git_branch) AS git_branch, max(project_path) AS project_path, max(summary) AS summary,
                dateDiff('second', min(first_timestamp), max(last_timestamp)) AS duration_s
         FROM claude_sessions WHERE {PROJECT}
         GROUP BY project, session_id
         HAVING last_activity >= {{from:DateTime64(3, 'UTC')}} AND first_activity < {{to:DateTime64(3, 'UTC')}}"
    );
    let list = format!(
        "SELECT project, session_id, toString(first_activity) AS first_activity, toString(last_activity) AS last_activity,
                duration_s, entries, user_messages, assistant_messages, tool_calls, sidechain_entries, input_tokens, output_tokens,
                cache_creation_input_tokens, cache_read_input_tokens, cost, models, git_branch, project_path, summary
         FROM ({grouped}) ORDER BY last_activity DESC LIMIT {{lim:UInt32}}"
    );
    let totals = format!(
        "SELECT count() AS sessions, sum(entries) AS entries, sum(input_tokens + output_tokens + cache_creation_input_tokens + cache_read_input_tokens) AS tokens,
                round(sum(cost), 6) AS cost, round(avg(duration_s), 1) AS avg_duration_s
         FROM ({grouped})"
    );
    let (list, totals) = tokio::join!(rows(&s, &list, &f), rows(&s, &totals, &f));
    Ok(Json(
        json!({"filters": echo(&f), "totals": first(totals?), "sessions": list?}),
    ))
}

/// One row per tool call: the call and result halves folded. `only` narrows
/// the calls first (by tool_use_id) so the fold touches only what a panel
/// needs; `extra` adds folded columns.
fn calls_sql(only: &str, extra: &str) -> String {
    let narrow = if only.is_empty() {
        String::new()
    } else {
        format!(" AND tool_use_id IN (SELECT tool_use_id FROM claude_tool_usage WHERE {only} AND {PROJECT})")
    };
    format!(
        "SELECT session_id, tool_use_id, max(project) AS project, max(timestamp) AS ts, max(tool_name) AS tool_name,
                max(tool_category) AS tool_category, max(has_result) AS has_result, max(is_error) AS is_error,
                max(result_size) AS result_size, max(has(labels, 'dangerous_command')) AS dangerous{extra}
         FROM (SELECT * FROM claude_tool_usage WHERE {PROJECT}{narrow})
         GROUP BY session_id, tool_use_id
         HAVING tool_name != '' AND ts >= {{from:DateTime64(3, 'UTC')}} AND ts < {{to:DateTime64(3, 'UTC')}}"
    )
}

async fn tool_usage(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, RANGE, 20)?;
    let all = calls_sql("", "");
    // Every tool (there are few), so the totals can be summed from this one pass.
    let tools = format!(
        "SELECT tool_name, any(tool_category) AS category, count() AS calls, countIf(has_result = 1) AS completed,
                countIf(is_error = 1) AS errors, countIf(has_result = 0) AS pending, countIf(dangerous = 1) AS dangerous,
                round(if(countIf(has_result = 1) = 0, 0, countIf(has_result = 1 AND is_error = 0) / countIf(has_result = 1)), 4) AS success_rate,
                round(avg(result_size)) AS avg_result_bytes
         FROM ({all}) GROUP BY tool_name ORDER BY calls DESC, tool_name"
    );
    let failed = calls_sql("is_error = 1", ", max(error_message) AS error_message");
    let errors = format!(
        "SELECT tool_name, substring(error_message, 1, 160) AS error, count() AS occurrences
         FROM ({failed}) WHERE is_error = 1 GROUP BY tool_name, error ORDER BY occurrences DESC, tool_name LIMIT {{lim:UInt32}}"
    );
    let bash_calls = calls_sql("tool_name = 'Bash'", ", max(command) AS command");
    let bash = format!(
        "SELECT command, count() AS runs, countIf(is_error = 1) AS failures, max(dangerous) AS dangerous
         FROM ({bash_calls}) WHERE command != '' GROUP BY command ORDER BY runs DESC, command LIMIT {{lim:UInt32}}"
    );
    let (tools, errors, bash) = tokio::join!(
        rows(&s, &tools, &f),
        rows(&s, &errors, &f),
        rows(&s, &bash, &f)
    );
    let tools = tools?;
    let total = |k: &str| {
        tools
            .iter()
            .map(|r| r.get(k).and_then(Value::as_u64).unwrap_or(0))
            .sum::<u64>()
    };
    let totals = json!({"calls": total("calls"), "errors": total("errors"), "pending": total("pending"),
        "dangerous_commands": total("dangerous"), "tools": tools.len()});
    let top: Vec<_> = tools.into_iter().take(f.limit as usize).collect();
    Ok(Json(
        json!({"filters": echo(&f), "totals": totals, "tools": top, "top_errors": errors?, "bash_commands": bash?}),
    ))
}

async fn file_access(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, RANGE, 20)?;
    let base = format!("SELECT * FROM claude_file_access FINAL WHERE {TS_RANGE} AND {PROJECT}");
    let files = format!(
        "SELECT file_path, count() AS accesses, countIf(access_type = 'read') AS reads, countIf(access_type = 'write') AS writes,
                countIf(access_type = 'edit') AS edits, countIf(access_type IN ('search', 'list')) AS searches,
                max(is_sensitive) AS sensitive, uniqExact(session_id) AS sessions, toString(max(timestamp)) AS last_access
         FROM ({base}) GROUP BY file_path ORDER BY accesses DESC, file_path LIMIT {{lim:UInt32}}"
    );
    let exts = format!(
        "SELECT if(file_extension = '', '(none)', file_extension) AS extension, count() AS accesses, uniqExact(file_path) AS files
         FROM ({base}) GROUP BY extension ORDER BY accesses DESC LIMIT {{lim:UInt32}}"
    );
    let sensitive = format!(
        "SELECT toString(timestamp) AS timestamp, project, session_id, tool_name, access_type, file_path
         FROM ({base}) WHERE is_sensitive ORDER BY timestamp DESC LIMIT {{lim:UInt32}}"
    );
    let heatmap = format!(
        "SELECT file_path, toString(toDate(timestamp)) AS day, count() AS accesses FROM ({base})
         WHERE file_path IN (SELECT file_path FROM ({base}) GROUP BY file_path ORDER BY count() DESC, file_path LIMIT 12)
         GROUP BY file_path, day ORDER BY file_path, day"
    );
    let totals = format!(
        "SELECT count() AS accesses, uniqExact(file_path) AS files, countIf(is_sensitive) AS sensitive_accesses,
                countIf(access_type = 'read') AS reads, countIf(access_type = 'write') AS writes, countIf(access_type = 'edit') AS edits
         FROM ({base})"
    );
    let (files, exts, sensitive, heatmap, totals) = tokio::join!(
        rows(&s, &files, &f),
        rows(&s, &exts, &f),
        rows(&s, &sensitive, &f),
        rows(&s, &heatmap, &f),
        rows(&s, &totals, &f)
    );
    Ok(Json(
        json!({"filters": echo(&f), "totals": first(totals?), "files": files?, "extensions": exts?,
        "sensitive_accesses": sensitive?, "heatmap": heatmap?}),
    ))
}

async fn context_trends(
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
         FROM claude_context_analysis WHERE {TS_RANGE} AND {PROJECT}
         GROUP BY bucket ORDER BY bucket LIMIT 5000"
    );
    let models = format!(
        "SELECT model, count() AS turns, round(avg(total_context_tokens)) AS avg_context_tokens,
                round(if(sum(total_context_tokens) = 0, 0, sum(cache_read_input_tokens) / sum(total_context_tokens)), 4) AS cache_read_ratio,
                round(max(context_utilization), 4) AS max_utilization
         FROM claude_context_analysis WHERE {TS_RANGE} AND {PROJECT} GROUP BY model ORDER BY turns DESC"
    );
    let (series, models) = tokio::join!(rows(&s, &series, &f), rows(&s, &models, &f));
    Ok(Json(
        json!({"filters": echo(&f), "bucket": if bucket_fn == "toStartOfHour" {"hour"} else {"day"},
        "series": series?, "models": models?}),
    ))
}

async fn cost_analysis(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, RANGE, 10)?;
    let day_where = "date >= toDate({from:DateTime64(3, 'UTC')}) AND date < toDate({to:DateTime64(3, 'UTC')}) + 1 AND ({project:String} = '' OR project = {project:String})";
    let by_day = format!(
        "SELECT toString(date) AS day, round(sum(cost), 6) AS cost, sum(input_tokens + output_tokens + cache_creation_input_tokens + cache_read_input_tokens) AS tokens
         FROM daily_session_summary WHERE {day_where} GROUP BY date ORDER BY date"
    );
    let by_project = format!(
        "SELECT project, round(sum(cost), 6) AS cost, uniqMerge(sessions) AS sessions, sum(messages) AS messages
         FROM daily_session_summary WHERE {day_where} GROUP BY project ORDER BY cost DESC LIMIT {{lim:UInt32}}"
    );
    let by_model = format!(
        "SELECT model, round(sum(cost_estimate), 6) AS cost, count() AS responses, sum(output_tokens) AS output_tokens
         FROM claude_messages WHERE entry_type = 'assistant' AND model != '' AND {TS_RANGE} AND {PROJECT}
         GROUP BY model ORDER BY cost DESC LIMIT {{lim:UInt32}}"
    );
    let by_session = format!(
        "SELECT project, session_id, round(sum(total_cost), 6) AS cost, toString(max(last_timestamp)) AS last_activity
         FROM claude_sessions WHERE {PROJECT}
         GROUP BY project, session_id
         HAVING max(last_timestamp) >= {{from:DateTime64(3, 'UTC')}} AND min(first_timestamp) < {{to:DateTime64(3, 'UTC')}}
         ORDER BY cost DESC LIMIT {{lim:UInt32}}"
    );
    let burn = format!(
        "SELECT round(sum(cost_estimate), 6) AS cost, toString(min(timestamp)) AS first, toString(max(timestamp)) AS last,
                round(if(dateDiff('second', min(timestamp), max(timestamp)) = 0, 0,
                         sum(cost_estimate) / (dateDiff('second', min(timestamp), max(timestamp)) / 3600)), 6) AS cost_per_hour,
                round(sumIf(cost_estimate, timestamp >= now64(3) - INTERVAL 24 HOUR), 6) AS cost_last_24h,
                round(sumIf(cost_estimate, timestamp >= now64(3) - INTERVAL 24 HOUR) / 24, 6) AS cost_per_hour_last_24h
         FROM claude_messages WHERE cost_estimate > 0 AND {TS_RANGE} AND {PROJECT}"
    );
    let (d, p, m, se, b) = tokio::join!(
        rows(&s, &by_day, &f),
        rows(&s, &by_project, &f),
        rows(&s, &by_model, &f),
        rows(&s, &by_session, &f),
        rows(&s, &burn, &f)
    );
    Ok(Json(
        json!({"filters": echo(&f), "burn_rate": first(b?), "by_day": d?, "by_project": p?, "by_model": m?, "top_sessions": se?}),
    ))
}

async fn security_events(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, RANGE, 20)?;
    let totals = format!(
        "SELECT sum(redaction_count) AS secrets_redacted, countIf(contains_sensitive_data) AS sensitive_messages,
                countIf(has(labels, 'dangerous_command')) AS dangerous_command_messages
         FROM claude_messages WHERE {TS_RANGE} AND {PROJECT}"
    );
    let kinds = format!(
        "SELECT substring(label, 8) AS kind, count() AS messages
         FROM claude_messages ARRAY JOIN labels AS label
         WHERE startsWith(label, 'secret:') AND {TS_RANGE} AND {PROJECT}
         GROUP BY kind ORDER BY messages DESC LIMIT {{lim:UInt32}}"
    );
    let calls = calls_sql(
        "has(labels, 'dangerous_command')",
        ", max(command) AS command",
    );
    let dangerous = format!(
        "SELECT toString(ts) AS timestamp, project, session_id, command, is_error
         FROM ({calls}) WHERE dangerous = 1 ORDER BY ts DESC LIMIT {{lim:UInt32}}"
    );
    let files = format!(
        "SELECT toString(timestamp) AS timestamp, project, session_id, tool_name, file_path
         FROM (SELECT * FROM claude_file_access FINAL WHERE is_sensitive AND {TS_RANGE} AND {PROJECT})
         ORDER BY timestamp DESC LIMIT {{lim:UInt32}}"
    );
    let dead = "SELECT stage, count() AS lines FROM claude_dead_letters GROUP BY stage ORDER BY lines DESC";
    let (t, k, d, fl, dl) = tokio::join!(
        rows(&s, &totals, &f),
        rows(&s, &kinds, &f),
        rows(&s, &dangerous, &f),
        rows(&s, &files, &f),
        rows(&s, dead, &f)
    );
    Ok(Json(
        json!({"filters": echo(&f), "totals": first(t?), "secret_kinds": k?, "dangerous_commands": d?,
        "sensitive_files": fl?, "dead_letters": dl?}),
    ))
}
