//! Finding session files under the root.
//!
//! Symlinked project directories and symlinked files are followed (users keep
//! projects on other disks), but every directory and file is reached at most
//! once: real directories are walked first, then the symlinked ones, and
//! anything whose inode was already reached is skipped with a reason. That
//! breaks symlink loops and keeps a directory linked twice from being counted
//! twice. What cannot be read is reported as `skipped`, with the reason, so the
//! tailer can log it once.

use super::FileId;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A session file found by a walk, with what a poll compares.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub path: PathBuf,
    pub stat: Stat,
}

/// The parts of a file's metadata the tailer watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub id: FileId,
    pub len: u64,
    /// Modification time (seconds, nanoseconds): a same-length rewrite changes it.
    pub mtime: (i64, i64),
}

impl Stat {
    pub fn of(m: &std::fs::Metadata) -> Stat {
        Stat {
            id: file_id(m),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }

    /// Seconds since the last write (0 when the clock says the future).
    pub fn quiet_for(&self) -> std::time::Duration {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = u64::try_from(self.mtime.0).unwrap_or(0);
        let nanos = u32::try_from(self.mtime.1).unwrap_or(0);
        now.saturating_sub(std::time::Duration::new(secs, nanos.min(999_999_999)))
    }
}

/// What a walk found: files (each inode once, sorted by path) and what it skipped.
#[derive(Debug, Default)]
pub(crate) struct Discovery {
    pub files: Vec<Found>,
    pub skipped: Vec<(PathBuf, String)>,
}

/// The configured globs, compiled (`*` does not cross `/`), and how deep a
/// walk must go to find what they match.
#[derive(Debug, Clone)]
pub(crate) struct Patterns {
    set: globset::GlobSet,
    pub depth: usize,
}

impl Patterns {
    pub fn new(patterns: &[String]) -> Result<Patterns> {
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            b.add(
                globset::GlobBuilder::new(p)
                    .literal_separator(true)
                    .build()
                    .with_context(|| format!("bad source pattern `{p}`"))?,
            );
        }
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
        Ok(Patterns {
            set: b.build()?,
            depth,
        })
    }

    /// Does `path` (absolute, under `root`) name a session file?
    pub fn matches(&self, root: &Path, path: &Path) -> bool {
        path.strip_prefix(root)
            .map(|rel| self.set.is_match(rel))
            .unwrap_or(false)
    }

    /// Could a directory at `path` hold session files (is it shallow enough)?
    pub fn may_hold_files(&self, root: &Path, path: &Path) -> bool {
        path.strip_prefix(root)
            .map(|rel| rel.components().count() < self.depth)
            .unwrap_or(false)
    }
}

/// Files under `root` matching `patterns`, sorted.
pub fn discover(root: &Path, patterns: &[String]) -> Result<Vec<PathBuf>> {
    let pats = Patterns::new(patterns)?;
    Ok(walk_root(root, &pats, &mut |_| {})
        .files
        .into_iter()
        .map(|f| f.path)
        .collect())
}

/// A directory still to walk, and how many levels it may descend.
struct Pending {
    dir: PathBuf,
    id: FileId,
    depth: usize,
}

struct Walk<'a> {
    root: &'a Path,
    pats: &'a Patterns,
    /// Called before a directory is listed (the tailer watches it there, so a
    /// file created after the listing is reported).
    before_list: &'a mut dyn FnMut(&Path),
    /// Directories and files reached so far, by inode, with the path that reached them.
    dirs: HashMap<FileId, PathBuf>,
    files: HashMap<FileId, PathBuf>,
    /// Symlinked directories, walked only once every real directory has been.
    linked: Vec<Pending>,
    /// Symlinked files, taken last (the real name of a file wins).
    linked_files: Vec<PathBuf>,
    out: Discovery,
}

