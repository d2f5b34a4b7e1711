//! Webhook signing as the documents hookline follows describe it, byte for byte, so a
//! receiver written against those documents verifies hookline's requests unchanged;
//! the same logic verifies them ([`verify`]); and the sealing of secrets at rest.
//!
//! | scheme | headers | signed bytes |
//! |---|---|---|
//! | `prequel_rsa` | `X-Prequel-Webhook-Timestamp` (RFC 3339), `-Signature` (hex), `-Digest` (hex SHA-256 of the body) | `timestamp.body`, RSASSA-PKCS1-v1_5 SHA-256 |
//! | `standard_webhooks` | `webhook-id`, `webhook-timestamp` (unix s), `webhook-signature` (`v1,<base64>` per secret) | `id.timestamp.body`, HMAC-SHA256 |
//! | `fivetran_hmac` | `X-Fivetran-Signature-256` (hex, upper case) | the body, HMAC-SHA256 |
//! | `dataprep_hmac` | `X-Webhook-Signature: t=<unix ms>,sha256=<hex>` | `t.body` (`t.url` for GET and DELETE), HMAC-SHA256 |
//!
//! RSA runs on aws-lc-rs (constant-time, the `rsa` crate carries RUSTSEC-2023-0071).

mod seal;
mod verify;

use std::fmt::Write as _;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use aws_lc_rs::{digest, hmac, rand};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

pub use seal::{
    SealError, SealedUnder, Sealer, delivery_context, endpoint_context, event_context, key_context,
};
pub use verify::{Verifier, verify};

/// A signing scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Prequel's RSA PKCS#1 v1.5 SHA-256 over `timestamp.body`.
    PrequelRsa,
    /// Standard Webhooks (HMAC-SHA256 over `id.timestamp.body`).
    StandardWebhooks,
    /// Fivetran (HMAC-SHA256 over the body).
    FivetranHmac,
    /// Dataprep (HMAC-SHA256 over `t.body`, or `t.url` for GET and DELETE).
    DataprepHmac,
    /// Not signed.
    None,
}

/// Every scheme's name.
pub const SCHEMES: &[&str] = &[
    "prequel_rsa",
    "standard_webhooks",
    "fivetran_hmac",
    "dataprep_hmac",
    "none",
];

impl Scheme {
    /// The scheme named `name`.
    pub fn parse(name: &str) -> Option<Scheme> {
        Some(match name {
            "prequel_rsa" => Scheme::PrequelRsa,
            "standard_webhooks" => Scheme::StandardWebhooks,
            "fivetran_hmac" => Scheme::FivetranHmac,
            "dataprep_hmac" => Scheme::DataprepHmac,
            "none" => Scheme::None,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::PrequelRsa => "prequel_rsa",
            Scheme::StandardWebhooks => "standard_webhooks",
            Scheme::FivetranHmac => "fivetran_hmac",
            Scheme::DataprepHmac => "dataprep_hmac",
            Scheme::None => "none",
        }
    }

    /// Whether the scheme signs with an endpoint secret.
    pub fn needs_secret(self) -> bool {
        matches!(
            self,
            Scheme::StandardWebhooks | Scheme::FivetranHmac | Scheme::DataprepHmac
        )
    }
}

/// Why signing or verification failed. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// No key or secret to sign with.
    #[error("no signing key or secret")]
    NoKey,
    /// A key or secret is malformed.
    #[error("malformed key or secret: {0}")]
    BadKey(&'static str),
    /// A required header is missing or malformed.
    #[error("missing or malformed header {0}")]
    Header(&'static str),
    /// The signature does not match.
    #[error("bad signature")]
    BadSignature,
    /// The body does not match its digest header.
    #[error("digest mismatch: the body is not the one signed")]
    DigestMismatch,
    /// The timestamp is outside the tolerance.
    #[error("stale timestamp: {0} s from now, tolerance {1} s")]
    Stale(i64, i64),
}

impl SignError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            SignError::NoKey | SignError::BadKey(_) => "HL-SIGN-KEY",
            SignError::Header(_) => "HL-SIGN-HEADER",
            SignError::BadSignature => "HL-SIGN-BAD-SIGNATURE",
            SignError::DigestMismatch => "HL-SIGN-DIGEST",
            SignError::Stale(..) => "HL-SIGN-STALE",
        }
    }
}

