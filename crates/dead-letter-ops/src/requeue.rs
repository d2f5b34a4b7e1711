//! The delivery a replay re-queues, without I/O: the dead letter's request with the
//! endpoint's current URL, signing and delivery policy, its sealed parts moved to the
//! new URL.
//!
//! What is kept as rendered: the method, the body and the headers (templates are not
//! run again; the event may be gone), and the URL of an endpoint whose URL is a
//! template (or empty: a vendor's public URL). A `generic_get` request keeps the event
//! it carries in its query, moved onto the endpoint's current URL.
//!
//! Seal contexts name the delivery id, method and URL (`signing::delivery_context`),
//! so every sealed part is opened with the old URL and sealed again with the new one.

use signing::Sealer;
use time::OffsetDateTime;
use wire::{DeadLetter, Endpoint, RenderedDelivery};

use crate::codes;

/// The delivery to re-queue for `letter` (whose request must be there) to `endpoint`
/// (its secrets open), or the refusal code.
pub fn requeue(
    letter: &DeadLetter,
    endpoint: &Endpoint,
    sealer: &Sealer,
    now: OffsetDateTime,
) -> Result<RenderedDelivery, &'static str> {
    let old = letter.delivery.as_ref().ok_or(codes::NOT_REPLAYABLE)?;
    if letter.reason.contains(dead_letter::BODY_DROPPED) {
        return Err(codes::BODY_DROPPED);
    }
    let mut d = open(old, sealer)?;
    d.url = current_url(old, endpoint)?;
    d.signing_scheme = if endpoint.signing_scheme.is_empty() {
        "none".to_owned()
    } else {
        endpoint.signing_scheme.clone()
    };
    d.signing_secrets = signing_secrets(endpoint, &d.signing_scheme, now);
    d.attempts.clear();
    d.due_at_ms = None;
    d.replay_of = Some(letter.id.clone());
    Ok(seal(d.with_policy_of(endpoint), sealer))
}

/// Where the replay goes: the endpoint's current URL when it is a plain URL, else the
/// rendered one (a template's output for this event, or a vendor's public URL).
pub fn current_url(
    delivery: &RenderedDelivery,
    endpoint: &Endpoint,
) -> Result<String, &'static str> {
    let configured = endpoint.url.trim();
    if configured.is_empty() || configured.contains("{{") {
        return Ok(delivery.url.clone());
    }
    let mut url = url::Url::parse(configured).map_err(|_| codes::BAD_URL)?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(codes::BAD_URL);
    }
    if endpoint.vendor == "generic_get" && delivery.method == "GET" {
        // The renderer appended the envelope (`type`, `version`, `api_version`,
        // `created_at`, `data.…`) to the endpoint's own query: carry it over.
        let rendered = url::Url::parse(&delivery.url).map_err(|_| codes::BAD_URL)?;
        let pairs: Vec<(String, String)> = rendered.query_pairs().into_owned().collect();
        let Some(start) = envelope_start(&pairs, &delivery.event_type) else {
            return Ok(delivery.url.clone());
        };
        url.query_pairs_mut().extend_pairs(&pairs[start..]);
    }
    Ok(url.to_string())
}

/// Where the envelope's pairs begin in a `generic_get` query: the last `type=<event
/// type>` followed by `version` and `api_version`.
fn envelope_start(pairs: &[(String, String)], event_type: &str) -> Option<usize> {
    (0..pairs.len()).rev().find(|&i| {
        pairs[i].0 == "type"
            && pairs[i].1 == event_type
            && pairs.get(i + 1).is_some_and(|p| p.0 == "version")
            && pairs.get(i + 2).is_some_and(|p| p.0 == "api_version")
    })
}

/// The HMAC secrets a delivery signs with now, as the renderer derives them: the
/// current secret, then the previous one while its overlap lasts.
fn signing_secrets(endpoint: &Endpoint, scheme: &str, now: OffsetDateTime) -> Vec<String> {
    if scheme == "none" || scheme == "prequel_rsa" {
        return Vec::new();
    }
    let previous = endpoint.previous_secret.clone().filter(|_| {
        endpoint
            .previous_secret_until
            .as_deref()
            .and_then(crate::parse_rfc3339)
            .is_some_and(|until| until > now)
    });
    endpoint.secret.iter().cloned().chain(previous).collect()
}

