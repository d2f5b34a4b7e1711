//! Endpoints as the API reads and writes them: versions (`ETag`, `If-Match`), reads
//! after a sync, and every write through the one writer of `endpoints`
//! ([`crate::table_writer`]), each one the record as it is plus one version.

use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use wire::Endpoint;

use crate::AppState;
use crate::error::ApiError;
use crate::table_writer::{Also, Change, Outcome, Target};

/// Changes endpoint `id` as `decide` says from its current record, through the one
/// writer; a record written gets the current version plus one.
pub(crate) async fn change(
    state: &AppState,
    id: &str,
    mut decide: impl FnMut(Option<Endpoint>) -> Result<Change<Endpoint>, ApiError>,
    also: Option<&Also>,
) -> Result<Outcome<Endpoint>, ApiError> {
    let target = Target {
        table: &state.endpoints,
        topic: &state.topics.endpoints,
        key: id,
    };
    state
        .writer
        .change(
            state,
            &target,
            |current| {
                let version = current.as_ref().map_or(0, |e| e.version);
                Ok(match decide(current)? {
                    Change::Put(mut endpoint) => {
                        endpoint.version = version + 1;
                        Change::Put(endpoint)
                    }
                    other => other,
                })
            },
            also,
        )
        .await
}

/// An `If-Match` precondition: the versions (ETags) a caller last saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// No `If-Match`: the change applies to whatever the endpoint is now.
    Unconditional,
    /// `If-Match: *`: the endpoint exists.
    Exists,
    /// The endpoint still has one of these versions.
    Versions(Vec<i64>),
}

impl Precondition {
    /// From a request's `If-Match` header: `*`, or entity tags as the `ETag` header
    /// gives them (`"3"`; a bare `3` is taken too). A weak tag never matches, as
    /// RFC 9110 asks of `If-Match`.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut versions = Vec::new();
        let mut any = false;
        for value in headers.get_all(IF_MATCH) {
            let value = value
                .to_str()
                .map_err(|_| ApiError::invalid("If-Match", "must be visible ASCII"))?;
            for tag in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                if tag == "*" {
                    any = true;
                } else if tag.starts_with("W/") {
                    versions.push(-1);
                } else {
                    let bare = tag
                        .strip_prefix('"')
                        .and_then(|t| t.strip_suffix('"'))
                        .unwrap_or(tag);
                    let version = bare.parse::<i64>().map_err(|_| {
                        ApiError::invalid(
                            "If-Match",
                            "must be * or entity tags as the ETag header gives them (\"3\")",
                        )
                    })?;
                    versions.push(version);
                }
            }
        }
        Ok(match (any, versions.is_empty()) {
            (true, _) => Precondition::Exists,
            (false, true) => Precondition::Unconditional,
            (false, false) => Precondition::Versions(versions),
        })
    }

    /// 412 unless `endpoint` satisfies it.
    pub(crate) fn check(&self, endpoint: &Endpoint) -> Result<(), ApiError> {
        match self {
            Precondition::Versions(v) if !v.contains(&endpoint.version) => {
                Err(ApiError::precondition_failed())
            }
            _ => Ok(()),
        }
    }
}

/// The `ETag` of an endpoint: its version, quoted.
pub(crate) fn etag(endpoint: &Endpoint) -> String {
    format!("\"{}\"", endpoint.version)
}

/// `response` with the endpoint's `ETag`.
pub(crate) fn with_etag(mut response: Response, endpoint: &Endpoint) -> Response {
    if let Ok(value) = HeaderValue::from_str(&etag(endpoint)) {
        response.headers_mut().insert(ETAG, value);
    }
    response
}

/// Brings the `endpoints` table up to date, so a read sees every acknowledged write.
pub(crate) async fn sync(state: &AppState) -> Result<(), ApiError> {
    state
        .endpoints
        .sync()
        .await
        .map_err(|_| ApiError::unavailable("HL-KAFKA-UNAVAILABLE"))
}

/// The endpoint `id` if it is of `kind`; 404 naming `what` otherwise, so each route
/// sees only its own kind of endpoint.
pub(crate) async fn find_kind(
    state: &AppState,
    id: &str,
    kind: &str,
    what: &str,
) -> Result<Endpoint, ApiError> {
    sync(state).await?;
    state
        .endpoints
        .get(id)
        .filter(|e| e.kind == kind)
        .ok_or_else(|| ApiError::not_found(what))
}

/// Writes a new endpoint (its id is new): version 1.
pub(crate) async fn create(state: &AppState, endpoint: Endpoint) -> Result<Endpoint, ApiError> {
    let id = endpoint.id.clone();
    let outcome = change(
        state,
        &id,
        |current| match current {
            Some(_) => Err(ApiError::conflict(
                "HL-API-CONFLICT",
                "an endpoint with this id exists",
            )),
            None => Ok(Change::Put(Box::new(endpoint.clone()))),
        },
        None,
    )
    .await?;
    written(outcome, "created")
}

/// Changes endpoint `id` of `kind` with `modify`, if it satisfies `precondition`;
/// `modify` runs on the endpoint as it is when the change is committed.
pub(crate) async fn update(
    state: &AppState,
    (id, kind, what): (&str, &str, &str),
    precondition: &Precondition,
    mut modify: impl FnMut(&mut Endpoint) -> Result<(), ApiError>,
) -> Result<Endpoint, ApiError> {
    let outcome = change(
        state,
        id,
        |current| {
            let mut endpoint = current
                .filter(|e| e.kind == kind)
                .ok_or_else(|| ApiError::not_found(what))?;
            precondition.check(&endpoint)?;
            modify(&mut endpoint)?;
            endpoint.updated_at = wire::now_rfc3339();
            Ok(Change::Put(Box::new(endpoint)))
        },
        None,
    )
    .await?;
    written(outcome, "updated")
}

/// Deletes endpoint `id` of `kind` (a tombstone) if it satisfies `precondition`;
/// returns it as it was.
pub(crate) async fn delete(
    state: &AppState,
    (id, kind, what): (&str, &str, &str),
    precondition: &Precondition,
) -> Result<Endpoint, ApiError> {
    let mut deleted = None;
    let outcome = change(
        state,
        id,
        |current| {
            let endpoint = current
                .filter(|e| e.kind == kind)
                .ok_or_else(|| ApiError::not_found(what))?;
            precondition.check(&endpoint)?;
            deleted = Some(endpoint);
            Ok(Change::Delete)
        },
        None,
    )
    .await?;
    match (outcome, deleted) {
        (Outcome::Deleted, Some(endpoint)) => {
            tracing::info!(endpoint_id = %endpoint.id, kind = %endpoint.kind, "endpoint deleted");
            Ok(endpoint)
        }
        _ => Err(ApiError::internal("HL-API-INTERNAL")),
    }
}

fn written(outcome: Outcome<Endpoint>, what: &str) -> Result<Endpoint, ApiError> {
    match outcome {
        Outcome::Put(endpoint) => {
            tracing::info!(endpoint_id = %endpoint.id, kind = %endpoint.kind, vendor = %endpoint.vendor, version = endpoint.version, "endpoint {what}");
            Ok(*endpoint)
        }
        Outcome::Deleted | Outcome::Kept => Err(ApiError::internal("HL-API-INTERNAL")),
    }
}
