//! Dashboard query latency on a large corpus: generates ≥ 1,000,000 Claude Code
//! messages as JSONL session files, ingests them through the real pipeline
//! into a fresh database of the real ClickHouse (embedded engine unless
//! CLICKHOUSE_URL is set), then calls every endpoint through the HTTP router
//! and prints p50 / p95 / max per endpoint.
//!
//! `cargo bench --bench api_latency` (env API_BENCH_MESSAGES, default 1000000;
//! API_BENCH_RUNS, default 30; API_BENCH_KEEP=1 keeps the database for inspection;
//! API_BENCH_SHAPE, default `synthetic`, selects the corpus shape):
//!
//! - `synthetic`: 2,000 generated sessions in 20 projects over 90 days, one tool
//!   call per three lines, short contents.
//! - `examples`: the example sessions of `examples/claude-projects` (summaries,
//!   subagents, sensitive files, dangerous commands, malformed lines; 44 tool
//!   calls per 114 lines) copied into 100 project groups × N repetitions (88 for
//!   1M lines), each copy with its own ids and shifted by a day per repetition.
//!   A store built differently, so no index or view is tuned to one corpus only.

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

/// The corpus shapes the bench can generate (`API_BENCH_SHAPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Synthetic,
    Examples,
}

impl Shape {
    fn from_env() -> Shape {
        match std::env::var("API_BENCH_SHAPE").as_deref() {
            Ok("examples") => Shape::Examples,
            Ok("synthetic") | Err(_) => Shape::Synthetic,
            Ok(other) => panic!("API_BENCH_SHAPE must be `synthetic` or `examples`, not `{other}`"),
        }
    }

    /// Writes the corpus: (lines, bytes, message lines expected in the store, description).
    fn write(self, root: &Path, messages: usize) -> (usize, u64, usize, String) {
        match self {
            Shape::Synthetic => {
                let (lines, bytes) = write_corpus(root, messages);
                let what = "2000 sessions, 20 projects, 90 days".to_string();
                (lines, bytes, lines, what)
            }
            Shape::Examples => write_examples_corpus(root, messages),
        }
    }

    /// Endpoints with filters that select a part of this shape's data.
    fn filtered_endpoints(self) -> [&'static str; 2] {
        match self {
            Shape::Synthetic => [
                "/api/claude-sessions?limit=100&project=-home-dev-project-07&from=2026-08-01",
                "/api/claude-tool-usage?from=2026-09-01&to=2026-09-07",
            ],
            Shape::Examples => [
                "/api/claude-sessions?limit=100&project=-home-dev-g007-webapp&from=2026-11-01",
                "/api/claude-tool-usage?from=2026-11-01&to=2026-11-07",
            ],
        }
    }
}

/// Groups of projects the example sessions are copied into.
const EXAMPLE_GROUPS: usize = 100;

