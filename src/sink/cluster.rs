//! DDL scripts printed by `schema`: the single-server script, and the one for
//! a ClickHouse cluster (`schema --cluster NAME`).
//!
//! On a cluster every table becomes a `<name>_local` Replicated*MergeTree on
//! every node (`ON CLUSTER`, Keeper path by `{shard}`, `{replica}` macros) and
//! a Distributed table `<name>` over them, so the engine and the API use the
//! same names as on one server. The materialized view runs on each node,
//! from local table to local table.
//!
//! Exactly-once still holds:
//! * every row is sharded by `cityHash64(host, user_name)`, a function of key
//!   columns only, so all rows of one machine — every version of a
//!   ReplacingMergeTree key, every partial row of an AggregatingMergeTree key —
//!   land on one shard, where merges and `FINAL` fold them as on one server;
//! * a batch of one machine therefore reaches one shard as one block per
//!   table, and Replicated tables deduplicate blocks by the insert's
//!   `insert_deduplication_token` in Keeper across all replicas (window:
//!   `replicated_deduplication_window` blocks). The writer must insert
//!   synchronously through the Distributed table (`distributed_foreground_insert
//!   = 1`, set for it by the settings profile of `schema --grants --cluster`),
//!   so an insert is acknowledged only once the shard has it and a replay
//!   reaches the shard with the same token;
//! * a replay older than the dedup window still collapses on the
//!   ReplacingMergeTree keys (read with `FINAL`), as on one server.

use super::clickhouse::quote_literal;
use super::clickhouse::{schema_statements, Statement};
use super::migrations::{created_object, latest, MIGRATIONS, MIGRATIONS_DDL, MIGRATIONS_TABLE};
use super::retention;
use anyhow::{bail, Result};
use regex::Regex;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// `schema` flags.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SchemaArgs {
    /// Print the DDL for this ClickHouse cluster (ON CLUSTER, Replicated*MergeTree, Distributed).
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Print least-privilege roles, grants and row policies instead (with --cluster: on the cluster).
    #[arg(long, conflicts_with = "apply")]
    pub grants: bool,
    /// Apply instead of printing: migrate the configured store to this
    /// release's schema and set the configured retention, then exit.
    #[arg(long, conflicts_with = "cluster")]
    pub apply: bool,
}

/// Replicated inserts remembered per table in Keeper for deduplication:
/// a crashed machine replays its spool on its next start, within hours at
/// most; beyond that the ReplacingMergeTree keys still hold.
const REPLICATED_DEDUP_WINDOW: u32 = 10_000;

/// Records every version as applied, so the engine finds an up-to-date
/// database and runs no DDL (a writer-only login can start).
fn version_insert(database: &str) -> String {
    let rows: Vec<String> = MIGRATIONS
        .iter()
        .map(|m| {
            format!(
                "({}, {}, 'schema script')",
                m.version,
                quote_literal(m.name)
            )
        })
        .collect();
    format!(
        "INSERT INTO `{database}`.{MIGRATIONS_TABLE} (version, name, host) VALUES {};\n",
        rows.join(", ")
    )
}

/// The single-server script: what a fresh database gets on start.
pub fn server_script(database: &str, extra_dirs: &[PathBuf]) -> Result<String> {
    let mut out = format!(
        "CREATE DATABASE IF NOT EXISTS `{database}`;\n-- claude-ingest schema version {}\n\n",
        latest()
    );
    let _ = writeln!(out, "{MIGRATIONS_DDL};\n");
    for st in schema_statements(extra_dirs)? {
        let _ = writeln!(out, "-- from {}\n{};\n", st.origin, st.sql);
    }
    out.push_str(&version_insert(database));
    Ok(out)
}

