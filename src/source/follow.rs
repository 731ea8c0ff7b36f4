//! Tailing. One thread owns every tracked file; files are not kept open
//! between reads (a projects dir can hold thousands of sessions): each read
//! opens the path, checks it is still the same inode, and reads from the
//! remembered position.
//!
//! Lines end with `\n`. A last line without one waits while its file is being
//! written; once the file has been quiet for `partial_line_grace` it is read as
//! a line of its own (Claude Code writes each line with its newline in one
//! append, so a line still unterminated after seconds was written by a process
//! that died or by another tool). Its checkpoint ends where its bytes end: if
//! a writer appends more later, those bytes start a new line (`\n` first: an
//! empty line, skipped; anything else: a line of its own, noted in the log).

use super::discover::{file_id, Found, Patterns, Stat};
use super::offsets::{fingerprint_bytes, FileCheckpoint, FINGERPRINT_BYTES};
use super::watch::Watch;
use super::{FileId, SourceBatch, SourceConfig, SourceEvent, SourceLine, SourceStats};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;

const READ_CHUNK: usize = 256 * 1024;

pub(crate) struct Tracked {
    pub path: Arc<PathBuf>,
    project: Arc<str>,
    pub id: FileId,
    /// Start of the first byte not yet part of an emitted (or skipped) line.
    pub offset: u64,
    /// Bytes after `offset` read so far without a newline (capped at max_line_bytes).
    partial: Vec<u8>,
    /// Length of the pending line, including bytes not kept in `partial`.
    partial_len: u64,
    /// When the pending line is read as a line if the file stays quiet.
    pub partial_due: Option<Instant>,
    /// The last line emitted was an unterminated one (a later append continues it).
    after_partial: bool,
    /// The file's first bytes, for fingerprints.
    pub head: Vec<u8>,
    /// Fingerprint once the file is at least FINGERPRINT_BYTES long (constant from then on).
    stable_fp: Option<u64>,
    /// The file's metadata at the last poll: a poll that sees the same does nothing.
    seen: Stat,
}

impl Tracked {
    pub fn read_pos(&self) -> u64 {
        self.offset + self.partial_len
    }

    fn fingerprint_at(&mut self, next_offset: u64) -> u64 {
        if next_offset as usize >= FINGERPRINT_BYTES && self.head.len() >= FINGERPRINT_BYTES {
            return *self
                .stable_fp
                .get_or_insert_with(|| fingerprint_bytes(&self.head));
        }
        let n = (next_offset as usize).min(self.head.len());
        fingerprint_bytes(&self.head[..n])
    }

    /// Where reading resumes after a restart, as of what has been emitted.
    pub fn checkpoint(&mut self) -> FileCheckpoint {
        FileCheckpoint {
            file_id: self.id,
            offset: self.offset,
            fingerprint: self.fingerprint_at(self.offset),
        }
    }

    fn reset(&mut self, id: FileId) {
        self.id = id;
        self.offset = 0;
        self.partial.clear();
        self.partial_len = 0;
        self.partial_due = None;
        self.after_partial = false;
        self.head.clear();
        self.stable_fp = None;
    }

    /// Take the pending bytes as one line ending at `next_offset`.
    fn take_line(&mut self, next_offset: u64, max: usize) -> Option<SourceLine> {
        let line_start = self.offset;
        let length = self.partial_len;
        let truncated = length > max as u64;
        let mut bytes = std::mem::take(&mut self.partial);
        if !truncated && bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        self.offset = next_offset;
        self.partial_len = 0;
        self.partial_due = None;
        if bytes.iter().all(u8::is_ascii_whitespace) && !truncated {
            return None;
        }
        Some(SourceLine {
            path: self.path.clone(),
            file_id: self.id,
            project: self.project.clone(),
            offset: line_start,
            next_offset,
            fingerprint: self.fingerprint_at(next_offset),
            bytes,
            length,
            truncated,
        })
    }

    /// Keep up to `max` bytes of a piece of the pending line; count all of it.
    fn extend_partial(&mut self, piece: &[u8], max: usize) {
        let room = max.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&piece[..piece.len().min(room)]);
        self.partial_len += piece.len() as u64;
    }
}

