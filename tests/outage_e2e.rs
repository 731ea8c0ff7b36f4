//! ClickHouse goes away in the middle of `ingest`: inserts are retried with
//! backoff, /healthz-style status says so, nothing read is lost, and once the
//! server is back every row lands exactly once.

mod common;

use claude_ingest::sink::embedded::{EmbeddedClickHouse, Role};
use common::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_clickhouse_outage_without_loss_or_duplicates() {
    if std::env::var("CLICKHOUSE_URL").is_ok() {
        eprintln!("outage test needs the embedded engine (it stops and restarts its own server); CLICKHOUSE_URL is set, so it runs on a private embedded server anyway");
    }
    let data = tempfile::tempdir().unwrap();
    let server = EmbeddedClickHouse::start(None, data.path()).expect("start private engine");
    let access = server.access().clone();
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (mut cfg, _) = config("outage", root.path(), state.path());
    let writer = server.settings(Role::Writer, &cfg.clickhouse.database);
    cfg.clickhouse.url = writer.url.clone();
    cfg.clickhouse.user = writer.user.clone();
    cfg.clickhouse.password = writer.password.clone();
    cfg.batch.max_delay_ms = 50;
    // Small bounds, so the test can see the tailer held back during the outage.
    cfg.batch.queue_capacity = 16;
    cfg.batch.max_rows = 50;
    let ch = claude_ingest::sink::clickhouse::ChClient::new(writer).unwrap();

    let file = root.path().join("p/s.jsonl");
    for i in 0..10 {
        append(&file, &entry_lines("o", i));
    }
    let running = start(cfg.clone()).await;
    let status = running.status.clone();
    let q = "SELECT count() FROM claude_messages";
    assert_eq!(wait_count(&ch, q, 30, Duration::from_secs(20)).await, 30);

    drop(server); // ClickHouse is gone
    for i in 10..30 {
        append(&file, &entry_lines("o", i));
    }
    let t0 = Instant::now();
    while status.insert_failures.load(Ordering::Relaxed) < 2
        && t0.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snap = status.snapshot();
    assert!(
        snap.clickhouse_down,
        "status must report the outage: {snap:?}"
    );
    assert!(snap.pending_rows > 0);

    // Backpressure: far more lines than the pipeline may hold arrive while
    // ClickHouse is down; the tailer must stop reading instead of buffering.
    let burst = 2000;
    for i in 30..30 + burst {
        append(&file, &entry_lines("o", i));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let snap = status.snapshot();
    let in_flight = snap.lines_read - 30;
    eprintln!(
        "outage: {in_flight} of {} lines taken in, queue {}/{}, {} rows pending",
        60 + 3 * burst,
        snap.queue_depth,
        snap.queue_capacity,
        snap.pending_rows
    );
    assert!(
        in_flight < 1000,
        "the tailer kept reading during the outage ({in_flight} of {} lines taken in): {snap:?}",
        60 + 3 * burst
    );
    assert!(snap.queue_depth <= snap.queue_capacity, "{snap:?}");

    let server = EmbeddedClickHouse::restart(None, data.path(), &access).expect("restart engine");
    let total = 90 + 3 * burst as u64;
    assert_eq!(
        wait_count(&ch, q, total, Duration::from_secs(60)).await,
        total
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!status.snapshot().clickhouse_down);
    running.stop().await;
    assert_eq!(
        count(&ch, q).await,
        total,
        "no duplicates after the retries"
    );
    assert_eq!(
        count(&ch, "SELECT sum(entries) FROM claude_sessions").await,
        total
    );
    drop(server);
}
