//! The command line: check-rules reports file:line, schema prints the DDL,
//! and start-up problems (missing root, bad rules, unreachable ClickHouse,
//! bad config) are clear errors with a non-zero exit.

mod common;

use common::repo;
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_claude-ingest"))
        .args(args)
        .env_remove("CLICKHOUSE_URL")
        .env("RUST_LOG", "error")
        .output()
        .expect("run claude-ingest")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn check_rules_accepts_the_default_pack_and_pinpoints_errors() {
    let rules = repo().join("rules");
    let o = cli(&[
        "--plugins",
        "/nonexistent",
        "check-rules",
        rules.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("table rule messages -> claude_messages"),
        "{}",
        text(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "classify:\n  - label: x\n    when: \"type ==\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.yaml"),
        "tables:\n  - table: t\n    columns:\n      c: \"lookup('nomap', x)\"\n",
    )
    .unwrap();
    let o = cli(&["check-rules", dir.path().to_str().unwrap()]);
    assert!(!o.status.success());
    let out = text(&o);
    assert!(out.contains("a.yaml:3: classify when"), "{out}");
    assert!(out.contains("b.yaml:4: ") && out.contains("nomap"), "{out}");
    assert!(out.contains("2 error(s)"), "{out}");
}

#[test]
fn schema_prints_every_table() {
    let o = cli(&["--database", "analytics", "schema"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("CREATE DATABASE IF NOT EXISTS `analytics`"));
    for t in [
        "claude_messages",
        "claude_tool_usage",
        "claude_file_access",
        "claude_requests",
        "claude_sessions",
        "claude_summaries",
        "claude_dead_letters",
    ] {
        assert!(out.contains(t), "{t} missing");
    }
    let o = cli(&["--database", "analytics", "schema", "--cluster", "team"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("CREATE DATABASE IF NOT EXISTS `analytics` ON CLUSTER `team`"));
    assert!(out.contains("ENGINE = Distributed('team', 'analytics', 'claude_messages_local'"));
    let o = cli(&["--database", "analytics", "schema", "--grants"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("GRANT INSERT ON `analytics`.`claude_messages` TO claude_ingest_writer;"));
}

#[test]
fn start_up_errors_are_clear() {
    let o = cli(&[
        "--root",
        "/no/such/projects",
        "--clickhouse-url",
        "http://127.0.0.1:9",
        "backfill",
        "--quiet",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("root directory /no/such/projects does not exist"),
        "{}",
        text(&o)
    );

    let root = tempfile::tempdir().unwrap();
    let o = cli(&[
        "--root",
        root.path().to_str().unwrap(),
        "--rules",
        repo().join("rules").to_str().unwrap(),
        "--clickhouse-url",
        "http://127.0.0.1:9",
        "--state-dir",
        root.path().join("s").to_str().unwrap(),
        "backfill",
        "--quiet",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("ClickHouse at http://127.0.0.1:9 is unreachable"),
        "{}",
        text(&o)
    );

    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("r.yaml"), "tables: [\n").unwrap();
    let o = cli(&[
        "--root",
        root.path().to_str().unwrap(),
        "--rules",
        bad.path().to_str().unwrap(),
        "backfill",
        "--quiet",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("rules in") && text(&o).contains("r.yaml:"),
        "{}",
        text(&o)
    );

    let cfg = bad.path().join("c.yaml");
    std::fs::write(&cfg, "batch:\n  max_rowz: 1\n").unwrap();
    let o = cli(&["--config", cfg.to_str().unwrap(), "schema"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("c.yaml:2") && text(&o).contains("max_rowz"),
        "{}",
        text(&o)
    );
}

const TRY_FIXTURE: &str =
    "tests/fixtures/try/-home-dev-app/7d1c0f9e-0000-4000-8000-000000000001.jsonl";

/// `try` on a real-shaped prompt line: the default pack's full effect, exactly,
/// with the token masked and named by its rule but never printed.
#[test]
fn try_shows_the_default_packs_effect_on_a_line_without_the_secret() {
    let fixture = repo().join(TRY_FIXTURE);
    let empty = tempfile::tempdir().unwrap();
    let target = format!("{}:1", fixture.display());
    let o = cli(&[
        "--root",
        "/nonexistent",
        "--rules",
        empty.path().to_str().unwrap(),
        "--plugins",
        "/nonexistent",
        "try",
        &target,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).replace(&repo().display().to_string(), "<repo>");
    let expected =
        std::fs::read_to_string(repo().join("tests/fixtures/try/expected-line1.txt")).unwrap();
    assert_eq!(out, expected);
    assert!(
        out.contains("  message.content: github_token x1\n"),
        "{out}"
    );
    assert!(!text(&o).contains("aBcDeFgHiJkLmNoPqRsTuVwXyZ"), "{out}");
}

/// With the example plugins: their calls with time and fuel, their labels and
/// rows, as JSON; a range of lines; a line that cannot be parsed fails the run.
#[test]
fn try_reports_plugin_calls_and_rows_as_json() {
    let dist = repo().join("plugins/dist");
    assert!(
        dist.join("dangerous_bash.wasm").exists() && dist.join("bash_commands.wasm").exists(),
        "example plugins are not built: run plugins/build.sh (scripts/test.sh does)"
    );
    let target = format!("{}:1-2", repo().join(TRY_FIXTURE).display());
    let o = cli(&[
        "--plugins",
        dist.to_str().unwrap(),
        "try",
        "--json",
        &target,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let entries = v.as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["redactions"][0]["by"]["github_token"], 1);
    let e = &entries[1];
    assert_eq!(
        (e["line"].as_u64(), e["outcome"].as_str()),
        (Some(2), Some("routed"))
    );
    let calls = e["plugins"].as_array().unwrap();
    let danger = calls
        .iter()
        .find(|c| c["plugin"] == "dangerous_bash")
        .unwrap();
    assert!(danger["fuel"].as_u64().unwrap() > 1000, "{danger}");
    assert!(
        danger["micros"].as_u64().is_some() && danger["attempts"] == 1,
        "{danger}"
    );
    assert_eq!(danger["output"]["labels"][0], "dangerous_command");
    assert!(e["labels"]
        .as_array()
        .unwrap()
        .contains(&"dangerous_command".into()));
    assert_eq!(e["rows"]["plugin_bash_commands"][0]["program"], "rm");
    assert_eq!(e["rows"]["claude_requests"][0]["output_tokens"], 40);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"type\":\"user\"}\nnot json\n").unwrap();
    let o = cli(&["--plugins", "/nonexistent", "try", bad.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(":2 (offset 16, project "), "{}", text(&o));
    assert!(text(&o).contains("error: parse: "), "{}", text(&o));
    let o = cli(&["try", &format!("{}:9", bad.display())]);
    assert!(
        !o.status.success() && text(&o).contains("has 2 lines; asked for line 9"),
        "{}",
        text(&o)
    );
}
