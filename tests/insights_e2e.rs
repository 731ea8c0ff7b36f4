//! Session replay, search and the insight panels over the real ClickHouse,
//! filled by the real pipeline from a small hand-written fixture whose figures
//! are worked out by hand below (see `fixture`).

mod common;

use claude_ingest::api::auth::Tokens;
use claude_ingest::pipeline::{run, RunOptions};
use claude_ingest::sink::testing;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

const ALPHA: &str = "-fx-alpha";
const BETA: &str = "-fx-beta";
const S1: &str = "aaaa1111-0000-4000-8000-000000000001";
const S2: &str = "bbbb2222-0000-4000-8000-000000000002";
const MODEL: &str = "claude-sonnet-4-5-20250929";

fn ts(secs: f64) -> String {
    let ms = (secs * 1000.0) as i64;
    chrono::DateTime::from_timestamp_millis(1_793_527_200_000 + ms) // 2026-11-01 10:00:00Z
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn user(uuid: &str, t: f64, content: Value, extra: Value) -> String {
    let mut e = json!({"type": "user", "uuid": uuid, "sessionId": S1, "timestamp": ts(t),
        "cwd": "/w/alpha", "message": {"role": "user", "content": content}});
    if let (Some(e), Some(x)) = (e.as_object_mut(), extra.as_object()) {
        e.extend(x.clone());
    }
    e.to_string()
}

fn assistant(uuid: &str, t: f64, id: &str, content: Value, usage: Value, side: bool) -> String {
    json!({"type": "assistant", "uuid": uuid, "sessionId": S1, "timestamp": ts(t), "requestId": format!("req_{id}"),
        "isSidechain": side, "cwd": "/w/alpha",
        "message": {"id": id, "role": "assistant", "model": MODEL, "content": content, "usage": usage}})
    .to_string()
}

fn read(id: &str, path: &str) -> Value {
    json!([{"type": "tool_use", "id": id, "name": "Read", "input": {"file_path": path}}])
}

fn result(id: &str, text: &str, error: bool) -> Value {
    json!([{"type": "tool_result", "tool_use_id": id, "content": text, "is_error": error}])
}

/// Session S1 (project alpha), 12 lines:
/// prompt; m1 thinking+text (in 100, out 10, cache read 1000: $0.00075);
/// m2 Read parser.rs (in 5, out 20, read 2000, write 100) → result 2.0 s later, 13 bytes;
/// m3 Read parser.rs again (in 5, out 30, read 3000) → result 0.5 s later, 13 bytes;
/// m4 Read .env (in 5, out 40, read 4000) → error "permission denied" 3.0 s later;
/// a subagent prompt and reply m5 (in 50, out 5); a compaction; reply m6 (in 10, out 50, read 500).
/// Session S2 (project beta): one prompt with HTML in it, one reply.
fn fixture(root: &Path) {
    let u = |k: &str| format!("{S1}-{k}");
    let lines = vec![
        user(
            &u("p1"),
            0.0,
            json!("Please find the zebracorn bug in the parser"),
            json!({}),
        ),
        assistant(
            &u("a1"),
            5.0,
            "m1",
            json!([{"type": "thinking", "thinking": "I should read the parser first", "signature": "x"},
                   {"type": "text", "text": "Reading parser."}]),
            json!({"input_tokens": 100, "output_tokens": 10, "cache_read_input_tokens": 1000}),
            false,
        ),
        assistant(
            &u("a2"),
            6.0,
            "m2",
            read("t1", "/w/alpha/src/parser.rs"),
            json!({"input_tokens": 5, "output_tokens": 20, "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 100}),
            false,
        ),
        user(
            &u("r1"),
            8.0,
            result("t1", "fn parse() {}", false),
            json!({}),
        ),
        assistant(
            &u("a3"),
            10.0,
            "m3",
            read("t2", "/w/alpha/src/parser.rs"),
            json!({"input_tokens": 5, "output_tokens": 30, "cache_read_input_tokens": 3000}),
            false,
        ),
        user(
            &u("r2"),
            10.5,
            result("t2", "fn parse() {}", false),
            json!({}),
        ),
        assistant(
            &u("a4"),
            12.0,
            "m4",
            read("t3", "/w/alpha/.env"),
            json!({"input_tokens": 5, "output_tokens": 40, "cache_read_input_tokens": 4000}),
            false,
        ),
        user(
            &u("r3"),
            15.0,
            result("t3", "permission denied", true),
            json!({}),
        ),
        user(
            &u("sp"),
            20.0,
            json!("subagent task: list files"),
            json!({"isSidechain": true}),
        ),
        assistant(
            &u("a5"),
            25.0,
            "m5",
            json!([{"type": "text", "text": "subagent done"}]),
            json!({"input_tokens": 50, "output_tokens": 5}),
            true,
        ),
        user(
            &u("cs"),
            30.0,
            json!("Summary of the earlier conversation"),
            json!({"isCompactSummary": true}),
        ),
        assistant(
            &u("a6"),
            35.0,
            "m6",
            json!([{"type": "text", "text": "Fixed the zebracorn bug."}]),
            json!({"input_tokens": 10, "output_tokens": 50, "cache_read_input_tokens": 500}),
            false,
        ),
    ];
    append(&root.join(ALPHA).join(format!("{S1}.jsonl")), &lines);
    // S2 happens now: it is the active session, and today's only tokens.
    let now = |back_ms: i64| {
        (chrono::Utc::now() - chrono::Duration::milliseconds(back_ms))
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    };
    let beta = vec![
        user(
            &format!("{S2}-p1"),
            0.0,
            json!("unrelated <b>quokka</b> words"),
            json!({}),
        )
        .replace(S1, S2)
        .replace(&ts(0.0), &now(2000)),
        assistant(
            &format!("{S2}-a1"),
            0.0,
            "mb1",
            json!([{"type": "text", "text": "ok"}]),
            json!({"input_tokens": 1, "output_tokens": 1}),
            false,
        )
        .replace(S1, S2)
        .replace(&ts(0.0), &now(1000)),
    ];
    append(&root.join(BETA).join(format!("{S2}.jsonl")), &beta);
}

/// The `key` text of each row of a JSON array.
fn texts<'a>(rows: &'a Value, key: &str) -> Vec<&'a str> {
    let rows = rows.as_array().expect("an array of rows");
    rows.iter().map(|r| r[key].as_str().unwrap()).collect()
}

async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.expect("request");
    let code = r.status().as_u16();
    (code, r.json().await.expect("json body"))
}

