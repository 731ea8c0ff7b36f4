//! The embedded engine's child under stress (issue 10, points 7 and 9): a
//! child killed with SIGKILL is respawned and ingestion continues with no loss;
//! an immediate restart after `kill -9` of the engine succeeds; the front
//! answers a burst of concurrent requests with a bounded number of threads,
//! turning away what it cannot queue with 503 + Retry-After; and, idle, the
//! engine's memory worker ticks once a second (issue 11).

mod common;

use claude_ingest::config::ClickHouseMode;
use claude_ingest::sink::clickhouse::ChClient;
use claude_ingest::sink::embedded::{Access, EmbeddedClickHouse, Role};
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn child_pid(data_dir: &Path) -> i32 {
    let text = std::fs::read_to_string(data_dir.join(".child.lock")).expect("child lock file");
    text.trim().parse().expect("pid in .child.lock")
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: plain syscall on a pid the test read from the engine's lock file.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill -{sig} {pid}");
}

fn threads(pid: i32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_child_is_respawned_and_nothing_is_lost() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (mut cfg, _) = config("respawn", root.path(), state.path());
    // The engine starts its own embedded ClickHouse, as `ingest` does.
    cfg.clickhouse.mode = ClickHouseMode::Embedded;
    cfg.batch.max_delay_ms = 50;
    let data_dir = cfg.embedded_data_dir();
    let file = root.path().join("p/s.jsonl");
    for i in 0..20 {
        append(&file, &entry_lines("k", i));
    }
    let running = start(cfg.clone()).await;
    let access = Access::read(&data_dir).expect("engine publishes its access file");
    let ch = ChClient::new(access.settings(Role::Reader, &cfg.clickhouse.database)).unwrap();
    let q = "SELECT count() FROM claude_messages";
    assert_eq!(wait_count(&ch, q, 60, Duration::from_secs(30)).await, 60);

    let first = child_pid(&data_dir);
    signal(first, libc::SIGKILL);
    for i in 20..120 {
        append(&file, &entry_lines("k", i));
    }
    assert_eq!(wait_count(&ch, q, 360, Duration::from_secs(60)).await, 360);
    let snap = running.status.snapshot();
    let engine = snap
        .embedded_engine
        .clone()
        .expect("healthz shows the engine");
    assert_eq!(engine.restarts, 1, "{snap:?}");
    assert!(engine.up, "{snap:?}");
    assert!(
        engine.last_exit.as_deref().unwrap_or("").contains("signal"),
        "{snap:?}"
    );
    assert_ne!(child_pid(&data_dir), first, "a new child serves");
    // Settled (the engine's ClickHouse goes away with it, so check before stop).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&ch, q).await, 360, "exactly once across the respawn");
    assert_eq!(
        count(&ch, "SELECT sum(entries) FROM claude_sessions").await,
        360
    );
    running.stop().await;
}

/// `ingest` as its own process, so the test can `kill -9` the engine.
fn spawn_ingest(root: &Path, state: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_claude-ingest"))
        .args(["--root", root.to_str().unwrap(), "--state-dir"])
        .arg(state)
        .args(["--plugins", "/nonexistent", "--rules"])
        .arg(repo().join("rules"))
        .args(["ingest", "--no-api"])
        .env_remove("CLICKHOUSE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start claude-ingest")
}

