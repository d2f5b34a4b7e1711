//! `POST /webhooks/{id}/test` and `POST /sensitive-trace-endpoints/{id}/test`: a sample
//! request rendered, signed and sent once through the dispatcher's own client and SSRF
//! guard (`dispatcher::deliver`), and its outcome answered. It never enters the
//! pipeline: no retry, no dead letter. The receiver sees `Hookline-Test: true`, and the
//! attempt log gets the attempt with `test: true`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use dispatcher::deliver;
use dispatcher::guard::Guard;
use dispatcher::retry::{self, AttemptOutcome, Decision};
use rdkafka::producer::FutureRecord;
use serde_json::{Map, Value};
use wire::{DeliveryAttempt, Endpoint, Header, RenderedDelivery};

use crate::AppState;
use crate::api::{json_body, json_response};
use crate::bodies::{ErrorBody, SentHeader, SentRequest, TestOutcome, TestResult};
use crate::endpoints::find_kind;
use crate::error::ApiError;
use crate::fields::{MASK, opened, printable, render_error};
use crate::requests::{TestTracesInput, TestWebhookInput};

/// The header that marks a test request for the receiver.
pub const TEST_HEADER: &str = "Hookline-Test";
/// Fields of a webhook test's body.
pub(crate) const WEBHOOK_FIELDS: &[&str] = &["event_type", "event"];
/// Fields of a sensitive-trace endpoint test's body.
pub(crate) const TRACE_FIELDS: &[&str] = &["sensitive_traces"];
/// The shortest value masked in a response excerpt: shorter ones would mask ordinary
/// text.
const MIN_MASKED: usize = 4;

/// The dispatcher's transport, for test requests.
pub struct Tester {
    client: reqwest::Client,
    insecure_client: reqwest::Client,
    guard: Arc<Guard>,
    timeout: Duration,
}

impl Tester {
    /// Clients through the SSRF guard of `allowed_networks` (`HOOKLINE_ALLOWED_NETWORKS`,
    /// as the dispatcher reads it), `timeout` unless the endpoint sets its own.
    pub fn new(allowed_networks: &str, timeout: Duration) -> anyhow::Result<Self> {
        let guard = Arc::new(Guard::parse(allowed_networks).map_err(anyhow::Error::msg)?);
        Ok(Tester {
            client: deliver::client(guard.clone(), timeout, false)?,
            insecure_client: deliver::client(guard.clone(), timeout, true)?,
            guard,
            timeout,
        })
    }
}

/// `POST /webhooks/{id}/test`.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/test",
    operation_id = "test_webhook",
    tag = "webhooks",
    summary = "Send the webhook one test request",
    description = "Renders a sample event of a type the webhook subscribes to (or the one given), signs it as a real delivery and sends it once, through the dispatcher's client and SSRF guard, with `Hookline-Test: true`. Never retried or dead-lettered. The answer is 200 whatever the receiver did: the outcome is in the body.",
    params(("id" = String, Path, description = "The webhook's id")),
    request_body(content = Option<TestWebhookInput>, description = "Optional: an event type, or a whole event"),
    responses(
        (status = 200, description = "The request was made (or refused before it was made): its outcome", body = TestResult),
        (status = 400, description = "A body field is invalid, or the webhook does not subscribe to the event's type", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 413, description = "The body is larger than allowed", body = ErrorBody),
        (status = 503, description = "The `endpoints` table could not be read", body = ErrorBody),
    ),
)]
pub async fn webhook(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let input = optional_object(body, state.max_body_bytes, WEBHOOK_FIELDS).await?;
    let endpoint = find_kind(&state, &id, "webhook", "webhook").await?;
    let event = test_event(&state, &endpoint, &input)?;
    let open = opened(&state, &endpoint)?;
    let compiled = render::compile(open.clone()).map_err(|e| render_error(e, "webhook"))?;
    let mut delivery = render::render(&event, &compiled, &state.environment, &wire::now_rfc3339())
        .map_err(|e| render_error(e, "webhook"))?;
    delivery.delivery_id = uuid::Uuid::now_v7().to_string();
    let outcome = send(&state, delivery, &open).await;
    Ok(json_response(StatusCode::OK, TestResult { test: outcome }))
}

