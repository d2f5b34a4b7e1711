//! The account's webhook signing key: created on first start, sealed in the `keys`
//! topic, published at `GET /public/signatures/webhook-public-key`, rotated by
//! `POST /signatures/webhook-key/rotate`.

use std::sync::Arc;

use crate::bodies::{ErrorBody, PublicKey, RetiredKey};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use wire::SigningKey;

use crate::AppState;
use crate::api::json_response;
use crate::error::ApiError;
use crate::table_writer::{Change, Outcome, Target};

use service_kit::SIGNING_KEY;

/// Creates the signing key on first start (the master key was checked against an
/// existing one by `service_kit::check_master_key`); a replica that starts at the
/// same time finds it written and keeps it.
pub async fn ensure_signing_key(state: &AppState) -> anyhow::Result<()> {
    if state.keys.get(SIGNING_KEY).is_none() {
        let key = rotate(state, false)
            .await
            .map_err(|e| anyhow::anyhow!("creating the signing key: {e:?}"))?;
        tracing::info!(kid = %key.kid, "webhook signing key created");
    }
    Ok(())
}

/// Makes a new key pair current (only if there is none yet unless `replace`), through
/// the one writer of `keys`; returns the current key.
async fn rotate(state: &AppState, replace: bool) -> Result<SigningKey, ApiError> {
    let kid = uuid::Uuid::now_v7().to_string();
    let pair = signing::RsaKey::generate(2048, kid.clone())
        .map_err(|_| ApiError::internal("HL-SIGN-KEY"))?;
    let der = pair
        .pkcs8_der()
        .map_err(|_| ApiError::internal("HL-SIGN-KEY"))?;
    let fresh = SigningKey {
        kid: kid.clone(),
        algorithm: "RSASSA-PKCS1-v1_5-SHA256".to_owned(),
        public_key_pem: pair
            .public_key_pem()
            .map_err(|_| ApiError::internal("HL-SIGN-KEY"))?,
        private_key_sealed: state.sealer.seal(
            base64::engine::general_purpose::STANDARD
                .encode(der)
                .as_bytes(),
            &signing::key_context(&kid),
        ),
        created_at: wire::now_rfc3339(),
        previous_keys: Vec::new(),
    };
    let mut kept = None;
    let target = Target {
        table: &state.keys,
        topic: &state.topics.keys,
        key: SIGNING_KEY,
    };
    let outcome = state
        .writer
        .change(
            state,
            &target,
            |current| {
                let mut record = fresh.clone();
                match current {
                    Some(old) if !replace => {
                        kept = Some(old);
                        return Ok(Change::Keep);
                    }
                    // The key being replaced stays published for a while: deliveries
                    // signed just before the rotation (and their retries in flight)
                    // still verify.
                    Some(old) => {
                        record.previous_keys = vec![wire::RetiredKey {
                            kid: old.kid,
                            public_key_pem: old.public_key_pem,
                            retired_at: wire::now_rfc3339(),
                        }];
                        record
                            .previous_keys
                            .extend(old.previous_keys.into_iter().take(2));
                    }
                    None => {}
                }
                Ok(Change::Put(Box::new(record)))
            },
            None,
        )
        .await?;
    match (outcome, kept) {
        (Outcome::Put(record), _) => Ok(*record),
        (Outcome::Kept, Some(current)) => Ok(current),
        _ => Err(ApiError::internal("HL-SIGN-KEY")),
    }
}

fn public(key: &SigningKey) -> PublicKey {
    PublicKey {
        kid: key.kid.clone(),
        algorithm: key.algorithm.clone(),
        public_key: key.public_key_pem.clone(),
        created_at: key.created_at.clone(),
        previous_keys: key
            .previous_keys
            .iter()
            .map(|k| RetiredKey {
                kid: k.kid.clone(),
                public_key: k.public_key_pem.clone(),
                retired_at: k.retired_at.clone(),
            })
            .collect(),
    }
}

/// `GET /public/signatures/webhook-public-key` (no auth: it is public).
#[utoipa::path(
    get,
    path = "/public/signatures/webhook-public-key",
    operation_id = "public_key",
    tag = "keys",
    summary = "The public key `prequel_rsa` deliveries are signed with",
    security(()),
    responses(
        (status = 200, description = "The key, and keys rotated out recently", body = PublicKey),
        (status = 404, description = "No key yet", body = ErrorBody),
        (status = 503, description = "The `keys` table could not be read", body = ErrorBody),
    ),
)]
pub async fn public_key(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    state
        .keys
        .sync()
        .await
        .map_err(|_| ApiError::unavailable("HL-KAFKA-UNAVAILABLE"))?;
    let key = state
        .keys
        .get(SIGNING_KEY)
        .ok_or_else(|| ApiError::not_found("signing key"))?;
    Ok(json_response(StatusCode::OK, public(&key)))
}

/// `POST /signatures/webhook-key/rotate`: deliveries sent from now on use a new key.
#[utoipa::path(
    post,
    path = "/signatures/webhook-key/rotate",
    operation_id = "rotate_signing_key",
    tag = "keys",
    summary = "Rotate the webhook signing key",
    description = "Deliveries signed from now on use a new key; the old one stays published among `previous_keys`.",
    responses(
        (status = 200, description = "The new key", body = PublicKey),
        (status = 503, description = "Kafka did not take the change in time", body = ErrorBody),
    ),
)]
pub async fn rotate_key(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let key = rotate(&state, true).await?;
    tracing::info!(kid = %key.kid, "webhook signing key rotated");
    Ok(json_response(StatusCode::OK, public(&key)))
}
