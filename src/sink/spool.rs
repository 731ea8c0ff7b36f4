//! Write-ahead spool: a batch is written (and fsynced) here before it is
//! inserted, and deleted only after its rows are in ClickHouse and its
//! checkpoints are committed. A crash anywhere in between is repaired at the
//! next start by replaying the spooled batch with the SAME insert
//! deduplication tokens, so ClickHouse keeps exactly one copy.

use crate::source::FileCheckpoint;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One table's rows of a batch, encoded once as JSONEachRow (one row per
/// line, no newline inside a row): these same bytes are spooled and inserted,
/// and any sub-range of rows is a zero-copy slice.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableRows {
    data: Bytes,
    /// End offset (after the newline) of each row.
    ends: Vec<usize>,
}

impl TableRows {
    /// Rows from JSONEachRow bytes; a missing final newline is an error.
    pub fn from_lines(data: Vec<u8>) -> Result<TableRows> {
        if data.last().is_some_and(|b| *b != b'\n') {
            bail!("encoded rows do not end with a newline");
        }
        let ends = memchr::memchr_iter(b'\n', &data).map(|i| i + 1).collect();
        Ok(TableRows {
            data: Bytes::from(data),
            ends,
        })
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    fn start_of(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    /// Rows `lo..hi` as insert data.
    pub fn range(&self, lo: usize, hi: usize) -> Bytes {
        self.data.slice(self.start_of(lo)..self.ends[hi - 1])
    }

    /// Row `i` without its newline.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.data[self.start_of(i)..self.ends[i] - 1]
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpooledBatch {
    /// Unique and increasing: `<unix nanos>-<pid>-<seq>`; the dedup token prefix.
    pub batch_id: String,
    /// Rows grouped by table (BTreeMap: a deterministic insert order).
    pub tables: BTreeMap<String, TableRows>,
    /// Checkpoint updates to commit once every table is stored (None = forget).
    pub checkpoints: Vec<(PathBuf, Option<FileCheckpoint>)>,
}

impl SpooledBatch {
    pub fn row_count(&self) -> usize {
        self.tables.values().map(TableRows::len).sum()
    }

    pub fn byte_count(&self) -> usize {
        self.tables.values().map(TableRows::bytes).sum()
    }
}

/// The first line of a spool file; the tables' bytes follow in this order.
#[derive(Serialize, Deserialize)]
struct Header {
    batch_id: String,
    /// Paths kept exactly, even when not UTF-8.
    #[serde(with = "crate::source::lossless_paths")]
    checkpoints: Vec<(PathBuf, Option<FileCheckpoint>)>,
    /// (table, byte length of its rows)
    tables: Vec<(String, usize)>,
}

/// A batch spooled by a version that stored rows as JSON objects
/// (`<id>.batch.json`); the writer encodes it like fresh rows.
#[derive(Debug, Clone, Deserialize)]
pub struct LegacyBatch {
    pub batch_id: String,
    pub tables: BTreeMap<String, Vec<serde_json::Map<String, serde_json::Value>>>,
    #[serde(with = "crate::source::lossless_paths")]
    pub checkpoints: Vec<(PathBuf, Option<FileCheckpoint>)>,
}

pub enum Spooled {
    Encoded(SpooledBatch),
    Legacy(LegacyBatch),
}

#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
}

const SUFFIX: &str = ".batch";
const LEGACY_SUFFIX: &str = ".batch.json";

impl Spool {
    pub fn open(dir: &Path) -> Result<Spool> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create spool dir {}", dir.display()))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    fn path_of(&self, batch_id: &str, suffix: &str) -> PathBuf {
        self.dir.join(format!("{batch_id}{suffix}"))
    }

    /// Durably store a batch (tmp file, fsync, rename, fsync dir). On failure
    /// (e.g. ENOSPC) the tmp file is removed and nothing is spooled.
    pub fn write(&self, batch: &SpooledBatch) -> Result<()> {
        let final_path = self.path_of(&batch.batch_id, SUFFIX);
        let tmp = final_path.with_extension("tmp");
        let r = write_synced(&tmp, batch).and_then(|()| {
            std::fs::rename(&tmp, &final_path)
                .with_context(|| format!("cannot rename {}", tmp.display()))
        });
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r?;
        sync_dir(&self.dir);
        Ok(())
    }

    pub fn remove(&self, batch_id: &str) -> Result<()> {
        for suffix in [SUFFIX, LEGACY_SUFFIX] {
            let p = self.path_of(batch_id, suffix);
            match std::fs::remove_file(&p) {
                Ok(()) => sync_dir(&self.dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
            }
        }
        Ok(())
    }

    /// Spooled batches left by a previous run, oldest first. A half-written
    /// `.tmp` was never inserted (we spool before inserting), so it is deleted.
    pub fn pending(&self) -> Result<Vec<Spooled>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .with_context(|| format!("cannot list {}", self.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(&f);
                continue;
            }
            let data = || std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()));
            let corrupt = || format!("spool file {} is corrupt", f.display());
            if name.ends_with(SUFFIX) {
                out.push(Spooled::Encoded(decode(data()?).with_context(corrupt)?));
            } else if name.ends_with(LEGACY_SUFFIX) {
                let b = serde_json::from_slice(&data()?).with_context(corrupt)?;
                out.push(Spooled::Legacy(b));
            }
        }
        Ok(out)
    }
}

