//! Versioned schema migrations.
//!
//! `schema/*.sql` always describes the newest schema (what a fresh database
//! gets). A database made by an older release is brought to it in place by
//! the ordered [`MIGRATIONS`]; `claude_schema_migrations` records which
//! versions a database has. On start:
//!
//! 1. no version recorded and no `claude_messages`: a fresh database; the
//!    schema files create everything and every version is recorded;
//! 2. no version recorded but `claude_messages` exists: made by a release
//!    before versioning (version 0): every migration runs;
//! 3. otherwise the migrations above the recorded version run, in order,
//!    each recorded once its steps are done.
//!
//! Then every `CREATE … IF NOT EXISTS` whose object is missing runs (new
//! tables, and a view a migration dropped to redefine), and every other
//! statement of the schema files (idempotent ALTERs, extra dirs) runs as
//! before. Objects that exist are not re-created, so a login without CREATE
//! rights (the least-privilege writer of `schema --grants`) starts fine on an
//! up-to-date database.
//!
//! Steps are idempotent, so a crash mid-migration is finished by the next
//! start: a step that adds columns is skipped when its marker column exists
//! (`ADD COLUMN` + `MODIFY ORDER BY` in one ALTER are applied together), and
//! a step on a table the database does not have is skipped (the table is
//! then created at its newest shape).
//!
//! To change the schema: edit the `schema/*.sql` file (the fresh shape) AND
//! append a migration here that takes the previous shape to it; the upgrade
//! test (`tests/migrations_e2e.rs`) compares the two.

use super::clickhouse::{quote_literal, schema_statements, ChClient, Statement};
use super::identity::{Identity, HOST_COLUMN, USER_COLUMN};
use anyhow::{Context, Result};
use regex::Regex;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::OnceLock;

pub const MIGRATIONS_TABLE: &str = "claude_schema_migrations";

/// The record of applied versions (created first, on every database).
pub const MIGRATIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS claude_schema_migrations
(
    version     UInt32,
    name        String,
    applied_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    host        LowCardinality(String),
    user_name   LowCardinality(String)
)
ENGINE = ReplacingMergeTree
ORDER BY version";

/// One idempotent step of a migration.
#[derive(Debug)]
pub struct Step {
    /// The table (or view) it changes: skipped when the database has none.
    pub table: &'static str,
    /// Skipped when `table` already has this column (the step adds it).
    pub unless_column: Option<&'static str>,
    pub action: Action,
}

#[derive(Debug)]
pub enum Action {
    /// One statement.
    Sql(&'static str),
    /// Re-create the table at its schema-file shape and copy its rows over:
    /// ClickHouse cannot change a partition key in place. Skipped once the
    /// table has a partition key. Only for tables whose rows fold
    /// idempotently (max / replace), so copying a row twice changes nothing.
    Repartition,
}

#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub steps: &'static [Step],
}

const fn add(table: &'static str, sql: &'static str) -> Step {
    Step {
        table,
        unless_column: None,
        action: Action::Sql(sql),
    }
}

/// The identity columns, appended to a table's key. ClickHouse allows a
/// sorting key to grow only by columns added in the same ALTER (existing
/// rows, all '', stay sorted), and only without a default expression.
const fn identity(table: &'static str, sql: &'static str) -> Step {
    Step {
        table,
        unless_column: Some("host"),
        action: Action::Sql(sql),
    }
}

