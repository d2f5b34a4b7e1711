//! The sensitive fields of events (`"hookline.sensitive": true`): where they are, in
//! the schema, in an event's JSON `data` and in its Avro value.

use apache_avro::schema::{RecordSchema, Schema};
use apache_avro::types::Value;
use serde_json::Value as Json;

use crate::json::{self, Names};

/// Collects the dotted paths of the string fields marked `"hookline.sensitive": true`,
/// looking into nested records (and records inside optional unions).
pub(super) fn sensitive_paths(
    record: &RecordSchema,
    prefix: &str,
    names: &Names<'_>,
    out: &mut Vec<String>,
) {
    for field in &record.fields {
        let path = if prefix.is_empty() {
            field.name.clone()
        } else {
            format!("{prefix}.{}", field.name)
        };
        if field.custom_attributes.get("hookline.sensitive") == Some(&Json::Bool(true)) {
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
            sensitive_paths(nested, &path, names, out);
        }
    }
}

/// The value at a dotted path inside an event's `data`, as JSON.
pub(super) fn json_mut<'a>(data: &'a mut Json, path: &str) -> Option<&'a mut Json> {
    path.split('.').try_fold(data, |v, k| v.get_mut(k))
}

/// The string at a dotted path inside an event's `data`, as JSON.
pub(super) fn json_string_mut<'a>(data: &'a mut Json, path: &str) -> Option<&'a mut String> {
    match json_mut(data, path)? {
        Json::String(s) => Some(s),
        _ => None,
    }
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
