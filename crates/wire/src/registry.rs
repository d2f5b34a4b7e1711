//! The schema registry kept in `schemas/`: every version of every record, found by its
//! CRC-64-AVRO fingerprint, and Avro single-object encoding on top of it.

use std::collections::HashMap;
use std::fmt;

use apache_avro::Schema;
use apache_avro::rabin::Rabin;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bundled::{BUNDLED_SCHEMAS, version_of};
use crate::error::WireError;
use crate::event::{Catalogue, EVENT};
use crate::json::{self, Names};
use crate::records::Record;
use crate::value_ser::Typed;

/// Single-object encoding marker (Avro specification).
const MARKER: [u8; 2] = [0xC3, 0x01];
const HEADER_LEN: usize = 10;

/// A CRC-64-AVRO (Rabin) schema fingerprint, little-endian as on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 8]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl Fingerprint {
    /// The fingerprint of a parsed schema.
    pub fn of(schema: &Schema) -> Self {
        let bytes = schema.fingerprint::<Rabin>().bytes;
        let mut out = [0u8; 8];
        out.copy_from_slice(&bytes[..8]);
        Fingerprint(out)
    }
}

struct Version {
    number: u32,
    /// Lives for the process: the readers and writer below borrow it.
    schema: &'static Schema,
}

struct Family {
    /// Index into `versions` of the newest version.
    current: usize,
    versions: Vec<Version>,
    fingerprints: Vec<Fingerprint>,
    /// Per version, a reader of data written with it (resolved to the current version
    /// when older); built once, not per record.
    readers: Vec<GenericDatumReader<'static>>,
    /// A writer of the current version.
    writer: GenericDatumWriter<'static>,
    /// The named types of the current version, for [`Typed`] values.
    names: Names<'static>,
}

impl Family {
    /// A record's versions, with a reader per version and a writer of the newest.
    fn new(
        name: &str,
        versions: Vec<Version>,
        fingerprints: Vec<Fingerprint>,
    ) -> Result<Self, WireError> {
        let built = |e: apache_avro::Error| WireError::Schema {
            file: name.to_owned(),
            reason: e.to_string(),
        };
        let current = versions
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| v.number)
            .map_or(0, |(i, _)| i);
        let newest = versions[current].schema;
        let writer = GenericDatumWriter::builder(newest).build().map_err(built)?;
        let readers = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                // Written with the current schema: read as written. Resolving it against
                // itself would re-pick union branches by shape (the first branch a record
                // fits), and turn one event type's data into another's.
                if i == current {
                    GenericDatumReader::builder(v.schema).build()
                } else {
                    GenericDatumReader::builder(v.schema)
                        .reader_schema(newest)
                        .build()
                }
            })
            .collect::<Result<_, _>>()
            .map_err(built)?;
        let mut names = Names::new();
        json::collect_names(newest, &mut names);
        Ok(Family {
            current,
            versions,
            fingerprints,
            readers,
            writer,
            names,
        })
    }
}

/// Every known schema version, by record full name and by fingerprint.
pub struct Registry {
    families: HashMap<String, Family>,
    by_fingerprint: HashMap<Fingerprint, (String, usize)>,
    catalogue: Catalogue,
}

/// The most the Avro decoder allocates for one length-prefixed value (a string, bytes,
/// an array's items): the largest record Kafka takes here (8 MiB). A prefix claiming
/// more is an error, not an allocation: apache-avro's own default is 512 MiB, which a
/// few bytes of a hostile record could make every decoder allocate.
pub const MAX_ALLOCATION_BYTES: usize = 8 * 1024 * 1024;

impl Registry {
    /// The registry of the schemas compiled into this binary.
    pub fn bundled() -> Result<Self, WireError> {
        Self::from_sources(BUNDLED_SCHEMAS.iter().copied())
    }

    /// Builds a registry from `(file name, schema text)` pairs named `<record>.v<N>.avsc`.
    pub fn from_sources<'a>(
        sources: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, WireError> {
        // Process-wide and set once; every decoder goes through a registry.
        apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        // Each record's versions and their fingerprints, in file order.
        let mut found: HashMap<String, (Vec<Version>, Vec<Fingerprint>)> = HashMap::new();
        let mut by_fingerprint = HashMap::new();
        for (file, text) in sources {
            let schema_err = |reason: String| WireError::Schema {
                file: file.to_owned(),
                reason,
            };
            let number = version_of(file)
                .ok_or_else(|| schema_err("file name must be <record>.v<N>.avsc".to_owned()))?;
            let schema = Schema::parse_str(text).map_err(|e| schema_err(e.to_string()))?;
            let Schema::Record(record) = &schema else {
                return Err(schema_err("top-level schema must be a record".to_owned()));
            };
            let name = record.name.fullname(None);
            let fingerprint = Fingerprint::of(&schema);
            let (versions, fingerprints) = found.entry(name.clone()).or_default();
            if versions.iter().any(|v| v.number == number) {
                return Err(schema_err(format!(
                    "{name} version {number} is defined twice"
                )));
            }
            if by_fingerprint
                .insert(fingerprint, (name.clone(), versions.len()))
                .is_some()
            {
                return Err(schema_err(format!(
                    "fingerprint {fingerprint} is not unique"
                )));
            }
            // Leaked on purpose: a registry is built a handful of times per process
            // (once per service component), and its cached readers and writer borrow
            // the schemas for as long as it lives.
            let schema: &'static Schema = Box::leak(Box::new(schema));
            versions.push(Version { number, schema });
            fingerprints.push(fingerprint);
        }
        let families = found
            .into_iter()
            .map(|(name, (versions, fingerprints))| {
                let family = Family::new(&name, versions, fingerprints)?;
                Ok((name, family))
            })
            .collect::<Result<HashMap<_, _>, WireError>>()?;
        let catalogue = match families.get(EVENT) {
            Some(f) => Catalogue::new(f.versions[f.current].schema)?,
            None => Catalogue::empty(),
        };
        Ok(Registry {
            families,
            by_fingerprint,
            catalogue,
        })
    }

