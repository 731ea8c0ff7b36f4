//! One table's rows of a batch, encoded once as JSONEachRow (one row per
//! line, no newline inside a row). A batch the writer builds keeps them in
//! its spool file and streams them to the insert a segment at a time, so a
//! batch's size costs disk, not memory; bisection (a rare data error) and
//! older spool formats work on them in memory.

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A run of whole rows of one table in a spool file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone)]
pub struct TableRows {
    rows: usize,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Memory(Lines),
    Spooled {
        file: Arc<File>,
        segments: Arc<[Segment]>,
    },
}

impl TableRows {
    /// Rows from JSONEachRow bytes; a missing final newline is an error.
    pub fn from_lines(data: Vec<u8>) -> Result<TableRows> {
        let lines = Lines::new(data)?;
        Ok(TableRows {
            rows: lines.len(),
            source: Source::Memory(lines),
        })
    }

    /// `rows` rows held in `segments` of a spool file.
    pub(crate) fn spooled(file: Arc<File>, segments: Vec<Segment>, rows: usize) -> TableRows {
        TableRows {
            rows,
            source: Source::Spooled {
                file,
                segments: segments.into(),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn bytes(&self) -> usize {
        match &self.source {
            Source::Memory(l) => l.data.len(),
            Source::Spooled { segments, .. } => segments.iter().map(|s| s.len as usize).sum(),
        }
    }

    /// How many pieces `chunk` gives: the insert sends them one after another.
    pub fn chunk_count(&self) -> usize {
        match &self.source {
            Source::Memory(_) => 1,
            Source::Spooled { segments, .. } => segments.len(),
        }
    }

    /// Piece `i` of the rows as insert data (whole rows). A spooled piece is
    /// read from the file off the async threads.
    pub async fn chunk(&self, i: usize) -> Result<Bytes> {
        match &self.source {
            Source::Memory(l) => Ok(l.data.clone()),
            Source::Spooled { file, segments } => {
                let seg = *segments.get(i).context("no such spool segment")?;
                let file = file.clone();
                tokio::task::spawn_blocking(move || read_segment(&file, seg))
                    .await
                    .context("the spool read panicked")?
            }
        }
    }

    /// The rows in memory with their boundaries (what bisection slices).
    pub async fn lines(&self) -> Result<Lines> {
        if let Source::Memory(lines) = &self.source {
            return Ok(lines.clone());
        }
        let mut data = Vec::with_capacity(self.bytes());
        for i in 0..self.chunk_count() {
            data.extend_from_slice(&self.chunk(i).await?);
        }
        let lines = Lines::new(data)?;
        if lines.len() != self.rows {
            bail!(
                "spooled rows read back as {} rows, not {}",
                lines.len(),
                self.rows
            );
        }
        Ok(lines)
    }
}

fn read_segment(file: &File, seg: Segment) -> Result<Bytes> {
    let mut buf = vec![0; usize::try_from(seg.len).context("segment too large")?];
    file.read_exact_at(&mut buf, seg.offset)
        .context("cannot read the spool file")?;
    Ok(Bytes::from(buf))
}

/// Rows in memory with each row's end offset: any sub-range is a zero-copy slice.
#[derive(Debug, Clone, Default)]
pub struct Lines {
    data: Bytes,
    /// End offset (after the newline) of each row.
    ends: Vec<usize>,
}

impl Lines {
    fn new(data: Vec<u8>) -> Result<Lines> {
        if data.last().is_some_and(|b| *b != b'\n') {
            bail!("encoded rows do not end with a newline");
        }
        let ends = memchr::memchr_iter(b'\n', &data).map(|i| i + 1).collect();
        Ok(Lines {
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

    #[cfg(test)]
    pub(crate) fn data(&self) -> &[u8] {
        &self.data
    }
}
