//! Verification as a receiver does it: the signature, the digest and the timestamp's
//! tolerance of each scheme, compared in constant time.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::{Request, Scheme, SignError, hex, hmac_sha256, standard_signature};

/// What a receiver holds to verify.
#[derive(Debug, Clone, Copy)]
pub enum Verifier<'a> {
    /// A PEM public key (`prequel_rsa`).
    PublicKeyPem(&'a str),
    /// A shared secret (the HMAC schemes).
    Secret(&'a str),
}

/// Verifies a signed request as a receiver would: signature, digest, and timestamp
/// within `tolerance_s` of `now`. `headers` are (name, value), names compared without case.
pub fn verify(
    scheme: Scheme,
    headers: &[(String, String)],
    request: Request<'_>,
    verifier: Verifier<'_>,
    tolerance_s: i64,
    now: time::OffsetDateTime,
) -> Result<(), SignError> {
    let get = |name: &'static str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .ok_or(SignError::Header(name))
    };
    let fresh = |at: i64| {
        let age = now.unix_timestamp() - at;
        if age.abs() > tolerance_s {
            Err(SignError::Stale(age, tolerance_s))
        } else {
            Ok(())
        }
    };
    let secret = || match verifier {
        Verifier::Secret(s) => Ok(s),
        Verifier::PublicKeyPem(_) => Err(SignError::NoKey),
    };
    match scheme {
        Scheme::None => Ok(()),
        Scheme::PrequelRsa => {
            let Verifier::PublicKeyPem(pem_text) = verifier else {
                return Err(SignError::NoKey);
            };
            let ts = get("X-Prequel-Webhook-Timestamp")?;
            let at =
                time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| SignError::Header("X-Prequel-Webhook-Timestamp"))?;
            if let Ok(d) = get("X-Prequel-Webhook-Digest")
                && !eq_ct(
                    d.to_ascii_lowercase().as_bytes(),
                    hex(digest::digest(&digest::SHA256, request.body).as_ref()).as_bytes(),
                )
            {
                return Err(SignError::DigestMismatch);
            }
            let signature = unhex(get("X-Prequel-Webhook-Signature")?)
                .ok_or(SignError::Header("X-Prequel-Webhook-Signature"))?;
            let spki = unpem(pem_text).ok_or(SignError::BadKey("not a PEM public key"))?;
            let rsa_public =
                spki_rsa_public_key(&spki).ok_or(SignError::BadKey("not an RSA public key"))?;
            let mut message = ts.as_bytes().to_vec();
            message.push(b'.');
            message.extend_from_slice(request.body);
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, rsa_public)
                .verify(&message, &signature)
                .map_err(|_| SignError::BadSignature)?;
            fresh(at.unix_timestamp())
        }
        Scheme::StandardWebhooks => {
            let id = get("webhook-id")?;
            let ts = get("webhook-timestamp")?;
            let at: i64 = ts
                .parse()
                .map_err(|_| SignError::Header("webhook-timestamp"))?;
            let expected = B64.encode(standard_signature(secret()?, id, ts, request.body)?);
            let ok = get("webhook-signature")?
                .split_whitespace()
                .filter_map(|s| s.strip_prefix("v1,"))
                .any(|s| eq_ct(s.as_bytes(), expected.as_bytes()));
            if !ok {
                return Err(SignError::BadSignature);
            }
            fresh(at)
        }
        Scheme::FivetranHmac => {
            let expected = hex(hmac_sha256(secret()?.as_bytes(), &[request.body]).as_ref());
            if !eq_ct(
                get("X-Fivetran-Signature-256")?
                    .to_ascii_lowercase()
                    .as_bytes(),
                expected.as_bytes(),
            ) {
                return Err(SignError::BadSignature);
            }
            Ok(())
        }
        Scheme::DataprepHmac => {
            let value = get("X-Webhook-Signature")?;
            let mut t = None;
            let mut sig = None;
            for part in value.split(',') {
                match part.split_once('=') {
                    Some(("t", v)) => t = Some(v),
                    Some(("sha256", v)) => sig = Some(v),
                    _ => {}
                }
            }
            let (t, sig) = (
                t.ok_or(SignError::Header("X-Webhook-Signature"))?,
                sig.ok_or(SignError::Header("X-Webhook-Signature"))?,
            );
            let at_ms: i64 = t
                .parse()
                .map_err(|_| SignError::Header("X-Webhook-Signature"))?;
            let signed: &[u8] = if matches!(request.method, "GET" | "DELETE") {
                request.url.as_bytes()
            } else {
                request.body
            };
            let expected =
                hex(hmac_sha256(secret()?.as_bytes(), &[t.as_bytes(), b".", signed]).as_ref());
            if !eq_ct(sig.to_ascii_lowercase().as_bytes(), expected.as_bytes()) {
                return Err(SignError::BadSignature);
            }
            fresh(at_ms.div_euclid(1000))
        }
    }
}

fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unpem(text: &str) -> Option<Vec<u8>> {
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    B64.decode(body).ok()
}

/// The RSAPublicKey (PKCS#1) inside a SubjectPublicKeyInfo: the BIT STRING's contents.
fn spki_rsa_public_key(spki: &[u8]) -> Option<&[u8]> {
    // SEQUENCE { SEQUENCE { algorithm }, BIT STRING { 0x00, RSAPublicKey } }
    let (outer, _) = der_element(spki, 0x30)?;
    let (_, rest) = der_element(outer, 0x30)?;
    let (bits, _) = der_element(rest, 0x03)?;
    bits.strip_prefix(&[0u8])
}

/// (contents, remainder) of a DER element with `tag` at the start of `data`.
fn der_element(data: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *data.first()? != tag {
        return None;
    }
    let first = *data.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7F);
        let len = data
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, 2 + n)
    };
    let contents = data.get(header..header + len)?;
    Some((contents, &data[header + len..]))
}
