//! `report` against the real embedded ClickHouse, on a fixture tree that holds
//! every accounting trap (tests/fixtures/usage):
//!
//! * `-home-dev-app/sess-1.jsonl` (cwd /home/dev/app), 2026-01-10 UTC:
//!   - msg_A/req_A, sonnet-4-5, split into two lines repeating one usage:
//!     input 10, output 200, cache write 1,000, cache read 5,000;
//!   - msg_B/req_B, sonnet-4-5, three streamed snapshots, output 5 → 40 → 120
//!     (final), input 3, cache read 6,000;
//!   - msg_C without requestId, opus-4-5, two lines: input 4, output 50, cache
//!     write 2,000 (1,500 of them with a 1-hour TTL), cache read 7,000;
//!   - msg_D/req_D, `claude-mystery-9` (no price): input 100, output 10.
//! * `-home-dev-app/sess-2.jsonl`: a `--resume` of sess-1 repeating msg_A and
//!   msg_B (snapshots in the other order, 120 → 40 → 5), then msg_E/req_E,
//!   sonnet-4-5 on 2026-01-11 01:30 UTC: input 7, output 70, write 700, read 7,000.
//! * `-home-dev-lib/sess-3.jsonl` (cwd /home/dev/lib): a line with neither
//!   message id nor requestId (sonnet-4-5, 12:00: input 1, output 2) and
//!   msg_F/req_F, haiku-4-5 at 23:30 UTC: input 20, output 30, cache read 100.
//!
//! ccusage 20.0.24 on this tree counts msg_C twice (it dedupes only on
//! message id + requestId): 142 / 462 / 5,000 / 25,100 on 2026-01-10.

mod common;

use claude_ingest::config::Config;
use claude_ingest::pipeline::{run, RunOptions};
use claude_ingest::report::{self, ReportArgs, ReportKind};
use claude_ingest::sink::clickhouse::ChClient;
use serde_json::{json, Value};
use std::path::Path;

fn args(kind: ReportKind, tz: &str) -> ReportArgs {
    ReportArgs {
        kind,
        json: true,
        since: None,
        until: None,
        project: None,
        timezone: Some(tz.into()),
        breakdown: false,
    }
}

async fn report_json(client: &ChClient, a: &ReportArgs) -> Value {
    let text = report::run(client, a)
        .await
        .unwrap_or_else(|e| panic!("report {:?}: {e:#}", a.kind));
    serde_json::from_str(&text).expect("report --json prints JSON")
}

/// [input, output, cache creation, cache read, total] of a ccusage-shaped entry.
fn tokens(v: &Value) -> [u64; 5] {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    [
        n("inputTokens"),
        n("outputTokens"),
        n("cacheCreationTokens"),
        n("cacheReadTokens"),
        n("totalTokens"),
    ]
}

fn tokens_of_breakdown(v: &Value) -> [u64; 4] {
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    [
        n("inputTokens"),
        n("outputTokens"),
        n("cacheCreationTokens"),
        n("cacheReadTokens"),
    ]
}

fn day<'a>(report: &'a Value, key: &str, period: &str) -> &'a Value {
    report[key]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["period"] == period))
        .unwrap_or_else(|| panic!("no {period} in {report}"))
}

/// The models whose stored requests have no cost (the rules found no price).
async fn null_cost_models(client: &ChClient) -> Value {
    let rows = client
        .query_json(
            "SELECT DISTINCT model FROM claude_requests FINAL WHERE cost IS NULL ORDER BY model",
            &[],
        )
        .await
        .expect("query");
    rows.iter().map(|r| r["model"].clone()).collect()
}

async fn backfill(cfg: &Config) {
    run(cfg, RunOptions::once()).await.expect("backfill");
}

