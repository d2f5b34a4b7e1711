//! Schema-directed conversion between JSON (what the API and receivers see) and Avro
//! values (what Kafka holds). Errors name the field by its dotted path, never its value.
//!
//! Two field attributes in `schemas/` steer it: `"hookline.json": true` marks a string
//! that carries a JSON object (free-form resource bodies), and `"hookline.format":
//! "rfc3339"` a timestamp that must parse as RFC 3339.

use std::collections::HashMap;

use apache_avro::schema::{Name, RecordField, RecordSchema, Schema, UnionSchema};
use apache_avro::types::Value;
use serde_json::{Map, Value as Json};

use crate::error::WireError;

/// Named types of a schema, to follow `Schema::Ref`s: borrowed from the schema.
pub(crate) type Names<'s> = HashMap<Name, &'s Schema>;

/// Collects every named type defined inside `schema`.
pub(crate) fn collect_names<'s>(schema: &'s Schema, names: &mut Names<'s>) {
    match schema {
        Schema::Record(r) => {
            names.insert(r.name.clone(), schema);
            for f in &r.fields {
                collect_names(&f.schema, names);
            }
        }
        Schema::Enum(e) => {
            names.insert(e.name.clone(), schema);
        }
        Schema::Fixed(f) => {
            names.insert(f.name.clone(), schema);
        }
        Schema::Array(a) => collect_names(&a.items, names),
        Schema::Map(m) => collect_names(&m.types, names),
        Schema::Union(u) => u.variants().iter().for_each(|v| collect_names(v, names)),
        _ => {}
    }
}

/// Follows a reference to the named type it stands for.
pub(crate) fn deref<'a>(schema: &'a Schema, names: &Names<'a>) -> &'a Schema {
    match schema {
        Schema::Ref { name } => names.get(name).copied().unwrap_or(schema),
        other => other,
    }
}

/// Converts a JSON object into an Avro record of `record`.
pub(crate) fn record_from_json(
    record: &RecordSchema,
    json: &Json,
    path: &Path<'_>,
    names: &Names<'_>,
) -> Result<Value, WireError> {
    let Json::Object(obj) = json else {
        return Err(WireError::invalid(path, "must be a JSON object"));
    };
    if let Some(unknown) = obj.keys().find(|k| !record.lookup.contains_key(k.as_str())) {
        return Err(WireError::invalid(
            &path.field(unknown),
            "is not a field of this type",
        ));
    }
    let mut fields = Vec::with_capacity(record.fields.len());
    for field in &record.fields {
        let field_path = path.field(&field.name);
        let value = match obj.get(&field.name) {
            Some(v) => field_from_json(field, v, &field_path, names)?,
            None => match &field.default {
                Some(default) => value_from_json(&field.schema, default, &field_path, names)?,
                None => {
                    return Err(WireError::invalid(&field_path, "missing required field"));
                }
            },
        };
        fields.push((field.name.clone(), value));
    }
    Ok(Value::Record(fields))
}

fn field_from_json(
    field: &RecordField,
    json: &Json,
    path: &Path<'_>,
    names: &Names<'_>,
) -> Result<Value, WireError> {
    let is_json_text = is_json_text(field);
    let is_timestamp =
        field.custom_attributes.get("hookline.format") == Some(&Json::from("rfc3339"));
    if is_json_text && !json.is_null() {
        if !json.is_object() {
            return Err(WireError::invalid(path, "must be a JSON object"));
        }
        let text = serde_json::to_string(json)
            .map_err(|_| WireError::invalid(path, "cannot be serialised"))?;
        return value_from_json(&field.schema, &Json::String(text), path, names);
    }
    if is_timestamp
        && let Json::String(s) = json
        && !crate::is_rfc3339(s)
    {
        return Err(WireError::invalid(path, "must be an RFC 3339 timestamp"));
    }
    value_from_json(&field.schema, json, path, names)
}

