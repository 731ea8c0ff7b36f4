//! The one place that talks to ClickHouse (over its HTTP interface, through
//! the `clickhouse` crate): schema, idempotent inserts and parameterised reads.

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clickhouse::insert_formatted::InsertFormatted;
use clickhouse::Compression;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The built-in DDL, compiled into the binary so `schema` and `ingest` work
/// from any directory.
pub const BUILTIN_SCHEMA: &[(&str, &str)] = &[
    (
        "001_claude_messages.sql",
        include_str!("../../schema/001_claude_messages.sql"),
    ),
    (
        "002_claude_tool_usage.sql",
        include_str!("../../schema/002_claude_tool_usage.sql"),
    ),
    (
        "003_claude_file_access.sql",
        include_str!("../../schema/003_claude_file_access.sql"),
    ),
    (
        "004_claude_requests.sql",
        include_str!("../../schema/004_claude_requests.sql"),
    ),
    (
        "005_claude_sessions.sql",
        include_str!("../../schema/005_claude_sessions.sql"),
    ),
    (
        "006_claude_summaries.sql",
        include_str!("../../schema/006_claude_summaries.sql"),
    ),
    (
        "007_claude_dead_letters.sql",
        include_str!("../../schema/007_claude_dead_letters.sql"),
    ),
    (
        "008_claude_daily_activity.sql",
        include_str!("../../schema/008_claude_daily_activity.sql"),
    ),
    (
        "009_claude_thinking.sql",
        include_str!("../../schema/009_claude_thinking.sql"),
    ),
];

/// One DDL statement and where it came from (for error messages).
#[derive(Debug, Clone)]
pub struct Statement {
    pub origin: String,
    pub sql: String,
}

/// A string as a ClickHouse SQL literal (for statements built as text,
/// where a query parameter cannot go: scripts, DDL).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Split a DDL file into statements: `--` comment lines are dropped, then the
/// text is split on `;` (our DDL never has `;` inside literals).
pub fn split_statements(origin: &str, text: &str) -> Vec<Statement> {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    body.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Statement {
            origin: origin.to_string(),
            sql: s.to_string(),
        })
        .collect()
}

/// Built-in statements followed by every `*.sql` of `extra_dirs` (sorted by name).
pub fn schema_statements(extra_dirs: &[PathBuf]) -> Result<Vec<Statement>> {
    let mut out: Vec<Statement> = BUILTIN_SCHEMA
        .iter()
        .flat_map(|(name, text)| split_statements(&format!("schema/{name}"), text))
        .collect();
    for dir in extra_dirs {
        if !dir.exists() {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list schema dir {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            out.extend(split_statements(&f.display().to_string(), &text));
        }
    }
    Ok(out)
}

/// Settings of one connection (`Debug` hides the password).
#[derive(Clone)]
pub struct ChSettings {
    pub url: String,
    pub user: String,
    pub password: String,
    pub database: String,
    pub lz4: bool,
}

impl std::fmt::Debug for ChSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChSettings")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("database", &self.database)
            .field("lz4", &self.lz4)
            .finish()
    }
}

/// A ClickHouse connection bound to one database.
#[derive(Clone)]
pub struct ChClient {
    settings: ChSettings,
    /// Client without a default database (for `CREATE DATABASE`).
    base: clickhouse::Client,
    /// Client whose default database is `settings.database`.
    db: clickhouse::Client,
}

/// What a failed insert means for the batch. Only `Data` may lead to dead
/// letters; the other two are retried (checkpoints held) until they pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The server is unreachable, overloaded or timed out.
    Unavailable,
    /// The server is up but cannot store now (disk full, too many parts,
    /// memory limit, read-only): more space or time fixes it, not the data.
    Storage,
    /// Something in the rows themselves (a value that does not parse or fit):
    /// the same bytes fail every time, so the culprit rows are dead-lettered.
    Data,
}

