//! The HTTP surface: routes, bearer-token auth, JSON bodies and errors.

use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use subtle::ConstantTimeEq;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::bodies::Health;
use crate::error::ApiError;
use crate::{
    AppState, dead_letters, deliveries, events, keys, reseal, test_delivery, trace_endpoints,
    webhooks,
};

/// The API's routes over shared state, and `GET /openapi.json` describing them.
pub fn router(state: Arc<AppState>) -> Router {
    let (routes, _) = authed_routes()
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .split_for_parts();
    let (public, _) = public_routes().split_for_parts();
    Router::new()
        .merge(public)
        .merge(routes)
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Handlers read bodies with their own limit and answer in JSON.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// Every route with its description, for the OpenAPI document.
pub(crate) fn routes() -> OpenApiRouter<Arc<AppState>> {
    authed_routes().merge(public_routes())
}

/// The routes that take the bearer token. Handlers of one path go in one `routes!`.
fn authed_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(events::create))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::show, webhooks::update, webhooks::delete))
        .routes(routes!(deliveries::list))
        .routes(routes!(test_delivery::webhook))
        .routes(routes!(test_delivery::trace_endpoint))
        .routes(routes!(trace_endpoints::create, trace_endpoints::list))
        .routes(routes!(
            trace_endpoints::show,
            trace_endpoints::update,
            trace_endpoints::delete
        ))
        .routes(routes!(dead_letters::recover))
        .routes(routes!(dead_letters::list))
        .routes(routes!(dead_letters::replay))
        .routes(routes!(dead_letters::show))
        .routes(routes!(keys::rotate_key))
        .routes(routes!(reseal::status))
        .routes(routes!(reseal::reseal))
}

/// The routes open to anyone.
fn public_routes() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(openapi_json))
        .routes(routes!(keys::public_key))
}

/// `GET /health`.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "service",
    summary = "Whether the API serves",
    security(()),
    responses((status = 200, description = "It serves", body = Health)),
)]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
    })
}

/// `GET /openapi.json`: the document, made once.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "service",
    summary = "This document",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object)),
)]
async fn openapi_json() -> impl IntoResponse {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.get_or_init(crate::openapi::document_json).as_str(),
    )
}

async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = &state.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// Reads a request body of at most `limit` bytes and parses it as JSON, answering a
/// JSON error (413, 400) otherwise.
pub async fn json_body(body: Body, limit: usize) -> Result<serde_json::Value, ApiError> {
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::too_large(limit))?;
    parse_json(&bytes)
}

/// Parses a JSON request body, answering 400 with a JSON error when it is not JSON.
fn parse_json(body: &Bytes) -> Result<serde_json::Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::malformed(
            "the request body is empty; a JSON object is expected",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::malformed(format!(
            "the request body is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// A JSON response with a status.
pub fn json_response(status: StatusCode, body: impl serde::Serialize) -> Response {
    (status, Json(body)).into_response()
}
