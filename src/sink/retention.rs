//! Retention: a per-table TTL from the config, applied (and changed, and
//! removed) on start with `ALTER TABLE … MODIFY TTL` / `REMOVE TTL`.
//!
//! Retention is a property of the store, not of one machine: when several
//! machines share a store, only one of them (the one with the migrator login)
//! should carry a `retention:` section. So an empty section leaves every TTL
//! as it is; a non-empty one owns all built-in tables (listed ones get their
//! TTL, the others lose theirs — "removed when unset"). `forever` removes a
//! table's TTL explicitly.

use super::clickhouse::ChClient;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;

/// The time column (expression) each built-in table expires by. Aggregated
/// tables use the time of their newest partial row, so a session or a tool
/// call goes only when all of it is older than the retention.
pub const TIME_EXPRESSIONS: &[(&str, &str)] = &[
    ("claude_messages", "timestamp"),
    // a result's partial row has a neutral (1970) `timestamp`, so its own time counts too
    ("claude_tool_usage", "greatest(timestamp, result_timestamp)"),
    ("claude_file_access", "timestamp"),
    ("claude_requests", "timestamp"),
    ("claude_sessions", "last_timestamp"),
    ("claude_summaries", "ingested_at"),
    ("claude_thinking", "timestamp"),
    ("claude_dead_letters", "ingested_at"),
    ("claude_daily_activity", "date"),
];

/// How long rows live: `Some(ttl)` or `None` = forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub amount: u32,
    /// ClickHouse interval function: toIntervalHour / Day / Week.
    pub unit: &'static str,
}

/// `30d`, `12w`, `48h`, or `forever`.
pub fn parse_period(text: &str) -> Result<Option<Period>> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let amount: u32 = num.parse().map_err(|_| {
        anyhow!("retention `{text}`: expected a number and h, d or w (e.g. 30d), or `forever`")
    })?;
    let unit = match unit.trim() {
        "h" => "toIntervalHour",
        "d" => "toIntervalDay",
        "w" => "toIntervalWeek",
        other => bail!("retention `{text}`: unknown unit `{other}` (use h, d or w)"),
    };
    if amount == 0 {
        bail!("retention `{text}` must be positive (or `forever`)");
    }
    Ok(Some(Period { amount, unit }))
}

/// Validate the whole section: known tables, valid periods.
pub fn parse_all(section: &BTreeMap<String, String>) -> Result<BTreeMap<String, Option<Period>>> {
    let mut out = BTreeMap::new();
    for (table, text) in section {
        if time_expression(table).is_none() {
            let known: Vec<&str> = TIME_EXPRESSIONS.iter().map(|(t, _)| *t).collect();
            bail!(
                "retention: `{table}` is not a table with a known time column (one of: {})",
                known.join(", ")
            );
        }
        out.insert(table.clone(), parse_period(text)?);
    }
    Ok(out)
}

pub fn time_expression(table: &str) -> Option<&'static str> {
    TIME_EXPRESSIONS
        .iter()
        .find(|(t, _)| *t == table)
        .map(|(_, e)| *e)
}

/// The TTL expression for a table, in the form ClickHouse prints it back
/// (so an unchanged setting is recognised and not re-applied).
pub fn ttl_expression(table: &str, period: &Period) -> Option<String> {
    let col = time_expression(table)?;
    Some(format!(
        "toDateTime({col}) + {}({})",
        period.unit, period.amount
    ))
}