fn fixture_tree(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("projects");
    for project in ["-home-dev-app", "-home-dev-lib"] {
        let src = common::repo().join("tests/fixtures/usage").join(project);
        std::fs::create_dir_all(root.join(project)).expect("mkdir");
        for f in std::fs::read_dir(&src).expect("fixture dir").flatten() {
            std::fs::copy(f.path(), root.join(project).join(f.file_name())).expect("copy");
        }
    }
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_figures_count_each_request_once_and_survive_reingestion() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fixture_tree(tmp.path());
    let (cfg, client) = common::config("report", &root, &tmp.path().join("state"));
    backfill(&cfg).await;

    let daily = report_json(&client, &args(ReportKind::Daily, "UTC")).await;
    let d10 = day(&daily, "daily", "2026-01-10");
    // msg_A + msg_B(final) + msg_C + msg_D + the id-less line + msg_F
    assert_eq!(tokens(d10), [138, 412, 3000, 18100, 21650], "{d10}");
    assert_eq!(
        tokens(day(&daily, "daily", "2026-01-11")),
        [7, 70, 700, 7000, 7777]
    );
    assert_eq!(tokens(&daily["totals"])[..4], [145, 482, 3700, 25100]);
    assert_eq!(daily["daily"].as_array().map(Vec::len), Some(2));
    assert_eq!(d10["requests"], 6);

    // The unknown model: its tokens are counted, and the report lists as
    // unpriced exactly the models whose stored cost is NULL (what the rules'
    // `cost()` gives a model without a price), with a null cost, never a 0.
    let models = d10["modelBreakdowns"].as_array().expect("breakdowns");
    let mystery = models
        .iter()
        .find(|m| m["modelName"] == "claude-mystery-9")
        .expect("mystery model listed");
    assert_eq!(tokens_of_breakdown(mystery), [100, 10, 0, 0]);
    let null_cost = null_cost_models(&client).await;
    assert_eq!(null_cost, json!(["claude-mystery-9"]));
    assert_eq!(daily["unpricedModels"], null_cost);
    assert_eq!(d10["unpricedModels"], null_cost);
    assert_eq!(mystery["cost"], Value::Null);
    let opus = models
        .iter()
        .find(|m| m["modelName"] == "claude-opus-4-5-20251101")
        .expect("opus listed");
    assert_eq!(tokens_of_breakdown(opus), [4, 50, 2000, 7000]);
    // The day's cost is the sum of its priced models, each request priced once.
    let priced: f64 = models.iter().filter_map(|m| m["cost"].as_f64()).sum();
    let day_cost = d10["totalCost"].as_f64().expect("cost");
    assert!(day_cost > 0.0 && (day_cost - priced).abs() < 1e-12, "{d10}");
    assert_eq!(
        d10["modelsUsed"],
        json!([
            "claude-haiku-4-5-20251001",
            "claude-mystery-9",
            "claude-opus-4-5-20251101",
            "claude-sonnet-4-5-20250929"
        ])
    );

    // A restart on the same state reads nothing new; a re-ingestion from scratch
    // (state lost) inserts every line again: no figure may move.
    backfill(&cfg).await;
    assert_same(
        &daily,
        &report_json(&client, &args(ReportKind::Daily, "UTC")).await,
    );
    let fresh_state = Config {
        state_dir: tmp.path().join("state-2"),
        ..cfg.clone()
    };
    backfill(&fresh_state).await;
    assert_same(
        &daily,
        &report_json(&client, &args(ReportKind::Daily, "UTC")).await,
    );
    client.drop_database().await.ok();
}

