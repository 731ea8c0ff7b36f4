//! What stands between the network and the queries: a Host allow-list (so a
//! web page cannot reach the API through DNS rebinding), a bound on requests
//! in flight (excess load gets 503 + Retry-After at once instead of queueing
//! until everything times out) and a deadline per request (a stalled
//! ClickHouse gives 503, never a hung client).

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Limits of the API (config `api:`).
#[derive(Debug)]
pub struct Guard {
    /// Host names (without port) requests may be addressed to.
    allowed_hosts: Vec<String>,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
}

impl Guard {
    /// `listen` is the address the API binds; its host is allowed along with
    /// the loopback names and `extra_hosts`.
    pub fn new(
        listen: &str,
        extra_hosts: &[String],
        max_in_flight: usize,
        timeout: Duration,
    ) -> Guard {
        let mut allowed_hosts: Vec<String> = ["localhost", "127.0.0.1", "[::1]", "::1"]
            .iter()
            .map(|h| h.to_string())
            .collect();
        allowed_hosts.push(host_of(listen).to_ascii_lowercase());
        allowed_hosts.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        Guard {
            allowed_hosts,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
            timeout,
        }
    }

    /// Loopback only, defaults otherwise (tests, `serve_api`).
    pub fn loopback() -> Guard {
        Guard::new("127.0.0.1:0", &[], 64, Duration::from_secs(10))
    }

    fn host_allowed(&self, host: Option<&HeaderValue>) -> bool {
        let Some(host) = host.and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let name = host_of(host).to_ascii_lowercase();
        // A wildcard listen address (0.0.0.0, [::]) says nothing about the
        // names clients use: those must be listed in `api.allowed_hosts`.
        self.allowed_hosts
            .iter()
            .any(|a| a == &name && a != "0.0.0.0" && a != "[::]")
    }
}

/// `host[:port]` or `[v6]:port` → the host part.
fn host_of(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    }
}

fn refuse(code: StatusCode, msg: &str, retry_after: Option<u64>) -> Response {
    let mut r = (code, Json(json!({ "error": msg }))).into_response();
    if let Some(s) = retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// The middleware: Host check, then a slot, then the handler under a deadline.
pub async fn guard(State(g): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    if !g.host_allowed(req.headers().get(header::HOST)) {
        tracing::warn!(host = ?req.headers().get(header::HOST), "API request refused: Host not allowed");
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "Host not allowed (add it to api.allowed_hosts)",
            None,
        );
    }
    let Ok(_slot) = g.in_flight.clone().try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight; retry shortly",
            Some(1),
        );
    };
    match tokio::time::timeout(g.timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(
                timeout_ms = g.timeout.as_millis() as u64,
                "API request timed out"
            );
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "request timed out (is ClickHouse stalled?)",
                Some(5),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_checked_without_ports() {
        let g = Guard::new(
            "0.0.0.0:8787",
            &["dash.example.org".into()],
            4,
            Duration::from_secs(1),
        );
        let ok = |h: &str| g.host_allowed(Some(&HeaderValue::from_str(h).unwrap()));
        assert!(ok("127.0.0.1:8787") && ok("localhost") && ok("[::1]:8787") && ok("LOCALHOST:1"));
        assert!(ok("dash.example.org:8787"));
        assert!(
            !ok("evil.example.com:8787"),
            "DNS rebinding names are refused"
        );
        assert!(
            !ok("0.0.0.0:8787"),
            "a wildcard listen address is not a host name"
        );
        assert!(!g.host_allowed(None));
        let g = Guard::new("192.168.1.5:8787", &[], 4, Duration::from_secs(1));
        assert!(g.host_allowed(Some(&HeaderValue::from_static("192.168.1.5:8787"))));
    }
}
