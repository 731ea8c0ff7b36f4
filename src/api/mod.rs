//! HTTP API and dashboard over the ClickHouse tables the engine fills.
//!
//! Every endpoint validates its query string (`params`), binds the values as
//! ClickHouse server-side parameters (`{name:Type}`) and runs its queries
//! concurrently. Sums over the AggregatingMergeTree tables use GROUP BY on
//! their keys (not FINAL). Every token and cost figure comes from
//! `claude_requests FINAL` (one row per API request; see `usage`).
//!
//! Access: with tokens configured (`auth`), every endpoint but the dashboard
//! page and a bare `/healthz` needs `Authorization: Bearer <token>`, and a
//! scoped token's scope is added to every query's filters. `/metrics` serves
//! the engine's counters to Prometheus (`metrics`).

pub mod alerts;
pub mod auth;
pub mod guard;
mod insights;
pub mod metrics;
pub mod params;
mod replay;
mod search;
mod usage;
pub use usage::{REQUESTS, SESSION_SUMMARIES};

use crate::config::ApiSection;
use crate::sink::clickhouse::ChClient;
use crate::sink::status::IngestStatus;
use anyhow::{bail, Context, Result};
use auth::{Scope, Token, Tokens};
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{header, request::Parts, StatusCode};
use axum::middleware::Next;
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
    /// Bearer tokens; none = open (loopback, or `--insecure-no-auth`).
    tokens: Arc<Tokens>,
    metrics: Arc<metrics::ApiMetrics>,
    /// Budget-alert crossings (filled by `alerts::spawn_checker`).
    pub alerts: Arc<alerts::AlertLog>,
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
            tokens: Arc::new(Tokens::default()),
            metrics: Arc::new(metrics::ApiMetrics::default()),
            alerts: Arc::new(alerts::AlertLog::default()),
        }
    }

    /// Require one of `tokens` on every request (see [`auth`]).
    pub fn with_tokens(mut self, tokens: Tokens) -> ApiState {
        self.tokens = Arc::new(tokens);
        self
    }

    /// Show the budget alerts `log` collects (see [`alerts::spawn_checker`]).
    pub fn with_alerts(mut self, log: Arc<alerts::AlertLog>) -> ApiState {
        self.alerts = log;
        self
    }

    /// The API's limits and tokens from the config (and env
    /// `CLAUDE_INGEST_API_TOKENS`), for an API listening on `listen`. Refuses
    /// an address other machines can reach without tokens, unless the config
    /// says `insecure_no_auth` (flag `--insecure-no-auth`).
    pub fn from_config(
        client: ChClient,
        status: Arc<IngestStatus>,
        api: &ApiSection,
        listen: &str,
    ) -> Result<ApiState> {
        let env = std::env::var(auth::TOKENS_ENV).ok();
        let tokens = Tokens::load(api.tokens_file.as_deref(), env.as_deref())?;
        if tokens.is_empty() && !auth::is_loopback(listen) {
            if !api.insecure_no_auth {
                bail!(
                    "refusing to serve the API on {listen} without authentication: set \
                     api.tokens_file or {} (see README, \"API authentication\"), listen on \
                     127.0.0.1, or pass --insecure-no-auth",
                    auth::TOKENS_ENV
                );
            }
            tracing::warn!(%listen, "API listening beyond loopback WITHOUT authentication (--insecure-no-auth)");
        }
        tracing::info!(
            tokens = tokens.len(),
            "API authentication {}",
            if tokens.is_empty() { "off" } else { "on" }
        );
        let guard = Guard::new(
            listen,
            &api.allowed_hosts,
            api.max_in_flight,
            std::time::Duration::from_millis(api.request_timeout_ms),
        );
        Ok(ApiState::new(client, status, guard, api.max_queries).with_tokens(tokens))
    }
}

