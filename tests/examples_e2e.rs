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
    // what each line is: typed prompts, tool results, subagent prompts, interruptions
    for (kind, key) in [
        ("prompt", "prompts"),
        ("tool_result", "tool_results"),
        ("subagent_prompt", "subagent_prompts"),
        ("interrupt", "interruptions"),
        ("response", "assistant"),
    ] {
        let sql = format!("SELECT countIf(message_kind = '{kind}') FROM claude_messages");
        assert_eq!(count(&ch, &sql).await, n(key), "message_kind {kind}");
    }
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(message_kind = '' OR timestamp_inferred) FROM claude_messages"
        )
        .await,
        0
    );

    // usage: one row per API request (each example request is one line)
    for key in [
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ] {
        let sql = format!("SELECT sum({key}) FROM claude_requests FINAL");
        assert_eq!(count(&ch, &sql).await, n(key), "{key}");
    }
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_requests FINAL").await,
        n("usage_entries")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(NOT priced OR cost IS NULL) FROM claude_requests"
        )
        .await,
        0
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
    let cost = scalar(&ch, "SELECT sum(cost) FROM claude_requests FINAL")
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

    // context: every request knows its model's window
    assert_eq!(
        count(
            &ch,
            "SELECT countIf(context_window = 200000) FROM claude_requests FINAL"
        )
        .await,
        n("usage_entries")
    );
    assert_eq!(
        count(
            &ch,
            "SELECT sum(total_context_tokens) FROM claude_requests FINAL"
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
        count(
            &ch,
            "SELECT sum(user_lines + assistant_lines) FROM claude_sessions FINAL"
        )
        .await,
        n("user") + n("assistant")
    );
    assert_eq!(
        count(&ch, "SELECT sum(prompts) FROM claude_sessions FINAL").await,
        n("prompts")
    );
    assert_eq!(
        count(&ch, "SELECT sum(tool_results) FROM claude_sessions FINAL").await,
        n("tool_results")
    );
    assert_eq!(count(&ch, "SELECT countIf(first_timestamp IS NULL OR first_timestamp < '2026-01-01') FROM claude_sessions FINAL").await, 0);

    // the summary at the top of the second session describes the first one (leafUuid)
    let summaries = ch
        .query_json(claude_ingest::api::SESSION_SUMMARIES, &[])
        .await
        .expect("summaries");
    assert_eq!(summaries.len() as u64, n("summary_lines"));
    assert_eq!(
        format!(
            "{}/{}",
            summaries[0]["project"].as_str().unwrap(),
            summaries[0]["session_id"].as_str().unwrap()
        ),
        exp["summary_session"].as_str().unwrap()
    );

    // the per-day view saw every message exactly once
    assert_eq!(
        count(&ch, "SELECT sum(messages) FROM claude_daily_activity").await,
        n("message_lines")
    );
    assert_eq!(
        count(&ch, "SELECT sum(prompts) FROM claude_daily_activity").await,
        n("prompts")
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