    /// The schema writers use for a record.
    pub fn current(&self, full_name: &str) -> Result<&Schema, WireError> {
        let family = self.family(full_name)?;
        Ok(family.versions[family.current].schema)
    }

    /// Writes a typed record as single-object encoding with its current schema.
    pub fn encode<T: Record + Serialize>(&self, record: &T) -> Result<Vec<u8>, WireError> {
        let (writer, fingerprint) = self.writer(T::FULL_NAME)?;
        let mut out = header(fingerprint);
        writer
            .write_ser(&mut out, record)
            .map_err(|e| encode_err(T::FULL_NAME, &e))?;
        Ok(out)
    }

    /// Writes a generic value as single-object encoding with the record's current schema.
    /// The value must be of the schema's types, its records' fields in schema order
    /// (what the JSON conversion builds).
    pub fn encode_value(&self, full_name: &str, value: Value) -> Result<Vec<u8>, WireError> {
        let family = self.family(full_name)?;
        let mut out = header(family.fingerprints[family.current]);
        let typed = Typed {
            value: &value,
            schema: family.versions[family.current].schema,
            names: &family.names,
        };
        family
            .writer
            .write_ser(&mut out, &typed)
            .map_err(|e| encode_err(full_name, &e))?;
        Ok(out)
    }

    /// Reads a typed record written with any known version of its schema. A record
    /// written with the current version is deserialised straight from its bytes; an
    /// older one through a generic value resolved to the current version.
    pub fn decode<T: Record + DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, WireError> {
        let (index, datum) = self.locate(T::FULL_NAME, bytes)?;
        if self.is_current(T::FULL_NAME, index) {
            return self.deserialize_datum(T::FULL_NAME, datum);
        }
        let value = self.read_datum(T::FULL_NAME, index, datum)?;
        apache_avro::from_value::<T>(&value)
            .map_err(|_| WireError::Datum(format!("datum does not fit {}", T::FULL_NAME)))
    }

    /// Whether version `index` (file order) of `full_name` is its current version.
    pub(crate) fn is_current(&self, full_name: &str, index: usize) -> bool {
        self.family(full_name).is_ok_and(|f| f.current == index)
    }

    /// Deserialises a datum (no header) written with the current version of
    /// `full_name`, with no value tree in between.
    pub(crate) fn deserialize_datum<T: DeserializeOwned>(
        &self,
        full_name: &str,
        mut datum: &[u8],
    ) -> Result<T, WireError> {
        let family = self.family(full_name)?;
        // The current version's reader has no reader schema to resolve to, which
        // `read_deser` requires (it panics otherwise): see `Family::new`.
        let read = family.readers[family.current]
            .read_deser::<T>(&mut datum)
            .map_err(|e| datum_err(full_name, &e))?;
        trailing(full_name, datum)?;
        Ok(read)
    }

    /// Reads a single-object encoded record, resolving the writer's schema (found by
    /// fingerprint) to the current version of `full_name`.
    pub fn decode_value(&self, full_name: &str, bytes: &[u8]) -> Result<Value, WireError> {
        let (index, datum) = self.locate(full_name, bytes)?;
        self.read_datum(full_name, index, datum)
    }

