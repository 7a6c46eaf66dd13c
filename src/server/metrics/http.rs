//! `serve --metrics ADDR`: `/metrics` and `/healthz` over plain HTTP, with
//! axum. Plain HTTP because what it serves is counts, not chat, and it
//! belongs on localhost or a management network (docs/operations.md).

use super::Metrics;
use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// What Prometheus is told the text is: prometheus-client writes the
/// OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` and serves `metrics` there in the background, for as long
/// as the runtime runs; returns the address bound (port 0 picks one).
pub async fn start(addr: SocketAddr, metrics: Metrics) -> Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for --metrics"))?;
    let bound = listener
        .local_addr()
        .context("cannot read the metrics address")?;
    let app = Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(healthz))
        .with_state(metrics);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the metrics endpoint stopped: {e}");
        }
    });
    Ok(bound)
}

async fn scrape(State(metrics): State<Metrics>) -> Response {
    // Reading the store's size is a query: off the runtime's threads.
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => {
            tracing::warn!("cannot encode the metrics: {e:#}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn healthz(State(metrics): State<Metrics>) -> Response {
    match metrics.health() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}
