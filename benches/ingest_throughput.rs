//! The efficiency bench: on one generated corpus (compact JSON like Claude
//! Code writes), in one run, it measures the engine and the anchors it is
//! judged against, and prints the ratios (the machine is shared and noisy:
//! only ratios measured side by side mean much):
//!
//! * serde_json parse alone, and parse + the default rules (one thread);
//! * ClickHouse's own load speed: chDB `INSERT … SELECT JSONExtract*` from the
//!   same files into a 13-column MergeTree;
//! * the engine's backfill end to end (the release binary, into the test
//!   ClickHouse), with its peak RSS;
//! * the writer alone (encode → spool → insert → commit) fed rows routed
//!   beforehand, in process, into the same ClickHouse;
//! * `ingest` following unchanged files, on a ClickHouse of its own (fresh,
//!   as on a laptop): CPU of the engine and of that ClickHouse while idle;
//! * append → row visible with the default config (p50 / p95);
//! * idle CPU again once it follows 20,000 more files (`BENCH_IDLE_FILES`).
//!
//! Throughput figures are medians of `BENCH_RUNS` runs (default 3), the
//! engine's backfill and ClickHouse's own load taken in turns so that both see
//! the same machine load.
//!
//! `cargo bench --bench ingest_throughput` (env BENCH_LINES, default 300000,
//! or BENCH_1M=1 for the 1M-line corpus; BENCH_RUNS 3; BENCH_WRITER_LINES
//! 30000; BENCH_IDLE_SECS 30: CPU is counted in 10 ms ticks;
//! BENCH_SETTLE_SECS 90; BENCH_APPENDS 60).

use claude_ingest::config::BatchSection;
use claude_ingest::parse::parse_line;
use claude_ingest::plugins::api::NoPlugins;
use claude_ingest::row::Row;
use claude_ingest::rules::{EntryInput, RuleSet};
use claude_ingest::sink::clickhouse::{ChClient, ChSettings};
use claude_ingest::sink::embedded::{EmbeddedClickHouse, Role};
use claude_ingest::sink::spool::Spool;
use claude_ingest::sink::status::IngestStatus;
use claude_ingest::sink::testing;
use claude_ingest::sink::writer::{run_writer, SinkItem, Writer, WriterConfig};
use claude_ingest::source::CheckpointStore;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Lines/s of serde_json alone, and of parse + the default rule pack: the
/// medians of 3 passes over the sample each, taken in turns after an untimed
/// warm-up pass (a long-lived router runs warm: its heap grown, its regexes'
/// lazy automata built, its redactor's memory filled). The first pass of a
/// cold process was 10-20 % slower than the next ones on this machine.
fn router_stages(repo: &Path, sample: &[String]) -> (f64, f64) {
    let rules = RuleSet::load_dir(&repo.join("rules")).unwrap();
    route_pass(&rules, &sample[..sample.len() / 10]);
    let (mut parse, mut routed) = (vec![], vec![]);
    for _ in 0..3 {
        let t0 = Instant::now();
        for l in sample {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            std::hint::black_box(v);
        }
        parse.push(sample.len() as f64 / t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        route_pass(&rules, sample);
        routed.push(sample.len() as f64 / t0.elapsed().as_secs_f64());
    }
    (median(parse), median(routed))
}

/// Parse and route every line of `sample` (its rows are dropped).
fn route_pass(rules: &RuleSet, sample: &[String]) {
    for (i, l) in sample.iter().enumerate() {
        let e = parse_line(l.as_bytes()).unwrap();
        let input = EntryInput {
            doc: e.raw,
            project: "p",
            source_file: "/x/p/s.jsonl",
            offset: i as u64,
            fallback_time: None,
        };
        std::hint::black_box(rules.apply(input, &NoPlugins).unwrap());
    }
}

/// ClickHouse loading the same files by itself (chDB in a fresh directory).
fn clickhouse_load(root: &Path, lines: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"
import chdb, time
c = chdb.connect("file:{data}")
c.query("CREATE TABLE t (uuid String, session_id String, type LowCardinality(String), ts DateTime64(3, 'UTC'), model LowCardinality(String), cwd String, version LowCardinality(String), branch String, input UInt64, output UInt64, cache_write UInt64, cache_read UInt64, text String) ENGINE = MergeTree ORDER BY (session_id, ts)")
t0 = time.time()
c.query("""INSERT INTO t SELECT JSONExtractString(l, 'uuid'), JSONExtractString(l, 'sessionId'), JSONExtractString(l, 'type'),
  parseDateTime64BestEffortOrZero(JSONExtractString(l, 'timestamp'), 3, 'UTC'), JSONExtractString(l, 'message', 'model'),
  JSONExtractString(l, 'cwd'), JSONExtractString(l, 'version'), JSONExtractString(l, 'gitBranch'),
  JSONExtractUInt(l, 'message', 'usage', 'input_tokens'), JSONExtractUInt(l, 'message', 'usage', 'output_tokens'),
  JSONExtractUInt(l, 'message', 'usage', 'cache_creation_input_tokens'), JSONExtractUInt(l, 'message', 'usage', 'cache_read_input_tokens'),
  JSONExtractRaw(l, 'message', 'content') FROM file('{root}/*/*.jsonl', 'LineAsString', 'l String')""")
print(time.time() - t0)
"#,
        data = dir.path().display(),
        root = root.display()
    );
    let python = claude_ingest::sink::embedded::default_python();
    let out = Command::new(python).arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    lines as f64 / secs
}

