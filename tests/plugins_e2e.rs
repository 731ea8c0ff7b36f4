//! WASM plugins through the real pipeline into the real ClickHouse:
//! * the example plugins (built by plugins/build.sh) on the example corpus:
//!   e-mails masked, dangerous commands labelled, rows in a plugin-defined table;
//! * a user-written classifier dropped into the plugins dir of a RUNNING engine,
//!   with a rule pointing at it, labels the next entries; a broken replacement
//!   is rejected and the working version keeps running;
//! * a trapping plugin dead-letters only the entries it was called on.

mod common;

use claude_ingest::pipeline::{run, RunOptions};
use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn opts(
    follow: bool,
) -> (
    RunOptions,
    Arc<AtomicBool>,
    tokio::sync::oneshot::Receiver<Arc<claude_ingest::sink::status::IngestStatus>>,
) {
    let flag = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::oneshot::channel();
    (
        RunOptions {
            follow,
            shutdown: flag.clone(),
            status_out: Some(tx),
            ..RunOptions::once()
        },
        flag,
        rx,
    )
}

/// The classifier from plugins/README.md's walk-through, in WAT: labels entries
/// whose JSON mentions "deploy".
const DEPLOY_TAGGER: &str = r#"
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "{\"labels\":[\"mentions_deploy\"]}")
  (data (i32.const 64) "{}")
  (global $heap (mut i32) (i32.const 1024))
  (func (export "alloc") (param $len i32) (result i32)
    (local $need i32)
    (local.set $need (i32.shr_u (i32.add (i32.add (global.get $heap) (local.get $len)) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $need) (memory.size))
      (then (if (i32.eq (memory.grow (i32.sub (local.get $need) (memory.size))) (i32.const -1))
        (then (return (i32.const 0))))))
    (global.get $heap))
  (func (export "process") (param $p i32) (param $n i32) (result i64)
    (local $i i32) (local $end i32)
    (local.set $end (i32.sub (i32.add (local.get $p) (local.get $n)) (i32.const 5)))
    (local.set $i (local.get $p))
    (block $done
      (loop $scan
        (br_if $done (i32.ge_s (local.get $i) (local.get $end)))
        (if (i32.and
              (i32.and (i32.eq (i32.load8_u (local.get $i)) (i32.const 100))                       ;; d
                       (i32.eq (i32.load8_u offset=1 (local.get $i)) (i32.const 101)))              ;; e
              (i32.and (i32.and (i32.eq (i32.load8_u offset=2 (local.get $i)) (i32.const 112))     ;; p
                                (i32.eq (i32.load8_u offset=3 (local.get $i)) (i32.const 108)))    ;; l
                       (i32.and (i32.eq (i32.load8_u offset=4 (local.get $i)) (i32.const 111))     ;; o
                                (i32.eq (i32.load8_u offset=5 (local.get $i)) (i32.const 121)))))  ;; y
          (then (return (i64.const 30))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 2))))
"#;

const TRAPPER: &str = r#"(module (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "process") (param i32 i32) (result i64) unreachable))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_plugins_on_the_example_corpus() {
    let dist = repo().join("plugins/dist");
    for p in ["email_mask", "dangerous_bash", "bash_commands"] {
        assert!(
            dist.join(format!("{p}.wasm")).exists() || dist.join(format!("{p}.wat")).exists(),
            "plugin {p} is not built: run plugins/build.sh (scripts/test.sh does)"
        );
    }
    let exp: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("examples/EXPECTED.json")).unwrap(),
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let (mut cfg, ch) = config(
        "plugins_examples",
        &repo().join("examples/claude-projects"),
        state.path(),
    );
    cfg.plugins_dir = dist;
    let (o, _, _) = opts(false);
    let summary = run(&cfg, o).await.expect("backfill with plugins");
    assert_eq!(
        summary.dead_letters,
        exp["malformed_lines"].as_u64().unwrap(),
        "{summary}"
    );

    // redactor: the address is gone from every table
    let email = exp["email"].as_str().unwrap();
    for t in [
        "claude_messages",
        "claude_tool_usage",
        "plugin_bash_commands",
        "claude_sessions",
    ] {
        let dump = String::from_utf8(
            ch.query_bytes(&format!("SELECT * FROM {t}"), &[], "JSONEachRow")
                .await
                .unwrap(),
        )
        .unwrap();
        assert!(!dump.contains(email), "{email} stored in {t}");
    }
    assert!(
        count(
            &ch,
            "SELECT countIf(content LIKE '%[REDACTED:email_mask]%') FROM claude_messages"
        )
        .await
            >= 1
    );
    assert!(
        count(
            &ch,
            "SELECT countIf(has(labels, 'secret:email_mask')) FROM claude_messages"
        )
        .await
            >= 1
    );
    // classifier: its labels reach ClickHouse
    let dangerous = count(
        &ch,
        "SELECT countIf(has(labels, 'dangerous_command')) FROM claude_messages",
    )
    .await;
    assert_eq!(dangerous, exp["dangerous_commands"].as_u64().unwrap());
    // mapper: one row per Bash call in its own table, created from the DDL it ships
    assert_eq!(
        count(&ch, "SELECT count() FROM plugin_bash_commands FINAL").await,
        exp["bash_calls"].as_u64().unwrap()
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(dangerous = 1) FROM plugin_bash_commands FINAL"
        )
        .await,
        exp["dangerous_commands"].as_u64().unwrap()
    );
    ch.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_plugin_dropped_into_a_running_engine() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let plugins = state.path().join("plugins");
    let rules = state.path().join("rules");
    std::fs::create_dir_all(&plugins).unwrap();
    copy_default_rules(&rules);
    std::fs::create_dir_all(root.path().join("p")).unwrap();
    let (mut cfg, ch) = config("plugins_live", root.path(), state.path());
    cfg.plugins_dir = plugins.clone();
    cfg.rules_dir = rules.clone();
    cfg.batch.max_delay_ms = 50;
    let (o, flag, status) = opts(true);
    let task = tokio::spawn(async move { run(&cfg, o).await });
    let status = status.await.unwrap();
    let t0 = Instant::now();
    while !status.caught_up.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let file = root.path().join("p/s.jsonl");
    let deploy = |i: usize| {
        serde_json::json!({"type": "user", "uuid": format!("d{i}"), "sessionId": "s", "timestamp": "2026-10-02T10:00:00.000Z",
            "message": {"role": "user", "content": format!("please deploy build {i}")}}).to_string()
    };
    let labelled = |i: usize| {
        format!("SELECT count() FROM claude_messages WHERE uuid = 'd{i}' AND has(labels, 'mentions_deploy')")
    };
    let stored = |i: usize| format!("SELECT count() FROM claude_messages WHERE uuid = 'd{i}'");

    append(&file, &[deploy(0)]);
    assert_eq!(
        wait_count(&ch, &stored(0), 1, Duration::from_secs(10)).await,
        1
    );
    assert_eq!(count(&ch, &labelled(0)).await, 0);

    // the user's plugin and the rule that calls it, dropped in while running
    std::fs::write(plugins.join("deploy_tagger.wat"), DEPLOY_TAGGER).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::fs::write(
        rules.join("70-deploy.yaml"),
        "plugins:\n  - plugin: deploy_tagger\n    when: \"type == 'user'\"\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    append(&file, &[deploy(1)]);
    assert_eq!(
        wait_count(&ch, &labelled(1), 1, Duration::from_secs(10)).await,
        1,
        "plugin label missing"
    );

    // a broken replacement is rejected; the working version keeps running
    std::fs::write(plugins.join("deploy_tagger.wat"), "(module (func $broken").unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    append(&file, &[deploy(2)]);
    assert_eq!(
        wait_count(&ch, &labelled(2), 1, Duration::from_secs(10)).await,
        1,
        "previous plugin must keep running"
    );

    // a trapping plugin: only the entries it sees are dead-lettered
    std::fs::write(plugins.join("trapper.wat"), TRAPPER).unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    std::fs::write(
        rules.join("80-trap.yaml"),
        "plugins:\n  - plugin: trapper\n    when: \"message.content =~ 'TRAP'\"\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    append(&file, &[
        serde_json::json!({"type": "user", "uuid": "t1", "sessionId": "s", "timestamp": "2026-10-02T10:00:00.000Z", "message": {"role": "user", "content": "TRAP me"}}).to_string(),
        deploy(3),
    ]);
    assert_eq!(
        wait_count(&ch, &labelled(3), 1, Duration::from_secs(10)).await,
        1
    );
    assert_eq!(
        wait_count(&ch, "SELECT count() FROM claude_dead_letters WHERE stage = 'rules' AND error LIKE '%trapper%'", 1, Duration::from_secs(10)).await,
        1
    );
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_messages WHERE uuid = 't1'").await,
        0
    );

    flag.store(true, Ordering::SeqCst);
    task.await.unwrap().unwrap();
    ch.drop_database().await.unwrap();
}

