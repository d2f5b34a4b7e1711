//! Reading `events` records in either framing, decided by the first byte:
//!
//! - `0xC3 0x01` + fingerprint: Avro single-object encoding, the writer schema one of
//!   `schemas/` (hookline's own, and engines that use its schema files);
//! - `0x00` + a 4-byte big-endian schema id: the Confluent Schema Registry wire format,
//!   the writer schema fetched from the registry by id once and kept for the process's
//!   life (ids are immutable).
//!
//! A registry id whose schema is one of `schemas/` (same fingerprint) is read exactly
//! like single-object encoding; any other writer schema is resolved to hookline's event
//! schema ([`Registry::event_from_foreign`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{Name, ResolvedSchema};

use crate::error::WireError;
use crate::event::{EVENT, Event};
use crate::registry::{Fingerprint, Registry, datum_err};
use crate::schema_registry::{RegistryError, SchemaRegistry};

/// The first byte of the Confluent wire format.
pub const SCHEMA_REGISTRY_MAGIC: u8 = 0x00;
pub(crate) const SCHEMA_REGISTRY_HEADER: usize = 5;
const SINGLE_OBJECT_HEADER: usize = 10;
/// How long a registry failure answers for the registry, for the same id.
const FAILURE_MEMORY: Duration = Duration::from_secs(1);
/// The registry's error code for an id it does not know.
const SCHEMA_NOT_FOUND: i64 = 40403;

/// How a record is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Avro single-object encoding (`0xC3 0x01` + CRC-64-AVRO fingerprint).
    SingleObject,
    /// The Confluent Schema Registry wire format (`0x00` + schema id).
    SchemaRegistry(u32),
}

impl Framing {
    /// The framing of `bytes`, from its first byte.
    pub fn of(bytes: &[u8]) -> Result<Framing, WireError> {
        match bytes.first() {
            Some(0xC3) => Ok(Framing::SingleObject),
            Some(&SCHEMA_REGISTRY_MAGIC) if bytes.len() >= SCHEMA_REGISTRY_HEADER => {
                let mut id = [0u8; 4];
                id.copy_from_slice(&bytes[1..SCHEMA_REGISTRY_HEADER]);
                Ok(Framing::SchemaRegistry(u32::from_be_bytes(id)))
            }
            _ => Err(WireError::UnknownFraming),
        }
    }
}

/// `datum` framed for the Schema Registry under `schema_id`.
pub fn schema_registry_frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SCHEMA_REGISTRY_HEADER + datum.len());
    out.push(SCHEMA_REGISTRY_MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

/// A single-object encoded record framed for the Schema Registry instead: the same
/// datum, under `schema_id` (which must be the registry's id of the same schema).
pub fn single_object_to_registry(schema_id: u32, bytes: &[u8]) -> Result<Vec<u8>, WireError> {
    match Framing::of(bytes)? {
        Framing::SingleObject if bytes.len() >= SINGLE_OBJECT_HEADER => Ok(schema_registry_frame(
            schema_id,
            &bytes[SINGLE_OBJECT_HEADER..],
        )),
        _ => Err(WireError::NotSingleObject),
    }
}

/// Why an event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The record itself is unreadable: its dead letter, with the error's code.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The registry did not answer as it should (unreachable, refused credentials): not
    /// the record's fault. The record waits and is read again later.
    #[error(transparent)]
    Registry(RegistryError),
}

/// What [`EventReader::read_cached`] found.
#[derive(Debug)]
pub enum Read {
    /// Read, or unreadable for good.
    Done(Result<Event, WireError>),
    /// Framed with a registry id whose schema is not fetched yet: [`EventReader::fetch`].
    Fetch(u32),
}

/// A registry id's writer schema, ready to read with.
pub(crate) enum Writer {
    /// One of `schemas/`: the version's index in file order.
    Known(usize),
    /// Another schema, resolved to hookline's record by record.
    Foreign {
        reader: GenericDatumReader<'static>,
        branches: Vec<Option<String>>,
    },
    /// Never readable as an event (cached: an id's schema never changes).
    Unusable(String),
}

/// Reads `events` records in either framing; one per service, shared by its tasks.
pub struct EventReader {
    client: Option<SchemaRegistry>,
    writers: RwLock<HashMap<u32, Arc<Writer>>>,
    /// One fetch at a time: a burst of records with a new id asks the registry once.
    /// It holds the last failure: records that ask again within [`FAILURE_MEMORY`] get
    /// that answer, so a registry that is down is asked about once a second, not once
    /// per waiting record.
    fetching: tokio::sync::Mutex<Option<(u32, Instant, RegistryError)>>,
    /// The named types of hookline's event schema, for resolving foreign data.
    names: HashMap<Name, &'static Schema>,
    /// Per version of `schemas/event.*.avsc` (file order): whether its datum begins with
    /// `id` and `type` ([`Self::peek_type`]).
    peekable: Vec<bool>,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field(
                "schema_registry",
                &self.client.as_ref().map(SchemaRegistry::url),
            )
            .finish_non_exhaustive()
    }
}

impl EventReader {
    /// A reader of both framings; without a registry client, registry-framed records are
    /// dead letters (`HL-WIRE-NO-SCHEMA-REGISTRY`).
    pub fn new(registry: &Registry, client: Option<SchemaRegistry>) -> Result<Self, WireError> {
        let schema = registry.current_static(EVENT)?;
        let names = ResolvedSchema::try_from(schema)
            .map_err(|e| WireError::Schema {
                file: EVENT.to_owned(),
                reason: e.to_string(),
            })?
            .get_names()
            .clone();
        let peekable = registry
            .schemas_in_file_order(EVENT)?
            .into_iter()
            .map(crate::event_type::leads_with_type)
            .collect();
        Ok(EventReader {
            client,
            writers: RwLock::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(None),
            names,
            peekable,
        })
    }

