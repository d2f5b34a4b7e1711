//! Events: the envelope `{id, type, version, created_at, data}` as JSON and as Avro.
//!
//! The event schema is the catalogue: each branch of its `data` union lists the event
//! types it carries (`hookline.event_types`) and where its partition key lies
//! (`hookline.key`). A new event type is a schema change, not a code change.

use apache_avro::schema::{RecordSchema, Schema};
use apache_avro::types::Value;
use serde_json::{Map, Value as Json};

use crate::error::WireError;
use crate::json::{self, Names};
use crate::registry::Registry;

mod direct;
mod foreign;
mod ingest;
mod key;
mod sample;
mod sensitive;

pub use self::ingest::EncodedEvent;
use self::key::partition_key;
use self::sensitive::sensitive_paths;

/// The payload version every delivery carries (as `version` and `api_version`).
pub const DEFAULT_VERSION: &str = "2023-10-15";

pub(crate) const EVENT: &str = "hookline.events.Event";
/// The fields of an event's JSON envelope.
pub const ENVELOPE_FIELDS: [&str; 6] =
    ["id", "type", "version", "api_version", "created_at", "data"];

/// A decoded, valid event with its `data` in the JSON shape receivers see.
#[derive(Clone, PartialEq)]
pub struct Event {
    /// Unique id.
    pub id: String,
    /// Event type, e.g. `transfer.error`.
    pub event_type: String,
    /// Payload version.
    pub version: String,
    /// RFC 3339.
    pub created_at: String,
    /// The type's data, as JSON.
    pub data: Json,
    /// The kafka key: transfer id, resource id… (from the schema's `hookline.key`).
    pub key: String,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `data` may hold trace text or logs: never printed.
        f.debug_struct("Event")
            .field("id", &self.id)
            .field("type", &self.event_type)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// The event schema's catalogue, computed once per registry.
pub(crate) struct Catalogue {
    names: Names<'static>,
    /// event type -> index of its branch in the `data` union
    branches: std::collections::HashMap<String, usize>,
    /// branch index -> dotted paths (inside `data`) of its `hookline.sensitive` fields
    sensitive: std::collections::HashMap<usize, Vec<String>>,
    /// Whether data of the current schema is read straight into JSON; if so, by branch
    /// index, the paths of its JSON text fields ([`direct`]).
    direct: Option<Vec<Vec<String>>>,
}

impl Catalogue {
    pub(crate) fn new(event_schema: &'static Schema) -> Result<Self, WireError> {
        let mut names = Names::new();
        json::collect_names(event_schema, &mut names);
        let mut branches = std::collections::HashMap::new();
        let mut sensitive = std::collections::HashMap::new();
        let data = data_union(event_schema)?;
        for (i, branch) in data.iter().enumerate() {
            let Schema::Record(r) = json::deref(branch, &names) else {
                continue;
            };
            if let Some(Json::Array(types)) = r.attributes.get("hookline.event_types") {
                for t in types.iter().filter_map(Json::as_str) {
                    branches.insert(t.to_owned(), i);
                }
            }
            let mut paths = Vec::new();
            sensitive_paths(r, "", &names, &mut paths)?;
            sensitive.insert(i, paths);
        }
        let direct = direct::json_text_paths(event_schema, &names);
        Ok(Catalogue {
            names,
            branches,
            sensitive,
            direct,
        })
    }

    pub(crate) fn empty() -> Self {
        Catalogue {
            names: Names::new(),
            branches: std::collections::HashMap::new(),
            sensitive: std::collections::HashMap::new(),
            direct: None,
        }
    }

    /// Every event type the schema carries, sorted.
    pub(crate) fn types(&self) -> Vec<&str> {
        let mut t: Vec<_> = self.branches.keys().map(String::as_str).collect();
        t.sort_unstable();
        t
    }

    pub(crate) fn knows(&self, event_type: &str) -> bool {
        self.branches.contains_key(event_type)
    }
}

fn envelope(schema: &Schema) -> Result<&RecordSchema, WireError> {
    match schema {
        Schema::Record(r) => Ok(r),
        _ => Err(WireError::Schema {
            file: EVENT.to_owned(),
            reason: "must be a record".to_owned(),
        }),
    }
}

fn data_union(schema: &Schema) -> Result<&[Schema], WireError> {
    let env = envelope(schema)?;
    match env.lookup.get("data").map(|i| &env.fields[*i].schema) {
        Some(Schema::Union(u)) => Ok(u.variants()),
        _ => Err(WireError::Schema {
            file: EVENT.to_owned(),
            reason: "data must be a union".to_owned(),
        }),
    }
}

impl Registry {
    /// Every event type the current event schema carries, sorted.
    pub fn event_types(&self) -> Vec<&str> {
        self.catalogue().types()
    }

    /// The dotted paths inside `data` of `event_type`'s sensitive fields (trace text,
    /// transfer logs): sealed before they reach Kafka, never logged.
    pub fn sensitive_fields(&self, event_type: &str) -> &[String] {
        let catalogue = self.catalogue();
        catalogue
            .branches
            .get(event_type)
            .and_then(|b| catalogue.sensitive.get(b))
            .map_or(&[], Vec::as_slice)
    }

    /// Encodes an event (e.g. one whose sensitive fields were sealed after
    /// [`Registry::event_from_json`]), validating it again.
    pub fn encode_event(&self, event: &Event) -> Result<Vec<u8>, WireError> {
        let mut json = event.envelope_json();
        if let Json::Object(obj) = &mut json {
            obj.insert("id".to_owned(), Json::String(event.id.clone()));
        }
        self.event_from_json(&json).map(|(_, bytes)| bytes)
    }

