//! Rotating the master key: `GET /keys/master` says which master keys are configured
//! and what the producer's tables (`endpoints`, `keys`) hold sealed under each;
//! `POST /keys/master/reseal` seals every value of those tables again under the
//! newest key, each record through the one writer (so a concurrent PATCH or key
//! rotation is never overwritten). Key ids are not secret; values never leave.
//!
//! The other topics (events, rendered deliveries, retry tiers, dead letters, the
//! aggregator's changelog) hold values sealed under the key of their time until their
//! retention passes or they are delivered: earlier keys stay configured in
//! `HOOKLINE_MASTER_KEYS_PREVIOUS` until then.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use signing::{SealedUnder, Sealer};
use wire::{Endpoint, SigningKey};

use crate::AppState;
use crate::api::json_response;
use crate::bodies::{ErrorBody, MasterKeys, ResealFailure, ResealReport};
use crate::endpoints;
use crate::error::ApiError;
use crate::table_writer::{Change, Outcome, Target};

/// The sealed fields of an endpoint, by name (also their sealing context).
fn endpoint_fields(e: &mut Endpoint) -> [(&'static str, &mut Option<String>); 3] {
    [
        ("api_key", &mut e.api_key),
        ("secret", &mut e.secret),
        ("previous_secret", &mut e.previous_secret),
    ]
}

/// The label of the key a value is sealed under; `None`: not sealed.
fn under(value: &str) -> Option<String> {
    Sealer::sealed_under(value).map(|u| match u {
        SealedUnder::Legacy => "hl1 (no key id)".to_owned(),
        SealedUnder::Key(id) => id,
    })
}

/// `GET /keys/master`.
#[utoipa::path(
    get,
    path = "/keys/master",
    operation_id = "master_keys",
    tag = "keys",
    summary = "Master keys and what the tables hold sealed under each",
    responses(
        (status = 200, description = "Key ids and counts (never a value)", body = MasterKeys),
        (status = 503, description = "A table could not be read", body = ErrorBody),
    ),
)]
pub async fn status(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, census(&state).await?))
}

/// What the tables hold sealed, counted by key.
async fn census(state: &AppState) -> Result<MasterKeys, ApiError> {
    endpoints::sync(state).await?;
    state
        .keys
        .sync()
        .await
        .map_err(|_| ApiError::unavailable("HL-KAFKA-UNAVAILABLE"))?;
    let mut by_key: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for mut e in state.endpoints.values() {
        for (_, value) in endpoint_fields(&mut e) {
            if let Some(label) = value.as_deref().and_then(under) {
                *by_key
                    .entry("endpoints")
                    .or_default()
                    .entry(label)
                    .or_default() += 1;
            }
        }
    }
    for k in state.keys.values() {
        if let Some(label) = under(&k.private_key_sealed) {
            *by_key.entry("keys").or_default().entry(label).or_default() += 1;
        }
    }
    let current = state.sealer.key_id();
    let elsewhere: u64 = by_key
        .values()
        .flat_map(|m| m.iter())
        .filter(|(label, _)| label.as_str() != current)
        .map(|(_, n)| n)
        .sum();
    Ok(MasterKeys {
        sealing_key: current.to_owned(),
        opening_keys: state
            .sealer
            .key_ids()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        sealed_values: by_key
            .into_iter()
            .map(|(table, keys)| (table.to_owned(), keys))
            .collect(),
        sealed_under_other_keys: elsewhere,
    })
}

/// `POST /keys/master/reseal`.
#[utoipa::path(
    post,
    path = "/keys/master/reseal",
    operation_id = "reseal",
    tag = "keys",
    summary = "Seal every value of the tables again under the newest master key",
    responses(
        (status = 200, description = "Every record resealed", body = ResealReport),
        (status = 207, description = "Some records could not be resealed (`failed` says which)", body = ResealReport),
        (status = 503, description = "Kafka did not take a change in time", body = ErrorBody),
    ),
)]
pub async fn reseal(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    endpoints::sync(&state).await?;
    let mut report = Report::default();
    let ids: Vec<String> = state
        .endpoints
        .select(|e| stale_endpoint(&state.sealer, e))
        .into_iter()
        .map(|e| e.id)
        .collect();
    for id in ids {
        let mut failed = None;
        let outcome = endpoints::change(
            &state,
            &id,
            |current| {
                let Some(mut e) = current else {
                    return Ok(Change::Keep);
                };
                let mut changed = false;
                let eid = e.id.clone();
                for (field, value) in endpoint_fields(&mut e) {
                    let Some(sealed) = value.as_deref() else {
                        continue;
                    };
                    if !Sealer::is_sealed(sealed) {
                        continue;
                    }
                    match state
                        .sealer
                        .reseal(sealed, &signing::endpoint_context(&eid, field))
                    {
                        Ok(Some(new)) => {
                            *value = Some(new);
                            changed = true;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            failed = Some(format!("{field}: {e}"));
                            return Ok(Change::Keep);
                        }
                    }
                }
                Ok(if changed {
                    Change::Put(Box::new(e))
                } else {
                    Change::Keep
                })
            },
            None,
        )
        .await?;
        report.count("endpoints", &id, &outcome, failed);
    }
    for key in [service_kit::SIGNING_KEY, service_kit::MASTER_CHECK] {
        let mut failed = None;
        let target = Target {
            table: &state.keys,
            topic: &state.topics.keys,
            key,
        };
        let outcome = state
            .writer
            .change(
                &state,
                &target,
                |current: Option<SigningKey>| {
                    let Some(mut k) = current else {
                        return Ok(Change::Keep);
                    };
                    match state
                        .sealer
                        .reseal(&k.private_key_sealed, &signing::key_context(&k.kid))
                    {
                        Ok(Some(new)) => {
                            k.private_key_sealed = new;
                            Ok(Change::Put(Box::new(k)))
                        }
                        Ok(None) => Ok(Change::Keep),
                        Err(e) => {
                            failed = Some(e.to_string());
                            Ok(Change::Keep)
                        }
                    }
                },
                None,
            )
            .await?;
        report.count("keys", key, &outcome, failed);
    }
    tracing::info!(
        resealed = report.resealed,
        failed = report.failed.len(),
        sealing_key = state.sealer.key_id(),
        "master key reseal done"
    );
    let after = census(&state).await?;
    Ok(json_response(
        if report.failed.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::MULTI_STATUS
        },
        ResealReport {
            resealed: report.resealed,
            failed: report.failed,
            after,
        },
    ))
}

/// Whether an endpoint holds a sealed value not under the newest key.
fn stale_endpoint(sealer: &Sealer, e: &Endpoint) -> bool {
    [&e.api_key, &e.secret, &e.previous_secret]
        .into_iter()
        .flatten()
        .filter_map(|v| Sealer::sealed_under(v))
        .any(|u| u != SealedUnder::Key(sealer.key_id().to_owned()))
}

#[derive(Default)]
struct Report {
    resealed: u64,
    failed: Vec<ResealFailure>,
}

impl Report {
    fn count<V>(&mut self, table: &str, key: &str, outcome: &Outcome<V>, failed: Option<String>) {
        if let Some(reason) = failed {
            self.failed.push(ResealFailure {
                table: table.to_owned(),
                key: key.to_owned(),
                reason,
            });
        } else if matches!(outcome, Outcome::Put(_)) {
            self.resealed += 1;
        }
    }
}
