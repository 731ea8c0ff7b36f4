//! A batch's spool file. While the writer builds a batch, each table's
//! encoded rows collect in a small buffer that is appended to the file as a
//! segment whenever it fills; sealing appends the rest and a trailer (batch
//! id, checkpoints, each table's segments), fsyncs and renames the file into
//! place. Memory per batch is a few buffers whatever the batch's size, so
//! batches can be as big as ClickHouse likes them (fewer, larger inserts:
//! fewer parts to write and merge).
//!
//! Layout: `[segments…][trailer JSON][u64 LE trailer length][MAGIC]`.

use super::rows::{Segment, TableRows};
use super::{sync_dir, SpooledBatch};
use crate::source::FileCheckpoint;
use anyhow::{bail, Context, Result};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A table's buffer is appended to the file at this size: big enough that
/// writes and insert chunks are cheap, small enough that nine tables' buffers
/// are a few MiB.
pub const SEGMENT_BYTES: usize = 512 << 10;

const MAGIC: &[u8; 8] = b"CISPOOL3";

#[derive(Serialize, Deserialize)]
struct Trailer {
    batch_id: String,
    /// Paths kept exactly, even when not UTF-8.
    #[serde(with = "crate::source::lossless_paths")]
    checkpoints: Vec<(PathBuf, Option<FileCheckpoint>)>,
    tables: Vec<TableEntry>,
}

#[derive(Serialize, Deserialize)]
struct TableEntry {
    table: String,
    rows: usize,
    segments: Vec<Segment>,
}

#[derive(Default)]
struct TableBuf {
    buf: Vec<u8>,
    rows: usize,
    segments: Vec<Segment>,
}

/// The spool file of the batch being built (`.tmp` until sealed).
pub struct BatchFile {
    tmp: PathBuf,
    file: Option<Arc<File>>,
    /// Bytes appended so far (where the next segment goes).
    len: u64,
    tables: FxHashMap<String, TableBuf>,
    sealed: bool,
}

impl BatchFile {
    pub(super) fn new(tmp: PathBuf) -> BatchFile {
        BatchFile {
            tmp,
            file: None,
            len: 0,
            tables: FxHashMap::default(),
            sealed: false,
        }
    }

    /// The buffer to encode rows of `table` into, whole lines only (call
    /// `spill` now and then to keep the buffers small).
    pub fn row_buffer(&mut self, table: &str) -> Result<&mut Vec<u8>> {
        if !self.tables.contains_key(table) {
            self.tables.insert(table.to_string(), TableBuf::default());
        }
        let t = self
            .tables
            .get_mut(table)
            .context("table buffer vanished")?;
        Ok(&mut t.buf)
    }

    /// Append every full buffer to the file. On an error (disk full) nothing
    /// is lost: the buffers stay, and a retry writes them at the same offsets.
    pub fn spill(&mut self) -> Result<()> {
        let full = |t: &TableBuf| t.buf.len() >= SEGMENT_BYTES;
        if !self.tables.values().any(full) {
            return Ok(());
        }
        let file = self.open()?;
        for t in self.tables.values_mut().filter(|t| full(t)) {
            let seg = write_at(&file, &self.tmp, &t.buf, self.len)?;
            self.len += seg.len;
            t.rows += count_rows(&t.buf);
            t.segments.push(seg);
            t.buf.clear();
        }
        Ok(())
    }

    fn open(&mut self) -> Result<Arc<File>> {
        if let Some(f) = &self.file {
            return Ok(f.clone());
        }
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp)
            .with_context(|| format!("cannot create {}", self.tmp.display()))?;
        let f = Arc::new(f);
        self.file = Some(f.clone());
        Ok(f)
    }

    /// Write the rest and the trailer, fsync, and rename the file to `dest`.
    /// Idempotent until it succeeds: a failed try (disk full) changes nothing
    /// a retry would not overwrite.
    pub(super) fn seal(
        &mut self,
        batch_id: &str,
        checkpoints: &[(PathBuf, Option<FileCheckpoint>)],
        dest: &Path,
    ) -> Result<SpooledBatch> {
        let file = self.open()?;
        let mut end = self.len;
        let mut names: Vec<&String> = self.tables.keys().collect();
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let t = &self.tables[name];
            let mut segments = t.segments.clone();
            let rows = t.rows + count_rows(&t.buf);
            if !t.buf.is_empty() {
                let seg = write_at(&file, &self.tmp, &t.buf, end)?;
                end += seg.len;
                segments.push(seg);
            }
            entries.push(TableEntry {
                table: name.clone(),
                rows,
                segments,
            });
        }
        let trailer = Trailer {
            batch_id: batch_id.to_string(),
            checkpoints: checkpoints.to_vec(),
            tables: entries,
        };
        let mut tail =
            serde_json::to_vec(&trailer).context("cannot serialise the spool trailer")?;
        tail.extend_from_slice(&(tail.len() as u64).to_le_bytes());
        tail.extend_from_slice(MAGIC);
        write_at(&file, &self.tmp, &tail, end)?;
        let io = |e| anyhow::Error::new(e).context(format!("cannot write {}", self.tmp.display()));
        file.set_len(end + tail.len() as u64).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, dest)
            .with_context(|| format!("cannot rename {}", self.tmp.display()))?;
        self.sealed = true;
        if let Some(dir) = dest.parent() {
            sync_dir(dir);
        }
        Ok(batch_of(file, trailer))
    }
}

impl Drop for BatchFile {
    /// A batch dropped unsealed (the writer stopped) was never inserted and
    /// its lines never committed: its partial file is only garbage.
    fn drop(&mut self) {
        if !self.sealed && self.file.is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Rows are lines: the encoder escapes every newline inside a value.
fn count_rows(buf: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', buf).count()
}

fn write_at(file: &File, path: &Path, data: &[u8], offset: u64) -> Result<Segment> {
    file.write_all_at(data, offset)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Segment {
        offset,
        len: data.len() as u64,
    })
}

fn batch_of(file: Arc<File>, trailer: Trailer) -> SpooledBatch {
    let tables = trailer
        .tables
        .into_iter()
        .map(|t| {
            let rows = TableRows::spooled(file.clone(), t.segments, t.rows);
            (t.table, rows)
        })
        .collect::<BTreeMap<_, _>>();
    SpooledBatch {
        batch_id: trailer.batch_id,
        tables,
        checkpoints: trailer.checkpoints,
    }
}

/// A sealed spool file read back (replay after a crash): the trailer is
/// checked; the rows stay on disk until inserted.
pub(super) fn read_sealed(path: &Path) -> Result<SpooledBatch> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    let mut foot = [0u8; 16];
    if size < 16 {
        bail!("too short for a trailer");
    }
    file.read_exact_at(&mut foot, size - 16)?;
    if &foot[8..] != MAGIC {
        bail!("no spool trailer");
    }
    let tail_len = u64::from_le_bytes(foot[..8].try_into().context("trailer length")?);
    let tail_at = size
        .checked_sub(16 + tail_len)
        .context("trailer length beyond the file")?;
    let mut tail = vec![0u8; usize::try_from(tail_len)?];
    file.read_exact_at(&mut tail, tail_at)?;
    let trailer: Trailer = serde_json::from_slice(&tail).context("bad trailer")?;
    for seg in trailer.tables.iter().flat_map(|t| &t.segments) {
        if seg.offset.checked_add(seg.len).is_none_or(|e| e > tail_at) {
            bail!("a segment lies beyond the rows");
        }
    }
    Ok(batch_of(Arc::new(file), trailer))
}
