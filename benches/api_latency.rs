//! Dashboard query latency on a large corpus: generates ≥ 1,000,000 Claude Code
//! messages as JSONL session files, ingests them through the real pipeline
//! into a fresh database of the real ClickHouse (embedded engine unless
//! CLICKHOUSE_URL is set), then calls every endpoint through the HTTP router
//! and prints p50 / p95 / max per endpoint.
//!
//! `cargo bench --bench api_latency` (env API_BENCH_MESSAGES, default 1000000;
//! API_BENCH_RUNS, default 30; API_BENCH_KEEP=1 keeps the database for inspection).

use claude_ingest::pipeline::{run, RunOptions};
use claude_ingest::sink::clickhouse::ChClient;
use claude_ingest::sink::testing;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const TOOLS: &[&str] = &[
    "Read",
    "Edit",
    "Bash",
    "Grep",
    "Write",
    "Glob",
    "TodoWrite",
    "WebFetch",
];
const MODELS: &[&str] = &[
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-1-20250805",
    "claude-haiku-4-5-20251001",
];
const COMMANDS: &[&str] = &[
    "cargo test",
    "git status",
    "npm run build",
    "ls -la",
    "pytest -q",
    "rm -rf target",
    "git diff",
    "make",
];

/// A small deterministic PRNG (xorshift), so every run builds the same corpus.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn write_corpus(root: &Path, messages: usize) -> (usize, u64) {
    let sessions = 2000usize;
    let exchanges = messages.div_ceil(3);
    let per_session = exchanges.div_ceil(sessions);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let start = 1_782_864_000i64; // 2026-07-01
    let (mut lines, mut bytes) = (0usize, 0u64);
    for s in 0..sessions {
        let project = format!("-home-dev-project-{:02}", s % 20);
        let sid = format!(
            "{:08x}-bench-4000-8000-{:012x}",
            s,
            rng.next() & 0xffff_ffff_ffff
        );
        let dir = root.join(&project);
        std::fs::create_dir_all(&dir).unwrap();
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(dir.join(format!("{sid}.jsonl"))).unwrap(),
        );
        let mut t = start + (s as i64 * 90 * 86400 / sessions as i64);
        let model = MODELS[s % MODELS.len()];
        for i in 0..per_session {
            if lines >= messages {
                break;
            }
            let ts = |t: i64| {
                chrono::DateTime::from_timestamp(t, 0)
                    .unwrap_or_default()
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string()
            };
            let tool = TOOLS[rng.below(TOOLS.len() as u64) as usize];
            let file = format!("/home/dev/{project}/src/mod_{}.rs", rng.below(60));
            let input = match tool {
                "Bash" => {
                    json!({"command": COMMANDS[rng.below(COMMANDS.len() as u64) as usize], "description": "run"})
                }
                "Grep" | "Glob" => {
                    json!({"pattern": "fn main", "path": format!("/home/dev/{project}/src")})
                }
                "WebFetch" => json!({"url": "https://docs.example.com/x", "prompt": "summarise"}),
                "TodoWrite" => json!({"todos": [{"content": "write tests", "status": "pending"}]}),
                "Edit" => json!({"file_path": file, "old_string": "a", "new_string": "b"}),
                _ => json!({"file_path": file}),
            };
            let id = format!("toolu_{s}_{i}");
            let err = rng.below(100) < 6;
            let ctx = 5_000 + rng.below(150_000);
            let exchange = [
                json!({"type": "user", "uuid": format!("{sid}-u{i}"), "sessionId": sid, "timestamp": ts(t), "cwd": format!("/home/dev/{project}"),
                       "gitBranch": "main", "version": "2.0.14", "isSidechain": false, "userType": "external",
                       "message": {"role": "user", "content": format!("Step {i}: please update mod_{} and keep the tests green.", i % 60)}}),
                json!({"type": "assistant", "uuid": format!("{sid}-a{i}"), "sessionId": sid, "timestamp": ts(t + 3), "cwd": format!("/home/dev/{project}"),
                       "gitBranch": "main", "version": "2.0.14", "isSidechain": i % 17 == 0, "userType": "external", "requestId": format!("req_{s}_{i}"),
                       "message": {"role": "assistant", "model": model, "content": [{"type": "text", "text": "On it."},
                          {"type": "tool_use", "id": id, "name": tool, "input": input}],
                          "usage": {"input_tokens": 5 + rng.below(50), "output_tokens": 50 + rng.below(900),
                                    "cache_creation_input_tokens": rng.below(3000), "cache_read_input_tokens": ctx}}}),
                json!({"type": "user", "uuid": format!("{sid}-r{i}"), "sessionId": sid, "timestamp": ts(t + 5), "cwd": format!("/home/dev/{project}"),
                       "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "is_error": err,
                          "content": if err { "Error: command failed with exit code 1" } else { "ok" }}]}}),
            ];
            for e in exchange {
                if lines >= messages {
                    break;
                }
                let l = e.to_string();
                bytes += l.len() as u64 + 1;
                writeln!(f, "{l}").unwrap();
                lines += 1;
            }
            t += 20 + rng.below(300) as i64;
        }
    }
    (lines, bytes)
}

