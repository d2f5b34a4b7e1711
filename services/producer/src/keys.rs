//! The account's webhook signing key: created on first start, sealed in the `keys`
//! topic, published at `GET /public/signatures/webhook-public-key`, rotated by
//! `POST /signatures/webhook-key/rotate`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine as _;
use serde_json::json;
use wire::SigningKey;

use crate::AppState;
use crate::api::json_response;
use crate::error::ApiError;

use service_kit::SIGNING_KEY;

/// Creates the signing key on first start (the master key was checked against an
/// existing one by `service_kit::check_master_key`).
pub async fn ensure_signing_key(state: &AppState) -> anyhow::Result<()> {
    if state.keys.get(SIGNING_KEY).is_none() {
        let key = rotate(state)
            .await
            .map_err(|e| anyhow::anyhow!("creating the signing key: {e:?}"))?;
        tracing::info!(kid = %key.kid, "webhook signing key created");
    }
    Ok(())
}

/// Makes a new key pair current.
async fn rotate(state: &AppState) -> Result<SigningKey, ApiError> {
    let kid = uuid::Uuid::now_v7().to_string();
    let pair = signing::RsaKey::generate(2048, kid.clone())
        .map_err(|_| ApiError::internal("HL-SIGN-KEY"))?;
    let der = pair
        .pkcs8_der()
        .map_err(|_| ApiError::internal("HL-SIGN-KEY"))?;
    // The key being replaced stays published for a while: deliveries signed just
    // before the rotation (and their retries in flight) still verify.
    let previous_keys = state
        .keys
        .get(SIGNING_KEY)
        .map(|old| {
            let mut keys = vec![wire::RetiredKey {
                kid: old.kid,
                public_key_pem: old.public_key_pem,
                retired_at: wire::now_rfc3339(),
            }];
            keys.extend(old.previous_keys.into_iter().take(2));
            keys
        })
        .unwrap_or_default();
    let record = SigningKey {
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
        previous_keys,
    };
    let bytes = state
        .registry
        .encode(&record)
        .map_err(|e| ApiError::internal(e.code()))?;
    let delivery = kafka_io::send_durably(
        &state.producer,
        &state.topics.keys,
        SIGNING_KEY.as_bytes(),
        Some(&bytes),
        None,
        &state.shutdown,
    )
    .await
    .map_err(|e| ApiError::from_send(&e))?;
    state.keys.apply(
        SIGNING_KEY,
        delivery.partition,
        delivery.offset,
        Some(record.clone()),
    );
    Ok(record)
}

fn public(key: &SigningKey) -> serde_json::Value {
    let previous: Vec<serde_json::Value> = key
        .previous_keys
        .iter()
        .map(|k| json!({"kid": k.kid, "public_key": k.public_key_pem, "retired_at": k.retired_at}))
        .collect();
    json!({"kid": key.kid, "algorithm": key.algorithm, "public_key": key.public_key_pem, "created_at": key.created_at, "previous_keys": previous})
}

/// `GET /public/signatures/webhook-public-key` (no auth: it is public).
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
pub async fn rotate_key(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let key = rotate(&state).await?;
    tracing::info!(kid = %key.kid, "webhook signing key rotated");
    Ok(json_response(StatusCode::OK, public(&key)))
}
