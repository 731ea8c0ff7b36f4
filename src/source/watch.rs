//! Turning file-system notifications into work for the tailer.
//!
//! inotify reports far more than appends: every `open` of a file or directory
//! (IN_OPEN), including the tailer's own reads and directory listings. Reacting
//! to those made an idle engine rescan itself in a loop. Only events that can
//! mean new data, a new file or a file gone are kept:
//!
//! * access events (open, close after reading) are dropped, except a close
//!   after writing, which is an append that has just finished;
//! * metadata events (chmod, touch) are dropped: the periodic rescan sees a
//!   file that became readable;
//! * data and create events count only for paths matching the patterns, and
//!   for directories shallow enough to hold matching files;
//! * renames, removals of directories, and anything notify cannot classify
//!   (including a queue overflow) ask for a rescan, which the tailer rate-limits.

use super::discover::Patterns;
use notify::event::{AccessKind, AccessMode, CreateKind, EventKind, ModifyKind, RemoveKind};
use notify::{RecursiveMode, Watcher};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

pub(crate) type Events = std::sync::mpsc::Receiver<notify::Result<notify::Event>>;

/// The directories the tailer listens to: exactly those its walks list (the
/// root, project directories, subagent directories ... down to the patterns'
/// depth), each watched on its own. A recursive watch of the root failed as a
/// whole on one unreadable directory (and watched deep trees nobody reads).
pub(crate) struct Watch {
    watcher: notify::RecommendedWatcher,
    watched: HashSet<PathBuf>,
    /// Directories that could not be watched, with the reason (logged once).
    failed: HashMap<PathBuf, String>,
    /// Directories the current walk reached.
    reached: HashSet<PathBuf>,
}

impl Watch {
    pub fn start() -> notify::Result<(Watch, Events)> {
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = notify::recommended_watcher(tx)?;
        let w = Watch {
            watcher,
            watched: HashSet::new(),
            failed: HashMap::new(),
            reached: HashSet::new(),
        };
        Ok((w, rx))
    }

    /// Watch `dir` unless it already is (called before the walk lists it).
    pub fn ensure(&mut self, dir: &Path) {
        self.reached.insert(dir.to_path_buf());
        if self.watched.contains(dir) {
            return;
        }
        match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.failed.remove(dir);
                self.watched.insert(dir.to_path_buf());
            }
            // Not readable: the walk cannot list it either, says so, and
            // there is nothing in it to poll.
            Err(notify::Error {
                kind: notify::ErrorKind::Io(io),
                ..
            }) if io.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(e) => {
                let reason = e.to_string();
                if self.failed.get(dir) != Some(&reason) {
                    tracing::warn!(dir = %dir.display(), %reason, "cannot watch directory; it is polled instead");
                }
                self.failed.insert(dir.to_path_buf(), reason);
            }
        }
    }

    /// After a walk: stop watching what it did not reach.
    pub fn end_walk(&mut self) {
        let reached = std::mem::take(&mut self.reached);
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|p| !reached.contains(*p))
            .cloned()
            .collect();
        for p in stale {
            let _ = self.watcher.unwatch(&p); // gone already: nothing to undo
            self.watched.remove(&p);
        }
        self.failed.retain(|p, _| reached.contains(p));
    }

    /// A watched directory was removed (its watch went with it).
    pub fn forget(&mut self, dir: &Path) {
        self.watched.remove(dir);
    }

    /// Every directory is watched: events alone can drive the tailer.
    pub fn complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Work gathered from a burst of events.
