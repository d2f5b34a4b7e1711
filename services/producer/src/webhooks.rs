//! `/webhooks`: create, list, show, update and delete webhook endpoints, with the
//! seeds' `{"webhook": {...}}` wrapper. Each write goes to the compacted `endpoints`
//! topic and is answered once Kafka acknowledged it; `api_key` is never returned.
//! The helpers for the `endpoints` table and request fields are shared with
//! `trace_endpoints`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};
use wire::Endpoint;

use crate::AppState;
use crate::api::{json_body, json_response};
use crate::bodies::{ErrorBody, Webhook, WebhookBody, WebhookDeleted, WebhookList};
use crate::endpoints::{self, Precondition, with_etag};
pub(crate) use crate::endpoints::{find_kind, sync};
use crate::error::ApiError;
use crate::requests::{WebhookCreate, WebhookPatch};

/// The endpoint kind this route serves.
const KIND: &str = "webhook";

/// Bounds of a webhook's `timeout_ms`.
const MIN_TIMEOUT_MS: i64 = 100;
const MAX_TIMEOUT_MS: i64 = 120_000;

/// What a masked secret looks like in responses; sent back in a PATCH it means "unchanged".
pub(crate) const MASK: &str = "******";
/// The wrapper object of request and response bodies.
const WRAPPER: &str = "webhook";
pub(crate) const FIELDS: &[&str] = &[
    "name",
    "description",
    "vendor",
    "url",
    "events",
    "api_key",
    "secret",
    "active",
    "method",
    "headers",
    "header_template",
    "body_template",
    "triggers",
    "destination_ids",
    "source_ids",
    "model_ids",
    "signing_scheme",
    "timeout_ms",
    "validate_tls",
    "retry_on_failure",
    "retry_schedule",
    "max_in_flight",
    "max_rps",
];

/// `POST /webhooks`.
#[utoipa::path(
    post,
    path = "/webhooks",
    operation_id = "create_webhook",
    tag = "webhooks",
    summary = "Create a webhook",
    description = "Its templates are dry-run with a sample of every event type it subscribes to. A `standard_webhooks` secret left out is generated and returned once, as `generated_secret`.",
    request_body = WebhookCreate,
    responses(
        (status = 201, description = "Created", body = WebhookBody, headers(("ETag" = String, description = "The webhook's version, `\"<version>\"`"))),
        (status = 400, description = "A field is missing or invalid (`field` names it)", body = ErrorBody),
        (status = 413, description = "The body is larger than allowed", body = ErrorBody),
        (status = 503, description = "Kafka did not take the change in time", body = ErrorBody),
    ),
)]
pub async fn create(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let input = wrapped(
        &json_body(body, state.max_body_bytes).await?,
        WRAPPER,
        FIELDS,
    )?;
    let now = wire::now_rfc3339();
    let mut endpoint = Endpoint {
        id: uuid::Uuid::new_v4().to_string(),
        kind: "webhook".to_owned(),
        name: String::new(),
        vendor: String::new(),
        url: String::new(),
        events: Vec::new(),
        api_key: None,
        active: true,
        created_at: now.clone(),
        updated_at: now,
        ..Endpoint::default()
    };
    for required in ["name", "vendor", "events"] {
        if !input.contains_key(required) {
            return Err(ApiError::invalid(
                format!("webhook.{required}"),
                "missing required field",
            ));
        }
    }
    let vendor = input
        .get("vendor")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !input.contains_key("url") && !matches!(vendor, "pagerduty" | "datadog") {
        return Err(ApiError::invalid("webhook.url", "missing required field"));
    }
    endpoint.signing_scheme = "prequel_rsa".to_owned();
    apply_fields(&state, &mut endpoint, &input)?;
    let generated_secret = ensure_secret(&state, &mut endpoint)?;
    let endpoint = endpoints::create(&state, endpoint).await?;
    Ok(with_etag(
        json_response(
            StatusCode::CREATED,
            WebhookBody {
                webhook: Webhook::of(&endpoint),
                generated_secret,
            },
        ),
        &endpoint,
    ))
}