/// The engine as an installed binary runs it: the built-in rule pack, no
/// user rules dir (run from the state dir, with a config home that does not
/// exist), so idle CPU includes the watcher of that absent dir.
fn engine(args: &[&str], settings: &ChSettings, root: &Path, state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_claude-ingest"));
    c.current_dir(state)
        .env("XDG_CONFIG_HOME", state.join("no-config"))
        .arg("--root")
        .arg(root)
        .arg("--state-dir")
        .arg(state)
        .arg("--plugins")
        .arg(state.join("no-plugins"))
        .args([
            "--clickhouse-url",
            &settings.url,
            "--database",
            &settings.database,
        ])
        .args(args)
        // credentials through the environment, never argv
        .env("CLICKHOUSE_USER", &settings.user)
        .env("CLICKHOUSE_PASSWORD", &settings.password)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

/// The release binary's backfill into a fresh database: lines/s and the
/// engine's own peak RSS in MiB (VmHWM, read until it exits: a forked
/// child's ru_maxrss would count this process's memory at the fork).
fn backfill(root: &Path, lines: usize, rt: &tokio::runtime::Runtime) -> (f64, f64) {
    let settings = testing::settings("bench_ingest");
    let state = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let mut child = engine(&["backfill", "--quiet"], &settings, root, state.path())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0.0f64;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        let text = std::fs::read_to_string(&status_file).unwrap_or_default();
        let hwm = text
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        peak_kib = peak_kib.max(hwm.unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(50));
    };
    let secs = t0.elapsed().as_secs_f64();
    assert!(status.success());
    let ch = ChClient::new(settings).unwrap();
    let stored = rt.block_on(ch.count("claude_messages", false)).unwrap();
    assert_eq!(stored as usize, lines, "every line stored once");
    rt.block_on(ch.drop_database()).unwrap();
    (lines as f64 / secs, peak_kib / 1024.0)
}

/// Lines routed beforehand (parse + default rules), so the writer can be
/// measured alone.
fn routed_lines(repo: &Path, root: &Path, max: usize) -> Vec<Vec<Row>> {
    let rules = RuleSet::load_dir(&repo.join("rules")).unwrap();
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = claude_ingest::source::discover(root, &["*/*.jsonl".into()])
        .unwrap()
        .into_iter()
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let file = f.to_string_lossy();
        let mut offset = 0u64;
        for l in text.lines() {
            if out.len() == max {
                return out;
            }
            let e = parse_line(l.as_bytes()).unwrap();
            let input = EntryInput {
                doc: e.raw,
                project: "p",
                source_file: &file,
                offset,
                fallback_time: None,
            };
            out.push(rules.apply(input, &NoPlugins).unwrap().rows);
            offset += l.len() as u64 + 1;
        }
    }
    out
}