/// Errors become JSON with a status that says whose fault it is.
pub enum ApiError {
    BadRequest(String),
    /// The thing asked for (one session) does not exist in the caller's scope.
    NotFound(String),
    /// The token may not read what was asked (another scope).
    Forbidden(String),
    Upstream(anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (code, msg) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
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

const RANGE: &[&str] = &["from", "to", "project", "user", "host", "limit"];
const DASHBOARD: &str = include_str!("dashboard.html");

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_endpoint))
        .route("/api/overview", get(usage::overview))
        .route("/api/claude-sessions", get(usage::sessions))
        .route("/api/claude-tool-usage", get(tool_usage))
        .route("/api/claude-file-access", get(file_access))
        .route("/api/claude-context-trends", get(usage::context_trends))
        .route("/api/claude-cost-analysis", get(usage::cost_analysis))
        .route("/api/security-events", get(security_events))
        .route("/api/claude-session/{id}", get(replay::session))
        .route("/api/search", get(search::search))
        .route("/api/insights/tool-times", get(insights::tool_times))
        .route("/api/insights/redundancy", get(insights::redundancy))
        .route("/api/insights/context", get(insights::context))
        .route("/api/insights/tool-costs", get(insights::tool_costs))
        .route("/api/insights/exposure", get(insights::exposure))
        .route("/api/insights/now", get(insights::now))
        .route("/api/alerts", get(alerts::list))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no such endpoint"})),
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.guard.clone(),
            guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            count_request,
        ))
        .with_state(state)
}

/// Who is calling, as [`authenticate`] found out.
#[derive(Clone, Debug)]
enum Caller {
    /// No tokens are configured: everything is open.
    Open,
    /// Tokens are configured but none (or no valid one) was presented; only
    /// the page and a bare `/healthz` answer.
    Anonymous,
    Token(Token),
}

impl Caller {
    /// May see engine-wide figures (health details, metrics).
    fn sees_everything(&self) -> bool {
        match self {
            Caller::Open => true,
            Caller::Anonymous => false,
            Caller::Token(t) => !t.scope.is_scoped(),
        }
    }
}

fn status_error(code: StatusCode, msg: &str) -> Response {
    (code, Json(json!({ "error": msg }))).into_response()
}

/// The auth middleware: resolve the caller, refuse what it may not read.
async fn authenticate(State(s): State<ApiState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    // The page holds no data, and health may be probed without a token.
    let open_path = path == "/" || path == "/healthz";
    let caller = if s.tokens.is_empty() {
        Caller::Open
    } else {
        let header = req.headers().get(header::AUTHORIZATION);
        match auth::bearer(header.and_then(|h| h.to_str().ok())) {
            Some(t) => match s.tokens.check(t) {
                Some(token) => Caller::Token(token.clone()),
                None if open_path => Caller::Anonymous,
                None => return unauthorized(&path, "invalid token"),
            },
            None if open_path => Caller::Anonymous,
            None => return unauthorized(&path, "missing bearer token"),
        }
    };
    if let Caller::Token(t) = &caller {
        if t.metrics_only && !open_path && path != "/metrics" {
            return status_error(StatusCode::FORBIDDEN, "this token may only read /metrics");
        }
        if path == "/metrics" && !caller.sees_everything() {
            return status_error(
                StatusCode::FORBIDDEN,
                "a scoped token may not read /metrics",
            );
        }
        tracing::debug!(token = %t.name, %path, "API request authenticated");
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn unauthorized(path: &str, why: &str) -> Response {
    tracing::warn!(%path, why, "API request refused: not authenticated");
    let mut r = status_error(
        StatusCode::UNAUTHORIZED,
        &format!("{why}: send `Authorization: Bearer <token>` (api.tokens_file)"),
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer realm=\"claude-ingest\""),
    );
    r
}

/// Counts every request (refused ones too) for `/metrics`.
async fn count_request(
    State(m): State<Arc<metrics::ApiMetrics>>,
    req: Request,
    next: Next,
) -> Response {
    let endpoint = metrics::endpoint_label(req.uri().path());
    let t0 = std::time::Instant::now();
    let r = next.run(req).await;
    m.observe(endpoint, r.status().as_u16(), t0.elapsed().as_secs_f64());
    r
}

async fn metrics_endpoint(State(s): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::render(&s.status, &s.metrics),
    )
        .into_response()
}

/// A handler's query string with the caller's scope.
pub struct Req {
    q: HashMap<String, String>,
    scope: Scope,
}

