//! One dead letter in full, with what is sensitive left out: the request's URL with
//! query values redacted, header values that carry secrets as `[redacted]`, the body
//! only when it was not sealed (a sealed body held a secret or trace text) and cut to
//! [`BODY_PREVIEW_BYTES`], the receiver's responses as `[sealed]`, and of a raw
//! payload only its size.

use serde::Serialize;
use wire::{DeadLetter, RenderedDelivery};

use crate::list::Entry;
use crate::scan::{Missing, scan};
use crate::{OpsError, Store};

/// The most body text [`Shown`] holds.
pub const BODY_PREVIEW_BYTES: usize = 4096;
const REDACTED: &str = "[redacted]";
const SEALED: &str = "[sealed]";

/// A dead letter as it may be shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Shown {
    /// Its metadata (attempts with `response: "[sealed]"` where one was kept).
    #[serde(flatten)]
    pub entry: Entry,
    /// Where the failed record was read: topic, partition, offset.
    pub source: String,
    /// The size of the raw record kept when it could not be decoded.
    pub payload_bytes: Option<usize>,
    /// The request, when the letter holds it.
    pub request: Option<ShownRequest>,
}

/// A header as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ShownHeader {
    /// Its name.
    pub name: String,
    /// Its value, or `[redacted]`.
    pub value: String,
}

/// The request a dead letter holds, redacted.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ShownRequest {
    /// HTTP method.
    pub method: String,
    /// The URL with query values (and any user info or fragment) redacted.
    pub url: String,
    /// Headers; those that carry secrets with their value `[redacted]`.
    pub headers: Vec<ShownHeader>,
    /// How the dispatcher signs it.
    pub signing_scheme: String,
    /// The body is sealed (it held a secret or trace text): never shown.
    pub body_sealed: bool,
    /// The body's size in Kafka.
    pub body_bytes: usize,
    /// The body as text, cut to [`BODY_PREVIEW_BYTES`]; `None` when sealed or empty.
    pub body: Option<String>,
    /// The body shown is cut short.
    pub body_truncated: bool,
    /// When it was rendered.
    pub rendered_at: String,
    /// Timeout of one attempt, when the endpoint set one.
    pub timeout_ms: Option<i32>,
}

impl Shown {
    /// `letter` as it may be shown.
    pub fn of(letter: &DeadLetter) -> Shown {
        let mut entry = Entry::of(letter);
        let kept: Vec<bool> = if letter.attempts.is_empty() {
            letter
                .delivery
                .as_ref()
                .map(|d| d.attempts.iter().map(|a| a.response.is_some()).collect())
                .unwrap_or_default()
        } else {
            letter
                .attempts
                .iter()
                .map(|a| a.response.is_some())
                .collect()
        };
        for (a, kept) in entry.attempts.iter_mut().zip(kept) {
            a.response = kept.then_some(SEALED);
        }
        Shown {
            entry,
            source: format!(
                "{}/{}@{}",
                letter.source_topic, letter.source_partition, letter.source_offset
            ),
            payload_bytes: letter.payload.as_ref().map(Vec::len),
            request: letter.delivery.as_ref().map(ShownRequest::of),
        }
    }
}

impl ShownRequest {
    fn of(d: &RenderedDelivery) -> ShownRequest {
        let headers = d
            .headers
            .iter()
            .map(|h| ShownHeader {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .chain(d.sensitive_headers.iter().map(|h| ShownHeader {
                name: h.name.clone(),
                value: REDACTED.to_owned(),
            }))
            .collect();
        let (body, body_truncated) = if d.body_sealed || d.body.is_empty() {
            (None, false)
        } else {
            let text = String::from_utf8_lossy(&d.body);
            let cut = floor_char_boundary(&text, BODY_PREVIEW_BYTES);
            (Some(text[..cut].to_owned()), cut < text.len())
        };
        ShownRequest {
            method: d.method.clone(),
            url: redact_url(&d.url),
            headers,
            signing_scheme: d.signing_scheme.clone(),
            body_sealed: d.body_sealed,
            body_bytes: d.body.len(),
            body,
            body_truncated,
            rendered_at: d.rendered_at.clone(),
            timeout_ms: d.timeout_ms,
        }
    }
}

/// The largest index at most `max` that is a character boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0)
}

/// `url` with every query value, user info and fragment replaced by `[redacted]`;
/// scheme, host, port, path and query keys stay.
pub fn redact_url(raw: &str) -> String {
    let Ok(url) = url::Url::parse(raw) else {
        return REDACTED.to_owned();
    };
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str(REDACTED);
        out.push('@');
    }
    out.push_str(url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    if let Some(query) = url.query() {
        let keys: Vec<String> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, _)) => format!("{k}={REDACTED}"),
                None => format!("{p}={REDACTED}"),
            })
            .collect();
        out.push('?');
        out.push_str(&keys.join("&"));
    }
    if url.fragment().is_some() {
        out.push('#');
        out.push_str(REDACTED);
    }
    out
}