    /// Reads `bytes` without waiting: single-object records and registry ids already
    /// fetched are read at once (the hot path); a new id asks for [`Self::fetch`].
    pub fn read_cached(&self, registry: &Registry, bytes: &[u8]) -> Read {
        let id = match Framing::of(bytes) {
            Ok(Framing::SingleObject) => return Read::Done(registry.decode_event(bytes)),
            Ok(Framing::SchemaRegistry(id)) => id,
            Err(e) => return Read::Done(Err(e)),
        };
        match self.writer_of(id) {
            Some(w) => {
                Read::Done(self.read_with(registry, id, &w, &bytes[SCHEMA_REGISTRY_HEADER..]))
            }
            None if self.client.is_none() => Read::Done(Err(WireError::NoSchemaRegistry(id))),
            None => Read::Fetch(id),
        }
    }

    /// Reads `bytes`, fetching its writer schema first when needed.
    pub async fn read(&self, registry: &Registry, bytes: &[u8]) -> Result<Event, ReadError> {
        match self.read_cached(registry, bytes) {
            Read::Done(result) => Ok(result?),
            Read::Fetch(id) => {
                self.fetch(registry, id).await?;
                match self.read_cached(registry, bytes) {
                    Read::Done(result) => Ok(result?),
                    Read::Fetch(_) => Err(ReadError::Registry(RegistryError::Invalid(
                        "schema fetched but not kept".to_owned(),
                    ))),
                }
            }
        }
    }

    /// Fetches the writer schema of registry id `id` and keeps it. An id the registry
    /// does not know is the record's fault ([`ReadError::Wire`]); anything else the
    /// registry does wrong is not ([`ReadError::Registry`]).
    pub async fn fetch(&self, registry: &Registry, id: u32) -> Result<(), ReadError> {
        let Some(client) = &self.client else {
            return Err(WireError::NoSchemaRegistry(id).into());
        };
        let mut last_failure = self.fetching.lock().await;
        if self.cached(id) {
            return Ok(());
        }
        if let Some((failed, at, e)) = &*last_failure
            && *failed == id
            && at.elapsed() < FAILURE_MEMORY
        {
            return Err(ReadError::Registry(e.clone()));
        }
        let writer = match client.schema_by_id(id).await {
            Ok(text) => self.writer(registry, &text),
            Err(RegistryError::NotFound(SCHEMA_NOT_FOUND)) => {
                return Err(WireError::UnknownSchemaId(id).into());
            }
            Err(RegistryError::Refused { message, .. }) => Writer::Unusable(message),
            Err(e) => {
                *last_failure = Some((id, Instant::now(), e.clone()));
                return Err(ReadError::Registry(e));
            }
        };
        self.writers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(writer));
        Ok(())
    }

    /// Keeps `schema` as the writer schema of registry id `id`, as if fetched: for
    /// schemas known in advance, and for benchmarks that measure reading without a
    /// registry. The registry's own answer is never replaced once kept.
    pub fn learn(&self, registry: &Registry, id: u32, schema: &str) {
        let writer = Arc::new(self.writer(registry, schema));
        self.writers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_insert(writer);
    }

    /// The writer schema of registry id `id`, if fetched.
    pub(crate) fn writer_of(&self, id: u32) -> Option<Arc<Writer>> {
        self.writers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Whether version `index` (file order) of the event schema can be peeked.
    pub(crate) fn peekable(&self, index: usize) -> bool {
        self.peekable.get(index).copied().unwrap_or(false)
    }

    fn cached(&self, id: u32) -> bool {
        self.writer_of(id).is_some()
    }

    fn writer(&self, registry: &Registry, text: &str) -> Writer {
        let schema = match Schema::parse_str(text) {
            Ok(s) => s,
            Err(_) => return Writer::Unusable("not a valid Avro schema".to_owned()),
        };
        if let Some(index) = registry.version_with(EVENT, Fingerprint::of(&schema)) {
            return Writer::Known(index);
        }
        let branches = match Registry::data_branch_names(&schema) {
            Ok(b) => b,
            Err(_) => {
                return Writer::Unusable(
                    "not an event envelope (a record with a data union)".to_owned(),
                );
            }
        };
        // Kept for the process's life, like `schemas/`: one per registry id read.
        let schema: &'static Schema = Box::leak(Box::new(schema));
        match GenericDatumReader::builder(schema).build() {
            Ok(reader) => Writer::Foreign { reader, branches },
            Err(_) => Writer::Unusable("cannot build a reader for it".to_owned()),
        }
    }

    fn read_with(
        &self,
        registry: &Registry,
        id: u32,
        writer: &Writer,
        mut datum: &[u8],
    ) -> Result<Event, WireError> {
        match writer {
            Writer::Known(index) => registry.read_event_datum(*index, datum),
            Writer::Foreign { reader, branches } => {
                let value = reader
                    .read_value(&mut datum)
                    .map_err(|e| datum_err(EVENT, &e))?;
                if !datum.is_empty() {
                    return Err(WireError::Datum(
                        "trailing bytes after the event datum".to_owned(),
                    ));
                }
                registry
                    .event_from_foreign(value, branches, &self.names)
                    .map_err(|e| match e {
                        WireError::Datum(reason) => WireError::Unresolvable { id, reason },
                        other => other,
                    })
            }
            Writer::Unusable(reason) => Err(WireError::Unresolvable {
                id,
                reason: reason.clone(),
            }),
        }
    }
}