/// Ingest the fixture into a fresh database; the API's base URL.
async fn serve_fixture(prefix: &str, tokens: Tokens) -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    fixture(&root);
    let (cfg, ch) = config(prefix, &root, &dir.path().join("state"));
    run(&cfg, RunOptions::once()).await.unwrap();
    let status = std::sync::Arc::new(claude_ingest::sink::status::IngestStatus::new(16));
    let base = testing::serve_api_with(ch, status, tokens).await.unwrap();
    (base, dir)
}

fn tokens() -> Tokens {
    let text = "- {name: admin, token: admin-token-0123456789}\n\
                - {name: beta, token: beta-token-0123456789, scope: {project: \"-fx-beta\"}}\n";
    Tokens::load(None, Some(text)).unwrap()
}

const ADMIN: Option<&str> = Some("admin-token-0123456789");
const BETA_ONLY: Option<&str> = Some("beta-token-0123456789");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_and_search_answer_exactly_and_respect_scope() {
    let (base, _dir) = serve_fixture("replay", tokens()).await;
    let (c, r) = get(&base, &format!("/api/claude-session/{S1}"), ADMIN).await;
    assert_eq!(c, 200, "{r}");
    let m = r["messages"].as_array().unwrap();
    assert_eq!(m.len(), 12);
    let kinds = texts(&r["messages"], "message_kind");
    assert_eq!(kinds[0], "prompt");
    assert_eq!(kinds[8], "subagent_prompt");
    assert_eq!(kinds[10], "compact_summary");
    assert_eq!(
        m[1]["thinking"][0]["thinking"],
        "I should read the parser first"
    );
    assert_eq!(m[1]["usage"]["cost"], 0.00075);
    assert_eq!(m[1]["usage"]["total_context_tokens"], 1100);
    let call = &m[2]["tool_calls"][0];
    assert_eq!(
        (call["tool_name"].as_str(), call["duration_ms"].as_i64()),
        (Some("Read"), Some(2000))
    );
    assert!(call["input"]
        .as_str()
        .unwrap()
        .contains("/w/alpha/src/parser.rs"));
    assert_eq!(m[3]["results_for"], json!(["t1"]));
    assert_eq!(m[4]["tool_calls"][0]["duration_ms"], 500);
    let err = &m[6]["tool_calls"][0];
    assert_eq!(
        (err["is_error"].as_u64(), err["error_message"].as_str()),
        (Some(1), Some("permission denied"))
    );
    assert_eq!(m[9]["is_sidechain"], true);
    assert_eq!(
        r["totals"],
        json!({"responses": 6, "output_tokens": 155, "cost": r["totals"]["cost"], "max_context_tokens": 4005,
               "tool_calls": 3, "tool_errors": 1, "compactions": 1, "sidechain_messages": 2})
    );
    assert_eq!(r["session"]["project"], ALPHA);
    assert_eq!(r["next_offset"], Value::Null);
    let (_, page) = get(
        &base,
        &format!("/api/claude-session/{S1}?limit=5&offset=5"),
        ADMIN,
    )
    .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 5);
    assert_eq!(page["next_offset"], 10);

    // ids are validated, unknown ones are 404, and a scoped token sees only its project
    for (path, token, code) in [
        ("a'b".to_string(), ADMIN, 400),
        ("nope".to_string(), ADMIN, 404),
        (format!("{S1}?bogus=1"), ADMIN, 400),
        (S1.to_string(), BETA_ONLY, 404),
        (S2.to_string(), BETA_ONLY, 200),
        (S1.to_string(), None, 401),
    ] {
        let url = format!("/api/claude-session/{path}");
        assert_eq!(get(&base, &url, token).await.0, code, "{url} {token:?}");
    }

    // search: prompts and replies, tool inputs, filters, escaped highlights
    let (c, s) = get(&base, "/api/search?q=Zebracorn", ADMIN).await;
    assert_eq!(c, 200, "{s}");
    let hits = s["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2, "{s}");
    assert!(hits
        .iter()
        .all(|h| h["session_id"] == S1 && h["source"] == "message"));
    assert_eq!(hits[0]["uuid"], format!("{S1}-a6"), "newest first");
    assert_eq!(
        hits[0]["snippet_html"],
        "Fixed the <mark>zebracorn</mark> bug."
    );
    let (_, s) = get(&base, "/api/search?q=parser.rs", ADMIN).await;
    assert_eq!(
        texts(&s["hits"], "source"),
        ["tool_input", "tool_input"],
        "{s}"
    );
    let (_, s) = get(&base, "/api/search?q=quokka", ADMIN).await;
    assert_eq!(
        s["hits"][0]["snippet_html"],
        "unrelated &lt;b&gt;<mark>quokka</mark>&lt;/b&gt; words"
    );
    let (_, s) = get(
        &base,
        &format!("/api/search?q=zebracorn&project={BETA}"),
        ADMIN,
    )
    .await;
    assert_eq!(s["hits"], json!([]));
    let (_, s) = get(&base, "/api/search?q=zebracorn&from=2026-11-02", ADMIN).await;
    assert_eq!(s["hits"], json!([]));
    let (_, s) = get(&base, "/api/search?q=zebracorn", BETA_ONLY).await;
    assert_eq!(
        s["hits"],
        json!([]),
        "a scoped token finds nothing outside its project"
    );
    assert_eq!(get(&base, "/api/search?q=%20--", ADMIN).await.0, 400);
    assert_eq!(get(&base, "/api/search", ADMIN).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insight_panels_answer_exactly() {
    let (base, _dir) = serve_fixture("insights", Tokens::default()).await;
    let alpha = format!("project={ALPHA}");
    let get = |path: String| {
        let base = base.clone();
        async move {
            let (c, v) = get(&base, &path, None).await;
            assert_eq!(c, 200, "{path}: {v}");
            v
        }
    };

    // tool times: Read calls took 2.0, 0.5 and 3.0 s; one failed
    let t = get(format!("/api/insights/tool-times?{alpha}")).await;
    assert_eq!(
        t["tools"],
        json!([{"tool_name": "Read", "calls": 3, "completed": 3, "errors": 1, "avg_ms": 1833.3,
                "p50_ms": 2000, "p95_ms": 3000, "max_ms": 3000, "total_ms": 5500}])
    );
    assert_eq!(t["failures"][0]["error"], "permission denied");
    assert_eq!(t["failures"][0]["occurrences"], 1);

    // redundancy: parser.rs read twice in one session; its result text logged twice
    let r = get(format!("/api/insights/redundancy?{alpha}")).await;
    assert_eq!(
        r["repeated_reads"],
        json!([{"file_path": "/w/alpha/src/parser.rs", "reads": 2, "repeated_reads": 1, "sessions": 1,
                "max_reads_in_one_session": 2}])
    );
    let d = &r["duplicate_content"];
    assert_eq!(d.as_array().unwrap().len(), 1, "{d}");
    assert_eq!(
        (d[0]["copies"].as_u64(), d[0]["repeated_bytes"].as_u64()),
        (Some(2), Some(13))
    );

    // context: 10775 context tokens, 10500 of them cache reads, 155 output
    let c = get(format!("/api/insights/context?{alpha}")).await;
    assert_eq!(
        c["totals"],
        json!({"requests": 6, "context_tokens": 10775, "cache_read_tokens": 10500, "output_tokens": 155,
               "cache_hit_ratio": 0.9745, "context_per_output_token": 69.52, "max_context_tokens": 4005,
               "max_utilization": 0.02})
    );
    assert_eq!(c["sessions"][0]["compactions"], 1);
    assert_eq!(c["sessions"][0]["session_id"], S1);

    // tool costs: the three Read requests (2125 + 3035 + 4045 tokens)
    let k = get(format!("/api/insights/tool-costs?{alpha}")).await;
    assert_eq!(
        k["tools"],
        json!([{"tool_name": "Read", "calls": 3, "tokens": 9205, "cost": 0.00447, "output_tokens": 90}])
    );

    // exposure: 26 bytes of parser.rs, 17 of .env (sensitive)
    let e = get(format!("/api/insights/exposure?{alpha}")).await;
    assert_eq!(
        e["files"],
        json!([{"file_path": "/w/alpha/src/parser.rs", "sensitive": false, "reads": 2, "bytes": 26, "sessions": 1},
               {"file_path": "/w/alpha/.env", "sensitive": true, "reads": 1, "bytes": 17, "sessions": 1}])
    );
    assert_eq!(e["directories"][0]["directory"], "/w/alpha/src");
    assert_eq!(e["directories"][1]["sensitive_reads"], 1);

    // now: S2 is active; today's tokens are S2's 2
    let n = get("/api/insights/now".to_string()).await;
    assert_eq!(texts(&n["active_sessions"], "session_id"), [S2]);
    assert_eq!(n["active_sessions"][0]["context_tokens"], 1);
    assert_eq!(
        n["today_by_directory"],
        json!([{"project": BETA, "requests": 1, "tokens": 2, "output_tokens": 1, "cost": 0.000018}])
    );

    // validation
    for bad in [
        "/api/insights/now?minutes=0",
        "/api/insights/context?from=x",
        "/api/insights/exposure?sort=1",
    ] {
        assert_eq!(get_code(&base, bad).await, 400, "{bad}");
    }
}

/// "Now" is bounded above too: a session dated tomorrow (a clock ahead of
/// time) is neither active nor part of today's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_dated_in_the_future_are_not_now() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let at = |offset: chrono::Duration| {
        (chrono::Utc::now() + offset)
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    };
    let reply = |sid: &str, id: &str, when: &str| {
        assistant(
            &format!("{sid}-{id}"),
            0.0,
            id,
            json!([{"type": "text", "text": "ok"}]),
            json!({"input_tokens": 1, "output_tokens": 1}),
            false,
        )
        .replace(S1, sid)
        .replace(&ts(0.0), when)
    };
    let present = reply(S2, "mnow", &at(chrono::Duration::seconds(-1)));
    let future = reply(S1, "mfut", &at(chrono::Duration::days(1)));
    append(&root.join(BETA).join(format!("{S2}.jsonl")), &[present]);
    append(&root.join(ALPHA).join(format!("{S1}.jsonl")), &[future]);
    let (cfg, ch) = config("future", &root, &dir.path().join("state"));
    run(&cfg, RunOptions::once()).await.unwrap();
    let base = testing::serve_api(ch).await.unwrap();
    let (code, n) = get(&base, "/api/insights/now", None).await;
    assert_eq!(code, 200, "{n}");
    assert_eq!(texts(&n["active_sessions"], "session_id"), [S2]);
    assert_eq!(texts(&n["today_by_directory"], "project"), [BETA]);
}