pub(crate) fn read_head(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(n as usize);
    (&mut f).take(n).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Outcome of sending: false means the consumer is gone and we should stop.
pub(crate) type Alive = bool;

pub(crate) struct Tailer<'a> {
    pub cfg: &'a SourceConfig,
    pub pats: Patterns,
    tx: Sender<SourceBatch>,
    pub shutdown: Arc<AtomicBool>,
    pub files: BTreeMap<PathBuf, Tracked>,
    /// The files that may have an unterminated line pending (a superset of
    /// those whose `partial_due` is set; pruned as they are looked at), so
    /// an idle wake-up looks at a handful of files, not at every tracked one
    /// (52,800 files cost 7 % of a core at ten wake-ups a second).
    partials: BTreeSet<PathBuf>,
    pub stats: SourceStats,
    /// Paths whose read failed, with the reason logged (each logged once).
    read_warned: HashMap<PathBuf, String>,
    /// Paths the last walk skipped, with the reason logged.
    pub walk_warned: HashMap<PathBuf, String>,
    /// A full rescan is wanted (rate-limited by the follow loop).
    pub rescan_wanted: bool,
    pub last_rescan: Instant,
    /// How long the last full rescan took: unasked-for rescans are spaced
    /// so that they cost a bounded share of a core however many files there are.
    pub rescan_cost: Duration,
    /// File-system events (None: polling only).
    pub watch: Option<Watch>,
}