impl<S: Send + Sync> FromRequestParts<S> for Req {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Req, ApiError> {
        let Query(q) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        let scope = match parts.extensions.get::<Caller>() {
            Some(Caller::Token(t)) => t.scope.clone(),
            Some(_) => Scope::default(),
            // Only reachable if the router were built without `authenticate`.
            None => return Err(ApiError::Forbidden("no caller".into())),
        };
        Ok(Req { q, scope })
    }
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

/// The request's filters, narrowed to the caller's scope.
fn filters(req: &Req, allowed: &[&str], default_limit: u32) -> Result<Filters, ApiError> {
    let mut f = params::parse(&req.q, allowed, default_limit).map_err(ApiError::BadRequest)?;
    req.scope.apply(&mut f).map_err(ApiError::Forbidden)?;
    Ok(f)
}

/// Run one query with the standard bound parameters.
async fn rows(s: &ApiState, sql: &str, f: &Filters) -> Result<Rows, ApiError> {
    rows_with(s, sql, f, None).await
}

/// Like [`rows`], with more bound parameters.
async fn rows_with<'a>(
    s: &ApiState,
    sql: &str,
    f: &Filters,
    extra: impl IntoIterator<Item = (&'a str, Value)>,
) -> Result<Rows, ApiError> {
    let mut params = vec![
        ("from", Value::from(f.from.clone())),
        ("to", Value::from(f.to.clone())),
        ("project", Value::from(f.project.clone())),
        ("user", Value::from(f.user.clone())),
        ("host", Value::from(f.host.clone())),
        ("project_scope", Value::from(f.project_scope.clone())),
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
    json!({"from": f.from, "to": f.to, "project": f.project, "user": f.user, "host": f.host, "limit": f.limit})
}

// Reusable SQL fragments: they only reference bound parameters.
const TS_RANGE: &str =
    "timestamp >= {from:DateTime64(3, 'UTC')} AND timestamp < {to:DateTime64(3, 'UTC')}";
/// The user and host filters (tables without a project: dead letters).
const USER_HOST: &str =
    "({user:String} = '' OR user_name = {user:String}) AND ({host:String} = '' OR host = {host:String})";
/// The identity filters alone (user, host, and a token's project scope).
const IDENTITY: &str = "({user:String} = '' OR user_name = {user:String}) AND ({host:String} = '' OR host = {host:String}) AND ({project_scope:String} = '' OR project = {project_scope:String})";
/// The project, user and host filters (every table has those columns).
const SCOPE: &str = "({project:String} = '' OR project = {project:String}) AND ({user:String} = '' OR user_name = {user:String}) AND ({host:String} = '' OR host = {host:String})";

/// Health: the status code and `status` for anyone; the figures, errors and
/// unpriced models only for callers that may see engine-wide data.
async fn healthz(
    State(s): State<ApiState>,
    caller: Option<axum::Extension<Caller>>,
) -> (StatusCode, Json<Value>) {
    let snap = s.status.snapshot();
    let ch = s.client.ping().await;
    // a storage problem the writer is retrying (full spool disk, ...) degrades too
    let ok = ch.is_ok() && snap.status == "ok";
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = if ok { "ok" } else { "degraded" };
    if !caller.is_some_and(|c| c.0.sees_everything()) {
        return (code, Json(json!({ "status": status })));
    }
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
    body["status"] = Value::from(status);
    (code, Json(body))
}

/// `claude_tool_usage FINAL` folds each call's two partial rows (call and
/// result) while reading, in sorting-key order: cheaper than a GROUP BY over
/// (session_id, tool_use_id), and nearly free on a partition merged into one
/// part (schema/002). Filters on folded columns apply after the fold.
const CALLS: &str = "claude_tool_usage FINAL";

async fn tool_usage(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, RANGE, 20)?;
    // One folded pass feeds all three panels (the fold of the calls is most
    // of the cost, and split into three statements each paid it: measured
    // slower even run at once): grouping sets per
    // tool (all of them: there are few, and the totals are summed from them),
    // per tool and error, per Bash command; the last two cut to `limit`.
    // grouping() has a bit for each column NOT in the set: tool_name, error, command.
    let sql = format!(
        "SELECT * EXCEPT rn FROM (
           SELECT grouping(tool_name, error, command) AS level, tool_name, error, command,
                  any(tool_category) AS category, count() AS calls, countIf(has_result = 1) AS completed,
                  countIf(is_error = 1) AS errors, countIf(has_result = 0) AS pending,
                  countIf(dangerous) AS dangerous_calls, max(dangerous) AS dangerous_any,
                  round(if(completed = 0, 0, countIf(has_result = 1 AND is_error = 0) / completed), 4) AS success_rate,
                  round(avg(result_size)) AS avg_result_bytes,
                  row_number() OVER (PARTITION BY level ORDER BY calls DESC, tool_name, error, command) AS rn
           FROM (SELECT tool_name, tool_category, has_result, is_error, result_size,
                        has(labels, 'dangerous_command') AS dangerous,
                        if(is_error = 1, substring(error_message, 1, 160), '') AS error,
                        if(tool_name = 'Bash', command, '') AS command
                 FROM {CALLS} WHERE tool_name != '' AND {TS_RANGE} AND {SCOPE})
           GROUP BY GROUPING SETS ((tool_name), (tool_name, error), (command))
           HAVING level = 3 OR (level = 1 AND error != '') OR (level = 6 AND command != ''))
         WHERE level = 3 OR rn <= {{lim:UInt32}}
         ORDER BY level, calls DESC, tool_name, error, command"
    );
    let (mut tools, mut errors, mut bash) = (Vec::new(), Vec::new(), Vec::new());
    for r in rows(&s, &sql, &f).await? {
        let level = r.get("level").and_then(Value::as_u64);
        let pick = |keys: &[(&str, &str)]| -> Map<String, Value> {
            keys.iter()
                .map(|(from, to)| (to.to_string(), r.get(*from).cloned().unwrap_or(Value::Null)))
                .collect()
        };
        match level {
            Some(3) => tools.push(pick(&[
                ("tool_name", "tool_name"),
                ("category", "category"),
                ("calls", "calls"),
                ("completed", "completed"),
                ("errors", "errors"),
                ("pending", "pending"),
                ("dangerous_calls", "dangerous"),
                ("success_rate", "success_rate"),
                ("avg_result_bytes", "avg_result_bytes"),
            ])),
            Some(1) => errors.push(pick(&[
                ("tool_name", "tool_name"),
                ("error", "error"),
                ("calls", "occurrences"),
            ])),
            _ => bash.push(pick(&[
                ("command", "command"),
                ("calls", "runs"),
                ("errors", "failures"),
                ("dangerous_any", "dangerous"),
            ])),
        }
    }
    let total = |k: &str| {
        tools
            .iter()
            .map(|r| r.get(k).and_then(Value::as_u64).unwrap_or(0))
            .sum::<u64>()
    };
    let totals = json!({"calls": total("calls"), "errors": total("errors"), "pending": total("pending"),
        "dangerous_commands": total("dangerous"), "tools": tools.len()});
    tools.truncate(f.limit as usize);
    Ok(Json(
        json!({"filters": echo(&f), "totals": totals, "tools": tools, "top_errors": errors, "bash_commands": bash}),
    ))
}

