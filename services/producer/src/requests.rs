//! The API's request bodies as the OpenAPI document describes them. Handlers read
//! bodies field by field, so that every refusal names its field
//! (`webhook_fields::apply_fields`); the tests in `openapi.rs` hold the properties of these
//! types equal to the fields those handlers take.

#![allow(dead_code)] // Never built: only their schemas are used.

use serde::Deserialize;
use serde_json::Value;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// A retry schedule: `"0s,30s,5m"` or `["0s", "30s", "5m"]`; null restores the
/// dispatcher's.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ScheduleInput {
    /// Delays separated by commas.
    Text(String),
    /// One delay or several per item; at least one item.
    List(Vec<String>),
}

/// A webhook's fields. In a PATCH every field is optional and only those given change;
/// `null` (or `""`) clears a field, and the masked `******` sent back leaves a secret
/// unchanged.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "name": "Slack alerts",
    "vendor": "slack",
    "url": "https://hooks.slack.com/services/T000/B000/XXXX",
    "events": ["transfer.error"],
    "signing_scheme": "none"
}))]
pub struct WebhookFields {
    /// 1 to 200 characters.
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    name: Option<String>,
    /// Free text.
    description: Option<String>,
    /// How requests are shaped.
    #[schema(nullable = false)]
    vendor: Option<String>,
    /// An absolute http(s) URL without credentials, or a URL template. Required unless
    /// the vendor is `pagerduty` or `datadog`.
    #[schema(nullable = false, min_length = 1)]
    url: Option<String>,
    /// Event types, prefixes (`source.*`) or `*`; at least one.
    #[schema(nullable = false, min_items = 1)]
    events: Option<Vec<String>>,
    /// The receiver's API key (`pagerduty`, `datadog`; `{{.ApiKey}}` in templates).
    /// Stored sealed, shown masked.
    api_key: Option<String>,
    /// The HMAC secret of `prequel_hmac`, `standard_webhooks` (`whsec_…`; generated when
    /// left out) or `{{.Secret}}` in templates. Stored sealed, shown masked.
    secret: Option<String>,
    /// Inactive webhooks receive nothing. Default true.
    #[schema(nullable = false)]
    active: Option<bool>,
    /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE` (templated vendors).
    method: Option<String>,
    /// Header name to value template (templated vendors).
    #[schema(nullable = false)]
    headers: Option<std::collections::BTreeMap<String, String>>,
    /// Header lines `Name: value`, a template (templated vendors).
    header_template: Option<String>,
    /// Body template (templated vendors).
    body_template: Option<String>,
    /// `transfer.*` events only when the transfer ended so.
    #[schema(nullable = false)]
    triggers: Option<Vec<Trigger>>,
    /// Transfer events only for these destinations.
    #[schema(nullable = false)]
    destination_ids: Option<Vec<String>>,
    /// Transfer events only for these sources.
    #[schema(nullable = false)]
    source_ids: Option<Vec<String>>,
    /// Transfer events only for these models.
    #[schema(nullable = false)]
    model_ids: Option<Vec<String>>,
    /// How deliveries are signed. Default `prequel_rsa`.
    #[schema(nullable = false)]
    signing_scheme: Option<String>,
    /// One attempt's timeout; null: the dispatcher's.
    #[schema(minimum = 100, maximum = 120_000)]
    timeout_ms: Option<i64>,
    /// Whether the receiver's certificate is verified. Default true.
    #[schema(nullable = false)]
    validate_tls: Option<bool>,
    /// Whether failed attempts are retried. Default true.
    #[schema(nullable = false)]
    retry_on_failure: Option<bool>,
    /// Delays between attempts; null: the dispatcher's.
    retry_schedule: Option<ScheduleInput>,
    /// Requests in flight at once, per dispatcher; null: the dispatcher's.
    #[schema(minimum = 1, maximum = 1000)]
    max_in_flight: Option<i64>,
    /// Requests per second, per dispatcher; null: no limit.
    #[schema(minimum = 1, maximum = 10_000)]
    max_rps: Option<i64>,
}

/// When a transfer event is sent.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// The transfer succeeded.
    Success,
    /// The transfer failed.
    Failure,
}

/// A new webhook's fields: `name`, `vendor` and `events` are required (and `url`,
/// except for `pagerduty` and `datadog`).
#[derive(Deserialize)]
pub struct WebhookCreateFields;

impl PartialSchema for WebhookCreateFields {
    fn schema() -> RefOr<Schema> {
        requiring(WebhookFields::schema(), &["name", "vendor", "events"])
    }
}

impl ToSchema for WebhookCreateFields {}

/// `POST /webhooks`.
#[derive(Deserialize, ToSchema)]
pub struct WebhookCreate {
    /// The webhook.
    webhook: WebhookCreateFields,
}

/// `PATCH /webhooks/{id}`.
#[derive(Deserialize, ToSchema)]
pub struct WebhookPatch {
    /// The fields to change.
    webhook: WebhookFields,
}

/// A sensitive-trace endpoint's fields; in a PATCH all optional, as for webhooks.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "name": "Production Error Webhook",
    "description": "Sends errors to our internal monitoring system",
    "url": "https://your-domain.com/webhooks/prequel-errors",
    "secret": "your-webhook-secret-token",
    "header_template": "Authorization: Bearer {{.Secret}}\nContent-Type: application/json",
    "body_template": "{\"environment\": \"{{.Environment}}\", \"timestamp\": \"{{.Timestamp}}\", \"destination_url\": \"https://YOUR_ADMIN_HOST/destinations/{{.DestinationId}}\", \"errors\": {{.SensitiveTraces}}}"
}))]
pub struct TraceEndpointFields {
    /// 1 to 200 characters.
    #[schema(nullable = false, min_length = 1, max_length = 200)]
    name: Option<String>,
    /// Free text.
    description: Option<String>,
    /// An absolute http(s) URL without credentials, or a URL template.
    #[schema(nullable = false, min_length = 1)]
    url: Option<String>,
    /// `{{.Secret}}` in templates (by default sent as `Authorization: Bearer`). Stored
    /// sealed, shown masked.
    secret: Option<String>,
    /// Header lines `Name: value`, a template.
    header_template: Option<String>,
    /// Body template; `{{.SensitiveTraces}}` is the JSON array of traces.
    body_template: Option<String>,
    /// Whether failed attempts are retried. Default true.
    #[schema(nullable = false)]
    retry_on_failure: Option<bool>,
    /// Delays between attempts; null: the dispatcher's.
    retry_schedule: Option<ScheduleInput>,
    /// Requests in flight at once, per dispatcher; null: the dispatcher's.
    #[schema(minimum = 1, maximum = 1000)]
    max_in_flight: Option<i64>,
    /// Requests per second, per dispatcher; null: no limit.
    #[schema(minimum = 1, maximum = 10_000)]
    max_rps: Option<i64>,
}

/// A new sensitive-trace endpoint's fields: `name` and `url` are required.
#[derive(Deserialize)]
pub struct TraceEndpointCreateFields;

impl PartialSchema for TraceEndpointCreateFields {
    fn schema() -> RefOr<Schema> {
        requiring(TraceEndpointFields::schema(), &["name", "url"])
    }
}

impl ToSchema for TraceEndpointCreateFields {}

/// `POST /sensitive-trace-endpoints`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"sensitive_trace_endpoint": {
    "name": "Slack Sensitive Traces",
    "description": "Sends sensitive traces to Slack via Incoming Webhook",
    "url": "https://hooks.slack.com/services/YOUR_WEBHOOK_URL",
    "header_template": "Content-Type: application/json",
    "body_template": "{\"attachments\": [{\"text\": {{printf \"*Prequel Sensitive Trace | Destination:* %s\\n\\n*<https://YOUR_ADMIN_HOST/destinations/%s|View Destination>*\\n\\n*Environment:* %s\\n\\n*Timestamp:* %s\\n\\n*Traces:*\\n```json\\n%s\\n```\" .DestinationId .DestinationId .Environment .Timestamp .SensitiveTraces | printf \"%q\"}}, \"color\": \"danger\", \"mrkdwn_in\": [\"text\"]}]}"
}}))]
pub struct TraceEndpointCreate {
    /// The endpoint.
    sensitive_trace_endpoint: TraceEndpointCreateFields,
}

/// `PATCH /sensitive-trace-endpoints/{id}`.
#[derive(Deserialize, ToSchema)]
pub struct TraceEndpointPatch {
    /// The fields to change.
    sensitive_trace_endpoint: TraceEndpointFields,
}

/// An event in the envelope receivers see. `data` is checked against the event type's
/// Avro schema (`schemas/event`); its sensitive fields are sealed before Kafka.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({
    "type": "transfer.error",
    "api_version": "2023-10-15",
    "created_at": "2023-10-15T19:19:08+00:00",
    "data": {"error": {
        "destination_id": "00000000-0000-0000-0000-000000000000",
        "destination_name": "Foo Bar",
        "id_in_provider_system": "acme",
        "models": ["users"],
        "is_full_refresh": true,
        "transfer_id": "00000000-0000-0000-0000-000000000000",
        "transfer_status": "PARTIAL_ERROR",
        "transfer_error_type": "first_party_error",
        "transfer_log": "Exception in thread \"main\" org.apache.spark.SparkException: Job aborted due to stage failure",
        "transfer_log_pretty": "Error due to the heat death of the universe",
        "transfer_started_at": "2023-10-15T16:19:08+00:00",
        "transfer_ended_at": "2023-10-15T18:19:08+00:00",
        "in_app_url": ""
    }}
}))]
pub struct EventInput {
    /// The event type (`transfer.error`, `source.created`, ...).
    #[serde(rename = "type")]
    event_type: String,
    /// Unique per event; a UUIDv7 when left out. Receivers deduplicate on it.
    #[schema(min_length = 1)]
    id: Option<String>,
    /// RFC 3339; now when left out.
    #[schema(format = DateTime)]
    created_at: Option<String>,
    /// The API version (`2023-10-15` when left out).
    version: Option<String>,
    /// The same as `version` (the seeds' name); they must agree when both are given.
    api_version: Option<String>,
    /// The event type's own record.
    #[schema(value_type = Object)]
    data: Value,
}

/// `POST /events`: one event, or an array of 1 to 1,000.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EventsInput {
    /// One event.
    One(EventInput),
    /// 1 to 1,000 events, sent to Kafka together.
    Many(Vec<EventInput>),
}

/// `POST /dead-letters/replay`: at least one filter, or `all: true`.
#[derive(Deserialize, ToSchema)]
pub struct ReplayInput {
    /// Only this endpoint's dead letters.
    endpoint_id: Option<String>,
    /// RFC 3339, or a duration ago (`24h`).
    since: Option<String>,
    /// RFC 3339, or a duration ago.
    until: Option<String>,
    /// These dead letters.
    ids: Option<Vec<String>>,
    /// Count what would be replayed; write nothing.
    dry_run: Option<bool>,
    /// Replay every dead letter (required when no filter is given).
    all: Option<bool>,
}

/// `POST /webhooks/{id}/recover`.
#[derive(Deserialize, ToSchema)]
pub struct RecoverInput {
    /// RFC 3339, or a duration ago (`24h`).
    #[schema(min_length = 1)]
    since: String,
    /// RFC 3339, or a duration ago.
    until: Option<String>,
    /// Count what would be replayed; write nothing.
    dry_run: Option<bool>,
}

/// `POST /webhooks/{id}/test`: both optional, not both.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"event_type": "transfer.error"}))]
pub struct TestWebhookInput {
    /// A sample of this type is sent (default: the first type the webhook subscribes to).
    event_type: Option<String>,
    /// This event is sent (its type must be one the webhook subscribes to).
    event: Option<EventInput>,
}

/// `POST /sensitive-trace-endpoints/{id}/test`.
#[derive(Deserialize, ToSchema)]
pub struct TestTracesInput {
    /// The trace objects to send (default: the seed's sample).
    #[schema(value_type = Option<Vec<Object>>, min_items = 1)]
    sensitive_traces: Option<Vec<Value>>,
}

/// `schema` with `required` set to `fields`.
fn requiring(schema: RefOr<Schema>, fields: &[&str]) -> RefOr<Schema> {
    let mut schema = schema;
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.required = fields.iter().map(|f| (*f).to_owned()).collect();
    }
    schema
}
