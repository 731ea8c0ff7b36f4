//! HTTP API and dashboard (the analytics endpoints are being built in this
//! module; /healthz is the part the pipeline depends on).

use crate::sink::clickhouse::ChClient;
use crate::sink::status::IngestStatus;
use anyhow::{Context, Result};
use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use std::future::Future;
use std::sync::Arc;

#[derive(Clone)]
pub struct ApiState {
    pub client: ChClient,
    pub status: Arc<IngestStatus>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn healthz(State(s): State<ApiState>) -> (StatusCode, Json<serde_json::Value>) {
    let snap = s.status.snapshot();
    let ch = s.client.ping().await;
    let ok = ch.is_ok() && !snap.clickhouse_down;
    let mut body = serde_json::to_value(&snap).unwrap_or_default();
    body["clickhouse_reachable"] = serde_json::Value::Bool(ch.is_ok());
    (
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

pub async fn serve(
    addr: &str,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(url = %format!("http://{}", listener.local_addr()?), "dashboard and API listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("API server failed")
}