/// Converts JSON into an Avro value of `schema`.
pub(crate) fn value_from_json(
    schema: &Schema,
    json: &Json,
    path: &Path<'_>,
    names: &Names<'_>,
) -> Result<Value, WireError> {
    let wrong = |what: &str| WireError::invalid(path, format!("must be {what}"));
    match (deref(schema, names), json) {
        (Schema::Null, Json::Null) => Ok(Value::Null),
        (Schema::Boolean, Json::Bool(b)) => Ok(Value::Boolean(*b)),
        (Schema::Int, Json::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Value::Int)
            .ok_or_else(|| wrong("a 32-bit integer")),
        (Schema::Long, Json::Number(n)) => n
            .as_i64()
            .map(Value::Long)
            .ok_or_else(|| wrong("an integer")),
        (Schema::Double, Json::Number(n)) => n
            .as_f64()
            .map(Value::Double)
            .ok_or_else(|| wrong("a number")),
        (Schema::Float, Json::Number(n)) => n
            .as_f64()
            .map(|f| Value::Float(f as f32))
            .ok_or_else(|| wrong("a number")),
        (Schema::String, Json::String(s)) => Ok(Value::String(s.clone())),
        (Schema::Enum(e), Json::String(s)) => match e.symbols.iter().position(|sym| sym == s) {
            Some(i) => Ok(Value::Enum(i as u32, s.clone())),
            None => Err(wrong(&format!("one of {}", e.symbols.join(", ")))),
        },
        (Schema::Array(a), Json::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| value_from_json(&a.items, item, &path.index(i), names))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        (Schema::Map(m), Json::Object(obj)) => obj
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    value_from_json(&m.types, v, &path.field(k), names)?,
                ))
            })
            .collect::<Result<HashMap<_, _>, _>>()
            .map(Value::Map),
        (Schema::Record(r), json) => record_from_json(r, json, path, names),
        (Schema::Union(u), json) => union_from_json(u, json, path, names),
        (Schema::Boolean, _) => Err(wrong("a boolean")),
        (Schema::Int | Schema::Long, _) => Err(wrong("an integer")),
        (Schema::Float | Schema::Double, _) => Err(wrong("a number")),
        (Schema::String | Schema::Enum(_), _) => Err(wrong("a string")),
        (Schema::Array(_), _) => Err(wrong("an array")),
        (Schema::Map(_), _) => Err(wrong("a JSON object")),
        (Schema::Null, _) => Err(wrong("null")),
        _ => Err(WireError::invalid(path, "has a type events cannot carry")),
    }
}

/// A nullable union takes JSON null or its other branch; other unions are chosen by the
/// caller (the event's `data` branch is chosen by the event type).
fn union_from_json(
    u: &UnionSchema,
    json: &Json,
    path: &Path<'_>,
    names: &Names<'_>,
) -> Result<Value, WireError> {
    let variants = u.variants();
    let null_at = variants.iter().position(|v| matches!(v, Schema::Null));
    if json.is_null() {
        return match null_at {
            Some(i) => Ok(Value::Union(i as u32, Box::new(Value::Null))),
            None => Err(WireError::invalid(path, "must not be null")),
        };
    }
    let others: Vec<_> = variants
        .iter()
        .enumerate()
        .filter(|(_, v)| !matches!(v, Schema::Null))
        .collect();
    match others.as_slice() {
        [(i, schema)] => Ok(Value::Union(
            *i as u32,
            Box::new(value_from_json(schema, json, path, names)?),
        )),
        _ => Err(WireError::invalid(
            path,
            "is ambiguous (union of several types)",
        )),
    }
}

/// Whether a field carries a JSON object as text (`"hookline.json": true`).
pub(crate) fn is_json_text(field: &RecordField) -> bool {
    field.custom_attributes.get("hookline.json") == Some(&Json::Bool(true))
}

/// The JSON object the text of a JSON text field holds; anything else is an error
/// naming `path`.
pub(crate) fn object_from_text(text: &str, path: &Path<'_>) -> Result<Json, WireError> {
    serde_json::from_str::<Json>(text)
        .ok()
        .filter(Json::is_object)
        .ok_or_else(|| WireError::invalid(path, "must hold a JSON object"))
}

