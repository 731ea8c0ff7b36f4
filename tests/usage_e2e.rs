//! Usage counted once per API request, against the real ClickHouse: Claude
//! Code logs one response as several lines (one per content block, plus
//! streaming snapshots whose `output_tokens` grow), each repeating the usage.
//! Whatever the order the lines arrive in, in one batch or across live
//! appends and restarts, `claude_requests FINAL` holds each request once with
//! its final snapshot — and a background merge keeps the same row.

mod common;

use claude_ingest::pipeline::{run, RunOptions};
use common::*;
use serde_json::{json, Value};
use std::path::Path;

fn line(
    session: &str,
    uuid: &str,
    msg_id: Option<&str>,
    req_id: Option<&str>,
    usage: Value,
) -> String {
    let mut message = json!({"role": "assistant", "model": "claude-sonnet-4-5-20250929",
                             "content": [{"type": "text", "text": format!("block of {uuid}")}], "usage": usage});
    if let Some(id) = msg_id {
        message["id"] = json!(id);
    }
    let mut e = json!({"type": "assistant", "uuid": uuid, "sessionId": session,
                       "timestamp": "2026-05-04T10:00:00.000Z", "message": message});
    if let Some(r) = req_id {
        e["requestId"] = json!(r);
    }
    e.to_string()
}

fn usage(input: u64, output: u64, cache_write: u64, cache_read: u64) -> Value {
    json!({"input_tokens": input, "output_tokens": output,
           "cache_creation_input_tokens": cache_write, "cache_read_input_tokens": cache_read})
}

/// The traps, in file order. Expected per request: R1 the final snapshot
/// (output 167), R2 once, R3 (no requestId) by message id, R4 (no message id)
/// per line, and R1 again in a resumed session's file, counted once.
fn corpus() -> (Vec<String>, Vec<String>) {
    let s = "sess-a";
    let main = vec![
        line(
            s,
            "u1",
            Some("msg_R1"),
            Some("req_R1"),
            usage(10, 4, 100, 1000),
        ),
        line(
            s,
            "u2",
            Some("msg_R1"),
            Some("req_R1"),
            usage(10, 4, 100, 1000),
        ),
        line(
            s,
            "u3",
            Some("msg_R1"),
            Some("req_R1"),
            usage(10, 167, 100, 1000),
        ),
        line(s, "u4", Some("msg_R2"), Some("req_R2"), usage(5, 50, 0, 0)),
        line(s, "u5", Some("msg_R2"), Some("req_R2"), usage(5, 50, 0, 0)),
        line(s, "u6", Some("msg_R3"), None, usage(7, 3, 0, 0)),
        line(s, "u7", Some("msg_R3"), None, usage(7, 30, 0, 0)),
        line(s, "u8", None, None, usage(1, 1, 0, 0)),
        line(s, "u9", None, None, usage(1, 1, 0, 0)),
    ];
    let resumed = vec![line(
        "sess-b",
        "u1",
        Some("msg_R1"),
        Some("req_R1"),
        usage(10, 167, 100, 1000),
    )];
    (main, resumed)
}

const WANT: [(&str, u64); 5] = [
    ("responses", 5),
    ("input", 24),
    ("output", 249),
    ("cache_write", 100),
    ("cache_read", 1000),
];

async fn figures(
    ch: &claude_ingest::sink::clickhouse::ChClient,
    table: &str,
) -> Vec<(&'static str, u64)> {
    let sql = format!(
        "SELECT count() AS responses, sum(input_tokens) AS input, sum(output_tokens) AS output,
                sum(cache_creation_input_tokens) AS cache_write, sum(cache_read_input_tokens) AS cache_read
         FROM {table}"
    );
    let r = ch.query_json(&sql, &[]).await.expect("figures");
    WANT.iter()
        .map(|(k, _)| (*k, r[0][*k].as_u64().unwrap_or(u64::MAX)))
        .collect()
}

