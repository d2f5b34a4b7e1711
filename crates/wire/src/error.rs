//! Errors of the wire format, each with a stable `HL-WIRE-…` code.

/// What can go wrong reading or writing hookline's Avro records.
///
/// Messages name fields and schemas, never field values: a value may be a secret or a trace.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The bytes do not start with the single-object marker `0xC3 0x01`.
    #[error("not Avro single-object encoding (missing 0xC3 0x01 marker)")]
    NotSingleObject,
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
            WireError::NotSingleObject | WireError::UnknownFingerprint(_) => {
                "HL-WIRE-UNKNOWN-FORMAT"
            }
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
