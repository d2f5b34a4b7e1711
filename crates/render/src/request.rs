//! The parts of a request that are checked as they are rendered: its URL and its
//! headers.

use wire::{Endpoint, Header};

use crate::{RenderError, vendors};

/// The request URL of `endpoint` from its URL template's output: a vendor's own URL
/// when that is blank, else [`request_url`].
pub(crate) fn endpoint_url(text: &str, endpoint: &Endpoint) -> Result<url::Url, RenderError> {
    let text = match (text.trim(), endpoint.vendor.as_str()) {
        ("", "pagerduty") => vendors::PAGERDUTY_URL,
        ("", "datadog") => vendors::DATADOG_URL,
        (text, _) => text,
    };
    request_url(text, endpoint.secret.as_deref())
}

/// The URL of a request from its rendered text: absolute http(s), and without the
/// secret in it (URLs are logged).
pub(crate) fn request_url(text: &str, secret: Option<&str>) -> Result<url::Url, RenderError> {
    if let Some(secret) = secret.filter(|s| !s.is_empty())
        && text.contains(secret)
    {
        return Err(RenderError::invalid(
            "url",
            "must not carry the secret (URLs are logged); use a header",
        ));
    }
    absolute_url(text)
}

fn absolute_url(text: &str) -> Result<url::Url, RenderError> {
    let url = url::Url::parse(text)
        .map_err(|e| RenderError::invalid("url", format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(RenderError::invalid(
            "url",
            "must be an absolute http or https URL",
        ));
    }
    Ok(url)
}

/// Headers a template may not set: they frame the request, or hookline sets them
/// (the delivery id, the signatures), and a second copy would confuse receivers.
pub const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "transfer-encoding",
    "content-encoding",
    "host",
    "connection",
    "hookline-delivery-id",
    "x-prequel-webhook-timestamp",
    "x-prequel-webhook-signature",
    "x-prequel-webhook-digest",
    "x-prequel-webhook-key-id",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-fivetran-signature-256",
    "x-webhook-signature",
];

pub(crate) fn valid_header(field: &str, name: &str, value: &str) -> Result<Header, RenderError> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(RenderError::invalid(
            field,
            "a header name must be a token (letters, digits, -)",
        ));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(RenderError::invalid(
            field,
            format!("{name} is set by hookline and cannot be templated"),
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(RenderError::invalid(
            field,
            format!("the value of {name} has control characters"),
        ));
    }
    Ok(Header::new(name, value))
}

/// The headers of a rendered header template: one `Key: Value` per line, blank lines
/// skipped, a later line replacing an earlier one of the same name.
pub(crate) fn header_lines(field: &str, text: &str) -> Result<Vec<Header>, RenderError> {
    let mut headers = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(RenderError::invalid(
                field,
                format!("line {} is not `Key: Value`", i + 1),
            ));
        };
        set(
            &mut headers,
            valid_header(field, name.trim(), value.trim())?,
        );
    }
    Ok(headers)
}

/// Adds or replaces (case-insensitively) a header.
pub(crate) fn set(headers: &mut Vec<Header>, header: Header) {
    headers.retain(|h| !h.name.eq_ignore_ascii_case(&header.name));
    headers.push(header);
}
