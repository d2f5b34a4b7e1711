//! Events to HTTP requests, without I/O: which endpoints an event goes to
//! ([`subscription`]), the request each gets (templates or a vendor's shape,
//! [`vendors`]), and the stable delivery id. The renderer service calls it for real
//! events; the producer calls it with sample events to refuse a bad endpoint at creation.
//! Sensitive-trace endpoints get one request per batch of a transfer's traces ([`traces`]).

mod request;
pub mod subscription;
pub mod traces;
pub mod vendors;

use serde_json::{Value, json};
use templates::{Limits, Template, TemplateError};
use uuid::Uuid;
use wire::{Endpoint, Event, Header, Registry, RenderedDelivery};

pub use request::RESERVED_HEADERS;
use request::{endpoint_url, set, valid_header};
pub(crate) use request::{header_lines, request_url};
pub use subscription::{Outcome, outcome, subscribed, type_matches, valid_pattern};
pub use traces::{
    CompiledTraces, FlushReason, SAMPLE_TRACES, TraceBatch, TracesRequest, compile_traces,
    render_traces, trace_timestamp, validate_traces,
};

/// Namespace of delivery ids: UUID v5 of `<len(event id)>:<event id><endpoint id>`.
const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_4c2e_9a3d_4e57_8c10_d2a4_f0b3_7e91);

/// The vendors requests can be shaped for.
pub const VENDORS: &[&str] = &[
    "generic_post",
    "generic_get",
    "slack",
    "pagerduty",
    "datadog",
];
/// Vendors whose request a template may shape (the others have a fixed shape).
pub const TEMPLATED_VENDORS: &[&str] = &["generic_post", "generic_get"];
/// Methods an endpoint may use.
pub const METHODS: &[&str] = &["POST", "PUT", "PATCH", "GET", "DELETE"];

/// Why an event could not be rendered for an endpoint. Messages name fields and
/// positions, never rendered values (which may hold the secret).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// A template failed to parse or to render.
    #[error("{field}: {error}")]
    Template {
        /// `url`, `header_template`, `headers.<name>` or `body_template`.
        field: String,
        /// What went wrong.
        error: TemplateError,
    },
    /// The rendered request is not a valid one.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// The endpoint names a vendor this renderer cannot shape.
    #[error("vendor {0} is not supported")]
    UnsupportedVendor(String),
}

impl RenderError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            RenderError::Template { error, .. } => error.code(),
            RenderError::Invalid { .. } => "HL-RENDER-INVALID",
            RenderError::UnsupportedVendor(_) => "HL-RENDER-VENDOR",
        }
    }

    /// The field at fault, if one.
    pub fn field(&self) -> Option<&str> {
        match self {
            RenderError::Template { field, .. } | RenderError::Invalid { field, .. } => Some(field),
            RenderError::UnsupportedVendor(_) => None,
        }
    }

    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        RenderError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An endpoint with its templates parsed once.
#[derive(Clone)]
pub struct Compiled {
    /// The configuration. What is derived from it here is not derived again: change
    /// the endpoint and compile it anew.
    pub endpoint: Endpoint,
    url: Template,
    /// The request URL of a URL without actions, the same for every event (or why it
    /// is not one, reported at each render as a templated URL's would be).
    plain_url: Option<Result<url::Url, RenderError>>,
    header_template: Option<Template>,
    headers: Vec<(String, Template)>,
    body: Option<Template>,
    /// Whether any template mentions `.Payload` (serialising it costs a render).
    uses_payload: bool,
    /// Whether the body template can put the secret in the body (then it is sealed).
    body_has_secret: bool,
}

/// Neither the URL (a Slack URL is a credential) nor what the templates hold.
impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("endpoint", &self.endpoint)
            .field("plain_url", &self.plain_url.is_some())
            .field("uses_payload", &self.uses_payload)
            .field("body_has_secret", &self.body_has_secret)
            .finish_non_exhaustive()
    }
}

