//! The API's response bodies as types. Handlers answer with these and the OpenAPI
//! document (`openapi.rs`) describes the same types, so the contract cannot drift from
//! what is sent. Request bodies are read field by field, for errors that name the field
//! (`webhook_fields::apply_fields`); they are described in `requests.rs`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use wire::Endpoint;

use crate::fields::MASK;

/// Every refusal: a stable `HL-…` code, a message that names fields but never echoes a
/// value, and the field at fault when there is one.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "HL-API-INVALID", "message": "missing required field", "field": "webhook.url"}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code (`HL-API-INVALID`, `HL-API-NOT-FOUND`, `HL-KAFKA-UNAVAILABLE`, ...).
    pub code: String,
    /// For people; never holds a value the caller sent.
    pub message: String,
    /// The field (`webhook.url`, `events[3].data`) or header at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` while the process serves.
    #[schema(example = "ok")]
    pub status: String,
}

/// One event accepted.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The event's id (the one given, or a UUIDv7).
    pub id: String,
}

/// A batch of events: one result per event, in order.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchResults {
    /// In the order of the request.
    pub events: Vec<EventResult>,
}

/// 202 to `POST /events`: `{"id"}` for one event, `{"events": [...]}` for an array.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EventsAccepted {
    /// One event.
    One(Accepted),
    /// An array of events, all accepted.
    Many(BatchResults),
}

/// One event of a batch: `status` 202 with its `id`, or its own error status and error.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResult {
    /// 202 when accepted; otherwise the status a single request would have had.
    pub status: u16,
    /// When accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// When refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// A webhook as the API shows it: `api_key` and `secret` masked (`******`) when set.
#[derive(Debug, Serialize, ToSchema)]
pub struct Webhook {
    /// Its id (UUID).
    pub id: String,
    /// 1 to 200 characters.
    pub name: String,
    /// How requests are shaped (`generic_post`, `slack`, `pagerduty`, ...).
    pub vendor: String,
    /// Where requests go: a URL or a URL template.
    pub url: String,
    /// Event types (`transfer.error`), prefixes (`source.*`) or `*`.
    pub events: Vec<String>,
    /// `******` when set.
    pub api_key: Option<String>,
    /// `******` when set.
    pub secret: Option<String>,
    /// How deliveries are signed.
    pub signing_scheme: String,
    /// Inactive webhooks receive nothing.
    pub active: bool,
    /// Free text.
    pub description: Option<String>,
    /// HTTP method of templated vendors.
    pub method: Option<String>,
    /// Header name to value template (templated vendors).
    #[schema(value_type = BTreeMap<String, String>)]
    pub headers: Map<String, Value>,
    /// Header lines template (templated vendors).
    pub header_template: Option<String>,
    /// Body template (templated vendors).
    pub body_template: Option<String>,
    /// `transfer.*` events only when the transfer ended so: `success`, `failure`.
    pub triggers: Vec<String>,
    /// Transfer events only for these destinations (none: all).
    pub destination_ids: Vec<String>,
    /// Transfer events only for these sources (none: all).
    pub source_ids: Vec<String>,
    /// Transfer events only for these models (none: all).
    pub model_ids: Vec<String>,
    /// One attempt's timeout; null: the dispatcher's.
    pub timeout_ms: Option<i32>,
    /// Whether the receiver's certificate is verified.
    pub validate_tls: bool,
    /// Whether failed attempts are retried.
    pub retry_on_failure: bool,
    /// Delays between attempts (`0s,30s,5m`); null: the dispatcher's.
    pub retry_schedule: Option<String>,
    /// Requests in flight at once; null: the dispatcher's.
    pub max_in_flight: Option<i32>,
    /// Requests per second; null: no limit.
    pub max_rps: Option<i32>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Bumped by every change; its `ETag` is `"<version>"`.
    pub version: i64,
}

