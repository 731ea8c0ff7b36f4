//! Live counters shared by the pipeline stages and read by `/healthz`.

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Default)]
pub struct IngestStatus {
    pub started_at_ms: AtomicU64,
    pub lines_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub entries_routed: AtomicU64,
    pub rows_written: AtomicU64,
    pub batches_written: AtomicU64,
    pub dead_letters: AtomicU64,
    pub redactions: AtomicU64,
    pub insert_failures: AtomicU64,
    pub queue_capacity: AtomicU64,
    /// Rows accepted by the sink but not yet stored.
    pub pending_rows: AtomicU64,
    /// When the oldest not-yet-stored row was read (0 = nothing pending).
    pub oldest_pending_ms: AtomicU64,
    pub last_line_ms: AtomicU64,
    pub last_insert_ms: AtomicU64,
    pub caught_up: AtomicBool,
    /// Set while inserts fail (ClickHouse down); cleared on success.
    pub clickhouse_down: AtomicBool,
    /// Why the sink is holding rows back (storage full, spool unwritable ...);
    /// `None` when it is storing normally.
    pub degraded_reason: Mutex<Option<String>>,
    /// Lines read by the tailer but not yet handed to the writer.
    pub lines_in_flight: AtomicU64,
    /// Bytes held by the bounded queues (accounted by their byte budgets).
    pub queued_bytes: AtomicU64,
    /// Encoded bytes of the batch the writer is building or storing.
    pub batch_bytes: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    pub rules_generation: AtomicU64,
    /// Rows stored per table (for `/metrics`).
    pub rows_by_table: Mutex<BTreeMap<String, u64>>,
    /// The embedded engine's child process (unset in server mode).
    pub engine: OnceLock<Arc<EngineHealth>>,
}

/// The embedded engine's child, as its supervisor sees it.
#[derive(Debug, Default)]
pub struct EngineHealth {
    pub up: AtomicBool,
    pub restarts: AtomicU64,
    pub last_exit: Mutex<Option<String>>,
}

impl EngineHealth {
    pub fn set_last_exit(&self, why: String) {
        if let Ok(mut g) = self.last_exit.lock() {
            *g = Some(why);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineSnapshot {
    pub up: bool,
    pub restarts: u64,
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusSnapshot {
    pub status: &'static str,
    pub uptime_s: u64,
    pub lines_read: u64,
    pub bytes_read: u64,
    pub entries_routed: u64,
    pub rows_written: u64,
    pub batches_written: u64,
    pub dead_letters: u64,
    pub redactions: u64,
    pub insert_failures: u64,
    pub queue_depth: u64,
    pub queue_capacity: u64,
    pub pending_rows: u64,
    /// How long the oldest row read but not yet stored has been waiting.
    pub ingestion_lag_ms: u64,
    pub last_line_age_ms: Option<u64>,
    pub last_insert_age_ms: Option<u64>,
    pub caught_up: bool,
    pub clickhouse_down: bool,
    pub degraded_reason: Option<String>,
    pub lines_in_flight: u64,
    pub queued_bytes: u64,
    pub batch_bytes: u64,
    pub last_error: Option<String>,
    pub rules_generation: u64,
    pub embedded_engine: Option<EngineSnapshot>,
}

impl IngestStatus {
    pub fn new(queue_capacity: usize) -> IngestStatus {
        let s = IngestStatus::default();
        s.started_at_ms.store(now_ms(), Relaxed);
        s.queue_capacity.store(queue_capacity as u64, Relaxed);
        s
    }

    pub fn set_error(&self, e: Option<String>) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = e;
        }
    }

    pub fn add_table_rows(&self, table: &str, rows: u64) {
        if let Ok(mut g) = self.rows_by_table.lock() {
            *g.entry(table.to_string()).or_default() += rows;
        }
    }

    pub fn set_degraded(&self, reason: Option<String>) {
        if let Ok(mut g) = self.degraded_reason.lock() {
            *g = reason;
        }
    }

    pub fn snapshot(&self) -> StatusSnapshot {
        let now = now_ms();
        let age = |v: u64| (v != 0).then(|| now.saturating_sub(v));
        let oldest = self.oldest_pending_ms.load(Relaxed);
        let engine = self.engine.get().map(|e| EngineSnapshot {
            up: e.up.load(Relaxed),
            restarts: e.restarts.load(Relaxed),
            last_exit: e.last_exit.lock().ok().and_then(|g| g.clone()),
        });
        let down = self.clickhouse_down.load(Relaxed);
        let reason = self.degraded_reason.lock().ok().and_then(|g| g.clone());
        let engine_down = engine.as_ref().is_some_and(|e| !e.up);
        StatusSnapshot {
            status: if down || engine_down || reason.is_some() {
                "degraded"
            } else {
                "ok"
            },
            uptime_s: now.saturating_sub(self.started_at_ms.load(Relaxed)) / 1000,
            lines_read: self.lines_read.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            entries_routed: self.entries_routed.load(Relaxed),
            rows_written: self.rows_written.load(Relaxed),
            batches_written: self.batches_written.load(Relaxed),
            dead_letters: self.dead_letters.load(Relaxed),
            redactions: self.redactions.load(Relaxed),
            insert_failures: self.insert_failures.load(Relaxed),
            // The lines the queues hold: a view of `lines_in_flight`, which
            // the router gives back before the queue's budget (so it never
            // exceeds the capacity the budget enforces).
            queue_depth: self.lines_in_flight.load(Relaxed),
            queue_capacity: self.queue_capacity.load(Relaxed),
            pending_rows: self.pending_rows.load(Relaxed),
            ingestion_lag_ms: if oldest == 0 {
                0
            } else {
                now.saturating_sub(oldest)
            },
            last_line_age_ms: age(self.last_line_ms.load(Relaxed)),
            last_insert_age_ms: age(self.last_insert_ms.load(Relaxed)),
            caught_up: self.caught_up.load(Relaxed),
            clickhouse_down: down,
            degraded_reason: reason,
            lines_in_flight: self.lines_in_flight.load(Relaxed),
            queued_bytes: self.queued_bytes.load(Relaxed),
            batch_bytes: self.batch_bytes.load(Relaxed),
            last_error: self.last_error.lock().ok().and_then(|g| g.clone()),
            rules_generation: self.rules_generation.load(Relaxed),
            embedded_engine: engine,
        }
    }
}

/// Durations measured where no [`IngestStatus`] is at hand (the plugin host,
/// the inserter): process-wide, exported by `/metrics`.
#[derive(Debug)]
pub struct Timings {
    /// One INSERT round trip (per table and attempt), in seconds.
    pub insert_seconds: Histogram,
    /// One WASM plugin call, in seconds.
    pub plugin_call_seconds: Histogram,
}

static TIMINGS: LazyLock<Timings> = LazyLock::new(|| Timings {
    // 1 ms .. ~16 s
    insert_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
    // 10 µs .. ~0.3 s
    plugin_call_seconds: Histogram::new(exponential_buckets(0.00001, 2.0, 15)),
});

pub fn timings() -> &'static Timings {
    &TIMINGS
}
