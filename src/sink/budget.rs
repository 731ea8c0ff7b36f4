//! Byte budgets for the bounded queues between the pipeline's stages.
//!
//! The channels are bounded in entries; with 400 KB entries that alone let the
//! engine hold gigabytes. A budget bounds the bytes as well: the producer
//! acquires a `Permit` for an item's size before sending it, and the permit
//! travels with the item and gives its bytes back when dropped (consumed, or
//! dropped with the channel when a stage dies, so nobody waits forever).

use super::status::IngestStatus;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Condvar, Mutex};

pub struct ByteBudget {
    limit: usize,
    used: Mutex<usize>,
    freed: Condvar,
    /// Mirrors the bytes held into `/healthz` (`queued_bytes`).
    status: Arc<IngestStatus>,
}

/// Bytes held in a queue; released on drop.
pub struct Permit {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl ByteBudget {
    pub fn new(limit: usize, status: Arc<IngestStatus>) -> Arc<ByteBudget> {
        Arc::new(ByteBudget {
            limit,
            used: Mutex::new(0),
            freed: Condvar::new(),
            status,
        })
    }

    /// Blocks (a blocking thread, never an async task) until `bytes` fit. An
    /// item larger than the whole budget waits for an empty queue and then
    /// passes alone, so the bound is `limit` plus one item.
    pub fn acquire(self: &Arc<Self>, bytes: usize) -> Permit {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *used > 0 && *used + bytes > self.limit {
            used = self.freed.wait(used).unwrap_or_else(|p| p.into_inner());
        }
        *used += bytes;
        self.status.queued_bytes.fetch_add(bytes as u64, Relaxed);
        Permit {
            budget: self.clone(),
            bytes,
        }
    }

    pub fn used(&self) -> usize {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let b = &self.budget;
        let mut used = b.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(self.bytes);
        b.status.queued_bytes.fetch_sub(
            (self.bytes as u64).min(b.status.queued_bytes.load(Relaxed)),
            Relaxed,
        );
        b.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn blocks_until_bytes_are_released_and_lets_one_oversize_item_pass() {
        let status = Arc::new(IngestStatus::new(1));
        let budget = ByteBudget::new(100, status.clone());
        let a = budget.acquire(60);
        let (tx, rx) = std::sync::mpsc::channel();
        let b2 = budget.clone();
        let waiter = std::thread::spawn(move || {
            let p = b2.acquire(60);
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
        assert_eq!(budget.used(), 0);
        let huge = budget.acquire(1000);
        assert_eq!(budget.used(), 1000, "an oversize item passes alone");
        drop(huge);
        assert_eq!(status.queued_bytes.load(Relaxed), 0);
    }
}
