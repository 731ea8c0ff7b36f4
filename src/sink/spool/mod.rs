//! Write-ahead spool: a batch is written (and fsynced) here before it is
//! inserted, and deleted only after its rows are in ClickHouse and its
//! checkpoints are committed. A crash anywhere in between is repaired at the
//! next start by replaying the spooled batch with the SAME insert
//! deduplication tokens, so ClickHouse keeps exactly one copy.

mod file;
mod rows;

pub use file::{BatchFile, SEGMENT_BYTES};
pub use rows::{Lines, Segment, TableRows};

use crate::source::FileCheckpoint;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Clone)]
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

/// The first line of a spool file written by the previous version
/// (`<id>.batch`, all in memory); the tables' bytes follow in this order.
#[derive(Deserialize)]
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

/// Sealed batches (see `file.rs`).
const SUFFIX: &str = ".spool";
/// Batches of the two previous versions: encoded rows after a header line,
/// and rows as JSON objects. Still replayed after an upgrade.
const V2_SUFFIX: &str = ".batch";
const LEGACY_SUFFIX: &str = ".batch.json";

/// Names the files of batches being built in this process.
static BUILDING: AtomicU64 = AtomicU64::new(0);

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

    /// The file of a new batch (created at its first write; `.tmp` until sealed).
    pub fn batch_file(&self) -> BatchFile {
        let n = BUILDING.fetch_add(1, Relaxed);
        let name = format!("building-{}-{n}.tmp", std::process::id());
        BatchFile::new(self.dir.join(name))
    }

    /// Durably store a built batch under its id (fsync, rename, fsync dir).
    /// On failure (e.g. ENOSPC) nothing is spooled and a retry may follow.
    pub fn seal(
        &self,
        file: &mut BatchFile,
        batch_id: &str,
        checkpoints: &[(PathBuf, Option<FileCheckpoint>)],
    ) -> Result<SpooledBatch> {
        file.seal(batch_id, checkpoints, &self.path_of(batch_id, SUFFIX))
    }

    /// Spool a batch whose rows are in memory (tests), the way the writer does.
    #[cfg(test)]
    pub async fn write(&self, batch: &SpooledBatch) -> Result<()> {
        let mut file = self.batch_file();
        for (table, rows) in &batch.tables {
            let data = rows.lines().await?;
            file.row_buffer(table)?.extend_from_slice(data.data());
        }
        self.seal(&mut file, &batch.batch_id, &batch.checkpoints)?;
        Ok(())
    }

    pub fn remove(&self, batch_id: &str) -> Result<()> {
        for suffix in [SUFFIX, V2_SUFFIX, LEGACY_SUFFIX] {
            let p = self.path_of(batch_id, suffix);
            match std::fs::remove_file(&p) {
                Ok(()) => sync_dir(&self.dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
            }
        }
        Ok(())
    }

    /// Spooled batches left by a previous run, oldest first. A `.tmp` (a
    /// batch being built, or half-sealed) was never inserted (we spool before
    /// inserting), so it is deleted: call this before building batches.
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
                out.push(Spooled::Encoded(
                    file::read_sealed(&f).with_context(corrupt)?,
                ));
            } else if name.ends_with(V2_SUFFIX) {
                out.push(Spooled::Encoded(decode(data()?).with_context(corrupt)?));
            } else if name.ends_with(LEGACY_SUFFIX) {
                let b = serde_json::from_slice(&data()?).with_context(corrupt)?;
                out.push(Spooled::Legacy(b));
            }
        }
        Ok(out)
    }
}

/// A `.batch` file of the previous version.
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
        anyhow::bail!("{} trailing bytes", data.len() - pos);
    }
    Ok(SpooledBatch {
        batch_id: header.batch_id,
        tables,
        checkpoints: header.checkpoints,
    })
}

