//! Batching writer: encode → spool → insert → commit.
//!
//! Each row is encoded once (JSONEachRow, unknown columns dropped) into its
//! table's buffer as it arrives; those same bytes are spooled (fsync) and then
//! inserted table by table with dedup tokens. Only then are the source
//! checkpoints committed. Storage and availability errors (disk full, too many
//! parts, server down, spool unwritable) are retried with backoff for as long
//! as it takes, checkpoints held, `/healthz` degraded with the reason; the
//! bounded queues upstream fill and the tailer waits. Only a data error (a row
//! whose value does not fit) is isolated by bisecting the insert and
//! dead-lettered, so a bad row costs O(log n) inserts.
//!
//! Batches are flushed as soon as the input is caught up (nothing queued
//! upstream), so a live append is visible within one insert; they grow big
//! only while the writer is behind.

use super::budget::Permit;
use super::clickhouse::{classify_error, ChClient, FailureKind};
use super::spool::{LegacyBatch, Spool, Spooled, SpooledBatch, TableRows};
use super::status::{now_ms, IngestStatus};
use crate::row::{Columns, Row};
use crate::source::{CheckpointStore, FileCheckpoint};
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub const DEAD_LETTER_TABLE: &str = "claude_dead_letters";

/// How long a caught-up writer waits for more input before storing.
const IDLE_LINGER: Duration = Duration::from_millis(5);

/// What flows from the router to the writer.
pub enum SinkItem {
    /// The rows of one source line and the checkpoint that line completes.
    Rows {
        rows: Vec<Row>,
        checkpoint: Option<(PathBuf, FileCheckpoint)>,
        read_at_ms: u64,
        /// The rows' bytes in the queue's budget, given back when received.
        permit: Option<Permit>,
    },
    /// A file was deleted: forget its checkpoint (after earlier rows are stored).
    Forget(PathBuf),
    /// The tailer finished its initial pass: everything before this is backfill.
    CaughtUp,
}

#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Rows per batch while following.
    pub max_rows: usize,
    /// Used instead of `max_rows` while behind (backfill, or a burst upstream).
    pub backfill_max_rows: usize,
    /// Encoded bytes per batch.
    pub max_bytes: usize,
    pub max_delay: Duration,
    /// Extra DDL dirs re-applied when rows name a table we have not seen (plugin tables).
    pub schema_dirs: Vec<PathBuf>,
    /// Identity and privacy applied to every row before it is encoded.
    pub stamp: super::identity::RowStamp,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub batches: u64,
    pub rows: u64,
    pub dead_letters: u64,
    /// Insert requests sent (bisection of a bad batch adds O(log n)).
    pub inserts: u64,
}

pub struct Writer {
    client: ChClient,
    spool: Spool,
    checkpoints: CheckpointStore,
    status: Arc<IngestStatus>,
    shutdown: Arc<AtomicBool>,
    cfg: WriterConfig,
    columns: HashMap<String, HashSet<String>>,
    /// Tables looked up again since the last flush (one schema refresh each).
    refreshed: HashSet<String>,
    warned: HashSet<(String, String)>,
    seq: u64,
    caught_up: bool,
    inserts: Arc<AtomicU64>,
    failing: Arc<AtomicU64>,
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

/// A rough heap size of rows (strings, plus per-value and per-key overhead):
/// what the router charges to the queue's byte budget.
pub fn approx_bytes(rows: &[Row]) -> usize {
    fn value(v: &Value) -> usize {
        match v {
            Value::String(s) => 32 + s.len(),
            Value::Array(a) => 32 + a.iter().map(value).sum::<usize>(),
            Value::Object(m) => {
                64 + m
                    .iter()
                    .map(|(k, v)| 48 + k.len() + value(v))
                    .sum::<usize>()
            }
            _ => 16,
        }
    }
    rows.iter()
        .map(|r| {
            64 + r.table.len()
                + r.columns
                    .iter()
                    .map(|(k, v)| 48 + k.len() + value(v))
                    .sum::<usize>()
        })
        .sum()
}

/// The batch being built: rows already encoded per table.
#[derive(Default)]
struct Building {
    tables: BTreeMap<String, Vec<u8>>,
    checkpoints: HashMap<PathBuf, Option<FileCheckpoint>>,
    rows: usize,
    bytes: usize,
    /// Dead letters made while encoding (rows for tables that do not exist).
    dead_letters: u64,
    deadline: Option<Instant>,
}

impl Building {
    fn is_empty(&self) -> bool {
        self.rows == 0 && self.checkpoints.is_empty()
    }

