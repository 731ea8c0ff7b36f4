//! Schema evolution against the real embedded ClickHouse: a database made by
//! the previous release's DDL (`tests/fixtures/schema_v1`, main as of the
//! commit before versioning) is upgraded in place to exactly the shape a
//! fresh database gets, keeping its rows; retention TTLs are applied, changed,
//! removed, and really delete expired rows; the cluster and grants scripts
//! parse with ClickHouse's own parser (chDB has no Keeper and no access
//! management, so they cannot be executed here).

mod common;

use claude_ingest::sink::clickhouse::{split_statements, ChClient};
use claude_ingest::sink::identity::Identity;
use claude_ingest::sink::migrations::{latest, migrate};
use claude_ingest::sink::{cluster, grants, retention, testing};
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

fn client(prefix: &str) -> ChClient {
    ChClient::new(testing::settings(prefix)).expect("client")
}

/// Create the previous release's schema, as that release did.
async fn create_v1(ch: &ChClient) {
    ch.create_database().await.unwrap();
    let dir = repo().join("tests/fixtures/schema_v1");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for st in split_statements(&f.display().to_string(), &text) {
            ch.execute(&st.sql)
                .await
                .unwrap_or_else(|e| panic!("{}: {e:#}", st.origin));
        }
    }
}

async fn insert(ch: &ChClient, table: &str, rows: &[Value], token: &str) {
    let data: String = rows.iter().map(|r| format!("{r}\n")).collect();
    ch.insert_json_each_row(table, data.into(), token)
        .await
        .unwrap_or_else(|e| panic!("{table}: {e:#}"));
}

/// Rows as the previous release wrote them (no identity columns).
async fn old_rows(ch: &ChClient) {
    let msg = |u: &str| {
        json!({"uuid": u, "session_id": "s1", "project": "-work-app", "timestamp": "2026-10-01T00:00:00Z",
                               "entry_type": "user", "message_kind": "prompt", "content": "hello", "source_file": "/p/s1.jsonl"})
    };
    insert(ch, "claude_messages", &[msg("m1"), msg("m2")], "old:1").await;
    insert(
        ch,
        "claude_requests",
        &[
            json!({"project": "-work-app", "message_id": "msg_1", "request_id": "req_1",
        "timestamp": "2026-10-01T00:00:00Z", "input_tokens": 10, "output_tokens": 5}),
        ],
        "old:2",
    )
    .await;
    insert(
        ch,
        "claude_sessions",
        &[
            json!({"project": "-work-app", "session_id": "s1", "entries": 2, "prompts": 2,
        "last_timestamp": "2026-10-01T00:00:00Z"}),
        ],
        "old:3",
    )
    .await;
    insert(
        ch,
        "claude_summaries",
        &[json!({"project": "-work-app", "leaf_uuid": "m2", "summary": "greeting"})],
        "old:4",
    )
    .await;
    insert(ch, "claude_dead_letters", &[json!({"source_file": "/p/s1.jsonl", "source_offset": 7, "stage": "parse", "error": "bad"})], "old:5").await;
    // a call and its result, in two inserts (two parts: folded only when read)
    insert(
        ch,
        "claude_tool_usage",
        &[
            json!({"session_id": "s1", "tool_use_id": "t1", "project": "-work-app",
        "timestamp": "2026-10-01T00:00:00Z", "tool_name": "Bash", "command": "ls", "message_uuid": "a1"}),
        ],
        "old:6",
    )
    .await;
    let reply = json!({"uuid": "a1", "session_id": "s1", "project": "-work-app", "role": "assistant",
        "timestamp": "2026-10-01T00:00:00Z", "entry_type": "assistant", "message_id": "msg_1"});
    insert(ch, "claude_messages", &[reply], "old:8").await;
    insert(
        ch,
        "claude_tool_usage",
        &[
            json!({"session_id": "s1", "tool_use_id": "t1", "has_result": 1,
        "is_error": 1, "result_size": 42}),
        ],
        "old:7",
    )
    .await;
}

