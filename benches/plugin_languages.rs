//! Per-call cost and memory of one classifier per plugin kind: core ABI (C
//! `dangerous_bash.wasm`, and a no-op WAT module as the host's floor) and
//! components of the WIT interface written in Python (componentize-py) and
//! JavaScript (componentize-js), the `plugin new` templates. For components
//! it also prints the start-up a worker pays once (compile from wasmtime's
//! cache, first call = instantiation + call) against the warm per-call cost:
//! the figures behind "instantiate once per worker and reuse".
//!
//! `cargo bench --bench plugin_languages` (needs `plugins/build.sh`; builds the
//! Python and JavaScript templates under target/plugin-bench with their own
//! build.sh, which installs the guest toolchains the first time; env
//! BENCH_CALLS, default 2000).

use claude_ingest::ops::plugin_sdk::{scaffold, Lang};
use claude_ingest::plugins::api::PluginCaller;
use claude_ingest::plugins::{PluginHost, PluginLimits};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

const NOOP: &str = r#"(module (memory (export "memory") 1)
  (data (i32.const 16) "{}")
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "process") (param i32 i32) (result i64) (i64.or (i64.shl (i64.const 16) (i64.const 32)) (i64.const 2))))"#;

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

/// The input the rule engine sends for an assistant entry with a Bash call.
fn input() -> Vec<u8> {
    json!({"entry": {"type": "assistant", "uuid": "a1", "sessionId": "s", "timestamp": "2026-10-01T10:00:01.000Z",
        "message": {"role": "assistant", "model": "claude-sonnet-4-5-20250929",
          "content": [{"type": "text", "text": "Running:\n```bash\ncargo test\n```"},
                      {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "rm -rf target"}}]}},
        "project": "p", "labels": [], "config": null})
    .to_string()
    .into_bytes()
}

/// Scaffold and build a template plugin under target/plugin-bench (kept
/// between runs; its build.sh skips an up-to-date build).
fn template(repo: &Path, name: &str, lang: Lang) -> PathBuf {
    let dir = repo.join("target/plugin-bench").join(name);
    if !dir.exists() {
        scaffold(name, lang, &dir).expect("scaffold");
    }
    let ok = std::process::Command::new("bash")
        .arg(dir.join("build.sh"))
        .status()
        .expect("build.sh")
        .success();
    assert!(ok, "{name}/build.sh failed");
    dir.join("dist")
}

/// One plugin's figures, printed as a table row.
fn bench(label: &str, dir: &Path, name: &str, calls: usize) {
    let limits = PluginLimits::default();
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let (host, rejected) = PluginHost::load_dir(dir, limits).expect("load");
    assert!(rejected.is_empty(), "{rejected:?}");
    let load = t0.elapsed();
    let input = input();
    let t1 = Instant::now();
    let (first, _) = host.call_measured(name, &input);
    let first_call = t1.elapsed();
    first.expect("first call");
    let mut times = Vec::with_capacity(calls);
    let mut cost = None;
    for _ in 0..calls {
        let t = Instant::now();
        let (out, c) = host.call_measured(name, &input);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        out.expect("call");
        cost = c;
    }
    times.sort_by(f64::total_cmp);
    let cost = cost.unwrap_or_default();
    println!(
        "{label:<24} {:>9.1} {:>9.1} {:>9.1} {:>11} {:>10} {:>10.1} {:>11}",
        times[times.len() / 2],
        times[times.len() * 95 / 100],
        first_call.as_secs_f64() * 1e3,
        cost.fuel,
        cost.memory_peak / 1024,
        load.as_secs_f64() * 1e3,
        rss_kib().saturating_sub(rss0),
    );
}

fn main() {
    let calls: usize = std::env::var("BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let core = tempfile::tempdir().expect("tempdir");
    std::fs::write(core.path().join("noop.wat"), NOOP).expect("write");
    let c_dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        repo.join("plugins/dist/dangerous_bash.wasm"),
        c_dir.path().join("dangerous_bash.wasm"),
    )
    .expect("run plugins/build.sh first (no plugins/dist/dangerous_bash.wasm)");
    let py = template(repo, "bench_py", Lang::Python);
    let js = template(repo, "bench_js", Lang::Js);
    println!(
        "{calls} calls each on one assistant entry ({} bytes of input), after one first call",
        input().len()
    );
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>11}",
        "plugin", "p50 µs", "p95 µs", "1st ms", "fuel/call", "mem KiB", "load ms", "RSS +KiB"
    );
    bench("core ABI: no-op (WAT)", core.path(), "noop", calls);
    bench(
        "core ABI: C classifier",
        c_dir.path(),
        "dangerous_bash",
        calls,
    );
    bench("component: Python", &py, "bench_py", calls);
    bench("component: JavaScript", &js, "bench_js", calls);
    println!(
        "(core modules get a fresh instance per call; components one instance per thread, reused:\n \
         `1st ms` is a worker's start-up, `load ms` the compile, from wasmtime's cache after the first run)"
    );
}
