//! Sensitive-trace endpoints: the one POST a batch of a transfer's traces becomes,
//! shaped as Prequel's sensitive trace webhooks are. The URL, `header_template` and
//! `body_template` are templates over the seed's variables (`.Secret .Environment
//! .Timestamp .SensitiveTraces .DestinationId .SourceIds .ModelIds`) and hookline's
//! (`.TransferId .Part .LastPart .FlushReason`). Without I/O: the renderer calls
//! [`render_traces`] with the traces it gathered, the producer [`validate_traces`]
//! when an endpoint is created or changed.

use serde_json::json;
use templates::{Limits, Template};
use time::OffsetDateTime;
use wire::{Endpoint, Header, RenderedDelivery};

use crate::{RenderError, header_lines, request_url};

/// A sensitive-trace endpoint with its templates parsed once.
#[derive(Debug, Clone)]
pub struct CompiledTraces {
    /// The configuration, its secret open.
    pub endpoint: Endpoint,
    url: Template,
    header_template: Option<Template>,
    body: Option<Template>,
}

/// Parses a sensitive-trace endpoint's templates (`url`, `header_template`, `body_template`).
pub fn compile_traces(endpoint: Endpoint) -> Result<CompiledTraces, RenderError> {
    let parse = |field: &str, src: &str| {
        Template::parse(field, src, Limits::default()).map_err(|error| RenderError::Template {
            field: field.to_owned(),
            error,
        })
    };
    if endpoint.url.contains("SensitiveTraces") {
        return Err(RenderError::invalid(
            "url",
            "must not use .SensitiveTraces (URLs are logged); the traces go in the body",
        ));
    }
    let url = parse("url", &endpoint.url)?;
    let header_template = endpoint
        .header_template
        .as_deref()
        .map(|t| parse("header_template", t))
        .transpose()?;
    let body = endpoint
        .body_template
        .as_deref()
        .map(|t| parse("body_template", t))
        .transpose()?;
    Ok(CompiledTraces {
        endpoint,
        url,
        header_template,
        body,
    })
}

/// Why a batch is sent now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// The transfer ended.
    Completed,
    /// The transfer is still running, but its oldest trace waited as long as allowed.
    MaxAge,
    /// The traces of a source or destination connection test.
    ConnectionTest,
}

impl FlushReason {
    /// `completed`, `max_age` or `connection_test`: `.FlushReason` and the
    /// `Hookline-Trace-Flush` header.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Completed => "completed",
            FlushReason::MaxAge => "max_age",
            FlushReason::ConnectionTest => "connection_test",
        }
    }
}

/// One request's worth of traces.
#[derive(Debug, Clone, Copy)]
pub struct TraceBatch<'a> {
    /// The transfer; `None` for connection tests.
    pub transfer_id: Option<&'a str>,
    /// The destination the traces are about.
    pub destination_id: &'a str,
    /// A JSON array of trace objects, already serialized (compact).
    pub traces_json: &'a str,
    /// Distinct source ids, in arrival order.
    pub source_ids: &'a [String],
    /// Distinct model ids, in arrival order.
    pub model_ids: &'a [String],
    /// RFC 3339 as Go prints it ([`trace_timestamp`]), e.g. `2024-01-15T10:30:00Z`.
    pub timestamp: &'a str,
    /// 1-based number of this request among the transfer's.
    pub part: u32,
    /// Whether no request of this transfer follows.
    pub last_part: bool,
    /// Why it is sent now.
    pub flush_reason: FlushReason,
}

impl TraceBatch<'_> {
    /// Whether the transfer's traces were sent in more than one request.
    fn split(&self) -> bool {
        !(self.part == 1 && self.last_part)
    }
}

/// The HTTP request for one batch. The body holds trace text: all of it is sensitive.
#[derive(Clone)]
pub struct TracesRequest {
    /// Always `POST`.
    pub method: String,
    /// Absolute http(s) URL, without the secret.
    pub url: String,
    /// Safe to log: only hookline's `Hookline-Trace-*` markers.
    pub headers: Vec<Header>,
    /// Every header of the defaults or of `header_template` (may hold the secret).
    pub sensitive_headers: Vec<Header>,
    /// The rendered body (traces: seal it whole).
    pub body: Vec<u8>,
}