/// The cluster script (see the module docs). `retention` adds TTL clauses.
pub fn cluster_script(
    database: &str,
    cluster: &str,
    extra_dirs: &[PathBuf],
    retention_cfg: &BTreeMap<String, String>,
) -> Result<String> {
    if cluster.is_empty() || cluster.contains(['\'', '`', '\\']) {
        bail!("cluster name `{cluster}` is not usable");
    }
    let ttls = retention::parse_all(retention_cfg)?;
    let mut out = format!(
        "-- claude-ingest schema version {} for cluster `{cluster}`\n\
         -- <table>_local: Replicated*MergeTree on every node; <table>: Distributed over them,\n\
         -- sharded by cityHash64(host, user_name). Exactly-once: see src/sink/cluster.rs.\n\
         CREATE DATABASE IF NOT EXISTS `{database}` ON CLUSTER `{cluster}`;\n\n",
        latest()
    );
    let mut all = vec![Statement {
        origin: "migrations".into(),
        sql: MIGRATIONS_DDL.to_string(),
    }];
    all.extend(schema_statements(extra_dirs)?);
    let c = Cluster { database, cluster };
    for st in &all {
        let _ = writeln!(out, "-- from {}", st.origin);
        let ttl = created_object(&st.sql).and_then(|t| {
            ttls.get(&t)
                .cloned()
                .flatten()
                .and_then(|p| retention::ttl_expression(&t, &p))
        });
        out.push_str(&c.statement(&st.sql, ttl.as_deref())?);
        out.push('\n');
    }
    out.push_str(&version_insert(database));
    Ok(out)
}

struct Cluster<'a> {
    database: &'a str,
    cluster: &'a str,
}