/// Wait until `engine` published its access file (its engine serves).
fn wait_serving(engine: &mut std::process::Child, data_dir: &Path) {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(status)) = engine.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = engine.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("the engine exited ({status}) instead of starting:\n{err}");
        }
        if Access::read(data_dir).is_ok_and(|a| a.pid == engine.id()) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the engine did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_immediate_restart_after_kill_9_succeeds() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let file = root.path().join("p/s.jsonl");
    for i in 0..300 {
        append(&file, &entry_lines("r", i));
    }
    let data_dir = state.path().join("clickhouse");
    let mut engine = spawn_ingest(root.path(), state.path());
    for round in 0..4 {
        wait_serving(&mut engine, &data_dir);
        // Every other round the old child is slow to go (stopped for 1.5 s
        // while its parent dies), as a busy child is: it still holds the data.
        let slow = (round % 2 == 0).then(|| child_pid(&data_dir));
        if let Some(pid) = slow {
            signal(pid, libc::SIGSTOP);
        }
        engine.kill().expect("kill -9"); // std's kill is SIGKILL
        let _ = engine.wait();
        engine = spawn_ingest(root.path(), state.path());
        if let Some(pid) = slow {
            std::thread::sleep(Duration::from_millis(1500));
            // The stopped child may be gone already: when its killed parent's
            // process group is orphaned with a stopped member, the kernel
            // sends it SIGHUP + SIGCONT (POSIX), which ends it. Either way the
            // restart must succeed, which is what this test checks.
            // SAFETY: plain syscall; ESRCH is the only expected failure.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
        eprintln!(
            "round {round}: killed, restarted at once (old child slow: {})",
            slow.is_some()
        );
    }
    wait_serving(&mut engine, &data_dir);
    std::thread::sleep(Duration::from_secs(2));
    assert!(engine.try_wait().unwrap().is_none(), "the engine died");
    let _ = engine.kill();
    let _ = engine.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_requests_gets_answers_or_503_not_threads() {
    let data = tempfile::tempdir().unwrap();
    let engine = EmbeddedClickHouse::start(None, data.path()).expect("start private engine");
    let r = engine.access().credentials(Role::Reader).clone();
    let pid = child_pid(data.path());
    let before = threads(pid);
    // More than the front queues (256 + 8 workers), so some must be turned away.
    let n = 400;
    let url = engine.url().to_string();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(threads(pid), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (url, r) = (url.clone(), r.clone());
            tokio::spawn(async move {
                // A connection of its own per request: the accept path is under test.
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(0)
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .basic_auth(&r.user, Some(&r.password))
                    .body("SELECT sum(number) FROM numbers(200000)")
                    .send()
                    .await
                    .expect("an answer, not a hang or a reset");
                let retry = resp.headers().contains_key("retry-after");
                (resp.status().as_u16(), retry, t.elapsed().as_secs_f64())
            })
        })
        .collect();
    let mut ok = Vec::new();
    let mut busy = 0;
    for t in tasks {
        let (status, retry, secs) = t.await.unwrap();
        match status {
            200 => ok.push(secs * 1000.0),
            503 => {
                assert!(retry, "503 without Retry-After");
                busy += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    let wall = t0.elapsed();
    watch.abort();
    ok.sort_by(f64::total_cmp);
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "front burst: {n} requests in {:.2} s: {} ok (p50 {:.0} ms, p95 {:.0} ms), {busy} x 503; threads {before} -> peak {peak}",
        wall.as_secs_f64(),
        ok.len(),
        percentile(&ok, 0.5),
        percentile(&ok, 0.95)
    );
    assert!(!ok.is_empty());
    assert!(busy > 0, "400 requests at once and none turned away?");
    assert!(wall < Duration::from_secs(60), "{wall:?}");
    assert!(
        peak <= before + 16,
        "the front grew from {before} to {peak} threads"
    );
}

/// Idle is idle (issue 11): ClickHouse's memory worker re-reads the process's
/// RSS at ~10 Hz by default, half of an idle engine's CPU; the front runs it
/// once a second. (The CPU itself is measured by benches/ingest_throughput.rs.)
#[tokio::test]
async fn the_memory_worker_ticks_once_a_second() {
    let Some(e) = claude_ingest::sink::testing::embedded() else {
        return;
    };
    let r = e.access().credentials(Role::Reader);
    let body = reqwest::Client::new()
        .post(e.url())
        .basic_auth(&r.user, Some(&r.password))
        .body("SELECT value FROM system.server_settings WHERE name = 'memory_worker_period_ms'")
        .send()
        .await
        .expect("the front answers")
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "1000");
}
