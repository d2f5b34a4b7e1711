//! `/dead-letters`: list (metadata only), show (redacted) and replay dead letters, and
//! `POST /webhooks/{id}/recover` (replay one webhook's since a time). The work is
//! `dead_letter_ops`, shared with the CLI; this module maps HTTP to it and its errors
//! to coded JSON answers. Nothing it answers holds a URL query, a secret, a sealed
//! body or a response.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use dead_letter_ops::{
    Cursor, ListFilter, OpsError, Page, ReplayFilter, ReplayRequest, ReplaySummary,
};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::AppState;
use crate::api::{json_body, json_response};
use crate::bodies::{DeadLetterBody, ErrorBody};
use crate::error::ApiError;
use crate::requests::{RecoverInput, ReplayInput};

const LIST_PARAMS: &[&str] = &["endpoint_id", "since", "reason", "limit", "cursor"];
pub(crate) const REPLAY_FIELDS: &[&str] =
    &["endpoint_id", "since", "until", "ids", "dry_run", "all"];
pub(crate) const RECOVER_FIELDS: &[&str] = &["since", "until", "dry_run"];

/// `GET /dead-letters?endpoint_id=&since=&reason=&limit=&cursor=`: newest first.
#[utoipa::path(
    get,
    path = "/dead-letters",
    operation_id = "list_dead_letters",
    tag = "dead-letters",
    summary = "List dead letters, newest first",
    description = "Metadata only: no URL query, header value, body or response.",
    params(
        ("endpoint_id" = Option<String>, Query, description = "Only this endpoint's"),
        ("since" = Option<String>, Query, description = "RFC 3339, or a duration ago (`24h`)"),
        ("reason" = Option<String>, Query, description = "Only this reason code (`HL-DELIVERY-EXHAUSTED`, ...)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Entries per page (default 50)"),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "One page", body = dead_letter_ops::ListPage),
        (status = 400, description = "An unknown parameter, or one out of range", body = ErrorBody),
        (status = 503, description = "The dead-letter topic could not be read", body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(unknown) = params.keys().find(|k| !LIST_PARAMS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            printable(unknown),
            format!("unknown parameter; known: {}", LIST_PARAMS.join(", ")),
        ));
    }
    let now = OffsetDateTime::now_utc();
    let filter = ListFilter {
        endpoint_id: params.get("endpoint_id").filter(|s| !s.is_empty()).cloned(),
        since: params
            .get("since")
            .filter(|s| !s.is_empty())
            .map(|s| time_param("since", s, now))
            .transpose()?,
        reason_code: params.get("reason").filter(|s| !s.is_empty()).cloned(),
    };
    let limit = match params.get("limit") {
        None => dead_letter_ops::DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=dead_letter_ops::MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(
                    "limit",
                    format!("must be a number from 1 to {}", dead_letter_ops::MAX_LIMIT),
                )
            })?,
    };
    let cursor = params
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(|c| {
            Cursor::parse(c)
                .map_err(|_| ApiError::invalid("cursor", "not a cursor a listing returned"))
        })
        .transpose()?;
    let page = state
        .dead_letters
        .list(&filter, &Page { limit, cursor })
        .await
        .map_err(ops_error)?;
    Ok(json_response(StatusCode::OK, page))
}

/// `GET /dead-letters/{id}`: one dead letter, its sensitive parts redacted.
#[utoipa::path(
    get,
    path = "/dead-letters/{id}",
    operation_id = "show_dead_letter",
    tag = "dead-letters",
    summary = "Show a dead letter, redacted",
    params(("id" = String, Path, description = "The dead letter's id")),
    responses(
        (status = 200, description = "The dead letter: secrets redacted, sealed bodies and responses never shown", body = DeadLetterBody),
        (status = 404, description = "No such dead letter", body = ErrorBody),
        (status = 503, description = "The dead-letter topic could not be read", body = ErrorBody),
    ),
)]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let shown = state
        .dead_letters
        .show(&id)
        .await
        .map_err(ops_error)?
        .ok_or_else(|| ApiError::not_found("dead letter"))?;
    Ok(json_response(
        StatusCode::OK,
        DeadLetterBody { dead_letter: shown },
    ))
}