impl Tailer<'_> {
    pub fn new(
        cfg: &SourceConfig,
        pats: Patterns,
        tx: Sender<SourceBatch>,
        shutdown: Arc<AtomicBool>,
        watch: Option<Watch>,
    ) -> Tailer<'_> {
        Tailer {
            cfg,
            pats,
            tx,
            shutdown,
            files: BTreeMap::new(),
            partials: BTreeSet::new(),
            stats: SourceStats::default(),
            read_warned: HashMap::new(),
            walk_warned: HashMap::new(),
            rescan_wanted: false,
            last_rescan: Instant::now(),
            rescan_cost: Duration::ZERO,
            watch,
        }
    }

    pub fn send(&self, ev: SourceEvent) -> Alive {
        self.send_batch(vec![ev])
    }

    fn send_batch(&self, batch: SourceBatch) -> Alive {
        self.tx.blocking_send(batch).is_ok()
    }

    pub fn project_of(&self, path: &Path) -> Arc<str> {
        path.strip_prefix(&self.cfg.root)
            .ok()
            .and_then(|r| r.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default()
            .into()
    }

    fn warn_read(&mut self, path: &Path, reason: String) {
        if self.read_warned.get(path) != Some(&reason) {
            tracing::warn!(path = %path.display(), %reason, "session file skipped until it can be read");
            self.stats.skipped += 1;
            self.read_warned.insert(path.to_path_buf(), reason);
        }
    }

    fn read_ok(&mut self, path: &Path) {
        if self.read_warned.remove(path).is_some() {
            tracing::info!(path = %path.display(), "session file readable again");
        }
    }

    /// Start tracking a file, resuming at `cp` when it still describes this file.
    pub fn track(&mut self, f: &Found, cp: Option<FileCheckpoint>) -> Alive {
        let path = &f.path;
        let mut t = Tracked {
            path: Arc::new(path.clone()),
            project: self.project_of(path),
            id: f.stat.id,
            offset: 0,
            partial: Vec::new(),
            partial_len: 0,
            partial_due: None,
            after_partial: false,
            head: Vec::new(),
            stable_fp: None,
            seen: f.stat,
        };
        if let Some(cp) = cp {
            let head = read_head(path, cp.offset.min(FINGERPRINT_BYTES as u64)).unwrap_or_default();
            self.stats.reads += 1;
            let reason = if cp.file_id != f.stat.id {
                Some("replaced while the engine was stopped (new inode)")
            } else if cp.offset > f.stat.len {
                Some("truncated while the engine was stopped")
            } else if fingerprint_bytes(&head) != cp.fingerprint {
                Some("rewritten while the engine was stopped (content changed)")
            } else {
                None
            };
            match reason {
                None => {
                    t.offset = cp.offset;
                    t.head = head;
                }
                Some(reason) => {
                    if !self.send_reset(path, reason) {
                        return false;
                    }
                }
            }
        }
        if path.to_str().is_none() {
            // Rows carry the name with U+FFFD for the bytes that are not UTF-8;
            // checkpoints keep it exactly (see offsets::lossless_paths).
            tracing::warn!(path = %path.display(), "path is not valid UTF-8: its rows name it with U+FFFD in place of the invalid bytes");
            self.stats.non_utf8_paths += 1;
        }
        tracing::debug!(path = %path.display(), offset = t.offset, "tracking file");
        self.stats.files += 1;
        self.files.insert(path.clone(), t);
        true
    }

    pub fn send_reset(&mut self, path: &Path, reason: &str) -> Alive {
        tracing::info!(path = %path.display(), reason, "file reset");
        self.stats.resets += 1;
        self.send(SourceEvent::Reset {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        })
    }

    /// Look at a tracked file (with `stat` when the caller has it): read what
    /// was appended, notice truncation and in-place rewrites. A file gone or
    /// replaced by another inode is left to the rescan, which can tell a
    /// rename from a deletion.
    pub fn poll_file(&mut self, path: &Path, stat: Option<Stat>) -> Alive {
        let stat = match stat
            .map(Ok)
            .unwrap_or_else(|| std::fs::metadata(path).map(|m| Stat::of(&m)))
        {
            Ok(s) => s,
            Err(_) => {
                self.rescan_wanted = true;
                return true;
            }
        };
        let Some(t) = self.files.get_mut(path) else {
            return true;
        };
        if stat.id != t.id {
            self.rescan_wanted = true;
            return true;
        }
        if stat == t.seen && stat.len == t.read_pos() {
            return true; // the common case: nothing changed, one stat
        }
        let reason = if stat.len < t.read_pos() {
            Some("truncated")
        } else if stat != t.seen && head_changed(path, t) {
            Some("rewritten in place (the first bytes changed)")
        } else {
            None
        };
        t.seen = stat;
        if let Some(reason) = reason {
            t.reset(stat.id);
            if !self.send_reset(path, reason) {
                return false;
            }
        }
        let Some(t) = self.files.get(path) else {
            return true;
        };
        if stat.len > t.read_pos() {
            return self.read_new(path);
        }
        true
    }

    /// Read from the remembered position to EOF, emitting complete lines.
    pub fn read_new(&mut self, path: &Path) -> Alive {
        let Some(t) = self.files.get(path) else {
            return true;
        };
        let (id, pos) = (t.id, t.read_pos());
        self.stats.reads += 1;
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.rescan_wanted = true;
                return true;
            }
            Err(e) => {
                self.warn_read(path, format!("cannot open: {e}"));
                return true;
            }
        };
        match f.metadata() {
            Ok(m) if file_id(&m) == id => {}
            _ => {
                self.rescan_wanted = true; // replaced between stat and open
                return true;
            }
        }
        if let Err(e) = f.seek(SeekFrom::Start(pos)) {
            self.warn_read(path, format!("cannot seek to {pos}: {e}"));
            return true;
        }
        self.read_ok(path);
        let grew = match self.read_to_end(path, &mut f, pos) {
            Some(grew) => grew,
            None => return false,
        };
        if grew {
            let quiet = f.metadata().map(|m| Stat::of(&m).quiet_for());
            self.schedule_partial(path, quiet.unwrap_or_default());
        }
        true
    }

    /// The read loop: chunks → lines → events. None when the consumer is gone,
    /// else whether anything was read.
    fn read_to_end(&mut self, path: &Path, f: &mut std::fs::File, mut pos: u64) -> Option<bool> {
        let mut buf = vec![0u8; READ_CHUNK];
        let mut pending: Vec<SourceEvent> = Vec::new();
        let start = pos;
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "read failed");
                    break;
                }
            };
            let t = self.files.get_mut(path)?;
            split_lines(t, &buf[..n], pos, self.cfg.max_line_bytes, &mut pending);
            pos += n as u64;
            for ev in &pending {
                if let SourceEvent::Line(l) = ev {
                    self.stats.lines += 1;
                    self.stats.bytes += l.next_offset - l.offset;
                }
            }
            // Hand lines over chunk by chunk (backpressure applies here).
            if !pending.is_empty() && !self.send_batch(std::mem::take(&mut pending)) {
                return None;
            }
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
        Some(pos > start)
    }

    /// After a read that ended inside a line: when to take it as a line if the
    /// file stays quiet (counted from the file's last write, so a file idle
    /// since before the engine started is not waited for).
    fn schedule_partial(&mut self, path: &Path, quiet_for: std::time::Duration) {
        let grace = self.cfg.partial_line_grace;
        if let Some(t) = self.files.get_mut(path) {
            t.partial_due =
                (t.partial_len > 0).then(|| Instant::now() + grace.saturating_sub(quiet_for));
            if t.partial_due.is_some() {
                self.partials.insert(path.to_path_buf());
            }
        }
    }

    /// Take every pending unterminated line whose file stayed quiet as a line.
    pub fn flush_partials(&mut self, now: Instant) -> Alive {
        let files = &self.files;
        self.partials
            .retain(|p| files.get(p).is_some_and(|t| t.partial_due.is_some()));
        let due: Vec<PathBuf> = self
            .partials
            .iter()
            .filter(|p| {
                let due = files.get(*p).and_then(|t| t.partial_due);
                due.is_some_and(|d| d <= now)
            })
            .cloned()
            .collect();
        for p in due {
            // Look once more: a write since the last read postpones it.
            if !self.poll_file(&p, None) {
                return false;
            }
            let max = self.cfg.max_line_bytes;
            let Some(t) = self.files.get_mut(&p) else {
                continue;
            };
            if t.partial_due.is_none_or(|d| d > now) {
                continue;
            }
            let end = t.read_pos();
            t.after_partial = true;
            if let Some(line) = t.take_line(end, max) {
                tracing::info!(path = %p.display(), offset = line.offset, bytes = line.length, "file quiet: its unterminated last line is read as a line");
                self.stats.partial_lines += 1;
                self.stats.lines += 1;
                self.stats.bytes += line.length;
                if !self.send(SourceEvent::Line(line)) {
                    return false;
                }
            }
        }
        true
    }

    /// The earliest time an unterminated line falls due.
    pub fn next_partial_due(&self) -> Option<Instant> {
        self.partials
            .iter()
            .filter_map(|p| self.files.get(p)?.partial_due)
            .min()
    }
}

