//! Sealing secrets before they are written to Kafka, under master keys that can be
//! rotated.
//!
//! A sealed value is text: `hl2:<key id>:` + base64(nonce ‖ ciphertext ‖ tag).
//! - The key id names the master key (`HOOKLINE_MASTER_KEY`, 32 bytes in base64) it was
//!   sealed under: 8 hex digits derived from the key, so operators never name keys and
//!   an id gives nothing away.
//! - The cipher is AES-256-GCM-SIV (RFC 8452), nonce-misuse resistant, with a random
//!   96-bit nonce. Unlike AES-GCM's, its safe message count is no longer bounded by
//!   random-nonce collisions near 2^32 per key, which the target rate would reach
//!   within days.
//! - Each purpose has its own subkey, derived with HKDF-SHA256 from the master key. The
//!   purpose is the first segment of the value's context (`endpoint`, `delivery`,
//!   `key`, `event`, `trace`, `dead-letter`), and the whole context is authenticated.
//!
//! A [`Sealer`] seals with the newest master key and opens with any configured one.
//! Values of the first format, `hl1:` + base64(nonce ‖ ciphertext ‖ tag) (AES-256-GCM
//! directly under a master key, no key id), stay readable: each configured key is tried.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::aead::{
    AES_256_GCM, AES_256_GCM_SIV, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey,
};
use aws_lc_rs::{hkdf, rand};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

const LEGACY: &str = "hl1:";
const PREFIX: &str = "hl2:";
/// HKDF's salt: fixed, it separates hookline's derivations from any other use of the key.
const SALT: &[u8] = b"hookline seal v2";

/// Why a master key or a sealed value was refused. Never carries the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// A master key is not 32 bytes of base64.
    #[error(
        "HOOKLINE_MASTER_KEY and each of HOOKLINE_MASTER_KEYS_PREVIOUS must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)"
    )]
    BadMasterKey,
    /// Sealed under a master key that is not configured.
    #[error(
        "the value is sealed under master key {0}, which is not configured (add it to HOOKLINE_MASTER_KEYS_PREVIOUS)"
    )]
    UnknownKey(String),
    /// The value was not sealed by hookline, or not with these master keys, or not for
    /// this record.
    #[error("cannot open a sealed value: wrong master key or damaged value")]
    CannotOpen,
}

/// One master key: its id, its subkeys (by purpose, derived when first used) and the
/// key of the first format.
struct MasterKey {
    id: String,
    prk: hkdf::Prk,
    legacy: LessSafeKey,
    subkeys: RwLock<HashMap<String, Arc<LessSafeKey>>>,
}

/// An HKDF output length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl MasterKey {
    fn from_base64(text: &str) -> Result<MasterKey, SealError> {
        let raw = B64
            .decode(text.trim())
            .map_err(|_| SealError::BadMasterKey)?;
        if raw.len() != 32 {
            return Err(SealError::BadMasterKey);
        }
        let legacy = UnboundKey::new(&AES_256_GCM, &raw).map_err(|_| SealError::BadMasterKey)?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(&raw);
        let mut id = [0u8; 4];
        prk.expand(&[b"hookline key id"], Len(id.len()))
            .and_then(|okm| okm.fill(&mut id))
            .map_err(|_| SealError::BadMasterKey)?;
        Ok(MasterKey {
            id: id.iter().map(|b| format!("{b:02x}")).collect(),
            prk,
            legacy: LessSafeKey::new(legacy),
            subkeys: RwLock::new(HashMap::new()),
        })
    }

    /// The subkey of `context`'s purpose (its first segment).
    fn subkey(&self, context: &str) -> Arc<LessSafeKey> {
        let purpose = context.split('/').next().unwrap_or_default();
        if let Some(key) = self
            .subkeys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(purpose)
        {
            return key.clone();
        }
        let info = format!("hookline seal/{purpose}");
        let parts = [info.as_bytes()];
        // Expanding 32 bytes from a valid PRK cannot fail; a subkey from a failed
        // derivation would not be a key at all, so this is not left to chance.
        #[allow(clippy::expect_used)]
        let okm = self
            .prk
            .expand(&parts, &AES_256_GCM_SIV)
            .expect("HKDF expands 32 bytes");
        let key = Arc::new(LessSafeKey::new(UnboundKey::from(okm)));
        self.subkeys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(purpose.to_owned(), key.clone());
        key
    }
}

/// Seals with the newest master key; opens with any configured one.
pub struct Sealer {
    /// The newest first.
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("key_ids", &self.key_ids())
            .finish_non_exhaustive()
    }
}

