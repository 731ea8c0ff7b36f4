//! The storing half of the writer: spool → insert → commit, one batch at a
//! time, in order. It runs as its own task, so the writer encodes batch N+1
//! while batch N is being stored (the two overlap instead of taking turns).
//!
//! Storage and availability errors (disk full, too many parts, server down,
//! spool unwritable) are retried with backoff for as long as it takes,
//! checkpoints held, `/healthz` degraded with the reason; the bounded queues
//! upstream fill and the tailer waits. Only a data error (a row whose value
//! does not fit) is isolated by bisecting the insert and dead-lettered, so a
//! bad row costs O(log n) inserts.

use super::clickhouse::{classify_error, ChClient, FailureKind};
use super::identity::RowStamp;
use super::spool::{Lines, Spool, SpooledBatch, TableRows};
use super::status::{now_ms, timings, IngestStatus};
use super::writer::{
    encode_row, sink_dead_letter, Building, TableCols, WriterStats, DEAD_LETTER_TABLE,
};
use crate::source::{CheckpointStore, FileCheckpoint};
use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub(crate) struct Storer {
    pub(crate) client: ChClient,
    pub(crate) spool: Spool,
    pub(crate) checkpoints: CheckpointStore,
    pub(crate) status: Arc<IngestStatus>,
    pub(crate) shutdown: Arc<AtomicBool>,
    /// The dead-letter table's columns (rows ClickHouse refused go there).
    pub(crate) dead_letter_cols: TableCols,
    /// Privacy for those dead letters; the identity tags batch ids.
    pub(crate) stamp: RowStamp,
    pub(crate) seq: u64,
    pub(crate) inserts: Arc<AtomicU64>,
    pub(crate) failing: Arc<AtomicU64>,
    pub(crate) stats: WriterStats,
}