/// Split a chunk read at file position `pos` into lines appended to `out`.
fn split_lines(t: &mut Tracked, chunk: &[u8], pos: u64, max: usize, out: &mut Vec<SourceEvent>) {
    if (pos as usize) < FINGERPRINT_BYTES && t.head.len() == pos as usize {
        let take = (FINGERPRINT_BYTES - pos as usize).min(chunk.len());
        t.head.extend_from_slice(&chunk[..take]);
    }
    if t.after_partial {
        t.after_partial = false;
        if chunk.first() != Some(&b'\n') {
            tracing::warn!(path = %t.path.display(), offset = pos, "a line read as unterminated was continued by a later write; the continuation is read as a line of its own");
        }
    }
    let mut start = 0;
    while let Some(i) = memchr::memchr(b'\n', &chunk[start..]) {
        t.extend_partial(&chunk[start..start + i], max);
        let next_offset = t.offset + t.partial_len + 1;
        if let Some(line) = t.take_line(next_offset, max) {
            out.push(SourceEvent::Line(line));
        }
        start += i + 1;
    }
    t.extend_partial(&chunk[start..], max);
}

/// Did the first bytes of the file change since they were read?
fn head_changed(path: &Path, t: &Tracked) -> bool {
    let n = t.head.len() as u64;
    if n == 0 {
        return false;
    }
    match read_head(path, n) {
        Ok(now) => now.len() as u64 == n && now[..] != t.head[..],
        Err(_) => false,
    }
}
