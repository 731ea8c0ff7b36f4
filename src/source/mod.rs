//! Finding, tailing and checkpointing Claude Code JSONL files.
//!
//! * `discover`: walks the root (symlinks followed, each inode once);
//! * `watch`: per-directory notify watches, and which events are work;
//! * `follow`: one tracked file: polls, reads, lines, unterminated last lines;
//! * `scan`: the initial pass, rescans (renames, replacements, deletions) and
//!   the follow loop;
//! * `offsets`: durable checkpoints, fingerprints, lossless path encoding.

mod discover;
mod follow;
mod offsets;
mod scan;
mod watch;

pub use discover::discover;
pub use offsets::{
    fingerprint_bytes, lossless_paths, CheckpointStore, FileCheckpoint, FINGERPRINT_BYTES,
};
pub use scan::run_source;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub root: PathBuf,
    /// Globs relative to root (`*` does not cross `/`).
    pub patterns: Vec<String>,
    /// Rescan period when file-system events are unavailable (polling).
    pub poll_interval: Duration,
    /// Rescan period while events work: a safety net for what they miss
    /// (network filesystems, a watch limit reached).
    pub rescan_interval: Duration,
    /// A last line without `\n` is read as a line once its file has been quiet this long.
    pub partial_line_grace: Duration,
    pub max_line_bytes: usize,
    pub follow: bool,
}

#[derive(Debug)]
pub enum SourceEvent {
    Line(SourceLine),
    /// The file was truncated or replaced; reading restarts at offset 0.
    Reset {
        path: PathBuf,
        reason: String,
    },
    /// The file was deleted: forget its checkpoint once earlier lines are stored.
    Removed(PathBuf),
    /// The file now lives at `to`: forget `from`'s checkpoint and store
    /// `checkpoint` under `to` (after the lines read before the rename).
    Renamed {
        from: PathBuf,
        to: PathBuf,
        checkpoint: FileCheckpoint,
    },
    /// Every file that existed at start has been read to its end.
    CaughtUp,
}

/// What the tailer hands over at once: the lines of one read chunk (a few
/// hundred during a backfill), or a single event. One hand-off per chunk
/// instead of per line: each hand-off between threads may cost a wake-up
/// (a backfill of 300k lines spent more CPU switching threads than reading).
pub type SourceBatch = Vec<SourceEvent>;

/// Counters of one run (the tests read them to prove the tailer is quiet when
/// nothing changes).
#[derive(Debug, Default, Clone, Copy)]
pub struct SourceStats {
    pub files: u64,
    pub lines: u64,
    pub bytes: u64,
    pub resets: u64,
    pub renames: u64,
    /// Unterminated last lines read as lines because their file went quiet.
    pub partial_lines: u64,
    /// Full walks of the root after the initial pass.
    pub rescans: u64,
    /// Files opened to read lines or check a checkpoint.
    pub reads: u64,
    /// Follow-loop wake-ups caused by file-system events that asked for work.
    pub wakeups: u64,
    /// Paths skipped with a warning (unreadable, broken or duplicate symlink, ...).
    pub skipped: u64,
    /// Files whose path is not valid UTF-8 (read; rows carry a lossy name).
    pub non_utf8_paths: u64,
}

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
