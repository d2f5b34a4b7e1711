//! The dispatcher's trace spans: one HTTP CLIENT span per attempt, parented in the
//! context its delivery record carries (the renderer's span for that delivery), with
//! the HTTP semantic conventions' attributes. The URL is recorded without userinfo,
//! fragment or query values; no header value or body is ever recorded.

use opentelemetry::trace::Status;
use service_kit::telemetry;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wire::RenderedDelivery;

use crate::metrics::outcome_class;
use crate::retry::AttemptOutcome;

/// The span of attempt `number` of `delivery`; `Span::none()` when tracing is off.
pub fn attempt_span(
    headers: &[(String, Vec<u8>)],
    delivery: &RenderedDelivery,
    number: i32,
) -> Span {
    if !telemetry::enabled() {
        return Span::none();
    }
    let parsed = url::Url::parse(&delivery.url).ok();
    let span = tracing::info_span!(
        target: telemetry::TARGET,
        "attempt",
        otel.name = %delivery.method,
        otel.kind = "client",
        http.request.method = %delivery.method,
        url.full = %parsed.as_ref().map(safe_url).unwrap_or_default(),
        server.address = %parsed.as_ref().and_then(|u| u.host_str().map(str::to_owned)).unwrap_or_default(),
        hookline.delivery.id = %delivery.delivery_id,
        hookline.endpoint.id = %delivery.endpoint_id,
        hookline.attempt = number,
    );
    if let Some(port) = parsed.as_ref().and_then(url::Url::port_or_known_default) {
        span.set_attribute("server.port", i64::from(port));
    }
    if number > 1 {
        span.set_attribute("http.request.resend_count", i64::from(number - 1));
    }
    telemetry::set_parent(&span, telemetry::record_context(headers));
    span
}

/// Records how the attempt ended: the status code, and `error.type` for a failure.
pub fn attempt_outcome(span: &Span, outcome: &AttemptOutcome) {
    if span.is_none() {
        return;
    }
    let error = match outcome {
        AttemptOutcome::Status { code, .. } => {
            span.set_attribute("http.response.status_code", i64::from(*code));
            (*code >= 400).then(|| code.to_string())
        }
        other => Some(outcome_class(other).to_owned()),
    };
    if let Some(error) = error {
        span.set_attribute("error.type", error);
        span.set_status(Status::error(""));
    }
}

/// `url` without userinfo and fragment, every query value replaced by `REDACTED`.
fn safe_url(url: &url::Url) -> String {
    let mut safe = url.clone();
    let _ = safe.set_username("");
    let _ = safe.set_password(None);
    safe.set_fragment(None);
    if url.query().is_some() {
        let keys: Vec<String> = url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        safe.set_query(None);
        if !keys.is_empty() {
            let mut pairs = safe.query_pairs_mut();
            for key in &keys {
                pairs.append_pair(key, "REDACTED");
            }
        }
    }
    safe.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_userinfo_fragments_and_query_values() {
        let url =
            url::Url::parse("https://user:pw@hooks.example.com:8443/in/x?token=s3cret&a=1#frag")
                .unwrap();
        assert_eq!(
            safe_url(&url),
            "https://hooks.example.com:8443/in/x?token=REDACTED&a=REDACTED"
        );
        let plain = url::Url::parse("http://127.0.0.1/hook").unwrap();
        assert_eq!(safe_url(&plain), "http://127.0.0.1/hook");
    }
}