/// What a sealed value says about the key it was sealed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SealedUnder {
    /// The first format, which names no key.
    Legacy,
    /// The key with this id.
    Key(String),
}

impl Sealer {
    /// A sealer with one master key (base64).
    pub fn from_base64(master_key: &str) -> Result<Sealer, SealError> {
        Sealer::from_keys(master_key, &[])
    }

    /// A sealer that seals under `newest` and also opens what `previous` keys sealed.
    pub fn from_keys(newest: &str, previous: &[&str]) -> Result<Sealer, SealError> {
        let mut keys = vec![MasterKey::from_base64(newest)?];
        for text in previous {
            let key = MasterKey::from_base64(text)?;
            if keys.iter().all(|k| k.id != key.id) {
                keys.push(key);
            }
        }
        Ok(Sealer { keys })
    }

    /// A new random master key, base64.
    pub fn new_master_key() -> String {
        let mut raw = [0u8; 32];
        // A master key from a failing RNG would be guessable: better not to start.
        #[allow(clippy::expect_used)]
        rand::fill(&mut raw).expect("the system random number generator failed");
        B64.encode(raw)
    }

    /// The id of the key values are sealed under now.
    pub fn key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Every configured key's id, the newest first.
    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Seals `plain`; `context` (e.g. the endpoint id and field) is authenticated, so a
    /// sealed value cannot be moved to another record.
    pub fn seal(&self, plain: &[u8], context: &str) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        // Even with a nonce-misuse-resistant cipher, nonces are drawn at random: never
        // seal without one.
        #[allow(clippy::expect_used)]
        rand::fill(&mut nonce).expect("the system random number generator failed");
        let mut buf = plain.to_vec();
        // Sealing in place cannot fail for AES-GCM-SIV with a valid key and nonce.
        let _ = key.subkey(context).seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buf,
        );
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{PREFIX}{}:{}", key.id, B64.encode(out))
    }

    /// Opens a value sealed with [`Sealer::seal`] (or in the first format) and the same
    /// `context`, under any configured key.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SealError> {
        if let Some(rest) = sealed.strip_prefix(PREFIX) {
            let (id, body) = rest.split_once(':').ok_or(SealError::CannotOpen)?;
            let key = self
                .keys
                .iter()
                .find(|k| k.id == id)
                .ok_or_else(|| SealError::UnknownKey(printable_id(id)))?;
            return open_with(&key.subkey(context), body, context);
        }
        let body = sealed.strip_prefix(LEGACY).ok_or(SealError::CannotOpen)?;
        self.keys
            .iter()
            .find_map(|k| open_with(&k.legacy, body, context).ok())
            .ok_or(SealError::CannotOpen)
    }

    /// The value sealed under the newest key: `None` when it already is, else the value
    /// opened and sealed again.
    pub fn reseal(&self, sealed: &str, context: &str) -> Result<Option<String>, SealError> {
        if Sealer::sealed_under(sealed) == Some(SealedUnder::Key(self.key_id().to_owned())) {
            return Ok(None);
        }
        let plain = self.open(sealed, context)?;
        Ok(Some(self.seal(&plain, context)))
    }

    /// Which key a sealed value names; `None` when it is not a sealed value.
    pub fn sealed_under(value: &str) -> Option<SealedUnder> {
        if let Some(rest) = value.strip_prefix(PREFIX) {
            return rest
                .split_once(':')
                .map(|(id, _)| SealedUnder::Key(printable_id(id)));
        }
        value.starts_with(LEGACY).then_some(SealedUnder::Legacy)
    }

    /// True when `value` looks sealed.
    pub fn is_sealed(value: &str) -> bool {
        value.starts_with(PREFIX) || value.starts_with(LEGACY)
    }
}

fn open_with(key: &LessSafeKey, body: &str, context: &str) -> Result<Vec<u8>, SealError> {
    let mut raw = B64.decode(body).map_err(|_| SealError::CannotOpen)?;
    let nonce = raw.get(..NONCE_LEN).ok_or(SealError::CannotOpen)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::CannotOpen)?;
    // Opened where it was decoded: the plaintext moves to the front, no copy.
    let len = key
        .open_within(nonce, Aad::from(context.as_bytes()), &mut raw, NONCE_LEN..)
        .map_err(|_| SealError::CannotOpen)?
        .len();
    raw.truncate(len);
    Ok(raw)
}

