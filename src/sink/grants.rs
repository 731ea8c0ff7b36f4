//! Least-privilege access DDL for a ClickHouse server (`schema --grants`).
//!
//! Four roles:
//! * `claude_ingest_writer` — what every machine's `ingest` logs in with:
//!   INSERT into our tables, SELECT on the schema version only. It can read
//!   no log data and change no schema; on an up-to-date database the engine
//!   runs no DDL (see `migrations.rs`), so this is all it needs.
//! * `claude_ingest_migrator` — creates and upgrades the schema (and sets
//!   retention TTLs): run `claude-ingest schema`-level work once per release
//!   with it (any `ingest`/`backfill` started with this login migrates).
//! * `claude_ingest_reader` — SELECT, narrowed by a row policy to the rows
//!   whose `user_name` is the reader's ClickHouse login name
//!   (`currentUser()`): a person sees their own sessions from every machine.
//! * `claude_ingest_analyst` — SELECT on all rows (team dashboards, the
//!   `serve` process for the whole team).
//!
//! ClickHouse hides every row of a table that has row policies from users no
//! policy names, so an "all rows" policy goes to everyone *except* readers
//! (admins included); a user holding the reader role sees only their rows
//! even if they also hold another role (permissive policies are OR-ed, and
//! the all-rows one excludes readers).

use super::clickhouse::schema_statements;
use super::migrations::{created_object, MIGRATIONS_TABLE};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::PathBuf;

pub const WRITER_ROLE: &str = "claude_ingest_writer";
pub const MIGRATOR_ROLE: &str = "claude_ingest_migrator";
pub const READER_ROLE: &str = "claude_ingest_reader";
pub const ANALYST_ROLE: &str = "claude_ingest_analyst";

/// Tables (not views) of the built-in schema and the extra dirs.
fn data_tables(extra_dirs: &[PathBuf]) -> Result<Vec<String>> {
    Ok(schema_statements(extra_dirs)?
        .iter()
        .filter(|s| {
            s.sql
                .trim_start()
                .to_ascii_uppercase()
                .starts_with("CREATE TABLE")
        })
        .filter_map(|s| created_object(&s.sql))
        .collect())
}

