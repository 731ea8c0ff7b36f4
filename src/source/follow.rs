//! Discovery and tailing. One thread owns every tracked file; files are not
//! kept open between reads (a projects dir can hold thousands of sessions),
//! each read opens the path, checks it is still the same inode, and reads from
//! the remembered position.

use super::offsets::{fingerprint_bytes, FileCheckpoint, FINGERPRINT_BYTES};
use super::{FileId, SourceLine};
use anyhow::{bail, Context, Result};
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;

const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub root: PathBuf,
    /// Globs relative to root (`*` does not cross `/`).
    pub patterns: Vec<String>,
    pub poll_interval: Duration,
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
    /// Every file that existed at start has been read to its end.
    CaughtUp,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SourceStats {
    pub files: u64,
    pub lines: u64,
    pub bytes: u64,
    pub resets: u64,
}

fn matcher(patterns: &[String]) -> Result<globset::GlobSet> {
    let mut b = globset::GlobSetBuilder::new();
    for p in patterns {
        b.add(
            globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .with_context(|| format!("bad source pattern `{p}`"))?,
        );
    }
    Ok(b.build()?)
}

/// Files under `root` matching `patterns`, sorted.
pub fn discover(root: &Path, patterns: &[String]) -> Result<Vec<PathBuf>> {
    let set = matcher(patterns)?;
    let depth = patterns
        .iter()
        .map(|p| {
            if p.contains("**") {
                16
            } else {
                p.split('/').count()
            }
        })
        .max()
        .unwrap_or(1);
    let mut out = Vec::new();
    walk(root, root, &set, depth, &mut out);
    out.sort();
    Ok(out)
}

fn walk(root: &Path, dir: &Path, set: &globset::GlobSet, depth: usize, out: &mut Vec<PathBuf>) {
    if depth == 0 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk(root, &p, set, depth - 1, out);
        } else if ft.is_file() {
            if let Ok(rel) = p.strip_prefix(root) {
                if set.is_match(rel) {
                    out.push(p);
                }
            }
        }
    }
}

struct Tracked {
    path: Arc<PathBuf>,
    project: Arc<str>,
    id: FileId,
    /// Start of the first byte not yet part of an emitted (or skipped) line.
    offset: u64,
    /// Bytes after `offset` read so far without a newline (capped at max_line_bytes).
    partial: Vec<u8>,
    /// Length of the pending line, including bytes not kept in `partial`.
    partial_len: u64,
    /// The file's first bytes, for fingerprints.
    head: Vec<u8>,
    /// Fingerprint once the file is at least FINGERPRINT_BYTES long (constant from then on).
    stable_fp: Option<u64>,
}

impl Tracked {
    fn read_pos(&self) -> u64 {
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

    fn reset(&mut self, id: FileId) {
        self.id = id;
        self.offset = 0;
        self.partial.clear();
        self.partial_len = 0;
        self.head.clear();
        self.stable_fp = None;
    }
}

fn file_id(m: &std::fs::Metadata) -> FileId {
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}

fn read_head(path: &Path, n: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(n as usize);
    (&mut f).take(n).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Outcome of sending: false means the consumer is gone and we should stop.
type Alive = bool;

struct Tailer<'a> {
    cfg: &'a SourceConfig,
    tx: Sender<SourceEvent>,
    shutdown: Arc<AtomicBool>,
    files: BTreeMap<PathBuf, Tracked>,
    stats: SourceStats,
}

impl Tailer<'_> {
    fn send(&self, ev: SourceEvent) -> Alive {
        self.tx.blocking_send(ev).is_ok()
    }

