//! Batching writer: collects rows (size + time thresholds), spools each batch,
//! inserts it table by table with dedup tokens, retries while ClickHouse is
//! unavailable (the bounded channels upstream then fill up and the tailer
//! waits: backpressure, bounded memory), and only then commits the source
//! checkpoints.

use super::clickhouse::{classify_error, ChClient, FailureKind};
use super::spool::{Spool, SpooledBatch};
use super::status::{now_ms, IngestStatus};
use crate::row::{Columns, Row};
use crate::source::{CheckpointStore, FileCheckpoint};
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub const DEAD_LETTER_TABLE: &str = "claude_dead_letters";

/// What flows from the router to the writer.
pub enum SinkItem {
    /// The rows of one source line and the checkpoint that line completes.
    Rows {
        rows: Vec<Row>,
        checkpoint: Option<(PathBuf, FileCheckpoint)>,
        read_at_ms: u64,
    },
    /// A file was deleted: forget its checkpoint (after earlier rows are stored).
    Forget(PathBuf),
    /// Store everything received so far, then answer.
    Flush(oneshot::Sender<()>),
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    pub max_rows: usize,
    /// Used instead of `max_rows` until the source has caught up.
    pub backfill_max_rows: usize,
    pub max_delay: Duration,
    /// Extra DDL dirs re-applied when rows name a table we have not seen (plugin tables).
    pub schema_dirs: Vec<PathBuf>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub batches: u64,
    pub rows: u64,
    pub dead_letters: u64,
}

pub struct Writer {
    client: ChClient,
    spool: Spool,
    checkpoints: CheckpointStore,
    status: Arc<IngestStatus>,
    shutdown: Arc<AtomicBool>,
    cfg: WriterConfig,
    columns: HashMap<String, HashSet<String>>,
    warned: HashSet<(String, String)>,
    seq: u64,
    pub stats: WriterStats,
}

/// A line (or row) that could not be stored, and why: one `claude_dead_letters` row.
pub struct DeadLetter<'a> {
    pub source_file: &'a str,
    pub offset: u64,
    pub length: u64,
    pub stage: &'a str,
    pub error: &'a str,
    /// The raw text, already redacted.
    pub raw_line: String,
    /// Raw bytes (base64) for lines that are not valid UTF-8; may be empty.
    pub raw_base64: String,
    pub truncated: bool,
}

impl DeadLetter<'_> {
    pub fn into_row(self) -> Row {
        Row::new(DEAD_LETTER_TABLE)
            .with("source_file", self.source_file)
            .with("source_offset", self.offset)
            .with("line_length", self.length)
            .with("stage", self.stage)
            .with("error", self.error)
            .with("raw_line", self.raw_line)
            .with("raw_base64", self.raw_base64)
            .with("raw_truncated", self.truncated)
    }
}

impl Writer {
    pub async fn new(
        client: ChClient,
        spool: Spool,
        checkpoints: CheckpointStore,
        status: Arc<IngestStatus>,
        shutdown: Arc<AtomicBool>,
        cfg: WriterConfig,
    ) -> Result<Writer> {
        let columns = client.table_columns().await?;
        Ok(Writer {
            client,
            spool,
            checkpoints,
            status,
            shutdown,
            cfg,
            columns,
            warned: HashSet::new(),
            seq: 0,
            stats: WriterStats::default(),
        })
    }

    pub fn checkpoints(&self) -> &CheckpointStore {
        &self.checkpoints
    }

    /// Finish batches a previous run spooled but may not have stored.
    pub async fn replay_spool(&mut self) -> Result<usize> {
        let pending = self.spool.pending()?;
        let n = pending.len();
        for batch in pending {
            tracing::info!(batch = %batch.batch_id, rows = batch.row_count(), "replaying spooled batch");
            self.store(batch).await?;
        }
        Ok(n)
    }

    fn next_batch_id(&mut self) -> String {
        self.seq += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        format!("{nanos:020}-{}-{:06}", std::process::id(), self.seq)
    }

    /// Spool, insert and commit one batch.
    pub async fn write(
        &mut self,
        rows: Vec<Row>,
        checkpoints: Vec<(PathBuf, Option<FileCheckpoint>)>,
    ) -> Result<()> {
        if rows.is_empty() {
            if !checkpoints.is_empty() {
                self.checkpoints.commit(&checkpoints)?;
            }
            return Ok(());
        }
        let batch = SpooledBatch::new(self.next_batch_id(), rows, checkpoints);
        let t0 = std::time::Instant::now();
        self.spool.write(&batch)?;
        tracing::debug!(batch = %batch.batch_id, ms = t0.elapsed().as_millis() as u64, "batch spooled");
        self.store(batch).await
    }