/// The account's RSA key pair, with its id.
pub struct RsaKey {
    pair: RsaKeyPair,
    /// Key id, published with the public key.
    pub kid: String,
}

impl std::fmt::Debug for RsaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RsaKey({}, [private key redacted])", self.kid)
    }
}

impl RsaKey {
    /// A new key pair (2048 bits or more).
    pub fn generate(bits: usize, kid: impl Into<String>) -> Result<RsaKey, SignError> {
        let size = match bits {
            2048 => aws_lc_rs::rsa::KeySize::Rsa2048,
            3072 => aws_lc_rs::rsa::KeySize::Rsa3072,
            4096 => aws_lc_rs::rsa::KeySize::Rsa4096,
            _ => return Err(SignError::BadKey("RSA keys are 2048, 3072 or 4096 bits")),
        };
        let pair = RsaKeyPair::generate(size)
            .map_err(|_| SignError::BadKey("RSA key generation failed"))?;
        Ok(RsaKey {
            pair,
            kid: kid.into(),
        })
    }

    /// A key pair from its PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8], kid: impl Into<String>) -> Result<RsaKey, SignError> {
        let pair =
            RsaKeyPair::from_pkcs8(der).map_err(|_| SignError::BadKey("not an RSA PKCS#8 key"))?;
        Ok(RsaKey {
            pair,
            kid: kid.into(),
        })
    }

    /// The private key as PKCS#8 DER (seal it before storing it).
    pub fn pkcs8_der(&self) -> Result<Vec<u8>, SignError> {
        let der: Pkcs8V1Der<'_> = self
            .pair
            .as_der()
            .map_err(|_| SignError::BadKey("cannot encode the key"))?;
        Ok(der.as_ref().to_vec())
    }

    /// The public key as PEM (`BEGIN PUBLIC KEY`, SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> Result<String, SignError> {
        let der = self
            .pair
            .public_key()
            .as_der()
            .map_err(|_| SignError::BadKey("cannot encode the public key"))?;
        Ok(pem("PUBLIC KEY", der.as_ref()))
    }

    /// RSASSA-PKCS1-v1_5 SHA-256 of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut out = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &rand::SystemRandom::new(),
                message,
                &mut out,
            )
            .map_err(|_| SignError::BadKey("RSA signing failed"))?;
        Ok(out)
    }
}

/// What is signed: the request as it goes on the wire.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Full URL.
    pub url: &'a str,
    /// Raw body.
    pub body: &'a [u8],
    /// The delivery id (`webhook-id` of Standard Webhooks).
    pub id: &'a str,
}

/// Keys to sign with: the account RSA key, and the endpoint's secrets (several during a
/// rotation overlap; the first is current).
#[derive(Debug, Clone, Copy, Default)]
pub struct Keys<'a> {
    /// The account's current RSA key.
    pub rsa: Option<&'a RsaKey>,
    /// Endpoint secrets, current first.
    pub secrets: &'a [String],
}