pub(super) fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::FileId;

    fn cp() -> FileCheckpoint {
        FileCheckpoint {
            file_id: FileId { dev: 1, ino: 2 },
            offset: 99,
            fingerprint: 7,
        }
    }

    /// Rows of two tables, interleaved as the writer encodes them.
    fn build(file: &mut BatchFile, n: usize) -> (Vec<u8>, Vec<u8>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..n {
            let row = format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "p".repeat(300));
            file.row_buffer("a")
                .unwrap()
                .extend_from_slice(row.as_bytes());
            a.extend_from_slice(row.as_bytes());
            if i % 3 == 0 {
                let row = format!("{{\"j\":{i}}}\n");
                file.row_buffer("b")
                    .unwrap()
                    .extend_from_slice(row.as_bytes());
                b.extend_from_slice(row.as_bytes());
            }
            file.spill().unwrap();
        }
        (a, b)
    }

    /// A batch bigger than a segment is written in pieces as it is built,
    /// sealed with its checkpoints, and read back after a "crash" with every
    /// row in order; stray `.tmp` files are dropped, removal is final.
    #[tokio::test]
    async fn a_sealed_batch_round_trips_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut file = spool.batch_file();
        let (a, b) = build(&mut file, 4000);
        assert!(a.len() > 2 * SEGMENT_BYTES);
        let cps = vec![
            (PathBuf::from("/f"), Some(cp())),
            (PathBuf::from("/g"), None),
        ];
        let sealed = spool.seal(&mut file, "0001-1-1", &cps).unwrap();
        drop(file);
        assert_eq!(sealed.row_count(), 4000 + 1334);
        std::fs::write(dir.path().join("building-1-1.tmp"), b"half").unwrap();
        let back = match spool.pending().unwrap().pop() {
            Some(Spooled::Encoded(back)) => back,
            _ => panic!("the sealed batch did not come back"),
        };
        assert!(!dir.path().join("building-1-1.tmp").exists());
        assert_eq!(back.batch_id, "0001-1-1");
        assert_eq!(back.checkpoints, cps);
        assert!(back.tables["a"].chunk_count() > 2, "streamed in segments");
        for (t, want, rows) in [("a", &a, 4000), ("b", &b, 1334)] {
            let got = back.tables[t].lines().await.unwrap();
            assert_eq!(got.data(), &want[..]);
            assert_eq!(back.tables[t].len(), rows);
        }
        let lines = back.tables["a"].lines().await.unwrap();
        assert!(lines.row(1).starts_with(br#"{"i":1,"#));
        assert!(lines.range(1, 2).ends_with(b"\"}\n"));
        spool.remove("0001-1-1").unwrap();
        assert!(spool.pending().unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A batch the writer dropped unsealed leaves nothing; a damaged sealed
    /// file is an error that names it, not rows silently skipped.
    #[tokio::test]
    async fn unsealed_files_vanish_and_damaged_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut file = spool.batch_file();
        build(&mut file, 3000);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(file);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut file = spool.batch_file();
        build(&mut file, 10);
        spool.seal(&mut file, "0002-1-1", &[]).unwrap();
        let path = dir.path().join("0002-1-1.spool");
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let err = spool.pending().err().expect("a damaged file is an error");
        assert!(
            format!("{err:#}").contains("0002-1-1.spool is corrupt"),
            "{err:#}"
        );
    }

    /// Files of the two previous versions are replayed after an upgrade.
    #[tokio::test]
    async fn older_spool_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        std::fs::write(
            dir.path().join("0001-1-1.batch.json"),
            r#"{"batch_id":"0001-1-1","tables":{"a":[{"x":1}]},"checkpoints":[]}"#,
        )
        .unwrap();
        let rows = b"{\"x\":1}\n{\"x\":2}\n";
        let header = format!(
            r#"{{"batch_id":"0002-1-1","checkpoints":[],"tables":[["a",{}]]}}"#,
            rows.len()
        );
        let mut v2 = format!("{header}\n").into_bytes();
        v2.extend_from_slice(rows);
        std::fs::write(dir.path().join("0002-1-1.batch"), v2).unwrap();
        let p = spool.pending().unwrap();
        assert!(matches!(&p[0], Spooled::Legacy(b) if b.tables["a"].len() == 1));
        let Spooled::Encoded(b) = &p[1] else {
            panic!("the .batch file did not come back");
        };
        assert_eq!(b.tables["a"].lines().await.unwrap().data(), rows);
        spool.remove("0001-1-1").unwrap();
        spool.remove("0002-1-1").unwrap();
        assert!(spool.pending().unwrap().is_empty());
    }

    /// A spool that hits ENOSPC, while building or sealing, fails cleanly and
    /// keeps every row for the retry; needs root for a tiny tmpfs, skipped
    /// loudly otherwise.
    #[tokio::test]
    async fn a_full_disk_fails_the_write_and_the_retry_keeps_every_row() {
        let Some(mnt) = crate::sink::testing::SmallTmpfs::mount("64k") else {
            return;
        };
        let spool = Spool::open(mnt.path()).unwrap();
        let mut file = spool.batch_file();
        let big = format!("{{\"x\":\"{}\"}}\n", "y".repeat(SEGMENT_BYTES));
        file.row_buffer("a")
            .unwrap()
            .extend_from_slice(big.as_bytes());
        let err = file.spill().unwrap_err();
        assert!(format!("{err:#}").contains("No space left"), "{err:#}");
        let small = b"{\"x\":1}\n";
        file.row_buffer("b").unwrap().extend_from_slice(small);
        let err = spool.seal(&mut file, "0001-1-1", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("No space left"), "{err:#}");
        assert!(!mnt.path().join("0001-1-1.spool").exists());
        mnt.resize("4m");
        file.spill().unwrap();
        spool.seal(&mut file, "0001-1-1", &[]).unwrap();
        let Some(Spooled::Encoded(b)) = spool.pending().unwrap().pop() else {
            panic!("the batch was not spooled");
        };
        assert_eq!(b.tables["a"].lines().await.unwrap().data(), big.as_bytes());
        assert_eq!(b.tables["b"].lines().await.unwrap().data(), small);
    }
}
