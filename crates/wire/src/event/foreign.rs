//! Events whose envelope was written with another schema than hookline's: an engine's
//! evolved copy, found through a Schema Registry.

use apache_avro::schema::Schema;
use apache_avro::types::Value;

use super::{DEFAULT_VERSION, EVENT, Event, data_union};
use crate::error::WireError;
use crate::json::{self, Names};
use crate::registry::Registry;

impl Registry {
    /// An event from an envelope written with another schema than hookline's (an
    /// engine's evolved copy, found through a Schema Registry): the `data` branch is
    /// chosen by the event's `type` and must be the record of the same name, then
    /// resolved field by field (Avro's rules: defaults for missing fields, extra fields
    /// skipped). Choosing by type, not by shape, keeps one type's data from being read
    /// as another type whose fields it happens to fit.
    #[cfg_attr(not(feature = "schema-registry"), allow(dead_code))]
    pub(crate) fn event_from_foreign(
        &self,
        value: Value,
        writer_branches: &[Option<String>],
        names: &std::collections::HashMap<apache_avro::schema::Name, &'static Schema>,
    ) -> Result<Event, WireError> {
        let Value::Record(fields) = value else {
            return Err(WireError::Datum("event is not a record".to_owned()));
        };
        let mut envelope = Vec::with_capacity(5);
        let mut event_type = None;
        let mut version = None;
        let mut data = None;
        for (name, v) in fields {
            let v = match v {
                Value::Union(_, inner) if name != "data" => *inner,
                v => v,
            };
            match (name.as_str(), v) {
                ("type", Value::String(t)) => event_type = Some(t),
                ("version", Value::String(t)) => version = Some(t),
                ("id" | "created_at", v @ Value::String(_)) => envelope.push((name, v)),
                ("data", Value::Union(i, inner)) => data = Some((i as usize, *inner)),
                _ => {}
            }
        }
        let (Some(event_type), Some((writer_branch, inner))) = (event_type, data) else {
            return Err(WireError::Datum("event envelope is incomplete".to_owned()));
        };
        let catalogue = self.catalogue();
        let Some(&branch) = catalogue.branches.get(&event_type) else {
            return Err(WireError::invalid(
                "type",
                "unknown event type (not in schemas/event)",
            ));
        };
        let reader_branch = &data_union(self.current(EVENT)?)?[branch];
        let Schema::Record(record) = json::deref(reader_branch, &catalogue.names) else {
            return Err(WireError::invalid(
                "data",
                "event type has no record schema",
            ));
        };
        if writer_branches
            .get(writer_branch)
            .and_then(Option::as_deref)
            != Some(record.name.name())
        {
            return Err(WireError::invalid("type", "does not match the data record"));
        }
        let data = inner
            .resolve_with_names(reader_branch, names)
            .map_err(|_| {
                WireError::Datum(format!(
                    "data record {} does not resolve to hookline's",
                    record.name.name()
                ))
            })?;
        envelope.push(("type".to_owned(), Value::String(event_type)));
        envelope.push((
            "version".to_owned(),
            Value::String(version.unwrap_or_else(|| DEFAULT_VERSION.to_owned())),
        ));
        envelope.push((
            "data".to_owned(),
            Value::Union(u32::try_from(branch).unwrap_or(u32::MAX), Box::new(data)),
        ));
        self.event_from_value(Value::Record(envelope))
    }

    /// The unqualified names of the records in the `data` union of an event schema, by
    /// branch (`None` for a branch that is not a record).
    #[cfg_attr(not(feature = "schema-registry"), allow(dead_code))]
    pub(crate) fn data_branch_names(schema: &Schema) -> Result<Vec<Option<String>>, WireError> {
        let mut names = Names::new();
        json::collect_names(schema, &mut names);
        Ok(data_union(schema)?
            .iter()
            .map(|b| match json::deref(b, &names) {
                Schema::Record(r) => Some(r.name.name().to_owned()),
                _ => None,
            })
            .collect())
    }
}