fn write(path: &Path, lines: &[String]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(
        path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
}

fn append(path: &Path, lines: &[String]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_counts_once_with_its_final_snapshot_in_any_order() {
    let (main, resumed) = corpus();
    for reversed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("projects");
        let mut lines = main.clone();
        if reversed {
            lines.reverse(); // final snapshots first: arrival order must not matter
        }
        write(&root.join("-p/sess-a.jsonl"), &lines);
        write(&root.join("-p/sess-b.jsonl"), &resumed);
        let (cfg, ch) = config("usage", &root, &dir.path().join("state"));
        run(&cfg, RunOptions::once()).await.expect("backfill");
        assert_eq!(
            figures(&ch, "claude_requests FINAL").await,
            WANT,
            "reversed={reversed}"
        );
        // a background merge keeps the same rows as FINAL reads
        ch.execute("OPTIMIZE TABLE claude_requests FINAL")
            .await
            .unwrap();
        assert_eq!(
            figures(&ch, "claude_requests").await,
            WANT,
            "after merge, reversed={reversed}"
        );
        ch.drop_database().await.unwrap();
    }
}

/// The snapshots of one request arrive in separate runs (live appends, a
/// restart in between), the partial one first: the final one still wins, and
/// re-ingesting everything from scratch into the same store changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_across_appends_restarts_and_reingest() {
    let (main, resumed) = corpus();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let file = root.join("-p/sess-a.jsonl");
    write(&file, &main[..1]);
    let (cfg, ch) = config("usage_live", &root, &dir.path().join("state"));
    run(&cfg, RunOptions::once()).await.expect("first run");
    let partial = figures(&ch, "claude_requests FINAL").await;
    assert_eq!(partial[2], ("output", 4), "only the first snapshot so far");

    for chunk in main[1..].chunks(2) {
        append(&file, chunk);
        run(&cfg, RunOptions::once()).await.expect("next run");
    }
    write(&root.join("-p/sess-b.jsonl"), &resumed);
    run(&cfg, RunOptions::once())
        .await
        .expect("resumed session");
    assert_eq!(figures(&ch, "claude_requests FINAL").await, WANT);

    // lost state: everything read again into the same database
    let (mut again, _) = config("usage_live", &root, &dir.path().join("state2"));
    again.clickhouse = cfg.clickhouse.clone();
    run(&again, RunOptions::once()).await.expect("re-ingest");
    assert_eq!(figures(&ch, "claude_requests FINAL").await, WANT);
    ch.drop_database().await.unwrap();
}

/// A model with no price: its tokens count, its cost is NULL (not 0), and the
/// API and /healthz name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpriced_models_are_counted_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("projects");
    let mut unknown: Value = serde_json::from_str(&line(
        "s",
        "u1",
        Some("msg_X"),
        Some("req_X"),
        usage(1000, 10, 0, 0),
    ))
    .unwrap();
    unknown["message"]["model"] = json!("claude-nonexistent-9");
    write(
        &root.join("-p/s.jsonl"),
        &[
            unknown.to_string(),
            line(
                "s",
                "u2",
                Some("msg_Y"),
                Some("req_Y"),
                usage(1000, 10, 0, 0),
            ),
        ],
    );
    let (cfg, ch) = config("unpriced", &root, &dir.path().join("state"));
    run(&cfg, RunOptions::once()).await.expect("backfill");
    let r = ch
        .query_json("SELECT model, cost IS NULL AS no_cost, priced FROM claude_requests FINAL ORDER BY model", &[])
        .await
        .unwrap();
    assert_eq!(r[0]["model"], "claude-nonexistent-9");
    assert_eq!(
        (r[0]["no_cost"].as_u64(), r[0]["priced"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(
        (r[1]["no_cost"].as_u64(), r[1]["priced"].as_bool()),
        (Some(0), Some(true))
    );

    let base = claude_ingest::sink::testing::serve_api(ch.clone())
        .await
        .unwrap();
    let ov: Value = reqwest::get(format!("{base}/api/overview"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ov["totals"]["unpriced_responses"], 1);
    assert_eq!(
        ov["totals"]["input_tokens"], 2000,
        "unpriced tokens still count"
    );
    assert_eq!(ov["unpriced_models"][0]["model"], "claude-nonexistent-9");
    let h: Value = reqwest::get(format!("{base}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        h["unpriced_models"][0]["model"], "claude-nonexistent-9",
        "{h}"
    );
    ch.drop_database().await.unwrap();
}