/// `POST /sensitive-trace-endpoints/{id}/test`.
#[utoipa::path(
    post,
    path = "/sensitive-trace-endpoints/{id}/test",
    operation_id = "test_sensitive_trace_endpoint",
    tag = "sensitive-trace-endpoints",
    summary = "Send the endpoint one test request",
    description = "Renders a sample batch of traces (the seed's, or the ones given) as a transfer's one request and sends it once, through the dispatcher's client and SSRF guard, with `Hookline-Test: true`. Never retried or dead-lettered. The answer is 200 whatever the receiver did: the outcome is in the body.",
    params(("id" = String, Path, description = "The endpoint's id")),
    request_body(content = Option<TestTracesInput>, description = "Optional: the traces to send"),
    responses(
        (status = 200, description = "The request was made (or refused before it was made): its outcome", body = TestResult),
        (status = 400, description = "A body field is invalid", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 413, description = "The body is larger than allowed", body = ErrorBody),
        (status = 503, description = "The `endpoints` table could not be read", body = ErrorBody),
    ),
)]
pub async fn trace_endpoint(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    const WRAPPER: &str = "sensitive_trace_endpoint";
    let input = optional_object(body, state.max_body_bytes, TRACE_FIELDS).await?;
    let endpoint = find_kind(&state, &id, "sensitive_trace", "sensitive trace endpoint").await?;
    let traces = match input.get("sensitive_traces") {
        None | Some(Value::Null) => render::SAMPLE_TRACES.to_owned(),
        Some(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_object) => {
            Value::Array(items.clone()).to_string()
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "sensitive_traces",
                "must be a non-empty array of trace objects",
            ));
        }
    };
    let open = opened(&state, &endpoint)?;
    let compiled = render::compile_traces(open.clone()).map_err(|e| render_error(e, WRAPPER))?;
    let transfer_id = format!("test-{}", uuid::Uuid::now_v7());
    let timestamp = render::trace_timestamp(time::OffsetDateTime::now_utc());
    let batch = render::TraceBatch {
        transfer_id: Some(&transfer_id),
        destination_id: "dest-123",
        traces_json: &traces,
        source_ids: &[],
        model_ids: &[],
        timestamp: &timestamp,
        part: 1,
        last_part: true,
        flush_reason: render::FlushReason::Completed,
    };
    let request = render::render_traces(&compiled, &batch, &state.environment)
        .map_err(|e| render_error(e, WRAPPER))?;
    let delivery = request.into_delivery(
        uuid::Uuid::now_v7().to_string(),
        String::new(),
        Some(transfer_id),
        &endpoint,
    );
    let outcome = send(&state, delivery, &open).await;
    Ok(json_response(StatusCode::OK, TestResult { test: outcome }))
}

/// The event a webhook test sends: the one given, a sample of the type given, or a
/// sample of the first type the webhook subscribes to.
fn test_event(
    state: &AppState,
    endpoint: &Endpoint,
    input: &Map<String, Value>,
) -> Result<wire::Event, ApiError> {
    let event = match (input.get("event_type"), input.get("event")) {
        (Some(t), Some(e)) if !t.is_null() && !e.is_null() => {
            return Err(ApiError::invalid(
                "event_type",
                "give event_type or event, not both",
            ));
        }
        (_, Some(e)) if !e.is_null() => {
            state
                .registry
                .event_from_json(e)
                .map_err(|e| match e {
                    wire::WireError::Invalid { field, reason } => {
                        ApiError::invalid(format!("event.{field}").trim_end_matches('.'), reason)
                    }
                    other => ApiError::internal(other.code()),
                })?
                .0
        }
        (Some(Value::String(t)), _) => state.registry.sample_event(t).ok_or_else(|| {
            ApiError::invalid(
                "event_type",
                format!("unknown event type `{}`", printable(t)),
            )
        })?,
        (Some(t), _) if !t.is_null() => {
            return Err(ApiError::invalid("event_type", "must be a string"));
        }
        _ => {
            let first = state
                .registry
                .event_types()
                .into_iter()
                .find(|t| endpoint.events.iter().any(|p| render::type_matches(p, t)))
                .ok_or_else(|| {
                    ApiError::invalid("event_type", "the webhook subscribes to no event type")
                })?;
            state
                .registry
                .sample_event(first)
                .ok_or_else(|| ApiError::internal("HL-API-SAMPLE"))?
        }
    };
    if !endpoint
        .events
        .iter()
        .any(|p| render::type_matches(p, &event.event_type))
    {
        return Err(ApiError::invalid(
            if input.contains_key("event") {
                "event.type"
            } else {
                "event_type"
            },
            "the webhook does not subscribe to this event type",
        ));
    }
    Ok(event)
}