impl Webhook {
    /// `endpoint` as shown: its secrets masked.
    pub fn of(endpoint: &Endpoint) -> Self {
        Webhook {
            id: endpoint.id.clone(),
            name: endpoint.name.clone(),
            vendor: endpoint.vendor.clone(),
            url: endpoint.url.clone(),
            events: endpoint.events.clone(),
            api_key: masked(endpoint.api_key.as_ref()),
            secret: masked(endpoint.secret.as_ref()),
            signing_scheme: endpoint.signing_scheme.clone(),
            active: endpoint.active,
            description: endpoint.description.clone(),
            method: endpoint.method.clone(),
            headers: endpoint
                .headers
                .iter()
                .map(|h| (h.name.clone(), Value::String(h.value.clone())))
                .collect(),
            header_template: endpoint.header_template.clone(),
            body_template: endpoint.body_template.clone(),
            triggers: endpoint.triggers.clone(),
            destination_ids: endpoint.destination_ids.clone(),
            source_ids: endpoint.source_ids.clone(),
            model_ids: endpoint.model_ids.clone(),
            timeout_ms: endpoint.timeout_ms,
            validate_tls: !endpoint.insecure_tls,
            retry_on_failure: !endpoint.single_attempt,
            retry_schedule: endpoint.retry_schedule.clone(),
            max_in_flight: endpoint.max_in_flight,
            max_rps: endpoint.max_rps,
            created_at: endpoint.created_at.clone(),
            updated_at: endpoint.updated_at.clone(),
            version: endpoint.version,
        }
    }
}

/// `{"webhook": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookBody {
    /// The webhook.
    pub webhook: Webhook,
    /// A `standard_webhooks` secret generated for this webhook: shown this once only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_secret: Option<String>,
}

/// A deleted webhook, as it was.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeleted {
    /// The webhook as it was.
    pub webhook: Webhook,
    /// Always true.
    pub deleted: bool,
}

/// `GET /webhooks`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    /// Oldest first.
    pub webhooks: Vec<Webhook>,
    /// Pass it as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A sensitive-trace endpoint as the API shows it: `secret` masked when set.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceEndpoint {
    /// Its id (UUID).
    pub id: String,
    /// 1 to 200 characters.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Where a transfer's traces go: a URL or a URL template.
    pub url: String,
    /// `******` when set.
    pub secret: Option<String>,
    /// Header lines template; null: `Content-Type` and `Authorization: Bearer` the secret.
    pub header_template: Option<String>,
    /// Body template; null: the seed's default body.
    pub body_template: Option<String>,
    /// Whether failed attempts are retried.
    pub retry_on_failure: bool,
    /// Delays between attempts; null: the dispatcher's.
    pub retry_schedule: Option<String>,
    /// Requests in flight at once; null: the dispatcher's.
    pub max_in_flight: Option<i32>,
    /// Requests per second; null: no limit.
    pub max_rps: Option<i32>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Bumped by every change; its `ETag` is `"<version>"`.
    pub version: i64,
}

impl TraceEndpoint {
    /// `endpoint` as shown: its secret masked.
    pub fn of(endpoint: &Endpoint) -> Self {
        TraceEndpoint {
            id: endpoint.id.clone(),
            name: endpoint.name.clone(),
            description: endpoint.description.clone(),
            url: endpoint.url.clone(),
            secret: masked(endpoint.secret.as_ref()),
            header_template: endpoint.header_template.clone(),
            body_template: endpoint.body_template.clone(),
            retry_on_failure: !endpoint.single_attempt,
            retry_schedule: endpoint.retry_schedule.clone(),
            max_in_flight: endpoint.max_in_flight,
            max_rps: endpoint.max_rps,
            created_at: endpoint.created_at.clone(),
            updated_at: endpoint.updated_at.clone(),
            version: endpoint.version,
        }
    }
}

/// `{"sensitive_trace_endpoint": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceEndpointBody {
    /// The endpoint.
    pub sensitive_trace_endpoint: TraceEndpoint,
}

/// A deleted sensitive-trace endpoint, as it was.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceEndpointDeleted {
    /// The endpoint as it was.
    pub sensitive_trace_endpoint: TraceEndpoint,
    /// Always true.
    pub deleted: bool,
}

/// `GET /sensitive-trace-endpoints`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceEndpointList {
    /// Oldest first.
    pub sensitive_trace_endpoints: Vec<TraceEndpoint>,
    /// Pass it as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

fn masked(value: Option<&String>) -> Option<String> {
    value.map(|_| MASK.to_owned())
}

/// `GET /webhooks/{id}/deliveries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<DeliveryView>,
    /// False when the attempt log could not be read up to the request within 5 s: the
    /// latest attempts may be missing.
    pub caught_up: bool,
}

