//! One HTTP attempt: the rendered request as it goes on the wire, and what came back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use wire::{Attempt, RenderedDelivery};

use crate::guard::{self, Guard};
use crate::retry::{AttemptOutcome, parse_retry_after};

/// The header that carries the delivery id on every attempt and replay, so receivers
/// can drop duplicates.
pub const DELIVERY_ID_HEADER: &str = "hookline-delivery-id";

/// Bytes of a response body read before the connection is returned to the pool.
const RESPONSE_READ_LIMIT: usize = 4096;
/// Bytes of a response body kept with the attempt.
pub const RESPONSE_KEEP: usize = 1024;

/// The HTTP client requests go out on: no redirects, no proxy, every address through
/// the SSRF guard's resolver; `insecure_tls` only for endpoints created with
/// `validate_tls: false`. The producer's test deliveries use it too.
pub fn client(
    guard: Arc<Guard>,
    connect_timeout: Duration,
    insecure_tls: bool,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .no_proxy()
        .dns_resolver(guard::GuardedResolver(guard))
        .tls_danger_accept_invalid_certs(insecure_tls)
        .build()
}

/// Request URLs parsed, by their text: an endpoint's deliveries mostly share one URL,
/// whose parse (with the host's IDNA and address checks) was a tenth of the
/// dispatcher's instructions per delivery. Emptied when it holds [`Urls::KEPT`], so
/// URLs templated per delivery cost a lookup and an insert, not memory.
#[derive(Default)]
pub struct Urls(Mutex<HashMap<String, reqwest::Url>>);

impl Urls {
    /// The most URLs kept.
    pub const KEPT: usize = 1024;

    /// `text` parsed, as `reqwest::Url::parse` parses it.
    pub fn parse(&self, text: &str) -> Result<reqwest::Url, url::ParseError> {
        let lock = || {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if let Some(url) = lock().get(text) {
            return Ok(url.clone());
        }
        let url = reqwest::Url::parse(text)?;
        let mut urls = lock();
        if urls.len() >= Self::KEPT {
            urls.clear();
        }
        urls.insert(text.to_owned(), url.clone());
        Ok(url)
    }
}

/// A delivery as one attempt sends it: its clear fields, and its sealed parts opened
/// for that attempt only.
pub struct Opened<'a> {
    /// The delivery as read (its sealed parts still sealed).
    pub delivery: &'a RenderedDelivery,
    parts: service_kit::OpenedParts,
}

impl<'a> Opened<'a> {
    /// Opens `delivery`'s sealed parts; `HL-SEAL-OPEN` when one does not open.
    pub fn open(
        sealer: &signing::Sealer,
        delivery: &'a RenderedDelivery,
    ) -> Result<Self, &'static str> {
        Ok(Opened {
            delivery,
            parts: service_kit::open_parts(sealer, delivery)?,
        })
    }

    /// A delivery rendered in memory and never sealed (the API's test delivery).
    pub fn clear(delivery: &'a RenderedDelivery) -> Self {
        Opened {
            delivery,
            parts: service_kit::OpenedParts {
                sensitive_headers: delivery.sensitive_headers.clone(),
                signing_secrets: delivery.signing_secrets.clone(),
                body: None,
            },
        }
    }

    /// The body to send: opened when it was sealed.
    pub fn body(&self) -> &[u8] {
        self.parts.body.as_deref().unwrap_or(&self.delivery.body)
    }

    /// The HMAC secrets, opened, current first.
    pub fn signing_secrets(&self) -> &[String] {
        &self.parts.signing_secrets
    }
}

/// Makes one attempt to `url` (the delivery's, parsed) and reports its outcome and its
/// record for the dead letter.
pub async fn attempt(
    client: &reqwest::Client,
    guard: &Guard,
    opened: &Opened<'_>,
    url: Result<reqwest::Url, url::ParseError>,
    signature: &[(String, String)],
    number: i32,
    timeout: Duration,
) -> (AttemptOutcome, Attempt) {
    let started_at = wire::now_rfc3339();
    let clock = Instant::now();
    let (outcome, body) = match url {
        Ok(url) if guard::refuses_literal(guard, &url) => (AttemptOutcome::Refused, Vec::new()),
        Ok(url) => send(client, url, opened, signature, timeout).await,
        // As reqwest's builder error for the same URL would be.
        Err(_) => (AttemptOutcome::Invalid, Vec::new()),
    };
    let (status, error_code) = match &outcome {
        AttemptOutcome::Status { code, .. } => (Some(i32::from(*code)), None),
        AttemptOutcome::Timeout => (None, Some("HL-HTTP-TIMEOUT".to_owned())),
        AttemptOutcome::Connect => (None, Some("HL-HTTP-CONNECT".to_owned())),
        AttemptOutcome::Invalid => (None, Some("HL-HTTP-INVALID-REQUEST".to_owned())),
        AttemptOutcome::Refused => (None, Some("HL-DELIVERY-REFUSED".to_owned())),
    };
    let record = Attempt {
        attempt: number,
        started_at,
        duration_ms: i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX),
        status,
        error_code,
        response: excerpt(&body),
    };
    (outcome, record)
}

