//! Follows `endpoint-requests`: changes to endpoints that other services ask for (the
//! dispatcher disabling an endpoint that failed for too long), applied through the
//! one writer of `endpoints`. A request names the endpoint version it was judged on
//! and is applied only while the endpoint still has it, so an operator's change made
//! meanwhile (a PATCH, a DELETE) wins over it. Replicas share the work through one
//! consumer group; a request's offset is stored once it is applied or found outdated,
//! so a crash applies it again (at most once in effect: the version has moved on).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use wire::{Endpoint, EndpointRequest};

use crate::AppState;
use crate::endpoints;
use crate::table_writer::{Also, Change, Outcome};

/// The requests' consumer group, shared by producer replicas.
pub(crate) fn group(prefix: &str) -> String {
    format!("{prefix}hookline-producer-endpoint-requests")
}

/// Reads and applies requests until shutdown.
pub(crate) async fn follow(state: Arc<AppState>, consumer: StreamConsumer) {
    loop {
        let message = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            m = consumer.recv() => m,
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading endpoint requests failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let request = message
            .payload()
            .and_then(|p| state.registry.decode::<EndpointRequest>(p).ok());
        match request {
            Some(request) => {
                // Applied, or waited for until shutdown: never skipped on a Kafka failure.
                let mut wait = Duration::from_millis(200);
                while !apply(&state, &request).await {
                    if state.shutdown.is_cancelled() {
                        return;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
            None => tracing::warn!(
                partition = message.partition(),
                offset = message.offset(),
                code = "HL-ENDPOINT-REQUEST-UNREADABLE",
                "an endpoint request cannot be read; skipped"
            ),
        }
        if let Err(e) = consumer.store_offset_from_message(&message) {
            tracing::warn!(error = %e, "cannot store an endpoint request's offset");
        }
    }
}

/// Applies one request; false when Kafka did not take it (to be tried again).
async fn apply(state: &AppState, request: &EndpointRequest) -> bool {
    if request.action != "disable" {
        tracing::warn!(endpoint_id = %request.endpoint_id, action = %request.action, "unknown endpoint request; skipped");
        return true;
    }
    let event = serde_json::json!({"type": "endpoint.disabled", "data": {
        "endpoint_id": request.endpoint_id,
        "reason": request.reason,
        "failing_since": request.failing_since,
    }});
    let encoded = state
        .registry
        .event_from_json(&event)
        .and_then(|(event, bytes)| {
            Ok((event, crate::framing::frame(state.events_schema_id, bytes)?))
        });
    let also = match encoded {
        Ok((event, bytes)) => Also {
            topic: state.topics.events.clone(),
            key: event.key,
            payload: bytes,
        },
        Err(e) => {
            tracing::error!(endpoint_id = %request.endpoint_id, code = e.code(), "cannot encode endpoint.disabled; request skipped");
            return true;
        }
    };
    let outcome = endpoints::change(
        state,
        &request.endpoint_id,
        |current| Ok(disable(current, request.version)),
        Some(&also),
    )
    .await;
    match outcome {
        Ok(Outcome::Put(endpoint)) => {
            tracing::warn!(endpoint_id = %endpoint.id, version = endpoint.version, code = "HL-ENDPOINT-DISABLED", "endpoint disabled at the dispatcher's request; endpoint.disabled emitted");
            true
        }
        Ok(_) => {
            tracing::info!(endpoint_id = %request.endpoint_id, judged_version = request.version, "disable request outdated: the endpoint changed or was deleted since; left as it is");
            true
        }
        Err(e) if e.status().is_server_error() => {
            tracing::warn!(endpoint_id = %request.endpoint_id, status = %e.status(), "disable request not applied yet; retrying");
            false
        }
        Err(e) => {
            tracing::warn!(endpoint_id = %request.endpoint_id, status = %e.status(), "disable request refused; skipped");
            true
        }
    }
}

/// The change a disable request judged on `version` makes: the endpoint marked
/// inactive if it is still that version and active; nothing otherwise.
fn disable(current: Option<Endpoint>, version: i64) -> Change<Endpoint> {
    match current {
        Some(mut endpoint) if endpoint.version == version && endpoint.active => {
            endpoint.active = false;
            endpoint.updated_at = wire::now_rfc3339();
            Change::Put(Box::new(endpoint))
        }
        _ => Change::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(version: i64, active: bool) -> Endpoint {
        Endpoint {
            id: "e1".into(),
            version,
            active,
            ..Endpoint::default()
        }
    }

    #[test]
    fn a_request_applies_only_to_the_version_it_was_judged_on() {
        match disable(Some(endpoint(3, true)), 3) {
            Change::Put(e) => assert!(!e.active && e.version == 3, "{e:?}"),
            _ => panic!("the judged version is disabled"),
        }
        // A PATCH landed after the dispatcher judged: the operator's change stands.
        assert!(matches!(disable(Some(endpoint(4, true)), 3), Change::Keep));
        // Deleted meanwhile: it does not come back.
        assert!(matches!(disable(None, 3), Change::Keep));
        // Already inactive: nothing to write, nothing announced twice.
        assert!(matches!(disable(Some(endpoint(3, false)), 3), Change::Keep));
    }
}