/// Every schema change since the unversioned release, oldest first. Append
/// only: a released version is never edited.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "columns added before versioning (message kinds, session counts)",
        steps: &[
            add("claude_messages", "ALTER TABLE claude_messages ADD COLUMN IF NOT EXISTS message_kind LowCardinality(String) AFTER entry_type"),
            add("claude_messages", "ALTER TABLE claude_messages ADD COLUMN IF NOT EXISTS message_id String AFTER message_kind"),
            add("claude_messages", "ALTER TABLE claude_messages ADD COLUMN IF NOT EXISTS timestamp_inferred Bool AFTER timestamp"),
            add("claude_sessions", "ALTER TABLE claude_sessions ADD COLUMN IF NOT EXISTS prompts SimpleAggregateFunction(sum, UInt64), \
                ADD COLUMN IF NOT EXISTS tool_results SimpleAggregateFunction(sum, UInt64), \
                ADD COLUMN IF NOT EXISTS slash_commands SimpleAggregateFunction(sum, UInt64), \
                ADD COLUMN IF NOT EXISTS meta_messages SimpleAggregateFunction(sum, UInt64), \
                ADD COLUMN IF NOT EXISTS subagent_prompts SimpleAggregateFunction(sum, UInt64), \
                ADD COLUMN IF NOT EXISTS compactions SimpleAggregateFunction(sum, UInt64), \
                ADD COLUMN IF NOT EXISTS interruptions SimpleAggregateFunction(sum, UInt64), \
                ADD COLUMN IF NOT EXISTS user_lines SimpleAggregateFunction(sum, UInt64), \
                ADD COLUMN IF NOT EXISTS assistant_lines SimpleAggregateFunction(sum, UInt64)"),
        ],
    },
    Migration {
        version: 2,
        name: "identity: host and user_name in every table and key",
        steps: &[
            identity("claude_messages", "ALTER TABLE claude_messages ADD COLUMN host LowCardinality(String), ADD COLUMN user_name LowCardinality(String), \
                MODIFY ORDER BY (project, session_id, timestamp, uuid, host, user_name)"),
            identity("claude_tool_usage", "ALTER TABLE claude_tool_usage ADD COLUMN host LowCardinality(String), ADD COLUMN user_name LowCardinality(String), \
                MODIFY ORDER BY (session_id, tool_use_id, host, user_name)"),
            identity("claude_file_access", "ALTER TABLE claude_file_access ADD COLUMN host LowCardinality(String), ADD COLUMN user_name LowCardinality(String), \
                MODIFY ORDER BY (project, session_id, tool_use_id, file_path, host, user_name)"),
            identity("claude_requests", "ALTER TABLE claude_requests ADD COLUMN host LowCardinality(String), ADD COLUMN user_name LowCardinality(String), \
                MODIFY ORDER BY (project, message_id, request_id, host, user_name)"),
            identity("claude_sessions", "ALTER TABLE claude_sessions ADD COLUMN host LowCardinality(String), ADD COLUMN user_name LowCardinality(String), \
                MODIFY ORDER BY (project, session_id, host, user_name)"),
            identity("claude_summaries", "ALTER TABLE claude_summaries ADD COLUMN host LowCardinality(String), ADD COLUMN user_name LowCardinality(String), \
                MODIFY ORDER BY (project, leaf_uuid, host, user_name)"),
            identity("claude_dead_letters", "ALTER TABLE claude_dead_letters ADD COLUMN host LowCardinality(String), ADD COLUMN user_name LowCardinality(String), \
                MODIFY ORDER BY (source_file, source_offset, stage, host, user_name)"),
            identity("claude_daily_activity", "ALTER TABLE claude_daily_activity ADD COLUMN host LowCardinality(String), ADD COLUMN user_name LowCardinality(String), \
                MODIFY ORDER BY (date, project, host, user_name)"),
            // The view is redefined to carry the identity: dropped here,
            // re-created from schema/008 right after the migrations.
            identity("claude_daily_activity_mv", "DROP VIEW IF EXISTS claude_daily_activity_mv"),
        ],
    },
    Migration {
        version: 3,
        name: "claude_summaries.ingested_at (what retention expires summaries by)",
        steps: &[Step {
            table: "claude_summaries",
            unless_column: Some("ingested_at"),
            // Materialised in the same ALTER: rows stored before the upgrade
            // get the upgrade's time (not a moving now()), so they expire too.
            action: Action::Sql("ALTER TABLE claude_summaries ADD COLUMN ingested_at DateTime64(3, 'UTC') DEFAULT now64(3) AFTER source_offset, \
                  MATERIALIZE COLUMN ingested_at"),
        }],
    },
    Migration {
        version: 4,
        // claude_thinking is a new table: created from schema/009 when missing.
        name: "search and session indexes (replay, full-text search)",
        steps: &[
            add("claude_messages", "ALTER TABLE claude_messages ADD INDEX IF NOT EXISTS content_text lower(content) TYPE text(tokenizer = splitByNonAlpha)"),
            add("claude_messages", "ALTER TABLE claude_messages ADD INDEX IF NOT EXISTS session_bf session_id TYPE bloom_filter(0.01) GRANULARITY 1"),
            add("claude_tool_usage", "ALTER TABLE claude_tool_usage ADD INDEX IF NOT EXISTS parameters_text lower(parameters) TYPE text(tokenizer = splitByNonAlpha)"),
            add("claude_requests", "ALTER TABLE claude_requests ADD INDEX IF NOT EXISTS session_bf session_id TYPE bloom_filter(0.01) GRANULARITY 1"),
        ],
    },
    Migration {
        version: 5,
        name: "folded tables merged into one part when quiet (FINAL reads it without a fold), tool calls partitioned by session",
        steps: &[
            Step { table: "claude_tool_usage", unless_column: None, action: Action::Repartition },
            // Calls stored before carry no message id: one partial row each,
            // which the table's fold (max) merges into the call.
            add("claude_tool_usage", "INSERT INTO claude_tool_usage (session_id, tool_use_id, host, user_name, message_id) \
                SELECT t.session_id, t.tool_use_id, t.host, t.user_name, m.mid \
                FROM (SELECT session_id, tool_use_id, host, user_name, message_uuid FROM claude_tool_usage \
                      WHERE message_uuid != '' AND message_id = '') AS t \
                INNER JOIN (SELECT uuid, host, user_name, any(message_id) AS mid FROM claude_messages \
                            WHERE message_id != '' GROUP BY uuid, host, user_name) AS m \
                ON t.message_uuid = m.uuid AND t.host = m.host AND t.user_name = m.user_name"),
            add("claude_requests", "ALTER TABLE claude_requests MODIFY SETTING min_age_to_force_merge_seconds = 300, min_age_to_force_merge_on_partition_only = 1"),
            add("claude_sessions", "ALTER TABLE claude_sessions MODIFY SETTING min_age_to_force_merge_seconds = 60, min_age_to_force_merge_on_partition_only = 1"),
        ],
    },
];

