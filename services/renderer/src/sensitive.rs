//! Sensitive data (trace text, transfer logs) kept out of what gets logged: a
//! delivery carrying it has its body sealed and may not carry it in its URL or clear
//! headers.

use wire::Event;

use crate::Renderer;

/// Sensitive values at least this long are refused in URLs and clear headers.
const MIN_LEAK_LEN: usize = 8;

impl Renderer {
    /// A delivery of an event with trace text or a transfer log has its body sealed,
    /// and may not carry them in its URL (URLs are logged everywhere).
    pub(crate) fn guard_sensitive(
        &self,
        event: &Event,
        mut d: wire::RenderedDelivery,
    ) -> Result<wire::RenderedDelivery, render::RenderError> {
        let values = service_kit::sensitive_values(&self.registry, event);
        if values.is_empty() {
            return Ok(d);
        }
        // Short values (`log`) occur in URLs by chance; a trace or log long enough to
        // carry data does not.
        let leaks = |text: &str| {
            values
                .iter()
                .any(|v| v.len() >= MIN_LEAK_LEN && text.contains(v))
        };
        // URLs are percent-encoded (and `+` may stand for a space in a query).
        let decoded = percent_encoding::percent_decode_str(&d.url)
            .decode_utf8_lossy()
            .into_owned();
        let url_leaks = leaks(&d.url) || leaks(&decoded) || leaks(&decoded.replace('+', " "));
        if url_leaks || d.headers.iter().any(|h| leaks(&h.value)) {
            return Err(render::RenderError::Invalid {
                field: "url".to_owned(),
                message:
                    "must not carry the event's sensitive fields (URLs are logged); use the body"
                        .to_owned(),
            });
        }
        d.body_sealed = true;
        Ok(d)
    }
}
