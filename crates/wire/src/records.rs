//! The internal records the services exchange through Kafka, as typed Rust values.
//! Each mirrors one schema in `schemas/`; a test round-trips each through the registry.

use serde::{Deserialize, Serialize};

/// A Rust type written with one record schema of the registry.
pub trait Record {
    /// The schema's full name, e.g. `hookline.internal.Endpoint`.
    const FULL_NAME: &'static str;
}

/// An endpoint's configuration: the value of the compacted `endpoints` topic.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Endpoint id (UUID), also the record key.
    pub id: String,
    /// What kind of endpoint: `webhook` for now.
    pub kind: String,
    /// Human name.
    pub name: String,
    /// Delivery vendor, e.g. `generic_post`.
    pub vendor: String,
    /// Target URL.
    pub url: String,
    /// Subscribed event types.
    pub events: Vec<String>,
    /// API key sent to the receiver. Sensitive.
    pub api_key: Option<String>,
    /// Inactive endpoints get nothing.
    pub active: bool,
    /// Free text.
    pub description: Option<String>,
    /// HTTP method; `None`: the vendor's.
    pub method: Option<String>,
    /// Extra headers; values are templates.
    pub headers: Vec<HeaderTemplate>,
    /// Template of `Key: Value` header lines.
    pub header_template: Option<String>,
    /// Template of the body.
    pub body_template: Option<String>,
    /// `.Secret` of the templates. Sensitive.
    pub secret: Option<String>,
    /// Empty: every event; else any of `success`, `failure`.
    pub triggers: Vec<String>,
    /// Empty: any destination; else only events about these.
    pub destination_ids: Vec<String>,
    /// Empty: any source; else only events about these.
    pub source_ids: Vec<String>,
    /// Empty: any model; else only events about these.
    pub model_ids: Vec<String>,
    /// `prequel_rsa`, `standard_webhooks`, `fivetran_hmac`, `dataprep_hmac` or `none`.
    pub signing_scheme: String,
    /// The secret before the last rotation (sealed). Sensitive.
    pub previous_secret: Option<String>,
    /// Until when `previous_secret` still signs (RFC 3339).
    pub previous_secret_until: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// Timeout of one attempt in ms; `None`: the dispatcher's default.
    pub timeout_ms: Option<i32>,
    /// Do not verify the receiver's TLS certificate (the API's `validate_tls: false`).
    pub insecure_tls: bool,
    /// One attempt only (the API's `retry_on_failure: false`).
    pub single_attempt: bool,
    /// Retry delays, comma-separated; `None`: the dispatcher's schedule.
    pub retry_schedule: Option<String>,
    /// Concurrency limit per dispatcher; `None`: the dispatcher's default.
    pub max_in_flight: Option<i32>,
    /// Requests per second per dispatcher; `None`: no limit.
    pub max_rps: Option<i32>,
    /// Incremented by each write (the producer is the one writer); the API's ETag.
    /// 0: written before versions existed.
    pub version: i64,
}

impl Record for Endpoint {
    const FULL_NAME: &'static str = "hookline.internal.Endpoint";
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("vendor", &self.vendor)
            .field("events", &self.events)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("active", &self.active)
            .field("method", &self.method)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A header whose value is a template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderTemplate {
    /// Header name.
    pub name: String,
    /// Go text/template of the value.
    pub value: String,
}

/// One HTTP header.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: String,
}

impl Header {
    /// A header from name and value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl std::fmt::Debug for Header {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.value)
    }
}

