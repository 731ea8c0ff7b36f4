//! Shared helpers for the integration tests: configs pointing at the real
//! test ClickHouse (embedded engine, or CLICKHOUSE_URL), corpus writers, polling.
#![allow(dead_code)]

use claude_ingest::config::Config;
use claude_ingest::pipeline::{run, RunOptions, RunSummary};
use claude_ingest::sink::clickhouse::ChClient;
use claude_ingest::sink::status::IngestStatus;
use claude_ingest::sink::testing;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the default rule pack into `dir`, all of it but the plugin steps
/// (tests add their own), so prices, redaction and tables stay the shipped ones.
pub fn copy_default_rules(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(repo().join("rules")).unwrap().flatten() {
        let name = e.file_name();
        if name != "50-plugins.yaml" && e.path().extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(e.path(), dir.join(&name)).unwrap();
        }
    }
}

/// A config for the test server with a fresh database and its own state dir.
pub fn config(prefix: &str, root: &Path, state: &Path) -> (Config, ChClient) {
    let (mut cfg, settings) = testing::config(prefix, root, state);
    cfg.source.poll_interval_ms = 200;
    let client = ChClient::new(settings).expect("client");
    (cfg, client)
}

pub async fn scalar(client: &ChClient, sql: &str) -> Value {
    let rows = client
        .query_json(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:#}"));
    rows.first()
        .and_then(|r| r.values().next().cloned())
        .unwrap_or(Value::Null)
}

pub async fn count(client: &ChClient, sql: &str) -> u64 {
    match scalar(client, sql).await {
        Value::Number(n) => n.as_u64().unwrap_or(0),
        Value::String(s) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Like `count`, but 0 while the database or table does not exist yet.
pub async fn try_count(client: &ChClient, sql: &str) -> u64 {
    client
        .query_json(sql, &[])
        .await
        .ok()
        .and_then(|r| {
            r.first()
                .and_then(|r| r.values().next().and_then(Value::as_u64))
        })
        .unwrap_or(0)
}

/// Poll until `sql` returns `want` (or time out with the last value).
pub async fn wait_count(client: &ChClient, sql: &str, want: u64, timeout: Duration) -> u64 {
    let t0 = Instant::now();
    loop {
        let got = try_count(client, sql).await;
        if got == want || t0.elapsed() > timeout {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A realistic user/assistant/tool exchange; `n` picks ids deterministically.
pub fn entry_lines(session: &str, n: usize) -> Vec<String> {
    let ts = |k: usize| {
        let secs = (n * 4 + k) as i64;
        chrono::DateTime::from_timestamp(1_790_000_000 + secs, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    };
    let tool = format!("toolu_{session}_{n}");
    vec![
        json!({"type": "user", "uuid": format!("{session}-u-{n}"), "sessionId": session, "timestamp": ts(0),
               "cwd": "/work/app", "message": {"role": "user", "content": format!("step {n}: please run the tests")}}).to_string(),
        json!({"type": "assistant", "uuid": format!("{session}-a-{n}"), "sessionId": session, "timestamp": ts(1),
               "message": {"role": "assistant", "model": "claude-sonnet-4-5-20250929",
                 "content": [{"type": "text", "text": "Running them."},
                             {"type": "tool_use", "id": tool, "name": "Bash", "input": {"command": "cargo test"}}],
                 "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 100}}}).to_string(),
        json!({"type": "user", "uuid": format!("{session}-r-{n}"), "sessionId": session, "timestamp": ts(2),
               "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool, "content": "ok"}]}}).to_string(),
    ]
}

pub fn append(path: &Path, lines: &[String]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    let mut buf = String::new();
    for l in lines {
        buf.push_str(l);
        buf.push('\n');
    }
    f.write_all(buf.as_bytes()).expect("append");
    f.sync_data().expect("sync");
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// An `ingest` (backfill, then follow) running in the test's runtime.
pub struct Running {
    pub shutdown: Arc<AtomicBool>,
    pub task: tokio::task::JoinHandle<anyhow::Result<RunSummary>>,
    pub status: Arc<IngestStatus>,
    _stop_on_drop: StopOnDrop,
}

/// Starts `ingest` and waits until its status is published.
pub async fn start(cfg: Config) -> Running {
    let shutdown = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let opts = RunOptions {
        follow: true,
        shutdown: shutdown.clone(),
        status_out: Some(tx),
        ..RunOptions::once()
    };
    let task = tokio::spawn(async move { run(&cfg, opts).await });
    let status = rx.await.expect("pipeline started");
    Running {
        _stop_on_drop: StopOnDrop(shutdown.clone()),
        shutdown,
        task,
        status,
    }
}

impl Running {
    /// Sets the shutdown flag and waits for a clean stop.
    pub async fn stop(self) {
        self.shutdown.store(true, Ordering::SeqCst);
        self.task.await.expect("join").expect("clean stop");
    }
}

/// Sets a pipeline's shutdown flag when dropped, so a failing assertion ends
/// the test instead of hanging: the runtime waits for the router's blocking
/// task on drop, and that task only ends once the tailer sees the flag.
pub struct StopOnDrop(pub Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}
