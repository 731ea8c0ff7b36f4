//! The tailer's outer loop: the initial pass, rescans that reconcile what is
//! tracked with what is on disk (new, renamed, replaced, deleted files), and
//! the follow loop driven by file-system events with a polling safety net.
//!
//! A file is known by its inode and the fingerprint of its first bytes, not by
//! its name: a session renamed (or rotated) to a name that still matches the
//! patterns keeps its position, whether the rename happens while the engine
//! runs or while it is stopped.

use super::discover::{walk_root, Found, Patterns, Stat};
use super::follow::{read_head, Alive, Tailer, Tracked};
use super::offsets::{fingerprint_bytes, FileCheckpoint, FINGERPRINT_BYTES};
use super::watch::{Events, Watch, Work};
use super::{FileId, SourceBatch, SourceConfig, SourceEvent, SourceStats};
use anyhow::{bail, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;

/// Rescans asked for by events run at most this often (a burst of renames is one rescan).
const RESCAN_MIN_GAP: Duration = Duration::from_millis(200);
/// The follow loop wakes at least this often to notice a shutdown.
const MAX_SLEEP: Duration = Duration::from_millis(100);

impl Tailer<'_> {
    /// Walk the root (watching each directory before listing it) and log
    /// (once) what it had to skip.
    fn walk(&mut self) -> Vec<Found> {
        let watch = &mut self.watch;
        let d = walk_root(&self.cfg.root, &self.pats, &mut |dir| {
            if let Some(w) = watch.as_mut() {
                w.ensure(dir);
            }
        });
        if let Some(w) = self.watch.as_mut() {
            w.end_walk();
        }
        let mut now: HashMap<PathBuf, String> = HashMap::new();
        for (path, reason) in d.skipped {
            if self.walk_warned.get(&path) != Some(&reason) {
                tracing::warn!(path = %path.display(), %reason, "skipped while looking for session files");
                self.stats.skipped += 1;
            }
            now.insert(path, reason);
        }
        self.walk_warned = now;
        d.files
    }

    /// Reconcile the tracked files with the disk, then read what is new.
    pub fn rescan(&mut self) -> Alive {
        self.stats.rescans += 1;
        self.rescan_wanted = false;
        self.last_rescan = Instant::now();
        let started = self.last_rescan;
        let found = self.walk();
        let by_path: HashMap<&Path, Stat> =
            found.iter().map(|f| (f.path.as_path(), f.stat)).collect();
        let detached = self.detach_moved(&by_path);
        let mut fresh = Vec::new();
        let mut detached = detached;
        for f in &found {
            if self.files.contains_key(&f.path) {
                if !self.poll_file(&f.path, Some(f.stat)) {
                    return false;
                }
            } else if let Some(i) = detached.iter().position(|t| is_same_file(t, f)) {
                let t = detached.swap_remove(i);
                if !self.reattach(t, f) {
                    return false;
                }
            } else {
                fresh.push(f);
            }
        }
        let fresh_paths: HashSet<&Path> = fresh.iter().map(|f| f.path.as_path()).collect();
        for t in detached {
            let path: &Path = &t.path;
            let alive = if fresh_paths.contains(path) {
                self.send_reset(path, "replaced (new inode)")
            } else if self.files.contains_key(path) {
                true // a renamed file took its place; its checkpoint went with it
            } else {
                tracing::info!(path = %path.display(), "file deleted");
                self.send(SourceEvent::Removed(path.to_path_buf()))
            };
            if !alive {
                return false;
            }
        }
        for f in fresh {
            if !self.start_new(f) {
                return false;
            }
        }
        self.rescan_cost = started.elapsed();
        true
    }

    /// Take out every tracked file whose path no longer holds its inode.
    fn detach_moved(&mut self, found: &HashMap<&Path, Stat>) -> Vec<Tracked> {
        let mut gone = Vec::new();
        for (p, t) in &self.files {
            let here = match found.get(p.as_path()) {
                Some(s) => Some(s.id),
                // Not found by the walk: look directly before calling it gone
                // (a directory may have been unreadable for a moment).
                None => match std::fs::metadata(p) {
                    Ok(m) => Some(Stat::of(&m).id),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(_) => Some(t.id),
                },
            };
            if here != Some(t.id) {
                gone.push(p.clone());
            }
        }
        gone.iter().filter_map(|p| self.files.remove(p)).collect()
    }

    /// A tracked file found under a new name: move it, and its checkpoint.
    fn reattach(&mut self, mut t: Tracked, f: &Found) -> Alive {
        let from = (*t.path).clone();
        tracing::info!(from = %from.display(), to = %f.path.display(), offset = t.offset, "file renamed: reading goes on where it was");
        t.path = Arc::new(f.path.clone());
        let checkpoint = t.checkpoint();
        self.files.insert(f.path.clone(), t);
        self.stats.renames += 1;
        if !self.send(SourceEvent::Renamed {
            from,
            to: f.path.clone(),
            checkpoint,
        }) {
            return false;
        }
        self.poll_file(&f.path, Some(f.stat))
    }

    /// A file not seen before: track it from the start and read it.
    fn start_new(&mut self, f: &Found) -> Alive {
        if let Some((p, _)) = self.files.iter().find(|(_, t)| t.id == f.stat.id) {
            tracing::debug!(path = %f.path.display(), same_as = %p.display(), "second name of a tracked file; ignored");
            return true;
        }
        tracing::info!(path = %f.path.display(), "new session file");
        self.track(f, None) && self.read_new(&f.path)
    }

    /// A path an event named that is not tracked yet.
    pub fn adopt(&mut self, path: &Path) -> Alive {
        let Ok(m) = std::fs::metadata(path) else {
            return true; // gone again already
        };
        let stat = Stat::of(&m);
        if !m.is_file() {
            return true;
        }
        if self.files.values().any(|t| t.id == stat.id) {
            // A tracked file under a second name: a rename, which the rescan sorts out.
            self.rescan_wanted = true;
            return true;
        }
        self.start_new(&Found {
            path: path.to_path_buf(),
            stat,
        })
    }

    /// The initial pass: resume each file at its checkpoint; a file with none
    /// that is a checkpointed file under a new name takes that checkpoint.
    fn initial_pass(&mut self, start: &HashMap<PathBuf, FileCheckpoint>) -> Alive {
        self.last_rescan = Instant::now();
        let found = self.walk();
        let mut orphans = orphans(start, &found);
        for f in &found {
            if self.shutdown.load(Ordering::Relaxed) {
                return true;
            }
            let mut cp = start.get(&f.path).copied();
            if cp.is_none() {
                if let Some((from, c)) = take_orphan(&mut orphans, f) {
                    tracing::info!(from = %from.display(), to = %f.path.display(), "file renamed while the engine was stopped: its checkpoint moves to the new name");
                    self.stats.renames += 1;
                    if !self.send(SourceEvent::Renamed {
                        from,
                        to: f.path.clone(),
                        checkpoint: c,
                    }) {
                        return false;
                    }
                    cp = Some(c);
                }
            }
            if !self.track(f, cp) || !self.read_new(&f.path) {
                return false;
            }
        }
        self.flush_partials(Instant::now())
    }

    /// Backfill: wait (at most the grace period) for unterminated last lines
    /// of files written moments ago, then take them as lines.
    fn finish_partials(&mut self) -> Alive {
        while let Some(due) = self.next_partial_due() {
            if self.shutdown.load(Ordering::Relaxed) {
                return true;
            }
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(MAX_SLEEP));
            }
            if !self.flush_partials(Instant::now()) {
                return false;
            }
        }
        true
    }
}