/// The writer alone, default batch settings: routed lines in, stored rows
/// out (encode, spool with fsync, insert, checkpoint commit). Lines/s.
fn writer_alone(rt: &tokio::runtime::Runtime, lines: Vec<Vec<Row>>) -> f64 {
    let n = lines.len();
    let state = tempfile::tempdir().unwrap();
    let batch = BatchSection::default();
    let secs = rt.block_on(async {
        let ch = testing::fresh_client("bench_writer").await;
        let status = Arc::new(IngestStatus::new(batch.queue_capacity));
        let writer = Writer::new(
            ch.clone(),
            Spool::open(&state.path().join("spool")).unwrap(),
            CheckpointStore::open(&state.path().join("cp.json")).unwrap(),
            status,
            Arc::new(AtomicBool::new(false)),
            WriterConfig {
                max_rows: batch.max_rows,
                backfill_max_rows: batch.backfill_max_rows,
                max_bytes: batch.max_bytes,
                max_delay: Duration::from_millis(batch.max_delay_ms),
                schema_dirs: vec![],
                stamp: Default::default(),
            },
        )
        .await
        .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(batch.queue_capacity);
        let t0 = Instant::now();
        let task = tokio::spawn(run_writer(writer, rx));
        // In batches, as the router hands them over (a read chunk's lines).
        let mut lines = lines.into_iter().peekable();
        while lines.peek().is_some() {
            let items = lines
                .by_ref()
                .take(256)
                .map(|rows| SinkItem::Rows {
                    rows,
                    checkpoint: None,
                    read_at_ms: 0,
                    permit: None,
                })
                .collect();
            tx.send(items).await.unwrap();
        }
        drop(tx);
        task.await.unwrap().unwrap();
        let secs = t0.elapsed().as_secs_f64();
        let stored = ch.count("claude_messages", false).await.unwrap();
        assert_eq!(stored as usize, n, "every line stored once");
        ch.drop_database().await.unwrap();
        secs
    });
    n as f64 / secs
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, r)| r)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

struct Following(Child);