/// `GET /webhooks`.
#[utoipa::path(
    get,
    path = "/webhooks",
    operation_id = "list_webhooks",
    tag = "webhooks",
    summary = "List webhooks",
    responses(
        (status = 200, description = "Every webhook, oldest first", body = WebhookList),
        (status = 503, description = "The `endpoints` table could not be read", body = ErrorBody),
    ),
)]
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    sync(&state).await?;
    let mut all: Vec<Endpoint> = state
        .endpoints
        .values()
        .into_iter()
        .filter(|e| e.kind == "webhook")
        .collect();
    all.sort_by(|a, b| {
        a.created_at
            .cmp(&b.created_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    let webhooks = all.iter().map(Webhook::of).collect();
    Ok(json_response(StatusCode::OK, WebhookList { webhooks }))
}

/// `GET /webhooks/{id}`.
#[utoipa::path(
    get,
    path = "/webhooks/{id}",
    operation_id = "show_webhook",
    tag = "webhooks",
    summary = "Show a webhook",
    params(("id" = String, Path, description = "The webhook's id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookBody, headers(("ETag" = String, description = "The webhook's version, `\"<version>\"`"))),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 503, description = "The `endpoints` table could not be read", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let endpoint = find(&state, &id).await?;
    Ok(with_etag(
        json_response(
            StatusCode::OK,
            WebhookBody {
                webhook: Webhook::of(&endpoint),
                generated_secret: None,
            },
        ),
        &endpoint,
    ))
}

/// `PATCH /webhooks/{id}`: only the fields given change; with `If-Match`, only if the
/// webhook still has that version (412 otherwise).
#[utoipa::path(
    patch,
    path = "/webhooks/{id}",
    operation_id = "update_webhook",
    tag = "webhooks",
    summary = "Change a webhook",
    description = "Only the fields given change; `null` clears one. With `If-Match`, only if the webhook still has that version.",
    params(("id" = String, Path, description = "The webhook's id"), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^[ \t]*((\*|W/[^,]*|"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})[ \t]*)?(,[ \t]*((\*|W/[^,]*|"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})[ \t]*)?)*$"#, description = "The version the change applies to (`\"3\"`, from the `ETag`), or `*`; 412 when the webhook has another")),
    request_body = WebhookPatch,
    responses(
        (status = 200, description = "Changed", body = WebhookBody, headers(("ETag" = String, description = "The webhook's version, `\"<version>\"`"))),
        (status = 400, description = "A field is invalid (`field` names it)", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 412, description = "The webhook's version is not the one in `If-Match`", body = ErrorBody),
        (status = 413, description = "The body is larger than allowed", body = ErrorBody),
        (status = 503, description = "Kafka did not take the change in time", body = ErrorBody),
    ),
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let precondition = Precondition::from_headers(&headers)?;
    let input = wrapped(
        &json_body(body, state.max_body_bytes).await?,
        WRAPPER,
        FIELDS,
    )?;
    let mut generated_secret = None;
    let endpoint = endpoints::update(&state, (&id, KIND, KIND), &precondition, |endpoint| {
        apply_fields(&state, endpoint, &input)?;
        generated_secret = ensure_secret(&state, endpoint)?;
        Ok(())
    })
    .await?;
    Ok(with_etag(
        json_response(
            StatusCode::OK,
            WebhookBody {
                webhook: Webhook::of(&endpoint),
                generated_secret,
            },
        ),
        &endpoint,
    ))
}

/// `DELETE /webhooks/{id}`: writes a tombstone; with `If-Match`, only if the webhook
/// still has that version (412 otherwise).
#[utoipa::path(
    delete,
    path = "/webhooks/{id}",
    operation_id = "delete_webhook",
    tag = "webhooks",
    summary = "Delete a webhook",
    params(("id" = String, Path, description = "The webhook's id"), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^[ \t]*((\*|W/[^,]*|"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})[ \t]*)?(,[ \t]*((\*|W/[^,]*|"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})[ \t]*)?)*$"#, description = "The version the change applies to (`\"3\"`, from the `ETag`), or `*`; 412 when the webhook has another")),
    responses(
        (status = 200, description = "Deleted: the webhook as it was", body = WebhookDeleted),
        (status = 400, description = "An `If-Match` that is not visible ASCII", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 412, description = "The webhook's version is not the one in `If-Match`", body = ErrorBody),
        (status = 503, description = "Kafka did not take the change in time", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let precondition = Precondition::from_headers(&headers)?;
    let endpoint = endpoints::delete(&state, (&id, KIND, KIND), &precondition).await?;
    Ok(json_response(
        StatusCode::OK,
        WebhookDeleted {
            webhook: Webhook::of(&endpoint),
            deleted: true,
        },
    ))
}

async fn find(state: &AppState, id: &str) -> Result<Endpoint, ApiError> {
    find_kind(state, id, KIND, KIND).await
}

/// The `wrapper` object of the body (`{"webhook": {...}}`), holding only `fields`.
pub(crate) fn wrapped(
    body: &Value,
    wrapper: &str,
    fields: &[&str],
) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(outer) = body else {
        return Err(ApiError::invalid(
            wrapper,
            format!("the body must be a JSON object {{\"{wrapper}\": {{...}}}}"),
        ));
    };
    if let Some(other) = outer.keys().find(|k| *k != wrapper) {
        return Err(ApiError::invalid(
            printable(other),
            format!("unknown field; the body is {{\"{wrapper}\": {{...}}}}"),
        ));
    }
    match outer.get(wrapper) {
        Some(Value::Object(inner)) => {
            if let Some(unknown) = inner.keys().find(|k| !fields.contains(&k.as_str())) {
                return Err(ApiError::invalid(
                    format!("{wrapper}.{}", printable(unknown)),
                    format!("unknown field; known fields: {}", fields.join(", ")),
                ));
            }
            Ok(inner.clone())
        }
        Some(_) => Err(ApiError::invalid(wrapper, "must be a JSON object")),
        None => Err(ApiError::invalid(wrapper, "missing required field")),
    }
}

