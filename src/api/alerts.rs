//! Budget alerts: per-project / per-user burn-rate thresholds from the config
//! (`alerts`). A checker compares each threshold with the cost of the last
//! `window_minutes` (from `claude_requests FINAL`, as every cost figure) every
//! `check_interval_s`; a crossing is logged, kept for `/api/alerts` (and the
//! dashboard), and POSTed as JSON to `alerts.webhook`. A threshold alerts once
//! per crossing: it re-arms when the rate falls below it again.

use super::{ApiResult, ApiState, Req};
use crate::config::{AlertThreshold, AlertsSection};
use crate::sink::clickhouse::ChClient;
use anyhow::{Context, Result};
use axum::extract::State;
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Alerts kept for the API (the newest; older ones are in the log).
const KEEP: usize = 200;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Alert {
    pub at: String,
    pub project: String,
    pub user: String,
    pub window_minutes: u32,
    pub cost: f64,
    pub cost_per_hour: f64,
    pub threshold_per_hour: f64,
}

/// Crossings so far, and which thresholds are above their limit now.
#[derive(Default)]
pub struct AlertLog {
    alerts: Mutex<Vec<Alert>>,
    above: Mutex<HashSet<usize>>,
}

impl AlertLog {
    pub fn list(&self) -> Vec<Alert> {
        self.alerts.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Records threshold `i`'s state; the alert if it has just crossed.
    fn update(&self, i: usize, alert: Option<Alert>) -> Option<Alert> {
        let mut above = self.above.lock().ok()?;
        let Some(a) = alert else {
            above.remove(&i);
            return None;
        };
        if !above.insert(i) {
            return None;
        }
        let mut list = self.alerts.lock().ok()?;
        list.push(a.clone());
        let extra = list.len().saturating_sub(KEEP);
        list.drain(..extra);
        Some(a)
    }
}

const WINDOW_COST: &str = "SELECT round(sum(ifNull(cost, 0)), 6) AS cost FROM claude_requests FINAL
    WHERE timestamp >= now64(3) - toIntervalMinute({window:UInt32})
      AND ({project:String} = '' OR project = {project:String})
      AND ({user:String} = '' OR user_name = {user:String})";

/// The cost of threshold `t`'s scope in the window, as an alert when its
/// hourly rate reaches the threshold.
async fn measure(client: &ChClient, window: u32, t: &AlertThreshold) -> Result<Option<Alert>> {
    let (project, user) = (
        t.project.clone().unwrap_or_default(),
        t.user.clone().unwrap_or_default(),
    );
    let params = [
        ("window", Value::from(window)),
        ("project", Value::from(project.clone())),
        ("user", Value::from(user.clone())),
    ];
    let rows = client.query_json(WINDOW_COST, &params).await?;
    let cost = rows
        .first()
        .and_then(|r| r.get("cost"))
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    let rate = cost * 60.0 / f64::from(window.max(1));
    Ok((rate >= t.cost_per_hour).then(|| Alert {
        at: chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        project,
        user,
        window_minutes: window,
        cost,
        cost_per_hour: (rate * 1e6).round() / 1e6,
        threshold_per_hour: t.cost_per_hour,
    }))
}

/// One pass over every threshold: the new crossings (logged and posted).
pub async fn check_once(
    client: &ChClient,
    cfg: &AlertsSection,
    log: &AlertLog,
    http: &reqwest::Client,
) -> Result<Vec<Alert>> {
    let mut new = Vec::new();
    for (i, t) in cfg.thresholds.iter().enumerate() {
        let alert = measure(client, cfg.window_minutes, t).await?;
        let Some(a) = log.update(i, alert) else {
            continue;
        };
        tracing::warn!(project = %a.project, user = %a.user, cost_per_hour = a.cost_per_hour,
            threshold = a.threshold_per_hour, "budget alert: burn rate above threshold");
        if let Some(url) = &cfg.webhook {
            if let Err(e) = post(http, url, &a).await {
                tracing::warn!(error = %format!("{e:#}"), "budget alert webhook failed");
            }
        }
        new.push(a);
    }
    Ok(new)
}

async fn post(http: &reqwest::Client, url: &str, a: &Alert) -> Result<()> {
    http.post(url)
        .json(&json!({"kind": "budget_alert", "alert": a}))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("POST {url}"))?;
    Ok(())
}

/// Checks every `check_interval_s` until `stop` is set (nothing to do
/// without thresholds).
pub fn spawn_checker(
    client: ChClient,
    cfg: AlertsSection,
    log: Arc<AlertLog>,
    stop: Arc<AtomicBool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if cfg.thresholds.is_empty() {
        return None;
    }
    Some(tokio::spawn(async move {
        let http = reqwest::Client::new();
        let every = Duration::from_secs(cfg.check_interval_s.max(1));
        while !stop.load(Ordering::SeqCst) {
            if let Err(e) = check_once(&client, &cfg, &log, &http).await {
                tracing::warn!(error = %format!("{e:#}"), "budget alert check failed");
            }
            let t0 = std::time::Instant::now();
            while t0.elapsed() < every && !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }))
}

/// `/api/alerts`: the crossings the caller's scope may see, newest first.
pub(super) async fn list(State(s): State<ApiState>, req: Req) -> ApiResult {
    let f = super::filters(&req, &["project", "user", "host"], 100)?;
    let mut alerts: Vec<Alert> = s
        .alerts
        .list()
        .into_iter()
        .filter(|a| f.project.is_empty() || a.project == f.project)
        .filter(|a| f.user.is_empty() || a.user == f.user)
        .collect();
    alerts.reverse();
    Ok(Json(json!({"alerts": alerts})))
}