/// Exception codes caused by the content of a row (parse, type and range errors)
/// or by the statement/schema (unknown table or column): retrying cannot help.
/// EOF/short-read codes are absent on purpose: our rows are always complete
/// JSON, so those mean a truncated transfer, not bad data.
const DATA_ERROR_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    16,  // NO_SUCH_COLUMN_IN_TABLE
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    44,  // ILLEGAL_COLUMN
    47,  // UNKNOWN_IDENTIFIER
    53,  // TYPE_MISMATCH
    60,  // UNKNOWN_TABLE
    62,  // SYNTAX_ERROR
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    73,  // UNKNOWN_FORMAT
    81,  // UNKNOWN_DATABASE
    117, // INCORRECT_DATA
    130, // CANNOT_READ_ARRAY_FROM_TEXT
    131, // TOO_LARGE_STRING_SIZE
    190, // SIZES_OF_ARRAYS_DONT_MATCH
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    386, // NO_COMMON_TYPE
    407, // DECIMAL_OVERFLOW
    455, // SUSPICIOUS_TYPE_FOR_LOW_CARDINALITY
    471, // INVALID_SETTING_VALUE
    691, // UNKNOWN_ELEMENT_OF_ENUM
];

/// Exception codes that mean "the server cannot store this now".
const STORAGE_ERROR_CODES: &[u32] = &[
    74,  // CANNOT_READ_FROM_FILE_DESCRIPTOR
    75,  // CANNOT_WRITE_TO_FILE_DESCRIPTOR
    76,  // CANNOT_OPEN_FILE
    164, // READONLY
    173, // CANNOT_ALLOCATE_MEMORY
    241, // MEMORY_LIMIT_EXCEEDED (batches are bounded in bytes, so it is the server's state)
    242, // TABLE_IS_READ_ONLY
    243, // NOT_ENOUGH_SPACE
    252, // TOO_MANY_PARTS
    425, // SYSTEM_ERROR
];

/// Classify an error from this module.
pub fn classify_error(err: &anyhow::Error) -> FailureKind {
    for cause in err.chain() {
        if let Some(clickhouse::error::Error::BadResponse(text)) =
            cause.downcast_ref::<clickhouse::error::Error>()
        {
            return classify_response(text);
        }
    }
    FailureKind::Unavailable
}

/// Classify a server's error text (`Code: N. DB::Exception: ...`).
pub fn classify_response(text: &str) -> FailureKind {
    // A full disk also shows up as an OS error without a storage code (e.g.
    // the embedded front cannot write the request body to its temp file).
    let no_space = ["No space left on device", "errno: 28", "Errno 28"];
    match exception_code(text) {
        Some(code) if DATA_ERROR_CODES.contains(&code) => FailureKind::Data,
        Some(code) if STORAGE_ERROR_CODES.contains(&code) => FailureKind::Storage,
        _ if no_space.iter().any(|s| text.contains(s)) => FailureKind::Storage,
        _ => FailureKind::Unavailable,
    }
}