impl Cluster<'_> {
    fn statement(&self, sql: &str, ttl: Option<&str>) -> Result<String> {
        let upper = sql.trim_start().to_ascii_uppercase();
        if upper.starts_with("CREATE TABLE") {
            self.table(sql, ttl)
        } else if upper.starts_with("CREATE MATERIALIZED VIEW") {
            Ok(self.view(sql))
        } else if upper.starts_with("ALTER TABLE") {
            Ok(self.alter(sql))
        } else {
            bail!(
                "cannot translate this statement for a cluster: {}",
                sql.lines().next().unwrap_or_default()
            )
        }
    }

    /// `CREATE TABLE IF NOT EXISTS t (…) ENGINE = XMergeTree[(args)] …` →
    /// the replicated `t_local` on every node + the Distributed `t`.
    fn table(&self, sql: &str, ttl: Option<&str>) -> Result<String> {
        let (db, cl) = (self.database, self.cluster);
        let name = created_object(sql).unwrap_or_default();
        let head = Regex::new(r"(?is)^\s*CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+`?[A-Za-z0-9_]+`?")?;
        let engine = Regex::new(r"ENGINE\s*=\s*([A-Za-z]*MergeTree)(?:\(([^)]*)\))?")?;
        let Some(e) = engine.captures(sql) else {
            bail!("table {name}: only *MergeTree engines can be replicated");
        };
        let path = format!("'/clickhouse/tables/{{shard}}/{db}/{name}_local'");
        let args = match e
            .get(2)
            .map(|m| m.as_str().trim())
            .filter(|a| !a.is_empty())
        {
            Some(a) => format!("{path}, '{{replica}}', {a}"),
            None => format!("{path}, '{{replica}}'"),
        };
        let replicated = format!("ENGINE = Replicated{}({args})", &e[1]);
        let mut local = head
            .replace(
                sql,
                format!("CREATE TABLE IF NOT EXISTS `{db}`.`{name}_local` ON CLUSTER `{cl}`")
                    .as_str(),
            )
            .into_owned();
        local = engine.replace(&local, replicated.as_str()).into_owned();
        local = local.replace(
            "non_replicated_deduplication_window = 100000",
            &format!("replicated_deduplication_window = {REPLICATED_DEDUP_WINDOW}"),
        );
        if let Some(t) = ttl {
            local = match local.find("\nSETTINGS") {
                Some(i) => format!("{}\nTTL {t}{}", &local[..i], &local[i..]),
                None => format!("{local}\nTTL {t}"),
            };
        }
        Ok(format!(
            "{local};\n\nCREATE TABLE IF NOT EXISTS `{db}`.`{name}` ON CLUSTER `{cl}` AS `{db}`.`{name}_local`\n\
             ENGINE = Distributed('{cl}', '{db}', '{name}_local', cityHash64(host, user_name));\n"
        ))
    }

    /// The view fires on each node's local inserts into each node's local target.
    fn view(&self, sql: &str) -> String {
        let (db, cl) = (self.database, self.cluster);
        let name = created_object(sql).unwrap_or_default();
        let re = Regex::new(r"(?is)^\s*CREATE\s+MATERIALIZED\s+VIEW\s+IF\s+NOT\s+EXISTS\s+`?[A-Za-z0-9_]+`?\s+TO\s+`?([A-Za-z0-9_]+)`?")
            .expect("valid regex");
        let out = re.replace(sql, |c: &regex::Captures| {
            format!("CREATE MATERIALIZED VIEW IF NOT EXISTS `{db}`.`{name}` ON CLUSTER `{cl}` TO `{db}`.`{}_local`", &c[1])
        });
        let from = Regex::new(r"(?i)\bFROM\s+`?([A-Za-z0-9_]+)`?").expect("valid regex");
        let out = from.replace(&out, |c: &regex::Captures| {
            format!("FROM `{db}`.`{}_local`", &c[1])
        });
        format!("{out};\n")
    }

    /// ALTERs change the local tables; added columns go to the Distributed
    /// table too (it must expose them).
    fn alter(&self, sql: &str) -> String {
        let (db, cl) = (self.database, self.cluster);
        let re = Regex::new(r"(?is)^\s*ALTER\s+TABLE\s+`?([A-Za-z0-9_]+)`?").expect("valid regex");
        let Some(c) = re.captures(sql) else {
            return format!("{sql};\n");
        };
        let t = c[1].to_string();
        let rest = &sql[c.get(0).map_or(0, |m| m.end())..];
        let mut out = format!("ALTER TABLE `{db}`.`{t}_local` ON CLUSTER `{cl}`{rest};\n");
        if rest.to_ascii_uppercase().contains("ADD COLUMN") {
            let _ = writeln!(out, "ALTER TABLE `{db}`.`{t}` ON CLUSTER `{cl}`{rest};");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_replicated_and_distributed() {
        let mut ret = BTreeMap::new();
        ret.insert("claude_messages".to_string(), "30d".to_string());
        let s = cluster_script("claude_logs", "team", &[], &ret).unwrap();
        for t in [
            "claude_messages",
            "claude_requests",
            "claude_sessions",
            "claude_schema_migrations",
        ] {
            assert!(
                s.contains(&format!("`claude_logs`.`{t}_local` ON CLUSTER `team`")),
                "{t}"
            );
            assert!(s.contains(&format!(
                "ENGINE = Distributed('team', 'claude_logs', '{t}_local', cityHash64(host, user_name))"
            )), "{t}");
        }
        assert!(s.contains("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/claude_logs/claude_requests_local', '{replica}', snapshot_rank)"));
        assert!(s.contains("ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/claude_logs/claude_sessions_local', '{replica}')"));
        assert!(s.contains("TO `claude_logs`.`claude_daily_activity_local`"));
        assert!(s.contains("FROM `claude_logs`.`claude_messages_local`"));
        assert!(s.contains("TTL toDateTime(timestamp) + toIntervalDay(30)\nSETTINGS replicated_deduplication_window"));
        assert!(!s.contains("non_replicated"));
        assert!(!s.contains(" MergeTree"), "every engine replicated");
        assert!(cluster_script("d", "a'b", &[], &BTreeMap::new()).is_err());
    }

    #[test]
    fn server_script_records_every_version() {
        let s = server_script("claude_logs", &[]).unwrap();
        assert!(s.contains(MIGRATIONS_DDL));
        for m in MIGRATIONS {
            assert!(s.contains(&format!("({}, '", m.version)));
        }
    }
}