/// The grants script for `database` (on every node of `cluster`, if given).
pub fn grants_script(
    database: &str,
    cluster: Option<&str>,
    extra_dirs: &[PathBuf],
) -> Result<String> {
    let on = cluster.map_or(String::new(), |c| format!(" ON CLUSTER `{c}`"));
    let tables = data_tables(extra_dirs)?;
    // On a cluster the Distributed tables and the local ones are both read
    // and written (a Distributed insert writes the local tables as the user).
    let names: Vec<String> = match cluster {
        Some(_) => tables
            .iter()
            .flat_map(|t| [t.clone(), format!("{t}_local")])
            .collect(),
        None => tables.clone(),
    };
    let q = |t: &str| -> String { format!("`{database}`.`{t}`") };
    let mut out = format!(
        "-- Least-privilege access for claude-ingest on database `{database}` (run as an admin).\n\
         -- Roles: {WRITER_ROLE} (INSERT only), {MIGRATOR_ROLE} (schema), {READER_ROLE} (own rows),\n\
         -- {ANALYST_ROLE} (all rows). Users at the end are examples.\n\n"
    );
    for r in [WRITER_ROLE, MIGRATOR_ROLE, READER_ROLE, ANALYST_ROLE] {
        let _ = writeln!(out, "CREATE ROLE IF NOT EXISTS {r}{on};");
    }
    out.push_str("\n-- writer: INSERT into the tables, read the schema version; nothing else\n");
    for t in &names {
        let _ = writeln!(
            out,
            "GRANT{on} INSERT ON {} TO {WRITER_ROLE};",
            q(t.as_str())
        );
    }
    let _ = writeln!(
        out,
        "GRANT{on} SELECT ON {} TO {WRITER_ROLE};",
        q(MIGRATIONS_TABLE)
    );
    if cluster.is_some() {
        let _ = writeln!(
            out,
            "GRANT{on} SELECT ON {} TO {WRITER_ROLE};",
            q(format!("{MIGRATIONS_TABLE}_local").as_str())
        );
        let _ = writeln!(
            out,
            "-- a Distributed insert is acknowledged once the shard stored it (exactly-once, see `schema --cluster`)\n\
             CREATE SETTINGS PROFILE IF NOT EXISTS claude_ingest_writer_profile{on} SETTINGS distributed_foreground_insert = 1 TO {WRITER_ROLE};"
        );
    }
    out.push_str("\n-- migrator: create and upgrade the schema, set retention (TTL)\n");
    let _ = writeln!(
        out,
        "GRANT{on} CREATE DATABASE, CREATE TABLE, DROP TABLE, CREATE VIEW, DROP VIEW, ALTER TABLE, ALTER VIEW, SELECT, INSERT, OPTIMIZE ON `{database}`.* TO {MIGRATOR_ROLE};"
    );
    if cluster.is_some() {
        let _ = writeln!(out, "GRANT{on} CLUSTER ON *.* TO {MIGRATOR_ROLE};");
    }
    out.push_str("\n-- readers and analysts: SELECT; row policies decide which rows\n");
    let _ = writeln!(out, "GRANT{on} SELECT ON `{database}`.* TO {READER_ROLE};");
    let _ = writeln!(out, "GRANT{on} SELECT ON `{database}`.* TO {ANALYST_ROLE};");
    let list = names
        .iter()
        .map(|t| q(t.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "CREATE ROW POLICY IF NOT EXISTS claude_ingest_own_rows ON {list}{on}\n    \
         FOR SELECT USING user_name = currentUser() TO {READER_ROLE};"
    );
    let _ = writeln!(
        out,
        "CREATE ROW POLICY IF NOT EXISTS claude_ingest_all_rows ON {list}{on}\n    \
         FOR SELECT USING 1 TO ALL EXCEPT {READER_ROLE};"
    );
    let _ = write!(
        out,
        "\n-- Example users (passwords from your secret store; a reader's login name must equal the\n\
         -- identity.user its machines write, e.g. the OS user name):\n\
         -- CREATE USER laptop_ann IDENTIFIED WITH sha256_password BY '...' DEFAULT ROLE {WRITER_ROLE};\n\
         -- CREATE USER ann IDENTIFIED WITH sha256_password BY '...' DEFAULT ROLE {READER_ROLE};\n\
         -- CREATE USER ci_migrator IDENTIFIED WITH sha256_password BY '...' DEFAULT ROLE {MIGRATOR_ROLE};\n\
         -- GRANT {WRITER_ROLE} TO laptop_ann; GRANT {READER_ROLE} TO ann; GRANT {MIGRATOR_ROLE} TO ci_migrator;\n"
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_can_only_insert_and_readers_are_scoped() {
        let s = grants_script("claude_logs", None, &[]).unwrap();
        let tables = data_tables(&[]).unwrap();
        assert_eq!(tables.len(), 9);
        for t in &tables {
            assert!(
                s.contains(&format!(
                    "GRANT INSERT ON `claude_logs`.`{t}` TO claude_ingest_writer;"
                )),
                "{t}"
            );
        }
        let writer: Vec<&str> = s
            .lines()
            .filter(|l| l.starts_with("GRANT") && l.contains("TO claude_ingest_writer"))
            .collect();
        assert!(writer.iter().all(|l| l.starts_with("GRANT INSERT ON")
            || l == &"GRANT SELECT ON `claude_logs`.`claude_schema_migrations` TO claude_ingest_writer;"), "{writer:?}");
        assert!(s.contains("USING user_name = currentUser() TO claude_ingest_reader"));
        assert!(s.contains("USING 1 TO ALL EXCEPT claude_ingest_reader"));
        assert!(!s.contains("ON CLUSTER"));
        let c = grants_script("claude_logs", Some("team"), &[]).unwrap();
        assert!(c.contains("GRANT ON CLUSTER `team` INSERT ON `claude_logs`.`claude_messages_local` TO claude_ingest_writer;"));
        assert!(c.contains("distributed_foreground_insert = 1"));
    }
}