fn write_synced(path: &Path, batch: &SpooledBatch) -> Result<()> {
    let header = Header {
        batch_id: batch.batch_id.clone(),
        checkpoints: batch.checkpoints.clone(),
        tables: batch
            .tables
            .iter()
            .map(|(t, r)| (t.clone(), r.bytes()))
            .collect(),
    };
    let mut head = serde_json::to_vec(&header).context("cannot serialise batch header")?;
    head.push(b'\n');
    let mut f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut write = || -> std::io::Result<()> {
        f.write_all(&head)?;
        for rows in batch.tables.values() {
            f.write_all(&rows.data)?;
        }
        f.sync_all()
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}

fn decode(data: Vec<u8>) -> Result<SpooledBatch> {
    let nl = memchr::memchr(b'\n', &data).context("no header line")?;
    let header: Header = serde_json::from_slice(&data[..nl]).context("bad header")?;
    let mut pos = nl + 1;
    let mut tables = BTreeMap::new();
    for (table, len) in header.tables {
        let body = data.get(pos..pos + len).context("truncated table data")?;
        tables.insert(table, TableRows::from_lines(body.to_vec())?);
        pos += len;
    }
    if pos != data.len() {
        bail!("{} trailing bytes", data.len() - pos);
    }
    Ok(SpooledBatch {
        batch_id: header.batch_id,
        tables,
        checkpoints: header.checkpoints,
    })
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileId;

    fn rows(lines: &[&str]) -> TableRows {
        TableRows::from_lines(
            lines
                .iter()
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .into(),
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let cp = FileCheckpoint {
            file_id: FileId { dev: 1, ino: 2 },
            offset: 99,
            fingerprint: 7,
        };
        let b = SpooledBatch {
            batch_id: "0001-1-1".into(),
            tables: BTreeMap::from([
                ("a".to_string(), rows(&[r#"{"x":1}"#, r#"{"x":2}"#])),
                ("b".to_string(), rows(&[r#"{"y":"z"}"#])),
            ]),
            checkpoints: vec![(PathBuf::from("/f"), Some(cp)), (PathBuf::from("/g"), None)],
        };
        assert_eq!(b.row_count(), 3);
        assert_eq!(b.tables["a"].row(1), br#"{"x":2}"#);
        assert_eq!(&b.tables["a"].range(1, 2)[..], b"{\"x\":2}\n");
        spool.write(&b).unwrap();
        std::fs::write(dir.path().join("0002-1-1.batch.tmp"), b"half").unwrap();
        let p = spool.pending().unwrap();
        assert!(matches!(&p[..], [Spooled::Encoded(got)] if *got == b));
        assert!(!dir.path().join("0002-1-1.batch.tmp").exists());
        spool.remove(&b.batch_id).unwrap();
        assert!(spool.pending().unwrap().is_empty());
    }

    #[test]
    fn legacy_spool_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        std::fs::write(
            dir.path().join("0001-1-1.batch.json"),
            r#"{"batch_id":"0001-1-1","tables":{"a":[{"x":1}]},"checkpoints":[]}"#,
        )
        .unwrap();
        let p = spool.pending().unwrap();
        assert!(matches!(&p[..], [Spooled::Legacy(b)] if b.tables["a"].len() == 1));
        spool.remove("0001-1-1").unwrap();
        assert!(spool.pending().unwrap().is_empty());
    }

    /// A spool write that hits ENOSPC fails cleanly (no partial file left
    /// behind); needs root for a tiny tmpfs, skipped loudly otherwise.
    #[test]
    fn a_full_disk_fails_the_write_without_leaving_a_partial_file() {
        let Some(mnt) = crate::sink::testing::SmallTmpfs::mount("64k") else {
            return;
        };
        let spool = Spool::open(mnt.path()).unwrap();
        let big = format!("{{\"x\":\"{}\"}}", "y".repeat(200_000));
        let b = SpooledBatch {
            batch_id: "0001-1-1".into(),
            tables: BTreeMap::from([("a".to_string(), rows(&[&big]))]),
            checkpoints: vec![],
        };
        let err = spool.write(&b).unwrap_err();
        assert!(format!("{err:#}").contains("No space left"), "{err:#}");
        assert!(spool.pending().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(mnt.path()).unwrap().count(), 0);
        mnt.resize("1m");
        spool.write(&b).unwrap();
        assert_eq!(spool.pending().unwrap().len(), 1);
    }
}
