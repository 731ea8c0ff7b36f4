//! The report queries. All figures come from `claude_requests FINAL`: one row
//! per API request, its final streaming snapshot. Values are bound as
//! ClickHouse parameters; only the fixed period expressions are SQL text.
//! Aliases never reuse a column name (`usd`, not `cost`): ClickHouse would
//! resolve the column to the alias in the expressions that follow.

use super::blocks::Request;
use super::shape::{Tokens, UsageRow};
use super::{project_names, Filter, ReportKind};
use crate::sink::clickhouse::ChClient;
use anyhow::{anyhow, Context, Result};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// The WHERE clause every report shares, and its parameters.
fn conditions(f: &Filter) -> (String, Vec<(&'static str, Value)>) {
    let mut conds = vec!["1".to_string()];
    let mut params: Vec<(&'static str, Value)> = vec![("tz", f.timezone.clone().into())];
    if let Some(d) = f.since {
        conds.push("toDate(timestamp, {tz:String}) >= {since:Date}".into());
        params.push(("since", d.to_string().into()));
    }
    if let Some(d) = f.until {
        conds.push("toDate(timestamp, {tz:String}) <= {until:Date}".into());
        params.push(("until", d.to_string().into()));
    }
    if let Some(arg) = &f.project {
        // The directory name, or a session whose working directory is the
        // given path or below it (copied or moved logs keep their cwd).
        conds.push(
            "(project IN {projects:Array(String)} OR (project, session_id) IN \
               (SELECT project, session_id FROM claude_sessions \
                WHERE project_path = {project_path:String} \
                   OR startsWith(project_path, concat({project_path:String}, '/'))))"
                .into(),
        );
        params.push(("projects", project_names(arg).into()));
        params.push(("project_path", arg.trim_end_matches('/').into()));
    }
    (conds.join(" AND "), params)
}

/// The group a request falls in: its day, week (Monday) or month in the
/// report's zone, or its session.
fn group_expr(kind: ReportKind) -> (&'static str, &'static str) {
    match kind {
        ReportKind::Daily => ("toString(toDate(timestamp, {tz:String}))", "''"),
        ReportKind::Weekly => ("toString(toMonday(toDate(timestamp, {tz:String})))", "''"),
        ReportKind::Monthly => ("formatDateTime(timestamp, '%Y-%m', {tz:String})", "''"),
        ReportKind::Session | ReportKind::Blocks => ("session_id", "project"),
    }
}

/// Fails with a plain message when ClickHouse does not know the zone.
pub async fn check_timezone(client: &ChClient, tz: &str) -> Result<()> {
    client
        .query_json(
            "SELECT toTimeZone(now(), {tz:String}) AS t",
            &[("tz", tz.into())],
        )
        .await
        .map(|_| ())
        .map_err(|e| {
            anyhow!(
                "unknown time zone `{tz}` (use an IANA name such as UTC or Europe/Paris): {e:#}"
            )
        })
}

/// Sums per (group, model) for the daily / weekly / monthly / session reports.
pub async fn usage(client: &ChClient, f: &Filter, kind: ReportKind) -> Result<Vec<UsageRow>> {
    let (group, project) = group_expr(kind);
    let (cond, params) = conditions(f);
    let sql = format!(
        "SELECT {group} AS grp, {project} AS proj, model, \
           sum(input_tokens) AS input, sum(output_tokens) AS output, \
           sum(cache_creation_input_tokens) AS cache_creation, \
           sum(cache_read_input_tokens) AS cache_read, \
           sum(ifNull(cost, 0)) AS usd, count() AS requests, \
           countIf(cost IS NULL) AS unpriced, \
           toUnixTimestamp64Milli(max(timestamp)) AS last_ms \
         FROM claude_requests FINAL WHERE {cond} \
         GROUP BY grp, proj, model ORDER BY grp, proj, model"
    );
    let rows = client
        .query_json(&sql, &params)
        .await
        .with_context(|| format!("cannot read the {kind:?} usage (time zone {})", f.timezone))?;
    rows.iter().map(usage_row).collect()
}

fn usage_row(r: &Map<String, Value>) -> Result<UsageRow> {
    Ok(UsageRow {
        group: text(r, "grp")?,
        project: text(r, "proj")?,
        project_path: None,
        model: text(r, "model")?,
        tokens: tokens(r)?,
        cost: float(r, "usd")?,
        requests: uint(r, "requests")?,
        unpriced_requests: uint(r, "unpriced")?,
        last_ms: int(r, "last_ms")?,
    })
}

/// Every request in time order, for the blocks report.
pub async fn requests(client: &ChClient, f: &Filter) -> Result<Vec<Request>> {
    let (cond, params) = conditions(f);
    let sql = format!(
        "SELECT toUnixTimestamp64Milli(timestamp) AS ts_ms, model, \
           input_tokens AS input, output_tokens AS output, \
           cache_creation_input_tokens AS cache_creation, \
           cache_read_input_tokens AS cache_read, \
           ifNull(cost, 0) AS usd, toUInt8(cost IS NOT NULL) AS priced \
         FROM claude_requests FINAL WHERE {cond} \
         ORDER BY timestamp, project, message_id, request_id"
    );
    let rows = client
        .query_json(&sql, &params)
        .await
        .context("cannot read the requests for the blocks report")?;
    rows.iter()
        .map(|r| {
            Ok(Request {
                ts_ms: int(r, "ts_ms")?,
                model: text(r, "model")?,
                tokens: tokens(r)?,
                cost: float(r, "usd")?,
                priced: uint(r, "priced")? != 0,
            })
        })
        .collect()
}

/// The working directory of each session, keyed by (project, session id).
pub async fn project_paths(
    client: &ChClient,
    f: &Filter,
) -> Result<HashMap<(String, String), String>> {
    let (cond, params) = conditions(f);
    let sql = format!(
        "SELECT project, session_id, max(project_path) AS path FROM claude_sessions \
         WHERE (project, session_id) IN (SELECT project, session_id FROM claude_requests WHERE {cond}) \
         GROUP BY project, session_id"
    );
    let rows = client
        .query_json(&sql, &params)
        .await
        .context("cannot read the sessions' project paths")?;
    let mut out = HashMap::new();
    for r in &rows {
        let path = text(r, "path")?;
        if !path.is_empty() {
            out.insert((text(r, "project")?, text(r, "session_id")?), path);
        }
    }
    Ok(out)
}

/// `YYYY-MM-DD HH:MM` in `tz` for each instant (ms), formatted by ClickHouse,
/// which has the time zone database.
pub async fn time_labels(client: &ChClient, tz: &str, ms: &[i64]) -> Result<HashMap<i64, String>> {
    if ms.is_empty() {
        return Ok(HashMap::new());
    }
    let list: Vec<String> = ms.iter().map(i64::to_string).collect();
    let sql = "SELECT toInt64(t) AS ms, \
                 formatDateTime(fromUnixTimestamp64Milli(toInt64(t), {tz:String}), '%Y-%m-%d %H:%i') AS label \
               FROM (SELECT arrayJoin({ms:Array(String)}) AS t)";
    let rows = client
        .query_json(sql, &[("tz", tz.into()), ("ms", list.into())])
        .await
        .with_context(|| format!("cannot format times in time zone `{tz}`"))?;
    rows.iter()
        .map(|r| Ok((int(r, "ms")?, text(r, "label")?)))
        .collect()
}

fn tokens(r: &Map<String, Value>) -> Result<Tokens> {
    Ok(Tokens {
        input: uint(r, "input")?,
        output: uint(r, "output")?,
        cache_creation: uint(r, "cache_creation")?,
        cache_read: uint(r, "cache_read")?,
    })
}

fn field<'a>(r: &'a Map<String, Value>, k: &str) -> Result<&'a Value> {
    r.get(k)
        .ok_or_else(|| anyhow!("ClickHouse row has no `{k}` column"))
}

fn text(r: &Map<String, Value>, k: &str) -> Result<String> {
    match field(r, k)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(anyhow!("column `{k}`: expected a string, got {other}")),
    }
}

fn uint(r: &Map<String, Value>, k: &str) -> Result<u64> {
    let v = field(r, k)?;
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| anyhow!("column `{k}`: expected an unsigned integer, got {v}"))
}

fn int(r: &Map<String, Value>, k: &str) -> Result<i64> {
    let v = field(r, k)?;
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| anyhow!("column `{k}`: expected an integer, got {v}"))
}

fn float(r: &Map<String, Value>, k: &str) -> Result<f64> {
    let v = field(r, k)?;
    v.as_f64()
        .ok_or_else(|| anyhow!("column `{k}`: expected a number, got {v}"))
}
