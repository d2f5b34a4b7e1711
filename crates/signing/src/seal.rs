//! Sealing secrets before they are written to Kafka: AES-256-GCM under the master key
//! (`HOOKLINE_MASTER_KEY`, 32 bytes in base64), a random nonce per value. A sealed value
//! is text: `hl1:` + base64(nonce ‖ ciphertext ‖ tag).

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

const PREFIX: &str = "hl1:";

/// Why a master key or a sealed value was refused. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The master key is not 32 bytes of base64.
    #[error("HOOKLINE_MASTER_KEY must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)")]
    BadMasterKey,
    /// The value was not sealed by hookline, or not with this master key.
    #[error("cannot open a sealed value: wrong master key or damaged value")]
    CannotOpen,
}

/// Seals and opens values under the master key.
pub struct Sealer {
    key: LessSafeKey,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

impl Sealer {
    /// A sealer from the base64 master key.
    pub fn from_base64(master_key: &str) -> Result<Sealer, SealError> {
        let raw = B64
            .decode(master_key.trim())
            .map_err(|_| SealError::BadMasterKey)?;
        if raw.len() != 32 {
            return Err(SealError::BadMasterKey);
        }
        let key = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| SealError::BadMasterKey)?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    /// A new random master key, base64.
    pub fn new_master_key() -> String {
        let mut raw = [0u8; 32];
        // A master key from a failing RNG would be guessable: better not to start.
        #[allow(clippy::expect_used)]
        rand::fill(&mut raw).expect("the system random number generator failed");
        B64.encode(raw)
    }

    /// Seals `plain`; `context` (e.g. the endpoint id) is authenticated, so a sealed
    /// value cannot be moved to another record.
    pub fn seal(&self, plain: &[u8], context: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        // A repeated nonce breaks AES-GCM: never seal without a random one.
        #[allow(clippy::expect_used)]
        rand::fill(&mut nonce).expect("the system random number generator failed");
        let mut buf = plain.to_vec();
        // Sealing in place cannot fail for AES-GCM with a valid key and nonce.
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buf,
        );
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// Opens a value sealed with [`Sealer::seal`] and the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        let raw = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .ok_or(SealError::CannotOpen)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::CannotOpen);
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::CannotOpen)?;
        let mut buf = rest.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
            .map_err(|_| SealError::CannotOpen)?;
        Ok(plain.to_vec())
    }

    /// True when `value` looks sealed.
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX)
    }
}

/// The associated data of an endpoint's sealed field: a value sealed for one field of
/// one endpoint does not open as another.
pub fn endpoint_context(endpoint_id: &str, field: &str) -> String {
    format!("endpoint/{endpoint_id}/{field}")
}

/// The associated data of a delivery's sealed part, bound to where the request goes:
/// copied into a record with another URL, it does not open.
pub fn delivery_context(delivery_id: &str, part: &str, method: &str, url: &str) -> String {
    format!("delivery/{delivery_id}/{part}/{method} {url}")
}

/// The associated data of a sealed signing key.
pub fn key_context(kid: &str) -> String {
    format!("key/{kid}")
}

/// The associated data of a sealed sensitive field of an event (`path` inside `data`,
/// e.g. `error.transfer_log`): it opens only in that field of that event.
pub fn event_context(event_id: &str, path: &str) -> String {
    format!("event/{event_id}/{path}")
}