pub(crate) fn walk_root(
    root: &Path,
    pats: &Patterns,
    before_list: &mut dyn FnMut(&Path),
) -> Discovery {
    let mut w = Walk {
        root,
        pats,
        before_list,
        dirs: HashMap::new(),
        files: HashMap::new(),
        linked: Vec::new(),
        linked_files: Vec::new(),
        out: Discovery::default(),
    };
    match std::fs::metadata(root) {
        Ok(m) => {
            let id = file_id(&m);
            w.dirs.insert(id, root.to_path_buf());
            w.dir(root, id, pats.depth);
        }
        Err(e) => w.skip(root, format!("cannot read the root: {e}")),
    }
    // Real directories first, so a symlink to one of them is the duplicate.
    while !w.linked.is_empty() {
        let mut batch = std::mem::take(&mut w.linked);
        batch.sort_by(|a, b| a.dir.cmp(&b.dir));
        for p in batch {
            w.enter_linked(p);
        }
    }
    w.linked_files.sort();
    for p in std::mem::take(&mut w.linked_files) {
        w.file(p);
    }
    w.out.files.sort_by(|a, b| a.path.cmp(&b.path));
    w.out
}

impl Walk<'_> {
    fn skip(&mut self, path: &Path, reason: String) {
        self.out.skipped.push((path.to_path_buf(), reason));
    }

    fn enter_linked(&mut self, p: Pending) {
        if let Some(first) = self.dirs.get(&p.id) {
            let reason = format!(
                "symlinked directory already read as {} (a loop, or linked twice); skipped so nothing is counted twice",
                first.display()
            );
            self.skip(&p.dir, reason);
            return;
        }
        self.dirs.insert(p.id, p.dir.clone());
        self.dir(&p.dir, p.id, p.depth);
    }

    fn dir(&mut self, dir: &Path, id: FileId, depth: usize) {
        if depth == 0 {
            return;
        }
        (self.before_list)(dir);
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) => return self.skip(dir, format!("cannot list the directory: {e}")),
        };
        let mut entries: Vec<std::fs::DirEntry> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            self.entry(&e, id.dev, depth);
        }
    }

    fn entry(&mut self, e: &std::fs::DirEntry, dev: u64, depth: usize) {
        let p = e.path();
        let Ok(ft) = e.file_type() else { return };
        if ft.is_dir() {
            // No hard links to directories: a real directory is reached once.
            let sub = std::fs::metadata(&p)
                .map(|m| file_id(&m))
                .unwrap_or(FileId { dev, ino: e.ino() });
            self.dirs.insert(sub, p.clone());
            self.dir(&p, sub, depth - 1);
        } else if ft.is_file() {
            if self.pats.matches(self.root, &p) {
                self.file(p);
            }
        } else if ft.is_symlink() {
            self.symlink(p, depth);
        }
    }

    fn symlink(&mut self, p: PathBuf, depth: usize) {
        let is_candidate_file = self.pats.matches(self.root, &p);
        let may_be_dir = depth > 1;
        if !is_candidate_file && !may_be_dir {
            return;
        }
        match std::fs::metadata(&p) {
            Ok(m) if m.is_dir() && may_be_dir => self.linked.push(Pending {
                dir: p,
                id: file_id(&m),
                depth: depth - 1,
            }),
            Ok(m) if m.is_file() && is_candidate_file => self.linked_files.push(p),
            Ok(_) => {}
            Err(e) => self.skip(&p, format!("broken symlink: {e}")),
        }
    }

    fn file(&mut self, path: PathBuf) {
        // stat, not the directory entry's inode: on overlay filesystems the two
        // can differ, and the tailer identifies files by what stat says.
        let stat = match std::fs::metadata(&path) {
            Ok(m) => Stat::of(&m),
            Err(e) => return self.skip(&path, format!("cannot stat: {e}")),
        };
        let id = stat.id;
        if let Some(first) = self.files.get(&id) {
            let reason = format!(
                "same file as {} (a symlink or hard link); read once, under the first name",
                first.display()
            );
            return self.skip(&path, reason);
        }
        self.files.insert(id, path.clone());
        self.out.files.push(Found { path, stat });
    }
}

pub(crate) fn file_id(m: &std::fs::Metadata) -> FileId {
    FileId {
        dev: m.dev(),
        ino: m.ino(),
    }
}
