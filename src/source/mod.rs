//! Finding, tailing and checkpointing Claude Code JSONL files.

mod follow;
mod offsets;

pub use follow::{discover, run_source, SourceConfig, SourceEvent, SourceStats};
pub use offsets::{fingerprint_bytes, CheckpointStore, FileCheckpoint, FINGERPRINT_BYTES};

use std::path::PathBuf;
use std::sync::Arc;

/// Identity of a file on disk; a new identity at the same path means the file
/// was replaced (rotation / atomic rewrite), not appended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// One complete line read from a session file.
#[derive(Debug, Clone)]
pub struct SourceLine {
    /// Absolute path of the file.
    pub path: Arc<PathBuf>,
    pub file_id: FileId,
    /// Name of the project directory (the `<project>` in `<root>/<project>/<session>.jsonl`).
    pub project: Arc<str>,
    /// Byte offset where the line starts.
    pub offset: u64,
    /// Byte offset just past the line's `\n`: the checkpoint value once this line is stored.
    pub next_offset: u64,
    /// The line without its trailing `\n` (and `\r`); may be invalid UTF-8.
    /// When `truncated`, only the first `max_line_bytes` bytes are kept.
    pub bytes: Vec<u8>,
    /// Full length of the line in bytes (even when truncated).
    pub length: u64,
    pub truncated: bool,
    /// Fingerprint of the file's first min(next_offset, 4096) bytes.
    pub fingerprint: u64,
}

impl SourceLine {
    /// Where to resume once this line is stored.
    pub fn checkpoint(&self) -> FileCheckpoint {
        FileCheckpoint {
            file_id: self.file_id,
            offset: self.next_offset,
            fingerprint: self.fingerprint,
        }
    }
}

#[cfg(test)]
mod tests;