impl Drop for Following {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    // BENCH_ROUTER_SECS=N: only parse + route the sample, for N seconds (a
    // steady loop to profile the router with `perf record -p`; BENCH_SAMPLE
    // exchanges of 3 lines, default 20000: fewer under callgrind).
    if let Ok(secs) = std::env::var("BENCH_ROUTER_SECS") {
        let secs: f64 = secs.parse().unwrap_or(10.0);
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let exchanges = env_num("BENCH_SAMPLE", 20_000);
        let sample: Vec<String> = (0..exchanges).flat_map(|n| exchange("bench", n)).collect();
        let t0 = Instant::now();
        while t0.elapsed().as_secs_f64() < secs {
            let (_, routed) = router_stages(repo, &sample);
            println!("router {routed:.0} lines/s");
        }
        return;
    }
    // BENCH_WRITE_CORPUS=DIR: write the corpus there and stop (to time other
    // loaders, or the engine under a profiler, on the bench's own files).
    if let Ok(dir) = std::env::var("BENCH_WRITE_CORPUS") {
        let lines = env_num("BENCH_LINES", 300_000);
        let bytes = write_corpus(Path::new(&dir), lines);
        println!("{lines} lines, {bytes} bytes in {dir}");
        return;
    }
    let default_lines = if std::env::var("BENCH_1M").is_ok_and(|v| v == "1") {
        1_000_000
    } else {
        300_000
    };
    let lines = env_num("BENCH_LINES", default_lines);
    let runs = env_num("BENCH_RUNS", 3).max(1);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = tempfile::tempdir().unwrap();
    let bytes = write_corpus(root.path(), lines);
    let lines = lines / 3 / 40 * 3 * 40;
    let load_before = load_avg();
    println!(
        "corpus: {lines} lines, {:.1} MiB; {runs} runs; load average {load_before}",
        bytes as f64 / 1048576.0,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sample: Vec<String> = (0..20_000).flat_map(|n| exchange("bench", n)).collect();
    let (mut parse, mut routed, mut engine_rate, mut rss, mut ch_load, mut writer) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let (p, r) = router_stages(repo, &sample);
        parse.push(p);
        routed.push(r);
        let (e, m) = backfill(root.path(), lines, &rt);
        engine_rate.push(e);
        rss.push(m);
        ch_load.push(clickhouse_load(root.path(), lines));
        let pre = routed_lines(repo, root.path(), env_num("BENCH_WRITER_LINES", 30_000));
        writer.push(writer_alone(&rt, pre));
        eprintln!(
            "run {}: backfill {:.0}/s ({:.0} MiB), ClickHouse {:.0}/s, writer alone {:.0}/s, router {:.0}/s, load {}",
            run + 1, e, m, ch_load[run], writer[run], r, load_avg()
        );
    }
    let peak_rss = rss.iter().copied().fold(0.0, f64::max);
    let (parse, routed, engine_rate, ch_load, writer) = (
        median(parse),
        median(routed),
        median(engine_rate),
        median(ch_load),
        median(writer),
    );
    let f = follow(&rt);
    // The writer's share of the end-to-end time, with the router's (one
    // thread, measured above) taken out: what the sink side sustains.
    // Only meaningful when the router alone is faster than the whole.
    let sink_side = (routed > engine_rate).then(|| 1.0 / (1.0 / engine_rate - 1.0 / routed));
    println!();
    println!(
        "{:<60} {:>12} {:>10}",
        "measure (medians)", "value", "ratio"
    );
    let row = |name: &str, v: String, r: String| println!("{name:<60} {v:>12} {r:>10}");
    let rate = |v: f64| format!("{v:.0}/s");
    row(
        "serde_json parse alone (1 thread)",
        rate(parse),
        String::new(),
    );
    row(
        "parse + default rules (1 thread)",
        rate(routed),
        format!("{:.3}", routed / parse),
    );
    row(
        "ClickHouse's own load (chDB INSERT … SELECT)",
        rate(ch_load),
        String::new(),
    );
    row(
        "engine backfill end to end",
        rate(engine_rate),
        format!("{:.3}", engine_rate / ch_load),
    );
    row(
        "writer alone (pre-routed rows: encode, spool, insert, commit)",
        rate(writer),
        format!("{:.3}", writer / ch_load),
    );
    row(
        "end to end with the router's time taken out",
        sink_side.map_or("n/a".into(), rate),
        sink_side.map_or(String::new(), |v| format!("{:.3}", v / ch_load)),
    );
    row(
        "engine backfill peak RSS (MiB, max of runs)",
        format!("{peak_rss:.0}"),
        String::new(),
    );
    let pair = |(engine, all): (f64, f64)| format!("{engine:.2} / {all:.2}");
    row(
        "idle CPU just after catching up: engine / + its ClickHouse (%)",
        pair(f.fresh),
        String::new(),
    );
    row(
        "idle CPU, settled: engine / + its ClickHouse (% of one core)",
        pair(f.settled),
        String::new(),
    );
    row(
        "append → visible, default config: p50 / p95 (ms)",
        format!("{:.0} / {:.0}", f.p50, f.p95),
        String::new(),
    );
    row(
        &format!(
            "idle, settled, {} more files: engine / + ClickHouse",
            f.many_files
        ),
        pair(f.many),
        String::new(),
    );
    println!(
        "(ratios: router / serde_json parse; others / ClickHouse's own load) load average before {load_before}, now {}",
        load_avg()
    );
}

/// What the following engine costs and how fast it shows a line.
struct Follow {
    /// Idle CPU (% of one core), the engine alone and with its ClickHouse:
    /// in the window right after catching up (ClickHouse still merges what
    /// was just inserted), and settled (`BENCH_SETTLE_SECS` after the last
    /// write, past the merges forced 60 s after an insert).
    fresh: (f64, f64),
    settled: (f64, f64),
    /// Append → visible p50 / p95 (ms).
    p50: f64,
    p95: f64,
    /// Idle, settled, once it tracks `many_files` more files.
    many_files: usize,
    many: (f64, f64),
}