impl TracesRequest {
    /// The delivery that carries this request to `endpoint`: unsigned (receivers
    /// authenticate with the endpoint's secret, as the seed says), its body sealed in
    /// Kafka, under the endpoint's delivery policy. Without `transfer_id`, a connection
    /// test's.
    pub fn into_delivery(
        self,
        delivery_id: String,
        event_id: String,
        transfer_id: Option<String>,
        endpoint: &Endpoint,
    ) -> RenderedDelivery {
        RenderedDelivery {
            delivery_id,
            event_id,
            event_type: if transfer_id.is_some() {
                "transfer.sensitive_trace"
            } else {
                "connection_test.sensitive_trace"
            }
            .to_owned(),
            endpoint_id: endpoint.id.clone(),
            rendered_at: wire::now_rfc3339(),
            method: self.method,
            url: self.url,
            headers: self.headers,
            sensitive_headers: self.sensitive_headers,
            signing_scheme: "none".to_owned(),
            signing_secrets: Vec::new(),
            body_sealed: true,
            body: self.body,
            transfer_id,
            ..RenderedDelivery::default()
        }
        .with_policy_of(endpoint)
    }
}

impl std::fmt::Debug for TracesRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracesRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.headers)
            .field("sensitive_headers", &"[redacted]")
            .field("body", &"[redacted]")
            .finish()
    }
}

/// Header names hookline sets on every trace request; a template may set none of `Hookline-*`.
pub const PART_HEADER: &str = "Hookline-Trace-Part";
/// `true` on the last request of a transfer.
pub const LAST_PART_HEADER: &str = "Hookline-Trace-Last-Part";
/// The [`FlushReason`].
pub const FLUSH_HEADER: &str = "Hookline-Trace-Flush";

/// The request `c` gets for `batch`.
pub fn render_traces(
    c: &CompiledTraces,
    batch: &TraceBatch<'_>,
    environment: &str,
) -> Result<TracesRequest, RenderError> {
    if !is_json_array(batch.traces_json) {
        return Err(RenderError::invalid(
            "sensitive_traces",
            "must be a JSON array of trace objects",
        ));
    }
    let secret = c.endpoint.secret.as_deref().unwrap_or_default();
    let ids = |ids: &[String]| serde_json::to_string(ids).unwrap_or_else(|_| "[]".to_owned());
    let data = templates::data_from_json(&json!({
        "Secret": secret,
        "Environment": environment,
        "Timestamp": batch.timestamp,
        "SensitiveTraces": batch.traces_json,
        "DestinationId": batch.destination_id,
        "SourceIds": ids(batch.source_ids),
        "ModelIds": ids(batch.model_ids),
        "TransferId": batch.transfer_id.unwrap_or_default(),
        "Part": batch.part,
        "LastPart": batch.last_part,
        "FlushReason": batch.flush_reason.as_str(),
    }));
    let template_err = |field: &'static str| {
        move |error| RenderError::Template {
            field: field.to_owned(),
            error,
        }
    };
    let url_text = c.url.render_string(&data).map_err(template_err("url"))?;
    let url = request_url(url_text.trim(), Some(secret))?;
    // Percent-encoded, a secret or a trace object would still be in the URL.
    let decoded = percent_encoding::percent_decode_str(url.as_str())
        .decode_utf8_lossy()
        .replace('+', " ");
    if (!secret.is_empty() && decoded.contains(secret)) || decoded.contains("\"trace\"") {
        return Err(RenderError::invalid(
            "url",
            "must not carry the secret or trace text (URLs are logged)",
        ));
    }
    let sensitive_headers = match &c.header_template {
        Some(t) => {
            let text = t
                .render_string(&data)
                .map_err(template_err("header_template"))?;
            let headers = header_lines("header_template", &text)?;
            if let Some(h) = headers
                .iter()
                .find(|h| h.name.to_ascii_lowercase().starts_with("hookline-"))
            {
                return Err(RenderError::invalid(
                    "header_template",
                    format!("{} is set by hookline and cannot be templated", h.name),
                ));
            }
            headers
        }
        None => {
            let mut headers = vec![Header::new("Content-Type", "application/json")];
            if !secret.is_empty() {
                headers.push(Header::new("Authorization", format!("Bearer {secret}")));
            }
            headers
        }
    };
    let body = match &c.body {
        Some(t) => t.render(&data).map_err(template_err("body_template"))?,
        None => default_body(batch, environment),
    };
    let headers = vec![
        Header::new(PART_HEADER, batch.part.to_string()),
        Header::new(LAST_PART_HEADER, batch.last_part.to_string()),
        Header::new(FLUSH_HEADER, batch.flush_reason.as_str()),
    ];
    Ok(TracesRequest {
        method: "POST".to_owned(),
        url: url.to_string(),
        headers,
        sensitive_headers,
        body,
    })
}

