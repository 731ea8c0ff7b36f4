//! Budgets for the bounded queues between the pipeline's stages.
//!
//! A queue's items are batches: a read chunk's ~512 lines in a backfill, a
//! file's one or few new lines while following. Bounding the channel in
//! batches fits neither: deep enough for single lines, it let backfill chunks
//! fill the whole byte budget (engine RSS 195-210 MiB); shallow enough for
//! chunks, it starved the writer of lines when many files change at once
//! (20,000 new files took 66 s instead of 5.5). So a budget bounds a queue in
//! lines and in bytes (400 KB entries exist): the producer acquires a
//! `Permit` for an item's lines and size before sending it, and the permit
//! travels with the item and gives them back when dropped (consumed, or
//! dropped with the channel when a stage dies, so nobody waits forever).

use super::status::IngestStatus;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};

/// Lines and bytes a queue may hold.
pub struct QueueBudget {
    max_lines: usize,
    max_bytes: usize,
    used: Mutex<Held>,
    freed: Condvar,
    /// Mirrors the bytes held into `/healthz` (`queued_bytes`).
    status: Arc<IngestStatus>,
}

#[derive(Default, Clone, Copy, Debug, PartialEq)]
pub struct Held {
    pub lines: usize,
    pub bytes: usize,
}

/// Lines and bytes held in a queue; released on drop.
pub struct Permit {
    budget: Arc<QueueBudget>,
    held: Held,
}

impl QueueBudget {
    pub fn new(max_lines: usize, max_bytes: usize, status: Arc<IngestStatus>) -> Arc<Self> {
        Arc::new(QueueBudget {
            max_lines,
            max_bytes,
            used: Mutex::new(Held::default()),
            freed: Condvar::new(),
            status,
        })
    }

    /// Blocks (a blocking thread, never an async task) until `lines` and
    /// `bytes` fit. An item larger than the whole budget waits for an empty
    /// queue and then passes alone, so the bound is the limit plus one item.
    pub fn acquire(self: &Arc<Self>, lines: usize, bytes: usize) -> Permit {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used != Held::default()
            && (used.lines + lines > self.max_lines || used.bytes + bytes > self.max_bytes)
        {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        used.lines += lines;
        used.bytes += bytes;
        self.status.queued_bytes.fetch_add(bytes as u64, Relaxed);
        Permit {
            budget: self.clone(),
            held: Held { lines, bytes },
        }
    }

    pub fn used(&self) -> Held {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let b = &self.budget;
        let mut used = b.used.lock().unwrap_or_else(|p| p.into_inner());
        used.lines = used.lines.saturating_sub(self.held.lines);
        used.bytes = used.bytes.saturating_sub(self.held.bytes);
        let bytes = self.held.bytes as u64;
        b.status
            .queued_bytes
            .fetch_sub(bytes.min(b.status.queued_bytes.load(Relaxed)), Relaxed);
        b.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Acquires on another thread; Some(permit) if it got through within 200 ms.
    fn try_acquire(b: &Arc<QueueBudget>, lines: usize, bytes: usize) -> Option<Permit> {
        let (tx, rx) = std::sync::mpsc::channel();
        let b2 = b.clone();
        std::thread::spawn(move || {
            let _ = tx.send(b2.acquire(lines, bytes));
        });
        rx.recv_timeout(Duration::from_millis(200)).ok()
    }

    #[test]
    fn blocks_until_bytes_are_released_and_lets_one_oversize_item_pass() {
        let status = Arc::new(IngestStatus::new(1));
        let budget = QueueBudget::new(1000, 100, status.clone());
        let a = budget.acquire(1, 60);
        let (tx, rx) = std::sync::mpsc::channel();
        let b2 = budget.clone();
        let waiter = std::thread::spawn(move || {
            let p = b2.acquire(1, 60);
            tx.send(()).unwrap();
            p
        });
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "120 bytes must not fit in 100"
        );
        assert_eq!(status.queued_bytes.load(Relaxed), 60);
        drop(a);
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let b = waiter.join().unwrap();
        drop(b);
        assert_eq!(budget.used(), Held::default());
        let huge = budget.acquire(1, 1000);
        assert_eq!(budget.used().bytes, 1000, "an oversize item passes alone");
        drop(huge);
        assert_eq!(status.queued_bytes.load(Relaxed), 0);
    }

    /// Many one-line batches queue up to the line bound (the writer gets
    /// them all at once), and a 512-line chunk waits once that bound is near.
    #[test]
    fn lines_bound_the_queue_whatever_the_batch_size() {
        let status = Arc::new(IngestStatus::new(1));
        let budget = QueueBudget::new(2048, 1 << 30, status);
        let small: Vec<Permit> = (0..2000).map(|_| budget.acquire(1, 500)).collect();
        assert_eq!(budget.used().lines, 2000);
        assert!(
            try_acquire(&budget, 512, 256 << 10).is_none(),
            "2512 lines > 2048"
        );
        drop(small);
        let chunks: Vec<Permit> = (0..4).map(|_| budget.acquire(512, 256 << 10)).collect();
        assert!(
            try_acquire(&budget, 512, 256 << 10).is_none(),
            "a fifth chunk waits"
        );
        drop(chunks);
        assert!(try_acquire(&budget, 512, 256 << 10).is_some());
    }
}