    fn project_of(&self, path: &Path) -> Arc<str> {
        path.strip_prefix(&self.cfg.root)
            .ok()
            .and_then(|r| r.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default()
            .into()
    }

    /// Start tracking `path`, resuming at `cp` when it still describes this file.
    fn track(&mut self, path: &Path, cp: Option<FileCheckpoint>) -> Alive {
        let Ok(meta) = std::fs::metadata(path) else {
            return true;
        };
        let id = file_id(&meta);
        let mut t = Tracked {
            path: Arc::new(path.to_path_buf()),
            project: self.project_of(path),
            id,
            offset: 0,
            partial: Vec::new(),
            partial_len: 0,
            head: Vec::new(),
            stable_fp: None,
        };
        if let Some(cp) = cp {
            let head = read_head(path, cp.offset.min(FINGERPRINT_BYTES as u64)).unwrap_or_default();
            let reason = if cp.file_id != id {
                Some("replaced while the engine was stopped (new inode)")
            } else if cp.offset > meta.len() {
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
                    self.stats.resets += 1;
                    if !self.send(SourceEvent::Reset {
                        path: path.to_path_buf(),
                        reason: reason.to_string(),
                    }) {
                        return false;
                    }
                }
            }
        }
        tracing::debug!(path = %path.display(), offset = t.offset, "tracking file");
        self.stats.files += 1;
        self.files.insert(path.to_path_buf(), t);
        true
    }

    /// Check a tracked file for replacement, truncation, deletion; read new lines.
    fn poll_file(&mut self, path: &Path) -> Alive {
        let Some(t) = self.files.get_mut(path) else {
            return true;
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(_) => {
                tracing::info!(path = %path.display(), "file deleted");
                self.files.remove(path);
                return self.send(SourceEvent::Removed(path.to_path_buf()));
            }
        };
        let id = file_id(&meta);
        let mut reset = None;
        if id != t.id {
            reset = Some("replaced (new inode)");
        } else if meta.len() < t.read_pos() {
            reset = Some("truncated");
        } else if t.offset > 0 && meta.len() > t.read_pos() && !t.head.is_empty() {
            // Same inode, grew: make sure it was appended to, not rewritten.
            let n = t.head.len().min(t.offset as usize) as u64;
            if let Ok(now) = read_head(path, n) {
                if now.len() as u64 == n && now[..] != t.head[..n as usize] {
                    reset = Some("rewritten in place");
                }
            }
        }
        if let Some(reason) = reset {
            tracing::info!(path = %path.display(), reason, "file reset");
            t.reset(id);
            self.stats.resets += 1;
            if !self.send(SourceEvent::Reset {
                path: path.to_path_buf(),
                reason: reason.to_string(),
            }) {
                return false;
            }
        }
        if meta.len() > self.files.get(path).map_or(0, Tracked::read_pos) {
            return self.read_new(path);
        }
        true
    }

    /// Read from the remembered position to EOF, emitting complete lines.
    fn read_new(&mut self, path: &Path) -> Alive {
        let max = self.cfg.max_line_bytes;
        let Some(t) = self.files.get_mut(path) else {
            return true;
        };
        let mut f = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(_) => return true, // gone: the next poll reports it
        };
        match f.metadata() {
            Ok(m) if file_id(&m) == t.id => {}
            _ => return true, // replaced between stat and open: next poll resets
        }
        let mut pos = t.read_pos();
        if f.seek(SeekFrom::Start(pos)).is_err() {
            return true;
        }
        let mut buf = vec![0u8; READ_CHUNK];
        let mut pending: Vec<SourceEvent> = Vec::new();
        loop {
            let n = match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "read failed");
                    break;
                }
            };
            let chunk = &buf[..n];
            if (pos as usize) < FINGERPRINT_BYTES {
                let take = (FINGERPRINT_BYTES - pos as usize).min(n);
                if t.head.len() == pos as usize {
                    t.head.extend_from_slice(&chunk[..take]);
                }
            }
            let mut start = 0;
            while let Some(i) = memchr::memchr(b'\n', &chunk[start..]) {
                let piece = &chunk[start..start + i];
                let room = max.saturating_sub(t.partial.len());
                t.partial.extend_from_slice(&piece[..piece.len().min(room)]);
                t.partial_len += piece.len() as u64;
                let line_start = t.offset;
                let length = t.partial_len;
                let next_offset = line_start + length + 1;
                let truncated = length > max as u64;
                let mut bytes = std::mem::take(&mut t.partial);
                if !truncated && bytes.last() == Some(&b'\r') {
                    bytes.pop();
                }
                t.offset = next_offset;
                t.partial_len = 0;
                if !bytes.iter().all(u8::is_ascii_whitespace) || truncated {
                    let fingerprint = t.fingerprint_at(next_offset);
                    self.stats.lines += 1;
                    self.stats.bytes += length + 1;
                    pending.push(SourceEvent::Line(SourceLine {
                        path: t.path.clone(),
                        file_id: t.id,
                        project: t.project.clone(),
                        offset: line_start,
                        next_offset,
                        bytes,
                        length,
                        truncated,
                        fingerprint,
                    }));
                }
                start += i + 1;
            }
            let rest = &chunk[start..];
            let room = max.saturating_sub(t.partial.len());
            t.partial.extend_from_slice(&rest[..rest.len().min(room)]);
            t.partial_len += rest.len() as u64;
            pos += n as u64;
            // Hand lines over chunk by chunk (backpressure applies here).
            for ev in pending.drain(..) {
                if self.tx.blocking_send(ev).is_err() {
                    return false;
                }
            }
            if self.shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
        true
    }

    fn rescan(&mut self) -> Alive {
        let found: HashSet<PathBuf> = discover(&self.cfg.root, &self.cfg.patterns)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let known: Vec<PathBuf> = self.files.keys().cloned().collect();
        for p in known {
            if !self.poll_file(&p) {
                return false;
            }
        }
        let mut new: Vec<&PathBuf> = found
            .iter()
            .filter(|p| !self.files.contains_key(*p))
            .collect();
        new.sort();
        for p in new {
            tracing::info!(path = %p.display(), "new session file");
            if !self.track(p, None) || !self.read_new(p) {
                return false;
            }
        }
        true
    }
}