/// The `TTL …` clause of a table's `engine_full`, if any.
pub fn current_ttl(engine_full: &str) -> Option<String> {
    let start = engine_full.find(" TTL ")? + 5;
    let rest = &engine_full[start..];
    let end = rest.find(" SETTINGS ").unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// Apply the configured retention. Returns the statements run (empty when
/// every table already has the wanted TTL).
pub async fn apply(client: &ChClient, section: &BTreeMap<String, String>) -> Result<Vec<String>> {
    if section.is_empty() {
        return Ok(Vec::new());
    }
    let wanted = parse_all(section)?;
    let tables = client
        .query_json(
            "SELECT name, engine, engine_full FROM system.tables WHERE database = {db:String}",
            &[("db", Value::from(client.database()))],
        )
        .await
        .context("cannot read the tables' TTLs")?;
    let mut done = Vec::new();
    for (table, _) in TIME_EXPRESSIONS {
        let Some(row) = tables.iter().find(|r| r["name"] == *table) else {
            continue;
        };
        let want = wanted
            .get(*table)
            .cloned()
            .flatten()
            .and_then(|p| ttl_expression(table, &p));
        if let Some(sql) = alter_for(client, table, row, &tables, want.as_deref())? {
            tracing::info!(
                table,
                ttl = want.as_deref().unwrap_or("none"),
                "changing retention"
            );
            client
                .execute(&sql)
                .await
                .with_context(|| format!("cannot change the TTL of {table} (the login needs ALTER on it: run once with the migrator login, see `schema --grants`)"))?;
            done.push(sql);
        }
    }
    Ok(done)
}

/// The ALTER that makes `table`'s TTL `want`, or None when it already is.
/// A Distributed table (cluster DDL from `schema --cluster`) gets its TTL on
/// the local tables it reads, on the whole cluster.
fn alter_for(
    client: &ChClient,
    table: &str,
    row: &serde_json::Map<String, Value>,
    tables: &[serde_json::Map<String, Value>],
    want: Option<&str>,
) -> Result<Option<String>> {
    let engine = row["engine"].as_str().unwrap_or_default();
    let (target, on_cluster, full) = if engine == "Distributed" {
        let (cluster, local) = distributed_target(row["engine_full"].as_str().unwrap_or_default())
            .ok_or_else(|| anyhow!("cannot read the Distributed engine of {table}"))?;
        let local_row = tables.iter().find(|r| r["name"] == local.as_str());
        let full = local_row
            .and_then(|r| r["engine_full"].as_str())
            .unwrap_or_default()
            .to_string();
        (local, format!(" ON CLUSTER `{cluster}`"), full)
    } else {
        let full = row["engine_full"].as_str().unwrap_or_default().to_string();
        (table.to_string(), String::new(), full)
    };
    let have = current_ttl(&full);
    let db = client.database();
    Ok(match (have.as_deref(), want) {
        (Some(h), Some(w)) if h == w => None,
        (None, None) => None,
        (_, Some(w)) => Some(format!(
            "ALTER TABLE `{db}`.`{target}`{on_cluster} MODIFY TTL {w}"
        )),
        (Some(_), None) => Some(format!(
            "ALTER TABLE `{db}`.`{target}`{on_cluster} REMOVE TTL"
        )),
    })
}

/// `Distributed('cluster', 'db', 'table', …)` → (cluster, table).
fn distributed_target(engine_full: &str) -> Option<(String, String)> {
    let args = engine_full.split_once('(')?.1;
    let mut parts = args
        .split(',')
        .map(|p| p.trim().trim_matches(|c| c == '\'' || c == '`' || c == ')'));
    let cluster = parts.next()?.to_string();
    let _db = parts.next()?;
    let local = parts.next()?.to_string();
    Some((cluster, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_period("30d").unwrap(),
            Some(Period {
                amount: 30,
                unit: "toIntervalDay"
            })
        );
        assert_eq!(parse_period("12w").unwrap().unwrap().unit, "toIntervalWeek");
        assert_eq!(parse_period("forever").unwrap(), None);
        for bad in ["", "d", "30", "30y", "0d", "-1d"] {
            assert!(parse_period(bad).is_err(), "{bad}");
        }
        let mut m = BTreeMap::new();
        m.insert("no_such_table".to_string(), "1d".to_string());
        assert!(parse_all(&m)
            .unwrap_err()
            .to_string()
            .contains("no_such_table"));
    }

    #[test]
    fn ttl_clauses_round_trip_through_engine_full() {
        let p = parse_period("30d").unwrap().unwrap();
        let e = ttl_expression("claude_messages", &p).unwrap();
        assert_eq!(e, "toDateTime(timestamp) + toIntervalDay(30)");
        let full = format!("ReplacingMergeTree PARTITION BY toYYYYMM(timestamp) ORDER BY (a) TTL {e} SETTINGS index_granularity = 8192");
        assert_eq!(current_ttl(&full).as_deref(), Some(e.as_str()));
        assert_eq!(current_ttl("MergeTree ORDER BY a SETTINGS x = 1"), None);
        assert_eq!(
            distributed_target("Distributed('team', 'claude_logs', 'claude_messages_local', cityHash64(host, user_name))"),
            Some(("team".into(), "claude_messages_local".into()))
        );
    }
}