#[derive(Debug, Default)]
pub(crate) struct Work {
    /// Paths matching the patterns that were written, created or removed.
    pub files: BTreeSet<PathBuf>,
    /// A full rescan is needed (new directory, rename, overflow ...).
    pub rescan: bool,
    /// Directories removed (their watches are gone; a new one of the same
    /// name must be watched again).
    pub gone_dirs: Vec<PathBuf>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && !self.rescan && self.gone_dirs.is_empty()
    }

    /// Fold one notification into the work list.
    pub fn add(&mut self, root: &Path, pats: &Patterns, ev: notify::Result<notify::Event>) {
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                tracing::debug!(error = %e, "file watcher error; rescanning");
                self.rescan = true;
                return;
            }
        };
        if ev.need_rescan() {
            self.rescan = true;
            return;
        }
        match ev.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any | ModifyKind::Other) => {
                self.data(root, pats, &ev.paths)
            }
            EventKind::Create(CreateKind::File) | EventKind::Remove(RemoveKind::File) => {
                self.data(root, pats, &ev.paths);
                // A symlink to a project directory is created (or removed) as a file.
                self.rescan |= ev.paths.iter().any(|p| {
                    !pats.matches(root, p) && pats.may_hold_files(root, p) && !p.is_file()
                });
            }
            EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => {}
            EventKind::Create(CreateKind::Folder) => self.dirs(root, pats, &ev.paths),
            EventKind::Remove(RemoveKind::Folder | RemoveKind::Other) => {
                self.gone_dirs.extend(ev.paths.iter().cloned());
                self.dirs(root, pats, &ev.paths)
            }
            EventKind::Modify(ModifyKind::Name(_)) => {
                let relevant = ev
                    .paths
                    .iter()
                    .any(|p| pats.matches(root, p) || pats.may_hold_files(root, p));
                self.rescan |= relevant;
            }
            EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other => {
                self.rescan = true
            }
        }
    }

    fn data(&mut self, root: &Path, pats: &Patterns, paths: &[PathBuf]) {
        for p in paths {
            if pats.matches(root, p) {
                self.files.insert(p.clone());
            }
        }
    }

    fn dirs(&mut self, root: &Path, pats: &Patterns, paths: &[PathBuf]) {
        self.rescan |= paths.iter().any(|p| pats.may_hold_files(root, p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{DataChange, Flag, MetadataKind, RenameMode};
    use notify::Event;

    fn work(kind: EventKind, path: &str) -> Work {
        let pats = Patterns::new(&["*/*.jsonl".into(), "*/*/subagents/*.jsonl".into()]).unwrap();
        let mut w = Work::default();
        w.add(
            Path::new("/r"),
            &pats,
            Ok(Event::new(kind).add_path(PathBuf::from(path))),
        );
        w
    }

    #[test]
    fn reads_and_metadata_are_not_work() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
        ] {
            for path in ["/r/p/s.jsonl", "/r/p", "/r"] {
                assert!(work(kind, path).is_empty(), "{kind:?} {path}");
            }
        }
    }

    #[test]
    fn writes_count_only_for_session_files() {
        let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let w = work(data, "/r/p/s.jsonl");
        assert_eq!(w.files.len(), 1);
        assert!(!w.rescan);
        assert!(work(data, "/r/p/notes.txt").is_empty());
        assert!(work(data, "/r/p/s/tool-results/x.txt").is_empty());
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(work(closed, "/r/p/s.jsonl").files.len(), 1);
        let create = EventKind::Create(CreateKind::File);
        assert_eq!(work(create, "/r/p/s/subagents/a.jsonl").files.len(), 1);
    }

    #[test]
    fn new_dirs_renames_and_overflow_ask_for_a_rescan() {
        assert!(work(EventKind::Create(CreateKind::Folder), "/r/new-project").rescan);
        assert!(work(EventKind::Create(CreateKind::Folder), "/r/p/s/subagents").rescan);
        assert!(
            !work(
                EventKind::Create(CreateKind::Folder),
                "/r/p/s/subagents/deep"
            )
            .rescan
        );
        let name = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert!(work(name, "/r/p/s.jsonl").rescan);
        assert!(!work(name, "/r/p/s/tool-results/x/y.txt").rescan);
        let gone = work(EventKind::Remove(RemoveKind::Folder), "/r/p");
        assert!(gone.rescan && gone.gone_dirs == vec![PathBuf::from("/r/p")]);
        let pats = Patterns::new(&["*/*.jsonl".into()]).unwrap();
        let mut w = Work::default();
        w.add(
            Path::new("/r"),
            &pats,
            Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan)),
        );
        assert!(w.rescan);
        let mut w = Work::default();
        w.add(
            Path::new("/r"),
            &pats,
            Err(notify::Error::generic("queue overflow")),
        );
        assert!(w.rescan);
    }
}
