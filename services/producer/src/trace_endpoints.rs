//! `/sensitive-trace-endpoints`: create, list, show, update and delete the endpoints
//! that receive a transfer's raw traces, with the seed's `{"sensitive_trace_endpoint":
//! {...}}` wrapper. Stored like webhooks, on the compacted `endpoints` topic, as kind
//! `sensitive_trace`; the secret is sealed and never returned. Each route sees only its
//! own kind: a webhook id is 404 here, and this kind is 404 under `/webhooks`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value};
use wire::Endpoint;

use crate::AppState;
use crate::api::{json_body, json_response};
use crate::bodies::{
    ErrorBody, TraceEndpoint, TraceEndpointBody, TraceEndpointDeleted, TraceEndpointList,
};
use crate::endpoints::{self, Precondition, find_kind, with_etag};
use crate::error::ApiError;
use crate::fields::{
    optional_text, render_error, set_sealed, template_or_url, valid_name, wrapped,
};
use crate::listing;
use crate::requests::{TraceEndpointCreate, TraceEndpointPatch};

/// The endpoint kind, and its vendor.
const KIND: &str = "sensitive_trace";
/// What the route calls it.
const WHAT: &str = "sensitive trace endpoint";
/// The wrapper object of request and response bodies.
const WRAPPER: &str = "sensitive_trace_endpoint";
pub(crate) const FIELDS: &[&str] = &[
    "name",
    "description",
    "url",
    "secret",
    "header_template",
    "body_template",
    "retry_on_failure",
    "retry_schedule",
    "max_in_flight",
    "max_rps",
];

/// `POST /sensitive-trace-endpoints`.
#[utoipa::path(
    post,
    path = "/sensitive-trace-endpoints",
    operation_id = "create_sensitive_trace_endpoint",
    tag = "sensitive-trace-endpoints",
    summary = "Create a sensitive-trace endpoint",
    description = "It receives one POST per transfer with the transfer's raw traces. Its templates are dry-run with a sample trace batch.",
    request_body = TraceEndpointCreate,
    responses(
        (status = 201, description = "Created", body = TraceEndpointBody, headers(("ETag" = String, description = "The endpoint's version, `\"<version>\"`"))),
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
    for required in ["name", "url"] {
        if !input.contains_key(required) {
            return Err(ApiError::invalid(
                format!("{WRAPPER}.{required}"),
                "missing required field",
            ));
        }
    }
    let now = wire::now_rfc3339();
    // Not signed (the seed: receivers authenticate with the secret), subscribed to no
    // event: the renderer sends these endpoints a transfer's traces, nothing else.
    let mut endpoint = Endpoint {
        id: uuid::Uuid::new_v4().to_string(),
        kind: KIND.to_owned(),
        vendor: KIND.to_owned(),
        signing_scheme: "none".to_owned(),
        active: true,
        events: Vec::new(),
        created_at: now.clone(),
        updated_at: now,
        ..Endpoint::default()
    };
    apply_fields(&state, &mut endpoint, &input)?;
    let endpoint = endpoints::create(&state, endpoint).await?;
    Ok(with_etag(
        json_response(
            StatusCode::CREATED,
            TraceEndpointBody {
                sensitive_trace_endpoint: TraceEndpoint::of(&endpoint),
            },
        ),
        &endpoint,
    ))
}

/// `GET /sensitive-trace-endpoints`.
#[utoipa::path(
    get,
    path = "/sensitive-trace-endpoints",
    operation_id = "list_sensitive_trace_endpoints",
    tag = "sensitive-trace-endpoints",
    summary = "List sensitive-trace endpoints, a page at a time",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "Endpoints per page (default 100)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
        ("active" = Option<bool>, Query, description = "Only active (true) or inactive (false) endpoints"),
    ),
    responses(
        (status = 200, description = "One page, oldest first", body = TraceEndpointList),
        (status = 400, description = "An unknown parameter, or one out of range", body = ErrorBody),
        (status = 503, description = "The `endpoints` table could not be read", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let query = listing::Query::parse(query.as_deref().unwrap_or_default(), &["active"])?;
    let (page, next_cursor) = listing::of_kind(&state, KIND, &query).await?;
    Ok(json_response(
        StatusCode::OK,
        TraceEndpointList {
            sensitive_trace_endpoints: page.iter().map(TraceEndpoint::of).collect(),
            next_cursor,
        },
    ))
}

/// `GET /sensitive-trace-endpoints/{id}`.
#[utoipa::path(
    get,
    path = "/sensitive-trace-endpoints/{id}",
    operation_id = "show_sensitive_trace_endpoint",
    tag = "sensitive-trace-endpoints",
    summary = "Show a sensitive-trace endpoint",
    params(("id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "The endpoint", body = TraceEndpointBody, headers(("ETag" = String, description = "The endpoint's version, `\"<version>\"`"))),
        (status = 404, description = "No such endpoint", body = ErrorBody),
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
            TraceEndpointBody {
                sensitive_trace_endpoint: TraceEndpoint::of(&endpoint),
            },
        ),
        &endpoint,
    ))
}

