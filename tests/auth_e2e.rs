//! API access control and `/metrics` against the real ClickHouse, filled by
//! the real pipeline from the example corpus plus a few rows of another user:
//! no token 401, wrong token 401, a scoped token sees only its rows, health
//! says nothing private without a token, `/metrics` parses as Prometheus text.

mod common;

use claude_ingest::api::auth::Tokens;
use claude_ingest::api::ApiState;
use claude_ingest::config::ApiSection;
use claude_ingest::pipeline::{run, RunOptions};
use claude_ingest::sink::clickhouse::ChClient;
use claude_ingest::sink::status::IngestStatus;
use claude_ingest::sink::testing;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &str = "admin-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";
const WEBAPP: &str = "webapp-token-012345678";
const PROM: &str = "prometheus-token-01234";

fn tokens() -> Tokens {
    let file = format!(
        r#"
- name: admin
  token: {ADMIN}
- name: bob
  sha256: {}
  scope: {{ user: bob, host: bob-laptop }}
- name: webapp
  token: {WEBAPP}
  scope: {{ project: -home-dev-webapp }}
- name: prometheus
  token: {PROM}
  metrics_only: true
"#,
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(BOB.as_bytes()))
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.yaml");
    std::fs::write(&path, file).unwrap();
    Tokens::load(Some(&path), None).unwrap()
}

