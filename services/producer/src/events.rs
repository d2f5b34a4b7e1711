//! `POST /events`: one event in the envelope receivers see, validated against its Avro
//! schema, its sensitive fields sealed, produced to `events` keyed by its transfer or
//! resource id, answered 202 once Kafka acknowledged it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use crate::AppState;
use crate::api::{json_body, json_response};
use crate::error::ApiError;

/// Accepts one event.
pub async fn create(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let input = json_body(body, state.max_body_bytes).await?;
    let encode_err = |e: wire::WireError| match e {
        wire::WireError::Invalid { field, reason } => ApiError::invalid(field, reason),
        other => {
            tracing::error!(code = other.code(), "cannot encode a valid event");
            ApiError::internal(other.code())
        }
    };
    let (mut event, mut bytes) = state.registry.event_from_json(&input).map_err(encode_err)?;
    // Trace text and transfer logs reach Kafka sealed (guarantee 5).
    if !service_kit::sensitive_values(&state.registry, &event).is_empty() {
        service_kit::seal_event(&state.sealer, &state.registry, &mut event);
        bytes = state.registry.encode_event(&event).map_err(encode_err)?;
    }
    kafka_io::send_durably(
        &state.producer,
        &state.topics.events,
        event.key.as_bytes(),
        Some(&bytes),
        None,
        &state.shutdown,
    )
    .await
    .map_err(|e| ApiError::from_send(&e))?;
    tracing::debug!(event_id = %event.id, event_type = %event.event_type, "event accepted");
    Ok(json_response(StatusCode::ACCEPTED, json!({"id": event.id})))
}