impl Store {
    /// The dead letter `id`, redacted, with when it was replayed; `None` when no letter
    /// has that id.
    pub async fn show(&self, id: &str) -> Result<Option<Shown>, OpsError> {
        let registry = self.registry.clone();
        let wanted = id.to_owned();
        let found = scan(
            &self.settings,
            &self.topics.dead_letter,
            None,
            Missing::Error,
            None,
            move |found: &mut Option<Shown>, r| {
                if let Some(letter) = r
                    .payload
                    .and_then(|p| registry.decode::<DeadLetter>(p).ok())
                    .filter(|l| l.id == wanted)
                {
                    *found = Some(Shown::of(&letter));
                }
            },
        )
        .await?;
        let Some(mut shown) = found else {
            return Ok(None);
        };
        shown.entry.replayed_at = self.marks().await?.remove(id).map(|m| m.replayed_at);
        Ok(Some(shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::list::tests::letter;
    use wire::Header;

    #[test]
    fn urls_keep_their_place_and_lose_their_values() {
        let table = [
            ("https://example.com/hook", "https://example.com/hook"),
            (
                "https://example.com:8443/a/b?token=s3cr3t&x=1",
                "https://example.com:8443/a/b?token=[redacted]&x=[redacted]",
            ),
            (
                "http://u:pw@example.com/?flag",
                "http://[redacted]@example.com/?flag=[redacted]",
            ),
            (
                "https://example.com/p?a=1#frag",
                "https://example.com/p?a=[redacted]#[redacted]",
            ),
            ("not a url s3cr3t", "[redacted]"),
        ];
        for (raw, want) in table {
            assert_eq!(redact_url(raw), want, "{raw}");
        }
    }

    #[test]
    fn a_shown_letter_redacts_secrets_and_sealed_bodies() {
        let mut l = letter(
            "a",
            "2024-01-15T10:00:00.000+00:00",
            Some("ep-1"),
            "HL-DELIVERY-REJECTED",
        );
        let d = l.delivery.as_mut().unwrap();
        d.headers = vec![Header::new("Content-Type", "application/json")];
        d.sensitive_headers = vec![Header::new("Authorization", "hl1:canary-sealed-key")];
        let shown = Shown::of(&l);
        let request = shown.request.as_ref().unwrap();
        assert_eq!(request.url, "https://example.com/hook?token=[redacted]");
        assert_eq!(
            request.headers,
            vec![
                ShownHeader {
                    name: "Content-Type".into(),
                    value: "application/json".into()
                },
                ShownHeader {
                    name: "Authorization".into(),
                    value: "[redacted]".into()
                },
            ]
        );
        assert_eq!(
            request.body.as_deref(),
            Some("{\"canary\":\"canary-body\"}"),
            "a clear body is shown"
        );
        assert_eq!(shown.entry.attempts[0].response, Some("[sealed]"));
        let json = serde_json::to_string(&shown).unwrap();
        assert!(
            !json.contains("canary-query")
                && !json.contains("canary-sealed-key")
                && !json.contains("canary-response"),
            "{json}"
        );

        l.delivery.as_mut().unwrap().body_sealed = true;
        l.payload = Some(b"raw canary-payload".to_vec());
        let shown = Shown::of(&l);
        let json = serde_json::to_string(&shown).unwrap();
        assert!(
            !json.contains("canary-body") && !json.contains("canary-payload"),
            "{json}"
        );
        assert_eq!(shown.payload_bytes, Some(18));
        let request = shown.request.unwrap();
        assert!(request.body.is_none() && request.body_sealed && request.body_bytes > 0);
    }

    #[test]
    fn long_bodies_are_cut_on_a_character_boundary() {
        let mut l = letter("a", "2024-01-15T10:00:00.000+00:00", Some("ep-1"), "HL-X");
        l.delivery.as_mut().unwrap().body = "é".repeat(BODY_PREVIEW_BYTES).into_bytes();
        let request = Shown::of(&l).request.unwrap();
        let body = request.body.unwrap();
        assert!(request.body_truncated);
        assert_eq!(body.len(), BODY_PREVIEW_BYTES);
        assert_eq!(request.body_bytes, 2 * BODY_PREVIEW_BYTES);
    }
}
