//! Write-ahead spool: a batch is written (and fsynced) here before it is
//! inserted, and deleted only after its rows are in ClickHouse and its
//! checkpoints are committed. A crash anywhere in between is repaired at the
//! next start by replaying the spooled batch with the SAME insert
//! deduplication tokens, so ClickHouse keeps exactly one copy.

use crate::row::Row;
use crate::source::FileCheckpoint;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpooledBatch {
    /// Unique and increasing: `<unix nanos>-<pid>-<seq>`; the dedup token prefix.
    pub batch_id: String,
    /// Rows grouped by table (BTreeMap: a deterministic insert order).
    pub tables: BTreeMap<String, Vec<crate::row::Columns>>,
    /// Checkpoint updates to commit once every table is stored (None = forget).
    /// Paths kept exactly, even when not UTF-8.
    #[serde(with = "crate::source::lossless_paths")]
    pub checkpoints: Vec<(PathBuf, Option<FileCheckpoint>)>,
}

impl SpooledBatch {
    pub fn new(
        batch_id: String,
        rows: Vec<Row>,
        checkpoints: Vec<(PathBuf, Option<FileCheckpoint>)>,
    ) -> Self {
        let mut tables: BTreeMap<String, Vec<crate::row::Columns>> = BTreeMap::new();
        for r in rows {
            tables.entry(r.table).or_default().push(r.columns);
        }
        SpooledBatch {
            batch_id,
            tables,
            checkpoints,
        }
    }

    pub fn row_count(&self) -> usize {
        self.tables.values().map(Vec::len).sum()
    }
}

pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn open(dir: &Path) -> Result<Spool> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create spool dir {}", dir.display()))?;
        Ok(Spool {
            dir: dir.to_path_buf(),
        })
    }

    fn path_of(&self, batch_id: &str) -> PathBuf {
        self.dir.join(format!("{batch_id}.batch.json"))
    }

    /// Durably store a batch (tmp file, fsync, rename, fsync dir).
    pub fn write(&self, batch: &SpooledBatch) -> Result<()> {
        let final_path = self.path_of(&batch.batch_id);
        let tmp = final_path.with_extension("tmp");
        let data = serde_json::to_vec(batch).context("cannot serialise batch")?;
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(&data)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &final_path)
            .with_context(|| format!("cannot rename {}", tmp.display()))?;
        sync_dir(&self.dir);
        Ok(())
    }

    pub fn remove(&self, batch_id: &str) -> Result<()> {
        let p = self.path_of(batch_id);
        match std::fs::remove_file(&p) {
            Ok(()) => {
                sync_dir(&self.dir);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    }

    /// Spooled batches left by a previous run, oldest first. A half-written
    /// `.tmp` was never inserted (we spool before inserting), so it is deleted.
    pub fn pending(&self) -> Result<Vec<SpooledBatch>> {
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
            if !name.ends_with(".batch.json") {
                continue;
            }
            let data = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
            let batch: SpooledBatch = serde_json::from_slice(&data)
                .with_context(|| format!("spool file {} is corrupt", f.display()))?;
            out.push(batch);
        }
        Ok(out)
    }
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

    #[test]
    fn round_trip_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let cp = FileCheckpoint {
            file_id: FileId { dev: 1, ino: 2 },
            offset: 99,
            fingerprint: 7,
        };
        let b = SpooledBatch::new(
            "0001-1-1".into(),
            vec![
                Row::new("a").with("x", 1),
                Row::new("b").with("y", "z"),
                Row::new("a").with("x", 2),
            ],
            vec![(PathBuf::from("/f"), Some(cp)), (PathBuf::from("/g"), None)],
        );
        assert_eq!(b.row_count(), 3);
        spool.write(&b).unwrap();
        std::fs::write(dir.path().join("0002-1-1.batch.tmp"), b"half").unwrap();
        let p = spool.pending().unwrap();
        assert_eq!(p, vec![b.clone()]);
        assert!(!dir.path().join("0002-1-1.batch.tmp").exists());
        spool.remove(&b.batch_id).unwrap();
        assert!(spool.pending().unwrap().is_empty());
    }
}