/// The delivery with its sealed parts open (in memory only); its signing secrets are
/// replaced by the endpoint's current ones, not opened.
fn open(d: &RenderedDelivery, sealer: &Sealer) -> Result<RenderedDelivery, &'static str> {
    let mut stripped = d.clone();
    stripped.signing_secrets.clear();
    service_kit::open_delivery(sealer, &stripped).map_err(|_| codes::SEAL_OPEN)
}

/// Seals what a delivery carries for its (new) URL, as the renderer does.
fn seal(d: RenderedDelivery, sealer: &Sealer) -> RenderedDelivery {
    service_kit::seal_delivery(sealer, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{Attempt, Header};

    const KEY: &str = "ziPT4SmMuMTwTwqeF6aldKiYNegAmm65VtVAqRVARKE=";

    fn sealer() -> Sealer {
        Sealer::from_base64(KEY).unwrap()
    }

    fn endpoint(url: &str) -> Endpoint {
        Endpoint {
            id: "ep-1".into(),
            kind: "webhook".into(),
            vendor: "generic_post".into(),
            url: url.into(),
            active: true,
            signing_scheme: "standard_webhooks".into(),
            secret: Some("whsec_new".into()),
            previous_secret: Some("whsec_old".into()),
            previous_secret_until: Some("2024-01-16T00:00:00Z".into()),
            timeout_ms: Some(2500),
            max_rps: Some(7),
            ..Endpoint::default()
        }
    }

    /// A dead letter whose request is sealed as the renderer seals it.
    fn sealed_letter(url: &str) -> DeadLetter {
        let s = sealer();
        let mut d = RenderedDelivery {
            delivery_id: "del-1".into(),
            event_id: "ev-1".into(),
            event_type: "transfer.error".into(),
            endpoint_id: "ep-1".into(),
            method: "POST".into(),
            url: url.into(),
            headers: vec![Header::new("Content-Type", "application/json")],
            sensitive_headers: vec![Header::new("Authorization", "Bearer key-1")],
            signing_scheme: "fivetran_hmac".into(),
            signing_secrets: vec!["old-secret".into()],
            body_sealed: true,
            body: b"{\"secret\":\"s\"}".to_vec(),
            timeout_ms: Some(100),
            due_at_ms: Some(5),
            attempts: vec![Attempt {
                attempt: 1,
                started_at: String::new(),
                duration_ms: 1,
                status: Some(503),
                error_code: None,
                response: None,
            }],
            ..RenderedDelivery::default()
        };
        d = seal(d, &s);
        DeadLetter {
            id: "dl-1".into(),
            reason_code: "HL-DELIVERY-REJECTED".into(),
            reason: "final".into(),
            delivery: Some(d),
            ..crate::list::tests::letter("dl-1", "2024-01-15T10:00:00Z", None, "HL-X")
        }
    }

    fn now() -> OffsetDateTime {
        crate::parse_rfc3339("2024-01-15T12:00:00Z").unwrap()
    }

    #[test]
    fn a_requeued_delivery_takes_the_endpoints_url_signing_and_policy_and_keeps_its_id() {
        let s = sealer();
        let letter = sealed_letter("https://old.example/hook");
        let d = requeue(&letter, &endpoint("https://new.example/v2"), &s, now()).unwrap();
        assert_eq!(d.delivery_id, "del-1");
        assert_eq!(d.url, "https://new.example/v2");
        assert_eq!(d.replay_of.as_deref(), Some("dl-1"));
        assert!(d.attempts.is_empty() && d.due_at_ms.is_none());
        assert_eq!((d.timeout_ms, d.max_rps), (Some(2500), Some(7)));
        assert_eq!(d.signing_scheme, "standard_webhooks");
        // Sealed for the new URL: opens there, and not under the old one.
        let ctx = |part: &str, url: &str| signing::delivery_context("del-1", part, "POST", url);
        let open = |v: &str, part: &str, url: &str| {
            s.open(v, &ctx(part, url))
                .map(|p| String::from_utf8(p).unwrap())
        };
        assert_eq!(
            open(
                &d.sensitive_headers[0].value,
                "header/authorization",
                "https://new.example/v2"
            )
            .unwrap(),
            "Bearer key-1"
        );
        assert!(
            open(
                &d.sensitive_headers[0].value,
                "header/authorization",
                "https://old.example/hook"
            )
            .is_err()
        );
        let secrets: Vec<String> = d
            .signing_secrets
            .iter()
            .map(|v| open(v, "signing-secret", "https://new.example/v2").unwrap())
            .collect();
        assert_eq!(secrets, ["whsec_new", "whsec_old"]);
        assert_eq!(
            open(
                std::str::from_utf8(&d.body).unwrap(),
                "body",
                "https://new.example/v2"
            )
            .unwrap(),
            "{\"secret\":\"s\"}"
        );
        assert_eq!(d.headers, letter.delivery.as_ref().unwrap().headers);
    }

    #[test]
    fn signing_follows_the_endpoints_scheme_and_rotation_window() {
        let s = sealer();
        let letter = sealed_letter("https://old.example/hook");
        let mut e = endpoint("https://new.example/v2");
        let later = crate::parse_rfc3339("2024-01-17T00:00:00Z").unwrap();
        assert_eq!(
            requeue(&letter, &e, &s, later)
                .unwrap()
                .signing_secrets
                .len(),
            1,
            "the previous secret's overlap is over"
        );
        e.signing_scheme = "prequel_rsa".into();
        let d = requeue(&letter, &e, &s, now()).unwrap();
        assert!(d.signing_secrets.is_empty() && d.signing_scheme == "prequel_rsa");
        e.signing_scheme = String::new();
        assert_eq!(
            requeue(&letter, &e, &s, now()).unwrap().signing_scheme,
            "none"
        );
    }

    #[test]
    fn refusals_have_codes() {
        let s = sealer();
        let e = endpoint("https://new.example/v2");
        let no_request = DeadLetter {
            delivery: None,
            ..sealed_letter("https://x.example/")
        };
        assert_eq!(
            requeue(&no_request, &e, &s, now()),
            Err(codes::NOT_REPLAYABLE)
        );
        let mut dropped = sealed_letter("https://x.example/");
        dropped.reason.push_str(dead_letter::BODY_DROPPED);
        assert_eq!(requeue(&dropped, &e, &s, now()), Err(codes::BODY_DROPPED));
        let other_key = Sealer::from_base64(&Sealer::new_master_key()).unwrap();
        assert_eq!(
            requeue(&sealed_letter("https://x.example/"), &e, &other_key, now()),
            Err(codes::SEAL_OPEN)
        );
        let mut moved = sealed_letter("https://x.example/");
        moved.delivery.as_mut().unwrap().url = "https://elsewhere.example/".into();
        assert_eq!(
            requeue(&moved, &e, &s, now()),
            Err(codes::SEAL_OPEN),
            "sealed for another URL"
        );
        assert_eq!(
            requeue(
                &sealed_letter("https://x.example/"),
                &endpoint("ftp://x"),
                &s,
                now()
            ),
            Err(codes::BAD_URL)
        );
    }

    #[test]
    fn the_url_is_the_endpoints_unless_templated_and_generic_get_keeps_its_event() {
        let d = |url: &str, method: &str| RenderedDelivery {
            url: url.into(),
            method: method.into(),
            event_type: "transfer.started".into(),
            ..RenderedDelivery::default()
        };
        let e = |url: &str, vendor: &str| Endpoint {
            url: url.into(),
            vendor: vendor.into(),
            ..Endpoint::default()
        };
        let get = "https://old.example/cb?k=1&type=transfer.started&version=2023-10-15&api_version=2023-10-15&created_at=x&data.transfer_id=t-1";
        let table = [
            (
                d("https://old.example/a", "POST"),
                e("https://new.example/b", "generic_post"),
                "https://new.example/b",
            ),
            (
                d("https://old.example/d-7", "POST"),
                e("https://new.example/{{.DestinationId}}", "generic_post"),
                "https://old.example/d-7",
            ),
            (
                d("https://events.pagerduty.com/v2/enqueue", "POST"),
                e("", "pagerduty"),
                "https://events.pagerduty.com/v2/enqueue",
            ),
            (
                d(get, "GET"),
                e("https://new.example/cb2?z=9", "generic_get"),
                "https://new.example/cb2?z=9&type=transfer.started&version=2023-10-15&api_version=2023-10-15&created_at=x&data.transfer_id=t-1",
            ),
            (
                d("https://old.example/cb?odd=1", "GET"),
                e("https://new.example/cb2", "generic_get"),
                "https://old.example/cb?odd=1",
            ),
            (
                d("https://old.example/cb", "POST"),
                e("https://new.example/cb2", "generic_get"),
                "https://new.example/cb2",
            ),
        ];
        for (delivery, endpoint, want) in table {
            assert_eq!(
                current_url(&delivery, &endpoint).unwrap(),
                want,
                "{} -> {}",
                delivery.url,
                endpoint.url
            );
        }
    }
}
