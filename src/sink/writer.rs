//! Batching writer: encode → spool → insert → commit.
//!
//! Each row is encoded once (JSONEachRow, unknown columns dropped) into its
//! table's buffer as it arrives; full buffers go to the batch's spool file as
//! it is built, so a big batch costs disk, not memory. The sealed file
//! (fsync) is then inserted table by table, streamed, with dedup tokens. Only
//! then are the source checkpoints committed. Encoding and storing are two
//! tasks: the writer builds batch N+1 while the storer (`store.rs`) seals,
//! inserts and commits batch N, in order, with at most one built batch
//! waiting between them.
//!
//! Batches are flushed as soon as the input is caught up (nothing queued
//! upstream), so a live append is visible within one insert; they grow big
//! only while the writer is behind.

use super::budget::Permit;
use super::clickhouse::ChClient;
use super::identity::{is_identity_column, RowStamp, HOST_COLUMN, USER_COLUMN};
use super::spool::{BatchFile, LegacyBatch, Spool, Spooled};
use super::status::IngestStatus;
use super::store::{retry_local, Storer};
use crate::row::Row;
use crate::source::{CheckpointStore, FileCheckpoint};
use anyhow::{anyhow, Context, Result};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
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
        checkpoint: Option<(Arc<PathBuf>, FileCheckpoint)>,
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
    /// Identity and privacy applied to every row before it is encoded.
    pub stamp: RowStamp,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    pub batches: u64,
    pub rows: u64,
    pub dead_letters: u64,
    /// Insert requests sent (bisection of a bad batch adds O(log n)).
    pub inserts: u64,
}

/// A table's columns, each with its JSON key already encoded (`"name":`),
/// and the identity columns it has, encoded once with their values: the
/// sink, not a rule, says where a row came from (see `identity.rs`).
#[derive(Debug, Default, Clone)]
pub(crate) struct TableCols {
    keys: FxHashMap<Box<str>, Box<[u8]>>,
    /// `"host":"…","user_name":"…"` (those of the two the table has).
    identity: Box<[u8]>,
}

impl TableCols {
    fn new(names: &HashSet<String>, stamp: &RowStamp) -> TableCols {
        let keys = names
            .iter()
            .filter(|n| !is_identity_column(n))
            .map(|n| (n.as_str().into(), json_key(n).into()))
            .collect();
        let who = stamp.stored_identity();
        let mut identity = Vec::new();
        for (col, val) in [(HOST_COLUMN, &who.host), (USER_COLUMN, &who.user)] {
            if names.contains(col) {
                if !identity.is_empty() {
                    identity.push(b',');
                }
                identity.extend_from_slice(&json_key(col));
                identity.extend_from_slice(&serde_json::to_vec(val).unwrap_or_default());
            }
        }
        TableCols {
            keys,
            identity: identity.into(),
        }
    }

    fn key(&self, column: &str) -> Option<&[u8]> {
        self.keys.get(column).map(|k| &**k)
    }
}

fn json_key(name: &str) -> Vec<u8> {
    let mut key = serde_json::to_vec(name).unwrap_or_default();
    key.push(b':');
    key
}

fn table_cols(
    columns: HashMap<String, HashSet<String>>,
    stamp: &RowStamp,
) -> FxHashMap<String, TableCols> {
    columns
        .into_iter()
        .map(|(t, cols)| (t, TableCols::new(&cols, stamp)))
        .collect()
}

/// (table, column) pairs already warned about.
pub(crate) type Warned = FxHashSet<(String, String)>;

/// Encoder state: which tables and columns exist.
struct Encoder {
    client: ChClient,
    /// Where batches are built (see `spool/file.rs`).
    spool: Spool,
    status: Arc<IngestStatus>,
    shutdown: Arc<AtomicBool>,
    cfg: WriterConfig,
    tables: FxHashMap<String, TableCols>,
    /// Tables looked up again since the last flush (one schema refresh each).
    refreshed: FxHashSet<String>,
    warned: Warned,
    caught_up: bool,
}

pub struct Writer {
    enc: Encoder,
    sto: Storer,
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
            let cols: usize = r.columns.iter().map(|(k, v)| 48 + k.len() + value(v)).sum();
            64 + r.table.len() + cols
        })
        .sum()
}

