//! Kill -9 the engine (a real subprocess) in the middle of ingestion, several
//! times, appending while it is down: the final tables must hold every line
//! exactly once — no loss, no duplicates (plain count(), not FINAL).

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Kills the engine if the test fails half-way (no orphan left retrying).
struct Engine(Child);

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_engine(
    cfg_file: &Path,
    ch: &claude_ingest::config::ClickHouseSection,
    root: &Path,
    state: &Path,
    plugins: &Path,
) -> Engine {
    Engine(
        Command::new(env!("CARGO_BIN_EXE_claude-ingest"))
            .arg("--config")
            .arg(cfg_file)
            .arg("--root")
            .arg(root)
            .arg("--state-dir")
            .arg(state)
            .arg("--rules")
            .arg(repo().join("rules"))
            .arg("--plugins")
            .arg(plugins)
            .args(["--clickhouse-url", &ch.url, "--database", &ch.database])
            // The login through the environment: a key never goes into argv.
            .env("CLICKHOUSE_USER", &ch.user)
            .env("CLICKHOUSE_PASSWORD", &ch.password)
            .args(["ingest", "--no-api"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start claude-ingest"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_loses_and_duplicates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config("restart", root.path(), state.path());
    let cfg_file = state.path().join("config.yaml");
    std::fs::write(
        &cfg_file,
        "batch:\n  max_rows: 250\n  max_delay_ms: 20\nsource:\n  poll_interval_ms: 100\n",
    )
    .unwrap();
    let plugins = state.path().join("plugins");

    let mut exchanges = 0usize;
    for s in 0..4 {
        let sid = format!("sess{s}");
        let mut lines = Vec::new();
        for i in 0..1500 {
            lines.extend(entry_lines(&sid, i));
        }
        exchanges += 1500;
        append(
            &root.path().join(format!("proj{}/{sid}.jsonl", s % 2)),
            &lines,
        );
    }

    let mut last = 0;
    for round in 0..3 {
        let mut child = spawn_engine(
            &cfg_file,
            &cfg.clickhouse,
            root.path(),
            state.path(),
            &plugins,
        );
        // let it store a good chunk more, then kill it hard mid-stream
        let target = last + 2500;
        let t0 = std::time::Instant::now();
        loop {
            let c = try_count(&ch, "SELECT count() FROM claude_messages").await;
            if c >= target || t0.elapsed() > Duration::from_secs(120) {
                last = c;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.0.kill().expect("kill -9");
        child.0.wait().expect("reap");
        eprintln!("round {round}: killed after {last} messages stored");
        // the world moves on while the engine is down
        let sid = format!("late{round}");
        let mut lines = Vec::new();
        for i in 0..200 {
            lines.extend(entry_lines(&sid, i));
        }
        exchanges += 200;
        append(&root.path().join(format!("proj9/{sid}.jsonl")), &lines);
        append(
            &root.path().join("proj0/sess0.jsonl"),
            &entry_lines("sess0", 5000 + round),
        );
        exchanges += 1;
    }

    let mut child = spawn_engine(
        &cfg_file,
        &cfg.clickhouse,
        root.path(),
        state.path(),
        &plugins,
    );
    let want = (exchanges * 3) as u64;
    let got = wait_count(
        &ch,
        "SELECT count() FROM claude_messages",
        want,
        Duration::from_secs(180),
    )
    .await;
    // give a duplicate (if the design were wrong) time to show up
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SAFETY: sending SIGTERM to our own child process.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().expect("wait");
    assert!(status.success(), "graceful stop failed: {status}");

    assert_eq!(got, want, "messages stored");
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_messages").await,
        want,
        "duplicates"
    );
    assert_eq!(
        count(&ch, "SELECT uniqExact(uuid) FROM claude_messages").await,
        want
    );
    // (claude_tool_usage folds its two partial rows per call in background
    // merges, so only its FINAL count is meaningful)
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_tool_usage FINAL").await,
        exchanges as u64
    );
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_requests").await,
        exchanges as u64
    );
    // sums are exact only if every entry was delivered exactly once
    assert_eq!(
        count(&ch, "SELECT sum(entries) FROM claude_sessions").await,
        want
    );
    assert_eq!(
        count(&ch, "SELECT sum(output_tokens) FROM claude_requests").await,
        (exchanges * 20) as u64
    );
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_dead_letters").await,
        0
    );
    ch.drop_database().await.unwrap();
}