impl Storer {
    /// Store batches as the writer hands them over, in order, until it stops.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Building>) -> Result<WriterStats> {
        while let Some(b) = rx.recv().await {
            self.flush(b).await?;
        }
        Ok(self.stats)
    }

    pub(crate) fn next_batch_id(&mut self) -> String {
        self.seq += 1;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // The identity tag keeps two machines' dedup tokens (`<batch id>:<table>`)
        // apart even with equal clocks and pids (containers).
        let (pid, tag) = (std::process::id(), self.stamp.batch_tag());
        format!("{nanos:020}-{pid}-{:06}-{tag}", self.seq)
    }

    /// Spool, insert and commit one built batch (checkpoints alone are
    /// committed directly: there is nothing to insert).
    pub(crate) async fn flush(&mut self, building: Building) -> Result<()> {
        if building.is_empty() {
            return Ok(());
        }
        let (rows, dead) = (building.rows as u64, building.dead_letters);
        if building.rows == 0 {
            let cps = building.checkpoint_updates();
            self.commit_checkpoints(&cps).await?;
        } else {
            let t0 = std::time::Instant::now();
            let id = self.next_batch_id();
            let batch = self.seal(building, id).await?;
            tracing::debug!(batch = %batch.batch_id, ms = t0.elapsed().as_millis() as u64, "batch spooled");
            self.store(&batch).await?;
        }
        self.count_dead_letters(dead);
        let pending = &self.status.pending_rows;
        pending.fetch_sub(rows.min(pending.load(Relaxed)), Relaxed);
        if self.status.pending_rows.load(Relaxed) == 0 {
            self.status.oldest_pending_ms.store(0, Relaxed);
        }
        Ok(())
    }

    /// Seal the batch's spool file (its rest, trailer, fsync) off the async
    /// threads: an fsync of megabytes must not stall the task that feeds the
    /// next batch. Retried until it succeeds (disk full holds the batch).
    pub(crate) async fn seal(&self, building: Building, batch_id: String) -> Result<SpooledBatch> {
        let (file, checkpoints) = building.into_file();
        let file = Arc::new(std::sync::Mutex::new(file));
        let (status, shutdown) = (&self.status, &self.shutdown);
        retry_local(status, shutdown, "spooling a batch", || {
            let (spool, file) = (self.spool.clone(), file.clone());
            let (id, cps) = (batch_id.clone(), checkpoints.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut file = file.lock().map_err(|_| anyhow!("a spool write panicked"))?;
                    spool.seal(&mut file, &id, &cps)
                })
                .await
                .context("the spool write panicked")?
            }
        })
        .await
    }

    fn count_dead_letters(&mut self, n: u64) {
        self.stats.dead_letters += n;
        self.status.dead_letters.fetch_add(n, Relaxed);
    }

    /// Insert every table (bisecting data errors), dead-letter the rejected
    /// rows, commit the checkpoints, drop the spool file.
    pub(crate) async fn store(&mut self, batch: &SpooledBatch) -> Result<()> {
        let t0 = std::time::Instant::now();
        let (stored, rejected) = self.insert_tables(batch).await?;
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
            || async { spool.remove(&batch.batch_id) },
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
            inserts.spawn(async move {
                let done = ins.insert_bisect(&table, &rows, &prefix).await;
                done.map(|(n, bad)| (table, n, bad))
            });
        }
        let (mut stored, mut rejected) = (0, Vec::new());
        while let Some(done) = inserts.join_next().await {
            let (table, n, bad) = done.context("insert task panicked")??;
            self.status.add_table_rows(&table, n);
            stored += n;
            rejected.extend(bad);
        }
        rejected.sort_by(|a, b| (&a.table, a.index).cmp(&(&b.table, b.index)));
        Ok((stored, rejected))
    }

    async fn insert_dead_letters(&mut self, batch_id: &str, rejected: &[Rejected]) -> Result<()> {
        let mut data = Vec::new();
        let mut warned = Default::default();
        for r in rejected {
            let mut dl = sink_dead_letter(&r.table, &r.row, &r.error);
            self.stamp.apply_privacy(&mut dl);
            encode_row(&mut data, &dl, Some(&self.dead_letter_cols), &mut warned)?;
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

    pub(crate) async fn commit_checkpoints(
        &mut self,
        cps: &[(PathBuf, Option<FileCheckpoint>)],
    ) -> Result<()> {
        let store = &mut self.checkpoints;
        let (status, shutdown) = (&self.status, &self.shutdown);
        retry_local(status, shutdown, "committing checkpoints", || {
            let r = store.commit(cps);
            async { r }
        })
        .await
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
pub(crate) async fn retry_local<T, F: Future<Output = Result<T>>>(
    status: &IngestStatus,
    shutdown: &AtomicBool,
    what: &str,
    mut f: impl FnMut() -> F,
) -> Result<T> {
    let mut delay = Duration::from_millis(100);
    let mut failed = false;
    loop {
        match f().await {
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

/// A row ClickHouse refused as data, isolated by bisection.
struct Rejected {
    table: String,
    index: usize,
    row: Vec<u8>,
    error: String,
}

impl Rejected {
    fn new(table: &str, lines: &Lines, index: usize, error: &anyhow::Error) -> Rejected {
        Rejected {
            table: table.to_string(),
            index,
            row: lines.row(index).to_vec(),
            error: format!("{error:#}"),
        }
    }
}

/// What one insert sends: a table's rows, or a range of them (bisection).
enum Body<'a> {
    All(&'a TableRows),
    Part(Bytes),
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
    /// Insert all rows (streamed from the spool); on a data error split them
    /// in halves until the bad rows are alone: k bad rows in n cost
    /// O(k log n) inserts, not n.
    async fn insert_bisect(
        &self,
        table: &str,
        rows: &TableRows,
        prefix: &str,
    ) -> Result<(u64, Vec<Rejected>)> {
        let n = rows.len();
        let err = match self.insert_retrying(table, Body::All(rows), prefix).await {
            Ok(()) => return Ok((n as u64, Vec::new())),
            Err(e) if classify_error(&e) != FailureKind::Data => return Err(e),
            Err(e) => e,
        };
        tracing::warn!(table, rows = n, error = %format!("{err:#}"), "batch rejected; bisecting it to find the bad rows");
        // Only now are the rows needed in memory, with their boundaries.
        let lines = rows.lines().await?;
        let mut rejected = Vec::new();
        let mut todo = Vec::new();
        if n == 1 {
            rejected.push(Rejected::new(table, &lines, 0, &err));
        } else {
            todo = vec![(n / 2, n), (0, n / 2)];
        }
        let mut stored = 0u64;
        while let Some((lo, hi)) = todo.pop() {
            if lo == hi {
                continue;
            }
            let token = range_token(prefix, lo, hi, n);
            let part = Body::Part(lines.range(lo, hi));
            match self.insert_retrying(table, part, &token).await {
                Ok(()) => stored += (hi - lo) as u64,
                // Shutting down mid-outage: stop; the batch stays spooled.
                Err(e) if classify_error(&e) != FailureKind::Data => return Err(e),
                Err(e) if hi - lo == 1 => rejected.push(Rejected::new(table, &lines, lo, &e)),
                Err(_) => {
                    let mid = lo + (hi - lo) / 2;
                    todo.push((mid, hi));
                    todo.push((lo, mid));
                }
            }
        }
        Ok((stored, rejected))
    }

    /// One insert attempt: a whole table is streamed a segment at a time.
    async fn insert_once(&self, table: &str, body: &Body<'_>, token: &str) -> Result<()> {
        match body {
            Body::Part(data) => {
                let data = data.clone();
                self.client.insert_json_each_row(table, data, token).await
            }
            Body::All(rows) => {
                let chunks = rows.chunk_count();
                let client = &self.client;
                client
                    .insert_json_each_row_chunks(table, token, chunks, |i| rows.chunk(i))
                    .await
            }
        }
    }

    /// Insert, retrying storage and availability failures with capped
    /// exponential backoff for as long as it takes (the batch is safe in the
    /// spool meanwhile). Returns an error only for a data error, or when
    /// shutting down (anything else is never a data error).
    async fn insert_retrying(&self, table: &str, body: Body<'_>, token: &str) -> Result<()> {
        let mut delay = Duration::from_millis(200);
        let mut attempt = 0u32;
        let mut failed = false;
        loop {
            attempt += 1;
            self.inserts.fetch_add(1, Relaxed);
            let t0 = std::time::Instant::now();
            let err = match self.insert_once(table, &body, token).await {
                Ok(()) => {
                    timings().insert_seconds.observe(t0.elapsed().as_secs_f64());
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
