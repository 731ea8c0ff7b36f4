//! Hot reload: a cloneable handle whose plugin set can be swapped atomically
//! while calls are in flight, and a watcher thread that triggers reloads.

use super::api::{CallCost, PluginCaller, PluginError, PluginOutput};
use super::host::{load_files, scan_dir, EngineCtx, PluginHost, PluginLimits, PluginLoadError};
use anyhow::Result;
use arc_swap::ArcSwap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// What one [`PluginsHandle::reload`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Plugins compiled from new or changed files (now active).
    pub loaded: Vec<String>,
    /// Plugins whose file disappeared (no longer callable).
    pub unloaded: Vec<String>,
    /// Files that failed; a plugin that was loaded before keeps its old version.
    pub rejected: Vec<PluginLoadError>,
}

impl ReloadReport {
    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty() && self.unloaded.is_empty() && self.rejected.is_empty()
    }
}

struct HandleInner {
    dir: PathBuf,
    ctx: Arc<EngineCtx>,
    current: ArcSwap<PluginHost>,
    /// Serialises reloads (watcher vs. manual) so none loses another's result.
    reload_lock: Mutex<()>,
    /// Number of reloads run so far (observability and tests).
    reloads: AtomicU64,
}

/// Hot-reloadable plugin set: implements [`PluginCaller`] by delegating to
/// the current [`PluginHost`]. A call in flight keeps the host it started with.
#[derive(Clone)]
pub struct PluginsHandle {
    inner: Arc<HandleInner>,
}

impl PluginsHandle {
    /// Load every plugin in `dir` (see [`PluginHost::load_dir`]).
    pub fn load(dir: &Path, limits: PluginLimits) -> Result<(PluginsHandle, Vec<PluginLoadError>)> {
        let (host, errors) = PluginHost::load_dir(dir, limits)?;
        let handle = PluginsHandle {
            inner: Arc::new(HandleInner {
                dir: dir.to_path_buf(),
                ctx: host.ctx.clone(),
                current: ArcSwap::from_pointee(host),
                reload_lock: Mutex::new(()),
                reloads: AtomicU64::new(0),
            }),
        };
        Ok((handle, errors))
    }

    /// Re-scan the directory. New and changed files are compiled; a file that
    /// now fails keeps its previous version running; deleted files are
    /// unloaded; unchanged files (same content hash) are not recompiled.
    pub fn reload(&self) -> ReloadReport {
        let inner = &*self.inner;
        // A poisoned lock only means another reload panicked; the data is `()`.
        let _guard = inner
            .reload_lock
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.reloads.fetch_add(1, Ordering::Relaxed);
        let old = inner.current.load_full();
        let (mut plugins, failed) = match load_files(&inner.ctx, &inner.dir, &old.plugins) {
            Ok(result) => result,
            Err(e) => {
                // Directory unreadable (not missing): keep everything as is.
                let err = PluginLoadError {
                    file: inner.dir.clone(),
                    reason: format!("{e:#}"),
                };
                tracing::error!(file = %err.file.display(), reason = %err.reason, "plugin reload failed, keeping current plugins");
                return ReloadReport {
                    rejected: vec![err],
                    ..ReloadReport::default()
                };
            }
        };
        let mut report = ReloadReport::default();
        for (name, err) in failed {
            // Another file may already provide the name (foo.wasm vs foo.wat).
            let keep_old = old
                .plugins
                .get(&name)
                .filter(|_| !plugins.contains_key(&name));
            if let Some(prev) = keep_old {
                tracing::error!(plugin = %name, file = %err.file.display(), reason = %err.reason, "plugin reload rejected, keeping the previous version");
                plugins.insert(name, prev.clone());
            } else {
                tracing::error!(file = %err.file.display(), reason = %err.reason, "plugin rejected");
            }
            report.rejected.push(err);
        }
        for (name, plugin) in &plugins {
            let same = old
                .plugins
                .get(name)
                .is_some_and(|prev| Arc::ptr_eq(prev, plugin));
            if !same {
                report.loaded.push(name.clone());
            }
        }
        report.unloaded = old
            .plugins
            .keys()
            .filter(|name| !plugins.contains_key(*name))
            .cloned()
            .collect();
        if !report.loaded.is_empty() || !report.unloaded.is_empty() {
            inner.current.store(Arc::new(PluginHost {
                ctx: inner.ctx.clone(),
                plugins,
            }));
            tracing::info!(
                dir = %inner.dir.display(),
                loaded = ?report.loaded,
                unloaded = ?report.unloaded,
                rejected = report.rejected.len(),
                "plugins reloaded"
            );
        }
        report
    }

