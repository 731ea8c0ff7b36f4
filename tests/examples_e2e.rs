//! The example corpus through the whole pipeline into the real ClickHouse:
//! every table's figures must equal what the corpus generator recorded in
//! examples/EXPECTED.json, no secret may be stored, and a second run adds nothing.

mod common;

use claude_ingest::pipeline::{run, RunOptions};
use common::*;
use serde_json::Value;

fn expected() -> Value {
    let text =
        std::fs::read_to_string(repo().join("examples/EXPECTED.json")).expect("EXPECTED.json");
    serde_json::from_str(&text).expect("valid json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_land_exactly_and_idempotently() {
    let exp = expected();
    let n = |k: &str| exp[k].as_u64().unwrap_or_else(|| panic!("EXPECTED.{k}"));
    let state = tempfile::tempdir().unwrap();
    let (cfg, ch) = config(
        "examples",
        &repo().join("examples/claude-projects"),
        state.path(),
    );

    let summary = run(&cfg, RunOptions::once()).await.expect("backfill");
    assert_eq!(summary.lines, n("lines"), "{summary}");
    assert_eq!(summary.files, n("files"));
    assert_eq!(summary.dead_letters, n("malformed_lines"));

    // claude_messages: one row per user/assistant/system line, nothing else
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_messages").await,
        n("message_lines")
    );
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_messages FINAL").await,
        n("message_lines")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(entry_type = 'user') FROM claude_messages"
        )
        .await,
        n("user")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(entry_type = 'assistant') FROM claude_messages"
        )
        .await,
        n("assistant")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(entry_type = 'system') FROM claude_messages"
        )
        .await,
        n("system")
    );
    assert_eq!(
        count(&ch, "SELECT countIf(is_sidechain) FROM claude_messages").await,
        n("sidechain_entries")
    );
    assert_eq!(
        count(&ch, "SELECT sum(input_tokens) FROM claude_messages").await,
        n("input_tokens")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT sum(cache_read_input_tokens) FROM claude_messages"
        )
        .await,
        n("cache_read_input_tokens")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(length(content_preview) > 500) FROM claude_messages"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(content_hash != lower(hex(SHA256(content)))) FROM claude_messages"
        )
        .await,
        0
    );
    let cost = scalar(&ch, "SELECT sum(cost_estimate) FROM claude_messages")
        .await
        .as_f64()
        .unwrap();
    assert!(
        (cost - exp["cost"].as_f64().unwrap()).abs() < 1e-6,
        "cost {cost} vs {}",
        exp["cost"]
    );

    // tool usage: every call paired with its result
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_tool_usage FINAL").await,
        n("tool_uses")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(has_result = 1 AND tool_name != '') FROM claude_tool_usage FINAL"
        )
        .await,
        n("tool_results")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(is_error = 1) FROM claude_tool_usage FINAL"
        )
        .await,
        n("tool_errors")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(tool_name = 'Bash') FROM claude_tool_usage FINAL"
        )
        .await,
        n("bash_calls")
    );
    assert_eq!(
        count(&ch, "SELECT countIf(has(labels, 'dangerous_command') AND tool_name = 'Bash') FROM claude_tool_usage FINAL").await,
        n("dangerous_commands")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(tool_category = 'mcp') FROM claude_tool_usage FINAL"
        )
        .await,
        1
    );

    // file access
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_file_access FINAL").await,
        n("file_accesses")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(is_sensitive) FROM claude_file_access FINAL"
        )
        .await,
        n("sensitive_file_accesses")
    );

    // context analysis
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_context_analysis FINAL").await,
        n("usage_entries")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(context_window = 200000) FROM claude_context_analysis"
        )
        .await,
        n("usage_entries")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT sum(total_context_tokens) FROM claude_context_analysis"
        )
        .await,
        n("input_tokens") + n("cache_creation_input_tokens") + n("cache_read_input_tokens")
    );

    // sessions fold to one row each, with the right sums
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_sessions FINAL").await,
        n("session_count")
    );
    assert_eq!(
        count(&ch, "SELECT uniqExact(project) FROM claude_sessions FINAL").await,
        n("project_count")
    );
    assert_eq!(
        count(&ch, "SELECT sum(output_tokens) FROM claude_sessions FINAL").await,
        n("output_tokens")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT sum(user_messages + assistant_messages) FROM claude_sessions FINAL"
        )
        .await,
        n("user") + n("assistant")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(summary != '') FROM claude_sessions FINAL"
        )
        .await,
        n("summary_lines")
    );
    assert_eq!(count(&ch, "SELECT countIf(first_timestamp IS NULL OR first_timestamp < '2026-01-01') FROM claude_sessions FINAL").await, 0);
    let scost = scalar(&ch, "SELECT sum(total_cost) FROM claude_sessions FINAL")
        .await
        .as_f64()
        .unwrap();
    assert!((scost - cost).abs() < 1e-6);

    // the materialized view saw every message exactly once
    assert_eq!(
        count(&ch, "SELECT sum(messages) FROM daily_session_summary").await,
        n("message_lines")
    );
    assert_eq!(
        count(&ch, "SELECT sum(s) FROM (SELECT uniqMerge(sessions) AS s FROM daily_session_summary GROUP BY date, project)").await,
        count(&ch, "SELECT count() FROM (SELECT DISTINCT toDate(timestamp), project, session_id FROM claude_messages)").await
    );

    // dead letters carry the reason and the (redacted) raw line
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_dead_letters").await,
        n("malformed_lines")
    );
    assert_eq!(count(&ch, "SELECT countIf(stage = 'parse' AND error != '' AND source_file != '') FROM claude_dead_letters").await, n("malformed_lines"));
    assert_eq!(count(&ch, "SELECT countIf(error LIKE 'invalid UTF-8%' AND raw_base64 != '') FROM claude_dead_letters").await, 2);

    // no secret anywhere, in any table
    let tables = ch
        .query_json("SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT IN ('MaterializedView')", &[])
        .await
        .unwrap();
    let secrets: Vec<String> = exp["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let mut redacted = 0;
    for t in tables {
        let name = t["name"].as_str().unwrap().to_string();
        let dump = String::from_utf8_lossy(
            &ch.query_bytes(&format!("SELECT * FROM `{name}`"), &[], "JSONEachRow")
                .await
                .unwrap(),
        )
        .into_owned();
        for s in &secrets {
            assert!(!dump.contains(s.as_str()), "secret {s} stored in {name}");
        }
        redacted += dump.matches("[REDACTED:").count();
    }
    assert!(redacted >= secrets.len(), "redaction markers: {redacted}");
    assert!(
        count(
            &ch,
            "SELECT countIf(contains_sensitive_data) FROM claude_messages"
        )
        .await
            >= 4
    );

    // a second run reads nothing new and stores nothing twice
    let again = run(&cfg, RunOptions::once())
        .await
        .expect("second backfill");
    assert_eq!(again.lines, 0, "{again}");
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_messages").await,
        n("message_lines")
    );
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_dead_letters").await,
        n("malformed_lines")
    );
    ch.drop_database().await.unwrap();
}