    /// The version (index in file order) a single-object encoded `full_name` was
    /// written with, and its datum.
    pub(crate) fn locate<'b>(
        &self,
        full_name: &str,
        bytes: &'b [u8],
    ) -> Result<(usize, &'b [u8]), WireError> {
        let (fingerprint, datum) = single_object(bytes).ok_or(WireError::NotSingleObject)?;
        let (family_name, index) = self
            .by_fingerprint
            .get(&fingerprint)
            .ok_or(WireError::UnknownFingerprint(fingerprint))?;
        if family_name != full_name {
            return Err(WireError::WrongRecord {
                expected: full_name.to_owned(),
                found: family_name.clone(),
            });
        }
        Ok((*index, datum))
    }

    /// Reads a datum (no header) written with version `index` (in file order) of
    /// `full_name`, resolved to its current version.
    pub(crate) fn read_datum(
        &self,
        full_name: &str,
        index: usize,
        mut datum: &[u8],
    ) -> Result<Value, WireError> {
        let family = self.family(full_name)?;
        let reader = family.readers.get(index).ok_or_else(|| WireError::Schema {
            file: full_name.to_owned(),
            reason: "no such version".to_owned(),
        })?;
        let value = reader
            .read_value(&mut datum)
            .map_err(|e| datum_err(full_name, &e))?;
        trailing(full_name, datum)?;
        Ok(value)
    }

    /// The version (index in file order) of `full_name` with this fingerprint.
    #[cfg_attr(not(feature = "schema-registry"), allow(dead_code))]
    pub(crate) fn version_with(&self, full_name: &str, fingerprint: Fingerprint) -> Option<usize> {
        match self.by_fingerprint.get(&fingerprint) {
            Some((name, index)) if name == full_name => Some(*index),
            _ => None,
        }
    }

    /// Every version's schema of `full_name`, in file order (the order of the indexes
    /// [`Self::version_with`] gives).
    #[cfg_attr(not(feature = "schema-registry"), allow(dead_code))]
    pub(crate) fn schemas_in_file_order(
        &self,
        full_name: &str,
    ) -> Result<Vec<&'static Schema>, WireError> {
        Ok(self
            .family(full_name)?
            .versions
            .iter()
            .map(|v| v.schema)
            .collect())
    }

    /// The current schema of a record, for as long as the process lives.
    #[cfg_attr(not(feature = "schema-registry"), allow(dead_code))]
    pub(crate) fn current_static(&self, full_name: &str) -> Result<&'static Schema, WireError> {
        let family = self.family(full_name)?;
        Ok(family.versions[family.current].schema)
    }

    /// The fingerprints of every known version of a record, oldest first.
    pub fn fingerprints(&self, full_name: &str) -> Result<Vec<(u32, Fingerprint)>, WireError> {
        let family = self.family(full_name)?;
        let mut out: Vec<_> = family
            .versions
            .iter()
            .map(|v| v.number)
            .zip(family.fingerprints.iter().copied())
            .collect();
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    /// Every version of a record as `(version, schema)`, oldest first.
    pub fn versions(&self, full_name: &str) -> Result<Vec<(u32, &Schema)>, WireError> {
        let family = self.family(full_name)?;
        let mut out: Vec<_> = family
            .versions
            .iter()
            .map(|v| (v.number, v.schema))
            .collect();
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    pub(crate) fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    fn family(&self, full_name: &str) -> Result<&Family, WireError> {
        self.families
            .get(full_name)
            .ok_or_else(|| WireError::Schema {
                file: full_name.to_owned(),
                reason: "no such record in schemas/".to_owned(),
            })
    }

    fn writer(
        &self,
        full_name: &str,
    ) -> Result<(&GenericDatumWriter<'static>, Fingerprint), WireError> {
        let family = self.family(full_name)?;
        Ok((&family.writer, family.fingerprints[family.current]))
    }
}

/// The writer's fingerprint and the datum of a single-object encoded record; `None`
/// when `bytes` do not begin with the single-object header.
pub(crate) fn single_object(bytes: &[u8]) -> Option<(Fingerprint, &[u8])> {
    let (head, datum) = bytes.split_at_checked(HEADER_LEN)?;
    let (marker, fingerprint) = head.split_at(MARKER.len());
    (marker == MARKER).then(|| (Fingerprint(fingerprint.try_into().expect("8 bytes")), datum))
}

/// An error when bytes are left after a datum.
fn trailing(full_name: &str, rest: &[u8]) -> Result<(), WireError> {
    if rest.is_empty() {
        Ok(())
    } else {
        Err(WireError::Datum(format!(
            "trailing bytes after {full_name} datum"
        )))
    }
}

fn header(fingerprint: Fingerprint) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MARKER);
    out.extend_from_slice(&fingerprint.0);
    out
}

/// A decoding error without the library's message, which may quote the datum.
pub(crate) fn datum_err(full_name: &str, e: &apache_avro::Error) -> WireError {
    WireError::Datum(match e.details() {
        apache_avro::error::Details::MemoryAllocation { .. } => format!(
            "a length in the {full_name} datum is over the {MAX_ALLOCATION_BYTES}-byte bound: refused unallocated"
        ),
        _ => format!("datum does not match {full_name} schema"),
    })
}

fn encode_err(full_name: &str, err: &apache_avro::Error) -> WireError {
    // Only the error's kind: its text can quote the offending value.
    let kind = format!("{err:?}");
    let kind = kind
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("Error")
        .to_owned();
    WireError::Encode {
        schema: full_name.to_owned(),
        reason: kind,
    }
}