/// The first [`RESPONSE_KEEP`] bytes of a response body as text, cut on a character
/// boundary; `None` when empty.
fn excerpt(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let mut cut = &body[..body.len().min(RESPONSE_KEEP)];
    // A character split by the cut is dropped whole, not turned into U+FFFD.
    if let Err(e) = std::str::from_utf8(cut)
        && e.error_len().is_none()
    {
        cut = &cut[..e.valid_up_to()];
    }
    Some(String::from_utf8_lossy(cut).into_owned())
}

/// Sends one request; returns its outcome and the first bytes of the response body.
async fn send(
    client: &reqwest::Client,
    url: reqwest::Url,
    opened: &Opened<'_>,
    signature: &[(String, String)],
    timeout: Duration,
) -> (AttemptOutcome, Vec<u8>) {
    let Ok(method) = reqwest::Method::from_bytes(opened.delivery.method.as_bytes()) else {
        return (AttemptOutcome::Invalid, Vec::new());
    };
    let Some(headers) = headers(opened, signature) else {
        return (AttemptOutcome::Invalid, Vec::new());
    };
    let mut request = client
        .request(method, url)
        .headers(headers)
        .timeout(timeout);
    let body = opened.body();
    if !body.is_empty() {
        request = request.body(body.to_vec());
    }
    match request.send().await {
        Ok(mut response) => {
            let code = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            // Read a little of the body so the connection can be reused (the start is
            // kept with the attempt); the rest is dropped.
            let mut read = 0;
            let mut kept = Vec::new();
            while read < RESPONSE_READ_LIMIT {
                match tokio::time::timeout(timeout, response.chunk()).await {
                    Ok(Ok(Some(chunk))) => {
                        read += chunk.len();
                        kept.extend_from_slice(
                            &chunk[..chunk.len().min(RESPONSE_KEEP.saturating_sub(kept.len()))],
                        );
                    }
                    _ => break,
                }
            }
            (AttemptOutcome::Status { code, retry_after }, kept)
        }
        Err(e) if guard::is_refusal(&e) => (AttemptOutcome::Refused, Vec::new()),
        Err(e) if e.is_timeout() => (AttemptOutcome::Timeout, Vec::new()),
        Err(e) if e.is_builder() => (AttemptOutcome::Invalid, Vec::new()),
        Err(_) => (AttemptOutcome::Connect, Vec::new()),
    }
}

/// The headers a request goes out with: the delivery's (its sensitive ones marked so),
/// then the signature's, the delivery id and the user agent; `None` when one is not a
/// valid header.
pub fn headers(opened: &Opened<'_>, signature: &[(String, String)]) -> Option<HeaderMap> {
    let delivery = opened.delivery;
    let sensitive = &opened.parts.sensitive_headers;
    let mut map =
        HeaderMap::with_capacity(delivery.headers.len() + sensitive.len() + signature.len() + 2);
    for h in delivery.headers.iter().chain(sensitive) {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let mut value = HeaderValue::from_str(&h.value).ok()?;
        if sensitive.iter().any(|s| s.name == h.name) {
            value.set_sensitive(true);
        }
        map.append(name, value);
    }
    // Set last, replacing anything of the same name: hookline's own headers win.
    for (name, value) in signature {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(value).ok()?,
        );
    }
    map.insert(
        HeaderName::from_static(DELIVERY_ID_HEADER),
        HeaderValue::from_str(&delivery.delivery_id).ok()?,
    );
    map.insert(
        reqwest::header::USER_AGENT,
        HeaderValue::from_static(concat!("hookline/", env!("CARGO_PKG_VERSION"))),
    );
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::{Urls, excerpt};

    #[test]
    fn urls_parse_as_reqwest_does_and_stay_bounded() {
        let urls = Urls::default();
        for text in [
            "http://127.0.0.1:9000/ok/endpoint-1",
            "https://Hooks.EXAMPLE.com/a/../b?q=1#f",
            "https://bücher.example/x",
            "http://[::1]:80/",
        ] {
            let want = reqwest::Url::parse(text).unwrap();
            assert_eq!(urls.parse(text).unwrap(), want, "{text}");
            assert_eq!(urls.parse(text).unwrap(), want, "{text}, kept");
        }
        for bad in ["not a url", "http://", "http://300.1.1.1/"] {
            assert_eq!(urls.parse(bad), reqwest::Url::parse(bad), "{bad}");
            assert!(urls.parse(bad).is_err(), "{bad}");
        }
        for i in 0..Urls::KEPT + 10 {
            let text = format!("http://127.0.0.1/{i}");
            assert_eq!(urls.parse(&text).unwrap().path(), format!("/{i}"));
            assert!(urls.0.lock().unwrap().len() <= Urls::KEPT);
        }
    }

    #[test]
    fn excerpts_keep_at_most_1_kib_cut_between_characters() {
        assert_eq!(excerpt(b""), None);
        assert_eq!(excerpt(b"gone").as_deref(), Some("gone"));
        let mut body = vec![b'a'; 1023];
        body.extend_from_slice("é and more".as_bytes());
        let kept = excerpt(&body).expect("kept");
        assert_eq!(kept, "a".repeat(1023), "the split é is dropped whole");
        let latin1 = [b'x', 0xE9, b'y'];
        assert_eq!(excerpt(&latin1).as_deref(), Some("x\u{FFFD}y"));
    }
}
