//! Starting a service's admin listener ([`admin`] crate) with the readiness every
//! service shares: Kafka answers and the service's topics exist.

use std::net::SocketAddr;
use std::sync::Arc;

use admin::{Readiness, Registry};
use anyhow::Context;
use kafka_io::{KafkaProbe, KafkaSettings};
use tokio_util::sync::CancellationToken;

/// Serves `/health/live`, `/health/ready` and `/metrics` on `addr` until `shutdown`.
/// Readiness probes Kafka for `topics` on every request; the service calls
/// [`Readiness::started`] once its start-up is complete.
pub async fn start_admin(
    addr: &str,
    kafka: &KafkaSettings,
    topics: Vec<String>,
    registry: Registry,
    shutdown: &CancellationToken,
) -> anyhow::Result<(SocketAddr, Readiness)> {
    let readiness = Readiness::new();
    let probe = KafkaProbe::new(kafka, topics).context("creating the Kafka probe")?;
    readiness.probe(
        "kafka",
        Arc::new(move || {
            let probe = probe.clone();
            Box::pin(async move { probe.check().await })
        }),
    );
    let bound = admin::serve(addr, registry, readiness.clone(), shutdown.clone()).await?;
    Ok((bound, readiness))
}