async fn get(base: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("request");
    let code = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        code,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A few rows of another user on another machine, in a project of their own.
async fn insert_bob(ch: &ChClient) {
    let who = json!({"project": "-home-bob-secret", "host": "bob-laptop", "user_name": "bob"});
    let row = |extra: Value| {
        let mut r = who.clone();
        r.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        bytes::Bytes::from(format!("{r}\n"))
    };
    let ts = "2026-10-02 10:00:00.000";
    let rows = [
        (
            "claude_messages",
            json!({"uuid": "bob-u1", "session_id": "bob-s1", "timestamp": ts,
            "entry_type": "user", "message_kind": "prompt", "content": "bob's private prompt"}),
        ),
        (
            "claude_requests",
            json!({"message_id": "msg_bob", "request_id": "req_bob", "session_id": "bob-s1",
            "timestamp": ts, "model": "claude-sonnet-4-5-20250929", "input_tokens": 1000, "output_tokens": 10,
            "cost": 0.5, "priced": true}),
        ),
        (
            "claude_sessions",
            json!({"session_id": "bob-s1", "first_timestamp": ts, "last_timestamp": ts,
            "entries": 1, "prompts": 1}),
        ),
        (
            "claude_tool_usage",
            json!({"session_id": "bob-s1", "tool_use_id": "toolu_bob", "timestamp": ts,
            "tool_name": "Bash", "command": "cat bob-secret.txt"}),
        ),
    ];
    for (table, r) in rows {
        ch.insert_json_each_row(table, row(r), &format!("bob:{table}"))
            .await
            .unwrap_or_else(|e| panic!("{table}: {e:#}"));
    }
}

fn session_projects(v: &Value) -> Vec<String> {
    let mut p: Vec<String> = v["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["project"].as_str().unwrap().to_string())
        .collect();
    p.dedup();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_scopes_hold() {
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config(
        "auth",
        &repo().join("examples/claude-projects"),
        state.path(),
    );
    run(&cfg, RunOptions::once()).await.unwrap();
    insert_bob(&ch).await;
    let status = Arc::new(IngestStatus::new(16));
    let base = testing::serve_api_with(ch.clone(), status, tokens())
        .await
        .unwrap();

    // no token, a wrong token, another scheme: 401 on every data endpoint
    for path in [
        "/api/overview",
        "/api/claude-sessions",
        "/api/security-events",
        "/metrics",
    ] {
        assert_eq!(get(&base, path, None).await.0, 401, "{path}");
        assert_eq!(
            get(&base, path, Some("wrong-token-xxxxxxxx")).await.0,
            401,
            "{path}"
        );
    }
    let r = reqwest::Client::new()
        .get(format!("{base}/api/overview"))
        .basic_auth("admin", Some(ADMIN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("www-authenticate").is_some());

    // the page and a bare health check stay open, the latter saying nothing private
    assert_eq!(get(&base, "/", None).await.0, 200);
    let (c, h) = get(&base, "/healthz", None).await;
    assert_eq!((c, &h), (200, &json!({"status": "ok"})));
    let (_, h) = get(&base, "/healthz", Some(BOB)).await;
    assert_eq!(
        h,
        json!({"status": "ok"}),
        "a scoped token sees no engine-wide figures"
    );
    let (_, h) = get(&base, "/healthz", Some(ADMIN)).await;
    assert!(
        h["rows_written"].is_u64() && h["clickhouse_reachable"] == true,
        "{h}"
    );

    // the admin sees everyone: the example's 6 sessions and bob's
    let (c, all) = get(&base, "/api/claude-sessions?limit=1000", Some(ADMIN)).await;
    assert_eq!(c, 200, "{all}");
    assert_eq!(all["totals"]["sessions"], 7);
    let (_, ov) = get(&base, "/api/overview", Some(ADMIN)).await;
    assert_eq!(ov["projects"].as_array().unwrap().len(), 4);

    // bob's token: only bob's rows, whatever is asked
    let (c, s) = get(&base, "/api/claude-sessions?limit=1000", Some(BOB)).await;
    assert_eq!(c, 200, "{s}");
    assert_eq!(s["totals"]["sessions"], 1);
    assert_eq!(session_projects(&s), ["-home-bob-secret"]);
    assert_eq!(s["totals"]["input_tokens"], 1000);
    let (_, ov) = get(&base, "/api/overview", Some(BOB)).await;
    assert_eq!(ov["projects"], json!(["-home-bob-secret"]));
    assert_eq!(ov["totals"]["responses"], 1);
    assert_eq!(ov["totals"]["input_tokens"], 1000);
    let (_, tu) = get(&base, "/api/claude-tool-usage", Some(BOB)).await;
    assert_eq!(tu["totals"]["calls"], 1, "{tu}");
    assert_eq!(tu["bash_commands"][0]["command"], "cat bob-secret.txt");
    let (_, ca) = get(&base, "/api/claude-cost-analysis", Some(BOB)).await;
    assert_eq!(ca["by_project"].as_array().unwrap().len(), 1, "{ca}");
    let (_, sec) = get(&base, "/api/security-events", Some(BOB)).await;
    assert_eq!(
        sec["dead_letters"],
        json!([]),
        "the example's dead letters are not bob's: {sec}"
    );
    assert_eq!(sec["sensitive_files"], json!([]));
    let (c, e) = get(&base, "/api/claude-sessions?user=alice", Some(BOB)).await;
    assert_eq!(c, 403, "asking for another user is refused: {e}");
    let (c, _) = get(&base, "/api/claude-sessions?user=bob", Some(BOB)).await;
    assert_eq!(c, 200);
    assert_eq!(get(&base, "/metrics", Some(BOB)).await.0, 403);

    // the admin filtering by user / host gets the same as bob
    let (_, f) = get(&base, "/api/claude-sessions?user=bob", Some(ADMIN)).await;
    assert_eq!(f["totals"]["sessions"], 1);
    let (_, f) = get(&base, "/api/claude-tool-usage?host=bob-laptop", Some(ADMIN)).await;
    assert_eq!(f["totals"]["calls"], 1);
    let (_, f) = get(&base, "/api/claude-sessions?host=nobody", Some(ADMIN)).await;
    assert_eq!(f["totals"]["sessions"], 0);
    let (c, _) = get(&base, "/api/overview?user=a%0Ab", Some(ADMIN)).await;
    assert_eq!(c, 400, "identity filters are validated like the others");

    // a project-scoped token: its project only; the picker lists only it
    let (_, s) = get(&base, "/api/claude-sessions?limit=1000", Some(WEBAPP)).await;
    assert_eq!(session_projects(&s), ["-home-dev-webapp"]);
    assert_eq!(s["totals"]["sessions"], 2);
    let (_, ov) = get(&base, "/api/overview", Some(WEBAPP)).await;
    assert_eq!(ov["projects"], json!(["-home-dev-webapp"]));
    let (_, fa) = get(&base, "/api/claude-file-access", Some(WEBAPP)).await;
    assert!(!fa["files"].as_array().unwrap().is_empty());
    for f in fa["files"].as_array().unwrap() {
        let path = f["file_path"].as_str().unwrap();
        assert!(
            !path.starts_with("/home/dev/ingest-engine")
                && !path.starts_with("/home/dev/data-pipeline"),
            "another project's file: {f}"
        );
    }
    let (c, _) = get(
        &base,
        "/api/claude-sessions?project=-home-dev-ingest-engine",
        Some(WEBAPP),
    )
    .await;
    assert_eq!(c, 403);

    // a metrics-only token reads /metrics and nothing else
    assert_eq!(get(&base, "/metrics", Some(PROM)).await.0, 200);
    assert_eq!(get(&base, "/api/overview", Some(PROM)).await.0, 403);
    ch.drop_database().await.unwrap();
}

#[tokio::test]
async fn refuses_open_api_beyond_loopback() {
    let ch = ChClient::new(testing::settings("auth_listen")).unwrap();
    let status = Arc::new(IngestStatus::new(16));
    let api = ApiSection::default();
    // (CLAUDE_INGEST_API_TOKENS is unset in the test environment)
    let err = ApiState::from_config(ch.clone(), status.clone(), &api, "0.0.0.0:8787")
        .err()
        .expect("no tokens on a public address is refused");
    assert!(format!("{err:#}").contains("--insecure-no-auth"), "{err:#}");
    assert!(ApiState::from_config(ch.clone(), status.clone(), &api, "127.0.0.1:8787").is_ok());
    let insecure = ApiSection {
        insecure_no_auth: true,
        ..ApiSection::default()
    };
    assert!(ApiState::from_config(ch.clone(), status.clone(), &insecure, "0.0.0.0:8787").is_ok());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.json");
    std::fs::write(&file, r#"[{"name": "a", "token": "0123456789abcdefgh"}]"#).unwrap();
    let with_tokens = ApiSection {
        tokens_file: Some(file),
        ..ApiSection::default()
    };
    assert!(ApiState::from_config(ch, status, &with_tokens, "0.0.0.0:8787").is_ok());
}

fn metric(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .next()
        .unwrap_or_else(|| panic!("no sample {name} {label:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_a_running_engine_parse_as_prometheus_text() {
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/EXPECTED.json")).unwrap(),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config(
        "metrics",
        &repo().join("examples/claude-projects"),
        state.path(),
    );
    let running = start(cfg).await;
    let want = exp["message_lines"].as_u64().unwrap();
    wait_count(
        &ch,
        "SELECT count() FROM claude_messages",
        want,
        Duration::from_secs(60),
    )
    .await;
    let base = testing::serve_api_with(ch.clone(), running.status.clone(), tokens())
        .await
        .unwrap();
    assert_eq!(get(&base, "/api/overview", Some(ADMIN)).await.0, 200);

    let r = reqwest::Client::new()
        .get(format!("{base}/metrics"))
        .bearer_auth(PROM)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let text = r.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("parses as Prometheus text");
    let lines = exp["lines"].as_u64().unwrap() as f64;
    assert_eq!(
        metric(&scrape, "claude_ingest_lines_read_total", None),
        lines,
        "{text}"
    );
    assert_eq!(
        metric(
            &scrape,
            "claude_ingest_table_rows_written_total",
            Some(("table", "claude_messages"))
        ),
        want as f64
    );
    assert!(metric(&scrape, "claude_ingest_rows_written_total", None) >= want as f64);
    assert!(
        metric(&scrape, "claude_ingest_dead_letters_total", None) >= 1.0,
        "the corpus has malformed lines"
    );
    assert!(metric(&scrape, "claude_ingest_queue_capacity_entries", None) > 0.0);
    assert!(metric(&scrape, "claude_ingest_rules_generation", None).is_finite());
    assert!(metric(&scrape, "claude_ingest_insert_duration_seconds_count", None) >= 1.0);
    assert_eq!(
        metric(
            &scrape,
            "claude_ingest_api_requests_total",
            Some(("endpoint", "/api/overview"))
        ),
        1.0
    );
    for name in [
        "claude_ingest_ingestion_lag_seconds",
        "claude_ingest_unstored_bytes",
        "claude_ingest_pending_rows",
        "claude_ingest_queue_depth_entries",
        "claude_ingest_plugin_call_duration_seconds_count",
        "claude_ingest_api_request_duration_seconds_count",
    ] {
        assert!(metric(&scrape, name, None).is_finite(), "{name}");
    }
    running.stop().await;
    ch.drop_database().await.unwrap();
}