/// A session continued with `--resume` repeats earlier lines in a new file:
/// the repeated call and its request still count once in tool costs and tool
/// times (both read the folded calls), whichever file was read first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_repeated_by_a_resumed_session_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let lines = [
        assistant(
            &format!("{S1}-a2"),
            6.0,
            "m2",
            read("toolu_r1", "/w/alpha/src/parser.rs"),
            json!({"input_tokens": 5, "output_tokens": 20}),
            false,
        ),
        user(
            &format!("{S1}-r2"),
            8.0,
            result("toolu_r1", "fn parse() {}", false),
            json!({}),
        ),
    ];
    // two runs, so the repeat lands in parts of its own (not folded on insert)
    append(&root.join(ALPHA).join(format!("{S1}.jsonl")), &lines);
    let (cfg, ch) = config("resumed", &root, &dir.path().join("state"));
    run(&cfg, RunOptions::once()).await.unwrap();
    append(&root.join(ALPHA).join("resumed.jsonl"), &lines);
    run(&cfg, RunOptions::once()).await.unwrap();
    let base = testing::serve_api(ch).await.unwrap();
    let (_, k) = get(&base, "/api/insights/tool-costs", None).await;
    assert_eq!(
        k["tools"],
        json!([{"tool_name": "Read", "calls": 1, "tokens": 25, "cost": 0.000315, "output_tokens": 20}])
    );
    let (_, t) = get(&base, "/api/insights/tool-times", None).await;
    assert_eq!(t["tools"][0]["calls"], 1, "{t}");
}

