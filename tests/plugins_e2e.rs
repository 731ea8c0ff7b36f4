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
    std::fs::create_dir_all(&rules).unwrap();
    for f in [
        "00-reference.yaml",
        "10-redact.yaml",
        "20-classify.yaml",
        "30-tables.yaml",
    ] {
        std::fs::copy(repo().join("rules").join(f), rules.join(f)).unwrap();
    }
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
