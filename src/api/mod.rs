//! HTTP API and dashboard over the ClickHouse tables the engine fills.
//!
//! Every endpoint validates its query string (`params`), binds the values as
//! ClickHouse server-side parameters (`{name:Type}`) and runs its queries
//! concurrently. Sums over the AggregatingMergeTree tables use GROUP BY on
//! their keys (not FINAL). Every token and cost figure comes from
//! `claude_requests FINAL` (one row per API request; see `usage`).

pub mod guard;
pub mod params;
mod usage;
pub use usage::{REQUESTS, SESSION_SUMMARIES};

use crate::config::ApiSection;
use crate::sink::clickhouse::ChClient;
use crate::sink::status::IngestStatus;
use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use guard::Guard;
use params::Filters;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

#[derive(Clone)]
pub struct ApiState {
    pub client: ChClient,
    pub status: Arc<IngestStatus>,
    pub guard: Arc<Guard>,
    /// Queries to ClickHouse at once from the API: a burst of clients waits
    /// here (within the request deadline) instead of opening a connection each.
    queries: Arc<tokio::sync::Semaphore>,
}

impl ApiState {
    pub fn new(
        client: ChClient,
        status: Arc<IngestStatus>,
        guard: Guard,
        max_queries: usize,
    ) -> ApiState {
        ApiState {
            client,
            status,
            guard: Arc::new(guard),
            queries: Arc::new(tokio::sync::Semaphore::new(max_queries.max(1))),
        }
    }

    /// The API's limits from the config, for an API listening on `listen`.
    pub fn from_config(
        client: ChClient,
        status: Arc<IngestStatus>,
        api: &ApiSection,
        listen: &str,
    ) -> ApiState {
        let guard = Guard::new(
            listen,
            &api.allowed_hosts,
            api.max_in_flight,
            std::time::Duration::from_millis(api.request_timeout_ms),
        );
        ApiState::new(client, status, guard, api.max_queries)
    }
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
        .route("/api/overview", get(usage::overview))
        .route("/api/claude-sessions", get(usage::sessions))
        .route("/api/claude-tool-usage", get(tool_usage))
        .route("/api/claude-file-access", get(file_access))
        .route("/api/claude-context-trends", get(usage::context_trends))
        .route("/api/claude-cost-analysis", get(usage::cost_analysis))
        .route("/api/security-events", get(security_events))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no such endpoint"})),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.guard.clone(),
            guard::guard,
        ))
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
    rows_with(s, sql, f, None).await
}