/// Parses an endpoint's templates.
pub fn compile(endpoint: Endpoint) -> Result<Compiled, RenderError> {
    let parse = |field: &str, src: &str| {
        Template::parse(field, src, Limits::default()).map_err(|error| RenderError::Template {
            field: field.to_owned(),
            error,
        })
    };
    if !VENDORS.contains(&endpoint.vendor.as_str()) {
        return Err(RenderError::UnsupportedVendor(endpoint.vendor.clone()));
    }
    let url = parse("url", &endpoint.url)?;
    let header_template = endpoint
        .header_template
        .as_deref()
        .map(|t| parse("header_template", t))
        .transpose()?;
    let headers = endpoint
        .headers
        .iter()
        .map(|h| {
            Ok((
                h.name.clone(),
                parse(&format!("headers.{}", h.name), &h.value)?,
            ))
        })
        .collect::<Result<Vec<_>, RenderError>>()?;
    let body = endpoint
        .body_template
        .as_deref()
        .map(|t| parse("body_template", t))
        .transpose()?;
    let uses_payload = std::iter::once(endpoint.url.as_str())
        .chain(endpoint.header_template.as_deref())
        .chain(endpoint.body_template.as_deref())
        .chain(endpoint.headers.iter().map(|h| h.value.as_str()))
        .any(|t| t.contains("Payload"));
    // A templated body can print the secret in ways no text search finds (`{{.}}`):
    // with a secret, every templated body is sealed. PagerDuty's body carries the key.
    let body_has_secret = (endpoint.body_template.is_some() && endpoint.secret.is_some())
        || endpoint.vendor == "pagerduty";
    let plain_url = url.literal().map(|text| endpoint_url(text, &endpoint));
    Ok(Compiled {
        endpoint,
        url,
        plain_url,
        header_template,
        headers,
        body,
        uses_payload,
        body_has_secret,
    })
}

/// The stable id of the delivery of `event_id` to `endpoint_id`: the same on every
/// render of the same event, every attempt, every replay.
pub fn delivery_id(event_id: &str, endpoint_id: &str) -> String {
    // Length-prefixed so no two (event, endpoint) pairs give the same name.
    let name = format!("{}:{event_id}{endpoint_id}", event_id.len());
    Uuid::new_v5(&DELIVERY_NAMESPACE, name.as_bytes()).to_string()
}

/// What webhook templates see: the event (`.Type .Id .CreatedAt .Version .Data
/// .Outcome .Payload`), the endpoint (`.Secret .EndpointId .EndpointName`), and the
/// seed's sensitive-trace variables where the event has them (`.Environment
/// .Timestamp .DestinationId`, and `.SensitiveTraces .SourceIds .ModelIds` as JSON
/// text), so the seed's templates work on webhooks too.
pub fn template_data(event: &Event, endpoint: &Endpoint, environment: &str) -> Value {
    template_data_with(event, endpoint, environment, Some(&event.envelope_bytes()))
}

