//! Memory is bounded in bytes, not lines: a backfill of large entries (1 MiB
//! prompts, as in the hardening report's 400 KB–4 MB cases) keeps the engine's
//! resident memory under a fixed bound at the default queue and batch sizes.
//! Before the byte budgets, the queues (2,048 lines each) and the 20,000-row
//! batch held the whole corpus, several times over; batches are now built in
//! the spool file, so their size costs no memory.

mod common;

use claude_ingest::pipeline::{run, RunOptions};
use common::*;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One user entry whose prompt is `size` bytes of ordinary text.
fn big_entry(i: usize, size: usize) -> String {
    let word = format!("word{i} ");
    let text: String = word.repeat(size / word.len());
    json!({"type": "user", "uuid": format!("big-{i}"), "sessionId": "big",
           "timestamp": format!("2026-10-01T00:{:02}:{:02}.000Z", (i / 60) % 60, i % 60),
           "message": {"role": "user", "content": text}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_keep_memory_bounded_in_bytes() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config("memory", root.path(), state.path());
    let (entries, size) = (240usize, 1 << 20);
    let file = root.path().join("p/big.jsonl");
    for chunk in (0..entries).collect::<Vec<_>>().chunks(16) {
        let lines: Vec<String> = chunk.iter().map(|&i| big_entry(i, size)).collect();
        append(&file, &lines);
    }
    let corpus = std::fs::metadata(&file).unwrap().len();

    let base = rss_bytes();
    let peak = Arc::new(AtomicU64::new(base));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let summary = run(&cfg, RunOptions::once()).await.expect("backfill");
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let grown = peak.load(Ordering::Relaxed).saturating_sub(base);
    eprintln!(
        "memory: {} entries of {} KiB ({:.0} MiB corpus): engine RSS grew by {:.0} MiB at peak \
         (base {:.0} MiB); {summary}",
        entries,
        size >> 10,
        corpus as f64 / 1048576.0,
        grown as f64 / 1048576.0,
        base as f64 / 1048576.0
    );
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_messages").await,
        entries as u64
    );
    // Default budgets: 2 × 32 MiB queues, plus the buffers of the batch being
    // built (its rows go to the spool file as they are encoded), the line and
    // rows being routed and the allocator's slack. Measured: 105 MiB (154
    // when a batch was built in memory).
    assert!(
        grown < 140 << 20,
        "engine memory grew by {} MiB for a {} MiB corpus",
        grown >> 20,
        corpus >> 20
    );
    ch.drop_database().await.unwrap();
}
