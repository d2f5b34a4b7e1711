//! Waiting for the Schema Registry, on both paths (webhooks, sensitive traces): the
//! writer schema of a registry id is asked for again, with backoff, while the registry
//! does not answer as it should; each wait is counted and logged now and then.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wire::{EventReader, ReadError, Registry, WireError};

use crate::metrics::RegistryMetrics;

/// Fetches the writer schema of `id` until the registry gives it (`Some(Ok)`) or says
/// the id is unknown (`Some(Err)`: the event's dead letter); `None` at shutdown.
pub(crate) async fn fetch_patiently(
    events: &EventReader,
    registry: &Registry,
    id: u32,
    metrics: &RegistryMetrics,
    shutdown: &CancellationToken,
    (partition, offset): (i32, i64),
) -> Option<Result<(), WireError>> {
    let mut wait = Duration::from_millis(250);
    loop {
        match events.fetch(registry, id).await {
            Ok(()) => return Some(Ok(())),
            Err(ReadError::Wire(e)) => return Some(Err(e)),
            Err(ReadError::Registry(e)) => {
                if metrics.wait(e.code()) {
                    tracing::warn!(partition, offset, code = e.code(), error = %e, retry_in = ?wait, "cannot read an event's writer schema from the Schema Registry; events framed for it wait (logged every 5 s; hookline_renderer_schema_registry_waits_total counts them)");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}