    /// Names of the currently loaded plugins, sorted.
    pub fn names(&self) -> Vec<String> {
        self.inner.current.load().names()
    }

    /// How many times [`PluginsHandle::reload`] has run.
    pub fn reload_count(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    /// The directory this handle loads from.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

impl PluginCaller for PluginsHandle {
    fn call(&self, name: &str, input: &[u8]) -> Result<PluginOutput, PluginError> {
        self.inner.current.load().call(name, input)
    }

    fn has(&self, name: &str) -> bool {
        self.inner.current.load().has(name)
    }

    fn call_measured(
        &self,
        name: &str,
        input: &[u8],
    ) -> (Result<PluginOutput, PluginError>, Option<CallCost>) {
        self.inner.current.load().call_measured(name, input)
    }
}

/// Quiet period after the last file event before reloading, so a copy that
/// writes in several chunks is compiled once, complete.
const DEBOUNCE: Duration = Duration::from_millis(150);
/// Fallback poll of the directory (notify can miss events, e.g. on network
/// filesystems or when the directory is created after start).
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Longest the loop sleeps, which bounds how late `shutdown` is noticed.
const WAKE_EVERY: Duration = Duration::from_millis(250);

/// Cheap snapshot of the plugin files: (path, size, mtime) per file.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    scan_dir(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|path| {
            let meta = std::fs::metadata(&path).ok();
            let len = meta.as_ref().map_or(0, |m| m.len());
            let modified = meta.and_then(|m| m.modified().ok());
            (path, len, modified)
        })
        .collect()
}

/// Watch `dir` (notify, plus a poll every second as a fallback) and call
/// [`PluginsHandle::reload`] on changes, debounced. Runs on its own thread
/// until `shutdown` is set; its result is how many times it woke.
pub fn spawn_plugin_watcher(
    handle: PluginsHandle,
    dir: PathBuf,
    shutdown: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::Builder::new()
        .name("plugin-watcher".into())
        .spawn(move || watch_loop(handle, dir, shutdown))
        .unwrap_or_else(|e| {
            // Without the thread plugins still work, they just do not hot-reload.
            tracing::error!(error = %e, "cannot start the plugin watcher thread; hot reload disabled");
            std::thread::spawn(|| 0)
        })
}

/// Changes to plugin files. Access events are ignored: reload itself opens
/// every file, and reacting to that would reload forever.
fn is_relevant(event: &notify::Event) -> bool {
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return false;
    }
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("wasm") | Some("wat")
            )
        })
}

fn watch_loop(handle: PluginsHandle, dir: PathBuf, shutdown: Arc<AtomicBool>) -> u64 {
    let mut watch = crate::watch::DirWatch::new("plugins", is_relevant);
    let mut last_print = fingerprint(&dir);
    let mut next_poll = Instant::now() + POLL_EVERY;
    // One reload right away catches changes made between the initial load and
    // this thread starting (unchanged files cost only a hash).
    let mut pending: Option<Instant> = Some(Instant::now());
    tracing::debug!(dir = %dir.display(), "plugin watcher started");
    let mut wakes = 0;
    while !shutdown.load(Ordering::Relaxed) {
        wakes += 1;
        // Fails while the dir does not exist; retried at each wake-up.
        watch.arm(&dir);
        let now = Instant::now();
        let wait = [Some(next_poll), pending]
            .into_iter()
            .flatten()
            .min()
            .map_or(WAKE_EVERY, |t| t.saturating_duration_since(now))
            .min(WAKE_EVERY);
        if watch.wait(wait) {
            watch.drain();
            pending = Some(Instant::now() + DEBOUNCE);
        }
        let now = Instant::now();
        if now >= next_poll {
            next_poll = now + POLL_EVERY;
            let print = fingerprint(&dir);
            if print != last_print && pending.is_none() {
                pending = Some(now);
            }
            watch.check_exists(&dir);
        }
        if pending.is_some_and(|t| now >= t) {
            pending = None;
            last_print = fingerprint(&dir);
            let report = handle.reload();
            if !report.is_empty() {
                tracing::debug!(?report, "plugin watcher reloaded");
            }
        }
    }
    tracing::debug!(dir = %dir.display(), wakes, "plugin watcher stopped");
    wakes
}