/// Validates the given fields and sets them on `endpoint`.
fn apply_fields(
    state: &AppState,
    endpoint: &mut Endpoint,
    input: &Map<String, Value>,
) -> Result<(), ApiError> {
    let old_scheme = endpoint.signing_scheme.clone();
    if let Some(v) = input.get("name") {
        endpoint.name = valid_name(v, "webhook.name")?;
    }
    if let Some(v) = input.get("vendor") {
        let vendor = string(v, "webhook.vendor")?;
        if !render::VENDORS.contains(&vendor) {
            return Err(ApiError::invalid(
                "webhook.vendor",
                format!("unknown vendor; available: {}", render::VENDORS.join(", ")),
            ));
        }
        endpoint.vendor = vendor.to_owned();
    }
    if let Some(v) = input.get("signing_scheme") {
        let scheme = string(v, "webhook.signing_scheme")?;
        if signing::Scheme::parse(scheme).is_none() {
            return Err(ApiError::invalid(
                "webhook.signing_scheme",
                format!("must be one of {}", signing::SCHEMES.join(", ")),
            ));
        }
        endpoint.signing_scheme = scheme.to_owned();
    }
    if let Some(v) = input.get("url") {
        endpoint.url = template_or_url(v, "webhook.url")?;
    }
    if let Some(v) = input.get("description") {
        endpoint.description = optional_text(v, "webhook.description")?;
    }
    if let Some(v) = input.get("method") {
        endpoint.method = match optional_text(v, "webhook.method")? {
            Some(m) if render::METHODS.contains(&m.to_ascii_uppercase().as_str()) => {
                Some(m.to_ascii_uppercase())
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    "webhook.method",
                    format!("must be one of {}", render::METHODS.join(", ")),
                ));
            }
            None => None,
        };
    }
    if let Some(v) = input.get("header_template") {
        endpoint.header_template = optional_text(v, "webhook.header_template")?;
    }
    if let Some(v) = input.get("body_template") {
        endpoint.body_template = optional_text(v, "webhook.body_template")?;
    }
    if let Some(v) = input.get("headers") {
        let Value::Object(map) = v else {
            return Err(ApiError::invalid(
                "webhook.headers",
                "must be an object of header name to value template",
            ));
        };
        endpoint.headers = map
            .iter()
            .map(|(name, value)| match value.as_str() {
                Some(t) => Ok(wire::HeaderTemplate {
                    name: name.clone(),
                    value: t.to_owned(),
                }),
                None => Err(ApiError::invalid(
                    format!("webhook.headers.{}", printable(name)),
                    "must be a string",
                )),
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = input.get("triggers") {
        endpoint.triggers = string_list(v, "triggers")?;
        if let Some((i, _)) = endpoint
            .triggers
            .iter()
            .enumerate()
            .find(|(_, t)| !matches!(t.as_str(), "success" | "failure"))
        {
            return Err(ApiError::invalid(
                format!("webhook.triggers[{i}]"),
                "must be `success` or `failure`",
            ));
        }
    }
    for (field, target) in [
        ("destination_ids", &mut endpoint.destination_ids),
        ("source_ids", &mut endpoint.source_ids),
        ("model_ids", &mut endpoint.model_ids),
    ] {
        if let Some(v) = input.get(field) {
            *target = string_list(v, field)?;
        }
    }
    // A secret belongs to its scheme: changing the scheme without a new secret drops it
    // (a Standard Webhooks one is then generated; the other schemes ask for one).
    if endpoint.signing_scheme != old_scheme
        && !old_scheme.is_empty()
        && !input.contains_key("secret")
    {
        endpoint.secret = None;
        endpoint.previous_secret = None;
        endpoint.previous_secret_until = None;
    }
    // A rotated-out secret past its overlap is dropped.
    let expired = endpoint
        .previous_secret_until
        .as_deref()
        .is_some_and(|until| {
            time::OffsetDateTime::parse(until, &time::format_description::well_known::Rfc3339)
                .map_or(true, |u| u <= time::OffsetDateTime::now_utc())
        });
    if expired {
        endpoint.previous_secret = None;
        endpoint.previous_secret_until = None;
    }
    if let Some(v) = input.get("secret") {
        match v {
            Value::Null => endpoint.secret = None,
            Value::String(s) if s == MASK => {}
            Value::String(s) if s.is_empty() => endpoint.secret = None,
            Value::String(s) if s.chars().any(char::is_control) => {
                return Err(ApiError::invalid(
                    "webhook.secret",
                    "must not contain control characters",
                ));
            }
            Value::String(s) => {
                if endpoint.signing_scheme == "standard_webhooks"
                    && !signing::valid_standard_secret(s)
                {
                    return Err(ApiError::invalid(
                        "webhook.secret",
                        "a standard_webhooks secret is whsec_ followed by base64 of at least 16 bytes (or leave it out to have one generated)",
                    ));
                }
                // A standard_webhooks secret replaced keeps signing for the overlap window.
                endpoint.previous_secret = None;
                endpoint.previous_secret_until = None;
                if endpoint.signing_scheme == "standard_webhooks"
                    && old_scheme == "standard_webhooks"
                    && let Some(old) = endpoint.secret.take()
                {
                    let plain = state
                        .sealer
                        .open(&old, &signing::endpoint_context(&endpoint.id, "secret"))
                        .map_err(|_| ApiError::internal("HL-SEAL-OPEN"))?;
                    let until = time::OffsetDateTime::now_utc() + state.rotation_overlap;
                    endpoint.previous_secret = Some(state.sealer.seal(
                        &plain,
                        &signing::endpoint_context(&endpoint.id, "previous_secret"),
                    ));
                    endpoint.previous_secret_until = Some(wire::format_rfc3339(until));
                }
                endpoint.secret = Some(state.sealer.seal(
                    s.as_bytes(),
                    &signing::endpoint_context(&endpoint.id, "secret"),
                ));
            }
            _ => {
                return Err(ApiError::invalid(
                    "webhook.secret",
                    "must be a string or null",
                ));
            }
        }
    }
    if let Some(v) = input.get("events") {
        let Value::Array(items) = v else {
            return Err(ApiError::invalid(
                "webhook.events",
                "must be an array of event types",
            ));
        };
        if items.is_empty() {
            return Err(ApiError::invalid(
                "webhook.events",
                "must name at least one event type",
            ));
        }
        let mut events: Vec<String> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let field = format!("webhook.events[{i}]");
            let Some(t) = item.as_str() else {
                return Err(ApiError::invalid(field, "must be a string"));
            };
            if !render::valid_pattern(t, &state.registry.event_types()) {
                return Err(ApiError::invalid(
                    field,
                    format!(
                        "unknown event type `{}` (an event type, `prefix.*` or `*`)",
                        printable(t)
                    ),
                ));
            }
            if !events.iter().any(|e| e == t) {
                events.push(t.to_owned());
            }
        }
        endpoint.events = events;
    }
    if let Some(v) = input.get("api_key") {
        set_sealed(
            state,
            &endpoint.id,
            "api_key",
            v,
            "webhook.api_key",
            &mut endpoint.api_key,
        )?;
    }
    if let Some(v) = input.get("active") {
        endpoint.active = v
            .as_bool()
            .ok_or_else(|| ApiError::invalid("webhook.active", "must be a boolean"))?;
    }
    if let Some(v) = input.get("validate_tls") {
        endpoint.insecure_tls = !v
            .as_bool()
            .ok_or_else(|| ApiError::invalid("webhook.validate_tls", "must be a boolean"))?;
    }
    if let Some(v) = input.get("timeout_ms") {
        endpoint.timeout_ms = match v {
            Value::Null => None,
            v => Some(
                v.as_i64()
                    .filter(|ms| (MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(ms))
                    .and_then(|ms| i32::try_from(ms).ok())
                    .ok_or_else(|| ApiError::invalid("webhook.timeout_ms", format!("must be milliseconds from {MIN_TIMEOUT_MS} to {MAX_TIMEOUT_MS}, or null for the default")))?,
            ),
        };
    }
    crate::policy::apply(endpoint, input, WRAPPER)?;
    check_whole(state, endpoint)
}

/// What only the whole endpoint can tell: vendor rules, and a dry run of its templates
/// with a sample of every event type it subscribes to.
fn check_whole(state: &AppState, endpoint: &Endpoint) -> Result<(), ApiError> {
    let templated = render::TEMPLATED_VENDORS.contains(&endpoint.vendor.as_str());
    for (field, set) in [
        ("method", endpoint.method.is_some()),
        ("header_template", endpoint.header_template.is_some()),
        ("body_template", endpoint.body_template.is_some()),
        ("headers", !endpoint.headers.is_empty()),
    ] {
        if set && !templated {
            return Err(ApiError::invalid(
                format!("webhook.{field}"),
                format!(
                    "vendor {} has a fixed request shape; {field} is for {}",
                    endpoint.vendor,
                    render::TEMPLATED_VENDORS.join(" and ")
                ),
            ));
        }
    }
    if matches!(endpoint.vendor.as_str(), "pagerduty" | "datadog") && endpoint.api_key.is_none() {
        return Err(ApiError::invalid(
            "webhook.api_key",
            format!("vendor {} needs its key as api_key", endpoint.vendor),
        ));
    }
    // Dry-run with the secrets open, as the renderer will (a URL carrying one is refused now).
    let compiled =
        render::compile(opened(state, endpoint)?).map_err(|e| render_error(e, WRAPPER))?;
    render::validate(&compiled, &state.registry, &state.environment)
        .map_err(|e| render_error(e, WRAPPER))
}

/// A copy of `endpoint` with its sealed secrets open, for dry runs.
pub(crate) fn opened(state: &AppState, endpoint: &Endpoint) -> Result<Endpoint, ApiError> {
    let mut open = endpoint.clone();
    service_kit::open_endpoint_secrets(&state.sealer, &mut open)
        .map_err(|_| ApiError::internal("HL-SEAL-OPEN"))?;
    Ok(open)
}

/// A dry run's refusal as a 400 naming `<wrapper>.<field>`.
pub(crate) fn render_error(e: render::RenderError, wrapper: &str) -> ApiError {
    match e.field() {
        Some(field) => ApiError::invalid(
            format!("{wrapper}.{field}"),
            e.to_string()
                .split_once(": ")
                .map_or(e.to_string(), |(_, m)| m.to_owned()),
        ),
        None => ApiError::invalid(format!("{wrapper}.vendor"), e.to_string()),
    }
}

/// An HMAC scheme needs a secret: Standard Webhooks ones are generated when not given
/// (returned once, in this response); the others must be given.
fn ensure_secret(state: &AppState, endpoint: &mut Endpoint) -> Result<Option<String>, ApiError> {
    let scheme = signing::Scheme::parse(&endpoint.signing_scheme).unwrap_or(signing::Scheme::None);
    if !scheme.needs_secret() || endpoint.secret.is_some() {
        return Ok(None);
    }
    if scheme != signing::Scheme::StandardWebhooks {
        return Err(ApiError::invalid(
            "webhook.secret",
            format!("{} needs a secret", scheme.name()),
        ));
    }
    let secret = signing::new_standard_secret();
    endpoint.secret = Some(state.sealer.seal(
        secret.as_bytes(),
        &signing::endpoint_context(&endpoint.id, "secret"),
    ));
    Ok(Some(secret))
}

/// A text field that `null` or `""` clears; `path` names it in errors.
pub(crate) fn optional_text(v: &Value, path: &str) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ApiError::invalid(path, "must be a string or null")),
    }
}

