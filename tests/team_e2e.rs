//! A team's store: several machines (engines with different identities) write
//! into one ClickHouse; privacy settings (metrics only, anonymisation).
//!
//! The two "machines" read the very same files (same root, same project paths,
//! file names, offsets, session ids and uuids): the worst case for key
//! collisions. Each machine's rows must all be there, exactly once, through
//! concurrent runs, re-runs and appends.

mod common;

use claude_ingest::config::Config;
use claude_ingest::pipeline::{run, RunOptions};
use claude_ingest::sink::clickhouse::ChClient;
use common::*;
use std::path::Path;

const TABLES: &[&str] = &[
    "claude_messages",
    "claude_requests",
    "claude_tool_usage",
    "claude_file_access",
    "claude_sessions",
    "claude_dead_letters",
];

fn corpus(root: &Path, exchanges: usize, file_read: bool) {
    for s in 0..2 {
        let sid = format!("sess{s}");
        let mut lines = Vec::new();
        for i in 0..exchanges {
            lines.extend(entry_lines(&sid, i));
        }
        // a file read, so `claude_file_access` (keyed by path) is covered too
        // (not in the privacy tests: a tool call's parameters are content)
        lines.extend(file_read.then(|| {
            serde_json::json!({"type": "assistant", "uuid": format!("{sid}-read"), "sessionId": sid,
            "timestamp": "2026-09-21T14:00:00.000Z", "cwd": "/work/app",
            "message": {"role": "assistant", "model": "claude-sonnet-4-5-20250929",
              "content": [{"type": "tool_use", "id": format!("toolu_{sid}_read"), "name": "Read",
                           "input": {"file_path": "/work/app/src/main.rs"}}]}})
            .to_string()
        }));
        lines.push("{not json at all".to_string());
        append(&root.join(format!("-work-app/{sid}.jsonl")), &lines);
    }
}

fn machine(base: &Config, state: &Path, host: &str) -> Config {
    let mut cfg = base.clone();
    cfg.state_dir = state.to_path_buf();
    cfg.identity.host = Some(host.to_string());
    cfg.identity.user = Some("ann".to_string());
    cfg
}