/// An assistant reply with a 256 KB markdown text block and a Bash call, and a
/// 1.5 MB user tool result (Claude Code stores the output twice: `content` and
/// `toolUseResult.stdout`), as one JSONL line each.
fn big_lines(tag: &str) -> (String, String) {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 256 * 1024 {
        text.push_str(&format!(
            "Step {i}: `parse_line` rejects \"bad\" input.\n```rust\nfn f{i}() -> u32 {{ {i} }}\n```\n"
        ));
        i += 1;
    }
    let assistant = serde_json::json!({"type": "assistant", "sessionId": "s", "uuid": format!("{tag}-a-big"), "timestamp": "2026-10-01T10:00:00.000Z",
        "message": {"role": "assistant", "model": "claude-sonnet-4-5-20250929", "content": [
            {"type": "text", "text": text},
            {"type": "tool_use", "id": format!("toolu_{tag}_big"), "name": "Bash", "input": {"command": "cargo test 2>&1 | tail -5"}}]}});
    let mut out = String::new();
    while out.len() < 750 * 1024 {
        out.push_str(&format!(
            "src/lib.rs:{i}: let v = map.get(\"key_{i}\")?; // ask ops@acmemail.io\n"
        ));
        i += 1;
    }
    let user = serde_json::json!({"type": "user", "sessionId": "s", "uuid": format!("{tag}-u-big"), "timestamp": "2026-10-01T10:00:01.000Z",
        "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("toolu_{tag}_big"), "content": out}]},
        "toolUseResult": {"stdout": out, "stderr": "", "interrupted": false, "isImage": false}});
    (assistant.to_string(), user.to_string())
}