/// `Code: 27. DB::Exception: ...` → 27.
pub fn exception_code(text: &str) -> Option<u32> {
    let idx = text.find("Code: ")?;
    let rest = &text[idx + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

impl ChClient {
    pub fn new(settings: ChSettings) -> Result<ChClient> {
        if !valid_identifier(&settings.database) {
            bail!(
                "database name `{}` must match [A-Za-z_][A-Za-z0-9_]*",
                settings.database
            );
        }
        let mut base = clickhouse::Client::default()
            .with_url(settings.url.trim_end_matches('/'))
            .with_user(settings.user.clone())
            .with_compression(if settings.lz4 {
                Compression::Lz4
            } else {
                Compression::None
            });
        if !settings.password.is_empty() {
            base = base.with_password(settings.password.clone());
        }
        let db = base.clone().with_database(settings.database.clone());
        Ok(ChClient { settings, base, db })
    }

    pub fn database(&self) -> &str {
        &self.settings.database
    }

    pub fn url(&self) -> &str {
        &self.settings.url
    }

    /// The same server, another database.
    pub fn with_database(&self, database: &str) -> Result<ChClient> {
        let mut s = self.settings.clone();
        s.database = database.to_string();
        ChClient::new(s)
    }

    /// The same server and database under another login (e.g. the embedded
    /// engine's read-only `reader`).
    pub fn with_login(&self, user: &str, password: &str) -> Result<ChClient> {
        let mut s = self.settings.clone();
        s.user = user.to_string();
        s.password = password.to_string();
        ChClient::new(s)
    }

    /// Cheap reachability check with a message that says what to do.
    pub async fn ping(&self) -> Result<()> {
        self.base
            .query_raw("SELECT 1")
            .execute()
            .await
            .with_context(|| {
                format!(
                    "ClickHouse at {} is unreachable or refused the login (is the server running? \
                     check clickhouse.url / --clickhouse-url, user and password)",
                    self.settings.url
                )
            })
    }

    /// Wait until the server answers, up to `total`.
    pub async fn wait_ready(&self, total: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + total;
        loop {
            match self.ping().await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Bring the database to the newest schema: versioned migrations, then
    /// the schema files (see `migrations.rs`).
    pub async fn ensure_schema(&self, extra_dirs: &[PathBuf]) -> Result<()> {
        let who = super::identity::Identity::system();
        super::migrations::migrate(self, extra_dirs, &who).await?;
        Ok(())
    }

    pub async fn create_database(&self) -> Result<()> {
        self.base
            .query_raw(&format!(
                "CREATE DATABASE IF NOT EXISTS `{}`",
                self.settings.database
            ))
            .execute()
            .await
            .with_context(|| format!("cannot create database {}", self.settings.database))
    }

    /// Names of the tables and views in the database.
    pub async fn table_names(&self) -> Result<HashSet<String>> {
        let rows = self
            .query_json(
                "SELECT name FROM system.tables WHERE database = {db:String}",
                &[("db", Value::from(self.settings.database.clone()))],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(str::to_string))
            .collect())
    }

    pub async fn execute(&self, sql: &str) -> Result<()> {
        self.db
            .query_raw(sql)
            .execute()
            .await
            .with_context(|| format!("ClickHouse statement failed: {}", first_line(sql)))
    }

    /// Column names of every table in the database.
    pub async fn table_columns(&self) -> Result<HashMap<String, HashSet<String>>> {
        let rows = self
            .query_json(
                "SELECT table, name FROM system.columns WHERE database = {db:String} \
                 AND default_kind NOT IN ('MATERIALIZED', 'ALIAS')",
                &[("db", Value::from(self.settings.database.clone()))],
            )
            .await?;
        let mut out: HashMap<String, HashSet<String>> = HashMap::new();
        for r in rows {
            if let (Some(Value::String(t)), Some(Value::String(c))) =
                (r.get("table"), r.get("name"))
            {
                out.entry(t.clone()).or_default().insert(c.clone());
            }
        }
        Ok(out)
    }

    /// Insert pre-serialised JSONEachRow data into `table` with an insert
    /// deduplication token: replaying the same (token, data) is a no-op, which is
    /// what makes spool replay after a crash exactly-once.
    pub async fn insert_json_each_row(&self, table: &str, data: Bytes, token: &str) -> Result<()> {
        let one = |_| std::future::ready(Ok(data.clone()));
        self.insert_json_each_row_chunks(table, token, 1, one).await
    }

    /// The same insert with its data sent in `chunks` pieces, piece `i` from
    /// `chunk(i)`: a batch's rows are streamed from the spool rather than
    /// held in memory whole. An error before the end aborts the insert
    /// (nothing half-stored).
    pub async fn insert_json_each_row_chunks<F, Fut>(
        &self,
        table: &str,
        token: &str,
        chunks: usize,
        mut chunk: F,
    ) -> Result<()>
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future<Output = Result<Bytes>>,
    {
        let mut insert = self.json_each_row_insert(table, token)?;
        for i in 0..chunks {
            let data = chunk(i).await?;
            insert
                .send(data)
                .await
                .with_context(|| format!("insert into {table} failed"))?;
        }
        insert
            .end()
            .await
            .with_context(|| format!("insert into {table} failed"))
    }

    /// A JSONEachRow insert into `table` with a deduplication token and the
    /// settings every insert of ours carries.
    fn json_each_row_insert(&self, table: &str, token: &str) -> Result<InsertFormatted> {
        if !valid_identifier(table) {
            bail!("invalid table name `{table}`");
        }
        let sql = format!(
            "INSERT INTO `{}`.`{}` FORMAT JSONEachRow",
            self.settings.database, table
        );
        Ok(self
            .base
            .insert_formatted_with(sql)
            .with_setting("insert_deduplicate", "1")
            .with_setting("insert_deduplication_token", token)
            .with_setting("deduplicate_blocks_in_dependent_materialized_views", "1")
            .with_setting("date_time_input_format", "best_effort")
            .with_setting("input_format_skip_unknown_fields", "0")
            // One parsing thread per insert: the parallel parser's segmenting
            // and hand-offs cost CPU (chDB 4.4 → 3.5 CPU-s on the bench's
            // 300k lines) that an embedded engine takes from the router.
            .with_setting("input_format_parallel_parsing", "0")
            .with_setting("max_insert_block_size", "10000000")
            .with_setting("min_insert_block_size_rows", "0")
            .with_setting("min_insert_block_size_bytes", "0"))
    }

    /// Run a read query with server-side parameters (`{name:Type}` in the SQL,
    /// values passed separately: user input never becomes SQL text).
    pub async fn query_json(
        &self,
        sql: &str,
        params: &[(&str, Value)],
    ) -> Result<Vec<Map<String, Value>>> {
        let bytes = self.query_bytes(sql, params, "JSONEachRow").await?;
        let mut out = Vec::new();
        for line in bytes.split(|b| *b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Map<String, Value> =
                serde_json::from_slice(line).context("ClickHouse returned a malformed JSON row")?;
            out.push(v);
        }
        Ok(out)
    }

    /// Raw query output in `format`.
    pub async fn query_bytes(
        &self,
        sql: &str,
        params: &[(&str, Value)],
        format: &str,
    ) -> Result<Vec<u8>> {
        let mut q = self
            .db
            .query_raw(sql)
            .with_setting("output_format_json_quote_64bit_integers", "0")
            .with_setting("output_format_json_quote_decimals", "0");
        for (name, value) in params {
            q = match value {
                Value::String(s) => q.param(name, s.as_str()),
                Value::Bool(b) => q.param(name, *b),
                Value::Number(n) if n.is_u64() => q.param(name, n.as_u64().unwrap_or_default()),
                Value::Number(n) if n.is_i64() => q.param(name, n.as_i64().unwrap_or_default()),
                Value::Number(n) => q.param(name, n.as_f64().unwrap_or_default()),
                Value::Array(items) => {
                    let strings: Vec<String> = items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect();
                    q.param(name, strings)
                }
                Value::Null | Value::Object(_) => {
                    return Err(anyhow!("unsupported parameter type for `{name}`"))
                }
            };
        }
        let mut cursor = q
            .fetch_bytes(format)
            .with_context(|| format!("query failed: {}", first_line(sql)))?;
        let mut out = Vec::new();
        while let Some(chunk) = cursor
            .next()
            .await
            .with_context(|| format!("query failed: {}", first_line(sql)))?
        {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// `SELECT count() FROM table [FINAL]` — handy for tests and summaries.
    pub async fn count(&self, table: &str, final_: bool) -> Result<u64> {
        if !valid_identifier(table) {
            bail!("invalid table name `{table}`");
        }
        let sql = format!(
            "SELECT count() AS c FROM `{table}`{}",
            if final_ { " FINAL" } else { "" }
        );
        let rows = self.query_json(&sql, &[]).await?;
        rows.first()
            .and_then(|r| r.get("c"))
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow!("count() returned no row"))
    }

    pub async fn drop_database(&self) -> Result<()> {
        self.base
            .query_raw(&format!(
                "DROP DATABASE IF EXISTS `{}`",
                self.settings.database
            ))
            .execute()
            .await
            .context("drop database")
    }
}

fn first_line(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or_default();
    line.chars().take(120).collect()
}

/// Does a path look like a DDL file (used by the rules dir scanner).
pub fn is_sql_file(p: &Path) -> bool {
    p.extension().is_some_and(|x| x == "sql")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_builtin_schema() {
        let st = schema_statements(&[]).unwrap();
        // 9 tables and a view (upgrades of older databases are in migrations.rs)
        let creates: Vec<&Statement> = st
            .iter()
            .filter(|s| s.sql.starts_with("CREATE TABLE"))
            .collect();
        assert_eq!(creates.len(), 9);
        assert!(st.iter().any(|s| s.sql.contains("MATERIALIZED VIEW")));
        assert!(st.iter().all(|s| s.sql.contains("IF NOT EXISTS")));
        // every table carries the identity, at the end of its key
        for c in creates {
            assert!(
                c.sql
                    .contains("host                        LowCardinality(String)"),
                "{}",
                c.sql
            );
            assert!(c.sql.contains("host, user_name)\n"), "{}", c.sql);
        }
    }

    #[test]
    fn storage_errors_are_not_data_errors() {
        for text in [
            "Code: 243. DB::Exception: Cannot reserve 9.69 MiB, not enough space. (NOT_ENOUGH_SPACE)",
            "Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)",
            "Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED)",
            "Code: 1001. DB::Exception: [Errno 28] No space left on device",
        ] {
            assert_eq!(classify_response(text), FailureKind::Storage, "{text}");
        }
        assert_eq!(
            classify_response("Code: 159. DB::Exception: Timeout exceeded (TIMEOUT_EXCEEDED)"),
            FailureKind::Unavailable
        );
        assert_eq!(
            classify_response("Code: 27. DB::Exception: Cannot parse input: expected '\"'"),
            FailureKind::Data
        );
    }

    #[test]
    fn exception_codes() {
        assert_eq!(
            exception_code("Code: 27. DB::Exception: Cannot parse input"),
            Some(27)
        );
        assert_eq!(exception_code("no code here"), None);
    }
}

#[cfg(test)]
mod server_tests {
    use super::super::testing;
    use serde_json::json;

    #[tokio::test]
    async fn dedup_token_makes_replay_a_no_op_and_params_are_bound() {
        let ch = testing::fresh_client("chclient").await;
        let row = json!({"uuid": "u1", "session_id": "s1", "project": "p", "timestamp": "2026-01-02T03:04:05.678Z",
                         "entry_type": "user", "content": "hi ' \\\" {x}", "is_sidechain": true, "labels": ["a"]});
        let data = bytes::Bytes::from(format!("{row}\n"));
        ch.insert_json_each_row("claude_messages", data.clone(), "b1:m")
            .await
            .unwrap();
        ch.insert_json_each_row("claude_messages", data.clone(), "b1:m")
            .await
            .unwrap();
        assert_eq!(ch.count("claude_messages", false).await.unwrap(), 1);
        ch.insert_json_each_row("claude_messages", data, "b2:m")
            .await
            .unwrap();
        assert_eq!(ch.count("claude_messages", false).await.unwrap(), 2);
        assert_eq!(ch.count("claude_messages", true).await.unwrap(), 1);
        let r = ch
            .query_json(
                "SELECT content FROM claude_messages WHERE uuid = {u:String} LIMIT 1",
                &[("u", json!("u1"))],
            )
            .await
            .unwrap();
        assert_eq!(r[0]["content"], json!("hi ' \\\" {x}"));
        let err = ch
            .insert_json_each_row(
                "claude_messages",
                bytes::Bytes::from("{\"timestamp\": \"not a date\"}\n"),
                "b3:m",
            )
            .await
            .unwrap_err();
        assert_eq!(
            super::classify_error(&err),
            super::FailureKind::Data,
            "{err:#}"
        );
        ch.drop_database().await.unwrap();
    }
}
