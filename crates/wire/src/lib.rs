//! hookline's Avro contract: the schemas in `schemas/`, single-object encoding with
//! writer-schema lookup by fingerprint, the Schema Registry's framing with writer
//! schemas fetched from a registry (its client lives here too), and the typed records
//! the services exchange.
//!
//! Architecture invariant: only this crate knows Avro. Services hand it typed records
//! or JSON events and get bytes back, and the other way round.

mod bundled;
mod error;
mod event;
#[cfg(feature = "schema-registry")]
mod event_reader;
#[cfg(feature = "schema-registry")]
mod event_type;
mod json;
mod records;
mod redacted;
mod registry;
#[cfg(feature = "schema-registry")]
mod schema_registry;
mod value_ser;

pub use bundled::{BUNDLED_SCHEMAS, schema_files};
pub use error::WireError;
pub use event::{DEFAULT_VERSION, ENVELOPE_FIELDS, EncodedEvent, Event};
#[cfg(feature = "schema-registry")]
pub use event_reader::{
    EventReader, Framing, Read, ReadError, SCHEMA_REGISTRY_MAGIC, schema_registry_frame,
    single_object_to_registry,
};
pub use records::{
    AggregatedTrace, Attempt, DeadLetter, DeliveryAttempt, DeliverySummary, Endpoint,
    EndpointRequest, Header, HeaderTemplate, IndexedAttempt, InstanceClaim, Record,
    RenderedDelivery, Replay, RetiredKey, SigningKey,
};
pub use redacted::Redacted;
pub use registry::{Fingerprint, MAX_ALLOCATION_BYTES, Registry};
#[cfg(feature = "schema-registry")]
pub use schema_registry::{
    Compatibility, Registered, RegistryError, RegistrySettings, SchemaRegistry,
};

/// The current time as an RFC 3339 string in UTC, the format of every timestamp field.
pub fn now_rfc3339() -> String {
    format_rfc3339(time::OffsetDateTime::now_utc())
}

/// Formats a time as RFC 3339 in UTC with `+00:00`, as the seeds' examples do.
pub fn format_rfc3339(t: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+00:00"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00.000+00:00"))
}

/// True when `s` is an RFC 3339 timestamp.
pub fn is_rfc3339(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}
