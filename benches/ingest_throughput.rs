//! Backfill throughput, end to end: generates a corpus of realistic sessions,
//! backfills it into a fresh database of the real ClickHouse (embedded engine
//! unless CLICKHOUSE_URL is set) and prints lines/s and MB/s. Also prints the
//! parse + rules stage alone, to show where the time goes.
//!
//! `cargo bench --bench ingest_throughput` (env BENCH_LINES, default 300000).

use claude_ingest::parse::parse_line;
use claude_ingest::pipeline::{run, RunOptions};
use claude_ingest::plugins::api::NoPlugins;
use claude_ingest::rules::{EntryInput, RuleSet};
use claude_ingest::sink::clickhouse::ChClient;
use claude_ingest::sink::testing;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

fn exchange(session: &str, n: usize) -> [String; 3] {
    let ts = |k: usize| {
        chrono::DateTime::from_timestamp(1_790_000_000 + (n * 7 + k) as i64, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string()
    };
    let tool = format!("toolu_{session}_{n}");
    let file = format!("/home/dev/app/src/module_{}.rs", n % 50);
    [
        json!({"parentUuid": null, "isSidechain": false, "userType": "external", "cwd": "/home/dev/app", "sessionId": session,
               "version": "2.0.14", "gitBranch": "main", "type": "user", "uuid": format!("{session}-u-{n}"), "timestamp": ts(0),
               "message": {"role": "user", "content": format!("Refactor module {n} and keep the tests green. The function `handle_{n}` is too long; split it.")}}).to_string(),
        json!({"parentUuid": format!("{session}-u-{n}"), "isSidechain": false, "userType": "external", "cwd": "/home/dev/app", "sessionId": session,
               "version": "2.0.14", "gitBranch": "main", "type": "assistant", "uuid": format!("{session}-a-{n}"), "timestamp": ts(1), "requestId": format!("req_{n}"),
               "message": {"id": format!("msg_{n}"), "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                 "content": [{"type": "thinking", "thinking": "The function mixes parsing and validation; I will read it first.", "signature": "x"},
                             {"type": "text", "text": "Let me read the module first.\n```rust\nfn handle() {}\n```"},
                             {"type": "tool_use", "id": tool, "name": "Read", "input": {"file_path": file}}],
                 "usage": {"input_tokens": 12, "output_tokens": 180, "cache_creation_input_tokens": 900, "cache_read_input_tokens": 42000}}}).to_string(),
        json!({"parentUuid": format!("{session}-a-{n}"), "isSidechain": false, "userType": "external", "cwd": "/home/dev/app", "sessionId": session,
               "version": "2.0.14", "gitBranch": "main", "type": "user", "uuid": format!("{session}-r-{n}"), "timestamp": ts(2),
               "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool,
                   "content": "     1\tpub fn handle(input: &str) -> Result<(), Error> {\n     2\t    let parsed = parse(input)?;\n     3\t    validate(&parsed)?;\n     4\t    store(parsed)\n     5\t}\n"}]},
               "toolUseResult": {"type": "text", "file": {"filePath": file, "numLines": 5}}}).to_string(),
    ]
}

fn write_corpus(root: &Path, lines: usize) -> u64 {
    let sessions = 40;
    let per = lines / 3 / sessions;
    let mut bytes = 0;
    for s in 0..sessions {
        let dir = root.join(format!("-home-dev-project-{}", s % 8));
        std::fs::create_dir_all(&dir).unwrap();
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(dir.join(format!("session-{s:04}.jsonl"))).unwrap(),
        );
        for n in 0..per {
            for l in exchange(&format!("s{s}"), n) {
                bytes += l.len() as u64 + 1;
                writeln!(f, "{l}").unwrap();
            }
        }
    }
    bytes
}

fn main() {
    let lines: usize = std::env::var("BENCH_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let bytes = write_corpus(root.path(), lines);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Stage 1: parse + rules only (one thread), on a sample of the corpus.
    let rules = RuleSet::load_dir(&repo.join("rules")).unwrap();
    let sample: Vec<String> = (0..20_000).flat_map(|n| exchange("bench", n)).collect();
    let t0 = Instant::now();
    let mut rows = 0usize;
    for (i, l) in sample.iter().enumerate() {
        let e = parse_line(l.as_bytes()).unwrap();
        let r = rules
            .apply(
                EntryInput {
                    doc: e.raw,
                    project: "p",
                    source_file: "/x/p/s.jsonl",
                    offset: i as u64,
                    fallback_time: None,
                },
                &NoPlugins,
            )
            .unwrap();
        rows += r.rows.len();
    }
    let dt = t0.elapsed().as_secs_f64();
    println!(
        "parse+rules (1 thread): {} lines in {:.2} s = {:.0} lines/s, {:.1} rows/line",
        sample.len(),
        dt,
        sample.len() as f64 / dt,
        rows as f64 / sample.len() as f64
    );

    // Stage 2: the whole pipeline into ClickHouse.
    let (cfg, settings) = testing::config("bench_ingest", root.path(), state.path());
    let summary = rt.block_on(run(&cfg, RunOptions::once())).unwrap();
    let secs = summary.elapsed.as_secs_f64();
    println!(
        "backfill end to end (backfill batches of {} rows): {} lines, {:.1} MiB in {:.2} s = {:.0} lines/s, {:.1} MiB/s, {} rows stored",
        cfg.batch.backfill_max_rows,
        summary.lines,
        bytes as f64 / 1048576.0,
        secs,
        summary.lines as f64 / secs,
        bytes as f64 / 1048576.0 / secs,
        summary.rows
    );
    let ch = ChClient::new(settings).unwrap();
    let n = rt.block_on(ch.count("claude_messages", false)).unwrap();
    assert_eq!(
        n as usize,
        lines / 3 / 40 * 3 * 40,
        "every line stored once"
    );
    rt.block_on(ch.drop_database()).unwrap();
}
