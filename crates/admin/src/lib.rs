//! The admin listener every hookline service runs (`HOOKLINE_ADMIN_ADDR`), without a
//! token, for orchestrators and Prometheus:
//!
//! - `GET /health/live`: 200 while the process serves requests;
//! - `GET /health/ready`: 200 when every readiness condition holds and every probe
//!   answers, else 503 with the reasons as JSON;
//! - `GET /metrics`: the service's registry in Prometheus' text format 0.0.4.
//!
//! A service builds one [`Registry`], registers its metrics in it (passed explicitly,
//! never global), and hands it here with its [`Readiness`].

mod readiness;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::encoding::prometheus_text;
pub use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

pub use readiness::{Probe, Readiness};

/// Counts one unit of work in an in-flight gauge for as long as it lives: decremented
/// when dropped, so work abandoned mid-way (a cancelled future) is not left counted.
pub struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InFlight<'a> {
    /// Increments `gauge` until the guard is dropped.
    pub fn count(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct Admin {
    registry: Registry,
    readiness: Readiness,
}

/// Binds `addr` (port 0: any free port) and serves the admin routes until `shutdown`.
/// Returns the bound address; fails at once when the address cannot be bound.
pub async fn serve(
    addr: &str,
    registry: Registry,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("HOOKLINE_ADMIN_ADDR `{addr}` cannot be bound"))?;
    let bound = listener.local_addr()?;
    let app = router(Arc::new(Admin {
        registry,
        readiness,
    }));
    tokio::spawn(async move {
        let stopped = shutdown.clone();
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "the admin listener stopped");
        }
    });
    tracing::info!(addr = %bound, "admin listener (health, metrics)");
    Ok(bound)
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "live" }))
}

async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    let report = admin.readiness.check().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report.to_json())).into_response()
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let mut text = String::with_capacity(16 * 1024);
    match prometheus_text::encode(&mut text, &admin.registry) {
        Ok(()) => (
            [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
            text,
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics cannot be encoded",
        )
            .into_response(),
    }
}