/// The folded tool call of [`old_rows`], as the panels read it.
async fn old_call(ch: &ChClient) -> Value {
    let rows = ch
        .query_json(
            "SELECT count() AS n, any(tool_name) AS tool, any(command) AS command, any(is_error) AS err, \
             any(result_size) AS bytes FROM claude_tool_usage FINAL",
            &[],
        )
        .await
        .unwrap();
    Value::Object(rows[0].clone())
}

/// table → (column → type), sorting key, TTL; views → their SELECT.
async fn shape(ch: &ChClient) -> BTreeMap<String, (BTreeMap<String, String>, String)> {
    let db = json!(ch.database());
    let cols = ch
        .query_json("SELECT table, name, type, default_kind FROM system.columns WHERE database = {db:String}", &[("db", db.clone())])
        .await
        .unwrap();
    let tables = ch
        .query_json(
            "SELECT name, sorting_key, partition_key, as_select, \
             extractAll(engine_full, 'min_age_to_force_merge_[a-z_]+ = [0-9]+') AS merges \
             FROM system.tables WHERE database = {db:String}",
            &[("db", db)],
        )
        .await
        .unwrap();
    let indexes = ch
        .query_json(
            "SELECT table, groupArray(name || ' ' || type_full || ' ' || expr) AS i FROM \
             (SELECT * FROM system.data_skipping_indices WHERE database = {db:String} ORDER BY name) GROUP BY table",
            &[("db", json!(ch.database()))],
        )
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for t in tables {
        let name = t["name"].as_str().unwrap().to_string();
        let idx = indexes
            .iter()
            .find(|r| r["table"] == name.as_str())
            .map(|r| r["i"].to_string())
            .unwrap_or_default();
        let key = format!(
            "{} {} {} {} {idx}",
            t["sorting_key"], t["partition_key"], t["merges"], t["as_select"]
        )
        .replace(ch.database(), "DB");
        let mut c = BTreeMap::new();
        for r in cols.iter().filter(|r| r["table"] == name.as_str()) {
            c.insert(
                r["name"].as_str().unwrap().to_string(),
                format!("{} {}", r["type"], r["default_kind"]),
            );
        }
        out.insert(name, (c, key));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_previous_release_database_is_upgraded_in_place_to_the_fresh_shape() {
    upgrade_to_fresh_shape("upgrade_old", false).await;
}

/// The release just before versioning also had `090_identity_columns.sql`:
/// `host` / `user_name` added unkeyed and never filled. Upgrading it must
/// still end with the identity in every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_unkeyed_identity_columns_is_upgraded_to_the_fresh_shape() {
    upgrade_to_fresh_shape("upgrade_unkeyed", true).await;
}

/// That release's `090_identity_columns.sql`, applied over the v1 schema.
async fn add_unkeyed_identity(ch: &ChClient) {
    for t in [
        "claude_messages",
        "claude_tool_usage",
        "claude_file_access",
        "claude_requests",
        "claude_sessions",
        "claude_summaries",
        "claude_dead_letters",
        "claude_daily_activity",
    ] {
        for c in ["host", "user_name"] {
            ch.execute(&format!(
                "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {c} LowCardinality(String)"
            ))
            .await
            .unwrap_or_else(|e| panic!("{t}.{c}: {e:#}"));
        }
    }
}

async fn upgrade_to_fresh_shape(prefix: &str, unkeyed_identity: bool) {
    let who = Identity::resolve(Some("box-a"), Some("ann")).unwrap();
    let old = client(prefix);
    create_v1(&old).await;
    if unkeyed_identity {
        add_unkeyed_identity(&old).await;
    }
    old_rows(&old).await;
    let counts_before = table_counts(&old).await;
    let call_before = old_call(&old).await;
    assert_eq!(call_before["tool"], "Bash", "{call_before}");

    let out = migrate(&old, &[], &who).await.expect("upgrade");
    assert_eq!(out.from, Some(0), "unversioned database recognised");
    assert_eq!(out.to, latest());
    assert!(out.steps_run >= 9, "{out:?}");
    assert_eq!(
        out.created,
        ["claude_daily_activity_mv", "claude_thinking"].map(String::from),
        "a new table is created, the view redefined"
    );

    let fresh = client(&format!("{prefix}_fresh"));
    let f = migrate(&fresh, &[], &who).await.expect("fresh");
    assert_eq!(f.from, None);
    let (a, b) = (shape(&old).await, shape(&fresh).await);
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (t, (cols, key)) in &b {
        assert_eq!(&a[t].1, key, "{t}: sorting key / view query");
        assert_eq!(&a[t].0, cols, "{t}: columns");
    }

    // the rows are still there, attributed to no machine (they predate identity)
    assert_eq!(table_counts(&old).await, counts_before);
    assert_eq!(
        old_call(&old).await,
        call_before,
        "the tool call survives its table's rebuild"
    );
    let mid = "SELECT message_id FROM claude_tool_usage FINAL";
    assert_eq!(
        scalar(&old, mid).await,
        json!("msg_1"),
        "the call knows its API message"
    );
    let hosts = count(&old, "SELECT countIf(host != '') FROM claude_messages").await;
    assert_eq!(hosts, 0);
    assert_eq!(
        count(
            &old,
            "SELECT count() FROM claude_summaries WHERE ingested_at > '2026-01-01'"
        )
        .await,
        1
    );

    // the upgraded store takes identified rows, and its view carries them
    insert(&old, "claude_messages", &[json!({"uuid": "m3", "session_id": "s2", "project": "-work-app",
        "timestamp": "2026-10-02T00:00:00Z", "message_kind": "prompt", "host": "box-a", "user_name": "ann"})], "new:1").await;
    let by_host = count(&old, "SELECT sum(messages) FROM claude_daily_activity WHERE host = 'box-a' AND user_name = 'ann'").await;
    assert_eq!(by_host, 1);

    // again: nothing to do, versions recorded once each
    let again = migrate(&old, &[], &who).await.unwrap();
    assert_eq!(
        (again.from, again.steps_run, again.created.len()),
        (Some(latest()), 0, 0)
    );
    let versions = count(&old, "SELECT count() FROM claude_schema_migrations FINAL").await;
    assert_eq!(versions, latest() as u64);
    old.drop_database().await.unwrap();
    fresh.drop_database().await.unwrap();
}

async fn table_counts(ch: &ChClient) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for t in [
        "claude_messages",
        "claude_requests",
        "claude_sessions",
        "claude_summaries",
        "claude_dead_letters",
        "claude_tool_usage",
    ] {
        out.push((
            t.to_string(),
            count(ch, &format!("SELECT count() FROM {t} FINAL")).await,
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_done_migration_is_finished_by_the_next_start() {
    let who = Identity::resolve(Some("box-a"), Some("ann")).unwrap();
    let ch = client("upgrade_half");
    create_v1(&ch).await;
    // a crash after the first identity step: one table migrated, no version recorded
    ch.execute("ALTER TABLE claude_messages ADD COLUMN host LowCardinality(String), ADD COLUMN user_name LowCardinality(String), \
                MODIFY ORDER BY (project, session_id, timestamp, uuid, host, user_name)").await.unwrap();
    let out = migrate(&ch, &[], &who).await.expect("resumes");
    assert_eq!(out.to, latest());
    let key = scalar(&ch, "SELECT sorting_key FROM system.tables WHERE database = currentDatabase() AND name = 'claude_requests'").await;
    assert_eq!(
        key,
        json!("project, message_id, request_id, host, user_name")
    );
    ch.drop_database().await.unwrap();
}

/// Version 5 rebuilds claude_tool_usage partitioned. A crash during the copy
/// leaves a half-filled `_repartition` table next to the old one: the next
/// start builds it again from scratch; a crash after the swap leaves the old
/// rows under that name: the next start finds the table partitioned and only
/// drops them. Either way every call is there once, folded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_the_tool_table_rebuild_is_finished_by_the_next_start() {
    let who = Identity::resolve(Some("box-a"), Some("ann")).unwrap();
    let ch = client("upgrade_rebuild");
    create_v1(&ch).await;
    old_rows(&ch).await;
    let before = old_call(&ch).await;
    // crash during the first copy: a partial table with a stray row
    ch.execute("CREATE TABLE claude_tool_usage_repartition AS claude_tool_usage")
        .await
        .unwrap();
    insert(
        &ch,
        "claude_tool_usage_repartition",
        &[json!({"session_id": "stray", "tool_use_id": "t9", "tool_name": "Read"})],
        "stray",
    )
    .await;
    migrate(&ch, &[], &who).await.expect("rebuilds");
    assert_eq!(
        tool_table(&ch, "partition_key").await,
        json!("cityHash64(session_id) % 16")
    );
    assert_eq!(old_call(&ch).await, before);
    // crash after the swap: the old rows are left under the temporary name
    ch.execute("CREATE TABLE claude_tool_usage_repartition AS claude_tool_usage")
        .await
        .unwrap();
    forget_version_5(&ch).await;
    let out = migrate(&ch, &[], &who).await.expect("finishes");
    assert_eq!(
        out.steps_run, 3,
        "only the message-id fill and the two setting changes run again"
    );
    assert!(!ch
        .table_names()
        .await
        .unwrap()
        .contains("claude_tool_usage_repartition"));
    assert_eq!(old_call(&ch).await, before);
    ch.drop_database().await.unwrap();
}

/// A `claude_tool_usage` that is not a plain MergeTree (a cluster's
/// Distributed table; a Memory table stands in for it here) is not rebuilt:
/// the upgrade stops with a message saying why, and the table is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tool_table_rebuild_refuses_a_table_it_cannot_rebuild() {
    let who = Identity::resolve(Some("box-a"), Some("ann")).unwrap();
    let ch = client("upgrade_refuse");
    migrate(&ch, &[], &who).await.unwrap();
    forget_version_5(&ch).await;
    ch.execute("DROP TABLE claude_tool_usage").await.unwrap();
    ch.execute(
        "CREATE TABLE claude_tool_usage (session_id String, tool_use_id String) ENGINE = Memory",
    )
    .await
    .unwrap();
    let err = migrate(&ch, &[], &who).await.expect_err("refused");
    assert!(
        format!("{err:#}").contains("is a Memory table (a cluster?)"),
        "{err:#}"
    );
    assert_eq!(tool_table(&ch, "engine").await, json!("Memory"));
    ch.drop_database().await.unwrap();
}

/// Undo the record of version 5, as if the start that applied it had died
/// before recording it.
async fn forget_version_5(ch: &ChClient) {
    ch.execute(
        "ALTER TABLE claude_schema_migrations DELETE WHERE version = 5 SETTINGS mutations_sync = 2",
    )
    .await
    .unwrap();
}

/// One column of `system.tables` for `claude_tool_usage`.
async fn tool_table(ch: &ChClient, field: &str) -> Value {
    let sql = format!("SELECT {field} FROM system.tables WHERE database = currentDatabase() AND name = 'claude_tool_usage'");
    scalar(ch, &sql).await
}

fn retention_cfg(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_is_applied_changed_removed_and_deletes_expired_rows() {
    let ch = testing::fresh_client("ttl").await;
    let now = chrono::Utc::now();
    let recent = (now - chrono::Duration::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let old = (now - chrono::Duration::days(90))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let msg = |u: &str, ts: &str| json!({"uuid": u, "session_id": "s", "project": "p", "timestamp": ts, "host": "h", "user_name": "u"});
    insert(
        &ch,
        "claude_messages",
        &[
            msg("old-1", &old),
            msg("old-2", &old),
            msg("new-1", &recent),
        ],
        "ttl:1",
    )
    .await;
    insert(&ch, "claude_requests", &[json!({"project": "p", "message_id": "m", "request_id": "r", "timestamp": old, "output_tokens": 1})], "ttl:2").await;

    // every table with a time column: applied once, then recognised as in place
    let all: Vec<(&str, &str)> = retention::TIME_EXPRESSIONS
        .iter()
        .map(|(t, _)| (*t, "30d"))
        .collect();
    let applied = retention::apply(&ch, &retention_cfg(&all))
        .await
        .expect("apply");
    assert_eq!(applied.len(), all.len(), "{applied:?}");
    assert!(
        retention::apply(&ch, &retention_cfg(&all))
            .await
            .unwrap()
            .is_empty(),
        "unchanged TTLs are not re-applied"
    );

    // Expired rows go at merges: force them (the TTL's own materialising
    // mutation may hold the parts for a moment, so retry until it is done).
    let t0 = std::time::Instant::now();
    let both =
        "SELECT (SELECT count() FROM claude_messages) + (SELECT count() FROM claude_requests)";
    while count(&ch, both).await != 1 && t0.elapsed() < std::time::Duration::from_secs(30) {
        ch.execute("OPTIMIZE TABLE claude_messages FINAL")
            .await
            .unwrap();
        ch.execute("OPTIMIZE TABLE claude_requests FINAL")
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&ch, "SELECT count() FROM claude_messages").await,
        1,
        "expired messages deleted"
    );
    assert_eq!(
        scalar(&ch, "SELECT any(uuid) FROM claude_messages").await,
        json!("new-1")
    );
    assert_eq!(count(&ch, "SELECT count() FROM claude_requests").await, 0);

    // changed: messages 1 week; unset tables lose their TTL ("removed when unset")
    let changed = retention::apply(
        &ch,
        &retention_cfg(&[("claude_messages", "1w"), ("claude_requests", "forever")]),
    )
    .await
    .unwrap();
    assert_eq!(changed.len(), all.len());
    let full = |t: &str| {
        format!("SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = '{t}'")
    };
    let m = scalar(&ch, &full("claude_messages")).await;
    assert!(
        m.as_str()
            .unwrap()
            .contains("TTL toDateTime(timestamp) + toIntervalWeek(1)"),
        "{m}"
    );
    for t in [
        "claude_requests",
        "claude_sessions",
        "claude_daily_activity",
    ] {
        let e = scalar(&ch, &full(t)).await;
        assert!(!e.as_str().unwrap().contains(" TTL "), "{t}: {e}");
    }
    // an empty section leaves the store's TTLs alone (another machine's config)
    assert!(retention::apply(&ch, &BTreeMap::new())
        .await
        .unwrap()
        .is_empty());
    assert!(scalar(&ch, &full("claude_messages"))
        .await
        .as_str()
        .unwrap()
        .contains("toIntervalWeek(1)"));
    ch.drop_database().await.unwrap();
}

/// Statements of a printed script, parsed (not run) by the engine.
async fn parses(ch: &ChClient, script: &str) -> usize {
    let statements = split_statements("script", script);
    for st in &statements {
        ch.query_json(
            "SELECT formatQuerySingleLine({q:String}) AS f",
            &[("q", json!(st.sql))],
        )
        .await
        .unwrap_or_else(|e| panic!("does not parse: {}\n{e:#}", st.sql));
    }
    statements.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_grants_scripts_parse_and_the_server_script_builds_a_versioned_store() {
    let ch = client("scripts");
    // the parser is reached through a query, which needs the database to exist
    ch.create_database().await.unwrap();
    let db = ch.database().to_string();
    let ret = retention_cfg(&[("claude_messages", "30d")]);
    let c = cluster::cluster_script(&db, "team", &[], &ret).unwrap();
    assert!(parses(&ch, &c).await >= 20);
    let g = grants::grants_script(&db, None, &[]).unwrap();
    assert!(parses(&ch, &g).await >= 15);
    let gc = grants::grants_script(&db, Some("team"), &[]).unwrap();
    parses(&ch, &gc).await;

    // The single-server script, run by hand (an admin), gives a database the
    // engine finds up to date: it runs no DDL at all on it.
    let s = cluster::server_script(&db, &[]).unwrap();
    for st in split_statements("server", &s) {
        ch.execute(&st.sql)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", st.sql));
    }
    let who = Identity::resolve(Some("h"), Some("u")).unwrap();
    let out = migrate(&ch, &[], &who).await.unwrap();
    assert_eq!(
        (out.from, out.steps_run, out.created.len()),
        (Some(latest()), 0, 0)
    );
    let tables: BTreeSet<String> = ch.table_names().await.unwrap().into_iter().collect();
    assert_eq!(tables.len(), 11, "{tables:?}");
    ch.drop_database().await.unwrap();
}
