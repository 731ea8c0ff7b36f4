//! Cost per entry of the rule engine alone and with one WASM plugin called on
//! every entry: prints entries/s for both and the overhead ratio, and the
//! router's cost (parse + rules, one thread) against its anchor measured in
//! the same run, serde_json parsing the same lines (medians of 5 rounds).
//!
//! `cargo bench --bench rules_plugins` (needs `plugins/build.sh` to have run;
//! env BENCH_ENTRIES, default 30000).

use claude_ingest::parse::parse_line;
use claude_ingest::plugins::api::{NoPlugins, PluginCaller};
use claude_ingest::plugins::{PluginLimits, PluginsHandle};
use claude_ingest::rules::{EntryInput, RuleSet};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn entries(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 3 {
            0 => json!({"type": "user", "uuid": format!("u{i}"), "sessionId": "s", "timestamp": "2026-10-01T10:00:00.000Z",
                        "message": {"role": "user", "content": format!("Please fix bug {i} in src/lib.rs and run the tests")}}),
            1 => json!({"type": "assistant", "uuid": format!("a{i}"), "sessionId": "s", "timestamp": "2026-10-01T10:00:01.000Z",
                        "message": {"role": "assistant", "model": "claude-sonnet-4-5-20250929",
                          "content": [{"type": "text", "text": "Running:\n```bash\ncargo test\n```"},
                                      {"type": "tool_use", "id": format!("t{i}"), "name": "Bash", "input": {"command": if i % 2 == 0 { "rm -rf target" } else { "cargo test" }}}],
                          "usage": {"input_tokens": 10, "output_tokens": 100, "cache_read_input_tokens": 30000}}}),
            _ => json!({"type": "user", "uuid": format!("r{i}"), "sessionId": "s", "timestamp": "2026-10-01T10:00:02.000Z",
                        "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("t{}", i - 1), "content": "test result: ok. 12 passed"}]}}),
        }.to_string())
        .collect()
}

fn measure(rules: &RuleSet, plugins: &dyn PluginCaller, lines: &[String]) -> (f64, usize) {
    let mut rows = 0;
    let t0 = Instant::now();
    for (i, l) in lines.iter().enumerate() {
        let e = parse_line(l.as_bytes()).expect("valid");
        let r = rules
            .apply(
                EntryInput {
                    doc: e.raw,
                    project: "p",
                    source_file: "/r/p/s.jsonl",
                    offset: i as u64,
                    fallback_time: None,
                },
                plugins,
            )
            .expect("routes");
        rows += r.rows.len();
    }
    (lines.len() as f64 / t0.elapsed().as_secs_f64(), rows)
}

/// Lines/s of serde_json parsing the lines into a `Value` (the anchor).
fn parse_only(lines: &[String]) -> f64 {
    let t0 = Instant::now();
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("valid");
        std::hint::black_box(v);
    }
    lines.len() as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU time this thread has used, in seconds. On a shared machine wall time
/// also counts the time other processes held the core; CPU time does not.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Lines per wall second (what `f` returns) and per CPU second of `f`.
fn rates(lines: usize, f: impl FnOnce() -> f64) -> (f64, f64) {
    let c0 = thread_cpu();
    let wall = f();
    (wall, lines as f64 / (thread_cpu() - c0))
}

/// Router (parse + rules) against the parse anchor, interleaved rounds; per
/// wall second and per CPU second (the figure to trust on a loaded machine).
fn router_vs_anchor(rules: &RuleSet, lines: &[String]) {
    let (mut anchor, mut router) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        anchor.push(rates(lines.len(), || parse_only(lines)));
        router.push(rates(lines.len(), || measure(rules, &NoPlugins, lines).0));
    }
    let wall = |v: &[(f64, f64)]| median(v.iter().map(|x| x.0).collect());
    let cpu = |v: &[(f64, f64)]| median(v.iter().map(|x| x.1).collect());
    let (a, r) = (wall(&anchor), wall(&router));
    println!(
        "router (parse + rules, 1 thread): {r:>9.0} lines/s ({:.2} µs/line); serde_json parse alone {a:.0} lines/s; ratio {:.3}",
        1e6 / r,
        r / a
    );
    let (a, r) = (cpu(&anchor), cpu(&router));
    println!(
        "  per CPU second:                 {r:>9.0} lines/s ({:.2} µs/line); serde_json parse alone {a:.0} lines/s; ratio {:.3}",
        1e6 / r,
        r / a
    );
}