/// One HTTP request to make: the value of `rendered-deliveries`, keyed by endpoint id.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RenderedDelivery {
    /// Stable id from (event id, endpoint id): the same on every attempt and replay.
    pub delivery_id: String,
    /// The event it was rendered from.
    pub event_id: String,
    /// That event's type.
    pub event_type: String,
    /// The endpoint it goes to.
    pub endpoint_id: String,
    /// RFC 3339.
    pub rendered_at: String,
    /// HTTP method.
    pub method: String,
    /// Absolute URL.
    pub url: String,
    /// Headers safe to log.
    pub headers: Vec<Header>,
    /// Headers that carry secrets (values sealed): never logged.
    pub sensitive_headers: Vec<Header>,
    /// How the dispatcher signs each attempt.
    pub signing_scheme: String,
    /// Sealed HMAC secrets, current first.
    pub signing_secrets: Vec<String>,
    /// The body holds a secret and is sealed (`hl1:` text).
    pub body_sealed: bool,
    /// Request body.
    #[serde(with = "apache_avro::serde::bytes")]
    pub body: Vec<u8>,
    /// The transfer whose sensitive traces the request carries.
    pub transfer_id: Option<String>,
    /// Timeout of one attempt in ms; `None`: the dispatcher's default.
    pub timeout_ms: Option<i32>,
    /// Do not verify the receiver's TLS certificate (the API's `validate_tls: false`).
    pub insecure_tls: bool,
    /// One attempt only (the API's `retry_on_failure: false`).
    pub single_attempt: bool,
    /// The endpoint's retry delays, comma-separated; `None`: the dispatcher's schedule.
    pub retry_schedule: Option<String>,
    /// The endpoint's concurrency limit per dispatcher; `None`: the dispatcher's default.
    pub max_in_flight: Option<i32>,
    /// The endpoint's requests per second per dispatcher; `None`: no limit.
    pub max_rps: Option<i32>,
    /// Unix ms before which the next attempt must not start (records in retry tiers).
    pub due_at_ms: Option<i64>,
    /// The attempts made so far (responses sealed); empty on first delivery and replay.
    pub attempts: Vec<Attempt>,
    /// The dead letter this delivery replays, if any.
    pub replay_of: Option<String>,
}

impl RenderedDelivery {
    /// Takes the endpoint's delivery policy: timeout, TLS check, retries and limits.
    pub fn with_policy_of(mut self, endpoint: &Endpoint) -> Self {
        self.timeout_ms = endpoint.timeout_ms;
        self.insecure_tls = endpoint.insecure_tls;
        self.single_attempt = endpoint.single_attempt;
        self.retry_schedule.clone_from(&endpoint.retry_schedule);
        self.max_in_flight = endpoint.max_in_flight;
        self.max_rps = endpoint.max_rps;
        self
    }
}

impl Record for RenderedDelivery {
    const FULL_NAME: &'static str = "hookline.internal.RenderedDelivery";
}

impl std::fmt::Debug for RenderedDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderedDelivery")
            .field("delivery_id", &self.delivery_id)
            .field("event_id", &self.event_id)
            .field("event_type", &self.event_type)
            .field("endpoint_id", &self.endpoint_id)
            .field("method", &self.method)
            .field("headers", &self.headers)
            .field("sensitive_headers", &"[redacted]")
            .field("body_len", &self.body.len())
            .field("transfer_id", &self.transfer_id)
            .field("attempts", &self.attempts)
            .field("due_at_ms", &self.due_at_ms)
            .finish_non_exhaustive()
    }
}

/// One delivery attempt, as kept in a dead letter.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based attempt number.
    pub attempt: i32,
    /// RFC 3339.
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// HTTP status, when there was a response.
    pub status: Option<i32>,
    /// `HL-…` code, when there was no response.
    pub error_code: Option<String>,
    /// The response body's first bytes, sealed.
    pub response: Option<String>,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("attempt", &self.attempt)
            .field("started_at", &self.started_at)
            .field("duration_ms", &self.duration_ms)
            .field("status", &self.status)
            .field("error_code", &self.error_code)
            .field("response_len", &self.response.as_ref().map(String::len))
            .finish()
    }
}

/// What could not be delivered or read: the value of `dead-letter`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Unique id of this dead letter.
    pub id: String,
    /// Stable `HL-…` code.
    pub reason_code: String,
    /// Readable reason; never holds secrets or trace text.
    pub reason: String,
    /// RFC 3339.
    pub failed_at: String,
    /// `renderer` or `dispatcher`.
    pub stage: String,
    /// Where the failed record was read.
    pub source_topic: String,
    /// Its partition.
    pub source_partition: i32,
    /// Its offset.
    pub source_offset: i64,
    /// The event, when known.
    pub event_id: Option<String>,
    /// The endpoint, when known.
    pub endpoint_id: Option<String>,
    /// The delivery id, when known.
    pub delivery_id: Option<String>,
    /// The request that could not be delivered.
    pub delivery: Option<RenderedDelivery>,
    /// The raw record value when it could not be decoded. Sensitive.
    #[serde(with = "apache_avro::serde::bytes_opt")]
    pub payload: Option<Vec<u8>>,
    /// Every attempt made.
    pub attempts: Vec<Attempt>,
}