/// Same inode and the same first bytes as what was read (an inode number
/// reused by a new file after a deletion does not match).
fn is_same_file(t: &Tracked, f: &Found) -> bool {
    t.id == f.stat.id && read_head(&f.path, t.head.len() as u64).is_ok_and(|h| h == t.head)
}

/// Checkpoints of files that were not found where they were, by inode.
fn orphans(
    start: &HashMap<PathBuf, FileCheckpoint>,
    found: &[Found],
) -> HashMap<FileId, Vec<(PathBuf, FileCheckpoint)>> {
    let here: HashSet<&Path> = found.iter().map(|f| f.path.as_path()).collect();
    let mut out: HashMap<FileId, Vec<(PathBuf, FileCheckpoint)>> = HashMap::new();
    for (p, cp) in start {
        let gone =
            std::fs::symlink_metadata(p).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        if !here.contains(p.as_path()) && gone {
            out.entry(cp.file_id).or_default().push((p.clone(), *cp));
        }
    }
    out
}

/// The checkpoint a file found under a new name takes: one of its inode whose
/// fingerprint matches, else any of its inode (the old name is gone and the
/// inode is here, so that checkpoint is stale anyway; `track` then sees the
/// mismatch and reads the file from the start).
fn take_orphan(
    orphans: &mut HashMap<FileId, Vec<(PathBuf, FileCheckpoint)>>,
    f: &Found,
) -> Option<(PathBuf, FileCheckpoint)> {
    let list = orphans.get_mut(&f.stat.id)?;
    let matches = |cp: &FileCheckpoint| {
        cp.offset <= f.stat.len
            && read_head(&f.path, cp.offset.min(FINGERPRINT_BYTES as u64))
                .is_ok_and(|h| fingerprint_bytes(&h) == cp.fingerprint)
    };
    let i = list.iter().position(|(_, cp)| matches(cp));
    match i {
        Some(i) => Some(list.swap_remove(i)),
        None => list.pop(),
    }
}

fn start_watch(cfg: &SourceConfig) -> (Option<Watch>, Option<Events>) {
    if !cfg.follow {
        return (None, None);
    }
    match Watch::start() {
        Ok((w, rx)) => (Some(w), Some(rx)),
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; polling only");
            (None, None)
        }
    }
}