/// Equal, up to the last bits of float sums (ClickHouse may add in another order).
fn assert_same(a: &Value, b: &Value) {
    fn norm(v: &Value) -> Value {
        match v {
            Value::Number(n) if n.is_f64() => json!((n.as_f64().unwrap_or(0.0) * 1e9).round()),
            Value::Array(a) => Value::Array(a.iter().map(norm).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), norm(v))).collect())
            }
            other => other.clone(),
        }
    }
    assert_eq!(norm(a), norm(b), "figures changed after re-ingestion");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_filters_sessions_periods_and_blocks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fixture_tree(tmp.path());
    let (cfg, client) = common::config("report_views", &root, &tmp.path().join("state"));
    backfill(&cfg).await;

    // In New York (UTC-5) msg_E (01:30 UTC on the 11th) falls on the 10th.
    let ny = report_json(&client, &args(ReportKind::Daily, "America/New_York")).await;
    assert_eq!(ny["daily"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        tokens(day(&ny, "daily", "2026-01-10")),
        [145, 482, 3700, 25100, 29427]
    );
    assert_eq!(ny["timezone"], "America/New_York");

    let mut a = args(ReportKind::Daily, "UTC");
    a.project = Some("/home/dev/lib".into());
    let lib = report_json(&client, &a).await;
    assert_eq!(tokens(&lib["totals"]), [21, 32, 0, 100, 153]);
    a.project = Some("-home-dev-lib".into());
    assert_eq!(report_json(&client, &a).await["totals"], lib["totals"]);
    // a parent path takes every session that ran below it
    a.project = Some("/home/dev/".into());
    let all = report_json(&client, &a).await;
    assert_eq!(tokens(&all["totals"]), [145, 482, 3700, 25100, 29427]);
    a.project = Some("/home/de".into());
    assert_eq!(tokens(&report_json(&client, &a).await["totals"]), [0; 5]);
    a.project = None;
    a.since = Some("20260111".into());
    let since = report_json(&client, &a).await;
    assert_eq!(tokens(&since["totals"]), [7, 70, 700, 7000, 7777]);

    let weekly = report_json(&client, &args(ReportKind::Weekly, "UTC")).await;
    // 2026-01-10 is a Saturday, the 11th a Sunday: one ISO week, from Monday the 5th
    assert_eq!(
        tokens(day(&weekly, "weekly", "2026-01-05"))[..4],
        [145, 482, 3700, 25100]
    );
    let monthly = report_json(&client, &args(ReportKind::Monthly, "UTC")).await;
    assert_eq!(
        tokens(day(&monthly, "monthly", "2026-01"))[..4],
        [145, 482, 3700, 25100]
    );

    let sessions = report_json(&client, &args(ReportKind::Session, "UTC")).await;
    let list = sessions["session"].as_array().expect("sessions");
    let s3 = list
        .iter()
        .find(|s| s["period"] == "sess-3")
        .expect("sess-3");
    assert_eq!(tokens(s3), [21, 32, 0, 100, 153]);
    assert_eq!(s3["projectPath"], "/home/dev/lib");
    assert_eq!(s3["metadata"]["lastActivity"], "2026-01-10T23:30:00.000Z");
    // msg_A and msg_B are in both app sessions but count once, in one of them
    let app: u64 = list
        .iter()
        .filter(|s| s["project"] == "-home-dev-app")
        .map(|s| tokens(s)[4])
        .sum();
    assert_eq!(app, 29427 - 153);

    let blocks = report_json(&client, &args(ReportKind::Blocks, "UTC")).await;
    let b = blocks["blocks"].as_array().expect("blocks");
    let shape: Vec<(String, bool, u64)> = b
        .iter()
        .map(|b| {
            let id = b["id"].as_str().unwrap_or_default().to_string();
            (
                id,
                b["isGap"].as_bool().unwrap_or(false),
                b["totalTokens"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("2026-01-10T09:00:00.000Z".to_string(), false, 21650 - 150),
            ("gap-2026-01-10T17:00:00.000Z".to_string(), true, 0),
            ("2026-01-10T23:00:00.000Z".to_string(), false, 150 + 7777),
        ]
    );
    assert_eq!(b[0]["entries"], 5);
    assert_eq!(b[0]["unpricedModels"], null_cost_models(&client).await);
    assert_eq!(b[2]["actualEndTime"], "2026-01-11T01:30:00.000Z");

    // The table view names what it could not price.
    let mut t = args(ReportKind::Daily, "UTC");
    t.json = false;
    t.breakdown = true;
    let text = report::run(&client, &t).await.expect("table");
    assert!(text.contains("21,650"), "{text}");
    t.kind = ReportKind::Blocks;
    let text = report::run(&client, &t).await.expect("blocks table");
    assert!(
        text.contains("2026-01-10 17:00 → 2026-01-10 23:30"),
        "{text}"
    );
    client.drop_database().await.ok();
}

/// Rows as the rules write them, straight into the real table: two snapshots
/// of one request (the larger output wins on read) and a request whose model
/// has no price (NULL cost). The report adds the priced cost once and names
/// the unpriced model instead of counting it as free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_costs_are_listed_not_added_and_snapshots_count_once() {
    let client = claude_ingest::sink::testing::fresh_client("report_null").await;
    let row = |msg: &str, model: &str, input: u64, output: u64, cost: Value, offset: u64| {
        json!({"project": "-p", "message_id": msg, "request_id": format!("req-{msg}"), "session_id": "s",
               "timestamp": "2026-02-01T10:00:00.000Z", "model": model, "input_tokens": input,
               "output_tokens": output, "cost": cost, "priced": !cost.is_null(),
               "source_file": "/x/s.jsonl", "source_offset": offset})
    };
    let rows = [
        row("m1", "claude-sonnet-4-5-20250929", 10, 10, json!(0.5), 0),
        row("m1", "claude-sonnet-4-5-20250929", 10, 30, json!(0.7), 100),
        row("m2", "claude-mystery-9", 100, 1, Value::Null, 200),
    ];
    let data: String = rows.iter().map(|r| format!("{r}\n")).collect();
    client
        .insert_json_each_row("claude_requests", data.into(), "report-null-1")
        .await
        .expect("insert");
    let v = report_json(&client, &args(ReportKind::Daily, "UTC")).await;
    let d = day(&v, "daily", "2026-02-01");
    assert_eq!(tokens(d), [110, 31, 0, 0, 141]);
    assert_eq!(d["totalCost"], 0.7);
    assert_eq!(d["unpricedModels"], json!(["claude-mystery-9"]));
    assert_eq!(v["unpricedRequests"], 1);
    let mystery = &d["modelBreakdowns"][1];
    assert_eq!(mystery["modelName"], "claude-mystery-9");
    assert_eq!(mystery["cost"], Value::Null);
    let mut t = args(ReportKind::Daily, "UTC");
    t.json = false;
    let text = report::run(&client, &t).await.expect("table");
    assert!(text.contains("$0.70*"), "{text}");
    assert!(
        text.contains("claude-mystery-9 (1 request, 101 tokens)"),
        "{text}"
    );
    client.drop_database().await.ok();
}

/// The command line on the embedded store, as a user runs it: `backfill`, then
/// `report` (which starts the engine on the same state dir again).
#[test]
fn cli_backfill_then_report_on_the_embedded_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = fixture_tree(tmp.path());
    let state = tmp.path().join("state");
    let cli = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_claude-ingest"))
            .arg("--root")
            .arg(&root)
            .arg("--state-dir")
            .arg(&state)
            .arg("--rules")
            .arg(common::repo().join("rules"))
            .arg("--plugins")
            .arg(tmp.path().join("no-plugins"))
            .args(args)
            .env_remove("CLICKHOUSE_URL")
            .env_remove("CLAUDE_INGEST_CONFIG")
            .env_remove("CLAUDE_INGEST_DATABASE")
            .env("RUST_LOG", "error")
            .output()
            .expect("run claude-ingest");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{args:?}: {out}{err}");
        out
    };
    cli(&["backfill", "--quiet"]);
    let json: Value = serde_json::from_str(&cli(&["report", "daily", "--json", "-z", "UTC"]))
        .expect("JSON on stdout");
    assert_eq!(
        tokens(day(&json, "daily", "2026-01-10")),
        [138, 412, 3000, 18100, 21650]
    );
    let table = cli(&["report", "monthly", "--project", "-home-dev-lib"]);
    assert!(
        table.contains("2026-01") && table.contains("153"),
        "{table}"
    );
}