impl Record for DeadLetter {
    const FULL_NAME: &'static str = "hookline.internal.DeadLetter";
}

impl std::fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("reason_code", &self.reason_code)
            .field("reason", &self.reason)
            .field("stage", &self.stage)
            .field("event_id", &self.event_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("delivery", &self.delivery)
            .field(
                "payload",
                &self
                    .payload
                    .as_ref()
                    .map(|p| format!("[redacted; {} bytes]", p.len())),
            )
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

/// The account's webhook signing key: the value of the `keys` topic under `webhook-signing`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct SigningKey {
    /// Key id.
    pub kid: String,
    /// `RSASSA-PKCS1-v1_5-SHA256`.
    pub algorithm: String,
    /// The public key, PEM.
    pub public_key_pem: String,
    /// PKCS#8 DER in base64, sealed with the master key. Sensitive.
    pub private_key_sealed: String,
    /// RFC 3339.
    pub created_at: String,
    /// Public keys rotated out, still published.
    pub previous_keys: Vec<RetiredKey>,
}

/// A public key rotated out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredKey {
    /// Key id.
    pub kid: String,
    /// PEM.
    pub public_key_pem: String,
    /// RFC 3339.
    pub retired_at: String,
}

impl Record for SigningKey {
    const FULL_NAME: &'static str = "hookline.internal.SigningKey";
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("private_key_sealed", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// One sensitive trace of an open transfer: the value of the sensitive-trace changelog,
/// keyed `<transfer_id>#<seq>`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregatedTrace {
    /// The transfer.
    pub transfer_id: String,
    /// 0-based arrival order within the transfer.
    pub seq: i32,
    /// The event it came from.
    pub event_id: String,
    /// The transfer's destination.
    pub destination_id: String,
    /// The trace's source, if any.
    pub source_id: Option<String>,
    /// The trace's model, if any.
    pub model_id: Option<String>,
    /// Unix ms when the transfer's first trace was seen.
    pub opened_at_ms: i64,
    /// The trace object as JSON, sealed. Sensitive.
    pub trace_sealed: String,
}

impl Record for AggregatedTrace {
    const FULL_NAME: &'static str = "hookline.internal.AggregatedTrace";
}

impl std::fmt::Debug for AggregatedTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregatedTrace")
            .field("transfer_id", &self.transfer_id)
            .field("seq", &self.seq)
            .field("event_id", &self.event_id)
            .field("trace_sealed", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// One attempt's outcome: the value of the attempt log `delivery-attempts`, keyed by
/// endpoint id. Never holds a payload or a response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// The delivery.
    pub delivery_id: String,
    /// Its event.
    pub event_id: String,
    /// That event's type.
    pub event_type: String,
    /// Its endpoint (the record key).
    pub endpoint_id: String,
    /// The transfer, for sensitive-trace deliveries.
    pub transfer_id: Option<String>,
    /// 1-based attempt number; 0 when no request was made.
    pub attempt: i32,
    /// RFC 3339.
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// HTTP status, when there was a response.
    pub status: Option<i32>,
    /// `HL-…` code, when there was no response.
    pub error_code: Option<String>,
    /// `delivered`, `retrying` or `dead_lettered`.
    pub outcome: String,
    /// The dead letter's code, when dead-lettered.
    pub reason_code: Option<String>,
    /// RFC 3339, when retrying.
    pub next_attempt_at: Option<String>,
    /// The dead letter being replayed, if any.
    pub replay_of: Option<String>,
    /// A test delivery (`POST /webhooks/{id}/test`): sent once, never retried.
    #[serde(default)]
    pub test: bool,
}

impl DeliveryAttempt {
    /// The log entry of `attempt` at `delivery`, which ended as `outcome`.
    pub fn of(delivery: &RenderedDelivery, attempt: &Attempt, outcome: &str) -> Self {
        DeliveryAttempt {
            delivery_id: delivery.delivery_id.clone(),
            event_id: delivery.event_id.clone(),
            event_type: delivery.event_type.clone(),
            endpoint_id: delivery.endpoint_id.clone(),
            transfer_id: delivery.transfer_id.clone(),
            attempt: attempt.attempt,
            started_at: attempt.started_at.clone(),
            duration_ms: attempt.duration_ms,
            status: attempt.status,
            error_code: attempt.error_code.clone(),
            outcome: outcome.to_owned(),
            replay_of: delivery.replay_of.clone(),
            ..DeliveryAttempt::default()
        }
    }
}

impl Record for DeliveryAttempt {
    const FULL_NAME: &'static str = "hookline.internal.DeliveryAttempt";
}

/// A dead letter re-queued for delivery: the value of the compacted
/// `dead-letter-replays` topic, keyed by dead-letter id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// The dead letter (the record key).
    pub dead_letter_id: String,
    /// Its delivery.
    pub delivery_id: String,
    /// Its endpoint.
    pub endpoint_id: String,
    /// RFC 3339.
    pub replayed_at: String,
    /// `cli` or `api`.
    pub requested_by: String,
}

