//! Errors of the wire format, each with a stable `HL-WIRE-…` code.

/// What can go wrong reading or writing hookline's Avro records.
///
/// Messages name fields and schemas, never field values: a value may be a secret or a trace.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes do not start with the single-object marker `0xC3 0x01`.
    #[error("not Avro single-object encoding (missing 0xC3 0x01 marker)")]
    NotSingleObject,
    /// An `events` record in neither framing: the first byte is neither `0xC3` (Avro
    /// single-object encoding) nor `0x00` (the Confluent Schema Registry's wire format).
    #[error(
        "unknown framing: the first byte is neither 0xC3 (Avro single object) nor 0x00 (Schema Registry)"
    )]
    UnknownFraming,
    /// A Schema Registry id the registry does not know.
    #[error("schema id {0} is not in the Schema Registry")]
    UnknownSchemaId(u32),
    /// A Schema Registry-framed record while no registry is configured.
    #[error("Schema Registry framing (schema id {0}) but no HOOKLINE_SCHEMA_REGISTRY_URL is set")]
    NoSchemaRegistry(u32),
    /// The writer schema the registry holds under an id cannot be read as an event by
    /// hookline's event schema (not Avro, not an event envelope, or not resolvable).
    #[error("writer schema {id} does not resolve to hookline's event schema: {reason}")]
    Unresolvable {
        /// The registry's schema id.
        id: u32,
        /// Why (names of fields and records, never values).
        reason: String,
    },
    /// No schema in `schemas/` has the writer's fingerprint.
    #[error("unknown writer schema fingerprint {0}")]
    UnknownFingerprint(Fingerprint),
    /// The writer schema is known but belongs to another record type.
    #[error("record is a {found}, expected a {expected}")]
    WrongRecord {
        /// Full name of the expected record.
        expected: String,
        /// Full name of the record found.
        found: String,
    },
    /// The datum does not match its writer schema or cannot be resolved to the reader's.
    #[error("undecodable datum: {0}")]
    Datum(String),
    /// A value does not fit the schema (writing).
    #[error("value does not match schema {schema}: {reason}")]
    Encode {
        /// Full name of the schema.
        schema: String,
        /// Why (no field values).
        reason: String,
    },
    /// A JSON event does not fit its schema; `field` is a dotted path.
    #[error("{field}: {reason}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `data.error.transfer_id`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A schema file in `schemas/` is invalid.
    #[error("schema {file}: {reason}")]
    Schema {
        /// The file name.
        file: String,
        /// Why it was refused.
        reason: String,
    },
}

impl WireError {
    /// The stable code carried into dead letters and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::NotSingleObject
            | WireError::UnknownFingerprint(_)
            | WireError::UnknownFraming => "HL-WIRE-UNKNOWN-FORMAT",
            WireError::UnknownSchemaId(_) => "HL-WIRE-UNKNOWN-SCHEMA-ID",
            WireError::NoSchemaRegistry(_) => "HL-WIRE-NO-SCHEMA-REGISTRY",
            WireError::Unresolvable { .. } => "HL-WIRE-UNRESOLVABLE",
            WireError::WrongRecord { .. } => "HL-WIRE-WRONG-RECORD",
            WireError::Datum(_) => "HL-WIRE-UNDECODABLE",
            WireError::Encode { .. } => "HL-WIRE-ENCODE",
            WireError::Invalid { .. } => "HL-EVENT-INVALID",
            WireError::Schema { .. } => "HL-WIRE-SCHEMA",
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        WireError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

use crate::registry::Fingerprint;
