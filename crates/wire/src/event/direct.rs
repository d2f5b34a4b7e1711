//! Events written with the current schema, read straight into JSON by apache-avro's
//! schema-aware deserializer: no generic value tree between the bytes and the JSON
//! receivers see. Only for an event schema whose every type reads the same either way
//! ([`json_text_paths`] decides, once per registry); any other schema, and data written
//! with an older version, go through the value tree ([`Registry::event_from_value`]).
//!
//! [`Registry::event_from_value`]: crate::Registry

use std::fmt;

use apache_avro::schema::{RecordSchema, Schema};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

use super::sensitive::json_mut;
use crate::error::WireError;
use crate::json::{self, Names};

/// The envelope's fields, in the only order the direct read accepts: four strings,
/// then the data union.
const ENVELOPE: [&str; 5] = ["id", "type", "version", "created_at", "data"];
/// Where an error in the data points.
const DATA: json::Path<'static> = json::Path::Root("data");

/// An event's envelope as written: its strings, and its data's branch and JSON.
pub(super) struct Datum {
    pub id: String,
    pub event_type: String,
    pub version: String,
    pub created_at: String,
    pub branch: usize,
    pub data: Json,
}

/// Whether events of `schema` can be read directly: the envelope is four strings and
/// the data union, in that order, and every branch holds only types whose JSON the
/// deserializer gives as the value tree would. Then, per branch, the dotted paths of
/// its `hookline.json` fields (JSON text, parsed after the read).
pub(super) fn json_text_paths(schema: &Schema, names: &Names<'_>) -> Option<Vec<Vec<String>>> {
    let Schema::Record(envelope) = schema else {
        return None;
    };
    if envelope.fields.len() != ENVELOPE.len() {
        return None;
    }
    let mut data = None;
    for (field, name) in envelope.fields.iter().zip(ENVELOPE) {
        match (&field.schema, name) {
            _ if field.name != name => return None,
            (Schema::Union(u), "data") => data = Some(u.variants()),
            (Schema::String, _) if name != "data" => {}
            _ => return None,
        }
    }
    data?
        .iter()
        .map(|branch| {
            let mut paths = Vec::new();
            match json::deref(branch, names) {
                Schema::Record(r) => record_paths(r, "", names, &mut paths).then_some(paths),
                Schema::Null => Some(paths),
                _ => None,
            }
        })
        .collect()
}

/// Collects the `hookline.json` paths of `record`; false when it holds a type the
/// direct read does not give as the value tree would (bytes, maps, logical types), or
/// JSON text that is not a nullable string of a record reached through records.
fn record_paths(
    record: &RecordSchema,
    prefix: &str,
    names: &Names<'_>,
    out: &mut Vec<String>,
) -> bool {
    record.fields.iter().all(|field| {
        let path = if prefix.is_empty() {
            field.name.clone()
        } else {
            format!("{prefix}.{}", field.name)
        };
        if json::is_json_text(field) {
            let text = match &field.schema {
                Schema::String => true,
                Schema::Union(u) => {
                    u.is_nullable()
                        && u.variants().len() == 2
                        && u.variants().iter().any(|v| matches!(v, Schema::String))
                }
                _ => false,
            };
            out.push(path);
            return text;
        }
        match json::deref(&field.schema, names) {
            Schema::Record(r) => record_paths(r, &path, names, out),
            Schema::Union(u) => u.variants().iter().all(|v| match json::deref(v, names) {
                Schema::Record(r) if u.variants().len() == 2 && u.is_nullable() => {
                    record_paths(r, &path, names, out)
                }
                other => plain(other, names),
            }),
            other => plain(other, names),
        }
    })
}

/// A type without JSON text inside that reads the same either way.
fn plain(schema: &Schema, names: &Names<'_>) -> bool {
    match json::deref(schema, names) {
        Schema::Null
        | Schema::Boolean
        | Schema::Int
        | Schema::Long
        | Schema::Float
        | Schema::Double
        | Schema::String
        | Schema::Enum(_) => true,
        Schema::Array(a) => plain(&a.items, names),
        Schema::Union(u) => u.variants().iter().all(|v| plain(v, names)),
        Schema::Record(r) => {
            let mut found = Vec::new();
            record_paths(r, "", names, &mut found) && found.is_empty()
        }
        _ => false,
    }
}

/// Parses the JSON text at each of `paths` inside `data` (absent or null: left alone);
/// each must hold a JSON object.
pub(super) fn parse_json_text(data: &mut Json, paths: &[String]) -> Result<(), WireError> {
    for path in paths {
        if let Some(value) = json_mut(data, path)
            && let Json::String(text) = value
        {
            *value = json::object_from_text(text, &json::Path::Field(&DATA, path))?;
        }
    }
    Ok(())
}

