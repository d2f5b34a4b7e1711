//! A generic Avro [`Value`] written through apache-avro's schema-aware serde serializer
//! (the path typed records take), not its generic encoder: that encoder validates the
//! whole value first, then builds a hash map of field names for every record it writes.
//! Here the value and its schema are walked together: each value must be of its
//! schema's type, a record's fields in the schema's order, or the write fails.

use apache_avro::Schema;
use apache_avro::types::Value;
use serde::ser::{Error as _, SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::json::{Names, deref};

/// `value`, to be written with `schema` (whose named types are `names`).
pub(crate) struct Typed<'v> {
    pub value: &'v Value,
    pub schema: &'static Schema,
    pub names: &'v Names<'static>,
}

impl Typed<'_> {
    fn child<'v>(&'v self, value: &'v Value, schema: &'static Schema) -> Typed<'v> {
        Typed {
            value,
            schema,
            names: self.names,
        }
    }
}

impl Serialize for Typed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (deref(self.schema, self.names), self.value) {
            (Schema::Null, Value::Null) => s.serialize_unit(),
            (Schema::Boolean, Value::Boolean(b)) => s.serialize_bool(*b),
            (Schema::Int, Value::Int(i)) => s.serialize_i32(*i),
            (Schema::Long, Value::Long(i)) => s.serialize_i64(*i),
            (Schema::Float, Value::Float(f)) => s.serialize_f32(*f),
            (Schema::Double, Value::Double(f)) => s.serialize_f64(*f),
            (Schema::String, Value::String(text)) => s.serialize_str(text),
            (Schema::Bytes, Value::Bytes(bytes)) => s.serialize_bytes(bytes),
            (Schema::Enum(e), Value::Enum(index, symbol)) => match e.symbols.get(*index as usize) {
                Some(known) if known == symbol => {
                    s.serialize_unit_variant(e.name.name(), *index, known)
                }
                _ => Err(S::Error::custom("an enum symbol is not its schema's")),
            },
            (Schema::Array(a), Value::Array(items)) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&self.child(item, &a.items))?;
                }
                seq.end()
            }
            (Schema::Map(m), Value::Map(entries)) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (key, item) in entries {
                    map.serialize_entry(key, &self.child(item, &m.types))?;
                }
                map.end()
            }
            (Schema::Record(r), Value::Record(fields)) if fields.len() == r.fields.len() => {
                let mut record = s.serialize_struct(r.name.name(), fields.len())?;
                for ((name, item), field) in fields.iter().zip(&r.fields) {
                    if *name != field.name {
                        return Err(S::Error::custom("record fields are not in schema order"));
                    }
                    record.serialize_field(&field.name, &self.child(item, &field.schema))?;
                }
                record.end()
            }
            (Schema::Union(u), Value::Union(index, inner)) => {
                match u.variants().get(*index as usize) {
                    Some(branch) => {
                        s.serialize_newtype_variant("", *index, "", &self.child(inner, branch))
                    }
                    None => Err(S::Error::custom("a union branch is not its schema's")),
                }
            }
            _ => Err(S::Error::custom("a value is not of its schema's type")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::writer::datum::GenericDatumWriter;

    const SCHEMA: &str = r#"{"type": "record", "name": "R", "namespace": "t", "fields": [
        {"name": "i", "type": "int"}, {"name": "l", "type": "long"},
        {"name": "f", "type": "float"}, {"name": "d", "type": "double"},
        {"name": "b", "type": "boolean"}, {"name": "y", "type": "bytes"},
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        {"name": "m", "type": {"type": "map", "values": "long"}},
        {"name": "a", "type": {"type": "array", "items": {"type": "record", "name": "I",
            "fields": [{"name": "s", "type": ["null", "string"]}]}}},
        {"name": "again", "type": ["null", "I", "E"]}
    ]}"#;

    fn item(s: Option<&str>) -> Value {
        let s = s.map_or(Value::Union(0, Box::new(Value::Null)), |s| {
            Value::Union(1, Box::new(Value::String(s.into())))
        });
        Value::Record(vec![("s".into(), s)])
    }

    fn value(entries: usize, again: Value) -> Value {
        Value::Record(vec![
            ("i".into(), Value::Int(-7)),
            ("l".into(), Value::Long(i64::MAX)),
            ("f".into(), Value::Float(1.5)),
            ("d".into(), Value::Double(-0.25)),
            ("b".into(), Value::Boolean(true)),
            ("y".into(), Value::Bytes(vec![0, 255])),
            ("e".into(), Value::Enum(1, "B".into())),
            (
                "m".into(),
                Value::Map(
                    (0..entries)
                        .map(|n| (n.to_string(), Value::Long(n as i64)))
                        .collect(),
                ),
            ),
            (
                "a".into(),
                Value::Array(
                    (0..entries)
                        .map(|n| item((n % 2 == 0).then_some("x")))
                        .collect(),
                ),
            ),
            ("again".into(), again),
        ])
    }

    fn write(
        schema: &'static Schema,
        names: &Names<'static>,
        value: &Value,
    ) -> Result<Vec<u8>, apache_avro::Error> {
        let writer = GenericDatumWriter::builder(schema).build()?;
        writer.write_ser_to_vec(&Typed {
            value,
            schema,
            names,
        })
    }

    #[test]
    fn writes_what_the_generic_encoder_writes() {
        let schema: &'static Schema = Box::leak(Box::new(Schema::parse_str(SCHEMA).unwrap()));
        let mut names = Names::new();
        crate::json::collect_names(schema, &mut names);
        let generic = GenericDatumWriter::builder(schema).build().unwrap();
        for (entries, again) in [
            (0, Value::Union(0, Box::new(Value::Null))),
            (1, Value::Union(1, Box::new(item(None)))),
            (5, Value::Union(2, Box::new(Value::Enum(0, "A".into())))),
        ] {
            let v = value(entries, again);
            assert_eq!(
                write(schema, &names, &v).unwrap(),
                generic.write_value_to_vec(v.clone()).unwrap(),
                "{entries} entries"
            );
        }
    }

    #[test]
    fn refuses_a_value_that_is_not_of_its_schema() {
        let schema: &'static Schema = Box::leak(Box::new(Schema::parse_str(SCHEMA).unwrap()));
        let mut names = Names::new();
        crate::json::collect_names(schema, &mut names);
        let null = || Value::Union(0, Box::new(Value::Null));
        let Value::Record(fields) = value(2, null()) else {
            unreachable!()
        };
        let with = |i: usize, v: Value| {
            let mut f = fields.clone();
            f[i].1 = v;
            Value::Record(f)
        };
        let mut swapped = fields.clone();
        swapped.swap(0, 1);
        for bad in [
            with(0, Value::Long(1)),
            with(6, Value::Enum(0, "B".into())),
            with(6, Value::Enum(2, "C".into())),
            with(9, Value::Union(3, Box::new(Value::Null))),
            with(9, Value::Union(1, Box::new(Value::Null))),
            Value::Record(swapped),
            Value::Record(fields[..3].to_vec()),
        ] {
            assert!(write(schema, &names, &bad).is_err(), "{bad:?}");
        }
    }
}