/// Run the tailer until shutdown (follow) or until the initial pass is done.
pub fn run_source(
    cfg: &SourceConfig,
    start: HashMap<PathBuf, FileCheckpoint>,
    tx: Sender<SourceBatch>,
    shutdown: Arc<AtomicBool>,
) -> Result<SourceStats> {
    if !cfg.root.is_dir() {
        bail!("root directory {} does not exist", cfg.root.display());
    }
    let pats = Patterns::new(&cfg.patterns)?;
    // The initial pass's walk watches each directory before listing it, so
    // nothing written during the pass is missed.
    let (watch, events) = start_watch(cfg);
    let mut tailer = Tailer::new(cfg, pats, tx, shutdown.clone(), watch);
    if !tailer.initial_pass(&start) {
        return Ok(tailer.stats);
    }
    if !cfg.follow {
        tailer.finish_partials();
        tailer.send(SourceEvent::CaughtUp);
        return Ok(tailer.stats);
    }
    if !tailer.send(SourceEvent::CaughtUp) {
        return Ok(tailer.stats);
    }
    follow_loop(&mut tailer, events.as_ref());
    Ok(tailer.stats)
}

/// Wait for events (or the next timer), then do what they ask.
fn follow_loop(tailer: &mut Tailer<'_>, mut events: Option<&Events>) {
    while !tailer.shutdown.load(Ordering::Relaxed) {
        let mut work = Work::default();
        let watching = events.is_some() && tailer.watch.as_ref().is_some_and(Watch::complete);
        let timeout = next_wake(tailer, watching).saturating_duration_since(Instant::now());
        match events.map(|rx| rx.recv_timeout(timeout)) {
            Some(Ok(ev)) => {
                work.add(&tailer.cfg.root, &tailer.pats, ev);
                while let Some(Ok(ev)) = events.map(|rx| rx.try_recv()) {
                    work.add(&tailer.cfg.root, &tailer.pats, ev);
                }
            }
            Some(Err(RecvTimeoutError::Timeout)) => {}
            Some(Err(RecvTimeoutError::Disconnected)) => {
                tracing::warn!("file watcher stopped; polling only");
                events = None;
                tailer.watch = None;
            }
            None => std::thread::sleep(timeout),
        }
        if !work.is_empty() {
            tailer.stats.wakeups += 1;
        }
        if !do_work(tailer, work, watching) {
            return;
        }
    }
}

fn do_work(tailer: &mut Tailer<'_>, work: Work, watching: bool) -> Alive {
    if let Some(w) = tailer.watch.as_mut() {
        for d in &work.gone_dirs {
            w.forget(d);
        }
    }
    for p in &work.files {
        let alive = if tailer.files.contains_key(p) {
            tailer.poll_file(p, None)
        } else {
            tailer.adopt(p)
        };
        if !alive {
            return false;
        }
    }
    tailer.rescan_wanted |= work.rescan;
    let since = tailer.last_rescan.elapsed();
    let due = since >= safety_interval(tailer, watching)
        || (tailer.rescan_wanted && since >= RESCAN_MIN_GAP);
    if due && !tailer.rescan() {
        return false;
    }
    tailer.flush_partials(Instant::now())
}

/// How often to rescan with nothing asking for it: the polling interval when
/// there are no events (the only way appends are seen then), a slower safety
/// net when there are, spaced to at least [`RESCAN_COST_RATIO`] times what
/// the last rescan took.
fn safety_interval(tailer: &Tailer<'_>, watching: bool) -> Duration {
    if watching {
        spaced_by_cost(tailer.cfg.rescan_interval, tailer.rescan_cost)
    } else {
        tailer.cfg.poll_interval
    }
}

/// Safety rescans take at most 1/this of the time (0.5 % of a core):
/// on a tree of 52,800 session files a rescan (a walk and a stat of each)
/// takes ~0.7 s, which every 30 s was 2.3 % of a core spent idle.
const RESCAN_COST_RATIO: u32 = 200;

fn spaced_by_cost(configured: Duration, last_cost: Duration) -> Duration {
    configured.max(last_cost.saturating_mul(RESCAN_COST_RATIO))
}

fn next_wake(tailer: &Tailer<'_>, watching: bool) -> Instant {
    let now = Instant::now();
    let mut wake = now + MAX_SLEEP;
    let gap = if tailer.rescan_wanted {
        RESCAN_MIN_GAP
    } else {
        safety_interval(tailer, watching)
    };
    wake = wake.min(tailer.last_rescan + gap);
    if let Some(d) = tailer.next_partial_due() {
        wake = wake.min(d);
    }
    wake.max(now)
}

#[cfg(test)]
mod spacing_tests {
    use super::*;

    #[test]
    fn safety_rescans_are_spaced_by_their_cost() {
        let s = Duration::from_secs;
        // A small tree: the configured interval.
        assert_eq!(spaced_by_cost(s(30), Duration::from_millis(5)), s(30));
        // 52,800 files, 0.7 s a rescan: every 140 s, 0.5 % of a core.
        assert_eq!(spaced_by_cost(s(30), Duration::from_millis(700)), s(140));
        assert_eq!(spaced_by_cost(s(30), Duration::MAX), Duration::MAX);
    }
}
