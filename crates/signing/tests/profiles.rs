//! Each profile signs and verifies; tampering, staleness and wrong keys fail; the
//! Standard Webhooks reference vector matches.

use signing::{Keys, Request, RsaKey, Scheme, Sealer, SignError, Verifier, sign, verify};
use time::OffsetDateTime;

fn at(unix: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix).expect("a valid time")
}

fn req<'a>(method: &'a str, body: &'a [u8]) -> Request<'a> {
    Request {
        method,
        url: "https://example.com/hook?x=1",
        body,
        id: "msg_1",
    }
}

#[test]
fn standard_webhooks_reference_vector() {
    // From the Standard Webhooks specification's reference implementation tests.
    let secret = vec!["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()];
    let request = Request {
        method: "POST",
        url: "",
        body: br#"{"test": 2432232314}"#,
        id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
    };
    let headers = sign(
        Scheme::StandardWebhooks,
        request,
        Keys {
            rsa: None,
            secrets: &secret,
        },
        at(1_614_265_330),
    )
    .unwrap();
    let signature = headers
        .iter()
        .find(|(k, _)| k == "webhook-signature")
        .unwrap();
    assert_eq!(
        signature.1,
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[test]
fn every_profile_round_trips_and_refuses_tampering_staleness_and_wrong_keys() {
    let key = RsaKey::generate(2048, "k1").unwrap();
    let other = RsaKey::generate(2048, "k2").unwrap();
    let pem = key.public_key_pem().unwrap();
    let other_pem = other.public_key_pem().unwrap();
    let whsec = vec![signing::new_standard_secret()];
    let plain = vec!["s3cret".to_owned()];
    let now = at(1_700_000_000);
    let body = br#"{"type":"transfer.error"}"#;
    let cases: Vec<(Scheme, Keys<'_>, Verifier<'_>, Verifier<'_>)> = vec![
        (
            Scheme::PrequelRsa,
            Keys {
                rsa: Some(&key),
                secrets: &[],
            },
            Verifier::PublicKeyPem(&pem),
            Verifier::PublicKeyPem(&other_pem),
        ),
        (
            Scheme::StandardWebhooks,
            Keys {
                rsa: None,
                secrets: &whsec,
            },
            Verifier::Secret(&whsec[0]),
            Verifier::Secret("whsec_AAAAAAAAAAAAAAAAAAAAAAAA"),
        ),
        (
            Scheme::FivetranHmac,
            Keys {
                rsa: None,
                secrets: &plain,
            },
            Verifier::Secret("s3cret"),
            Verifier::Secret("other"),
        ),
        (
            Scheme::DataprepHmac,
            Keys {
                rsa: None,
                secrets: &plain,
            },
            Verifier::Secret("s3cret"),
            Verifier::Secret("other"),
        ),
    ];
    for (scheme, keys, good, wrong) in cases {
        let name = scheme.name();
        let headers = sign(scheme, req("POST", body), keys, now).unwrap();
        assert_eq!(
            verify(scheme, &headers, req("POST", body), good, 300, now),
            Ok(()),
            "{name}"
        );
        let later = now + time::Duration::seconds(250);
        assert_eq!(
            verify(scheme, &headers, req("POST", body), good, 300, later),
            Ok(()),
            "{name} within tolerance"
        );
        let tampered = verify(
            scheme,
            &headers,
            req("POST", br#"{"type":"transfer.errorX"}"#),
            good,
            300,
            now,
        )
        .unwrap_err();
        assert!(
            matches!(
                tampered,
                SignError::BadSignature | SignError::DigestMismatch
            ),
            "{name}: {tampered:?}"
        );
        assert_eq!(
            verify(scheme, &headers, req("POST", body), wrong, 300, now),
            Err(SignError::BadSignature),
            "{name}"
        );
        if scheme != Scheme::FivetranHmac {
            let stale = verify(
                scheme,
                &headers,
                req("POST", body),
                good,
                300,
                now + time::Duration::seconds(301),
            )
            .unwrap_err();
            assert!(
                matches!(stale, SignError::Stale(301, 300)),
                "{name}: {stale:?}"
            );
        }
    }
}

#[test]
fn prequel_headers_are_as_documented() {
    let key = RsaKey::generate(2048, "k1").unwrap();
    let headers = sign(
        Scheme::PrequelRsa,
        req("POST", b"{}"),
        Keys {
            rsa: Some(&key),
            secrets: &[],
        },
        at(1_697_379_000),
    )
    .unwrap();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("X-Prequel-Webhook-Timestamp"), "2023-10-15T14:10:00Z");
    assert_eq!(
        get("X-Prequel-Webhook-Digest"),
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    assert_eq!(
        get("X-Prequel-Webhook-Signature").len(),
        512,
        "hex of a 2048-bit signature"
    );
}

#[test]
fn dataprep_signs_the_url_for_get_and_delete_in_milliseconds() {
    let secret = vec!["k".to_owned()];
    let now = OffsetDateTime::from_unix_timestamp_nanos(1_568_818_215_724_000_000).unwrap();
    let get = sign(
        Scheme::DataprepHmac,
        req("GET", b""),
        Keys {
            rsa: None,
            secrets: &secret,
        },
        now,
    )
    .unwrap();
    assert!(
        get[0].1.starts_with("t=1568818215724,sha256="),
        "{}",
        get[0].1
    );
    assert_eq!(
        verify(
            Scheme::DataprepHmac,
            &get,
            req("GET", b"ignored"),
            Verifier::Secret("k"),
            300,
            now
        ),
        Ok(())
    );
    let moved = Request {
        url: "https://example.com/other",
        ..req("GET", b"")
    };
    assert_eq!(
        verify(
            Scheme::DataprepHmac,
            &get,
            moved,
            Verifier::Secret("k"),
            300,
            now
        ),
        Err(SignError::BadSignature)
    );
}

#[test]
fn during_a_rotation_both_standard_signatures_are_sent() {
    let secrets = vec![
        signing::new_standard_secret(),
        signing::new_standard_secret(),
    ];
    let now = at(1_700_000_000);
    let headers = sign(
        Scheme::StandardWebhooks,
        req("POST", b"x"),
        Keys {
            rsa: None,
            secrets: &secrets,
        },
        now,
    )
    .unwrap();
    for s in &secrets {
        assert_eq!(
            verify(
                Scheme::StandardWebhooks,
                &headers,
                req("POST", b"x"),
                Verifier::Secret(s),
                300,
                now
            ),
            Ok(())
        );
    }
}

#[test]
fn the_private_key_survives_pkcs8_and_never_prints() {
    let key = RsaKey::generate(2048, "k1").unwrap();
    let again = RsaKey::from_pkcs8(&key.pkcs8_der().unwrap(), "k1").unwrap();
    assert_eq!(
        key.public_key_pem().unwrap(),
        again.public_key_pem().unwrap()
    );
    assert!(format!("{key:?}").contains("redacted"));
    assert!(
        key.public_key_pem()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );
}

#[test]
fn sealing_round_trips_and_refuses_the_wrong_key_or_record() {
    let sealer = Sealer::from_base64(&Sealer::new_master_key()).unwrap();
    let sealed = sealer.seal(b"sk-live-123", "endpoint-1");
    assert!(Sealer::is_sealed(&sealed) && !sealed.contains("sk-live-123"));
    assert_eq!(sealer.open(&sealed, "endpoint-1").unwrap(), b"sk-live-123");
    assert!(
        sealer.open(&sealed, "endpoint-2").is_err(),
        "a sealed value is bound to its record"
    );
    let other = Sealer::from_base64(&Sealer::new_master_key()).unwrap();
    assert!(other.open(&sealed, "endpoint-1").is_err());
    assert!(Sealer::from_base64("too-short").is_err());
    assert_ne!(
        sealer.seal(b"x", "c"),
        sealer.seal(b"x", "c"),
        "a fresh nonce each time"
    );
}

#[test]
fn a_bad_previous_secret_does_not_stop_the_current_one_signing() {
    let secrets = vec![signing::new_standard_secret(), "not-a-whsec".to_owned()];
    let now = at(1_700_000_000);
    let headers = sign(
        Scheme::StandardWebhooks,
        req("POST", b"x"),
        Keys {
            rsa: None,
            secrets: &secrets,
        },
        now,
    )
    .unwrap();
    assert_eq!(
        verify(
            Scheme::StandardWebhooks,
            &headers,
            req("POST", b"x"),
            Verifier::Secret(&secrets[0]),
            300,
            now
        ),
        Ok(())
    );
    let bad_current = vec!["not-a-whsec".to_owned()];
    assert!(
        sign(
            Scheme::StandardWebhooks,
            req("POST", b"x"),
            Keys {
                rsa: None,
                secrets: &bad_current
            },
            now
        )
        .is_err()
    );
}