/// [`template_data`] with the envelope given (`.Payload`), or none for templates that
/// do not read it.
fn template_data_with(
    event: &Event,
    endpoint: &Endpoint,
    environment: &str,
    payload: Option<&[u8]>,
) -> Value {
    let d = &event.data;
    let first = |paths: &[&str]| {
        paths
            .iter()
            .find_map(|p| {
                p.split('.')
                    .try_fold(d, |v, k| v.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    };
    let list = |paths: &[&str]| -> String {
        let mut ids: Vec<&str> = Vec::new();
        for p in paths {
            match p.split('.').try_fold(d, |v, k| v.get(k)) {
                Some(Value::String(s)) if !ids.contains(&s.as_str()) => ids.push(s),
                Some(Value::Array(items)) => {
                    for s in items.iter().filter_map(Value::as_str) {
                        if !ids.contains(&s) {
                            ids.push(s);
                        }
                    }
                }
                _ => {}
            }
        }
        Value::from(ids).to_string()
    };
    let traces = if event.event_type.ends_with(".sensitive_trace") {
        Value::Array(vec![d.clone()])
    } else {
        json!([])
    };
    json!({
        "Environment": environment,
        "Timestamp": event.created_at,
        "DestinationId": first(&["destination_id", "error.destination_id"]),
        "SourceIds": list(&["source_ids", "source_id"]),
        "ModelIds": list(&["model_ids", "model_id"]),
        "SensitiveTraces": traces.to_string(),
        "Type": event.event_type,
        "Id": event.id,
        "CreatedAt": event.created_at,
        "Version": event.version,
        "Data": event.data,
        "Outcome": outcome(event).as_str(),
        "Payload": payload.and_then(|p| std::str::from_utf8(p).ok()).unwrap_or_default(),
        "Secret": endpoint.secret.clone().unwrap_or_default(),
        "EndpointId": endpoint.id,
        "EndpointName": endpoint.name,
    })
}

/// The request `compiled` gets for `event`.
pub fn render(
    event: &Event,
    compiled: &Compiled,
    environment: &str,
    rendered_at: &str,
) -> Result<RenderedDelivery, RenderError> {
    EventRender::new(event).render(compiled, environment, rendered_at)
}

/// An event being rendered for its endpoints: what their requests share (the
/// envelope, every plain webhook's body) is built once, however many there are.
pub struct EventRender<'e> {
    event: &'e Event,
    envelope: std::sync::OnceLock<Vec<u8>>,
}

/// The event as `Event` prints it: the envelope holds its data, which may be secret.
impl std::fmt::Debug for EventRender<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRender")
            .field("event", self.event)
            .finish_non_exhaustive()
    }
}

impl<'e> EventRender<'e> {
    /// Nothing is built until an endpoint needs it.
    pub fn new(event: &'e Event) -> Self {
        EventRender {
            event,
            envelope: std::sync::OnceLock::new(),
        }
    }

    /// The event.
    pub fn event(&self) -> &'e Event {
        self.event
    }

    fn envelope(&self) -> &[u8] {
        self.envelope.get_or_init(|| self.event.envelope_bytes())
    }

    /// The request `compiled` gets for the event (as [`render`]).
    pub fn render(
        &self,
        compiled: &Compiled,
        environment: &str,
        rendered_at: &str,
    ) -> Result<RenderedDelivery, RenderError> {
        render_shared(self, compiled, environment, rendered_at)
    }
}

