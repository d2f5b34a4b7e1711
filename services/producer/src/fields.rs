//! Request fields shared by `/webhooks` and `/sensitive-trace-endpoints`: the
//! `{"<wrapper>": {...}}` body, text, names, URLs and sealed secrets, each refusal
//! naming its field; and the dry run's refusal as an answer.

use serde_json::{Map, Value};
use wire::Endpoint;

use crate::AppState;
use crate::error::ApiError;

/// What a masked secret looks like in responses; sent back in a PATCH it means "unchanged".
pub(crate) const MASK: &str = "******";

/// The `wrapper` object of the body (`{"webhook": {...}}`), holding only `fields`.
pub(crate) fn wrapped(
    body: &Value,
    wrapper: &str,
    fields: &[&str],
) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(outer) = body else {
        return Err(ApiError::invalid(
            wrapper,
            format!("the body must be a JSON object {{\"{wrapper}\": {{...}}}}"),
        ));
    };
    if let Some(other) = outer.keys().find(|k| *k != wrapper) {
        return Err(ApiError::invalid(
            printable(other),
            format!("unknown field; the body is {{\"{wrapper}\": {{...}}}}"),
        ));
    }
    match outer.get(wrapper) {
        Some(Value::Object(inner)) => {
            if let Some(unknown) = inner.keys().find(|k| !fields.contains(&k.as_str())) {
                return Err(ApiError::invalid(
                    format!("{wrapper}.{}", printable(unknown)),
                    format!("unknown field; known fields: {}", fields.join(", ")),
                ));
            }
            Ok(inner.clone())
        }
        Some(_) => Err(ApiError::invalid(wrapper, "must be a JSON object")),
        None => Err(ApiError::invalid(wrapper, "missing required field")),
    }
}

/// A copy of `endpoint` with its sealed secrets open, for dry runs.
pub(crate) fn opened(state: &AppState, endpoint: &Endpoint) -> Result<Endpoint, ApiError> {
    let mut open = endpoint.clone();
    service_kit::open_endpoint_secrets(&state.sealer, &mut open)
        .map_err(|_| ApiError::internal("HL-SEAL-OPEN"))?;
    Ok(open)
}

/// A dry run's refusal as a 400 naming `<wrapper>.<field>`.
pub(crate) fn render_error(e: render::RenderError, wrapper: &str) -> ApiError {
    match e.field() {
        Some(field) => ApiError::invalid(
            format!("{wrapper}.{field}"),
            e.to_string()
                .split_once(": ")
                .map_or(e.to_string(), |(_, m)| m.to_owned()),
        ),
        None => ApiError::invalid(format!("{wrapper}.vendor"), e.to_string()),
    }
}

/// A text field that `null` or `""` clears; `path` names it in errors.
pub(crate) fn optional_text(v: &Value, path: &str) -> Result<Option<String>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        _ => Err(ApiError::invalid(path, "must be a string or null")),
    }
}

/// A name: 1 to 200 characters.
pub(crate) fn valid_name(v: &Value, path: &str) -> Result<String, ApiError> {
    let name = string(v, path)?;
    if name.trim().is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid(path, "must be 1 to 200 characters"));
    }
    Ok(name.to_owned())
}

/// A URL, or a URL template (checked once rendered, by the dry run).
pub(crate) fn template_or_url(v: &Value, path: &str) -> Result<String, ApiError> {
    let url = string(v, path)?;
    if url.contains("{{") {
        Ok(url.to_owned())
    } else {
        valid_url(url, path)
    }
}

/// Sets a secret field from the request: sealed under the master key, bound to the
/// endpoint and `field`; `null` or `""` clears it, the mask sent back leaves it unchanged.
pub(crate) fn set_sealed(
    state: &AppState,
    endpoint_id: &str,
    field: &str,
    v: &Value,
    path: &str,
    target: &mut Option<String>,
) -> Result<(), ApiError> {
    match v {
        Value::Null => *target = None,
        Value::String(s) if s == MASK => {} // the masked value sent back: unchanged
        Value::String(s) if s.is_empty() => *target = None,
        Value::String(s) if s.chars().any(char::is_control) => {
            return Err(ApiError::invalid(
                path,
                "must not contain control characters",
            ));
        }
        Value::String(s) => {
            *target = Some(
                state
                    .sealer
                    .seal(s.as_bytes(), &signing::endpoint_context(endpoint_id, field)),
            )
        }
        _ => return Err(ApiError::invalid(path, "must be a string or null")),
    }
    Ok(())
}

pub(crate) fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, ApiError> {
    v.as_str()
        .ok_or_else(|| ApiError::invalid(path, "must be a string"))
}

/// An absolute http(s) URL with a host, without credentials in it.
fn valid_url(raw: &str, path: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::invalid(path, why.to_owned());
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must use http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials (URLs are logged); send them in a header",
        ));
    }
    Ok(url.to_string())
}

/// Echoes a caller's value only when short and printable.
pub(crate) fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_table() {
        let table = [
            ("https://example.com/hook", true),
            ("http://127.0.0.1:9000/x?y=1", true),
            ("ftp://example.com", false),
            ("example.com/hook", false),
            ("https://user:pw@example.com/", false),
            ("https://", false),
            ("", false),
        ];
        for (raw, ok) in table {
            assert_eq!(valid_url(raw, "webhook.url").is_ok(), ok, "{raw}");
        }
    }
}
