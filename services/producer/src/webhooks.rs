//! `/webhooks`: create, list, show, update and delete webhook endpoints, with the
//! seeds' `{"webhook": {...}}` wrapper. Each write goes to the compacted `endpoints`
//! topic and is answered once Kafka acknowledged it; `api_key` is never returned.
//! Its fields are validated in `webhook_fields`; the request-field helpers (`fields`)
//! and the `endpoints` table helpers are shared with `trace_endpoints`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;
use wire::Endpoint;

use crate::AppState;
use crate::api::{json_body, json_response};
use crate::bodies::{ErrorBody, Webhook, WebhookBody, WebhookDeleted, WebhookList};
use crate::endpoints::find_kind;
use crate::endpoints::{self, Precondition, with_etag};
use crate::error::ApiError;
use crate::fields::wrapped;
use crate::listing;
use crate::requests::{WebhookCreate, WebhookPatch};
use crate::webhook_fields::{apply_fields, ensure_secret};

/// The endpoint kind this route serves.
const KIND: &str = "webhook";

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
    summary = "List webhooks, a page at a time",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "Webhooks per page (default 100)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("event_type" = Option<String>, Query, description = "Only webhooks subscribed to this event type (`transfer.error`)"),
        ("vendor" = Option<String>, Query, description = "Only webhooks of this vendor"),
        ("active" = Option<bool>, Query, description = "Only active (true) or inactive (false) webhooks"),
    ),
    responses(
        (status = 200, description = "One page, oldest first", body = WebhookList),
        (status = 400, description = "An unknown parameter, or one out of range", body = ErrorBody),
        (status = 503, description = "The `endpoints` table could not be read", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = listing::Query::parse(
        query.as_deref().unwrap_or_default(),
        &["event_type", "vendor", "active"],
    )?;
    let (page, next_cursor) = listing::of_kind(&state, KIND, &query).await?;
    Ok(json_response(
        StatusCode::OK,
        WebhookList {
            webhooks: page.iter().map(Webhook::of).collect(),
            next_cursor,
        },
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::MASK;

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