/// The newest schema version (what a fresh database is created at).
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// What `migrate` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Version found (0 = unversioned; None = fresh database).
    pub from: Option<u32>,
    pub to: u32,
    /// Migration steps run (skipped ones not counted).
    pub steps_run: usize,
    /// Objects created from the schema files.
    pub created: Vec<String>,
}

/// Bring the database to the newest schema (see the module docs).
pub async fn migrate(client: &ChClient, extra_dirs: &[PathBuf], who: &Identity) -> Result<Outcome> {
    client.create_database().await?;
    let mut objects = client.table_names().await?;
    if !objects.contains(MIGRATIONS_TABLE) {
        client
            .execute(MIGRATIONS_DDL)
            .await
            .context("cannot create the migrations table")?;
    }
    let found = recorded_version(client).await?;
    let from = match found {
        Some(v) => Some(v),
        None if objects.contains("claude_messages") => Some(0),
        None => None,
    };
    let mut out = Outcome {
        from,
        to: latest(),
        ..Outcome::default()
    };
    if let Some(v) = from {
        for m in MIGRATIONS.iter().filter(|m| m.version > v) {
            tracing::info!(
                version = m.version,
                name = m.name,
                "applying schema migration"
            );
            out.steps_run += run_steps(client, m).await?;
            record(client, m, who).await?;
        }
        objects = client.table_names().await?;
    }
    let statements = schema_statements(extra_dirs)?;
    out.created = apply_statements(client, &statements, &objects).await?;
    if from.is_none() {
        for m in MIGRATIONS {
            record(client, m, who).await?;
        }
    }
    Ok(out)
}

async fn run_steps(client: &ChClient, m: &Migration) -> Result<usize> {
    let columns = client.table_columns().await?;
    let objects = client.table_names().await?;
    let mut run = 0;
    for step in m.steps {
        if !objects.contains(step.table) {
            continue;
        }
        let has = |c: &str| columns.get(step.table).is_some_and(|cols| cols.contains(c));
        if step.unless_column.is_some_and(has) && !unkeyed_identity(client, step).await? {
            continue;
        }
        let done = match step.action {
            Action::Sql(sql) => client.execute(sql).await.map(|()| true),
            Action::Repartition => repartition(client, step.table).await,
        };
        let done = done.with_context(|| {
            format!(
                "schema migration {} ({}) failed on {}",
                m.version, m.name, step.table
            )
        })?;
        run += usize::from(done);
    }
    Ok(run)
}

/// The migration whose [`Action::Repartition`] step rebuilds `claude_tool_usage`.
const REPARTITION_VERSION: u32 = 5;

