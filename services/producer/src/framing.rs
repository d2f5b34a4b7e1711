//! How the producer frames what it writes to `events` (`HOOKLINE_EVENTS_FRAMING`):
//! Avro single-object encoding (the default), or the Schema Registry's wire format under
//! the id the registry gave hookline's event schema, so every tool of the registry's
//! ecosystem reads the topic.

use anyhow::Context;
use wire::WireError;

/// Single-object encoding: the default.
pub(crate) const SINGLE_OBJECT: &str = "single_object";
/// The Confluent Schema Registry wire format.
pub(crate) const SCHEMA_REGISTRY: &str = "schema_registry";

/// The registry id to frame events with, or `None` for single-object encoding. The
/// event schema must already be registered under its subject (`hookline schemas
/// register`): a service does not publish contracts on its own.
pub(crate) async fn events_schema_id(config: &crate::Config) -> anyhow::Result<Option<u32>> {
    match config.events_framing.as_str() {
        SINGLE_OBJECT => Ok(None),
        SCHEMA_REGISTRY => {
            let client = config.schema_registry.client()?.context(
                "HOOKLINE_EVENTS_FRAMING=schema_registry needs HOOKLINE_SCHEMA_REGISTRY_URL",
            )?;
            let subject = config.schema_registry.subject(&config.kafka.topic_prefix);
            let Some((file, text)) = wire::schema_files("event").pop() else {
                anyhow::bail!("no event schema is bundled");
            };
            let found = client.lookup(&subject, text).await.with_context(|| {
                format!("looking up schemas/{file} under {subject} in the Schema Registry")
            })?;
            let Some(found) = found else {
                anyhow::bail!(
                    "schemas/{file} is not registered under {subject} in the Schema Registry: run `hookline schemas register` first"
                );
            };
            tracing::info!(subject = %subject, schema_id = found.id, "events are written in the Schema Registry's framing");
            Ok(Some(found.id))
        }
        other => anyhow::bail!(
            "HOOKLINE_EVENTS_FRAMING must be {SINGLE_OBJECT} or {SCHEMA_REGISTRY}, not `{other}`"
        ),
    }
}

/// `single_object` (an encoded event) framed as configured.
pub(crate) fn frame(schema_id: Option<u32>, single_object: Vec<u8>) -> Result<Vec<u8>, WireError> {
    match schema_id {
        None => Ok(single_object),
        Some(id) => wire::single_object_to_registry(id, &single_object),
    }
}