impl Record for Replay {
    const FULL_NAME: &'static str = "hookline.internal.Replay";
}

/// A change to an endpoint that another service asks for and the producer, the one
/// writer of `endpoints`, applies: the value of the `endpoint-requests` topic, keyed by
/// endpoint id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRequest {
    /// The endpoint (the record key).
    pub endpoint_id: String,
    /// `disable`: mark it inactive and emit `endpoint.disabled`.
    pub action: String,
    /// The endpoint version the request was judged on: applied only while the
    /// endpoint still has it, so an operator's change made meanwhile wins.
    pub version: i64,
    /// Why, in words that quote no data.
    pub reason: String,
    /// RFC 3339: since when the endpoint has been failing.
    pub failing_since: Option<String>,
    /// RFC 3339.
    pub requested_at: String,
}

impl Record for EndpointRequest {
    const FULL_NAME: &'static str = "hookline.internal.EndpointRequest";
}

/// A renderer's claim on its instance id, repeated as a heartbeat while it runs: the
/// value of the `instance-claims` topic, keyed by instance id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceClaim {
    /// The id claimed (the record key).
    pub instance_id: String,
    /// Random per process start.
    pub incarnation: String,
    /// The claiming process's host name.
    pub host: String,
    /// The claiming process's id on its host.
    pub pid: i64,
    /// How often the holder repeats its claim.
    pub interval_ms: i64,
    /// The holder stopped: the id is free.
    pub released: bool,
}

impl Record for InstanceClaim {
    const FULL_NAME: &'static str = "hookline.internal.InstanceClaim";
}

/// A delivery and its most recent attempts, as the delivery listing shows them: the
/// value of the compacted `delivery-index` topic, keyed by `<endpoint_id>/<delivery_id>`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySummary {
    /// The endpoint.
    pub endpoint_id: String,
    /// The delivery.
    pub delivery_id: String,
    /// Its event.
    pub event_id: String,
    /// That event's type.
    pub event_type: String,
    /// The dead letter a replay re-sent.
    pub replay_of: Option<String>,
    /// A test request.
    pub test: bool,
    /// Oldest first.
    pub attempts: Vec<IndexedAttempt>,
}

/// One attempt of a [`DeliverySummary`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedAttempt {
    /// 1-based; 0 when no request was made.
    pub attempt: i32,
    /// RFC 3339.
    pub started_at: String,
    /// How long it took.
    pub duration_ms: i64,
    /// HTTP status, when there was a response.
    pub status: Option<i32>,
    /// `HL-…` code, when there was no response.
    pub error_code: Option<String>,
    /// `delivered`, `retrying`, `dead_lettered`; of a test, `delivered` or `failed`.
    pub outcome: String,
    /// The dead letter's code, when dead-lettered.
    pub reason_code: Option<String>,
    /// RFC 3339, when retrying.
    pub next_attempt_at: Option<String>,
}

impl Record for DeliverySummary {
    const FULL_NAME: &'static str = "hookline.internal.DeliverySummary";
}
