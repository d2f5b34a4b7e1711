//! The sensitive fields of events (`"hookline.sensitive": true`): where they are, in
//! the schema, in an event's JSON `data` and in its Avro value.

use apache_avro::schema::{RecordSchema, Schema};
use apache_avro::types::Value;
use serde_json::Value as Json;

use crate::error::WireError;
use crate::json::{self, Names};

/// Collects the dotted paths of the fields marked `"hookline.sensitive": true`, looking
/// into nested records (and records inside optional unions). Only a string (or a
/// nullable one) can be sealed in place: any other marked field is an error, as it
/// would reach Kafka in clear.
pub(super) fn sensitive_paths(
    record: &RecordSchema,
    prefix: &str,
    names: &Names<'_>,
    out: &mut Vec<String>,
) -> Result<(), WireError> {
    for field in &record.fields {
        let path = if prefix.is_empty() {
            field.name.clone()
        } else {
            format!("{prefix}.{}", field.name)
        };
        if field.custom_attributes.get("hookline.sensitive") == Some(&Json::Bool(true)) {
            if !is_plain_string(&field.schema, names) || json::is_json_text(field) {
                return Err(WireError::Schema {
                    file: super::EVENT.to_owned(),
                    reason: format!(
                        "data field {path} is marked hookline.sensitive but is not a plain \
                         string (or null): only strings are sealed"
                    ),
                });
            }
            out.push(path.clone());
        }
        let inner = match json::deref(&field.schema, names) {
            Schema::Union(u) => u
                .variants()
                .iter()
                .map(|v| json::deref(v, names))
                .find(|v| matches!(v, Schema::Record(_))),
            other => Some(other),
        };
        if let Some(Schema::Record(nested)) = inner {
            sensitive_paths(nested, &path, names, out)?;
        }
    }
    Ok(())
}

/// A string, or a union of null and a string.
fn is_plain_string(schema: &Schema, names: &Names<'_>) -> bool {
    match json::deref(schema, names) {
        Schema::String => true,
        Schema::Union(u) => u
            .variants()
            .iter()
            .all(|v| matches!(json::deref(v, names), Schema::Null | Schema::String)),
        _ => false,
    }
}

/// The value at a dotted path inside an event's `data`, as JSON.
pub(super) fn json_mut<'a>(data: &'a mut Json, path: &str) -> Option<&'a mut Json> {
    path.split('.').try_fold(data, |v, k| v.get_mut(k))
}

/// The value at a dotted path inside an event's `data` record, through nullable unions.
pub(super) fn avro_field_mut<'a>(data: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    fn unwrap(v: &mut Value) -> &mut Value {
        match v {
            Value::Union(_, inner) => unwrap(inner),
            v => v,
        }
    }
    path.split('.')
        .try_fold(data, |v, k| match unwrap(v) {
            Value::Record(fields) => fields.iter_mut().find(|(n, _)| n == k).map(|(_, v)| v),
            _ => None,
        })
        .map(unwrap)
}