/// Generate the corpus and ingest it through the pipeline into a fresh database.
fn ingest_corpus(rt: &tokio::runtime::Runtime, messages: usize) -> (ChClient, u64) {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let (lines, bytes) = write_corpus(root.path(), messages);
    println!("corpus: {lines} message lines, {:.0} MiB, 2000 sessions, 20 projects, 90 days (generated in {:.1} s)", bytes as f64 / 1048576.0, t0.elapsed().as_secs_f64());

    let (cfg, settings) = testing::config("bench_api", root.path(), state.path());
    let summary = rt.block_on(run(&cfg, RunOptions::once())).unwrap();
    println!("ingested through the pipeline: {summary}");
    let ch = ChClient::new(settings).unwrap();
    let stored = rt.block_on(ch.count("claude_messages", false)).unwrap();
    assert_eq!(stored as usize, lines, "every message stored once");
    // Let background merges settle, as they would on a long-running server.
    rt.block_on(async {
        for t in [
            "claude_messages",
            "claude_tool_usage",
            "claude_sessions",
            "claude_file_access",
            "claude_requests",
            "claude_summaries",
        ] {
            let _ = ch.execute(&format!("OPTIMIZE TABLE {t} FINAL")).await;
        }
    });

    (ch, stored)
}

const WARMUP: usize = 5;

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let messages: usize = std::env::var("API_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = std::env::var("API_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // API_BENCH_DATABASE: measure an existing database (kept with API_BENCH_KEEP) without re-ingesting.
    let existing = std::env::var("API_BENCH_DATABASE").ok();
    let (ch, stored) = if let Some(db) = existing.clone() {
        let mut settings = testing::settings("unused");
        settings.database = db;
        let ch = ChClient::new(settings).unwrap();
        let n = rt.block_on(ch.count("claude_messages", false)).unwrap();
        println!(
            "measuring existing database {} ({n} messages)",
            ch.database()
        );
        (ch, n)
    } else {
        ingest_corpus(&rt, messages)
    };
    let base = rt.block_on(testing::serve_api(ch.clone())).unwrap();
    let http = reqwest::Client::new();
    let endpoints = [
        "/api/overview",
        "/api/claude-sessions?limit=100",
        "/api/claude-tool-usage?limit=15",
        "/api/claude-file-access?limit=25",
        "/api/claude-context-trends?bucket=day",
        "/api/claude-cost-analysis?limit=10",
        "/api/security-events?limit=25",
        "/api/claude-sessions?limit=100&project=-home-dev-project-07&from=2026-08-01",
        "/api/claude-tool-usage?from=2026-09-01&to=2026-09-07",
        "/healthz",
    ];
    println!(
        "{:<78} {:>8} {:>8} {:>8}",
        "endpoint", "p50 ms", "p95 ms", "max ms"
    );
    let mut worst_p95: f64 = 0.0;
    for ep in endpoints {
        let mut samples = Vec::with_capacity(runs);
        // Warm-up calls are not measured: ClickHouse JIT-compiles an expression
        // on its third use (a one-off 30-100 ms per expression per server start).
        for i in 0..runs + WARMUP {
            let t = Instant::now();
            let r = rt.block_on(http.get(format!("{base}{ep}")).send()).unwrap();
            assert!(r.status().is_success(), "{ep}: {}", r.status());
            let _ = rt.block_on(r.bytes()).unwrap();
            if i >= WARMUP {
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        samples.sort_by(f64::total_cmp);
        let p95 = pct(&samples, 0.95);
        if ep != "/healthz" {
            worst_p95 = worst_p95.max(p95);
        }
        println!(
            "{ep:<78} {:>8.1} {:>8.1} {:>8.1}",
            pct(&samples, 0.5),
            p95,
            samples[samples.len() - 1]
        );
    }
    // A full dashboard refresh: the seven panel queries at once, as the page does.
    let mut samples = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        rt.block_on(async {
            let futs = endpoints[..7].iter().map(|ep| {
                let http = http.clone();
                let url = format!("{base}{ep}");
                async move { http.get(url).send().await.unwrap().bytes().await.unwrap() }
            });
            let mut set = tokio::task::JoinSet::new();
            for f in futs {
                set.spawn(f);
            }
            while set.join_next().await.is_some() {}
        });
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "{:<78} {:>8.1} {:>8.1} {:>8.1}",
        "full dashboard refresh (7 endpoints concurrently)",
        pct(&samples, 0.5),
        pct(&samples, 0.95),
        samples[samples.len() - 1]
    );
    concurrent_clients(&rt, &http, &base, &endpoints[..7]);
    println!("worst single-endpoint p95: {worst_p95:.1} ms (target < 100 ms) on {stored} messages");
    if existing.is_some() || std::env::var("API_BENCH_KEEP").is_ok() {
        // A database the bench did not create is never dropped.
        println!("kept database {}", ch.database());
    } else {
        rt.block_on(ch.drop_database()).unwrap();
    }
}

/// 200 clients at once, each calling the dashboard's panels in turn for a
/// bounded number of rounds: p50 / p95 of the answered calls and how many were
/// shed with 503 + Retry-After (the API bounds requests in flight).
fn concurrent_clients(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    base: &str,
    endpoints: &[&str],
) {
    let clients: usize = std::env::var("API_BENCH_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let t0 = Instant::now();
    let results: Vec<(u16, f64)> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for c in 0..clients {
            let http = http.clone();
            let urls: Vec<String> = (0..3)
                .map(|k| format!("{base}{}", endpoints[(c + k) % endpoints.len()]))
                .collect();
            set.spawn(async move {
                let mut out = Vec::new();
                for url in urls {
                    let t = Instant::now();
                    let code = match http.get(url).send().await {
                        Ok(r) => {
                            let code = r.status().as_u16();
                            let _ = r.bytes().await;
                            code
                        }
                        Err(_) => 0,
                    };
                    out.push((code, t.elapsed().as_secs_f64() * 1000.0));
                }
                out
            });
        }
        let mut all = Vec::new();
        while let Some(r) = set.join_next().await {
            all.extend(r.unwrap_or_default());
        }
        all
    });
    let mut ok: Vec<f64> = results.iter().filter(|r| r.0 == 200).map(|r| r.1).collect();
    ok.sort_by(f64::total_cmp);
    let shed = results.iter().filter(|r| r.0 == 503).count();
    let failed = results.len() - ok.len() - shed;
    let (p50, p95) = if ok.is_empty() {
        (0.0, 0.0)
    } else {
        (pct(&ok, 0.5), pct(&ok, 0.95))
    };
    println!(
        "{clients} concurrent clients x 3 calls in {:.1} s: {} answered (p50 {p50:.0} ms, p95 {p95:.0} ms), {shed} shed with 503, {failed} failed",
        t0.elapsed().as_secs_f64(),
        ok.len()
    );
}
