//! `claude-ingest sql "SELECT ..."`: one query on the store the engine uses
//! (embedded or server), printed as a table, JSON, TSV or CSV. On the embedded
//! store it runs with the read-only `reader` key (the front refuses writes and
//! anything outside the data); `main` attaches to a running `ingest`'s engine.

use crate::sink::clickhouse::ChClient;
use anyhow::{Context, Result};
use serde_json::Value;
use std::io::Write;

/// Widest a table cell gets before it is cut (with `…`).
const MAX_CELL: usize = 60;

#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// The query (one statement: SELECT, WITH, SHOW, DESCRIBE, EXISTS, EXPLAIN).
    pub query: String,
    /// Output: an aligned table, a JSON array of objects, or TSV/CSV with a header.
    #[arg(long, value_enum, default_value = "table")]
    pub format: SqlFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlFormat {
    Table,
    Json,
    Tsv,
    Csv,
}

pub async fn run(client: &ChClient, args: &SqlArgs) -> Result<()> {
    let out = query(client, &args.query, args.format).await?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&out).context("cannot write the result")?;
    stdout.flush().context("cannot write the result")
}

/// The query's result, formatted.
pub async fn query(client: &ChClient, sql: &str, format: SqlFormat) -> Result<Vec<u8>> {
    match format {
        // ClickHouse's own writers: exact escaping, streamed as it sends them.
        SqlFormat::Tsv => client.query_bytes(sql, &[], "TSVWithNames").await,
        SqlFormat::Csv => client.query_bytes(sql, &[], "CSVWithNames").await,
        SqlFormat::Json | SqlFormat::Table => {
            let raw = client.query_bytes(sql, &[], "JSONCompact").await?;
            let result: Compact =
                serde_json::from_slice(&raw).context("ClickHouse returned malformed JSON")?;
            Ok(if format == SqlFormat::Json {
                let mut text = serde_json::to_string_pretty(&result.objects())?;
                text.push('\n');
                text.into_bytes()
            } else {
                result.table().into_bytes()
            })
        }
    }
}

/// ClickHouse's `JSONCompact` output: column names and types even for no rows.
#[derive(serde::Deserialize)]
struct Compact {
    meta: Vec<Column>,
    data: Vec<Vec<Value>>,
}

#[derive(serde::Deserialize)]
struct Column {
    name: String,
    #[serde(rename = "type")]
    type_: String,
}

/// One result row as a JSON object whose keys keep the query's column order
/// (serde_json's own maps sort their keys).
struct Row<'a>(&'a [Column], &'a [Value]);

impl serde::Serialize for Row<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (c, v) in self.0.iter().zip(self.1) {
            map.serialize_entry(&c.name, v)?;
        }
        map.end()
    }
}

impl Compact {
    fn objects(&self) -> Vec<Row<'_>> {
        self.data.iter().map(|row| Row(&self.meta, row)).collect()
    }

    /// Aligned columns, numbers to the right, then "(N rows)".
    fn table(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .data
            .iter()
            .map(|row| row.iter().map(cell).collect())
            .collect();
        let widths: Vec<usize> = self
            .meta
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells
                    .iter()
                    .map(|r| r.get(i).map_or(0, |s| s.chars().count()))
                    .chain([c.name.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let numeric: Vec<bool> = self.meta.iter().map(|c| is_numeric(&c.type_)).collect();
        let line = |values: Vec<&str>, align: &[bool]| -> String {
            let parts: Vec<String> = values
                .iter()
                .zip(&widths)
                .zip(align)
                .map(|((v, w), right)| pad(v, *w, *right))
                .collect();
            parts.join("  ").trim_end().to_string() + "\n"
        };
        let names: Vec<&str> = self.meta.iter().map(|c| c.name.as_str()).collect();
        let mut out = line(names, &numeric);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out += &line(rule.iter().map(String::as_str).collect(), &numeric);
        for r in &cells {
            out += &line(r.iter().map(String::as_str).collect(), &numeric);
        }
        let n = self.data.len();
        out += &format!("({n} row{})\n", if n == 1 { "" } else { "s" });
        out
    }
}

/// One value as a table cell: strings bare, NULL spelled out, nested values
/// as JSON, on one line and at most `MAX_CELL` characters.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.chars().count() > MAX_CELL {
        one_line.chars().take(MAX_CELL - 1).collect::<String>() + "…"
    } else {
        one_line
    }
}

fn pad(v: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(v.chars().count()));
    if right {
        fill + v
    } else {
        v.to_string() + &fill
    }
}

fn is_numeric(type_: &str) -> bool {
    let mut inner = type_;
    while let Some(rest) = inner
        .strip_prefix("Nullable(")
        .or_else(|| inner.strip_prefix("LowCardinality("))
    {
        inner = rest;
    }
    ["Int", "UInt", "Float", "Decimal"]
        .iter()
        .any(|p| inner.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compact() -> Compact {
        serde_json::from_value(json!({
            "meta": [{"name": "project", "type": "String"}, {"name": "n", "type": "UInt64"},
                     {"name": "cost", "type": "Nullable(Float64)"}],
            "data": [["/home/me/app", 12, 0.5], ["x\ty", 3, null]],
            "rows": 2
        }))
        .unwrap()
    }

    #[test]
    fn table_aligns_numbers_right_and_counts_rows() {
        let t = compact().table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "project        n  cost");
        assert_eq!(lines[1], "------------  --  ----");
        assert_eq!(lines[2], "/home/me/app  12   0.5");
        assert_eq!(lines[3], "x y            3  NULL");
        assert_eq!(lines[4], "(2 rows)");
    }

    #[test]
    fn json_keeps_column_order_and_types() {
        let c = compact();
        let objs = c.objects();
        assert_eq!(
            serde_json::to_string(&objs[0]).unwrap(),
            r#"{"project":"/home/me/app","n":12,"cost":0.5}"#
        );
        assert_eq!(serde_json::to_value(&objs[1]).unwrap()["cost"], Value::Null);
    }

    #[test]
    fn long_cells_are_cut() {
        let long = "a".repeat(200);
        let c = cell(&Value::String(long));
        assert_eq!(c.chars().count(), MAX_CELL);
        assert!(c.ends_with('…'));
        assert!(is_numeric("LowCardinality(Nullable(UInt8))"));
        assert!(!is_numeric("String") && !is_numeric("Array(UInt8)"));
    }
}
