//! `/metrics`: the engine's counters in the Prometheus / OpenMetrics text
//! format (`prometheus-client`). The ingest figures are read from the same
//! [`IngestStatus`] snapshot `/healthz` shows, at scrape time; the API's own
//! request counts and latencies are kept here.

use crate::sink::status::{timings, IngestStatus, StatusSnapshot};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: String,
}

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// The API's own request counters.
#[derive(Debug)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<EndpointLabel, Histogram, fn() -> Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

/// The label for a request path: the known routes as they are, anything else
/// as `other` (so a scan of random URLs cannot grow the label set).
pub fn endpoint_label(path: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "/",
        "/healthz",
        "/metrics",
        "/api/overview",
        "/api/claude-sessions",
        "/api/claude-tool-usage",
        "/api/claude-file-access",
        "/api/claude-context-trends",
        "/api/claude-cost-analysis",
        "/api/security-events",
        "/api/search",
        "/api/insights/tool-times",
        "/api/insights/redundancy",
        "/api/insights/context",
        "/api/insights/tool-costs",
        "/api/insights/exposure",
        "/api/insights/now",
        "/api/alerts",
    ];
    // One label for every session's replay (ids must not become labels).
    if path.starts_with("/api/claude-session/") {
        return "/api/claude-session/{id}";
    }
    KNOWN
        .iter()
        .find(|k| **k == path)
        .copied()
        .unwrap_or("other")
}

impl ApiMetrics {
    pub fn observe(&self, endpoint: &'static str, status: u16, seconds: f64) {
        let endpoint = endpoint.to_string();
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.clone(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabel { endpoint })
            .observe(seconds);
    }
}

fn counter(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(name, help, ConstCounter::new(v));
}

fn gauge(r: &mut Registry, name: &str, help: &str, v: u64) {
    r.register(name, help, ConstGauge::new(v as i64));
}

/// Every figure of the status snapshot that is a count or a level.
fn register_ingest(r: &mut Registry, s: &StatusSnapshot) {
    counter(
        r,
        "lines_read",
        "Log lines read from the session files",
        s.lines_read,
    );
    counter(
        r,
        "bytes_read",
        "Bytes read from the session files",
        s.bytes_read,
    );
    counter(
        r,
        "entries_routed",
        "Entries routed through the rules",
        s.entries_routed,
    );
    counter(
        r,
        "rows_written",
        "Rows stored in ClickHouse, all tables",
        s.rows_written,
    );
    counter(r, "batches_written", "Batches stored", s.batches_written);
    counter(
        r,
        "dead_letters",
        "Lines or rows kept as dead letters",
        s.dead_letters,
    );
    counter(r, "redactions", "Secrets redacted", s.redactions);
    counter(
        r,
        "insert_failures",
        "Failed INSERT attempts (retried)",
        s.insert_failures,
    );
    gauge(
        r,
        "queue_depth_entries",
        "Lines waiting between the tailer and the writer",
        s.queue_depth,
    );
    gauge(
        r,
        "queue_capacity_entries",
        "Capacity of that queue",
        s.queue_capacity,
    );
    gauge(
        r,
        "pending_rows",
        "Rows accepted by the sink but not yet stored",
        s.pending_rows,
    );
    gauge(
        r,
        "lines_in_flight",
        "Lines read but not yet handed to the writer",
        s.lines_in_flight,
    );
    gauge(
        r,
        "queued_bytes",
        "Bytes held by the bounded queues",
        s.queued_bytes,
    );
    gauge(
        r,
        "batch_bytes",
        "Encoded bytes of the batch being built or stored",
        s.batch_bytes,
    );
    gauge(
        r,
        "unstored_bytes",
        "Bytes read but not yet stored (queued + current batch): the lag in bytes",
        s.queued_bytes + s.batch_bytes,
    );
    r.register_with_unit(
        "ingestion_lag",
        "How long the oldest row read but not yet stored has waited",
        Unit::Seconds,
        ConstGauge::new(s.ingestion_lag_ms as f64 / 1000.0),
    );
    gauge(
        r,
        "caught_up",
        "1 when every file has been read to its end",
        s.caught_up as u64,
    );
    gauge(
        r,
        "clickhouse_down",
        "1 while inserts fail",
        s.clickhouse_down as u64,
    );
    gauge(
        r,
        "degraded",
        "1 when the status is not ok",
        (s.status != "ok") as u64,
    );
    gauge(
        r,
        "rules_generation",
        "Generation of the rules in effect (bumps on reload)",
        s.rules_generation,
    );
    r.register_with_unit(
        "uptime",
        "Time since start",
        Unit::Seconds,
        ConstGauge::new(s.uptime_s as i64),
    );
    if let Some(e) = &s.embedded_engine {
        gauge(
            r,
            "embedded_engine_up",
            "1 while the embedded ClickHouse child runs",
            e.up as u64,
        );
        counter(
            r,
            "embedded_engine_restarts",
            "Restarts of the embedded ClickHouse child",
            e.restarts,
        );
    }
}

/// The whole exposition, ready to send.
pub fn render(status: &IngestStatus, api: &ApiMetrics) -> String {
    let mut root = Registry::with_prefix("claude_ingest");
    register_ingest(&mut root, &status.snapshot());
    let per_table: Family<TableLabel, Counter> = Family::default();
    if let Ok(tables) = status.rows_by_table.lock() {
        for (table, n) in tables.iter() {
            per_table
                .get_or_create(&TableLabel {
                    table: table.clone(),
                })
                .inc_by(*n);
        }
    }
    root.register("table_rows_written", "Rows stored per table", per_table);
    let t = timings();
    root.register_with_unit(
        "insert_duration",
        "One INSERT round trip (per table and attempt)",
        Unit::Seconds,
        t.insert_seconds.clone(),
    );
    root.register_with_unit(
        "plugin_call_duration",
        "One WASM plugin call",
        Unit::Seconds,
        t.plugin_call_seconds.clone(),
    );
    root.register(
        "api_requests",
        "API requests answered, by endpoint and status",
        api.requests.clone(),
    );
    root.register_with_unit(
        "api_request_duration",
        "API request latency by endpoint",
        Unit::Seconds,
        api.latency.clone(),
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &root);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_status_and_api_figures() {
        let status = IngestStatus::new(16);
        status
            .lines_read
            .store(42, std::sync::atomic::Ordering::Relaxed);
        status.add_table_rows("claude_messages", 7);
        let api = ApiMetrics::default();
        api.observe(endpoint_label("/api/overview"), 200, 0.012);
        api.observe(endpoint_label("/no/such/thing"), 404, 0.001);
        let text = render(&status, &api);
        assert!(text.contains("claude_ingest_lines_read_total 42"), "{text}");
        assert!(
            text.contains("claude_ingest_table_rows_written_total{table=\"claude_messages\"} 7"),
            "{text}"
        );
        assert!(
            text.contains(
                "claude_ingest_api_requests_total{endpoint=\"/api/overview\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("endpoint=\"other\""), "{text}");
        assert!(
            text.contains("claude_ingest_queue_capacity_entries 16"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