/// The headers that sign `request` under `scheme` at `now`.
pub fn sign(
    scheme: Scheme,
    request: Request<'_>,
    keys: Keys<'_>,
    now: time::OffsetDateTime,
) -> Result<Vec<(String, String)>, SignError> {
    let h = |name: &str, value: String| (name.to_owned(), value);
    Ok(match scheme {
        Scheme::None => Vec::new(),
        Scheme::PrequelRsa => {
            let key = keys.rsa.ok_or(SignError::NoKey)?;
            let ts = prequel_timestamp(now);
            let signature = key.sign(&prequel_message(&ts, request.body))?;
            prequel_headers(ts, &signature, &sha256(request.body), &key.kid)
        }
        Scheme::StandardWebhooks => {
            let ts = now.unix_timestamp().to_string();
            // The current secret must sign; an older one that does not is left out.
            let (current, older) = keys.secrets.split_first().ok_or(SignError::NoKey)?;
            let mut signatures = vec![format!(
                "v1,{}",
                B64.encode(standard_signature(current, request.id, &ts, request.body)?)
            )];
            signatures.extend(
                older
                    .iter()
                    .filter_map(|s| standard_signature(s, request.id, &ts, request.body).ok())
                    .map(|tag| format!("v1,{}", B64.encode(tag))),
            );
            vec![
                h("webhook-id", request.id.to_owned()),
                h("webhook-timestamp", ts),
                h("webhook-signature", signatures.join(" ")),
            ]
        }
        Scheme::FivetranHmac => {
            let secret = keys.secrets.first().ok_or(SignError::NoKey)?;
            vec![h(
                "X-Fivetran-Signature-256",
                hex(hmac_sha256(secret.as_bytes(), &[request.body]).as_ref()).to_ascii_uppercase(),
            )]
        }
        Scheme::DataprepHmac => {
            let secret = keys.secrets.first().ok_or(SignError::NoKey)?;
            let t = (now.unix_timestamp_nanos() / 1_000_000).to_string();
            let signed: &[u8] = if matches!(request.method, "GET" | "DELETE") {
                request.url.as_bytes()
            } else {
                request.body
            };
            let mac = hmac_sha256(secret.as_bytes(), &[t.as_bytes(), b".", signed]);
            vec![h(
                "X-Webhook-Signature",
                format!("t={t},sha256={}", hex(mac.as_ref())),
            )]
        }
    })
}

/// The timestamp a Prequel RSA signature covers: RFC 3339 in whole seconds, UTC. Two
/// requests with one timestamp, one key and one body have one signature, so a caller
/// that signs many (a fan-out) can make the RSA operation once.
pub fn prequel_timestamp(now: time::OffsetDateTime) -> String {
    rfc3339_seconds(now)
}

/// The bytes a Prequel RSA signature covers: `timestamp.body`.
pub fn prequel_message(timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    message
}

/// The Prequel RSA headers from a signature of [`prequel_message`] (made by
/// [`RsaKey::sign`]) and the SHA-256 of the body.
pub fn prequel_headers(
    timestamp: String,
    signature: &[u8],
    body_sha256: &[u8],
    kid: &str,
) -> Vec<(String, String)> {
    vec![
        ("X-Prequel-Webhook-Timestamp".to_owned(), timestamp),
        ("X-Prequel-Webhook-Signature".to_owned(), hex(signature)),
        ("X-Prequel-Webhook-Digest".to_owned(), hex(body_sha256)),
        ("X-Prequel-Webhook-Key-Id".to_owned(), kid.to_owned()),
    ]
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// A new Standard Webhooks secret: `whsec_` and 24 random bytes in base64.
pub fn new_standard_secret() -> String {
    let mut bytes = [0u8; 24];
    #[allow(clippy::expect_used)]
    rand::fill(&mut bytes).expect("the system random number generator failed");
    format!("whsec_{}", B64.encode(bytes))
}

/// True when `secret` is a usable Standard Webhooks secret (`whsec_` + base64).
pub fn valid_standard_secret(secret: &str) -> bool {
    secret
        .strip_prefix("whsec_")
        .is_some_and(|b| B64.decode(b).is_ok_and(|k| k.len() >= 16))
}

fn standard_signature(
    secret: &str,
    id: &str,
    ts: &str,
    body: &[u8],
) -> Result<hmac::Tag, SignError> {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| B64.decode(b).ok())
        .ok_or(SignError::BadKey(
            "a Standard Webhooks secret is whsec_ followed by base64",
        ))?;
    Ok(hmac_sha256(
        &key,
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    ))
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    ctx.sign()
}

/// RFC 3339 in UTC with seconds, as Prequel's documents show it: `2023-10-15T14:30:00Z`.
fn rfc3339_seconds(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
