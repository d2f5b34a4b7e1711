//! Events as the API takes them: JSON validated against the current event schema, its
//! sensitive fields sealed, encoded once.

use apache_avro::schema::{RecordSchema, Schema};
use apache_avro::types::Value;
use serde_json::{Map, Value as Json};

use super::key::partition_key_of_value;
use super::sensitive::avro_field_mut;
use super::{DEFAULT_VERSION, ENVELOPE_FIELDS, EVENT, Event, data_union};
use crate::error::WireError;
use crate::json::{self, Path};
use crate::registry::Registry;

/// An event validated and encoded for the `events` topic, with what the API needs of
/// it: its id, type and partition key.
pub struct EncodedEvent {
    /// Unique id (given, or made here).
    pub id: String,
    /// Event type, e.g. `transfer.error`.
    pub event_type: String,
    /// The Kafka key ([`Event::key`]).
    pub key: String,
    /// Its single-object encoding.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for EncodedEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bytes hold the event's data, as `Event`'s does: never printed.
        f.debug_struct("EncodedEvent")
            .field("id", &self.id)
            .field("type", &self.event_type)
            .field("bytes", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// A JSON event validated: its envelope's strings, and its data as a value tree of its
/// branch's record, sensitive fields sealed.
struct Validated<'s> {
    id: String,
    event_type: String,
    version: String,
    created_at: String,
    branch: usize,
    record: &'s RecordSchema,
    data: Value,
}

impl Registry {
    /// Validates a JSON event (`id` and `created_at` optional; `api_version` accepted for
    /// `version`) and returns it with its single-object encoding.
    pub fn event_from_json(&self, json: &Json) -> Result<(Event, Vec<u8>), WireError> {
        self.event_from_json_sealing(json, |_, _, _| None)
    }

    /// [`Registry::event_from_json`], with each non-empty sensitive field replaced by
    /// what `seal(event id, path, value)` returns (`None`: kept) before the one encoding.
    pub fn event_from_json_sealing(
        &self,
        json: &Json,
        seal: impl FnMut(&str, &str, &str) -> Option<String>,
    ) -> Result<(Event, Vec<u8>), WireError> {
        let v = self.validate_event_json(json, seal)?;
        // The JSON readers will see: the tree converted as a reader converts it.
        let data = json::record_to_json(
            v.record,
            &v.data,
            &Path::Root("data"),
            &self.catalogue().names,
        )?;
        let record = v.record;
        let (parts, bytes) = self.encode_validated(v)?;
        Ok((Event::keyed(parts, record, data), bytes))
    }

    /// [`Registry::event_from_json_sealing`] for the API's path, which needs only the
    /// encoding, the id, the type and the key: the data is never converted back to
    /// JSON (the key is read from the value tree).
    pub fn encode_event_json_sealing(
        &self,
        json: &Json,
        seal: impl FnMut(&str, &str, &str) -> Option<String>,
    ) -> Result<EncodedEvent, WireError> {
        let v = self.validate_event_json(json, seal)?;
        let key = partition_key_of_value(v.record, &v.data, &self.catalogue().names)?
            .unwrap_or_else(|| v.id.clone());
        let ([id, event_type, ..], bytes) = self.encode_validated(v)?;
        Ok(EncodedEvent {
            id,
            event_type,
            key,
            bytes,
        })
    }

    /// Checks a JSON event against the current event schema and builds its data's value
    /// tree, each non-empty sensitive string replaced by what `seal` returns.
    fn validate_event_json(
        &self,
        json: &Json,
        mut seal: impl FnMut(&str, &str, &str) -> Option<String>,
    ) -> Result<Validated<'_>, WireError> {
        let schema = self.current(EVENT)?;
        let catalogue = self.catalogue();
        let Json::Object(obj) = json else {
            return Err(WireError::invalid("", "event must be a JSON object"));
        };
        if let Some(unknown) = obj.keys().find(|k| !ENVELOPE_FIELDS.contains(&k.as_str())) {
            return Err(WireError::invalid(
                unknown.as_str(),
                "is not an envelope field",
            ));
        }
        let event_type = match obj.get("type") {
            Some(Json::String(t)) => t.clone(),
            Some(_) => return Err(WireError::invalid("type", "must be a string")),
            None => return Err(WireError::invalid("type", "missing required field")),
        };
        let branch = *catalogue.branches.get(&event_type).ok_or_else(|| {
            WireError::invalid("type", "unknown event type (not in schemas/event)")
        })?;
        let id = optional_string(obj, "id")?.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        if id.is_empty() {
            return Err(WireError::invalid("id", "must not be empty"));
        }
        let created_at = optional_string(obj, "created_at")?.unwrap_or_else(crate::now_rfc3339);
        if !crate::is_rfc3339(&created_at) {
            return Err(WireError::invalid(
                "created_at",
                "must be an RFC 3339 timestamp",
            ));
        }
        let version = match (
            optional_string(obj, "version")?,
            optional_string(obj, "api_version")?,
        ) {
            (Some(v), Some(a)) if v != a => {
                return Err(WireError::invalid("api_version", "differs from version"));
            }
            (Some(v), _) | (None, Some(v)) => v,
            (None, None) => DEFAULT_VERSION.to_owned(),
        };
        let data_json = obj
            .get("data")
            .ok_or_else(|| WireError::invalid("data", "missing required field"))?;
        let branches = data_union(schema)?;
        let Schema::Record(record) = json::deref(&branches[branch], &catalogue.names) else {
            return Err(WireError::invalid(
                "data",
                "event type has no record schema",
            ));
        };
        let mut data =
            json::record_from_json(record, data_json, &Path::Root("data"), &catalogue.names)?;
        // Sensitive fields are strings (checked when the catalogue is built), so the
        // tree's strings are the JSON's.
        for path in catalogue
            .sensitive
            .get(&branch)
            .map_or(&[][..], Vec::as_slice)
        {
            if let Some(Value::String(value)) = avro_field_mut(&mut data, path)
                && !value.is_empty()
                && let Some(sealed) = seal(&id, path, value)
            {
                *value = sealed;
            }
        }
        Ok(Validated {
            id,
            event_type,
            version,
            created_at,
            branch,
            record,
            data,
        })
    }