/// Signs and sends `delivery` once, records the attempt in the attempt log, and
/// describes it. `open` is the endpoint with its secrets open, to mask them.
async fn send(state: &AppState, mut delivery: RenderedDelivery, open: &Endpoint) -> TestOutcome {
    delivery.headers.push(Header::new(TEST_HEADER, "true"));
    let tester = &state.tester;
    let timeout = delivery
        .timeout_ms
        .and_then(|ms| u64::try_from(ms).ok())
        .map_or(tester.timeout, Duration::from_millis);
    let (outcome, attempt, signature) = match sign(state, &delivery).await {
        Ok(signature) => {
            let client = if delivery.insecure_tls {
                &tester.insecure_client
            } else {
                &tester.client
            };
            let url = reqwest::Url::parse(&delivery.url);
            let (outcome, attempt) = deliver::attempt(
                client,
                &tester.guard,
                &deliver::Opened::clear(&delivery),
                url,
                &signature,
                1,
                timeout,
            )
            .await;
            (outcome, attempt, signature)
        }
        Err(code) => (
            AttemptOutcome::Invalid,
            wire::Attempt {
                attempt: 0,
                started_at: wire::now_rfc3339(),
                duration_ms: 0,
                status: None,
                error_code: Some(code.to_owned()),
                response: None,
            },
            Vec::new(),
        ),
    };
    let (delivered, would_retry, reason_code) = match retry::decide(&outcome) {
        Decision::Delivered => (true, false, None),
        Decision::Retry { .. } if delivery.single_attempt => {
            (false, false, Some("HL-DELIVERY-FAILED"))
        }
        Decision::Retry { .. } => (false, true, None),
        Decision::Final(code) => (false, false, Some(code)),
    };
    record(state, &delivery, &attempt, delivered).await;
    let hidden = hidden_values(open, &delivery);
    TestOutcome {
        delivery_id: delivery.delivery_id.clone(),
        event_type: delivery.event_type.clone(),
        delivered,
        would_retry,
        reason_code: reason_code.map(str::to_owned),
        status: attempt.status,
        error_code: attempt.error_code.clone(),
        duration_ms: attempt.duration_ms,
        request: SentRequest {
            method: delivery.method.clone(),
            url: dead_letter_ops::redact_url(&delivery.url),
            headers: sent_headers(&delivery, &signature),
        },
        response: attempt.response.as_deref().map(|r| masked(r, &hidden)),
    }
}

/// The signature headers, as the dispatcher makes them; an error code when it cannot sign.
async fn sign(
    state: &AppState,
    delivery: &RenderedDelivery,
) -> Result<Vec<(String, String)>, &'static str> {
    let scheme = signing::Scheme::parse(&delivery.signing_scheme).unwrap_or(signing::Scheme::None);
    let rsa = if scheme == signing::Scheme::PrequelRsa {
        let key = state
            .keys
            .get(service_kit::SIGNING_KEY)
            .ok_or("HL-SIGN-NO-KEY")?;
        Some(service_kit::open_signing_key(&state.sealer, &key).map_err(|_| "HL-SIGN-KEY-OPEN")?)
    } else {
        None
    };
    let (method, url, body, id, secrets) = (
        delivery.method.clone(),
        delivery.url.clone(),
        delivery.body.clone(),
        delivery.delivery_id.clone(),
        delivery.signing_secrets.clone(),
    );
    // An RSA signature is milliseconds of CPU: off the async workers.
    tokio::task::spawn_blocking(move || {
        let request = signing::Request {
            method: &method,
            url: &url,
            body: &body,
            id: &id,
        };
        let keys = signing::Keys {
            rsa: rsa.as_ref(),
            secrets: &secrets,
        };
        signing::sign(scheme, request, keys, time::OffsetDateTime::now_utc()).map_err(|e| e.code())
    })
    .await
    .unwrap_or(Err("HL-SIGN-FAILED"))
}