/// `POST /dead-letters/replay` with `{endpoint_id?, since?, until?, ids?, dry_run?, all?}`:
/// at least one filter, or `all: true`.
#[utoipa::path(
    post,
    path = "/dead-letters/replay",
    operation_id = "replay_dead_letters",
    tag = "dead-letters",
    summary = "Replay dead letters",
    description = "Each matching dead letter is re-queued once, with its delivery id: receivers deduplicate a replay of a delivery that had arrived.",
    request_body = ReplayInput,
    responses(
        (status = 200, description = "What was (or in a dry run, would be) replayed", body = dead_letter_ops::ReplaySummary),
        (status = 400, description = "No filter and no `all`, or an invalid field", body = ErrorBody),
        (status = 409, description = "Another replay is running", body = ErrorBody),
        (status = 413, description = "The body is larger than allowed", body = ErrorBody),
        (status = 503, description = "Kafka did not answer in time", body = ErrorBody),
    ),
)]
pub async fn replay(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let input = object(&json_body(body, state.max_body_bytes).await?, REPLAY_FIELDS)?;
    let now = OffsetDateTime::now_utc();
    let filter = ReplayFilter {
        endpoint_id: optional_string(&input, "endpoint_id")?,
        since: optional_string(&input, "since")?
            .map(|s| time_param("since", &s, now))
            .transpose()?,
        until: optional_string(&input, "until")?
            .map(|s| time_param("until", &s, now))
            .transpose()?,
        ids: match input.get("ids") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            ApiError::invalid(format!("ids[{i}]"), "must be a dead-letter id")
                        })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ApiError::invalid(
                    "ids",
                    "must be an array of dead-letter ids",
                ));
            }
        },
    };
    if filter.is_everything() && !flag(&input, "all")? {
        return Err(ApiError::invalid(
            "endpoint_id",
            "give endpoint_id, since, until or ids (or \"all\": true to replay every dead letter)",
        ));
    }
    let summary = run(&state, filter, flag(&input, "dry_run")?).await?;
    Ok(json_response(StatusCode::OK, summary))
}

/// `POST /webhooks/{id}/recover` with `{"since": T, "until"?, "dry_run"?}`: replays the
/// webhook's dead letters since `T`.
#[utoipa::path(
    post,
    path = "/webhooks/{id}/recover",
    operation_id = "recover_webhook",
    tag = "dead-letters",
    summary = "Replay a webhook's dead letters since a time",
    params(("id" = String, Path, description = "The webhook's id")),
    request_body = RecoverInput,
    responses(
        (status = 200, description = "What was (or in a dry run, would be) replayed", body = dead_letter_ops::ReplaySummary),
        (status = 400, description = "A missing or invalid field", body = ErrorBody),
        (status = 404, description = "No such webhook", body = ErrorBody),
        (status = 409, description = "Another replay is running", body = ErrorBody),
        (status = 413, description = "The body is larger than allowed", body = ErrorBody),
        (status = 503, description = "Kafka did not answer in time", body = ErrorBody),
    ),
)]
pub async fn recover(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let input = object(
        &json_body(body, state.max_body_bytes).await?,
        RECOVER_FIELDS,
    )?;
    let endpoint = crate::endpoints::find_kind(&state, &id, "webhook", "webhook").await?;
    let now = OffsetDateTime::now_utc();
    let since = optional_string(&input, "since")?
        .ok_or_else(|| ApiError::invalid("since", "missing required field"))?;
    let filter = ReplayFilter {
        endpoint_id: Some(endpoint.id),
        since: Some(time_param("since", &since, now)?),
        until: optional_string(&input, "until")?
            .map(|s| time_param("until", &s, now))
            .transpose()?,
        ids: Vec::new(),
    };
    let summary = run(&state, filter, flag(&input, "dry_run")?).await?;
    Ok(json_response(StatusCode::OK, summary))
}

async fn run(
    state: &AppState,
    filter: ReplayFilter,
    dry_run: bool,
) -> Result<ReplaySummary, ApiError> {
    let request = ReplayRequest {
        filter,
        dry_run,
        requested_by: "api".to_owned(),
    };
    let summary = state
        .dead_letters
        .replay(&request, &state.endpoints, &state.sealer, &|_| {})
        .await
        .map_err(ops_error)?;
    if !dry_run {
        state.metrics.replayed(&summary);
    }
    Ok(summary)
}

/// A time parameter: RFC 3339 or a duration ago (`24h`).
fn time_param(field: &str, text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, ApiError> {
    dead_letter_ops::parse_time(text, now).map_err(|e| ApiError::invalid(field, e.to_string()))
}

/// The body as an object holding only `fields`.
fn object(body: &Value, fields: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::malformed("the body must be a JSON object"));
    };
    if let Some(unknown) = map.keys().find(|k| !fields.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            printable(unknown),
            format!("unknown field; known fields: {}", fields.join(", ")),
        ));
    }
    Ok(map.clone())
}

fn optional_string(input: &Map<String, Value>, field: &str) -> Result<Option<String>, ApiError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::invalid(field, "must be a string")),
    }
}

fn flag(input: &Map<String, Value>, field: &str) -> Result<bool, ApiError> {
    match input.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(field, "must be a boolean")),
    }
}

/// A failed operation as an answer: Kafka's trouble is 503, a concurrent replay 409.
fn ops_error(e: OpsError) -> ApiError {
    match e {
        OpsError::Conflict => ApiError::conflict(e.code(), e.to_string()),
        OpsError::BadCursor => ApiError::invalid("cursor", "not a cursor a listing returned"),
        OpsError::Wire(_) => {
            tracing::error!(code = e.code(), "cannot encode a replayed delivery");
            ApiError::internal(e.code())
        }
        OpsError::Kafka(_)
        | OpsError::Stalled(_)
        | OpsError::NoTopic(_)
        | OpsError::Topics(_)
        | OpsError::NotCommitted(_) => {
            tracing::warn!(code = e.code(), error = %e, "dead-letter operation failed");
            ApiError::unavailable_because(e.code(), e.to_string())
        }
    }
}

/// Echoes a caller's value only when short and printable.
fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}