    async fn store(&mut self, batch: SpooledBatch) -> Result<()> {
        let mut dead: Vec<Row> = Vec::new();
        let mut stored = 0u64;
        // Prepare every table's rows first (schema checks need `&mut self`) ...
        let mut prepared: Vec<(String, Vec<Columns>)> = Vec::new();
        for (table, rows) in &batch.tables {
            if !self.columns.contains_key(table) {
                self.refresh_schema().await;
            }
            let Some(known) = self.columns.get(table).cloned() else {
                for r in rows {
                    dead.push(self.sink_dead_letter(r, &format!(
                        "table `{table}` does not exist in database `{}` (add its DDL to a schema dir)",
                        self.client.database()
                    )));
                }
                continue;
            };
            let rows: Vec<Columns> = rows
                .iter()
                .map(|r| self.keep_known(table, &known, r))
                .collect();
            prepared.push((table.clone(), rows));
        }
        // ... then insert all tables concurrently: each has its own dedup token,
        // so order between them does not matter and latency is one round trip.
        let mut inserts = tokio::task::JoinSet::new();
        for (table, rows) in prepared {
            let ins = self.inserter();
            let token = format!("{}:{}", batch.batch_id, table);
            inserts.spawn(async move {
                let r = ins.insert_retrying(&table, &rows, &token).await;
                (table, rows, r)
            });
        }
        let mut rejected = Vec::new();
        let t_insert = std::time::Instant::now();
        while let Some(done) = inserts.join_next().await {
            let (table, rows, r) = done.context("insert task panicked")?;
            match r {
                Ok(()) => stored += rows.len() as u64,
                Err(e) if classify_error(&e) == FailureKind::Data => {
                    rejected.push((table, rows, e))
                }
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(batch = %batch.batch_id, ms = t_insert.elapsed().as_millis() as u64, "tables inserted");
        rejected.sort_by(|a, b| a.0.cmp(&b.0));
        for (table, rows, e) in rejected {
            // Bad data somewhere in the block: find the culprits row by row
            // (deterministic tokens, so a replay does the same).
            tracing::warn!(table, error = %format!("{e:#}"), "batch rejected; retrying row by row");
            let ins = self.inserter();
            for (i, r) in rows.iter().enumerate() {
                let token = format!("{}:{}:{}", batch.batch_id, table, i);
                match ins
                    .insert_retrying(&table, std::slice::from_ref(r), &token)
                    .await
                {
                    Ok(()) => stored += 1,
                    Err(e) if classify_error(&e) == FailureKind::Data => {
                        dead.push(self.sink_dead_letter(r, &format!("{e:#}")))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if !dead.is_empty() {
            let rows: Vec<Columns> = dead.into_iter().map(|r| r.columns).collect();
            let token = format!("{}:{}:sink", batch.batch_id, DEAD_LETTER_TABLE);
            self.inserter()
                .insert_retrying(DEAD_LETTER_TABLE, &rows, &token)
                .await?;
            self.stats.dead_letters += rows.len() as u64;
            self.status
                .dead_letters
                .fetch_add(rows.len() as u64, Relaxed);
        }
        self.checkpoints.commit(&batch.checkpoints)?;
        self.spool.remove(&batch.batch_id)?;
        self.stats.batches += 1;
        self.stats.rows += stored;
        self.status.batches_written.fetch_add(1, Relaxed);
        self.status.rows_written.fetch_add(stored, Relaxed);
        self.status.last_insert_ms.store(now_ms(), Relaxed);
        tracing::debug!(batch = %batch.batch_id, rows = stored, "batch stored");
        Ok(())
    }

    fn sink_dead_letter(&self, r: &Columns, error: &str) -> Row {
        let file = r.get("source_file").and_then(Value::as_str).unwrap_or("");
        let offset = r.get("source_offset").and_then(Value::as_u64).unwrap_or(0);
        let raw = Value::Object(r.clone()).to_string();
        DeadLetter {
            source_file: file,
            offset,
            length: raw.len() as u64,
            stage: "sink",
            error,
            raw_line: raw,
            raw_base64: String::new(),
            truncated: false,
        }
        .into_row()
    }

    /// Drop columns the table does not have (warning once per column) rather than
    /// failing every batch over a typo in a rule file.
    fn keep_known(&mut self, table: &str, known: &HashSet<String>, r: &Columns) -> Columns {
        let mut out = Columns::new();
        for (k, v) in r {
            if known.contains(k) {
                out.insert(k.clone(), v.clone());
            } else if self.warned.insert((table.to_string(), k.clone())) {
                tracing::warn!(table, column = %k, "rules write a column the table does not have; ignoring it");
            }
        }
        out
    }

    async fn refresh_schema(&mut self) {
        if let Err(e) = self.client.ensure_schema(&self.cfg.schema_dirs).await {
            tracing::warn!(error = %format!("{e:#}"), "re-applying schema failed");
        }
        match self.client.table_columns().await {
            Ok(c) => self.columns = c,
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot read table columns"),
        }
    }

    fn inserter(&self) -> Inserter {
        Inserter {
            client: self.client.clone(),
            status: self.status.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

/// What an insert needs, cloneable into concurrent tasks.
#[derive(Clone)]
struct Inserter {
    client: ChClient,
    status: Arc<IngestStatus>,
    shutdown: Arc<AtomicBool>,
}

impl Inserter {
    /// Insert, retrying transient failures with capped exponential backoff for
    /// as long as it takes (the batch is safe in the spool meanwhile). Gives up
    /// only on a data error or when shutting down.
    async fn insert_retrying(&self, table: &str, rows: &[Columns], token: &str) -> Result<()> {
        let mut data = Vec::with_capacity(rows.len() * 512);
        for r in rows {
            serde_json::to_writer(&mut data, r)?;
            data.push(b'\n');
        }
        let data = Bytes::from(data);
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match self
                .client
                .insert_json_each_row(table, data.clone(), token)
                .await
            {
                Ok(()) => {
                    if self.status.clickhouse_down.swap(false, Relaxed) {
                        tracing::info!("ClickHouse is reachable again");
                        self.status.set_error(None);
                    }
                    return Ok(());
                }
                Err(e) if classify_error(&e) == FailureKind::Data => return Err(e),
                Err(e) => {
                    self.status.insert_failures.fetch_add(1, Relaxed);
                    self.status.clickhouse_down.store(true, Relaxed);
                    self.status.set_error(Some(format!("{e:#}")));
                    if self.shutdown.load(Relaxed) {
                        return Err(e.context("shutting down while ClickHouse is unavailable; the batch stays spooled and is replayed on the next start"));
                    }
                    tracing::warn!(table, attempt, retry_in_ms = delay.as_millis() as u64, error = %format!("{e:#}"), "insert failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// The writer task: batches items from `rx` until it closes, then flushes.
pub async fn run_writer(
    mut writer: Writer,
    mut rx: mpsc::Receiver<SinkItem>,
) -> Result<WriterStats> {
    let status = writer.status.clone();
    let mut rows: Vec<Row> = Vec::new();
    let mut cps: HashMap<PathBuf, Option<FileCheckpoint>> = HashMap::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let item = match deadline {
            Some(d) => tokio::select! {
                item = rx.recv() => Some(item),
                _ = tokio::time::sleep_until(d) => None,
            },
            None => Some(rx.recv().await),
        };
        let mut flush_now = false;
        let mut waiter = None;
        let mut closed = false;
        match item {
            None => flush_now = true, // the time threshold
            Some(None) => {
                closed = true;
                flush_now = true;
            }
            Some(Some(SinkItem::Rows {
                rows: r,
                checkpoint,
                read_at_ms,
            })) => {
                status.pending_rows.fetch_add(r.len() as u64, Relaxed);
                let _ = status.oldest_pending_ms.compare_exchange(
                    0,
                    read_at_ms.max(1),
                    Relaxed,
                    Relaxed,
                );
                rows.extend(r);
                if let Some((p, cp)) = checkpoint {
                    cps.insert(p, Some(cp));
                }
                deadline.get_or_insert_with(|| Instant::now() + writer.cfg.max_delay);
                let limit = if status.caught_up.load(Relaxed) {
                    writer.cfg.max_rows
                } else {
                    writer.cfg.backfill_max_rows.max(writer.cfg.max_rows)
                };
                flush_now = rows.len() >= limit;
            }
            Some(Some(SinkItem::Forget(p))) => {
                cps.insert(p, None);
                deadline.get_or_insert_with(|| Instant::now() + writer.cfg.max_delay);
            }
            Some(Some(SinkItem::Flush(tx))) => {
                flush_now = true;
                waiter = Some(tx);
            }
        }
        if flush_now && (!rows.is_empty() || !cps.is_empty()) {
            let batch_rows = std::mem::take(&mut rows);
            let n = batch_rows.len() as u64;
            let batch_cps: Vec<_> = cps.drain().collect();
            writer.write(batch_rows, batch_cps).await?;
            status
                .pending_rows
                .fetch_sub(n.min(status.pending_rows.load(Relaxed)), Relaxed);
            status.oldest_pending_ms.store(0, Relaxed);
        }
        if flush_now {
            deadline = None;
        }
        if let Some(tx) = waiter {
            let _ = tx.send(());
        }
        if closed {
            return Ok(writer.stats);
        }
    }
}

/// Convenience for tests and the pipeline: error if the writer task died.
pub fn writer_gone() -> anyhow::Error {
    anyhow!("the ClickHouse writer stopped (see the error above)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::testing;
    use crate::source::{FileCheckpoint, FileId};

    async fn writer(dir: &std::path::Path, client: ChClient) -> Writer {
        Writer::new(
            client,
            Spool::open(&dir.join("spool")).unwrap(),
            CheckpointStore::open(&dir.join("cp.json")).unwrap(),
            Arc::new(IngestStatus::new(8)),
            Arc::new(AtomicBool::new(false)),
            WriterConfig {
                max_rows: 100,
                backfill_max_rows: 100,
                max_delay: Duration::from_millis(10),
                schema_dirs: vec![],
            },
        )
        .await
        .unwrap()
    }

    fn msg(uuid: &str, ts: &str) -> Row {
        Row::new("claude_messages")
            .with("uuid", uuid)
            .with("session_id", "s")
            .with("timestamp", ts)
            .with("source_file", "/f")
            .with("no_such_column", 1)
    }

    #[tokio::test]
    async fn bad_rows_are_dead_lettered_the_rest_stored_and_checkpoints_committed() {
        let dir = tempfile::tempdir().unwrap();
        let ch = testing::fresh_client("writer").await;
        let mut w = writer(dir.path(), ch.clone()).await;
        let cp = FileCheckpoint {
            file_id: FileId { dev: 1, ino: 1 },
            offset: 77,
            fingerprint: 5,
        };
        w.write(
            vec![
                msg("good-1", "2026-10-01T00:00:00Z"),
                msg("bad", "not a time at all"),
                msg("good-2", "2026-10-01T00:00:01Z"),
                Row::new("no_such_table").with("x", 1),
            ],
            vec![(PathBuf::from("/f"), Some(cp))],
        )
        .await
        .unwrap();
        assert_eq!(ch.count("claude_messages", false).await.unwrap(), 2);
        let dl = ch
            .query_json(
                "SELECT stage, error FROM claude_dead_letters ORDER BY error",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(dl.len(), 2, "{dl:?}");
        assert!(dl.iter().all(|r| r["stage"] == "sink"));
        assert!(dl
            .iter()
            .any(|r| r["error"].as_str().unwrap().contains("no_such_table")));
        assert_eq!(w.stats.dead_letters, 2);
        assert_eq!(w.checkpoints().get(std::path::Path::new("/f")), Some(cp));
        assert!(Spool::open(&dir.path().join("spool"))
            .unwrap()
            .pending()
            .unwrap()
            .is_empty());
        ch.drop_database().await.unwrap();
    }

    #[tokio::test]
    async fn a_spooled_batch_is_replayed_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let ch = testing::fresh_client("replay").await;
        // A crash after the insert but before the checkpoint commit: the spool
        // file is still there and the rows are already in ClickHouse.
        let batch = SpooledBatch::new(
            "00000000000000000001-1-000001".into(),
            vec![
                msg("r1", "2026-10-01T00:00:00Z"),
                msg("r2", "2026-10-01T00:00:00Z"),
            ],
            vec![],
        );
        Spool::open(&dir.path().join("spool"))
            .unwrap()
            .write(&batch)
            .unwrap();
        let mut w = writer(dir.path(), ch.clone()).await;
        assert_eq!(w.replay_spool().await.unwrap(), 1);
        assert_eq!(ch.count("claude_messages", false).await.unwrap(), 2);
        Spool::open(&dir.path().join("spool"))
            .unwrap()
            .write(&batch)
            .unwrap();
        let mut w = writer(dir.path(), ch.clone()).await;
        assert_eq!(w.replay_spool().await.unwrap(), 1);
        assert_eq!(
            ch.count("claude_messages", false).await.unwrap(),
            2,
            "replay deduplicated"
        );
        ch.drop_database().await.unwrap();
    }
}
