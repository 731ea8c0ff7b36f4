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