/// The headers as they went out, the values of sensitive ones (a secret, an API key)
/// masked.
fn sent_headers(delivery: &RenderedDelivery, signature: &[(String, String)]) -> Vec<SentHeader> {
    let Some(map) = deliver::headers(&deliver::Opened::clear(delivery), signature) else {
        return Vec::new();
    };
    map.iter()
        .map(|(name, value)| SentHeader {
            name: name.as_str().to_owned(),
            value: if value.is_sensitive() {
                MASK.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            },
        })
        .collect()
}

/// The values a receiver may echo that must not be shown: the endpoint's secrets and
/// the sensitive headers' values.
fn hidden_values(open: &Endpoint, delivery: &RenderedDelivery) -> Vec<String> {
    let mut hidden: Vec<String> = [&open.secret, &open.api_key, &open.previous_secret]
        .into_iter()
        .flatten()
        .cloned()
        .chain(delivery.sensitive_headers.iter().map(|h| h.value.clone()))
        .filter(|v| v.len() >= MIN_MASKED)
        .collect();
    // Longest first, so a value holding another is masked whole.
    hidden.sort_by_key(|v| std::cmp::Reverse(v.len()));
    hidden
}

/// `text` with every hidden value replaced by the mask.
fn masked(text: &str, hidden: &[String]) -> String {
    hidden.iter().fold(text.to_owned(), |text, value| {
        text.replace(value.as_str(), MASK)
    })
}

/// Writes the attempt to the attempt log, marked as a test; a failure is logged, not
/// answered (the test itself was made).
async fn record(state: &AppState, delivery: &RenderedDelivery, attempt: &wire::Attempt, ok: bool) {
    let entry = DeliveryAttempt {
        test: true,
        ..DeliveryAttempt::of(delivery, attempt, if ok { "delivered" } else { "failed" })
    };
    let Ok(bytes) = state.registry.encode(&entry) else {
        return;
    };
    let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&state.topics.delivery_attempts)
        .key(delivery.endpoint_id.as_bytes())
        .payload(&bytes);
    if let Err((e, _)) = state.producer.send(record, Duration::from_secs(10)).await {
        tracing::warn!(endpoint_id = %delivery.endpoint_id, error = %e, "a test attempt was not written to the attempt log");
    }
}

/// The body as an object holding only `fields`; an empty body is an empty object.
async fn optional_object(
    body: Body,
    limit: usize,
    fields: &[&str],
) -> Result<Map<String, Value>, ApiError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let Value::Object(map) = json_body(Body::from(bytes), limit).await? else {
        return Err(ApiError::malformed("the body must be a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            printable(unknown),
            format!("unknown field; known fields: {}", fields.join(", ")),
        ));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_secrets_are_masked_longest_first() {
        let open = Endpoint {
            secret: Some("s3cr3t-value".into()),
            api_key: Some("key".into()),
            ..Endpoint::default()
        };
        let delivery = RenderedDelivery {
            sensitive_headers: vec![Header::new("Authorization", "Bearer s3cr3t-value")],
            ..RenderedDelivery::default()
        };
        let hidden = hidden_values(&open, &delivery);
        assert_eq!(
            hidden,
            ["Bearer s3cr3t-value", "s3cr3t-value"],
            "short key left out"
        );
        assert_eq!(
            masked("got Bearer s3cr3t-value and s3cr3t-value, key", &hidden),
            "got ****** and ******, key"
        );
    }
}