fn pack(repo: &Path, extra: Option<&str>) -> RuleSet {
    let mut sources: Vec<(PathBuf, String)> = std::fs::read_dir(repo.join("rules"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("50-plugins.yaml"))
        .map(|p| {
            let t = std::fs::read_to_string(&p).unwrap();
            (p, t)
        })
        .collect();
    sources.sort();
    if let Some(x) = extra {
        sources.push((PathBuf::from("bench-plugin.yaml"), x.to_string()));
    }
    RuleSet::from_sources(&sources).unwrap()
}

fn main() {
    let n: usize = std::env::var("BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lines = entries(n);
    let plain = pack(repo, None);
    router_vs_anchor(&plain, &lines);
    if std::env::var_os("BENCH_ROUTER_ONLY").is_some() {
        return;
    }
    let dist = repo.join("plugins/dist");
    // The defaults of the `plugins:` config section (budgets scaled by input size).
    let limits = PluginLimits::default();
    let (plugins, rejected) = PluginsHandle::load(&dist, limits).expect("plugins dir");
    assert!(rejected.is_empty(), "plugins rejected: {rejected:?}");
    assert!(
        plugins.names().iter().any(|p| p == "dangerous_bash"),
        "run plugins/build.sh first (no dangerous_bash in {})",
        dist.display()
    );

    let with_plugin = pack(repo, Some("plugins:\n  - plugin: dangerous_bash\n"));
    // warm up both paths
    measure(&plain, &NoPlugins, &lines[..lines.len().min(2000)]);
    measure(&with_plugin, &plugins, &lines[..lines.len().min(2000)]);

    let (a, rows_a) = measure(&plain, &NoPlugins, &lines);
    let (b, rows_b) = measure(&with_plugin, &plugins, &lines);
    assert_eq!(rows_a, rows_b, "the classifier adds labels, not rows");
    println!(
        "entries: {n} (user / assistant with Bash tool call / tool result, default rule pack)"
    );
    println!(
        "rules only:                 {a:>9.0} entries/s  ({:.2} µs/entry)",
        1e6 / a
    );
    println!(
        "rules + dangerous_bash.wasm: {b:>9.0} entries/s  ({:.2} µs/entry)",
        1e6 / b
    );
    println!(
        "plugin overhead: {:.2}x the rules-only cost, +{:.2} µs/entry",
        a / b,
        1e6 / b - 1e6 / a
    );

    // Where the plugin time goes: the host's fixed cost per call (a fresh
    // pooled instance, fuel, input copy, output parse) measured with a
    // plugin that does no work, against the real classifier on a real entry.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("noop.wat"), NOOP_WAT).unwrap();
    let (noop, rejected) = PluginsHandle::load(tmp.path(), limits).expect("noop plugin");
    assert!(rejected.is_empty(), "{rejected:?}");
    let input = format!(
        r#"{{"entry": {}, "project": "p", "labels": [], "config": null}}"#,
        lines[1]
    );
    let per_call = |caller: &PluginsHandle, name: &str| {
        let calls = 20_000;
        for _ in 0..1000 {
            caller.call(name, input.as_bytes()).unwrap();
        }
        let t0 = Instant::now();
        for _ in 0..calls {
            caller.call(name, input.as_bytes()).unwrap();
        }
        t0.elapsed().as_secs_f64() * 1e6 / calls as f64
    };
    println!(
        "one call, {} B input: no-op plugin {:.2} µs (host floor), dangerous_bash {:.2} µs",
        input.len(),
        per_call(&noop, "noop"),
        per_call(&plugins, "dangerous_bash")
    );
}

/// The smallest valid plugin: returns `{}` without reading its input.
const NOOP_WAT: &str = r#"(module
  (memory (export "memory") 1)
  (data (i32.const 16) "{}")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "process") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 2))))
"#;
