//! Waiting on a directory watcher's events, shared by the rule and plugin
//! hot-reload threads.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// Wait up to `timeout` for a change event; true when one came.
///
/// A channel whose sender is gone (no watcher: notify could not start, or was
/// dropped because the directory did not exist) answers at once with
/// `Disconnected`; this sleeps out the timeout instead, so a watcher thread
/// left to polling waits between polls rather than spinning on a core (which
/// an installed engine without a user rules dir did, at 100 % of a core).
pub fn wait_for_change(rx: &Receiver<()>, timeout: Duration) -> bool {
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