/// [`Action::Repartition`]: build `<table>_repartition` from the table's
/// schema-file statement, copy the rows in, swap the two, then copy the rows
/// of parts that were not there at the first copy (another writer's inserts
/// meanwhile; a part merged meanwhile is copied again, which changes nothing:
/// the table's rows fold idempotently), and drop the old table. A crash
/// before the swap is redone from the start on the next start; after it, the
/// partitioned table is found and only the leftover is dropped. Returns
/// whether a rebuild ran.
async fn repartition(client: &ChClient, table: &str) -> Result<bool> {
    let tmp = format!("{table}_repartition");
    let engine = table_field(client, table, "engine").await?;
    if !engine.ends_with("MergeTree") || engine.starts_with("Replicated") {
        // A cluster's Distributed / Replicated tables: rebuilding one node's
        // copy here would do harm. The operator rebuilds them (README).
        anyhow::bail!(
            "{table} is a {engine} table (a cluster?): schema version {REPARTITION_VERSION} re-creates it \
             partitioned, which the engine does only on a single server; see the README's Team setup"
        );
    }
    if !table_field(client, table, "partition_key")
        .await?
        .is_empty()
    {
        client
            .execute(&format!("DROP TABLE IF EXISTS {tmp}"))
            .await?;
        return Ok(false);
    }
    let create = schema_statements(&[])?
        .into_iter()
        .find(|st| created_object(&st.sql).as_deref() == Some(table))
        .with_context(|| format!("no schema statement creates {table}"))?;
    let mut cols: Vec<String> = client
        .table_columns()
        .await?
        .remove(table)
        .into_iter()
        .flatten()
        .collect();
    cols.sort();
    let cols = cols
        .iter()
        .map(|c| format!("`{c}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let parts = active_parts(client, table).await?;
    tracing::info!(
        table,
        parts = parts.len(),
        "re-creating the table partitioned, and copying its rows"
    );
    let copied: Vec<String> = parts.iter().map(|p| quote_literal(p)).collect();
    let copied = copied.join(", ");
    let copy = |into: &str, from: &str, only: &str| {
        format!("INSERT INTO {into} ({cols}) SELECT {cols} FROM {from} WHERE {only}has([{copied}], _part)")
    };
    for sql in [
        format!("DROP TABLE IF EXISTS {tmp}"),
        create.sql.replacen(table, &tmp, 1),
        copy(&tmp, table, ""),
        format!("EXCHANGE TABLES {table} AND {tmp}"),
        copy(table, &tmp, "NOT "),
        format!("DROP TABLE {tmp}"),
    ] {
        client.execute(&sql).await?;
    }
    Ok(true)
}

/// The names of a table's active parts.
async fn active_parts(client: &ChClient, table: &str) -> Result<Vec<String>> {
    let rows = client
        .query_json(
            "SELECT name FROM system.parts WHERE database = currentDatabase() AND table = {t:String} AND active",
            &[("t", Value::from(table))],
        )
        .await
        .with_context(|| format!("cannot list the parts of {table}"))?;
    Ok(rows
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .map(str::to_string)
        .collect())
}

/// One column of `system.tables` for a table of this database ('' if none).
async fn table_field(client: &ChClient, table: &str, field: &str) -> Result<String> {
    let rows = client
        .query_json(
            &format!("SELECT {field} AS v FROM system.tables WHERE database = currentDatabase() AND name = {{t:String}}"),
            &[("t", Value::from(table))],
        )
        .await
        .with_context(|| format!("cannot read the {field} of {table}"))?;
    Ok(rows
        .first()
        .and_then(|r| r.get("v"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string())
}

/// The release before versioned migrations added `host` / `user_name` with
/// plain `ADD COLUMN` (its `090_identity_columns.sql`) and never filled them,
/// so they hold only '' and are not in the key. ClickHouse can put a column
/// into a sorting key only in the ALTER that adds it: such a pair is dropped
/// here (nothing is lost) and the identity step then re-adds it keyed.
async fn unkeyed_identity(client: &ChClient, step: &Step) -> Result<bool> {
    let Action::Sql(sql) = step.action else {
        return Ok(false);
    };
    if step.unless_column != Some(HOST_COLUMN) || !sql.contains("MODIFY ORDER BY") {
        return Ok(false);
    }
    let key = table_field(client, step.table, "sorting_key").await?;
    if key.split(',').any(|c| c.trim() == HOST_COLUMN) {
        return Ok(false);
    }
    tracing::info!(
        table = step.table,
        "re-adding the unkeyed identity columns into the key"
    );
    let drop = format!(
        "ALTER TABLE {} DROP COLUMN IF EXISTS {HOST_COLUMN}, DROP COLUMN IF EXISTS {USER_COLUMN}",
        step.table
    );
    client
        .execute(&drop)
        .await
        .with_context(|| format!("cannot drop the unkeyed identity columns of {}", step.table))?;
    Ok(true)
}

/// The highest recorded version, None when nothing is recorded.
pub async fn recorded_version(client: &ChClient) -> Result<Option<u32>> {
    let rows = client
        .query_json(
            "SELECT count() AS n, max(version) AS v FROM claude_schema_migrations",
            &[],
        )
        .await
        .context("cannot read the schema version")?;
    let row = rows.first();
    let n = row
        .and_then(|r| r.get("n"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let v = row
        .and_then(|r| r.get("v"))
        .and_then(Value::as_u64)
        .unwrap_or(0);
    Ok((n > 0).then_some(v as u32))
}

async fn record(client: &ChClient, m: &Migration, who: &Identity) -> Result<()> {
    let row =
        json!({"version": m.version, "name": m.name, "host": who.host, "user_name": who.user});
    // The token makes a repeated record (two engines migrating at once) one row.
    client
        .insert_json_each_row(
            MIGRATIONS_TABLE,
            bytes::Bytes::from(format!("{row}\n")),
            &format!("schema-migration-{}", m.version),
        )
        .await
        .with_context(|| format!("cannot record schema version {}", m.version))
}

/// `CREATE TABLE|VIEW|MATERIALIZED VIEW IF NOT EXISTS <name>` → name.
pub fn created_object(sql: &str) -> Option<String> {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"(?is)^\s*CREATE\s+(?:TABLE|VIEW|MATERIALIZED\s+VIEW)\s+IF\s+NOT\s+EXISTS\s+`?([A-Za-z_][A-Za-z0-9_]*)`?")
            .expect("valid regex")
    });
    re.captures(sql).map(|c| c[1].to_string())
}

/// Run the schema files: CREATEs only for missing objects, everything else
/// (idempotent ALTERs, extra dirs) as written. Returns what was created.
async fn apply_statements(
    client: &ChClient,
    statements: &[Statement],
    existing: &HashSet<String>,
) -> Result<Vec<String>> {
    let mut created = Vec::new();
    for st in statements {
        let name = created_object(&st.sql);
        if name.as_ref().is_some_and(|n| existing.contains(n)) {
            continue;
        }
        client
            .execute(&st.sql)
            .await
            .with_context(|| format!("applying DDL from {}", st.origin))?;
        created.extend(name);
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_ordered_and_every_step_names_its_table() {
        let mut last = 0;
        for m in MIGRATIONS {
            assert!(m.version > last, "migration {} out of order", m.version);
            last = m.version;
            for s in m.steps {
                if let Action::Sql(sql) = s.action {
                    assert!(sql.contains(s.table), "{sql} does not touch {}", s.table);
                }
            }
        }
        assert_eq!(latest(), last);
    }

    #[test]
    fn every_built_in_table_gets_the_identity_migration() {
        let tables: Vec<String> = schema_statements(&[])
            .unwrap()
            .iter()
            .filter(|s| s.sql.starts_with("CREATE TABLE"))
            .filter_map(|s| created_object(&s.sql))
            .collect();
        let v2 = &MIGRATIONS[1];
        // tables born after version 2 are created with the identity
        for t in tables.iter().filter(|t| *t != "claude_thinking") {
            assert!(
                v2.steps.iter().any(|s| s.table == t),
                "no identity step for {t}"
            );
        }
    }

    #[test]
    fn created_objects_are_recognised() {
        assert_eq!(
            created_object("CREATE TABLE IF NOT EXISTS claude_x\n(a String)").as_deref(),
            Some("claude_x")
        );
        assert_eq!(
            created_object("CREATE MATERIALIZED VIEW IF NOT EXISTS v TO t AS SELECT 1").as_deref(),
            Some("v")
        );
        assert_eq!(
            created_object("ALTER TABLE t ADD COLUMN IF NOT EXISTS x String"),
            None
        );
    }
}