    /// The envelope's strings (`id`, `type`, `version`, `created_at`) and the event's
    /// encoding.
    fn encode_validated(&self, v: Validated<'_>) -> Result<([String; 4], Vec<u8>), WireError> {
        let value = Value::Record(vec![
            ("id".to_owned(), Value::String(v.id.clone())),
            ("type".to_owned(), Value::String(v.event_type.clone())),
            ("version".to_owned(), Value::String(v.version.clone())),
            ("created_at".to_owned(), Value::String(v.created_at.clone())),
            (
                "data".to_owned(),
                Value::Union(v.branch as u32, Box::new(v.data)),
            ),
        ]);
        let bytes = self.encode_value(EVENT, value)?;
        Ok(([v.id, v.event_type, v.version, v.created_at], bytes))
    }
}

fn optional_string(obj: &Map<String, Json>, name: &str) -> Result<Option<String>, WireError> {
    match obj.get(name) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(WireError::invalid(name, "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value as Json, json};

    use crate::Registry;

    /// A registry whose event schema has one branch, `d`, of these fields and key paths.
    fn registry(fields: &str, key: &str) -> Result<Registry, crate::WireError> {
        let text = format!(
            r#"{{"type": "record", "name": "Event", "namespace": "hookline.events", "fields": [
            {{"name": "id", "type": "string"}}, {{"name": "type", "type": "string"}},
            {{"name": "version", "type": "string"}}, {{"name": "created_at", "type": "string"}},
            {{"name": "data", "type": [{{"type": "record", "name": "D",
                "hookline.event_types": ["d"], "hookline.key": {key},
                "fields": [{fields}]}}]}}]}}"#
        );
        Registry::from_sources([("event.v1.avsc", text.as_str())])
    }

    /// The API's encoding and the full one, sealing alike: same id, type, key and bytes.
    fn assert_same(reg: &Registry, json: &Json) {
        let seal = |_: &str, path: &str, v: &str| Some(format!("sealed {path} {}", v.len()));
        let (event, bytes) = reg.event_from_json_sealing(json, seal).unwrap();
        let encoded = reg.encode_event_json_sealing(json, seal).unwrap();
        assert_eq!(
            (encoded.id, encoded.event_type, encoded.key, encoded.bytes),
            (event.id, event.event_type, event.key, bytes),
            "{json}"
        );
    }

    #[test]
    fn the_api_encodes_every_bundled_type_as_the_full_path_does() {
        let reg = Registry::bundled().unwrap();
        let envelope = |t: &str, data: Json| json!({"id": "e-1", "type": t, "created_at": "2023-10-15T19:19:08+00:00", "data": data});
        for t in reg.event_types() {
            assert_same(&reg, &envelope(t, reg.sample_event(t).unwrap().data));
        }
        // A resource event whose resource is absent: the key is the id.
        let (event, _) = reg
            .event_from_json(&envelope("recipient.deleted", json!({})))
            .unwrap();
        assert_eq!(event.key, "e-1");
        assert_same(&reg, &envelope("recipient.deleted", json!({})));
        // A sealed sensitive field reaches the bytes; the key path beside it does not.
        let error = reg.sample_event("transfer.error").unwrap().data;
        let (sealed, _) = reg
            .event_from_json_sealing(&envelope("transfer.error", error), |_, p, _| {
                Some(format!("sealed {p}"))
            })
            .unwrap();
        assert_eq!(
            sealed.data["error"]["transfer_log"],
            "sealed error.transfer_log"
        );
        // An empty sensitive field stays empty.
        let mut trace = reg.sample_event("transfer.sensitive_trace").unwrap().data;
        trace["trace"] = json!("");
        let trace = envelope("transfer.sensitive_trace", trace);
        let (kept, _) = reg
            .event_from_json_sealing(&trace, |_, p, _| Some(format!("sealed {p}")))
            .unwrap();
        assert_eq!(kept.data["trace"], "");
        assert_same(&reg, &trace);
    }

    /// Key paths the value tree cannot answer alone (into JSON text, through a map) and
    /// leaves whose JSON is not the tree's text (doubles, enums): the same key.
    #[test]
    fn keys_read_from_the_tree_are_the_json_keys() {
        let fields = r#"
            {"name": "j", "type": ["null", "string"], "hookline.json": true, "default": null},
            {"name": "m", "type": {"type": "map", "values": "string"}, "default": {}},
            {"name": "o", "type": ["null", {"type": "record", "name": "O", "fields": [
                {"name": "s", "type": "string", "default": ""},
                {"name": "x", "type": "double", "default": 0}]}], "default": null},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]},
                "default": "A"},
            {"name": "n", "type": "long", "default": 0},
            {"name": "t", "type": "string", "hookline.sensitive": true, "default": ""}"#;
        let cases: [(&str, Json, &str); 10] = [
            (
                r#"["j.id", "n"]"#,
                json!({"j": {"id": "from-text"}}),
                "from-text",
            ),
            (r#"["j.id", "n"]"#, json!({"j": {"id": 7}, "n": 3}), "7"),
            (r#"["j.id", "n"]"#, json!({"n": 3}), "3"),
            (
                r#"["m.k", "n"]"#,
                json!({"m": {"k": "from-map"}}),
                "from-map",
            ),
            (r#"["m.k", "n"]"#, json!({"m": {}, "n": 4}), "4"),
            (
                r#"["o.s", "o.x"]"#,
                json!({"o": {"s": "", "x": 1e21}}),
                "1e+21",
            ),
            (r#"["o.x"]"#, json!({"o": {"x": 0.1}}), "0.1"),
            (r#"["o.s", "e"]"#, json!({"e": "B"}), "B"),
            (
                r#"["n.deeper", "e.x", "t"]"#,
                json!({"t": "secret"}),
                "sealed t 6",
            ),
            (r#"["missing", "o.s.x"]"#, json!({"o": {"s": "s"}}), "e-1"),
        ];
        for (key, data, want) in cases {
            let reg = registry(fields, key).unwrap();
            let json = json!({"id": "e-1", "type": "d", "created_at": "2023-10-15T19:19:08+00:00",
                "data": data});
            assert_same(&reg, &json);
            let seal = |_: &str, path: &str, v: &str| Some(format!("sealed {path} {}", v.len()));
            let encoded = reg.encode_event_json_sealing(&json, seal).unwrap();
            assert_eq!(encoded.key, want, "{key} {}", json["data"]);
        }
    }

    /// Only strings are sealed in place: a sensitive field of another type would reach
    /// Kafka in clear, so such a schema is refused.
    #[test]
    fn sensitive_fields_must_be_strings() {
        for ok in [
            r#"{"name": "s", "type": "string", "hookline.sensitive": true}"#,
            r#"{"name": "s", "type": ["null", "string"], "hookline.sensitive": true}"#,
        ] {
            assert!(registry(ok, "[]").is_ok(), "{ok}");
        }
        for refused in [
            r#"{"name": "s", "type": "long", "hookline.sensitive": true}"#,
            r#"{"name": "s", "type": ["null", "string", "long"], "hookline.sensitive": true}"#,
            r#"{"name": "s", "type": "string", "hookline.sensitive": true, "hookline.json": true}"#,
            r#"{"name": "s", "type": {"type": "record", "name": "S", "fields": [
                {"name": "v", "type": "string"}]}, "hookline.sensitive": true}"#,
        ] {
            let err = registry(refused, "[]").err().expect(refused).to_string();
            assert!(
                err.contains("data field s is marked hookline.sensitive"),
                "{err}"
            );
        }
    }

    /// The bytes hold the event's data: an encoded event prints without them.
    #[test]
    fn an_encoded_event_prints_without_its_bytes() {
        let reg = registry(r#"{"name": "s", "type": "string"}"#, "[]").unwrap();
        let json = json!({"id": "e-1", "type": "d", "data": {"s": "in clear"}});
        let encoded = reg
            .encode_event_json_sealing(&json, |_, _, _| None)
            .unwrap();
        let bytes = format!("{:?}", encoded.bytes);
        let printed = format!("{encoded:?}");
        assert!(printed.contains("e-1"), "{printed}");
        assert!(
            !printed.contains(bytes.trim_matches(['[', ']'])),
            "{printed}"
        );
    }
}