/// `PATCH /sensitive-trace-endpoints/{id}`: only the fields given change; with
/// `If-Match`, only if the endpoint still has that version (412 otherwise).
#[utoipa::path(
    patch,
    path = "/sensitive-trace-endpoints/{id}",
    operation_id = "update_sensitive_trace_endpoint",
    tag = "sensitive-trace-endpoints",
    summary = "Change a sensitive-trace endpoint",
    description = "Only the fields given change; `null` clears one. With `If-Match`, only if the endpoint still has that version.",
    params(("id" = String, Path, description = "The endpoint's id"), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^[ \t]*((\*|W/[^,]*|"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})[ \t]*)?(,[ \t]*((\*|W/[^,]*|"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})[ \t]*)?)*$"#, description = "The version the change applies to (`\"3\"`, from the `ETag`), or `*`; 412 when the endpoint has another")),
    request_body = TraceEndpointPatch,
    responses(
        (status = 200, description = "Changed", body = TraceEndpointBody, headers(("ETag" = String, description = "The endpoint's version, `\"<version>\"`"))),
        (status = 400, description = "A field is invalid (`field` names it)", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 412, description = "The endpoint's version is not the one in `If-Match`", body = ErrorBody),
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
    let endpoint = endpoints::update(&state, (&id, KIND, WHAT), &precondition, |e| {
        apply_fields(&state, e, &input)
    })
    .await?;
    Ok(with_etag(
        json_response(
            StatusCode::OK,
            TraceEndpointBody {
                sensitive_trace_endpoint: TraceEndpoint::of(&endpoint),
            },
        ),
        &endpoint,
    ))
}

/// `DELETE /sensitive-trace-endpoints/{id}`: writes a tombstone; with `If-Match`,
/// only if the endpoint still has that version (412 otherwise).
#[utoipa::path(
    delete,
    path = "/sensitive-trace-endpoints/{id}",
    operation_id = "delete_sensitive_trace_endpoint",
    tag = "sensitive-trace-endpoints",
    summary = "Delete a sensitive-trace endpoint",
    params(("id" = String, Path, description = "The endpoint's id"), ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^[ \t]*((\*|W/[^,]*|"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})[ \t]*)?(,[ \t]*((\*|W/[^,]*|"[+-]?[0-9]{1,18}"|[+-]?[0-9]{1,18})[ \t]*)?)*$"#, description = "The version the change applies to (`\"3\"`, from the `ETag`), or `*`; 412 when the endpoint has another")),
    responses(
        (status = 200, description = "Deleted: the endpoint as it was", body = TraceEndpointDeleted),
        (status = 400, description = "An `If-Match` that is not visible ASCII", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
        (status = 412, description = "The endpoint's version is not the one in `If-Match`", body = ErrorBody),
        (status = 503, description = "Kafka did not take the change in time", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let precondition = Precondition::from_headers(&headers)?;
    let endpoint = endpoints::delete(&state, (&id, KIND, WHAT), &precondition).await?;
    Ok(json_response(
        StatusCode::OK,
        TraceEndpointDeleted {
            sensitive_trace_endpoint: TraceEndpoint::of(&endpoint),
            deleted: true,
        },
    ))
}

async fn find(state: &AppState, id: &str) -> Result<Endpoint, ApiError> {
    find_kind(state, id, KIND, WHAT).await
}

/// Validates the given fields, sets them on `endpoint`, and dry-runs the result.
fn apply_fields(
    state: &AppState,
    endpoint: &mut Endpoint,
    input: &Map<String, Value>,
) -> Result<(), ApiError> {
    let path = |field: &str| format!("{WRAPPER}.{field}");
    if let Some(v) = input.get("name") {
        endpoint.name = valid_name(v, &path("name"))?;
    }
    if let Some(v) = input.get("description") {
        endpoint.description = optional_text(v, &path("description"))?;
    }
    if let Some(v) = input.get("url") {
        endpoint.url = template_or_url(v, &path("url"))?;
    }
    if let Some(v) = input.get("header_template") {
        endpoint.header_template = optional_text(v, &path("header_template"))?;
    }
    if let Some(v) = input.get("body_template") {
        endpoint.body_template = optional_text(v, &path("body_template"))?;
    }
    if let Some(v) = input.get("secret") {
        set_sealed(
            state,
            &endpoint.id,
            "secret",
            v,
            &path("secret"),
            &mut endpoint.secret,
        )?;
    }
    crate::policy::apply(endpoint, input, WRAPPER)?;
    dry_run(state, endpoint)
}

/// Renders the endpoint as the renderer will, with sample traces and its secret open
/// (so a URL that would carry it is refused now).
fn dry_run(state: &AppState, endpoint: &Endpoint) -> Result<(), ApiError> {
    render::validate_traces(&crate::fields::opened(state, endpoint)?, &state.environment)
        .map_err(|e| render_error(e, WRAPPER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::MASK;

    #[test]
    fn the_secret_is_masked() {
        let e = Endpoint {
            id: "1".into(),
            kind: KIND.into(),
            url: "https://x".into(),
            secret: Some("plain-secret".into()),
            ..Endpoint::default()
        };
        let shown = |e: &Endpoint| serde_json::to_value(TraceEndpoint::of(e)).expect("serializes");
        assert!(
            !shown(&e).to_string().contains("plain-secret"),
            "{}",
            shown(&e)
        );
        assert_eq!(shown(&e)["secret"], MASK);
        assert_eq!(shown(&Endpoint::default())["secret"], Value::Null);
    }
}
