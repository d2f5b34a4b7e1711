//! Logs and OpenTelemetry traces of a service.
//!
//! Traces are exported over OTLP/HTTP (protobuf) when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, unless `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none`; the SDK reads the other standard variables itself
//! (`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER`/`_ARG`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_BSP_*`). Its batch exporter runs on its own thread with a blocking HTTP client.
//! Without an exporter no trace span is even created ([`enabled`] is false): tracing
//! costs nothing.
//!
//! hookline's trace spans use the target [`TARGET`]: only the OpenTelemetry layer records
//! them, and it records nothing else (log lines do not become span events), so what a
//! span carries is exactly the attributes set where it is made. None of them may be
//! trace text, a secret, an API key, a header value, a body or a query value.
//!
//! W3C trace context travels in Kafka record headers (`traceparent`, `tracestate`):
//! [`record_context`] reads it, [`context_headers`] writes it.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use rdkafka::message::{Header, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The target of hookline's trace spans.
pub const TARGET: &str = "hookline::trace";

/// The W3C trace context headers, in Kafka records as in HTTP.
pub const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// A rendered delivery's event time (its `events` record's timestamp, ms since the
/// epoch), for the latency from ingest to delivery; carried like the trace context.
pub const EVENT_TIME: &str = "hookline-event-time";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether traces are exported: create trace spans only then.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// What [`init`] set up; [`Telemetry::shutdown`] flushes the spans not yet exported.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is buffered and stops the exporter (bounded by the SDK's timeout).
    pub fn shutdown(&self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "trace export did not finish");
        }
    }
}

/// Whether the environment asks for trace export.
fn export_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// Logs to stderr (`RUST_LOG`, `HOOKLINE_LOG_FORMAT`), and traces when configured;
/// `service` is the service name unless `OTEL_SERVICE_NAME` says otherwise.
pub fn init(service: &str) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("HOOKLINE_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = if json {
        logs.json().boxed()
    } else {
        logs.boxed()
    };
    // Trace spans are not log lines.
    let logs = logs
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() != TARGET
        }))
        .with_filter(filter);
    let (provider, problem) = if export_configured() {
        match provider(service) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        }
    } else {
        (None, None)
    };
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("hookline"))
            // The attributes set where a span is made, and nothing about our code.
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(TARGET, tracing::Level::TRACE),
            )
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    if let Some(e) = problem {
        tracing::warn!(error = %e, "traces are not exported: the OTLP exporter cannot be built");
    }
    ENABLED.store(provider.is_some(), Ordering::Relaxed);
    Telemetry { provider }
}

fn provider(service: &str) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}

/// The trace context a Kafka record carries (its first `traceparent`), if valid.
pub fn record_context(headers: &[(String, Vec<u8>)]) -> Option<Context> {
    struct Headers<'a>(&'a [(String, Vec<u8>)]);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.iter().map(|(k, _)| k.as_str()).collect()
        }
    }
    valid(TraceContextPropagator::new().extract(&Headers(headers)))
}

/// The trace context a consumed message carries, if valid (`None` when tracing is off).
pub fn message_context<M: rdkafka::Message>(message: &M) -> Option<Context> {
    use rdkafka::message::Headers as _;
    if !enabled() {
        return None;
    }
    let headers: Vec<(String, Vec<u8>)> = message
        .headers()
        .map(|h| {
            h.iter()
                .filter(|h| {
                    h.key.eq_ignore_ascii_case(TRACEPARENT)
                        || h.key.eq_ignore_ascii_case(TRACESTATE)
                })
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    record_context(&headers)
}

/// The trace context of incoming HTTP headers, if valid.
pub fn http_context(headers: &http::HeaderMap) -> Option<Context> {
    struct Headers<'a>(&'a http::HeaderMap);
    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }
    valid(TraceContextPropagator::new().extract(&Headers(headers)))
}

fn valid(cx: Context) -> Option<Context> {
    cx.span().span_context().is_valid().then_some(cx)
}

/// `span`'s context as W3C headers; empty when tracing is off or the span is not
/// recorded.
pub fn span_headers(span: &tracing::Span) -> Vec<(String, String)> {
    if !enabled() || span.is_none() {
        return Vec::new();
    }
    context_headers(&span.context())
}

/// `span`'s context as Kafka record headers; `None` when tracing is off.
pub fn span_kafka_headers(span: &tracing::Span) -> Option<OwnedHeaders> {
    kafka_headers(&span_headers(span))
}

/// A context as W3C headers (`traceparent`, and `tracestate` when not empty).
pub fn context_headers(cx: &Context) -> Vec<(String, String)> {
    struct Headers(Vec<(String, String)>);
    impl Injector for Headers {
        fn set(&mut self, key: &str, value: String) {
            if !value.is_empty() {
                self.0.push((key.to_owned(), value));
            }
        }
    }
    let mut out = Headers(Vec::new());
    TraceContextPropagator::new().inject_context(cx, &mut out);
    out.0
}

/// The trace headers (and event time) of a record, kept as they are for a record that
/// carries the same delivery on (a retry tier, a dead letter): one context, never two.
pub fn carried(headers: &[(String, Vec<u8>)]) -> Option<OwnedHeaders> {
    let mut out: Option<OwnedHeaders> = None;
    for name in [TRACEPARENT, TRACESTATE, EVENT_TIME] {
        if let Some((_, value)) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)) {
            out = Some(out.unwrap_or_default().insert(Header {
                key: name,
                value: Some(value.as_slice()),
            }));
        }
    }
    out
}

/// W3C headers as Kafka record headers; `None` when there are none.
pub fn kafka_headers(headers: &[(String, String)]) -> Option<OwnedHeaders> {
    if headers.is_empty() {
        return None;
    }
    let mut out = OwnedHeaders::new_with_capacity(headers.len());
    for (key, value) in headers {
        out = out.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    Some(out)
}

/// Parents `span` in `cx` (no effect when tracing is off).
pub fn set_parent(span: &tracing::Span, cx: Option<Context>) {
    if let Some(cx) = cx
        && !span.is_none()
    {
        let _ = span.set_parent(cx);
    }
}

/// The event time a record carries ([`EVENT_TIME`]), in ms since the epoch.
pub fn event_time_ms(headers: &[(String, Vec<u8>)]) -> Option<i64> {
    headers
        .iter()
        .find(|(k, _)| k == EVENT_TIME)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}