async fn file_access(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, RANGE, 20)?;
    // No FINAL here: rows are written exactly once (spool + dedup tokens), and
    // a duplicate from a re-ingest with lost state is collapsed by the next
    // background merge. Reading without FINAL halves these panels' latency.
    let scope = format!("{TS_RANGE} AND {SCOPE}");
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

async fn security_events(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = filters(&req, RANGE, 20)?;
    // Totals and the kinds of secrets in one scan: sumMap counts each
    // `secret:<kind>` label over the messages.
    let totals = format!(
        "SELECT sum(redaction_count) AS secrets_redacted, countIf(contains_sensitive_data) AS sensitive_messages,
                countIf(has(labels, 'dangerous_command')) AS dangerous_command_messages,
                sumMap(arrayFilter(l -> startsWith(l, 'secret:'), labels) AS secret_labels,
                       arrayMap(x -> toUInt64(1), secret_labels)) AS kinds
         FROM claude_messages WHERE {TS_RANGE} AND {SCOPE}"
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
                   WHERE has(labels, 'dangerous_command') AND tool_name != '' AND {TS_RANGE} AND {SCOPE}
                   ORDER BY timestamp DESC LIMIT {{lim:UInt32}})
               GROUP BY session_id, tool_use_id)
         ORDER BY ts DESC"
    );
    let files = format!(
        "SELECT toString(timestamp) AS timestamp, project, session_id, tool_name, file_path
         FROM (SELECT * FROM claude_file_access WHERE is_sensitive AND {TS_RANGE} AND {SCOPE})
         ORDER BY timestamp DESC LIMIT {{lim:UInt32}}"
    );
    // Dead letters carry no project: a project-scoped token sees none.
    let dead = format!(
        "SELECT stage, count() AS lines FROM claude_dead_letters WHERE {USER_HOST} AND {{project_scope:String}} = ''
         GROUP BY stage ORDER BY lines DESC"
    );
    let (t, d, fl, dl) = tokio::join!(
        rows(&s, &totals, &f),
        rows(&s, &dangerous, &f),
        rows(&s, &files, &f),
        rows(&s, &dead, &f)
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
