//! A webhook's fields as the API takes them: each validated and set on the endpoint,
//! then the whole endpoint checked (vendor rules, a dry run of its templates with a
//! sample of every event type it subscribes to), and an HMAC secret generated where one
//! is needed.

use serde_json::{Map, Value};
use wire::Endpoint;

use crate::AppState;
use crate::error::ApiError;
use crate::fields::{
    MASK, opened, optional_text, printable, render_error, set_sealed, string, template_or_url,
    valid_name,
};

/// The wrapper object of request and response bodies.
const WRAPPER: &str = "webhook";
/// Bounds of a webhook's `timeout_ms`.
const MIN_TIMEOUT_MS: i64 = 100;
const MAX_TIMEOUT_MS: i64 = 120_000;

/// Validates the given fields and sets them on `endpoint`.
pub(crate) fn apply_fields(
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

/// An HMAC scheme needs a secret: Standard Webhooks ones are generated when not given
/// (returned once, in this response); the others must be given.
pub(crate) fn ensure_secret(
    state: &AppState,
    endpoint: &mut Endpoint,
) -> Result<Option<String>, ApiError> {
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