/// `many` sessions of one exchange each, 200 to a project directory: a heavy
/// user's `~/.claude/projects` after months. Returns the lines written.
fn write_many(root: &Path, many: usize) -> usize {
    for s in 0..many {
        let dir = root.join(format!("-home-dev-many-{}", s / 200));
        std::fs::create_dir_all(&dir).unwrap();
        let lines = exchange(&format!("m{s}"), 0);
        std::fs::write(dir.join(format!("m-{s:06}.jsonl")), lines.join("\n") + "\n").unwrap();
    }
    many * exchange("m", 0).len()
}

/// `ingest` following a small tree: CPU while nothing changes, the latency
/// of single appended lines (default batch settings), then idle CPU again
/// once it follows `BENCH_IDLE_FILES` (default 20,000) more files.
fn follow(rt: &tokio::runtime::Runtime) -> Follow {
    let idle_secs = env_num("BENCH_IDLE_SECS", 30) as f64;
    let appends = env_num("BENCH_APPENDS", 60);
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    write_corpus(root.path(), 1200);
    // A ClickHouse of its own, fresh as on a laptop: the test engine the
    // other phases share still merges and removes what they wrote and
    // dropped, which an idle window must not count (it read 1.97 % for 0.15).
    let ch_dir = tempfile::tempdir().unwrap();
    let own = EmbeddedClickHouse::start(None, ch_dir.path()).unwrap();
    let settings = own.settings(Role::Writer, &testing::fresh_database("bench_follow"));
    let child = engine(
        &["ingest", "--no-api"],
        &settings,
        root.path(),
        state.path(),
    )
    .spawn()
    .unwrap();
    let child = Following(child);
    let ch = ChClient::new(settings).unwrap();
    let caught_up = |want: u64| {
        let t0 = Instant::now();
        while rt.block_on(ch.count("claude_messages", false)).unwrap_or(0) < want {
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "ingest never caught up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    caught_up(1200);
    std::thread::sleep(Duration::from_secs(2));
    // The engine and its ClickHouse: their CPU while nothing changes is what
    // an idle laptop pays.
    let engine_pid = child.0.id();
    let ch_pid = own.child_pid().expect("the engine's ClickHouse runs") as u32;
    let idle_cpu = || {
        let (engine0, ch0) = (cpu_secs(engine_pid), cpu_secs(ch_pid));
        std::thread::sleep(Duration::from_secs_f64(idle_secs));
        let engine = (cpu_secs(engine_pid) - engine0) / idle_secs * 100.0;
        let ch = (cpu_secs(ch_pid) - ch0) / idle_secs * 100.0;
        (engine, engine + ch)
    };
    let settle = Duration::from_secs(env_num("BENCH_SETTLE_SECS", 90) as u64);
    let fresh = idle_cpu();
    std::thread::sleep(settle.saturating_sub(Duration::from_secs_f64(idle_secs)));
    let settled = idle_cpu();
    let file: PathBuf = root.path().join("-home-dev-project-0/session-0000.jsonl");
    let mut lat = Vec::new();
    for n in 0..appends {
        let line = exchange("live", 1_000_000 + n)[0].clone();
        let uuid = format!("live-u-{}", 1_000_000 + n);
        let t0 = Instant::now();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        writeln!(f, "{line}").unwrap();
        drop(f);
        let sql = format!("SELECT count() AS c FROM claude_messages WHERE uuid = '{uuid}'");
        while rt
            .block_on(ch.query_json(&sql, &[]))
            .map_or(0, |r| r[0]["c"].as_u64().unwrap_or(0))
            == 0
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "appended line never visible"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(100));
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    let many_files = env_num("BENCH_IDLE_FILES", 20_000);
    let added = write_many(root.path(), many_files);
    caught_up((1200 + appends + added) as u64);
    std::thread::sleep(settle);
    let many = idle_cpu();
    rt.block_on(ch.drop_database()).ok();
    Follow {
        fresh,
        settled,
        p50: pct(0.5),
        p95: pct(0.95),
        many_files,
        many,
    }
}
