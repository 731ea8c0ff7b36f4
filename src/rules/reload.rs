//! Hot reload: the live rule pack sits behind an `ArcSwap`, so the router
//! always reads a complete, validated set. A changed directory is reloaded
//! as a whole; a broken edit is rejected (logged with file:line) and the
//! previous rules keep running.

use super::pack::RuleSource;
use super::{RuleErrors, RuleSet};
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Clone)]
pub struct RulesHandle {
    current: Arc<ArcSwap<RuleSet>>,
    generation: Arc<AtomicU64>,
    source: RuleSource,
}

/// What a reload did.
#[derive(Debug)]
pub enum ReloadOutcome {
    Unchanged,
    Reloaded { generation: u64, summary: String },
    Rejected(RuleErrors),
}

/// Names, sizes and mtimes of the rule files: cheap change detection for polling.
fn dir_stamp(dir: &Path) -> Stamp {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| {
                    e.path()
                        .extension()
                        .is_some_and(|x| x == "yaml" || x == "yml")
                })
                .filter_map(|e| {
                    let m = e.metadata().ok()?;
                    Some((e.path(), m.len(), m.modified().ok()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

type Stamp = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// "a.yaml (changed)", "b.yaml (added)", "c.yaml (removed)".
fn changed_files(old: &Stamp, new: &Stamp) -> Vec<String> {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for n in new {
        match old.iter().find(|o| o.0 == n.0) {
            None => out.push(format!("{} (added)", name(&n.0))),
            Some(o) if o != n => out.push(format!("{} (changed)", name(&n.0))),
            Some(_) => {}
        }
    }
    for o in old {
        if !new.iter().any(|n| n.0 == o.0) {
            out.push(format!("{} (removed)", name(&o.0)));
        }
    }
    out
}

impl RulesHandle {
    /// The pack of `dir` alone.
    pub fn load(dir: &Path) -> Result<RulesHandle, RuleErrors> {
        Self::load_source(RuleSource::dir_only(dir))
    }

    /// The pack in effect for `source` (built-in files overlaid by the user dir).
    pub fn load_source(source: RuleSource) -> Result<RulesHandle, RuleErrors> {
        let rs = source.load()?;
        Ok(RulesHandle {
            current: Arc::new(ArcSwap::from_pointee(rs)),
            generation: Arc::new(AtomicU64::new(1)),
            source,
        })
    }

    /// A handle over an already built set (tests, benches).
    pub fn from_set(rs: RuleSet, dir: &Path) -> RulesHandle {
        RulesHandle {
            current: Arc::new(ArcSwap::from_pointee(rs)),
            generation: Arc::new(AtomicU64::new(1)),
            source: RuleSource::dir_only(dir),
        }
    }

    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The user's directory (the one that is watched; built-in files never change).
    pub fn dir(&self) -> &Path {
        &self.source.dir
    }

    /// Reload from disk now.
    pub fn reload(&self) -> ReloadOutcome {
        self.reload_changed(&[])
    }

    /// Reload, naming the files that changed in the log line.
    pub fn reload_changed(&self, changed: &[String]) -> ReloadOutcome {
        let changed = changed.join(", ");
        match self.source.load() {
            Ok(rs) => {
                let summary = rs.summary();
                self.current.store(Arc::new(rs));
                let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                tracing::info!(dir = %self.source.dir.display(), %changed, generation, %summary, "rules reloaded");
                ReloadOutcome::Reloaded {
                    generation,
                    summary,
                }
            }
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(
                        file = %e.file.display(),
                        line = e.line.unwrap_or(0),
                        reason = %e.message,
                        %changed,
                        "rule change rejected, previous rules keep running"
                    );
                }
                ReloadOutcome::Rejected(errors)
            }
        }
    }
}

/// How often the watcher looks at the shutdown flag (nothing else is done then).
const WAKE_EVERY: Duration = Duration::from_millis(250);
/// Safety poll of names/sizes/mtimes while notify watches the dir (it can miss
/// events, e.g. on network filesystems), and the poll when it cannot.
const POLL_WATCHED: Duration = Duration::from_secs(10);
const POLL_UNWATCHED: Duration = Duration::from_secs(1);
/// Quiet period after an event, so an editor's save-dance is one reload.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Events that can mean a rule file changed. Opens, reads and metadata are
/// not: the watcher's own directory listing is an open of the watched dir,
/// and reacting to it made an idle engine re-list the dir ten times a second.
fn is_change(ev: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind};
    match ev.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        _ => true,
    }
}

/// Watch the rules dir (notify, plus a slow poll of names/sizes/mtimes as a
/// fallback) and reload on change, debounced so an editor's save-dance is one
/// reload. The thread's result is how many times it woke (tests bound it).
pub fn spawn_rules_watcher(
    handle: RulesHandle,
    shutdown: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::Builder::new()
        .name("rules-watcher".into())
        .spawn(move || watch_loop(&handle, &shutdown))
        .unwrap_or_else(|e| panic!("cannot spawn the rules watcher thread: {e}"))
}

/// The watcher thread's loop; returns its wake-up count. Watching the dir
/// is retried at every wake-up while it fails (the default user dir may not
/// exist yet), so a dir made later is watched.
fn watch_loop(handle: &RulesHandle, shutdown: &AtomicBool) -> u64 {
    let dir = handle.dir();
    let mut watch = crate::watch::DirWatch::new("rules", is_change);
    let mut stamp = dir_stamp(dir);
    let mut next_poll = std::time::Instant::now();
    let mut wakes = 0;
    while !shutdown.load(Ordering::Relaxed) {
        let watching = watch.arm(dir);
        wakes += 1;
        if watch.wait(WAKE_EVERY) {
            std::thread::sleep(DEBOUNCE);
            watch.drain();
        } else if std::time::Instant::now() < next_poll {
            continue;
        }
        next_poll = std::time::Instant::now()
            + if watching {
                POLL_WATCHED
            } else {
                POLL_UNWATCHED
            };
        watch.check_exists(dir);
        let now = dir_stamp(dir);
        if now != stamp {
            let changed = changed_files(&stamp, &now);
            stamp = now;
            let _ = handle.reload_changed(&changed);
        }
    }
    wakes
}
