//! Made-up events with every field filled, for dry runs of templates.

use apache_avro::schema::{RecordSchema, Schema};
use serde_json::{Map, Value as Json};

use super::key::partition_key;
use super::{DEFAULT_VERSION, EVENT, Event, data_union};
use crate::json::{self, Names};
use crate::registry::Registry;

impl Registry {
    /// A made-up event of `event_type` with every field filled, for dry runs of
    /// templates when an endpoint is created.
    pub fn sample_event(&self, event_type: &str) -> Option<Event> {
        let schema = self.current(EVENT).ok()?;
        let catalogue = self.catalogue();
        let branch = *catalogue.branches.get(event_type)?;
        let Schema::Record(record) =
            json::deref(&data_union(schema).ok()?[branch], &catalogue.names)
        else {
            return None;
        };
        let data = sample_record(record, &catalogue.names);
        let key = partition_key(record, &data).unwrap_or_else(|| "sample".to_owned());
        Some(Event {
            id: "00000000-0000-0000-0000-000000000000".to_owned(),
            event_type: event_type.to_owned(),
            version: DEFAULT_VERSION.to_owned(),
            created_at: "2023-10-15T19:19:08+00:00".to_owned(),
            data,
            key,
        })
    }
}

fn sample_record(record: &RecordSchema, names: &Names<'_>) -> Json {
    let mut obj = Map::new();
    for field in &record.fields {
        let value = if field.custom_attributes.get("hookline.json") == Some(&Json::Bool(true)) {
            serde_json::json!({"id": "sample-id", "name": "sample"})
        } else if field.custom_attributes.get("hookline.format") == Some(&Json::from("rfc3339")) {
            Json::from("2023-10-15T19:19:08+00:00")
        } else {
            sample_value(&field.schema, &field.name, names)
        };
        obj.insert(field.name.clone(), value);
    }
    Json::Object(obj)
}

fn sample_value(schema: &Schema, name: &str, names: &Names<'_>) -> Json {
    match json::deref(schema, names) {
        Schema::Boolean => Json::Bool(true),
        Schema::Int | Schema::Long => Json::from(1),
        Schema::Float | Schema::Double => Json::from(1.5),
        Schema::String => Json::from(format!("sample-{name}")),
        Schema::Enum(e) => Json::from(e.symbols.first().cloned().unwrap_or_default()),
        Schema::Array(a) => Json::Array(vec![sample_value(&a.items, name, names)]),
        Schema::Record(r) => sample_record(r, names),
        Schema::Union(u) => u
            .variants()
            .iter()
            .find(|v| !matches!(v, Schema::Null))
            .map_or(Json::Null, |v| sample_value(v, name, names)),
        _ => Json::Null,
    }
}
