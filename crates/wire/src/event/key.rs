//! An event's partition key: the first non-empty value among its data record's
//! `hookline.key` paths, read from the JSON readers see or, on the API's path, from the
//! value tree about to be encoded, with the same result.

use apache_avro::schema::{RecordSchema, Schema};
use apache_avro::types::Value;
use serde_json::Value as Json;

use crate::error::WireError;
use crate::json::{self, Names, Path};

/// The key paths of a data record, dotted (`error.transfer_id`).
fn key_paths(record: &RecordSchema) -> impl Iterator<Item = &str> {
    let paths = match record.attributes.get("hookline.key") {
        Some(Json::Array(paths)) => paths.as_slice(),
        _ => &[],
    };
    paths.iter().filter_map(Json::as_str)
}

/// A key from the JSON value at a key path: a non-empty string, or a number.
fn key_of(found: &Json) -> Option<String> {
    match found {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The first non-empty value among the record's `hookline.key` paths in `data`.
pub(super) fn partition_key(record: &RecordSchema, data: &Json) -> Option<String> {
    key_paths(record).find_map(|path| {
        let found = path.split('.').try_fold(data, |v, part| v.get(part))?;
        key_of(found)
    })
}

/// [`partition_key`] of the JSON `record_value` converts to, without converting it
/// unless a key path leads through JSON text or a map, which only the JSON shows.
pub(super) fn partition_key_of_value(
    record: &RecordSchema,
    record_value: &Value,
    names: &Names<'_>,
) -> Result<Option<String>, WireError> {
    let data = Path::Root("data");
    for path in key_paths(record) {
        match lookup(record, record_value, path, names) {
            Found::Value(schema, value) => {
                if let Some(key) = key_of(&json::value_to_json(schema, value, &data, names)?) {
                    return Ok(Some(key));
                }
            }
            Found::Nothing => {}
            Found::OnlyInJson => {
                let json = json::record_to_json(record, record_value, &data, names)?;
                return Ok(partition_key(record, &json));
            }
        }
    }
    Ok(None)
}

/// What a key path leads to in a value tree.
enum Found<'a> {
    /// A value of this schema, read as the JSON conversion reads it.
    Value(&'a Schema, &'a Value),
    /// Nothing, as in the JSON: a missing field, or a path through a null or a scalar.
    Nothing,
    /// The path leads into JSON text or through something other than records and nulls.
    OnlyInJson,
}

fn lookup<'a>(
    mut record: &'a RecordSchema,
    mut value: &'a Value,
    path: &str,
    names: &Names<'a>,
) -> Found<'a> {
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let Value::Record(fields) = value else {
            return Found::OnlyInJson;
        };
        let Some((field, (_, v))) = record
            .lookup
            .get(part)
            .and_then(|&i| Some((record.fields.get(i)?, fields.get(i)?)))
        else {
            return Found::Nothing;
        };
        if json::is_json_text(field) {
            return Found::OnlyInJson;
        }
        if parts.peek().is_none() {
            return Found::Value(&field.schema, v);
        }
        let (schema, v) = match (json::deref(&field.schema, names), v) {
            (Schema::Union(u), Value::Union(i, inner)) => match u.variants().get(*i as usize) {
                Some(s) => (json::deref(s, names), &**inner),
                None => return Found::OnlyInJson,
            },
            (s, v) => (s, v),
        };
        match (schema, v) {
            (Schema::Record(r), Value::Record(_)) => (record, value) = (r, v),
            (
                _,
                Value::Null
                | Value::Boolean(_)
                | Value::Int(_)
                | Value::Long(_)
                | Value::Float(_)
                | Value::Double(_)
                | Value::String(_),
            ) => return Found::Nothing,
            _ => return Found::OnlyInJson,
        }
    }
    Found::Nothing
}