/// Like [`rows`], with one more bound parameter.
async fn rows_with(
    s: &ApiState,
    sql: &str,
    f: &Filters,
    extra: Option<(&str, Value)>,
) -> Result<Rows, ApiError> {
    let mut params = vec![
        ("from", Value::from(f.from.clone())),
        ("to", Value::from(f.to.clone())),
        ("project", Value::from(f.project.clone())),
        ("session", Value::from(f.session.clone())),
        ("lim", Value::from(f.limit)),
    ];
    params.extend(extra);
    let _slot = s
        .queries
        .acquire()
        .await
        .map_err(|e| ApiError::Upstream(e.into()))?;
    s.client
        .query_json(sql, &params)
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
    // a storage problem the writer is retrying (full spool disk, ...) degrades too
    let ok = ch.is_ok() && snap.status == "ok";
    let mut body = serde_json::to_value(&snap).unwrap_or_default();
    body["clickhouse_reachable"] = Value::Bool(ch.is_ok());
    match ch {
        Err(e) => body["clickhouse_error"] = Value::from(format!("{e:#}")),
        // Tokens of a model with no price add no cost: the operator must see it.
        Ok(()) => {
            let sql = "SELECT model, count() AS lines FROM claude_requests WHERE NOT priced GROUP BY model ORDER BY model";
            if let Ok(unpriced) = s.client.query_json(sql, &[]).await {
                body["unpriced_models"] = Value::from(unpriced);
            }
        }
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

/// `claude_tool_usage FINAL` folds each call's two partial rows (call and
/// result) while reading, in sorting-key order: cheaper than a GROUP BY over
/// (session_id, tool_use_id). Filters on folded columns apply after the fold.
const CALLS: &str = "claude_tool_usage FINAL";

async fn tool_usage(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, RANGE, 20)?;
    let scope = format!("tool_name != '' AND {TS_RANGE} AND {PROJECT}");
    // Every tool (there are few), so the totals can be summed from this one pass.
    let tools = format!(
        "SELECT tool_name, any(tool_category) AS category, count() AS calls, countIf(has_result = 1) AS completed,
                countIf(is_error = 1) AS errors, countIf(has_result = 0) AS pending,
                countIf(has(labels, 'dangerous_command')) AS dangerous,
                round(if(countIf(has_result = 1) = 0, 0, countIf(has_result = 1 AND is_error = 0) / countIf(has_result = 1)), 4) AS success_rate,
                round(avg(result_size)) AS avg_result_bytes
         FROM {CALLS} WHERE {scope} GROUP BY tool_name ORDER BY calls DESC, tool_name"
    );
    let errors = format!(
        "SELECT tool_name, substring(error_message, 1, 160) AS error, count() AS occurrences
         FROM {CALLS} WHERE is_error = 1 AND {scope}
         GROUP BY tool_name, error ORDER BY occurrences DESC, tool_name LIMIT {{lim:UInt32}}"
    );
    let bash = format!(
        "SELECT command, count() AS runs, countIf(is_error = 1) AS failures, max(has(labels, 'dangerous_command')) AS dangerous
         FROM {CALLS} WHERE tool_name = 'Bash' AND command != '' AND {scope}
         GROUP BY command ORDER BY runs DESC, command LIMIT {{lim:UInt32}}"
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
    // No FINAL here: rows are written exactly once (spool + dedup tokens), and
    // a duplicate from a re-ingest with lost state is collapsed by the next
    // background merge. Reading without FINAL halves these panels' latency.
    let scope = format!("{TS_RANGE} AND {PROJECT}");
    // One scan: fold the accesses per file, then roll those up per extension
    // and overall with grouping sets (level 0 = file, 2 = extension, 3 = all).
    let summary = format!(
        "SELECT grouping(file_path, file_extension) AS level, file_path,
                if(file_extension = '', '(none)', file_extension) AS extension,
                sum(a) AS accesses, count() AS files, sum(r) AS reads, sum(w) AS writes, sum(e) AS edits,
                sum(q) AS searches, sum(sens) AS sensitive_accesses, toString(max(last)) AS last_access
         FROM (SELECT file_path, any(file_extension) AS file_extension, count() AS a,
                      countIf(access_type = 'read') AS r, countIf(access_type = 'write') AS w,
                      countIf(access_type = 'edit') AS e, countIf(access_type IN ('search', 'list')) AS q,
                      countIf(is_sensitive) AS sens, max(timestamp) AS last
               FROM claude_file_access WHERE {scope} GROUP BY file_path)
         GROUP BY GROUPING SETS ((file_path, file_extension), (file_extension), ())
         ORDER BY level, accesses DESC, file_path LIMIT {{lim:UInt32}} BY level"
    );
    let sensitive = format!(
        "SELECT toString(timestamp) AS timestamp, project, session_id, tool_name, access_type, file_path
         FROM (SELECT * FROM claude_file_access WHERE is_sensitive AND {scope})
         ORDER BY timestamp DESC LIMIT {{lim:UInt32}}"
    );
    let (summary, sensitive) = tokio::join!(rows(&s, &summary, &f), rows(&s, &sensitive, &f));
    let (mut files, mut exts, mut totals) = (
        Vec::new(),
        Vec::new(),
        json!({"accesses": 0, "files": 0,
        "sensitive_accesses": 0, "reads": 0, "writes": 0, "edits": 0}),
    );
    for mut r in summary? {
        let level = r.remove("level").and_then(|l| l.as_u64()).unwrap_or(0);
        match level {
            0 => {
                r.remove("files");
                let sensitive = r.get("sensitive_accesses").and_then(Value::as_u64) > Some(0);
                r.insert("sensitive".into(), Value::Bool(sensitive));
                files.push(r);
            }
            _ => {
                for k in ["file_path", "searches", "last_access"] {
                    r.remove(k);
                }
                if level == 2 {
                    exts.push(r);
                } else {
                    r.remove("extension");
                    totals = Value::Object(r);
                }
            }
        }
    }
    // The heatmap covers the twelve busiest files found above.
    let top: Vec<Value> = files
        .iter()
        .take(12)
        .filter_map(|r| r.get("file_path").cloned())
        .collect();
    let heatmap_sql = format!(
        "SELECT file_path, toString(toDate(timestamp)) AS day, count() AS accesses
         FROM claude_file_access WHERE {scope} AND has({{top:Array(String)}}, file_path)
         GROUP BY file_path, day ORDER BY file_path, day"
    );
    let heatmap = if top.is_empty() {
        Vec::new()
    } else {
        rows_with(&s, &heatmap_sql, &f, Some(("top", Value::Array(top)))).await?
    };
    Ok(Json(
        json!({"filters": echo(&f), "totals": totals, "files": files, "extensions": exts,
        "sensitive_accesses": sensitive?, "heatmap": heatmap}),
    ))
}

async fn security_events(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let f = filters(&q, RANGE, 20)?;
    // Totals and the kinds of secrets in one scan: sumMap counts each
    // `secret:<kind>` label over the messages.
    let totals = format!(
        "SELECT sum(redaction_count) AS secrets_redacted, countIf(contains_sensitive_data) AS sensitive_messages,
                countIf(has(labels, 'dangerous_command')) AS dangerous_command_messages,
                sumMap(arrayFilter(l -> startsWith(l, 'secret:'), labels) AS secret_labels,
                       arrayMap(x -> toUInt64(1), secret_labels)) AS kinds
         FROM claude_messages WHERE {TS_RANGE} AND {PROJECT}"
    );
    // The label, time and command live on the call half of a tool row, so the
    // newest dangerous calls are found without FINAL; only those few keys are
    // then folded with their result half (for is_error) through the primary key.
    let dangerous = format!(
        "SELECT toString(ts) AS timestamp, project, session_id, command, is_error
         FROM (SELECT session_id, max(timestamp) AS ts, max(project) AS project, max(command) AS command, max(is_error) AS is_error
               FROM claude_tool_usage
               WHERE (session_id, tool_use_id) IN (
                   SELECT session_id, tool_use_id FROM claude_tool_usage
                   WHERE has(labels, 'dangerous_command') AND tool_name != '' AND {TS_RANGE} AND {PROJECT}
                   ORDER BY timestamp DESC LIMIT {{lim:UInt32}})
               GROUP BY session_id, tool_use_id)
         ORDER BY ts DESC"
    );
    let files = format!(
        "SELECT toString(timestamp) AS timestamp, project, session_id, tool_name, file_path
         FROM (SELECT * FROM claude_file_access WHERE is_sensitive AND {TS_RANGE} AND {PROJECT})
         ORDER BY timestamp DESC LIMIT {{lim:UInt32}}"
    );
    let dead = "SELECT stage, count() AS lines FROM claude_dead_letters GROUP BY stage ORDER BY lines DESC";
    let (t, d, fl, dl) = tokio::join!(
        rows(&s, &totals, &f),
        rows(&s, &dangerous, &f),
        rows(&s, &files, &f),
        rows(&s, dead, &f)
    );
    let mut totals = first(t?);
    // kinds = [[label, ...], [count, ...]] -> [{kind, messages}] by count.
    let kinds = totals.as_object_mut().and_then(|o| o.remove("kinds"));
    let mut k: Vec<Value> = match kinds {
        Some(Value::Array(pair)) if pair.len() == 2 => {
            let names = pair[0].as_array().cloned().unwrap_or_default();
            let counts = pair[1].as_array().cloned().unwrap_or_default();
            names
                .iter()
                .zip(counts.iter())
                .map(|(n, c)| {
                    let kind = n
                        .as_str()
                        .unwrap_or("")
                        .trim_start_matches("secret:")
                        .to_string();
                    json!({"kind": kind, "messages": c})
                })
                .collect()
        }
        _ => Vec::new(),
    };
    k.sort_by(|a, b| b["messages"].as_u64().cmp(&a["messages"].as_u64()));
    k.truncate(f.limit as usize);
    Ok(Json(
        json!({"filters": echo(&f), "totals": totals, "secret_kinds": k, "dangerous_commands": d?,
        "sensitive_files": fl?, "dead_letters": dl?}),
    ))
}
