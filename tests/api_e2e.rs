//! The HTTP API over the real ClickHouse, filled by the real pipeline from the
//! example corpus: exact figures per endpoint, filters, 400s for bad input
//! (never SQL), /healthz.

mod common;

use claude_ingest::pipeline::{run, RunOptions};
use claude_ingest::sink::testing;
use common::*;
use serde_json::Value;

async fn get(base: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}{path}"))
        .await
        .expect("request");
    let code = r.status().as_u16();
    (code, r.json().await.expect("json body"))
}

fn sum(rows: &Value, key: &str) -> f64 {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[key].as_f64().unwrap_or(0.0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_exactly_and_validate_input() {
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/EXPECTED.json")).unwrap(),
    )
    .unwrap();
    let n = |k: &str| exp[k].as_u64().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config(
        "api",
        &repo().join("examples/claude-projects"),
        state.path(),
    );
    run(&cfg, RunOptions::once()).await.unwrap();

    let base = testing::serve_api(ch.clone()).await.unwrap();

    // overview: message counts from claude_messages, usage once per request
    let (c, ov) = get(&base, "/api/overview").await;
    assert_eq!(c, 200, "{ov}");
    for key in [
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ] {
        assert_eq!(ov["totals"][key], n(key), "{key}");
        assert_eq!(sum(&ov["daily"], key) as u64, n(key), "{key}");
    }
    assert_eq!(ov["totals"]["responses"], n("usage_entries"));
    assert_eq!(ov["totals"]["prompts"], n("prompts"));
    assert_eq!(ov["totals"]["unpriced_responses"], 0);
    assert_eq!(ov["unpriced_models"], serde_json::json!([]));
    assert_eq!(ov["totals"]["messages"], n("message_lines"));
    assert_eq!(ov["totals"]["sessions"], n("session_count"));
    assert_eq!(ov["totals"]["projects"], n("project_count"));
    assert_eq!(
        ov["projects"].as_array().unwrap().len() as u64,
        n("project_count")
    );
    assert_eq!(sum(&ov["daily"], "messages") as u64, n("message_lines"));
    assert!((ov["totals"]["cost"].as_f64().unwrap() - exp["cost"].as_f64().unwrap()).abs() < 1e-5);

    // sessions
    let (c, s) = get(&base, "/api/claude-sessions?limit=1000").await;
    assert_eq!(c, 200, "{s}");
    assert_eq!(s["totals"]["sessions"], n("session_count"));
    assert_eq!(
        s["sessions"].as_array().unwrap().len() as u64,
        n("session_count")
    );
    assert_eq!(
        sum(&s["sessions"], "output_tokens") as u64,
        n("output_tokens")
    );
    let summarised: Vec<String> = s["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["summary"] != "")
        .map(|r| {
            format!(
                "{}/{}",
                r["project"].as_str().unwrap(),
                r["session_id"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        summarised,
        [exp["summary_session"].as_str().unwrap()],
        "summary by leafUuid"
    );
    assert_eq!(sum(&s["sessions"], "prompts") as u64, n("prompts"));
    let (_, s2) = get(&base, "/api/claude-sessions?limit=2").await;
    assert_eq!(s2["sessions"].as_array().unwrap().len(), 2);
    let (_, webapp) = get(&base, "/api/claude-sessions?project=-home-dev-webapp").await;
    assert_eq!(webapp["totals"]["sessions"], 2);
    let (_, day) = get(&base, "/api/claude-sessions?from=2026-10-03&to=2026-10-03").await;
    assert_eq!(day["totals"]["sessions"], 1, "{day}");

    // tool usage: calls paired with results, error patterns, bash commands
    let (c, t) = get(&base, "/api/claude-tool-usage?limit=100").await;
    assert_eq!(c, 200, "{t}");
    assert_eq!(t["totals"]["calls"], n("tool_uses"));
    assert_eq!(t["totals"]["errors"], n("tool_errors"));
    assert_eq!(t["totals"]["pending"], 0);
    assert_eq!(t["totals"]["dangerous_commands"], n("dangerous_commands"));
    let bash = t["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["tool_name"] == "Bash")
        .unwrap();
    assert_eq!(bash["calls"], n("bash_calls"));
    assert_eq!(
        sum(&t["top_errors"], "occurrences") as u64,
        n("tool_errors")
    );
    assert_eq!(sum(&t["bash_commands"], "runs") as u64, n("bash_calls"));

    // file access
    let (c, f) = get(&base, "/api/claude-file-access?limit=1000").await;
    assert_eq!(c, 200, "{f}");
    assert_eq!(f["totals"]["accesses"], n("file_accesses"));
    assert_eq!(
        f["totals"]["sensitive_accesses"],
        n("sensitive_file_accesses")
    );
    assert_eq!(
        f["sensitive_accesses"].as_array().unwrap().len() as u64,
        n("sensitive_file_accesses")
    );
    assert_eq!(sum(&f["files"], "accesses") as u64, n("file_accesses"));
    assert_eq!(sum(&f["extensions"], "accesses") as u64, n("file_accesses"));
    assert_eq!(
        f["totals"]["files"].as_u64().unwrap(),
        f["files"].as_array().unwrap().len() as u64
    );
    let files = f["files"].as_array().unwrap();
    assert!(files.iter().any(|r| r["sensitive"] == true));
    for r in files {
        let hits = r["sensitive_accesses"].as_u64().unwrap();
        assert_eq!(r["sensitive"] == true, hits > 0, "{r}");
    }
    assert!(!f["heatmap"].as_array().unwrap().is_empty());

    // context trends
    let (c, ct) = get(&base, "/api/claude-context-trends?bucket=day").await;
    assert_eq!(c, 200, "{ct}");
    assert_eq!(sum(&ct["series"], "turns") as u64, n("usage_entries"));
    assert_eq!(
        sum(&ct["series"], "cache_read") as u64,
        n("cache_read_input_tokens")
    );
    let (_, hourly) = get(&base, "/api/claude-context-trends?bucket=hour").await;
    assert_eq!(sum(&hourly["series"], "turns") as u64, n("usage_entries"));
    assert!(hourly["series"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| !b["bucket"].as_str().unwrap().ends_with("00:00:00")));

    // cost
    let (c, cost) = get(&base, "/api/claude-cost-analysis?limit=100").await;
    assert_eq!(c, 200, "{cost}");
    let total = exp["cost"].as_f64().unwrap();
    for key in ["by_day", "by_project", "by_model", "top_sessions"] {
        assert!(
            (sum(&cost[key], "cost") - total).abs() < 1e-4,
            "{key}: {}",
            cost[key]
        );
    }
    assert!(cost["burn_rate"]["cost_per_hour"].as_f64().unwrap() > 0.0);

    // security events
    let (c, sec) = get(&base, "/api/security-events").await;
    assert_eq!(c, 200, "{sec}");
    assert!(
        sec["totals"]["secrets_redacted"].as_u64().unwrap()
            >= exp["secrets"].as_array().unwrap().len() as u64
    );
    assert_eq!(
        sec["dangerous_commands"].as_array().unwrap().len() as u64,
        n("dangerous_commands")
    );
    // Newest first, each folded with its result half.
    let cmds = sec["dangerous_commands"].as_array().unwrap();
    assert!(cmds
        .windows(2)
        .all(|w| w[0]["timestamp"].as_str() >= w[1]["timestamp"].as_str()));
    assert!(cmds
        .iter()
        .all(|c| c["command"].as_str().is_some_and(|s| !s.is_empty()) && c["is_error"].is_u64()));
    assert_eq!(
        sec["sensitive_files"].as_array().unwrap().len() as u64,
        n("sensitive_file_accesses")
    );
    assert_eq!(sec["dead_letters"][0]["lines"], n("malformed_lines"));

    // bad input: 400 with a message naming the parameter; quotes are data, not SQL
    for (path, needle) in [
        ("/api/claude-sessions?from=yesterday", "from"),
        ("/api/claude-sessions?limit=0", "limit"),
        ("/api/claude-tool-usage?limit=abc", "limit"),
        ("/api/claude-context-trends?bucket=week", "bucket"),
        (
            "/api/claude-cost-analysis?from=2026-10-05&to=2026-10-01",
            "before",
        ),
        ("/api/claude-file-access?order=desc", "unknown parameter"),
    ] {
        let (c, body) = get(&base, path).await;
        assert_eq!(c, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{path}: {body}"
        );
    }
    let (c, inj) = get(&base, "/api/claude-sessions?project=x'%20OR%20'1'='1").await;
    assert_eq!(c, 200);
    assert_eq!(inj["totals"]["sessions"], 0);
    let (c, _) = get(&base, "/api/nope").await;
    assert_eq!(c, 404);

    // health and the dashboard page
    let (c, h) = get(&base, "/healthz").await;
    assert_eq!(c, 200, "{h}");
    assert_eq!(h["clickhouse_reachable"], true);
    assert_eq!(h["unpriced_models"], serde_json::json!([]));
    assert!(h.get("ingestion_lag_ms").is_some() && h.get("queue_depth").is_some());
    let page = reqwest::get(format!("{base}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("<title>claude-ingest")
            && !page.contains("http://cdn")
            && !page.contains("https://")
    );
    ch.drop_database().await.unwrap();
}

/// An API in front of a ClickHouse that accepts connections and never
/// answers: every request ends with 503 + Retry-After within the deadline
/// (nothing hangs), a burst over the in-flight bound is shed at once, and a
/// Host the API does not serve is refused (DNS rebinding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_clickhouse_bursts_and_foreign_hosts_degrade_cleanly() {
    use claude_ingest::api::{guard::Guard, router, ApiState};
    use claude_ingest::sink::clickhouse::{ChClient, ChSettings};
    use std::time::{Duration, Instant};

    // a "ClickHouse" that holds every connection open and says nothing
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_url = format!("http://{}", stall.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = stall.accept().await {
            held.push(sock);
        }
    });
    let client = ChClient::new(ChSettings {
        url: stall_url,
        user: "default".into(),
        password: String::new(),
        database: "stalled".into(),
        lz4: false,
    })
    .unwrap();
    let guard = Guard::new("127.0.0.1:0", &[], 4, Duration::from_millis(400));
    let status = std::sync::Arc::new(claude_ingest::sink::status::IngestStatus::new(16));
    let app = router(ApiState::new(client, status, guard, 2));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let t0 = Instant::now();
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert!(r.headers().get("retry-after").is_some());
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "healthz hung {:?}",
        t0.elapsed()
    );

    // 40 at once against 4 slots: the excess is refused immediately, the rest time out
    let http = reqwest::Client::new();
    let calls = (0..40).map(|_| http.get(format!("{base}/api/overview")).send());
    let codes: Vec<u16> = futures_join(calls).await;
    assert!(codes.iter().all(|c| *c == 503), "{codes:?}");

    let r = http
        .get(format!("{base}/healthz"))
        .header("Host", "attacker.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 421);
}

async fn futures_join<F>(calls: impl Iterator<Item = F>) -> Vec<u16>
where
    F: std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static,
{
    let tasks: Vec<_> = calls.map(tokio::spawn).collect();
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap().unwrap().status().as_u16());
    }
    codes
}