    fn into_batch(self, batch_id: String) -> Result<SpooledBatch> {
        let mut tables = BTreeMap::new();
        for (t, data) in self.tables {
            tables.insert(t, TableRows::from_lines(data)?);
        }
        Ok(SpooledBatch {
            batch_id,
            tables,
            checkpoints: self.checkpoints.into_iter().collect(),
        })
    }
}

/// Append `cols` to `out` as one JSONEachRow line, dropping columns the table
/// does not have (warning once per column) rather than failing every batch
/// over a typo in a rule file.
fn encode_row(
    out: &mut Vec<u8>,
    table: &str,
    cols: &Columns,
    known: &HashSet<String>,
    warned: &mut HashSet<(String, String)>,
) -> Result<()> {
    out.push(b'{');
    let mut first = true;
    for (k, v) in cols {
        if !known.contains(k) {
            if warned.insert((table.to_string(), k.clone())) {
                tracing::warn!(table, column = %k, "rules write a column the table does not have; ignoring it");
            }
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut *out, k).context("cannot encode a column name")?;
        out.push(b':');
        serde_json::to_writer(&mut *out, v).context("cannot encode a value")?;
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// A sink dead letter for one encoded row. Its key (`source_file`,
/// `source_offset`, `stage`) must be distinct per row and stable across
/// replays and re-reads: the file gets `#<table>:<hash of the row>` appended,
/// so two bad rows of one line, or rows with no source position, never
/// collapse into one, and the same row always maps to the same key.
fn sink_dead_letter(table: &str, row: &[u8], error: &str) -> Row {
    let cols: Columns = serde_json::from_slice(row).unwrap_or_default();
    let file = cols
        .get("source_file")
        .and_then(Value::as_str)
        .unwrap_or("");
    let offset = cols
        .get("source_offset")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(table.as_bytes());
    h.update([0]);
    h.update(row);
    let id = hex::encode(&h.finalize()[..8]);
    DeadLetter {
        source_file: &format!("{file}#{table}:{id}"),
        offset,
        length: row.len() as u64,
        stage: "sink",
        error,
        raw_line: String::from_utf8_lossy(row).into_owned(),
        raw_base64: String::new(),
        truncated: false,
    }
    .into_row()
}

/// Dedup token of rows `lo..hi` of a table: the whole table keeps the plain
/// prefix; bisected halves get their range, so a replay that bisects the
/// same bytes the same way reuses the same tokens (exactly once).
fn range_token(prefix: &str, lo: usize, hi: usize, n: usize) -> String {
    if lo == 0 && hi == n {
        prefix.to_string()
    } else {
        format!("{prefix}:{lo}-{hi}")
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
            refreshed: HashSet::new(),
            warned: HashSet::new(),
            seq: 0,
            caught_up: false,
            inserts: Arc::new(AtomicU64::new(0)),
            failing: Arc::new(AtomicU64::new(0)),
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
        for spooled in pending {
            let batch = match spooled {
                Spooled::Encoded(b) => b,
                Spooled::Legacy(b) => self.encode_legacy(b).await?,
            };
            tracing::info!(batch = %batch.batch_id, rows = batch.row_count(), "replaying spooled batch");
            self.store(batch).await?;
        }
        Ok(n)
    }

    /// A batch spooled by an older version: encode it under its own id, so
    /// its dedup tokens are the ones that version used.
    async fn encode_legacy(&mut self, b: LegacyBatch) -> Result<SpooledBatch> {
        let mut building = Building::default();
        for (table, rows) in b.tables {
            let rows = rows
                .into_iter()
                .map(|columns| Row {
                    table: table.clone(),
                    columns,
                })
                .collect();
            self.add_rows(&mut building, rows).await?;
        }
        building.checkpoints = b.checkpoints.into_iter().collect();
        building.into_batch(b.batch_id)
    }

    fn next_batch_id(&mut self) -> String {
        self.seq += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let (pid, tag) = (std::process::id(), self.cfg.stamp.batch_tag());
        format!("{nanos:020}-{pid}-{:06}-{tag}", self.seq)
    }

    /// Encode, spool, insert and commit one batch (tests and tools).
    pub async fn write(
        &mut self,
        rows: Vec<Row>,
        checkpoints: Vec<(PathBuf, Option<FileCheckpoint>)>,
    ) -> Result<()> {
        let mut b = Building::default();
        self.add_rows(&mut b, rows).await?;
        b.checkpoints.extend(checkpoints);
        self.flush(&mut b).await
    }

    /// Encode rows into the batch; rows for a table that does not exist
    /// (after one schema refresh) become dead letters in the same batch.
    async fn add_rows(&mut self, b: &mut Building, rows: Vec<Row>) -> Result<()> {
        for mut r in rows {
            if !self.columns.contains_key(&r.table) && self.refreshed.insert(r.table.clone()) {
                self.refresh_schema().await;
            }
            let empty = HashSet::new();
            let known = self.columns.get(&r.table).unwrap_or(&empty);
            self.cfg.stamp.apply(&r.table, &mut r.columns, known);
            let before = b.tables.get(&r.table).map_or(0, Vec::len);
            match self.columns.get(&r.table) {
                Some(known) => {
                    let out = b.tables.entry(r.table.clone()).or_default();
                    encode_row(out, &r.table, &r.columns, known, &mut self.warned)?;
                    b.bytes += out.len() - before;
                }
                None => self.add_missing_table_row(b, &r)?,
            }
            b.rows += 1;
        }
        self.status.batch_bytes.store(b.bytes as u64, Relaxed);
        Ok(())
    }

    fn add_missing_table_row(&mut self, b: &mut Building, r: &Row) -> Result<()> {
        let error = format!(
            "table `{}` does not exist in database `{}` (add its DDL to a schema dir)",
            r.table,
            self.client.database()
        );
        let row = serde_json::to_vec(&r.columns).context("cannot encode a row")?;
        let mut dl = sink_dead_letter(&r.table, &row, &error);
        let known = self
            .columns
            .get(DEAD_LETTER_TABLE)
            .ok_or_else(|| anyhow!("the {DEAD_LETTER_TABLE} table is missing"))?;
        self.cfg
            .stamp
            .apply(DEAD_LETTER_TABLE, &mut dl.columns, known);
        let out = b.tables.entry(DEAD_LETTER_TABLE.to_string()).or_default();
        let before = out.len();
        encode_row(out, DEAD_LETTER_TABLE, &dl.columns, known, &mut self.warned)?;
        b.bytes += out.len() - before;
        b.dead_letters += 1;
        Ok(())
    }

    /// Take one item into the batch; true when the batch must be flushed now.
    async fn accept(&mut self, b: &mut Building, item: SinkItem) -> Result<bool> {
        match item {
            SinkItem::Rows {
                rows,
                checkpoint,
                read_at_ms,
                permit,
            } => {
                drop(permit); // the rows leave the queue
                self.status
                    .pending_rows
                    .fetch_add(rows.len() as u64, Relaxed);
                let _ = self.status.oldest_pending_ms.compare_exchange(
                    0,
                    read_at_ms.max(1),
                    Relaxed,
                    Relaxed,
                );
                self.add_rows(b, rows).await?;
                if let Some((p, cp)) = checkpoint {
                    b.checkpoints.insert(p, Some(cp));
                }
            }
            SinkItem::Forget(p) => {
                b.checkpoints.insert(p, None);
            }
            SinkItem::CaughtUp => {
                self.caught_up = true;
                self.status.caught_up.store(true, Relaxed);
                tracing::info!(
                    lines = self.status.lines_read.load(Relaxed),
                    "initial pass complete; following new lines"
                );
                return Ok(true);
            }
        }
        b.deadline
            .get_or_insert_with(|| Instant::now() + self.cfg.max_delay);
        Ok(b.rows >= self.row_limit() || b.bytes >= self.cfg.max_bytes)
    }

    /// Big batches while behind (backfill, or the queues upstream half full:
    /// more lines waiting than one following batch or the queue can hold),
    /// small ones while following.
    fn row_limit(&self) -> usize {
        let waiting = self.status.lines_in_flight.load(Relaxed) as usize;
        let capacity = self.status.queue_capacity.load(Relaxed) as usize;
        let behind = waiting > self.cfg.max_rows || (capacity > 0 && waiting * 2 >= capacity);
        if self.caught_up && !behind {
            self.cfg.max_rows
        } else {
            self.cfg.backfill_max_rows.max(self.cfg.max_rows)
        }
    }

    /// Caught up and nothing read is waiting anywhere upstream: store now
    /// rather than wait for more (this is what makes a live append visible
    /// within one insert).
    fn input_idle(&self, rx: &mpsc::Receiver<SinkItem>) -> bool {
        self.caught_up && rx.is_empty() && self.status.lines_in_flight.load(Relaxed) == 0
    }

    async fn flush(&mut self, b: &mut Building) -> Result<()> {
        let building = std::mem::take(b);
        self.refreshed.clear();
        if building.is_empty() {
            return Ok(());
        }
        let (rows, dead) = (building.rows as u64, building.dead_letters);
        if building.rows == 0 {
            let cps: Vec<_> = building.checkpoints.into_iter().collect();
            self.commit_checkpoints(&cps).await?;
        } else {
            let batch = building.into_batch(self.next_batch_id())?;
            let t0 = std::time::Instant::now();
            let spool = &self.spool;
            retry_local(&self.status, &self.shutdown, "spooling a batch", || {
                spool.write(&batch)
            })
            .await?;
            tracing::debug!(batch = %batch.batch_id, ms = t0.elapsed().as_millis() as u64, "batch spooled");
            self.store(batch).await?;
        }
        self.count_dead_letters(dead);
        let pending = &self.status.pending_rows;
        pending.fetch_sub(rows.min(pending.load(Relaxed)), Relaxed);
        self.status.oldest_pending_ms.store(0, Relaxed);
        self.status.batch_bytes.store(0, Relaxed);
        Ok(())
    }

    fn count_dead_letters(&mut self, n: u64) {
        self.stats.dead_letters += n;
        self.status.dead_letters.fetch_add(n, Relaxed);
    }

    /// Insert every table (bisecting data errors), dead-letter the rejected
    /// rows, commit the checkpoints, drop the spool file.
    async fn store(&mut self, batch: SpooledBatch) -> Result<()> {
        let t0 = std::time::Instant::now();
        let (stored, rejected) = self.insert_tables(&batch).await?;
        tracing::debug!(batch = %batch.batch_id, ms = t0.elapsed().as_millis() as u64, "tables inserted");
        if !rejected.is_empty() {
            self.insert_dead_letters(&batch.batch_id, &rejected).await?;
        }
        self.commit_checkpoints(&batch.checkpoints).await?;
        let spool = &self.spool;
        retry_local(
            &self.status,
            &self.shutdown,
            "removing a spool file",
            || spool.remove(&batch.batch_id),
        )
        .await?;
        self.stats.batches += 1;
        self.stats.rows += stored;
        self.stats.inserts = self.inserts.load(Relaxed);
        self.status.batches_written.fetch_add(1, Relaxed);
        self.status.rows_written.fetch_add(stored, Relaxed);
        self.status.last_insert_ms.store(now_ms(), Relaxed);
        tracing::debug!(batch = %batch.batch_id, rows = stored, "batch stored");
        Ok(())
    }

    /// All tables concurrently: each has its own dedup tokens, so order
    /// between them does not matter and latency is one round trip.
    async fn insert_tables(&self, batch: &SpooledBatch) -> Result<(u64, Vec<Rejected>)> {
        let mut inserts = tokio::task::JoinSet::new();
        for (table, rows) in &batch.tables {
            let ins = self.inserter();
            let (table, rows) = (table.clone(), rows.clone());
            let prefix = format!("{}:{}", batch.batch_id, table);
            inserts.spawn(async move { ins.insert_bisect(&table, &rows, &prefix).await });
        }
        let (mut stored, mut rejected) = (0, Vec::new());
        while let Some(done) = inserts.join_next().await {
            let (n, bad) = done.context("insert task panicked")??;
            stored += n;
            rejected.extend(bad);
        }
        rejected.sort_by(|a, b| (&a.table, a.index).cmp(&(&b.table, b.index)));
        Ok((stored, rejected))
    }

    async fn insert_dead_letters(&mut self, batch_id: &str, rejected: &[Rejected]) -> Result<()> {
        let known = self
            .columns
            .get(DEAD_LETTER_TABLE)
            .ok_or_else(|| anyhow!("the {DEAD_LETTER_TABLE} table is missing"))?;
        let mut data = Vec::new();
        for r in rejected {
            let mut dl = sink_dead_letter(&r.table, &r.row, &r.error);
            self.cfg
                .stamp
                .apply(DEAD_LETTER_TABLE, &mut dl.columns, known);
            encode_row(
                &mut data,
                DEAD_LETTER_TABLE,
                &dl.columns,
                known,
                &mut self.warned,
            )?;
        }
        let rows = TableRows::from_lines(data)?;
        let prefix = format!("{batch_id}:{DEAD_LETTER_TABLE}:sink");
        let (_, lost) = self
            .inserter()
            .insert_bisect(DEAD_LETTER_TABLE, &rows, &prefix)
            .await?;
        for l in &lost {
            tracing::error!(error = %l.error, "a dead letter itself was rejected; it is only logged");
        }
        self.count_dead_letters(rejected.len() as u64);
        Ok(())
    }

    async fn commit_checkpoints(
        &mut self,
        cps: &[(PathBuf, Option<FileCheckpoint>)],
    ) -> Result<()> {
        let store = &mut self.checkpoints;
        retry_local(
            &self.status,
            &self.shutdown,
            "committing checkpoints",
            || store.commit(cps),
        )
        .await
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
            inserts: self.inserts.clone(),
            failing: self.failing.clone(),
        }
    }
}

/// Retry a local write (spool, checkpoints) until it succeeds: a full or
/// failing state disk must hold the batch back, never drop it. `/healthz`
/// says why meanwhile. Gives up only when shutting down (nothing committed,
/// so the lines are read again on the next start).
async fn retry_local<T>(
    status: &IngestStatus,
    shutdown: &AtomicBool,
    what: &str,
    mut f: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut delay = Duration::from_millis(100);
    let mut failed = false;
    loop {
        match f() {
            Ok(v) => {
                if failed {
                    tracing::info!(what, "local write works again");
                    status.set_degraded(None);
                }
                return Ok(v);
            }
            Err(e) => {
                let msg = format!("{what} failed: {e:#}");
                if shutdown.load(Relaxed) {
                    return Err(e.context(format!("{what} failed while shutting down")));
                }
                tracing::warn!(error = %msg, retry_in_ms = delay.as_millis() as u64, "retrying; checkpoints held");
                status.set_degraded(Some(format!(
                    "{msg} (retrying; nothing is committed meanwhile)"
                )));
                failed = true;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// A row ClickHouse refused as data, isolated by bisection.
struct Rejected {
    table: String,
    index: usize,
    row: Vec<u8>,
    error: String,
}

/// What an insert needs, cloneable into concurrent tasks.
#[derive(Clone)]
struct Inserter {
    client: ChClient,
    status: Arc<IngestStatus>,
    shutdown: Arc<AtomicBool>,
    inserts: Arc<AtomicU64>,
    /// Inserts currently failing. Tables are inserted concurrently: one
    /// table's success must not clear the alarm while another still fails.
    failing: Arc<AtomicU64>,
}

impl Inserter {
    /// Insert all rows; on a data error split the range in halves until the
    /// bad rows are alone: k bad rows in n cost O(k log n) inserts, not n.
    async fn insert_bisect(
        &self,
        table: &str,
        rows: &TableRows,
        prefix: &str,
    ) -> Result<(u64, Vec<Rejected>)> {
        let n = rows.len();
        let (mut stored, mut rejected) = (0u64, Vec::new());
        let mut todo = vec![(0, n)];
        while let Some((lo, hi)) = todo.pop() {
            if lo == hi {
                continue;
            }
            let token = range_token(prefix, lo, hi, n);
            match self
                .insert_retrying(table, rows.range(lo, hi), &token)
                .await
            {
                Ok(()) => stored += (hi - lo) as u64,
                // Shutting down mid-outage: stop; the batch stays spooled.
                Err(e) if classify_error(&e) != FailureKind::Data => return Err(e),
                Err(e) if hi - lo == 1 => rejected.push(Rejected {
                    table: table.to_string(),
                    index: lo,
                    row: rows.row(lo).to_vec(),
                    error: format!("{e:#}"),
                }),
                Err(e) => {
                    if lo == 0 && hi == n {
                        tracing::warn!(table, rows = n, error = %format!("{e:#}"), "batch rejected; bisecting it to find the bad rows");
                    }
                    let mid = lo + (hi - lo) / 2;
                    todo.push((mid, hi));
                    todo.push((lo, mid));
                }
            }
        }
        Ok((stored, rejected))
    }

    /// Insert, retrying storage and availability failures with capped
    /// exponential backoff for as long as it takes (the batch is safe in the
    /// spool meanwhile). Returns an error only for a data error, or when
    /// shutting down (anything else is never a data error).
    async fn insert_retrying(&self, table: &str, data: Bytes, token: &str) -> Result<()> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0u32;
        let mut failed = false;
        loop {
            attempt += 1;
            self.inserts.fetch_add(1, Relaxed);
            let err = match self
                .client
                .insert_json_each_row(table, data.clone(), token)
                .await
            {
                Ok(()) => {
                    self.settle(failed);
                    return Ok(());
                }
                Err(e) => e,
            };
            let kind = classify_error(&err);
            if kind == FailureKind::Data {
                self.settle(failed);
                return Err(err);
            }
            if !failed {
                failed = true;
                self.failing.fetch_add(1, Relaxed);
            }
            self.report(kind, &err);
            if self.shutdown.load(Relaxed) {
                return Err(anyhow!("shutting down while ClickHouse cannot store rows ({err:#}); the batch stays spooled and is replayed on the next start"));
            }
            tracing::warn!(table, attempt, ?kind, retry_in_ms = delay.as_millis() as u64, error = %format!("{err:#}"), "insert failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }

    fn report(&self, kind: FailureKind, err: &anyhow::Error) {
        self.status.insert_failures.fetch_add(1, Relaxed);
        self.status.clickhouse_down.store(true, Relaxed);
        self.status.set_error(Some(format!("{err:#}")));
        let what = match kind {
            FailureKind::Storage => {
                "ClickHouse cannot store rows (storage: disk full, too many parts or memory)"
            }
            _ => "ClickHouse is unavailable",
        };
        self.status
            .set_degraded(Some(format!("{what}; retrying, checkpoints held: {err:#}")));
    }

    /// An insert is done (stored, or refused for its data): when it had
    /// failed and no other insert is failing, ClickHouse stores rows again.
    fn settle(&self, failed: bool) {
        if failed && self.failing.fetch_sub(1, Relaxed) > 1 {
            return;
        }
        if self.failing.load(Relaxed) == 0 {
            self.recovered();
        }
    }

    fn recovered(&self) {
        if self.status.clickhouse_down.swap(false, Relaxed) {
            tracing::info!("ClickHouse stores rows again");
            self.status.set_error(None);
            self.status.set_degraded(None);
        }
    }
}

/// What the writer loop waits for.
enum Next {
    Item(SinkItem),
    Due,
    Closed,
}

async fn next(rx: &mut mpsc::Receiver<SinkItem>, deadline: Option<Instant>) -> Next {
    let item = match deadline {
        Some(d) => tokio::select! {
            item = rx.recv() => item,
            _ = tokio::time::sleep_until(d) => return Next::Due,
        },
        None => rx.recv().await,
    };
    item.map_or(Next::Closed, Next::Item)
}

/// The writer task: batches items from `rx` until it closes, then flushes.
pub async fn run_writer(
    mut writer: Writer,
    mut rx: mpsc::Receiver<SinkItem>,
) -> Result<WriterStats> {
    let mut b = Building::default();
    loop {
        let flush = match next(&mut rx, b.deadline).await {
            Next::Due => true,
            Next::Closed => {
                writer.flush(&mut b).await?;
                return Ok(writer.stats);
            }
            Next::Item(item) => {
                let full = writer.accept(&mut b, item).await?;
                if !full && writer.input_idle(&rx) {
                    // Linger a moment: the other lines of the same append are
                    // usually still on their way, and one insert is cheaper
                    // (and sooner visible) than two.
                    let soon = Instant::now() + IDLE_LINGER;
                    b.deadline = Some(b.deadline.map_or(soon, |d| d.min(soon)));
                }
                full
            }
        };
        if flush {
            writer.flush(&mut b).await?;
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

    fn cfg() -> WriterConfig {
        WriterConfig {
            max_rows: 100,
            backfill_max_rows: 100,
            max_bytes: 1 << 20,
            max_delay: Duration::from_millis(10),
            schema_dirs: vec![],
            stamp: Default::default(),
        }
    }

    async fn writer(dir: &std::path::Path, client: ChClient) -> Writer {
        Writer::new(
            client,
            Spool::open(&dir.join("spool")).unwrap(),
            CheckpointStore::open(&dir.join("cp.json")).unwrap(),
            Arc::new(IngestStatus::new(8)),
            Arc::new(AtomicBool::new(false)),
            cfg(),
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

    fn cp(offset: u64) -> FileCheckpoint {
        FileCheckpoint {
            file_id: FileId { dev: 1, ino: 1 },
            offset,
            fingerprint: 5,
        }
    }

    fn pending(dir: &std::path::Path) -> usize {
        Spool::open(&dir.join("spool"))
            .unwrap()
            .pending()
            .unwrap()
            .len()
    }

    #[tokio::test]
    async fn bad_rows_are_dead_lettered_the_rest_stored_and_checkpoints_committed() {
        let dir = tempfile::tempdir().unwrap();
        let ch = testing::fresh_client("writer").await;
        let mut w = writer(dir.path(), ch.clone()).await;
        w.write(
            vec![
                msg("good-1", "2026-10-01T00:00:00Z"),
                msg("bad", "not a time at all"),
                msg("good-2", "2026-10-01T00:00:01Z"),
                Row::new("no_such_table").with("x", 1),
            ],
            vec![(PathBuf::from("/f"), Some(cp(77)))],
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
        assert_eq!(
            w.checkpoints().get(std::path::Path::new("/f")),
            Some(cp(77))
        );
        assert_eq!(pending(dir.path()), 0);
        ch.drop_database().await.unwrap();
    }

    fn encoded(rows: &[&str]) -> TableRows {
        TableRows::from_lines(
            rows.iter()
                .map(|r| format!("{r}\n"))
                .collect::<String>()
                .into(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_spooled_batch_is_replayed_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let ch = testing::fresh_client("replay").await;
        // A crash after the insert but before the checkpoint commit: the spool
        // file is still there and the rows are already in ClickHouse.
        let row = |u: &str| {
            format!(r#"{{"uuid":"{u}","session_id":"s","timestamp":"2026-10-01T00:00:00Z"}}"#)
        };
        let batch = SpooledBatch {
            batch_id: "00000000000000000001-1-000001".into(),
            tables: BTreeMap::from([(
                "claude_messages".to_string(),
                encoded(&[&row("r1"), &row("r2")]),
            )]),
            checkpoints: vec![],
        };
        for _ in 0..2 {
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
        }
        // A batch spooled by the previous (JSON object) format replays too,
        // under its own id, so its tokens match what that version inserted.
        std::fs::write(
            dir.path().join("spool/00000000000000000002-1-000001.batch.json"),
            format!(
                r#"{{"batch_id":"00000000000000000002-1-000001","tables":{{"claude_messages":[{},{{"uuid":"r3","session_id":"s","timestamp":"2026-10-01T00:00:00Z","no_such_column":1}}]}},"checkpoints":[]}}"#,
                row("r1")
            ),
        )
        .unwrap();
        let mut w = writer(dir.path(), ch.clone()).await;
        assert_eq!(w.replay_spool().await.unwrap(), 1);
        assert_eq!(ch.count("claude_messages", false).await.unwrap(), 4);
        assert_eq!(pending(dir.path()), 0);
        ch.drop_database().await.unwrap();
    }

    fn usage_row(i: usize, content_length: i64, file: Option<&str>) -> Row {
        let r = Row::new("claude_messages")
            .with("uuid", format!("u-{i}"))
            .with("session_id", "s")
            .with("timestamp", "2026-10-01T00:00:00Z")
            .with("content_length", content_length);
        match file {
            Some(f) => r.with("source_file", f).with("source_offset", i as u64),
            None => r,
        }
    }

    /// One bad value in a big batch: found by bisection in O(log n) inserts
    /// (the old row-by-row retry took n + 1), and a replay of the same spooled
    /// batch (crash before the commit) adds neither rows nor dead letters.
    #[tokio::test]
    async fn a_bad_row_costs_log_n_inserts_and_replays_stay_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let ch = testing::fresh_client("bisect").await;
        let mut w = writer(dir.path(), ch.clone()).await;
        let n = 1000;
        let rows = (0..n)
            .map(|i| usage_row(i, if i == 617 { -1 } else { 10 }, Some("/f")))
            .collect();
        let mut b = Building::default();
        w.add_rows(&mut b, rows).await.unwrap();
        let id = w.next_batch_id();
        let batch = b.into_batch(id).unwrap();
        Spool::open(&dir.path().join("spool"))
            .unwrap()
            .write(&batch)
            .unwrap();
        w.store(batch.clone()).await.unwrap();
        let inserts = w.stats.inserts;
        assert!(
            inserts <= 2 * 10 + 2,
            "{inserts} inserts for one bad row in {n}"
        );
        let stored = "SELECT count() AS c FROM claude_messages";
        let dl = "SELECT count() AS c FROM claude_dead_letters";
        let c = |rows: Vec<serde_json::Map<String, Value>>| rows[0]["c"].as_u64().unwrap();
        assert_eq!(c(ch.query_json(stored, &[]).await.unwrap()), n as u64 - 1);
        assert_eq!(c(ch.query_json(dl, &[]).await.unwrap()), 1);
        let bad = ch
            .query_json(
                "SELECT source_file, source_offset FROM claude_dead_letters",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(bad[0]["source_offset"], 617, "{bad:?}");
        assert!(bad[0]["source_file"]
            .as_str()
            .unwrap()
            .starts_with("/f#claude_messages:"));

        Spool::open(&dir.path().join("spool"))
            .unwrap()
            .write(&batch)
            .unwrap();
        let mut w = writer(dir.path(), ch.clone()).await;
        assert_eq!(w.replay_spool().await.unwrap(), 1);
        assert_eq!(c(ch.query_json(stored, &[]).await.unwrap()), n as u64 - 1);
        assert_eq!(c(ch.query_json(dl, &[]).await.unwrap()), 1);
        ch.drop_database().await.unwrap();
    }

    #[tokio::test]
    async fn dead_letters_without_a_source_position_do_not_collapse() {
        let dir = tempfile::tempdir().unwrap();
        let ch = testing::fresh_client("dlkeys").await;
        let mut w = writer(dir.path(), ch.clone()).await;
        let rows = vec![
            usage_row(1, -1, None),
            usage_row(2, -2, None),
            usage_row(3, 5, None),
            usage_row(4, -4, None),
        ];
        w.write(rows.clone(), vec![]).await.unwrap();
        // The same rows read again (new batch, e.g. after lost state): the
        // dead letters keep their identity and fold into the same three.
        w.write(rows, vec![]).await.unwrap();
        let n = ch
            .query_json(
                "SELECT count() AS c, uniqExact(source_file) AS f FROM claude_dead_letters FINAL",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(n[0]["c"], 3, "{n:?}");
        assert_eq!(n[0]["f"], 3, "{n:?}");
        ch.drop_database().await.unwrap();
    }

    /// The spool (state dir) is full: the batch is retried, nothing is
    /// committed, /healthz says why; with space back it is stored once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_spool_disk_holds_the_batch_and_commits_nothing() {
        let Some(mnt) = testing::SmallTmpfs::mount("64k") else {
            return;
        };
        let ch = testing::fresh_client("spoolfull").await;
        let mut w = writer(mnt.path(), ch.clone()).await;
        let status = w.status.clone();
        let big = "x".repeat(100_000);
        let rows = (0..3)
            .map(|i| msg(&format!("m{i}"), "2026-10-01T00:00:00Z").with("content", big.clone()))
            .collect();
        let task = tokio::spawn(async move {
            w.write(rows, vec![(PathBuf::from("/f"), Some(cp(9)))])
                .await
                .map(|()| w)
        });
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!task.is_finished(), "the write must wait for space");
        let reason = status.snapshot().degraded_reason.unwrap_or_default();
        assert!(reason.contains("spool"), "{reason}");
        assert_eq!(ch.count("claude_messages", false).await.unwrap(), 0);
        let cps = CheckpointStore::open(&mnt.path().join("cp.json")).unwrap();
        assert_eq!(
            cps.get(std::path::Path::new("/f")),
            None,
            "nothing committed"
        );
        mnt.resize("8m");
        let w = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("stored once space is back")
            .unwrap()
            .unwrap();
        assert_eq!(ch.count("claude_messages", false).await.unwrap(), 3);
        assert_eq!(w.checkpoints().get(std::path::Path::new("/f")), Some(cp(9)));
        assert_eq!(status.snapshot().degraded_reason, None);
        assert_eq!(status.snapshot().status, "ok");
        ch.drop_database().await.unwrap();
    }
}