/// The seed's default body, compact and in its key order, the traces as given:
/// `{"environment","sensitive_traces","destination_id","timestamp"}`, then
/// `"part","last_part"` when the transfer's traces were split, and
/// `"flush_reason":"max_age"` when sent before the transfer ended.
fn default_body(batch: &TraceBatch<'_>, environment: &str) -> Vec<u8> {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    let mut body = String::with_capacity(batch.traces_json.len() + 160);
    body.push_str("{\"environment\":");
    body.push_str(&text(environment));
    body.push_str(",\"sensitive_traces\":");
    body.push_str(batch.traces_json.trim());
    body.push_str(",\"destination_id\":");
    body.push_str(&text(batch.destination_id));
    body.push_str(",\"timestamp\":");
    body.push_str(&text(batch.timestamp));
    if batch.split() {
        body.push_str(&format!(
            ",\"part\":{},\"last_part\":{}",
            batch.part, batch.last_part
        ));
    }
    if batch.flush_reason == FlushReason::MaxAge {
        body.push_str(",\"flush_reason\":\"max_age\"");
    }
    body.push('}');
    body.into_bytes()
}

/// Whether `text` is one JSON array (checked so the default body is JSON whatever the caller passed).
fn is_json_array(text: &str) -> bool {
    text.trim_start().starts_with('[')
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// Go's RFC 3339 of a UTC time, to the second: `2024-01-15T10:30:00Z` (`.Timestamp`).
pub fn trace_timestamp(t: OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// Traces of the kinds a real transfer and a connection test produce, with the
/// characters that trip templates up: quotes, backslashes, newlines, tabs, non-ASCII, HTML.
/// The traces of a sample batch: the seed's example trace objects (dry runs, test deliveries).
pub const SAMPLE_TRACES: &str = r#"[{"destination_id":"dest-123","source_id":"src-456","model_id":"model-789","model_name":"users_table","source_vendor":"postgres","destination_vendor":"snowflake","execution_context":"write_destination","trace":"ERROR: duplicate key value violates unique constraint \"users_pkey\"\nDETAIL: Key (id)=(42) already exists.\tC:\\path <b>&</b> é"},{"destination_id":"dest-123","source_id":"src-457","model_id":"model-790","model_name":"orders","source_vendor":"mysql","destination_vendor":"snowflake","execution_context":"read_source","trace":"Error 1146: Table 'shop.orders' doesn't exist"}]"#;
const SAMPLE_CONNECTION_TRACES: &str = r#"[{"destination_id":"dest-123","destination_vendor":"snowflake","execution_context":"test_destination_connection","trace":"390100 (08004): Incorrect username or password was specified."}]"#;

/// Dry run at creation: compiles `endpoint` and renders it with sample batches (a
/// whole transfer, a part of a split one sent at its maximum age, a connection
/// test), refusing a bad template, URL or header with the field named.
pub fn validate_traces(endpoint: &Endpoint, environment: &str) -> Result<(), RenderError> {
    let compiled = compile_traces(endpoint.clone())?;
    let source_ids = ["src-456".to_owned(), "src-457".to_owned()];
    let model_ids = ["model-789".to_owned(), "model-790".to_owned()];
    let whole = TraceBatch {
        transfer_id: Some("transfer-123"),
        destination_id: "dest-123",
        traces_json: SAMPLE_TRACES,
        source_ids: &source_ids,
        model_ids: &model_ids,
        timestamp: "2024-01-15T10:30:00Z",
        part: 1,
        last_part: true,
        flush_reason: FlushReason::Completed,
    };
    let split = TraceBatch {
        part: 2,
        last_part: false,
        flush_reason: FlushReason::MaxAge,
        ..whole
    };
    let connection_test = TraceBatch {
        transfer_id: None,
        traces_json: SAMPLE_CONNECTION_TRACES,
        source_ids: &[],
        model_ids: &[],
        flush_reason: FlushReason::ConnectionTest,
        ..whole
    };
    for (what, batch) in [
        ("a sample batch", whole),
        ("a sample split batch", split),
        ("a sample connection test", connection_test),
    ] {
        render_traces(&compiled, &batch, environment).map_err(|e| match e {
            RenderError::Template {
                field,
                error: templates::TemplateError::Exec(m),
            } => RenderError::Template {
                field,
                error: templates::TemplateError::Exec(format!("with {what}: {m}")),
            },
            RenderError::Invalid { field, message } => RenderError::Invalid {
                field,
                message: format!("with {what}: {message}"),
            },
            other => other,
        })?;
    }
    Ok(())
}
