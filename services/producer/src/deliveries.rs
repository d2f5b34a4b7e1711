//! `GET /webhooks/{id}/deliveries?limit=N`: a webhook's recent deliveries and their
//! attempts, newest first, from the attempt log. Times, statuses and codes only: the
//! attempt log holds no payload, header or response.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;

use crate::AppState;
use crate::api::json_response;
use crate::attempt_index::Delivery;
use crate::bodies::{DeliveryList, DeliveryView, ErrorBody};
use crate::endpoints::find_kind;
use crate::error::ApiError;
use crate::fields::printable;

/// Deliveries listed when `limit` is not given.
const DEFAULT_LIMIT: usize = 50;
/// The largest `limit`, and so the deliveries the index keeps per endpoint.
pub(crate) const MAX_LIMIT: usize = 500;
/// How long a listing waits for the attempt log to read what was written before it.
const CATCH_UP_PATIENCE: Duration = Duration::from_secs(5);

/// `GET /webhooks/{id}/deliveries`.
#[utoipa::path(
    get,
    path = "/webhooks/{id}/deliveries",
    operation_id = "list_deliveries",
    tag = "deliveries",
    summary = "A webhook's recent deliveries and their attempts",
    description = "From the attempt log: times, statuses and codes, never a payload, header or response.",
    params(
        ("id" = String, Path, description = "The webhook's id"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 500, description = "Deliveries to list (default 50)"),
    ),
    responses(
        (status = 200, description = "Newest first", body = DeliveryList),
        (status = 400, description = "An unknown parameter, or a limit out of range", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 503, description = "The `endpoints` table could not be read", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let limit = limit(query.as_deref().unwrap_or_default())?;
    let webhook = find_kind(&state, &id, "webhook", "webhook").await?;
    let caught_up = state.attempts.catch_up(CATCH_UP_PATIENCE).await;
    let deliveries = state
        .attempts
        .recent(&webhook.id, limit)
        .iter()
        .map(shown)
        .collect();
    Ok(json_response(
        StatusCode::OK,
        DeliveryList {
            deliveries,
            caught_up,
        },
    ))
}

/// The `limit` query parameter: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
fn limit(query: &str) -> Result<usize, ApiError> {
    let mut limit = DEFAULT_LIMIT;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name != "limit" {
            return Err(ApiError::invalid(
                printable(&name),
                "unknown query parameter; known: limit",
            ));
        }
        limit = value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid("limit", format!("must be an integer from 1 to {MAX_LIMIT}"))
            })?;
    }
    Ok(limit)
}

/// A delivery as the API shows it.
fn shown(delivery: &Delivery) -> DeliveryView {
    DeliveryView {
        delivery_id: delivery.delivery_id.to_string(),
        event_id: delivery.event_id.clone(),
        event_type: delivery.event_type.clone(),
        status: delivery.status().to_owned(),
        attempts: delivery.attempts.iter().cloned().collect(),
        last_attempt_at: delivery.last_attempt_at().to_owned(),
        replay_of: delivery.replay_of.clone(),
        test: delivery.test,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_table() {
        for (query, want) in [
            ("", Some(50)),
            ("limit=1", Some(1)),
            ("limit=500", Some(500)),
            ("limit=7&limit=9", Some(9)),
        ] {
            assert_eq!(limit(query).ok(), want, "{query}");
        }
        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("limit=ten", "limit"),
            ("limit=", "limit"),
            ("limit=-1", "limit"),
            ("page=2", "page"),
        ] {
            let refusal = format!("{:?}", limit(query).unwrap_err());
            assert!(
                refusal.contains(&format!("field: Some({field:?})")),
                "{query}: {refusal}"
            );
        }
    }
}