/// Run the tailer until shutdown (follow) or until the initial pass is done.
pub fn run_source(
    cfg: &SourceConfig,
    start: HashMap<PathBuf, FileCheckpoint>,
    tx: Sender<SourceEvent>,
    shutdown: Arc<AtomicBool>,
) -> Result<SourceStats> {
    if !cfg.root.is_dir() {
        bail!("root directory {} does not exist", cfg.root.display());
    }
    let mut tailer = Tailer {
        cfg,
        tx,
        shutdown: shutdown.clone(),
        files: BTreeMap::new(),
        stats: SourceStats::default(),
    };
    // Watch before the initial pass so nothing written during it is missed.
    let (ev_tx, ev_rx) = std::sync::mpsc::channel::<notify::Result<notify::Event>>();
    let _watcher = if cfg.follow {
        match notify::recommended_watcher(ev_tx) {
            Ok(mut w) => match w.watch(&cfg.root, RecursiveMode::Recursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the root; polling only");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "no file watcher; polling only");
                None
            }
        }
    } else {
        None
    };

    for p in discover(&cfg.root, &cfg.patterns)? {
        if shutdown.load(Ordering::Relaxed) {
            return Ok(tailer.stats);
        }
        let cp = start.get(&p).copied();
        if !tailer.track(&p, cp) || !tailer.read_new(&p) {
            return Ok(tailer.stats);
        }
    }
    if !tailer.send(SourceEvent::CaughtUp) || !cfg.follow {
        return Ok(tailer.stats);
    }

    let set = matcher(&cfg.patterns)?;
    let mut last_scan = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        let mut dirty: HashSet<PathBuf> = HashSet::new();
        let mut full = false;
        match ev_rx.recv_timeout(Duration::from_millis(100).min(cfg.poll_interval)) {
            Ok(first) => {
                let mut handle = |ev: notify::Result<notify::Event>| match ev {
                    Ok(ev) => {
                        for p in ev.paths {
                            let is_file = p
                                .strip_prefix(&cfg.root)
                                .map(|r| set.is_match(r))
                                .unwrap_or(false);
                            if is_file && tailer.files.contains_key(&p) {
                                dirty.insert(p);
                            } else {
                                full = true; // a new file or directory, a rename...
                            }
                        }
                    }
                    Err(_) => full = true,
                };
                handle(first);
                while let Ok(ev) = ev_rx.try_recv() {
                    handle(ev);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(100).min(cfg.poll_interval));
            }
        }
        let mut dirty: Vec<PathBuf> = dirty.into_iter().collect();
        dirty.sort();
        for p in dirty {
            if !tailer.poll_file(&p) {
                return Ok(tailer.stats);
            }
        }
        // The poll: catches what notify missed and picks up new files.
        if full || last_scan.elapsed() >= cfg.poll_interval {
            last_scan = Instant::now();
            if !tailer.rescan() {
                return Ok(tailer.stats);
            }
        }
    }
    Ok(tailer.stats)
}