async fn get_code(base: &str, path: &str) -> u16 {
    get(base, path, None).await.0
}

/// A local webhook: every POSTed JSON body, in order.
async fn webhook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::{extract::State, routing::post, Json, Router};
    type Got = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;
    let got: Got = Default::default();
    let app = Router::new()
        .route(
            "/hook",
            post(|State(g): State<Got>, Json(v): Json<Value>| async move {
                g.lock().unwrap().push(v);
            }),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_alert_reaches_the_webhook_once_per_crossing() {
    use claude_ingest::api::alerts::{check_once, AlertLog};
    use claude_ingest::config::{AlertThreshold, AlertsSection};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    fixture(&root);
    let (cfg, ch) = config("alerts", &root, &dir.path().join("state"));
    run(&cfg, RunOptions::once()).await.unwrap();
    let (url, got) = webhook().await;
    let threshold = |project: &str, cost_per_hour: f64| AlertThreshold {
        project: Some(project.into()),
        user: None,
        cost_per_hour,
    };
    // beta spent $0.000018 just now: over $0.00001/h in a 60-minute window;
    // alpha's spending is a month old: under any threshold now
    let alerts = AlertsSection {
        webhook: Some(url),
        check_interval_s: 1,
        window_minutes: 60,
        thresholds: vec![threshold(BETA, 0.00001), threshold(ALPHA, 0.000001)],
    };
    let log = std::sync::Arc::new(AlertLog::default());
    let http = reqwest::Client::new();
    let first = check_once(&ch, &alerts, &log, &http).await.unwrap();
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!((first[0].project.as_str(), first[0].cost), (BETA, 0.000018));
    assert_eq!(first[0].cost_per_hour, 0.000018);
    let again = check_once(&ch, &alerts, &log, &http).await.unwrap();
    assert!(again.is_empty(), "a threshold alerts once per crossing");
    let posted = got.lock().unwrap().clone();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0]["kind"], "budget_alert");
    assert_eq!(posted[0]["alert"]["project"], BETA);
    assert_eq!(posted[0]["alert"]["threshold_per_hour"], 0.00001);

    // the API (and so the dashboard) shows it
    let status = std::sync::Arc::new(claude_ingest::sink::status::IngestStatus::new(16));
    let base = testing::serve_api_alerts(ch, status, Tokens::default(), log)
        .await
        .unwrap();
    let (c, a) = get(&base, "/api/alerts", None).await;
    assert_eq!(c, 200, "{a}");
    assert_eq!(a["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(a["alerts"][0]["project"], BETA);
    let (_, none) = get(&base, &format!("/api/alerts?project={ALPHA}"), None).await;
    assert_eq!(none["alerts"], json!([]));
}

/// `../shared/real-logs/projects` (from the main checkout or a worktree), if present.
fn real_logs() -> Option<std::path::PathBuf> {
    let env = std::env::var_os("REAL_LOGS").map(std::path::PathBuf::from);
    let near = [
        "../shared/real-logs/projects",
        "../../shared/real-logs/projects",
    ]
    .map(|p| repo().join(p));
    env.into_iter().chain(near).find(|p| p.is_dir())
}

/// Every new endpoint answers on real logs; every session replays with all
/// its lines; a word of a session's first prompt finds that session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_logs_replay_search_and_insights() {
    let Some(root) = real_logs() else {
        eprintln!("SKIPPED: no ../shared/real-logs (set REAL_LOGS)");
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config("reallogs", &root, state.path());
    run(&cfg, RunOptions::once()).await.unwrap();
    let base = testing::serve_api(ch.clone()).await.unwrap();
    for ep in [
        "tool-times",
        "redundancy",
        "context",
        "tool-costs",
        "exposure",
        "now",
    ] {
        let (c, v) = get(&base, &format!("/api/insights/{ep}?limit=1000"), None).await;
        assert_eq!(c, 200, "{ep}: {v}");
    }
    let sql = "SELECT session_id, count() AS n,
                      argMinIf(content, timestamp, message_kind = 'prompt' AND length(content) > 20) AS prompt
               FROM claude_messages FINAL GROUP BY session_id ORDER BY session_id";
    let sessions = ch.query_json(sql, &[]).await.unwrap();
    assert!(sessions.len() > 10, "{} sessions", sessions.len());
    let mut found = 0;
    for s in &sessions {
        let id = s["session_id"].as_str().unwrap();
        let (c, r) = get(&base, &format!("/api/claude-session/{id}"), None).await;
        assert_eq!(c, 200, "{id}: {r}");
        let want = s["n"].as_u64().unwrap().min(1000);
        assert_eq!(r["messages"].as_array().unwrap().len() as u64, want, "{id}");
        // the longest word of the first prompt finds this session
        let prompt = s["prompt"].as_str().unwrap_or_default();
        let Some(word) = prompt
            .split(|c: char| !c.is_ascii_alphanumeric())
            .max_by_key(|w| w.len())
            .filter(|w| w.len() >= 6)
        else {
            continue;
        };
        let (c, hits) = get(&base, &format!("/api/search?q={word}&limit=1000"), None).await;
        assert_eq!(c, 200, "{word}: {hits}");
        let ids: Vec<&str> = hits["hits"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|h| h["session_id"].as_str())
            .collect();
        assert!(
            ids.contains(&id) || ids.len() == 1000,
            "`{word}` does not find {id}"
        );
        found += 1;
    }
    assert!(found > 5, "only {found} sessions had a searchable prompt");
}

/// On the example corpus the panels agree with examples/EXPECTED.json.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_corpus_insights_agree_with_expected() {
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/EXPECTED.json")).unwrap(),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config(
        "insex",
        &repo().join("examples/claude-projects"),
        state.path(),
    );
    run(&cfg, RunOptions::once()).await.unwrap();
    let base = testing::serve_api(ch).await.unwrap();
    let sum = |v: &Value, k: &str| -> u64 {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r[k].as_u64().unwrap_or(0))
            .sum()
    };
    let (_, t) = get(&base, "/api/insights/tool-times?limit=1000", None).await;
    assert_eq!(
        sum(&t["tools"], "calls"),
        exp["tool_uses"].as_u64().unwrap(),
        "{t}"
    );
    assert_eq!(
        sum(&t["failures"], "occurrences"),
        exp["tool_errors"].as_u64().unwrap()
    );
    let (_, c) = get(&base, "/api/insights/context?limit=1000", None).await;
    assert_eq!(c["totals"]["requests"], exp["usage_entries"], "{c}");
    assert_eq!(
        sum(&c["sessions"], "requests"),
        exp["usage_entries"].as_u64().unwrap(),
        "{c}"
    );
    assert_eq!(
        c["sessions"].as_array().unwrap().len() as u64,
        exp["session_count"].as_u64().unwrap(),
        "{c}"
    );
}