    /// True when the current event schema carries `event_type`.
    pub fn knows_event_type(&self, event_type: &str) -> bool {
        self.catalogue().knows(event_type)
    }

    /// Reads an event written with any known version of the event schema, and checks
    /// that its type matches its data.
    pub fn decode_event(&self, bytes: &[u8]) -> Result<Event, WireError> {
        let (index, datum) = self.locate(EVENT, bytes)?;
        self.read_event_datum(index, datum)
    }

    /// Reads an event datum written with version `index` (file order) of the event
    /// schema: straight into JSON when written with the current version and the schema
    /// allows it ([`direct`]), else through the value tree.
    pub(crate) fn read_event_datum(&self, index: usize, datum: &[u8]) -> Result<Event, WireError> {
        let paths = match &self.catalogue().direct {
            Some(paths) if self.is_current(EVENT, index) => paths,
            _ => {
                let value = self.read_datum(EVENT, index, datum)?;
                return self.event_from_value(value);
            }
        };
        let d: direct::Datum = self.deserialize_datum(EVENT, datum)?;
        let mut data = d.data;
        self.event_from_parts(
            [d.id, d.event_type, d.version, d.created_at],
            d.branch,
            |_| {
                if let Some(paths) = paths.get(d.branch) {
                    direct::parse_json_text(&mut data, paths)?;
                }
                Ok(data)
            },
        )
    }

    /// An event from its envelope, read as the current event schema.
    pub(crate) fn event_from_value(&self, value: Value) -> Result<Event, WireError> {
        let Value::Record(fields) = value else {
            return Err(WireError::Datum("event is not a record".to_owned()));
        };
        let mut id = None;
        let mut event_type = None;
        let mut version = None;
        let mut created_at = None;
        let mut data = None;
        for (name, v) in fields {
            match (name.as_str(), v) {
                ("id", Value::String(s)) => id = Some(s),
                ("type", Value::String(s)) => event_type = Some(s),
                ("version", Value::String(s)) => version = Some(s),
                ("created_at", Value::String(s)) => created_at = Some(s),
                ("data", Value::Union(i, inner)) => data = Some((i as usize, *inner)),
                _ => {}
            }
        }
        let (
            Some(id),
            Some(event_type),
            Some(version),
            Some(created_at),
            Some((branch, data_value)),
        ) = (id, event_type, version, created_at, data)
        else {
            return Err(WireError::Datum("event envelope is incomplete".to_owned()));
        };
        let names = &self.catalogue().names;
        self.event_from_parts([id, event_type, version, created_at], branch, |record| {
            json::record_to_json(record, &data_value, &json::Path::Root("data"), names)
        })
    }

    /// An event from its envelope's strings (`id`, `type`, `version`, `created_at`) and
    /// its data's branch, whose JSON `data` gives: checks that the type is the branch's.
    fn event_from_parts(
        &self,
        [id, event_type, version, created_at]: [String; 4],
        branch: usize,
        data: impl FnOnce(&RecordSchema) -> Result<Json, WireError>,
    ) -> Result<Event, WireError> {
        let schema = self.current(EVENT)?;
        let catalogue = self.catalogue();
        match catalogue.branches.get(&event_type) {
            Some(b) if *b == branch => {}
            Some(_) => return Err(WireError::invalid("type", "does not match the data record")),
            None => {
                return Err(WireError::invalid(
                    "type",
                    "unknown event type (not in schemas/event)",
                ));
            }
        }
        if !crate::is_rfc3339(&created_at) {
            return Err(WireError::invalid(
                "created_at",
                "must be an RFC 3339 timestamp",
            ));
        }
        let Schema::Record(record) = json::deref(&data_union(schema)?[branch], &catalogue.names)
        else {
            return Err(WireError::invalid(
                "data",
                "event type has no record schema",
            ));
        };
        let data = data(record)?;
        Ok(Event::keyed(
            [id, event_type, version, created_at],
            record,
            data,
        ))
    }
}

impl Event {
    /// An event from its envelope's strings (`id`, `type`, `version`, `created_at`) and
    /// its data of `record`, keyed by the record's `hookline.key` paths, else by its id.
    fn keyed(
        [id, event_type, version, created_at]: [String; 4],
        record: &RecordSchema,
        data: Json,
    ) -> Event {
        let key = partition_key(record, &data).unwrap_or_else(|| id.clone());
        Event {
            id,
            event_type,
            version,
            created_at,
            data,
            key,
        }
    }

    /// The JSON body receivers get: `{type, version, api_version, created_at, data}`.
    /// The id travels in the delivery id header instead.
    pub fn envelope_json(&self) -> Json {
        let mut obj = Map::with_capacity(5);
        obj.insert("type".to_owned(), Json::String(self.event_type.clone()));
        obj.insert("version".to_owned(), Json::String(self.version.clone()));
        obj.insert("api_version".to_owned(), Json::String(self.version.clone()));
        obj.insert(
            "created_at".to_owned(),
            Json::String(self.created_at.clone()),
        );
        obj.insert("data".to_owned(), self.data.clone());
        Json::Object(obj)
    }

    /// [`Event::envelope_json`] serialised, the same bytes, without copying the data.
    pub fn envelope_bytes(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Envelope<'a> {
            #[serde(rename = "type")]
            event_type: &'a str,
            version: &'a str,
            api_version: &'a str,
            created_at: &'a str,
            data: &'a Json,
        }
        serde_json::to_vec(&Envelope {
            event_type: &self.event_type,
            version: &self.version,
            api_version: &self.version,
            created_at: &self.created_at,
            data: &self.data,
        })
        .unwrap_or_default()
    }
}