/// Rows per host of every table (FINAL: what the rows mean, whatever the
/// background merges have done so far).
async fn per_host(ch: &ChClient, host: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for t in TABLES {
        let w = format!("WHERE host = '{host}' AND user_name = 'ann'");
        out.push(count(ch, &format!("SELECT count() FROM {t} FINAL {w}")).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_machines_with_the_same_paths_share_one_store_exactly_once() {
    let root = tempfile::tempdir().unwrap();
    let (sa, sb) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (base, ch) = config("team", root.path(), sa.path());
    corpus(root.path(), 40, true);
    let (a, b) = (
        machine(&base, sa.path(), "box-a"),
        machine(&base, sb.path(), "box-b"),
    );

    // both at once, as two laptops would
    let (ra, rb) = tokio::join!(run(&a, RunOptions::once()), run(&b, RunOptions::once()));
    ra.expect("machine a");
    rb.expect("machine b");
    let first = per_host(&ch, "box-a").await;
    assert!(
        first.iter().all(|n| *n > 0),
        "every table has rows: {first:?}"
    );
    assert_eq!(
        per_host(&ch, "box-b").await,
        first,
        "the same files give each machine the same rows"
    );
    // exactly once per machine: the Replacing tables hold no duplicate row at all
    for t in [
        "claude_messages",
        "claude_file_access",
        "claude_dead_letters",
    ] {
        let dup = count(
            &ch,
            &format!("SELECT count() - (SELECT count() FROM {t} FINAL) FROM {t}"),
        )
        .await;
        assert_eq!(dup, 0, "{t}: duplicates");
    }
    assert_eq!(
        first[5], 2,
        "one dead letter per bad line (two files) per machine"
    );
    let msgs = count(&ch, "SELECT count() FROM claude_messages FINAL").await;
    assert_eq!(msgs, 2 * first[0], "no machine's rows replaced the other's");
    let entries = count(
        &ch,
        "SELECT sum(entries) FROM claude_sessions WHERE host = 'box-a'",
    )
    .await;
    assert_eq!(entries, 2 * (40 * 3 + 1), "folded counts exact per machine");

    // restarts: nothing new, nothing doubled
    run(&a, RunOptions::once()).await.unwrap();
    run(&b, RunOptions::once()).await.unwrap();
    assert_eq!(per_host(&ch, "box-a").await, first);
    assert_eq!(per_host(&ch, "box-b").await, first);

    // an append seen by machine a only so far
    append(
        &root.path().join("-work-app/sess0.jsonl"),
        &entry_lines("sess0", 1000),
    );
    run(&a, RunOptions::once()).await.unwrap();
    let grown = per_host(&ch, "box-a").await;
    assert_eq!(grown[0], first[0] + 3);
    assert_eq!(per_host(&ch, "box-b").await, first);
    run(&b, RunOptions::once()).await.unwrap();
    assert_eq!(per_host(&ch, "box-b").await, grown);
    let tokens = count(
        &ch,
        "SELECT sum(output_tokens) FROM claude_requests FINAL WHERE host = 'box-b'",
    )
    .await;
    assert_eq!(
        tokens,
        2 * 40 * 20 + 20,
        "each machine's requests counted once"
    );
    scoped_tokens_see_their_machine_only(&ch).await;
    ch.drop_database().await.unwrap();
}

/// The team's dashboard over the shared store: a token scoped to one
/// machine reads that machine's figures only, whatever it asks for.
async fn scoped_tokens_see_their_machine_only(ch: &ChClient) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.yaml");
    std::fs::write(
        &file,
        "- {name: lead, token: lead-token-0123456789}\n\
         - {name: b, token: box-b-token-0123456789, scope: {host: box-b}}\n",
    )
    .unwrap();
    let tokens = claude_ingest::api::auth::Tokens::load(Some(&file), None).unwrap();
    let status = std::sync::Arc::new(claude_ingest::sink::status::IngestStatus::new(16));
    let base = claude_ingest::sink::testing::serve_api_with(ch.clone(), status, tokens)
        .await
        .unwrap();
    let output = |token: &'static str, query: &'static str| {
        let base = base.clone();
        async move {
            let v: serde_json::Value = reqwest::Client::new()
                .get(format!("{base}/api/overview{query}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    let all = output("lead-token-0123456789", "").await;
    let b = output("box-b-token-0123456789", "").await;
    let b_asks_for_a = output("box-b-token-0123456789", "?host=box-a").await;
    let a = output("lead-token-0123456789", "?host=box-a").await;
    let out = |v: &serde_json::Value| v["totals"]["output_tokens"].as_u64();
    // both machines read the same files: each holds half the team's figures
    let machine = 2 * 40 * 20 + 20;
    assert_eq!(out(&all), Some(2 * machine), "{all}");
    assert_eq!(out(&a), Some(machine), "{a}");
    assert_eq!(out(&b), Some(machine), "{b}");
    assert_eq!(b["filters"]["host"], "box-b");
    assert_eq!(
        b_asks_for_a["error"], "this token may only read host `box-b`",
        "a scoped token cannot read another machine's rows"
    );
}

/// Every value of every column of every table, as text.
async fn everything(ch: &ChClient) -> String {
    let mut out = String::new();
    for t in ch.table_names().await.unwrap() {
        if t.ends_with("_mv") {
            continue;
        }
        let bytes = ch
            .query_bytes(&format!("SELECT * FROM `{t}`"), &[], "TabSeparatedRaw")
            .await
            .unwrap();
        out.push_str(&String::from_utf8_lossy(&bytes));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_only_stores_counts_but_no_content() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (mut cfg, ch) = config("metrics_only", root.path(), state.path());
    cfg.privacy.metrics_only = true;
    corpus(root.path(), 10, false);
    run(&cfg, RunOptions::once()).await.unwrap();
    let all = everything(&ch).await;
    for text in [
        "please run the tests",
        "Running them.",
        "cargo test",
        "not json at all",
    ] {
        assert!(!all.contains(text), "`{text}` was stored");
    }
    let content = count(
        &ch,
        "SELECT countIf(content != '' OR content_preview != '') FROM claude_messages",
    )
    .await;
    assert_eq!(content, 0);
    assert!(count(&ch, "SELECT sum(content_length) FROM claude_messages").await > 0);
    assert_eq!(
        count(&ch, "SELECT sum(output_tokens) FROM claude_requests FINAL").await,
        2 * 10 * 20
    );
    assert_eq!(
        count(
            &ch,
            "SELECT count() FROM claude_tool_usage FINAL WHERE tool_name = 'Bash'"
        )
        .await,
        20
    );
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_dead_letters").await,
        2
    );
    ch.drop_database().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymised_columns_are_keyed_hashes_everywhere() {
    let root = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let (mut cfg, ch) = config("anonymize", root.path(), state.path());
    let key = state.path().join("anon.key");
    std::fs::write(&key, "a team secret of enough length\n").unwrap();
    cfg.privacy.anonymize = ["project", "project_path", "source_file", "user_name"]
        .map(String::from)
        .to_vec();
    cfg.privacy.key_file = Some(key);
    cfg.identity.user = Some("ann-the-user".into());
    corpus(root.path(), 10, false);
    run(&cfg, RunOptions::once()).await.unwrap();
    let all = everything(&ch).await;
    for text in ["/work/app", "-work-app", "ann-the-user", "sess0.jsonl"] {
        assert!(!all.contains(text), "`{text}` was stored in clear");
    }
    let p = claude_ingest::sink::privacy::Privacy::new(
        false,
        vec!["project".into()],
        b"a team secret of enough length",
    )
    .unwrap();
    let want = p.hash("ann-the-user");
    let users = ch
        .query_json("SELECT DISTINCT user_name AS u FROM claude_messages", &[])
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(
        users[0]["u"],
        want.as_str(),
        "the same keyed hash in every row"
    );
    // keys still work on hashes: a re-run adds nothing
    let before = count(&ch, "SELECT count() FROM claude_messages").await;
    run(&cfg, RunOptions::once()).await.unwrap();
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_messages").await,
        before
    );
    assert!(count(&ch, "SELECT sum(output_tokens) FROM claude_requests FINAL").await > 0);
    ch.drop_database().await.unwrap();
}