impl<'de> Deserialize<'de> for Datum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(EnvelopeVisitor)
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Datum;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Datum, A::Error> {
        // The field order was checked against the schema (`json_text_paths`): the
        // four strings, then the data.
        let mut strings: [String; 4] = Default::default();
        for string in &mut strings {
            next_key(&mut map)?;
            *string = map.next_value()?;
        }
        next_key(&mut map)?;
        let (branch, data) = map.next_value_seed(Branch)?;
        let [id, event_type, version, created_at] = strings;
        Ok(Datum {
            id,
            event_type,
            version,
            created_at,
            branch,
            data,
        })
    }
}

/// Reads past the next field's name, which the schema fixes.
fn next_key<'de, A: MapAccess<'de>>(map: &mut A) -> Result<(), A::Error> {
    map.next_key_seed(Key)?
        .map(drop)
        .ok_or_else(|| de::Error::custom("event envelope is incomplete"))
}

/// A record field's or an enum symbol's name.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

/// The data union: the branch written, and its record as JSON.
struct Branch;

impl<'de> DeserializeSeed<'de> for Branch {
    type Value = (usize, Json);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_enum("", &[], BranchVisitor)
    }
}

struct BranchVisitor;

impl<'de> Visitor<'de> for BranchVisitor {
    type Value = (usize, Json);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a union branch")
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        let (index, variant) = data.variant_seed(Index)?;
        let json = de::VariantAccess::newtype_variant_seed(variant, AnyJson)?;
        Ok((index, json))
    }
}

/// A union's branch index.
struct Index;

impl<'de> DeserializeSeed<'de> for Index {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_identifier(IndexVisitor)
    }
}

struct IndexVisitor;

impl Visitor<'_> for IndexVisitor {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a branch index")
    }

    fn visit_u32<E: de::Error>(self, v: u32) -> Result<usize, E> {
        usize::try_from(v).map_err(E::custom)
    }
}

/// Any value of the data's types, as the JSON the value tree converts it to: each type
/// is known to the deserializer, which reads what the schema says comes next.
struct AnyJson;