/// Keeps both cores busy until dropped (a loaded machine).
struct CpuHogs(Arc<AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl CpuHogs {
    fn start(n: usize) -> CpuHogs {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        CpuHogs(stop, threads)
    }
}

impl Drop for CpuHogs {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        for t in self.1.drain(..) {
            let _ = t.join();
        }
    }
}

/// Issue 10: a 256 KB assistant text block and a 1.5 MB user entry go through
/// the default rule pack WITH the example plugins (default `plugins:` limits)
/// and land in ClickHouse, and ordinary lines are not dead-lettered while both
/// cores are busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_entries_pass_the_example_plugins_on_a_busy_machine() {
    let dist = repo().join("plugins/dist");
    for p in [
        "email_mask.wat",
        "dangerous_bash.wasm",
        "bash_commands.wasm",
    ] {
        assert!(
            dist.join(p).exists(),
            "{p} is not built: run plugins/build.sh"
        );
    }
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (mut cfg, ch) = config("plugins_large", root.path(), state.path());
    cfg.plugins_dir = dist;
    let (assistant, user) = big_lines("L");
    assert!(assistant.len() > 256 * 1024 && user.len() > 1_500_000);
    let mut lines = Vec::new();
    for n in 0..100 {
        lines.extend(entry_lines("s", n));
    }
    lines.push(assistant);
    lines.push(user);
    for n in 100..150 {
        lines.extend(entry_lines("s", n));
    }
    append(&root.path().join("p/s.jsonl"), &lines);

    let hogs = CpuHogs::start(2);
    let summary = run(&cfg, RunOptions::once()).await.expect("backfill");
    drop(hogs);
    assert_eq!(summary.dead_letters, 0, "{summary}");
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_dead_letters").await,
        0
    );
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM claude_messages FINAL WHERE uuid IN ('L-a-big', 'L-u-big')"
        )
        .await,
        2
    );
    // The plugins really ran on them: redactor, classifier and mapper.
    assert_eq!(
        count(&ch, "SELECT countIf(has(labels, 'secret:email_mask')) FROM claude_messages FINAL WHERE uuid = 'L-u-big'").await,
        1
    );
    assert_eq!(
        count(&ch, "SELECT countIf(has(labels, 'code_block:rust')) FROM claude_messages FINAL WHERE uuid = 'L-a-big'").await,
        1
    );
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM plugin_bash_commands FINAL WHERE tool_use_id = 'toolu_L_big'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM claude_messages FINAL WHERE uuid LIKE 's-u-%'"
        )
        .await,
        150
    );
    ch.drop_database().await.unwrap();
}

/// Issue 10: a dead letter of a line larger than the 1 MiB its `raw_line`
/// keeps still points at the whole line: `source_file` + `source_offset` +
/// `line_length` re-read it byte for byte, which is what a replay uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_of_a_large_line_points_at_the_whole_line() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let plugins = state.path().join("plugins");
    let rules = state.path().join("rules");
    std::fs::create_dir_all(&plugins).unwrap();
    copy_default_rules(&rules);
    std::fs::write(plugins.join("trapper.wat"), TRAPPER).unwrap();
    std::fs::write(
        rules.join("80-trap.yaml"),
        "plugins:\n  - plugin: trapper\n    when: \"uuid == 'R-u-big'\"\n",
    )
    .unwrap();
    let (mut cfg, ch) = config("plugins_replay", root.path(), state.path());
    cfg.plugins_dir = plugins;
    cfg.rules_dir = rules;
    let (_, user) = big_lines("R");
    let file = root.path().join("p/s.jsonl");
    append(
        &file,
        &[
            entry_lines("s", 0)[0].clone(),
            user.clone(),
            entry_lines("s", 1)[0].clone(),
        ],
    );

    let summary = run(&cfg, RunOptions::once()).await.expect("backfill");
    assert_eq!(summary.dead_letters, 1, "{summary}");
    let rows = ch
        .query_json(
            "SELECT source_file, toString(source_offset) AS o, toString(line_length) AS l, raw_truncated FROM claude_dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    let path = row["source_file"].as_str().unwrap();
    let offset: u64 = row["o"].as_str().unwrap().parse().unwrap();
    let length: usize = row["l"].as_str().unwrap().parse().unwrap();
    assert_eq!(std::path::Path::new(path), file.as_path());
    assert_eq!(length, user.len());
    // raw_line alone cannot replay it (cut at 1 MiB) ...
    assert_eq!(row["raw_truncated"], serde_json::json!(true), "{row:?}");
    // ... but the pointer can.
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; length];
    f.read_exact(&mut buf).unwrap();
    assert!(
        buf == user.as_bytes(),
        "the bytes at the dead letter's offset are not the line"
    );
    ch.drop_database().await.unwrap();
}