/// A key id as it may be shown: 8 hex digits at most, anything else dropped.
fn printable_id(id: &str) -> String {
    id.chars().filter(char::is_ascii_hexdigit).take(8).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A value in the first format, sealed as the code before key ids did.
    fn legacy_seal(master: &str, plain: &[u8], context: &str) -> String {
        let raw = B64.decode(master).unwrap();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).unwrap());
        let nonce = [7u8; NONCE_LEN];
        let mut buf = plain.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut buf,
        )
        .unwrap();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        format!("{LEGACY}{}", B64.encode(out))
    }

    #[test]
    fn values_sealed_before_a_rotation_open_after_it_and_new_ones_use_the_new_key() {
        let (old, new) = (Sealer::new_master_key(), Sealer::new_master_key());
        let before = Sealer::from_base64(&old).unwrap();
        let sealed_before = before.seal(b"s3cr3t", "endpoint/e1/secret");
        let legacy = legacy_seal(&old, b"older", "endpoint/e1/api_key");

        let rotated = Sealer::from_keys(&new, &[&old]).unwrap();
        assert_eq!(rotated.key_ids(), vec![rotated.key_id(), before.key_id()]);
        assert_eq!(
            rotated.open(&sealed_before, "endpoint/e1/secret").unwrap(),
            b"s3cr3t"
        );
        assert_eq!(
            rotated.open(&legacy, "endpoint/e1/api_key").unwrap(),
            b"older"
        );
        let sealed_after = rotated.seal(b"s3cr3t", "endpoint/e1/secret");
        assert_eq!(
            Sealer::sealed_under(&sealed_after),
            Some(SealedUnder::Key(rotated.key_id().to_owned()))
        );

        // Re-sealed, a value no longer needs the old key.
        let resealed = rotated
            .reseal(&sealed_before, "endpoint/e1/secret")
            .unwrap()
            .unwrap();
        assert_eq!(
            rotated.reseal(&resealed, "endpoint/e1/secret").unwrap(),
            None
        );
        let only_new = Sealer::from_base64(&new).unwrap();
        assert_eq!(
            only_new.open(&resealed, "endpoint/e1/secret").unwrap(),
            b"s3cr3t"
        );
        assert_eq!(
            only_new.open(&sealed_before, "endpoint/e1/secret"),
            Err(SealError::UnknownKey(before.key_id().to_owned()))
        );
        assert_eq!(
            only_new.open(&legacy, "endpoint/e1/api_key"),
            Err(SealError::CannotOpen)
        );
    }

    #[test]
    fn a_value_opens_only_in_its_context_and_purposes_have_their_own_keys() {
        let sealer = Sealer::from_base64(&Sealer::new_master_key()).unwrap();
        let sealed = sealer.seal(b"x", "endpoint/e1/secret");
        assert_eq!(
            sealer.open(&sealed, "endpoint/e2/secret"),
            Err(SealError::CannotOpen)
        );
        // The same nonce and ciphertext under another purpose's subkey do not open.
        let body = sealed.rsplit(':').next().unwrap();
        let other = sealer.keys[0].subkey("delivery/d1");
        assert!(open_with(&other, body, "endpoint/e1/secret").is_err());
        assert!(
            open_with(
                &sealer.keys[0].subkey("endpoint/x"),
                body,
                "endpoint/e1/secret"
            )
            .is_ok()
        );
        // Two seals of one value differ (random nonces).
        assert_ne!(sealed, sealer.seal(b"x", "endpoint/e1/secret"));
    }

    #[test]
    fn key_ids_are_stable_and_bad_values_are_refused() {
        let key = Sealer::new_master_key();
        let (a, b) = (
            Sealer::from_base64(&key).unwrap(),
            Sealer::from_base64(&key).unwrap(),
        );
        assert_eq!(a.key_id(), b.key_id());
        assert_eq!(a.key_id().len(), 8);
        assert!(Sealer::from_keys(&key, &["short"]).is_err());
        assert_eq!(Sealer::from_keys(&key, &[&key]).unwrap().key_ids().len(), 1);
        for bad in [
            "",
            "hl2:",
            "hl2:nothex",
            "hl2:abcd:%%%",
            "hl1:AAAA",
            "plain",
        ] {
            assert!(a.open(bad, "endpoint/e1/secret").is_err(), "{bad}");
        }
        // A nonce and less than a tag: refused, under either format.
        let short = B64.encode([0u8; NONCE_LEN + 5]);
        for bad in [
            format!("hl1:{short}"),
            format!("{PREFIX}{}:{short}", a.key_id()),
        ] {
            assert!(a.open(&bad, "endpoint/e1/secret").is_err(), "{bad}");
        }
        assert_eq!(Sealer::sealed_under("plain"), None);
        assert_eq!(Sealer::sealed_under("hl1:AAAA"), Some(SealedUnder::Legacy));
        assert!(!format!("{a:?}").contains(&key));
    }
}