impl<'de> DeserializeSeed<'de> for AnyJson {
    type Value = Json;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value events carry")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_f32<E: de::Error>(self, v: f32) -> Result<Json, E> {
        Ok(Json::from(f64::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(AnyJson)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut object = Map::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key_seed(Key)? {
            let value = map.next_value_seed(AnyJson)?;
            object.insert(key, value);
        }
        Ok(Json::Object(object))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Json, A::Error> {
        let (symbol, variant) = data.variant_seed(Key)?;
        de::VariantAccess::unit_variant(variant)?;
        Ok(Json::String(symbol))
    }
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;
    use serde_json::json;

    use crate::Registry;
    use crate::event::EVENT;

    /// Both ways of reading a datum of the current version: straight into JSON, and
    /// through the value tree.
    fn both(reg: &Registry, bytes: &[u8]) -> [Result<crate::Event, String>; 2] {
        let (index, datum) = reg.locate(EVENT, bytes).unwrap();
        assert!(reg.is_current(EVENT, index));
        let direct = reg.read_event_datum(index, datum);
        let tree = reg
            .read_datum(EVENT, index, datum)
            .and_then(|v| reg.event_from_value(v));
        [direct, tree].map(|r| r.map_err(|e| format!("{} {e}", e.code())))
    }

    #[test]
    fn the_bundled_schema_is_read_directly() {
        let reg = Registry::bundled().unwrap();
        let paths = reg.catalogue().direct.as_ref().expect("read directly");
        assert!(paths.iter().flatten().any(|p| p == "current_resource"));
    }

    #[test]
    fn reads_what_the_value_tree_reads() {
        let reg = Registry::bundled().unwrap();
        let mut events: Vec<_> = reg
            .event_types()
            .into_iter()
            .map(|t| json!({"type": t, "data": reg.sample_event(t).unwrap().data}))
            .collect();
        events.push(json!({"type": "recipient.updated", "data": {
            "current_resource": {"id": "r-9", "n": 1.5, "deep": {"a": [1, null, "x"]}}}}));
        events.push(json!({"type": "transfer.error", "data": {"error": {
            "destination_id": "d", "destination_name": "n", "id_in_provider_system": "i",
            "models": [], "is_full_refresh": false,
            "transfer_id": "t", "transfer_status": "ERROR",
            "transfer_error_type": "x", "transfer_log": "l", "transfer_log_pretty": "p",
            "transfer_started_at": "2023-10-15T16:19:08+00:00",
            "transfer_ended_at": "2023-10-15T18:19:08+00:00"}}}));
        for json in &events {
            let (event, bytes) = reg.event_from_json(json).unwrap();
            let [direct, tree] = both(&reg, &bytes);
            assert_eq!(direct, tree, "{}", json["type"]);
            assert_eq!(direct.unwrap(), event, "{}", json["type"]);
        }
    }

    /// What an engine may write that the API refuses: JSON text that is no object, a
    /// type that is not its branch's, a timestamp that is not RFC 3339. The same error
    /// either way.
    #[test]
    fn refuses_what_the_value_tree_refuses() {
        let reg = Registry::bundled().unwrap();
        let input = json!({"type": "recipient.updated", "data": {"current_resource": {"id": "r"}}});
        let (_, bytes) = reg.event_from_json(&input).unwrap();
        let spoil = |field: &str, to: Value| {
            let Value::Record(mut fields) = reg.decode_value(EVENT, &bytes).unwrap() else {
                unreachable!()
            };
            for (name, v) in &mut fields {
                match (name.as_str(), v) {
                    (n, v) if n == field => *v = to.clone(),
                    ("data", Value::Union(_, data)) if field == "current_resource" => {
                        let Value::Record(inner) = &mut **data else {
                            unreachable!()
                        };
                        inner[0].1 = to.clone();
                    }
                    _ => {}
                }
            }
            reg.encode_value(EVENT, Value::Record(fields)).unwrap()
        };
        let text = |t: &str| Value::Union(1, Box::new(Value::String(t.into())));
        for (bytes, expected) in [
            (
                spoil("current_resource", text("[1]")),
                "data.current_resource",
            ),
            (
                spoil("current_resource", text("{")),
                "data.current_resource",
            ),
            (
                spoil("type", Value::String("transfer.error".into())),
                "type",
            ),
            (spoil("type", Value::String("no.such".into())), "type"),
            (
                spoil("created_at", Value::String("yesterday".into())),
                "created_at",
            ),
        ] {
            let [direct, tree] = both(&reg, &bytes);
            assert_eq!(direct, tree, "{expected}");
            let err = direct.unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        // A record cut short. apache-avro's value decoder reads the end of the bytes,
        // where a nullable union's index should be, as its null branch, and so takes
        // many cut records for whole ones with nulls; the direct read refuses them all.
        for cut in 1..14 {
            let [direct, _] = both(&reg, &bytes[..bytes.len() - cut]);
            let err = direct.unwrap_err();
            assert!(err.starts_with("HL-WIRE-UNDECODABLE"), "cut {cut}: {err}");
        }
    }

    /// A schema with a type the direct read would give otherwise than the value tree is
    /// read through the tree: maps (whose keys the tree sorts), bytes, logical types,
    /// JSON text inside an array, an envelope of another shape.
    #[test]
    fn other_schemas_are_read_through_the_value_tree() {
        let paths = |field: &str, envelope_extra: &str| {
            let text = format!(
                r#"{{"type": "record", "name": "Event", "fields": [
                {{"name": "id", "type": "string"}}, {{"name": "type", "type": "string"}},
                {{"name": "version", "type": "string"}}, {{"name": "created_at", "type": "string"}},
                {envelope_extra}
                {{"name": "data", "type": ["null", {{"type": "record", "name": "D",
                    "fields": [{field}]}}]}}]}}"#
            );
            let schema = apache_avro::Schema::parse_str(&text).unwrap();
            let mut names = crate::json::Names::new();
            crate::json::collect_names(&schema, &mut names);
            super::json_text_paths(&schema, &names)
        };
        let ok = r#"{"name": "a", "type": {"type": "array", "items": "long"}},
            {"name": "j", "type": ["null", "string"], "hookline.json": true}"#;
        assert_eq!(paths(ok, ""), Some(vec![vec![], vec!["j".to_owned()]]));
        for field in [
            r#"{"name": "m", "type": {"type": "map", "values": "string"}}"#,
            r#"{"name": "b", "type": "bytes"}"#,
            r#"{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}"#,
            r#"{"name": "a", "type": {"type": "array", "items": {"type": "record", "name": "I",
                "fields": [{"name": "j", "type": "string", "hookline.json": true}]}}}"#,
            r#"{"name": "j", "type": "long", "hookline.json": true}"#,
        ] {
            assert_eq!(paths(field, ""), None, "{field}");
        }
        assert_eq!(paths(ok, r#"{"name": "extra", "type": "string"},"#), None);
    }
}