/// A delivery and its recent attempts. Times, statuses and codes only.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The delivery's id (the same on every attempt and replay).
    pub delivery_id: String,
    /// Its event.
    pub event_id: String,
    /// That event's type.
    pub event_type: String,
    /// The latest attempt's outcome: `delivered`, `retrying` or `dead_lettered` (of a
    /// test: `delivered` or `failed`).
    pub status: String,
    /// Oldest first.
    pub attempts: Vec<crate::attempt_index::Attempt>,
    /// RFC 3339.
    pub last_attempt_at: String,
    /// The dead letter this delivery replays, when it does.
    pub replay_of: Option<String>,
    /// A test delivery (`POST /webhooks/{id}/test`): sent once, never retried.
    pub test: bool,
}

/// `{"dead_letter": {...}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterBody {
    /// The dead letter, redacted.
    pub dead_letter: dead_letter_ops::Shown,
}

/// The webhook signing key's public half.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublicKey {
    /// Key id, sent in each signed request.
    pub kid: String,
    /// `RSASSA-PKCS1-v1_5-SHA256`.
    pub algorithm: String,
    /// PEM (SubjectPublicKeyInfo).
    pub public_key: String,
    /// RFC 3339.
    pub created_at: String,
    /// Keys rotated out recently, newest first: deliveries signed just before a
    /// rotation still verify.
    pub previous_keys: Vec<RetiredKey>,
}

/// A key rotated out.
#[derive(Debug, Serialize, ToSchema)]
pub struct RetiredKey {
    /// Key id.
    pub kid: String,
    /// PEM.
    pub public_key: String,
    /// RFC 3339.
    pub retired_at: String,
}

/// What the tables hold sealed, by master key.
#[derive(Debug, Serialize, ToSchema)]
pub struct MasterKeys {
    /// The key new values are sealed under.
    pub sealing_key: String,
    /// Every key values can be opened with.
    pub opening_keys: Vec<String>,
    /// Table (`endpoints`, `keys`) to key id to sealed values.
    pub sealed_values: BTreeMap<String, BTreeMap<String, u64>>,
    /// Sealed values not under `sealing_key`: what a reseal would rewrite.
    pub sealed_under_other_keys: u64,
}

/// What a reseal did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResealReport {
    /// Records rewritten under the sealing key.
    pub resealed: u64,
    /// Records that could not be rewritten, and why.
    pub failed: Vec<ResealFailure>,
    /// The census after the reseal.
    pub after: MasterKeys,
}

/// A record a reseal could not rewrite.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResealFailure {
    /// `endpoints` or `keys`.
    pub table: String,
    /// The record's key.
    pub key: String,
    /// Why (a code; no value).
    pub reason: String,
}

/// What a test request came to.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// The outcome.
    pub test: TestOutcome,
}

/// One test request: what was sent and what came back.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestOutcome {
    /// A fresh id, sent as `Hookline-Delivery-Id` (and `webhook-id` for Standard Webhooks).
    pub delivery_id: String,
    /// The sample's event type.
    pub event_type: String,
    /// The receiver answered 2xx.
    pub delivered: bool,
    /// A real delivery would be retried after this outcome.
    pub would_retry: bool,
    /// The dead-letter code a real delivery would get now, when it would not be retried.
    pub reason_code: Option<String>,
    /// The receiver's status, when it answered.
    pub status: Option<i32>,
    /// `HL-HTTP-TIMEOUT`, `HL-HTTP-CONNECT`, `HL-DELIVERY-REFUSED` (the SSRF guard),
    /// ... when it did not.
    pub error_code: Option<String>,
    /// How long the attempt took.
    pub duration_ms: i64,
    /// The request as it went out.
    pub request: SentRequest,
    /// The first KiB of the receiver's answer, any of the endpoint's secrets in it
    /// masked.
    pub response: Option<String>,
}

/// A request as sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentRequest {
    /// HTTP method.
    pub method: String,
    /// The URL, query values redacted.
    pub url: String,
    /// Every header sent, in order; values that carry a secret are `******`.
    pub headers: Vec<SentHeader>,
}

/// A header as sent.
#[derive(Debug, Serialize, ToSchema)]
pub struct SentHeader {
    /// Its name, lower case.
    pub name: String,
    /// Its value, or `******`.
    pub value: String,
}
