//! A watch on one directory for the rule and plugin hot-reload threads:
//! notify events filtered to the ones that count, turned into a bare "look
//! again" signal, and re-armed while the directory is missing. Each thread
//! keeps its own poll as the fallback (notify can miss events).

use notify::{RecursiveMode, Watcher};
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

pub struct DirWatch {
    /// None when notify cannot start: the owner's poll is all there is.
    watcher: Option<notify::RecommendedWatcher>,
    rx: Receiver<()>,
    watching: bool,
}

impl DirWatch {
    /// `relevant` picks the events that mean a change. Opens and reads must
    /// not: a reload reads the files, and reacting to that would never end.
    pub fn new(what: &str, relevant: fn(&notify::Event) -> bool) -> DirWatch {
        let (tx, rx) = std::sync::mpsc::channel();
        let watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok_and(|ev| relevant(&ev)) {
                // The receiver only goes away on shutdown; nothing to do then.
                let _ = tx.send(());
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "no file notifications; polling the {what} dir"))
        .ok();
        DirWatch {
            watcher,
            rx,
            watching: false,
        }
    }

    /// Watch `dir` if not yet watching; false while that fails (the dir does
    /// not exist yet, or there are no notifications): poll then.
    pub fn arm(&mut self, dir: &Path) -> bool {
        if !self.watching {
            self.watching = self
                .watcher
                .as_mut()
                .is_some_and(|w| w.watch(dir, RecursiveMode::NonRecursive).is_ok());
        }
        self.watching
    }

    /// A removed dir takes its watch with it: arm again once it is back.
    pub fn check_exists(&mut self, dir: &Path) {
        self.watching &= dir.exists();
    }

    /// Wait up to `timeout` for a change; true when one came (the rest of its
    /// burst is left for [`DirWatch::drain`]).
    pub fn wait(&self, timeout: Duration) -> bool {
        wait_for_change(&self.rx, timeout)
    }

    /// Forget the signals queued so far (one reload covers them all).
    pub fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }
}

/// Wait up to `timeout` for a change event; true when one came.
///
/// A channel whose sender is gone (no watcher: notify could not start, or was
/// dropped because the directory did not exist) answers at once with
/// `Disconnected`; this sleeps out the timeout instead, so a watcher thread
/// left to polling waits between polls rather than spinning on a core (which
/// an installed engine without a user rules dir did, at 100 % of a core).
fn wait_for_change(rx: &Receiver<()>, timeout: Duration) -> bool {
    match rx.recv_timeout(timeout) {
        Ok(()) => true,
        Err(RecvTimeoutError::Timeout) => false,
        Err(RecvTimeoutError::Disconnected) => {
            std::thread::sleep(timeout);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_closed_channel_waits_out_the_timeout() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        drop(tx);
        let t = Instant::now();
        assert!(!wait_for_change(&rx, Duration::from_millis(50)));
        assert!(
            t.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn an_event_returns_at_once() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tx.send(()).unwrap();
        let t = Instant::now();
        assert!(wait_for_change(&rx, Duration::from_secs(5)));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
