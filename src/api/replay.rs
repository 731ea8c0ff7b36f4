//! Session replay: one session's conversation in log order, each line with
//! what the tables keep about it (tool calls with their inputs, results and
//! call → result durations, thinking blocks, the request's tokens, cost and
//! context size), plus the session's header. The dashboard renders it at
//! `#/session/<id>`.

use super::{filters, rows_with, ApiError, ApiResult, ApiState, Req, Rows, CALLS, SCOPE};
use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};

/// A replay returns at most this many lines per page (`offset` pages on).
const PAGE: u32 = 1000;
/// Longer texts (a whole file read, a long command output) are cut here; the
/// full length is returned alongside.
const MAX_TEXT: u32 = 20_000;

/// Session ids are UUIDs in Claude Code; file-derived ones may hold dots,
/// dashes and underscores. Anything else is refused before any query.
pub(super) fn valid_session_id(id: &str) -> Result<&str, ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(id)
    } else {
        Err(ApiError::BadRequest(
            "session id must be 1-128 letters, digits, `-`, `_` or `.`".into(),
        ))
    }
}

fn offset(req: &Req) -> Result<u64, ApiError> {
    match req.q.get("offset").map(|s| s.trim()) {
        None | Some("") => Ok(0),
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest(format!("`offset` must be a number, not `{v}`"))),
    }
}

/// The queries of one replay; every one is narrowed to the session and the
/// caller's scope (`SCOPE`), and reads through the session's key or index.
fn queries() -> [String; 5] {
    let one = format!("session_id = {{session:String}} AND {SCOPE}");
    [
        format!(
            "SELECT project, session_id, toString(first_timestamp) AS first_activity,
                    toString(last_timestamp) AS last_activity, entries, prompts, tool_calls, compactions,
                    subagent_prompts, sidechain_entries, models, git_branch, project_path
             FROM claude_sessions FINAL WHERE {one}"
        ),
        format!(
            "SELECT uuid, parent_uuid, toString(timestamp) AS timestamp, message_kind, role, model,
                    is_sidechain, message_id, substringUTF8(content, 1, {MAX_TEXT}) AS text,
                    content_length, tool_use_count
             FROM claude_messages FINAL WHERE {one}
             ORDER BY timestamp, source_file, source_offset, uuid
             LIMIT {{lim:UInt32}} OFFSET {{off:UInt64}}"
        ),
        format!(
            "SELECT tool_use_id, message_uuid, result_uuid, tool_name, substringUTF8(parameters, 1, {MAX_TEXT}) AS input,
                    toString(timestamp) AS called_at, if(has_result = 1, toString(result_timestamp), '') AS result_at,
                    if(has_result = 1, dateDiff('millisecond', timestamp, result_timestamp), NULL) AS duration_ms,
                    has_result, is_error, error_message, result_size, result_preview
             FROM {CALLS} WHERE {one} AND tool_name != ''
             ORDER BY timestamp, tool_use_id"
        ),
        format!(
            "SELECT message_id, uuid, model, input_tokens, output_tokens, cache_creation_input_tokens,
                    cache_read_input_tokens, total_context_tokens, round(context_utilization, 4) AS context_utilization,
                    round(ifNull(cost, 0), 6) AS cost
             FROM claude_requests FINAL WHERE {one}"
        ),
        format!(
            "SELECT message_uuid, block_index, substringUTF8(thinking, 1, {MAX_TEXT}) AS thinking
             FROM claude_thinking FINAL WHERE {one} ORDER BY message_uuid, block_index"
        ),
    ]
}

pub(super) async fn session(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    req: Req,
) -> ApiResult {
    let id = valid_session_id(&id)?.to_string();
    let off = offset(&req)?;
    // `offset` is this endpoint's own; the rest are the standard filters.
    let mut q = req.q.clone();
    q.remove("offset");
    let scope = req.scope.clone();
    let mut f = filters(
        &Req { q, scope },
        &["project", "user", "host", "limit"],
        PAGE,
    )?;
    f.session = id;
    let [head, msgs, tools, reqs, thinking] = queries();
    let page = Some(("off", Value::from(off)));
    let (head, msgs, tools, reqs, thinking) = tokio::join!(
        rows_with(&s, &head, &f, None),
        rows_with(&s, &msgs, &f, page),
        rows_with(&s, &tools, &f, None),
        rows_with(&s, &reqs, &f, None),
        rows_with(&s, &thinking, &f, None),
    );
    let head = head?;
    let Some(session) = head.into_iter().next() else {
        return Err(ApiError::NotFound(format!(
            "no session `{}` (in this scope)",
            f.session
        )));
    };
    let msgs = msgs?;
    let more = msgs.len() as u32 >= f.limit;
    let timeline = assemble(msgs, tools?, &reqs?, thinking?);
    Ok(Json(json!({
        "session": session, "totals": totals(&timeline), "offset": off,
        "next_offset": if more { Value::from(off + f.limit as u64) } else { Value::Null },
        "messages": timeline,
    })))
}

