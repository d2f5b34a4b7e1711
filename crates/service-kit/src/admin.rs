//! Starting a service's admin listener ([`admin`] crate) with the readiness every
//! service shares: Kafka answers and the service's topics exist.

use std::net::SocketAddr;
use std::sync::Arc;

use admin::{Readiness, Registry};
use anyhow::Context;
use kafka_io::{KafkaProbe, KafkaSettings};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

/// How often `hookline_ready` is brought up to date.
const READY_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Serves `/health/live`, `/health/ready` and `/metrics` on `addr` until `shutdown`.
/// Readiness probes Kafka for `topics` on every request; the service calls
/// [`Readiness::started`] once its start-up is complete.
pub async fn start_admin(
    addr: &str,
    kafka: &KafkaSettings,
    topics: Vec<String>,
    mut registry: Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<(SocketAddr, Readiness)> {
    let readiness = Readiness::new();
    let ready = Gauge::<i64>::default();
    registry.register(
        "hookline_ready",
        "1 when the service is ready (what /health/ready answers 200 to), checked every 15 s",
        ready.clone(),
    );
    let probe = KafkaProbe::new(kafka, topics).context("creating the Kafka probe")?;
    readiness.probe(
        "kafka",
        Arc::new(move || {
            let probe = probe.clone();
            Box::pin(async move { probe.check().await })
        }),
    );
    let bound = admin::serve(addr, registry, readiness.clone(), shutdown.clone()).await?;
    let (checked, stop) = (readiness.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            ready.set(i64::from(checked.check().await.ready));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(READY_EVERY) => {}
            }
        }
    });
    Ok((bound, readiness))
}
