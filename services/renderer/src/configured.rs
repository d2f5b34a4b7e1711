//! The endpoints table's values: each endpoint read from Kafka, its secrets opened
//! and its templates compiled, or refused with why.

use std::sync::Arc;

use kafka_io::Table;
use wire::Endpoint;

/// The endpoint kind of sensitive-trace endpoints.
const TRACE_KIND: &str = "sensitive_trace";

/// An endpoint as the table holds it: compiled, or refused with why.
pub(crate) enum Configured {
    /// A webhook (`/webhooks`).
    Webhook(Compiled),
    /// A sensitive-trace endpoint (`/sensitive-trace-endpoints`).
    Traces(Box<Result<render::CompiledTraces, (Endpoint, render::RenderError)>>),
}

impl Configured {
    /// The sensitive-trace endpoint, if this is one.
    pub(crate) fn traces(
        &self,
    ) -> Option<&Result<render::CompiledTraces, (Endpoint, render::RenderError)>> {
        match self {
            Configured::Traces(t) => Some(t),
            Configured::Webhook(_) => None,
        }
    }
}

/// The endpoints table.
pub(crate) type Endpoints = Table<Arc<Configured>>;

/// A webhook compiled, or refused with why.
pub(crate) type Compiled = Arc<Result<render::Compiled, (Endpoint, render::RenderError)>>;

pub(crate) fn endpoint_of(compiled: &Compiled) -> &Endpoint {
    match compiled.as_ref() {
        Ok(c) => &c.endpoint,
        Err((e, _)) => e,
    }
}

/// An endpoint read from Kafka, its secrets opened and its templates compiled.
#[allow(
    clippy::result_large_err,
    reason = "once per endpoint record, and kept behind the table's Arc: a refusal carries \
              the endpoint so its deliveries are dead-lettered with it; a Box buys nothing"
)]
pub(crate) fn configure(sealer: &signing::Sealer, endpoint: Endpoint) -> Configured {
    let opened = open_endpoint(sealer, endpoint);
    if opened
        .as_ref()
        .map_or_else(|(e, _)| e.kind == TRACE_KIND, |e| e.kind == TRACE_KIND)
    {
        Configured::Traces(Box::new(
            opened.and_then(|e| render::compile_traces(e.clone()).map_err(|err| (e, err))),
        ))
    } else {
        Configured::Webhook(Arc::new(
            opened.and_then(|e| render::compile(e.clone()).map_err(|err| (e, err))),
        ))
    }
}

/// Opens the sealed secrets of an endpoint read from Kafka (values written before
/// sealing existed pass as they are).
#[allow(
    clippy::result_large_err,
    reason = "called once per endpoint record; the refusal keeps the endpoint (see `configure`)"
)]
fn open_endpoint(
    sealer: &signing::Sealer,
    mut endpoint: Endpoint,
) -> Result<Endpoint, (Endpoint, render::RenderError)> {
    match service_kit::open_endpoint_secrets(sealer, &mut endpoint) {
        Ok(()) => Ok(endpoint),
        Err(field) => Err((
            endpoint,
            render::RenderError::Invalid {
                field: field.to_owned(),
                message: "cannot open the endpoint's sealed secrets with this HOOKLINE_MASTER_KEY"
                    .to_owned(),
            },
        )),
    }
}