fn text(r: &Map<String, Value>, k: &str) -> String {
    r.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// Group `rows` by the text of column `key`, in their order.
fn by_key(rows: Rows, key: &str) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for r in rows {
        out.entry(text(&r, key)).or_default().push(Value::Object(r));
    }
    out
}

/// Each line gets its tool calls (on the calling line), the results it
/// carries (on the result line), its thinking blocks, and - on the first line
/// of each API response - that request's usage, cost and context size.
fn assemble(msgs: Rows, tools: Rows, reqs: &Rows, thinking: Rows) -> Vec<Value> {
    let results: HashMap<String, Vec<String>> = tools.iter().fold(HashMap::new(), |mut m, t| {
        m.entry(text(t, "result_uuid"))
            .or_default()
            .push(text(t, "tool_use_id"));
        m
    });
    let mut calls = by_key(tools, "message_uuid");
    let mut thinking = by_key(thinking, "message_uuid");
    let usage: HashMap<String, &Map<String, Value>> =
        reqs.iter().map(|r| (text(r, "message_id"), r)).collect();
    let mut seen: HashSet<String> = HashSet::new();
    msgs.into_iter()
        .map(|mut m| {
            let uuid = text(&m, "uuid");
            let mid = text(&m, "message_id");
            let turn = (!mid.is_empty() && seen.insert(mid.clone()))
                .then(|| usage.get(&mid).map(|u| Value::Object((*u).clone())))
                .flatten();
            m.insert("usage".into(), turn.unwrap_or(Value::Null));
            m.insert(
                "tool_calls".into(),
                calls.remove(&uuid).unwrap_or_default().into(),
            );
            m.insert(
                "thinking".into(),
                thinking.remove(&uuid).unwrap_or_default().into(),
            );
            let res = results.get(&uuid).cloned().unwrap_or_default();
            m.insert("results_for".into(), res.into());
            Value::Object(m)
        })
        .collect()
}

/// Sums over the page: responses, tokens, cost, the largest context, tool
/// calls and errors, compactions and subagent lines.
fn totals(timeline: &[Value]) -> Value {
    let (mut responses, mut output, mut cost, mut max_ctx) = (0u64, 0u64, 0f64, 0u64);
    let (mut calls, mut errors, mut compactions, mut sidechain) = (0u64, 0u64, 0u64, 0u64);
    for m in timeline {
        if let Some(u) = m.get("usage").filter(|u| u.is_object()) {
            responses += 1;
            output += u["output_tokens"].as_u64().unwrap_or(0);
            cost += u["cost"].as_f64().unwrap_or(0.0);
            max_ctx = max_ctx.max(u["total_context_tokens"].as_u64().unwrap_or(0));
        }
        for c in m["tool_calls"].as_array().into_iter().flatten() {
            calls += 1;
            errors += c["is_error"].as_u64().unwrap_or(0);
        }
        compactions += u64::from(m["message_kind"] == "compact_summary");
        sidechain += u64::from(m["is_sidechain"] == true);
    }
    json!({"responses": responses, "output_tokens": output, "cost": (cost * 1e6).round() / 1e6,
           "max_context_tokens": max_ctx, "tool_calls": calls, "tool_errors": errors,
           "compactions": compactions, "sidechain_messages": sidechain})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_validated() {
        assert!(valid_session_id("0b7e5c1a-1111-4a1a-9a1a-000000000001").is_ok());
        assert!(valid_session_id("agent_1.x").is_ok());
        for bad in ["", "a b", "x'y", "../etc", &"a".repeat(129)] {
            assert!(valid_session_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_goes_on_the_first_line_of_a_response() {
        let row = |v: Value| v.as_object().unwrap().clone();
        let msgs = vec![
            row(json!({"uuid": "a", "message_id": "m1", "message_kind": "response"})),
            row(json!({"uuid": "b", "message_id": "m1", "message_kind": "response"})),
            row(json!({"uuid": "c", "message_id": "", "message_kind": "tool_result"})),
        ];
        let tools = vec![row(
            json!({"tool_use_id": "t1", "message_uuid": "b", "result_uuid": "c", "is_error": 1}),
        )];
        let reqs = vec![row(
            json!({"message_id": "m1", "output_tokens": 7, "cost": 0.5, "total_context_tokens": 90}),
        )];
        let t = assemble(msgs, tools, &reqs, Vec::new());
        assert!(t[0]["usage"].is_object() && t[1]["usage"].is_null());
        assert_eq!(t[1]["tool_calls"][0]["tool_use_id"], "t1");
        assert_eq!(t[2]["results_for"], json!(["t1"]));
        let sums = totals(&t);
        assert_eq!(
            (sums["responses"].as_u64(), sums["tool_errors"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(sums["max_context_tokens"], 90);
    }
}