/// Converts an Avro record of `record` into a JSON object, in schema field order.
pub(crate) fn record_to_json(
    record: &RecordSchema,
    value: &Value,
    path: &Path<'_>,
    names: &Names<'_>,
) -> Result<Json, WireError> {
    let Value::Record(fields) = value else {
        return Err(WireError::invalid(path, "is not a record"));
    };
    let mut obj = Map::with_capacity(fields.len());
    for ((name, v), field) in fields.iter().zip(&record.fields) {
        let field_path = path.field(name);
        let mut json = value_to_json(&field.schema, v, &field_path, names)?;
        if is_json_text(field)
            && let Json::String(text) = &json
        {
            json = object_from_text(text, &field_path)?;
        }
        obj.insert(name.clone(), json);
    }
    Ok(Json::Object(obj))
}

/// Converts an Avro value of `schema` into JSON.
pub(crate) fn value_to_json(
    schema: &Schema,
    value: &Value,
    path: &Path<'_>,
    names: &Names<'_>,
) -> Result<Json, WireError> {
    let schema = deref(schema, names);
    Ok(match (schema, value) {
        (_, Value::Null) => Json::Null,
        (_, Value::Boolean(b)) => Json::Bool(*b),
        (_, Value::Int(i)) => Json::from(*i),
        (_, Value::Long(i)) => Json::from(*i),
        (_, Value::Float(f)) => Json::from(f64::from(*f)),
        (_, Value::Double(f)) => Json::from(*f),
        (_, Value::String(s)) | (_, Value::Enum(_, s)) => Json::String(s.clone()),
        (Schema::Array(a), Value::Array(items)) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| value_to_json(&a.items, v, &path.index(i), names))
                .collect::<Result<_, _>>()?,
        ),
        (Schema::Map(m), Value::Map(entries)) => {
            let mut keys: Vec<_> = entries.keys().collect();
            keys.sort();
            let mut obj = Map::with_capacity(keys.len());
            for k in keys {
                obj.insert(
                    k.clone(),
                    value_to_json(&m.types, &entries[k], &path.field(k), names)?,
                );
            }
            Json::Object(obj)
        }
        (Schema::Record(r), v @ Value::Record(_)) => record_to_json(r, v, path, names)?,
        (Schema::Union(u), Value::Union(i, inner)) => {
            let branch = u
                .variants()
                .get(*i as usize)
                .ok_or_else(|| WireError::invalid(path, "has an unknown union branch"))?;
            value_to_json(branch, inner, path, names)?
        }
        _ => {
            return Err(WireError::invalid(path, "has a type events cannot carry"));
        }
    })
}

/// Where a value sits in a document (`data.error.code`, `data.items[2]`), for error
/// messages: a chain of borrows, written out only when an error names it, so a
/// conversion that succeeds builds no path text.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Path<'a> {
    /// The document, or a named part of it (`data`); empty for the top.
    Root(&'a str),
    /// A field (or map key) of the parent.
    Field(&'a Path<'a>, &'a str),
    /// An item of the parent array.
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    fn field(&'a self, name: &'a str) -> Path<'a> {
        Path::Field(self, name)
    }

    fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }
}

/// An error names the path written out (`WireError::invalid(path, …)`).
impl From<&Path<'_>> for String {
    fn from(path: &Path<'_>) -> String {
        path.to_string()
    }
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root(name) => f.write_str(name),
            Path::Field(Path::Root(""), name) => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Path;

    #[test]
    fn a_path_is_written_as_the_dotted_field_names() {
        let top = Path::Root("");
        let data = Path::Root("data");
        let error = data.field("error");
        let models = error.field("models");
        assert_eq!(models.index(1).to_string(), "data.error.models[1]");
        assert_eq!(
            models.index(1).field("id").to_string(),
            "data.error.models[1].id"
        );
        assert_eq!(top.field("type").to_string(), "type");
        assert_eq!(top.to_string(), "");
        assert_eq!(data.to_string(), "data");
    }
}