/// A name: 1 to 200 characters.
pub(crate) fn valid_name(v: &Value, path: &str) -> Result<String, ApiError> {
    let name = string(v, path)?;
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid(path, "must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

/// A URL, or a URL template (checked once rendered, by the dry run).
pub(crate) fn template_or_url(v: &Value, path: &str) -> Result<String, ApiError> {
    let url = string(v, path)?;
    if url.contains("{{") {
        Ok(url.to_owned())
    } else {
        valid_url(url, path)
    }
}

/// Sets a secret field from the request: sealed under the master key, bound to the
/// endpoint and `field`; `null` or `""` clears it, the mask sent back leaves it unchanged.
pub(crate) fn set_sealed(
    state: &AppState,
    endpoint_id: &str,
    field: &str,
    v: &Value,
    path: &str,
    target: &mut Option<String>,
) -> Result<(), ApiError> {
    match v {
        Value::Null => *target = None,
        Value::String(s) if s == MASK => {} // the masked value sent back: unchanged
        Value::String(s) if s.is_empty() => *target = None,
        Value::String(s) if s.chars().any(char::is_control) => {
            return Err(ApiError::invalid(
                path,
                "must not contain control characters",
            ));
        }
        Value::String(s) => {
            *target = Some(
                state
                    .sealer
                    .seal(s.as_bytes(), &signing::endpoint_context(endpoint_id, field)),
            )
        }
        _ => return Err(ApiError::invalid(path, "must be a string or null")),
    }
    Ok(())
}

fn string_list(v: &Value, field: &str) -> Result<Vec<String>, ApiError> {
    let Value::Array(items) = v else {
        return Err(ApiError::invalid(
            format!("webhook.{field}"),
            "must be an array of strings",
        ));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item.as_str() {
            Some(s) if !s.is_empty() => Ok(s.to_owned()),
            _ => Err(ApiError::invalid(
                format!("webhook.{field}[{i}]"),
                "must be a non-empty string",
            )),
        })
        .collect()
}

fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, ApiError> {
    v.as_str()
        .ok_or_else(|| ApiError::invalid(path, "must be a string"))
}

/// An absolute http(s) URL with a host, without credentials in it.
fn valid_url(raw: &str, path: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::invalid(path, why.to_owned());
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials (URLs are logged); send them in a header",
        ));
    }
    Ok(url.to_string())
}

/// Echoes a caller's value only when short and printable.
pub(crate) fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_table() {
        let table = [
            ("https://example.com/hook", true),
            ("http://127.0.0.1:9000/x?y=1", true),
            ("ftp://example.com", false),
            ("example.com/hook", false),
            ("https://user:pw@example.com/", false),
            ("https://", false),
            ("", false),
        ];
        for (raw, ok) in table {
            assert_eq!(valid_url(raw, "webhook.url").is_ok(), ok, "{raw}");
        }
    }

    #[test]
    fn the_api_key_is_masked() {
        let e = Endpoint {
            id: "1".into(),
            kind: "webhook".into(),
            name: "n".into(),
            vendor: "generic_post".into(),
            url: "https://x".into(),
            events: vec![],
            api_key: Some("secret-key".into()),
            active: true,
            created_at: String::new(),
            updated_at: String::new(),
            ..Endpoint::default()
        };
        let shown = serde_json::to_string(&Webhook::of(&e)).expect("serializes");
        assert!(!shown.contains("secret-key"));
        assert!(shown.contains(MASK));
    }
}
