//! The HTTP surface: routes, bearer-token auth, JSON bodies and errors.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::{AppState, dead_letters, deliveries, events, keys, reseal, trace_endpoints, webhooks};

/// The API's routes over shared state.
pub fn router(state: Arc<AppState>) -> Router {
    let authed = Router::new()
        .route("/events", post(events::create))
        .route("/webhooks", post(webhooks::create).get(webhooks::list))
        .route(
            "/webhooks/{id}",
            get(webhooks::show)
                .patch(webhooks::update)
                .delete(webhooks::delete),
        )
        .route("/webhooks/{id}/deliveries", get(deliveries::list))
        .route(
            "/sensitive-trace-endpoints",
            post(trace_endpoints::create).get(trace_endpoints::list),
        )
        .route(
            "/sensitive-trace-endpoints/{id}",
            get(trace_endpoints::show)
                .patch(trace_endpoints::update)
                .delete(trace_endpoints::delete),
        )
        .route("/webhooks/{id}/recover", post(dead_letters::recover))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/replay", post(dead_letters::replay))
        .route("/dead-letters/{id}", get(dead_letters::show))
        .route("/signatures/webhook-key/rotate", post(keys::rotate_key))
        .route("/keys/master", get(reseal::status))
        .route("/keys/master/reseal", post(reseal::reseal))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/health", get(health))
        .route(
            "/public/signatures/webhook-public-key",
            get(keys::public_key),
        )
        .merge(authed)
        .fallback(|| async { ApiError::not_found("route") })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        // Handlers read bodies with their own limit and answer in JSON.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
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
pub fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, Json(body)).into_response()
}
