//! The embedded engine's disk fills up in the middle of `ingest` (a small
//! tmpfs as its data dir): inserts fail with NOT_ENOUGH_SPACE / ENOSPC, which
//! must be retried with checkpoints held and `/healthz` degraded — never
//! dead-lettered or committed. Once the filesystem grows, every row lands
//! exactly once. Needs root (mount); skipped with a loud message otherwise.

mod common;

use claude_ingest::sink::clickhouse::{ChClient, ChSettings};
use claude_ingest::sink::embedded::EmbeddedClickHouse;
use claude_ingest::sink::testing::SmallTmpfs;
use common::*;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn free_bytes(p: &Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(p)
        .output()
        .expect("df");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

/// Fill `dir` until only `keep` bytes are free.
fn fill(dir: &Path, keep: u64) {
    let n = free_bytes(dir).saturating_sub(keep);
    let chunk = vec![0u8; 1 << 20];
    let mut f = std::fs::File::create(dir.join("ballast")).expect("ballast");
    let mut left = n as usize;
    while left > 0 {
        let k = left.min(chunk.len());
        if std::io::Write::write_all(&mut f, &chunk[..k]).is_err() {
            break;
        }
        left -= k;
    }
}

fn padded_lines(session: &str, n: usize) -> Vec<String> {
    let pad = format!(" {}", "lorem ipsum dolor sit amet ".repeat(40));
    entry_lines(session, n)
        .into_iter()
        .map(|l| {
            l.replacen(
                "please run the tests",
                &format!("please run the tests{pad}"),
                1,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_holds_rows_back_and_loses_nothing_when_space_returns() {
    let Some(disk) = SmallTmpfs::mount("64m") else {
        return;
    };
    let server = EmbeddedClickHouse::start(None, disk.path()).expect("start engine on tmpfs");
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (mut cfg, _) = config("diskfull", root.path(), state.path());
    cfg.clickhouse.url = server.url().to_string();
    let ch = ChClient::new(ChSettings {
        url: server.url().to_string(),
        user: "default".into(),
        password: String::new(),
        database: cfg.clickhouse.database.clone(),
        lz4: false,
    })
    .unwrap();
    ch.ensure_schema(&[]).await.expect("schema");

    let file = root.path().join("p/s.jsonl");
    let entries = 400;
    for i in 0..entries {
        append(&file, &padded_lines("d", i));
    }
    let total = 3 * entries as u64;
    fill(disk.path(), 64 << 10);
    let running = start(cfg.clone()).await;
    let status = running.status.clone();

    let t0 = Instant::now();
    while status.insert_failures.load(Ordering::Relaxed) < 3
        && t0.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let snap = status.snapshot();
    eprintln!("disk full: {snap:?}");
    assert!(snap.insert_failures >= 3, "inserts never failed: {snap:?}");
    assert_eq!(snap.status, "degraded");
    let reason = snap.degraded_reason.clone().unwrap_or_default();
    assert!(reason.contains("storage"), "{reason}");
    assert_eq!(snap.dead_letters, 0, "a full disk is not bad data");
    let stored = try_count(&ch, "SELECT count() FROM claude_messages").await;
    assert!(
        stored < total,
        "nothing should be stored on a full disk ({stored})"
    );

    disk.resize("512m");
    let q = "SELECT count() FROM claude_messages";
    assert_eq!(
        wait_count(&ch, q, total, Duration::from_secs(90)).await,
        total
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let snap = status.snapshot();
    assert_eq!(snap.status, "ok", "{snap:?}");
    running.stop().await;
    assert_eq!(count(&ch, q).await, total, "no duplicates");
    assert_eq!(
        count(&ch, "SELECT uniqExact(uuid) FROM claude_messages").await,
        total
    );
    assert_eq!(
        count(&ch, "SELECT sum(entries) FROM claude_sessions").await,
        total
    );
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_dead_letters").await,
        0
    );
    drop(server);
}