fn render_shared(
    shared: &EventRender<'_>,
    compiled: &Compiled,
    environment: &str,
    rendered_at: &str,
) -> Result<RenderedDelivery, RenderError> {
    let event = shared.event;
    let endpoint = &compiled.endpoint;
    // Built once, and only for a template that reads it: a webhook whose URL and
    // headers are plain text (the common case) renders without it.
    let data = std::cell::OnceCell::new();
    let data = || {
        data.get_or_init(|| {
            templates::data_from_json(&template_data_with(
                event,
                endpoint,
                environment,
                compiled.uses_payload.then(|| shared.envelope()),
            ))
        })
    };
    let template_err = |field: &str| {
        let field = field.to_owned();
        move |error| RenderError::Template { field, error }
    };
    let mut url = match &compiled.plain_url {
        Some(url) => url.clone()?,
        None => {
            let text = compiled
                .url
                .render_string_with(data)
                .map_err(template_err("url"))?;
            endpoint_url(&text, endpoint)?
        }
    };
    let mut headers = Vec::new();
    let mut sensitive = Vec::new();
    let (method, body) = match endpoint.vendor.as_str() {
        "slack" => ("POST".to_owned(), json_bytes(&vendors::slack(event))),
        "pagerduty" => {
            let key = endpoint.api_key.as_deref().ok_or_else(|| {
                RenderError::invalid("api_key", "pagerduty needs the routing key as api_key")
            })?;
            (
                "POST".to_owned(),
                json_bytes(&vendors::pagerduty(event, key)),
            )
        }
        "datadog" => {
            let key = endpoint.api_key.as_deref().ok_or_else(|| {
                RenderError::invalid("api_key", "datadog needs the API key as api_key")
            })?;
            sensitive.push(Header::new("DD-API-KEY", key));
            ("POST".to_owned(), json_bytes(&vendors::datadog(event)))
        }
        vendor => {
            let default = if vendor == "generic_get" {
                "GET"
            } else {
                "POST"
            };
            let method = endpoint
                .method
                .clone()
                .unwrap_or_else(|| default.to_owned());
            let body = match (method.as_str(), &compiled.body) {
                ("GET" | "DELETE", _) => Vec::new(),
                (_, Some(t)) => t.render_with(data).map_err(template_err("body_template"))?,
                (_, None) => shared.envelope().to_vec(),
            };
            if vendor == "generic_get" && method == "GET" {
                url.query_pairs_mut()
                    .extend_pairs(vendors::query_pairs(&event.envelope_json()));
            }
            if let Some(key) = endpoint.api_key.as_deref().filter(|k| !k.is_empty()) {
                sensitive.push(Header::new("Authorization", format!("Bearer {key}")));
            }
            (method, body)
        }
    };
    if let Some(t) = &compiled.header_template {
        let text = t
            .render_string_with(data)
            .map_err(template_err("header_template"))?;
        for header in header_lines("header_template", &text)? {
            set(&mut sensitive, header);
        }
    }
    for (name, t) in &compiled.headers {
        let field = format!("headers.{name}");
        let value = t.render_string_with(data).map_err(template_err(&field))?;
        set(&mut sensitive, valid_header(&field, name, value.trim())?);
    }
    let sets = |name: &str| {
        sensitive
            .iter()
            .any(|h: &Header| h.name.eq_ignore_ascii_case(name))
    };
    if !body.is_empty() && !sets("content-type") {
        headers.push(Header::new("Content-Type", "application/json"));
    }
    let signing_scheme = if endpoint.signing_scheme.is_empty() {
        "none".to_owned()
    } else {
        endpoint.signing_scheme.clone()
    };
    let signing_secrets = if signing_scheme == "none" || signing_scheme == "prequel_rsa" {
        Vec::new()
    } else {
        let previous = endpoint.previous_secret.clone().filter(|_| {
            endpoint
                .previous_secret_until
                .as_deref()
                .is_some_and(|until| until_is_after(until, rendered_at))
        });
        endpoint.secret.iter().cloned().chain(previous).collect()
    };
    Ok(RenderedDelivery {
        signing_scheme,
        signing_secrets,
        body_sealed: compiled.body_has_secret,
        delivery_id: delivery_id(&event.id, &endpoint.id),
        event_id: event.id.clone(),
        event_type: event.event_type.clone(),
        endpoint_id: endpoint.id.clone(),
        rendered_at: rendered_at.to_owned(),
        method,
        url: url.to_string(),
        headers,
        sensitive_headers: sensitive,
        body,
        transfer_id: None,
        ..RenderedDelivery::default()
    }
    .with_policy_of(endpoint))
}

/// Dry-runs `compiled` with a sample of every event type it subscribes to.
pub fn validate(
    compiled: &Compiled,
    registry: &Registry,
    environment: &str,
) -> Result<(), RenderError> {
    let endpoint = &compiled.endpoint;
    let types: Vec<&str> = registry
        .event_types()
        .into_iter()
        .filter(|t| endpoint.events.iter().any(|p| type_matches(p, t)))
        .collect();
    for t in types {
        let Some(sample) = registry.sample_event(t) else {
            continue;
        };
        render(&sample, compiled, environment, "2023-10-15T19:19:08+00:00").map_err(
            |e| match e {
                RenderError::Template { field, error } => RenderError::Template {
                    field,
                    error: match error {
                        TemplateError::Exec(m) => {
                            TemplateError::Exec(format!("with a sample {t} event: {m}"))
                        }
                        other => other,
                    },
                },
                RenderError::Invalid { field, message } => RenderError::Invalid {
                    field,
                    message: format!("with a sample {t} event: {message}"),
                },
                other => other,
            },
        )?;
    }
    Ok(())
}

/// True when the RFC 3339 time `until` is after `now` (also RFC 3339).
fn until_is_after(until: &str, now: &str) -> bool {
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    match (parse(until), parse(now)) {
        (Some(u), Some(n)) => u > n,
        (Some(u), None) => u > time::OffsetDateTime::now_utc(),
        _ => false,
    }
}

fn json_bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
