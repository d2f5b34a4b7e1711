//! `POST /events`: one event, or a JSON array of them, in the envelope receivers see,
//! each validated against its Avro schema, its sensitive fields sealed, produced to
//! `events` keyed by its transfer or resource id, and answered once Kafka acknowledged
//! it: 202 with its id for one event; for an array, one result per event in order
//! (202 when all were accepted, 207 when some were not), its events sent together so a
//! batch costs about one Kafka round trip.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use rdkafka::message::OwnedHeaders;
use serde_json::Value;
use service_kit::telemetry;
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::AppState;
use crate::api::{json_body, json_response};
use crate::bodies::{Accepted, BatchResults, ErrorBody, EventResult, EventsAccepted};
use crate::error::ApiError;
use crate::framing;
use crate::requests::EventsInput;

/// The most events one request may carry.
pub const MAX_BATCH: usize = 1000;

/// Accepts one event, or an array of events. Traced as a server span that continues
/// the caller's `traceparent` (a transfer engine's own trace) or starts a trace.
#[utoipa::path(
    post,
    path = "/events",
    operation_id = "send_events",
    tag = "events",
    summary = "Send one event, or an array of up to 1,000",
    description = "Each event is checked against its type's Avro schema, its sensitive fields sealed, and written to the `events` topic; the answer comes once Kafka acknowledged it.",
    request_body = EventsInput,
    params(("traceparent" = Option<String>, Header, nullable = false, description = "W3C trace context: the request's span continues the caller's trace.")),
    responses(
        (status = 202, description = "Accepted: the event's id, or for an array every event's result", body = EventsAccepted),
        (status = 207, description = "An array of which some events were refused: one result per event, in order", body = BatchResults),
        (status = 400, description = "Not JSON, or an event that does not match its schema", body = ErrorBody),
        (status = 413, description = "The body, or the record, is larger than allowed", body = ErrorBody),
        (status = 503, description = "Kafka did not take the event in time", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let span = if telemetry::enabled() {
        let span = tracing::info_span!(
            target: telemetry::TARGET,
            "POST /events",
            otel.kind = "server",
            http.request.method = "POST",
            http.route = "/events",
            url.path = "/events",
        );
        telemetry::set_parent(&span, telemetry::http_context(&headers));
        span
    } else {
        tracing::Span::none()
    };
    let answer = accept(&state, body, &span).instrument(span.clone()).await;
    if !span.is_none() {
        let status = match &answer {
            Ok(response) => response.status(),
            Err(e) => e.status(),
        };
        span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.set_attribute("error.type", status.as_u16().to_string());
            span.set_status(opentelemetry::trace::Status::error(""));
        }
    }
    answer
}

async fn accept(state: &AppState, body: Body, span: &Span) -> Result<Response, ApiError> {
    // Every event of the request carries the request span's context.
    let trace = telemetry::span_kafka_headers(span);
    let trace = trace.as_ref();
    match json_body(body, state.max_body_bytes).await? {
        Value::Array(events) => create_many(state, &events, trace).await,
        input => {
            let id = ingest(state, &input, trace).await?;
            Ok(json_response(
                StatusCode::ACCEPTED,
                EventsAccepted::One(Accepted { id }),
            ))
        }
    }
}

/// Every event of the array sent at once; one result each, in order.
async fn create_many(
    state: &AppState,
    events: &[Value],
    trace: Option<&OwnedHeaders>,
) -> Result<Response, ApiError> {
    if events.is_empty() {
        return Err(ApiError::invalid(
            "events",
            "an empty array: send at least one event",
        ));
    }
    if events.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "events",
            format!("at most {MAX_BATCH} events a request"),
        ));
    }
    let sends = events.iter().map(|input| ingest(state, input, trace));
    let outcomes = futures::future::join_all(sends).await;
    let all_accepted = outcomes.iter().all(Result::is_ok);
    let results: Vec<EventResult> = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Ok(id) => EventResult {
                status: StatusCode::ACCEPTED.as_u16(),
                id: Some(id),
                error: None,
            },
            Err(e) => EventResult {
                status: e.status().as_u16(),
                id: None,
                error: Some(e.detail()),
            },
        })
        .collect();
    let results = BatchResults { events: results };
    Ok(if all_accepted {
        json_response(StatusCode::ACCEPTED, EventsAccepted::Many(results))
    } else {
        json_response(StatusCode::MULTI_STATUS, results)
    })
}

/// Validates, encodes and produces one event, counted by type and outcome.
async fn ingest(
    state: &AppState,
    input: &Value,
    trace: Option<&OwnedHeaders>,
) -> Result<String, ApiError> {
    let event = prepare(state, input).inspect_err(|_| {
        state.metrics.ingested(None, "invalid");
    })?;
    let event_type = event.event_type.clone();
    let sent = send(state, event, trace).await;
    let outcome = if sent.is_ok() { "accepted" } else { "failed" };
    state.metrics.ingested(Some(&event_type), outcome);
    sent
}

/// Validates and encodes one event, its sensitive fields sealed, framed for `events`.
fn prepare(state: &AppState, input: &Value) -> Result<wire::EncodedEvent, ApiError> {
    let encode_err = |e: wire::WireError| match e {
        wire::WireError::Invalid { field, reason } => ApiError::invalid(field, reason),
        other => {
            tracing::error!(code = other.code(), "cannot encode a valid event");
            ApiError::internal(other.code())
        }
    };
    // Trace text and transfer logs reach Kafka sealed (guarantee 5).
    let mut event = state
        .registry
        .encode_event_json_sealing(input, |id, path, value| {
            service_kit::seal_field(&state.sealer, id, path, value)
        })
        .map_err(encode_err)?;
    event.bytes = framing::frame(state.events_schema_id, std::mem::take(&mut event.bytes))
        .map_err(encode_err)?;
    Ok(event)
}

/// Produces one event and waits for Kafka's acknowledgement; returns its id. The record
/// carries the request span's trace context (`trace`).
async fn send(
    state: &AppState,
    event: wire::EncodedEvent,
    trace: Option<&OwnedHeaders>,
) -> Result<String, ApiError> {
    kafka_io::send_durably(
        &state.producer,
        &state.topics.events,
        event.key.as_bytes(),
        Some(&event.bytes),
        trace,
        &state.shutdown,
    )
    .await
    .map_err(|e| ApiError::from_send(&e))?;
    tracing::debug!(event_id = %event.id, event_type = %event.event_type, "event accepted");
    Ok(event.id)
}