/// Every file of `examples/claude-projects`, as (path relative to it, bytes).
fn example_files() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/claude-projects");
    let mut out = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "jsonl") {
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// One copy of an example file: its own ids (the first group of every UUID
/// becomes `tag`; tool, request and message ids get it appended), its own
/// project (`/home/dev/X` → `/home/dev/gNNN-X`) and timestamps `days` later.
struct Copier {
    uuid: regex::bytes::Regex,
    ids: regex::bytes::Regex,
    ts: regex::bytes::Regex,
    home: regex::bytes::Regex,
}

impl Copier {
    fn new() -> Copier {
        Copier {
            uuid: regex::bytes::Regex::new(
                r"[0-9a-f]{8}(-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})",
            )
            .unwrap(),
            ids: regex::bytes::Regex::new(r"\b((?:toolu|req|msg)_[0-9A-Za-z]+)").unwrap(),
            ts: regex::bytes::Regex::new(r#""timestamp": ?"([0-9T:.\-]+)Z""#).unwrap(),
            home: regex::bytes::Regex::new("/home/dev/").unwrap(),
        }
    }

    fn copy(&self, text: &[u8], group: usize, tag: u32, days: i64) -> Vec<u8> {
        let t = self.uuid.replace_all(text, |c: &regex::bytes::Captures| {
            let mut v = format!("{tag:08x}").into_bytes();
            v.extend_from_slice(&c[1]);
            v
        });
        let t = self.ids.replace_all(&t, |c: &regex::bytes::Captures| {
            let mut v = c[1].to_vec();
            v.extend_from_slice(format!("x{tag:08x}").as_bytes());
            v
        });
        let t = self.ts.replace_all(&t, |c: &regex::bytes::Captures| {
            let s = String::from_utf8_lossy(&c[1]);
            let shifted = chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f")
                .map(|d| {
                    (d + chrono::Duration::days(days))
                        .format("%Y-%m-%dT%H:%M:%S%.3f")
                        .to_string()
                })
                .unwrap_or_else(|_| s.into_owned());
            format!("\"timestamp\": \"{shifted}Z\"").into_bytes()
        });
        let home = format!("/home/dev/g{group:03}-");
        self.home.replace_all(&t, home.as_bytes()).into_owned()
    }
}

fn write_examples_corpus(root: &Path, messages: usize) -> (usize, u64, usize, String) {
    let files = example_files();
    let per_copy: usize = files
        .iter()
        .map(|(_, b)| b.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count())
        .sum();
    let reps = messages.div_ceil(EXAMPLE_GROUPS * per_copy).max(1);
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/EXPECTED.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let message_lines = expected["message_lines"].as_u64().unwrap() as usize;
    let copier = Copier::new();
    let (mut lines, mut bytes) = (0usize, 0u64);
    for g in 0..EXAMPLE_GROUPS {
        for r in 0..reps {
            let tag = (g * reps + r) as u32;
            for (rel, text) in &files {
                let rel = copier.copy(rel.as_bytes(), g, tag, 0);
                let rel = String::from_utf8_lossy(&rel).replacen(
                    "-home-dev-",
                    &format!("-home-dev-g{g:03}-"),
                    1,
                );
                let path = root.join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let out = copier.copy(text, g, tag, r as i64);
                lines += out.split(|c| *c == b'\n').filter(|l| !l.is_empty()).count();
                bytes += out.len() as u64;
                std::fs::write(path, out).unwrap();
            }
        }
    }
    let what = format!(
        "examples × {EXAMPLE_GROUPS} project groups × {reps} repetitions ({} sessions, {} projects, {reps} days)",
        6 * EXAMPLE_GROUPS * reps,
        3 * EXAMPLE_GROUPS
    );
    (lines, bytes, message_lines * EXAMPLE_GROUPS * reps, what)
}

/// Generate the corpus and ingest it through the pipeline into a fresh database.
fn ingest_corpus(rt: &tokio::runtime::Runtime, shape: Shape, messages: usize) -> (ChClient, u64) {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let (lines, bytes, expected, what) = shape.write(root.path(), messages);
    println!("corpus ({shape:?}): {lines} lines ({expected} message lines), {:.0} MiB, {what} (generated in {:.1} s)", bytes as f64 / 1048576.0, t0.elapsed().as_secs_f64());

    let (cfg, settings) = testing::config("bench_api", root.path(), state.path());
    let summary = rt.block_on(run(&cfg, RunOptions::once())).unwrap();
    println!("ingested through the pipeline: {summary}");
    let ch = ChClient::new(settings).unwrap();
    let stored = rt.block_on(ch.count("claude_messages", false)).unwrap();
    assert_eq!(stored as usize, expected, "every message stored once");
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
    let shape = Shape::from_env();
    // API_BENCH_WRITE_CORPUS=DIR: only write the corpus there (to study queries by hand).
    if let Ok(dir) = std::env::var("API_BENCH_WRITE_CORPUS") {
        let (lines, _, expected, what) = shape.write(Path::new(&dir), messages);
        println!("wrote {lines} lines ({expected} message lines) to {dir}: {what}");
        return;
    }
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
        ingest_corpus(&rt, shape, messages)
    };
    let base = rt.block_on(testing::serve_api(ch.clone())).unwrap();
    let http = reqwest::Client::new();
    let [filtered_sessions, filtered_tools] = shape.filtered_endpoints();
    // One session in the middle of the store, for the replay.
    let sid_sql =
        "SELECT session_id FROM claude_sessions ORDER BY project, session_id LIMIT 1 OFFSET 777";
    let sid = rt.block_on(ch.query_json(sid_sql, &[])).unwrap()[0]["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let replay = format!("/api/claude-session/{sid}");
    let search = match shape {
        Shape::Synthetic => "/api/search?q=mod_42%20green&limit=50",
        Shape::Examples => "/api/search?q=input%20validation&limit=50",
    };
    let endpoints = [
        "/api/overview",
        "/api/claude-sessions?limit=100",
        "/api/claude-tool-usage?limit=15",
        "/api/claude-file-access?limit=25",
        "/api/claude-context-trends?bucket=day",
        "/api/claude-cost-analysis?limit=10",
        "/api/security-events?limit=25",
        filtered_sessions,
        filtered_tools,
        replay.as_str(),
        search,
        "/api/insights/tool-times",
        "/api/insights/redundancy",
        "/api/insights/context",
        "/api/insights/tool-costs",
        "/api/insights/exposure",
        "/api/insights/now",
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