/// The batch being built: rows already encoded per table, in its spool file.
pub(crate) struct Building {
    file: BatchFile,
    /// Checkpoint updates in arrival order; consecutive updates of one file
    /// (the common case) share an entry.
    checkpoints: Vec<(Arc<PathBuf>, Option<FileCheckpoint>)>,
    pub(crate) rows: usize,
    bytes: usize,
    /// Dead letters made while encoding (rows for tables that do not exist).
    pub(crate) dead_letters: u64,
    deadline: Option<Instant>,
}

impl Building {
    pub(crate) fn new(spool: &Spool) -> Building {
        Building {
            file: spool.batch_file(),
            checkpoints: Vec::new(),
            rows: 0,
            bytes: 0,
            dead_letters: 0,
            deadline: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows == 0 && self.checkpoints.is_empty()
    }

    fn set_checkpoint(&mut self, path: Arc<PathBuf>, cp: Option<FileCheckpoint>) {
        match self.checkpoints.last_mut() {
            Some((p, last)) if Arc::ptr_eq(p, &path) || **p == *path => *last = cp,
            _ => self.checkpoints.push((path, cp)),
        }
    }

    /// The last update of each file, in first-seen order.
    pub(crate) fn checkpoint_updates(&self) -> Vec<(PathBuf, Option<FileCheckpoint>)> {
        let mut at: FxHashMap<&PathBuf, usize> = FxHashMap::default();
        let mut out: Vec<(PathBuf, Option<FileCheckpoint>)> = Vec::new();
        for (p, cp) in &self.checkpoints {
            match at.get(&**p) {
                Some(&i) => out[i].1 = *cp,
                None => {
                    at.insert(p, out.len());
                    out.push(((**p).clone(), *cp));
                }
            }
        }
        out
    }

    /// The rows' file and the checkpoints they complete (to seal the batch).
    pub(crate) fn into_file(self) -> (BatchFile, Vec<(PathBuf, Option<FileCheckpoint>)>) {
        let cps = self.checkpoint_updates();
        (self.file, cps)
    }
}

/// Append one row to `out` as a JSONEachRow line. With `known`, columns the
/// table does not have are dropped (warning once per column) rather than
/// failing every batch over a typo in a rule file. The only code that reads
/// a `Row`'s columns.
pub(crate) fn encode_row(
    out: &mut Vec<u8>,
    row: &Row,
    known: Option<&TableCols>,
    warned: &mut Warned,
) -> Result<()> {
    let table: &str = &row.table;
    out.push(b'{');
    let mut first = true;
    for (k, v) in &row.columns {
        let k: &str = k;
        let key = match known.map(|t| t.key(k)) {
            Some(Some(key)) => key,
            // stamped below, whatever a rule or plugin set
            Some(None) if is_identity_column(k) => continue,
            Some(None) => {
                if warned.insert((table.to_string(), k.to_string())) {
                    tracing::warn!(table, column = %k, "rules write a column the table does not have; ignoring it");
                }
                continue;
            }
            None => {
                encode_key(out, first, k)?;
                first = false;
                serde_json::to_writer(&mut *out, v).context("cannot encode a value")?;
                continue;
            }
        };
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(key);
        serde_json::to_writer(&mut *out, v).context("cannot encode a value")?;
    }
    if let Some(id) = known.map(|t| &*t.identity).filter(|id| !id.is_empty()) {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(id);
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

fn encode_key(out: &mut Vec<u8>, first: bool, k: &str) -> Result<()> {
    if !first {
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, k).context("cannot encode a column name")?;
    out.push(b':');
    Ok(())
}

/// A sink dead letter for one encoded row. Its key (`source_file`,
/// `source_offset`, `stage`) must be distinct per row and stable across
/// replays and re-reads: the file gets `#<table>:<hash of the row>` appended,
/// so two bad rows of one line, or rows with no source position, never
/// collapse into one, and the same row always maps to the same key.
pub(crate) fn sink_dead_letter(table: &str, row: &[u8], error: &str) -> Row {
    let cols: Value = serde_json::from_slice(row).unwrap_or_default();
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

impl Writer {
    pub async fn new(
        client: ChClient,
        spool: Spool,
        checkpoints: CheckpointStore,
        status: Arc<IngestStatus>,
        shutdown: Arc<AtomicBool>,
        cfg: WriterConfig,
    ) -> Result<Writer> {
        let tables = table_cols(client.table_columns().await?, &cfg.stamp);
        let dead_letter_cols = tables
            .get(DEAD_LETTER_TABLE)
            .cloned()
            .ok_or_else(|| anyhow!("the {DEAD_LETTER_TABLE} table is missing"))?;
        let sto = Storer {
            client: client.clone(),
            spool: spool.clone(),
            checkpoints,
            status: status.clone(),
            shutdown: shutdown.clone(),
            dead_letter_cols,
            stamp: cfg.stamp.clone(),
            seq: 0,
            inserts: Arc::new(AtomicU64::new(0)),
            failing: Arc::new(AtomicU64::new(0)),
            stats: WriterStats::default(),
        };
        let enc = Encoder {
            client,
            spool,
            status,
            shutdown,
            cfg,
            tables,
            refreshed: FxHashSet::default(),
            warned: Warned::default(),
            caught_up: false,
        };
        Ok(Writer { enc, sto })
    }

    pub fn checkpoints(&self) -> &CheckpointStore {
        &self.sto.checkpoints
    }

    pub fn stats(&self) -> WriterStats {
        self.sto.stats
    }

    /// Finish batches a previous run spooled but may not have stored.
    pub async fn replay_spool(&mut self) -> Result<usize> {
        let pending = self.sto.spool.pending()?;
        let n = pending.len();
        for spooled in pending {
            let batch = match spooled {
                Spooled::Encoded(b) => b,
                Spooled::Legacy(b) => {
                    let (id, building) = self.enc.encode_legacy(b).await?;
                    self.sto.seal(building, id).await?
                }
            };
            tracing::info!(batch = %batch.batch_id, rows = batch.row_count(), "replaying spooled batch");
            self.sto.store(&batch).await?;
        }
        Ok(n)
    }

    /// Encode, spool, insert and commit one batch (tests and tools).
    pub async fn write(
        &mut self,
        rows: Vec<Row>,
        checkpoints: Vec<(PathBuf, Option<FileCheckpoint>)>,
    ) -> Result<()> {
        let mut b = Building::new(&self.enc.spool);
        self.enc.add_rows(&mut b, rows).await?;
        for (p, cp) in checkpoints {
            b.set_checkpoint(Arc::new(p), cp);
        }
        self.enc.refreshed.clear();
        self.sto.flush(b).await
    }
}

impl Encoder {
    /// A batch spooled by an older version: encode it to be sealed under its
    /// own id, so its dedup tokens are the ones that version used.
    async fn encode_legacy(&mut self, b: LegacyBatch) -> Result<(String, Building)> {
        let mut building = Building::new(&self.spool);
        for (table, rows) in b.tables {
            let rows = rows
                .into_iter()
                .map(|columns| {
                    columns
                        .into_iter()
                        .fold(Row::new(table.as_str()), |r, (k, v)| r.with(k, v))
                })
                .collect();
            self.add_rows(&mut building, rows).await?;
        }
        for (p, cp) in b.checkpoints {
            building.set_checkpoint(Arc::new(p), cp);
        }
        Ok((b.batch_id, building))
    }

    /// Encode rows into the batch; rows for a table that does not exist
    /// (after one schema refresh) become dead letters in the same batch.
    async fn add_rows(&mut self, b: &mut Building, rows: Vec<Row>) -> Result<()> {
        for mut r in rows {
            self.cfg.stamp.apply_privacy(&mut r);
            let table: &str = &r.table;
            if !self.tables.contains_key(table) && self.refreshed.insert(table.to_string()) {
                self.refresh_schema().await;
            }
            match self.tables.get(table) {
                Some(known) => {
                    let out = b.file.row_buffer(table)?;
                    let before = out.len();
                    encode_row(out, &r, Some(known), &mut self.warned)?;
                    b.bytes += out.len() - before;
                }
                None => self.add_missing_table_row(b, &r)?,
            }
            b.rows += 1;
        }
        self.status.batch_bytes.store(b.bytes as u64, Relaxed);
        // Full buffers go to the spool file; a full disk holds the batch
        // (and, through the queues, the tailer) until there is room.
        let (status, shutdown) = (&self.status, &self.shutdown);
        retry_local(status, shutdown, "spooling a batch", || {
            let spilled = b.file.spill();
            async { spilled }
        })
        .await
    }

    fn add_missing_table_row(&mut self, b: &mut Building, r: &Row) -> Result<()> {
        let table: &str = &r.table;
        let error = format!(
            "table `{table}` does not exist in database `{}` (add its DDL to a schema dir)",
            self.client.database()
        );
        let mut row = Vec::new();
        encode_row(&mut row, r, None, &mut self.warned)?;
        row.pop(); // the newline
        let mut dl = sink_dead_letter(table, &row, &error);
        self.cfg.stamp.apply_privacy(&mut dl);
        let known = self
            .tables
            .get(DEAD_LETTER_TABLE)
            .ok_or_else(|| anyhow!("the {DEAD_LETTER_TABLE} table is missing"))?;
        let out = b.file.row_buffer(DEAD_LETTER_TABLE)?;
        let before = out.len();
        encode_row(out, &dl, Some(known), &mut self.warned)?;
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
                    b.set_checkpoint(p, Some(cp));
                }
            }
            SinkItem::Forget(p) => b.set_checkpoint(Arc::new(p), None),
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
    fn input_idle(&self, rx: &mpsc::Receiver<Vec<SinkItem>>) -> bool {
        self.caught_up && rx.is_empty() && self.status.lines_in_flight.load(Relaxed) == 0
    }

    /// The batch is complete: hand it to the storer and start the next one.
    fn take(&mut self, b: &mut Building) -> Building {
        self.refreshed.clear();
        self.status.batch_bytes.store(0, Relaxed);
        std::mem::replace(b, Building::new(&self.spool))
    }

    async fn refresh_schema(&mut self) {
        if let Err(e) = self.client.ensure_schema(&self.cfg.schema_dirs).await {
            tracing::warn!(error = %format!("{e:#}"), "re-applying schema failed");
        }
        match self.client.table_columns().await {
            Ok(c) => self.tables = table_cols(c, &self.cfg.stamp),
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot read table columns"),
        }
    }
}

/// What the writer loop waits for.
enum Next {
    Items(Vec<SinkItem>),
    Due,
    Closed,
}

async fn next(rx: &mut mpsc::Receiver<Vec<SinkItem>>, deadline: Option<Instant>) -> Next {
    let item = match deadline {
        Some(d) => tokio::select! {
            item = rx.recv() => item,
            _ = tokio::time::sleep_until(d) => return Next::Due,
        },
        None => rx.recv().await,
    };
    item.map_or(Next::Closed, Next::Items)
}

/// The writer: encodes items from `rx` into batches and hands each to the
/// storer task; when `rx` closes, the last batch is stored and the stats of
/// the run returned.
pub async fn run_writer(writer: Writer, rx: mpsc::Receiver<Vec<SinkItem>>) -> Result<WriterStats> {
    let Writer { mut enc, sto } = writer;
    // One built batch may wait while another is stored; more would only
    // hold memory (the queues upstream absorb the rest).
    let (tx, batches) = mpsc::channel::<Building>(1);
    let storer = tokio::spawn(sto.run(batches));
    let fed = feed(&mut enc, rx, &tx).await;
    drop(tx);
    // The storer's error first: when it fails, feeding stops for that reason.
    let stats = storer.await.context("the storer panicked")??;
    fed?;
    Ok(stats)
}

async fn feed(
    enc: &mut Encoder,
    mut rx: mpsc::Receiver<Vec<SinkItem>>,
    tx: &mpsc::Sender<Building>,
) -> Result<()> {
    let mut b = Building::new(&enc.spool);
    loop {
        match next(&mut rx, b.deadline).await {
            Next::Due => hand_over(enc, &mut b, tx).await?,
            Next::Closed => {
                let last = enc.take(&mut b);
                return tx.send(last).await.map_err(|_| writer_gone());
            }
            Next::Items(items) => {
                for item in items {
                    if enc.accept(&mut b, item).await? {
                        hand_over(enc, &mut b, tx).await?;
                    }
                }
                if !b.is_empty() && enc.input_idle(&rx) {
                    // Linger a moment: the other lines of the same append are
                    // usually still on their way, and one insert is cheaper
                    // (and sooner visible) than two.
                    let soon = Instant::now() + IDLE_LINGER;
                    b.deadline = Some(b.deadline.map_or(soon, |d| d.min(soon)));
                }
            }
        }
    }
}

/// The batch is complete: hand it to the storer.
async fn hand_over(enc: &mut Encoder, b: &mut Building, tx: &mpsc::Sender<Building>) -> Result<()> {
    let done = enc.take(b);
    tx.send(done).await.map_err(|_| writer_gone())
}

/// Convenience for tests and the pipeline: error if the writer task died.
pub fn writer_gone() -> anyhow::Error {
    anyhow!("the ClickHouse writer stopped (see the error above)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::spool::{SpooledBatch, TableRows};
    use crate::sink::testing;
    use crate::source::{FileCheckpoint, FileId};
    use std::collections::BTreeMap;

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

    /// Consecutive updates of one file share an entry; the last update of
    /// each file wins (a forget after rows, rows after a forget), and files
    /// keep the order they were first seen in.
    #[test]
    fn checkpoint_updates_keep_the_last_per_file() {
        let (a, b) = (Arc::new(PathBuf::from("/a")), Arc::new(PathBuf::from("/b")));
        let dir = tempfile::tempdir().unwrap();
        let mut bl = Building::new(&Spool::open(dir.path()).unwrap());
        bl.set_checkpoint(a.clone(), Some(cp(1)));
        bl.set_checkpoint(a.clone(), Some(cp(2)));
        assert_eq!(bl.checkpoints.len(), 1);
        bl.set_checkpoint(b.clone(), Some(cp(3)));
        bl.set_checkpoint(Arc::new(PathBuf::from("/a")), None);
        bl.set_checkpoint(b.clone(), None);
        bl.set_checkpoint(b, Some(cp(4)));
        assert_eq!(
            bl.checkpoint_updates(),
            vec![
                (PathBuf::from("/a"), None),
                (PathBuf::from("/b"), Some(cp(4)))
            ]
        );
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
        assert_eq!(w.stats().dead_letters, 2);
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
                .await
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
        let mut b = Building::new(&w.enc.spool);
        w.enc.add_rows(&mut b, rows).await.unwrap();
        let id = w.sto.next_batch_id();
        let batch = w.sto.seal(b, id.clone()).await.unwrap();
        // What a crash before the commit leaves: the sealed file.
        let spooled = dir.path().join(format!("spool/{id}.spool"));
        let kept = dir.path().join("kept.spool");
        std::fs::copy(&spooled, &kept).unwrap();
        w.sto.store(&batch).await.unwrap();
        let inserts = w.stats().inserts;
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

        std::fs::copy(&kept, &spooled).unwrap();
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

    /// The spool (state dir) is full when the batch is sealed: it is retried,
    /// nothing is committed, /healthz says why; with space back it is stored once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_spool_disk_holds_the_batch_and_commits_nothing() {
        full_spool_disk_holds_the_batch(100_000).await;
    }

    /// The same when the disk fills while the batch is built (rows bigger
    /// than a segment are written to the spool as they are encoded).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_spool_disk_full_while_building_holds_the_batch_too() {
        full_spool_disk_holds_the_batch(crate::sink::spool::SEGMENT_BYTES).await;
    }

    async fn full_spool_disk_holds_the_batch(content_bytes: usize) {
        let Some(mnt) = testing::SmallTmpfs::mount("64k") else {
            return;
        };
        let ch = testing::fresh_client("spoolfull").await;
        let mut w = writer(mnt.path(), ch.clone()).await;
        let status = w.sto.status.clone();
        let big = "x".repeat(content_bytes);
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
