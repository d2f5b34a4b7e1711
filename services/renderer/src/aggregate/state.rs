//! The pure state of open transfers and the changelog's record format: keys, contexts,
//! the trace object receivers get.

use super::*;

/// An open transfer: what is known without reading its traces back.
#[derive(Debug, Clone)]
pub(super) struct Transfer {
    pub(super) destination_id: String,
    pub(super) first_event_id: String,
    pub(super) opened_at_ms: i64,
    /// Traces written (the next seq).
    pub(super) traces: i32,
    pub(super) source_ids: Vec<String>,
    pub(super) model_ids: Vec<String>,
    /// The changelog offset at or before its first trace.
    pub(super) scan_from: i64,
    /// The trace contexts of its first [`MAX_LINKS`] traces read by this process, which
    /// the flush's span links to (in memory only: a transfer restored after a restart
    /// links to the traces read since).
    pub(super) links: Vec<opentelemetry::trace::SpanContext>,
}

/// The most trace links one flush span carries.
pub(super) const MAX_LINKS: usize = 32;

impl Transfer {
    pub(super) fn add_ids(&mut self, source_id: Option<&str>, model_id: Option<&str>) {
        for (id, ids) in [
            (source_id, &mut self.source_ids),
            (model_id, &mut self.model_ids),
        ] {
            if let Some(id) = id.filter(|id| !id.is_empty())
                && !ids.iter().any(|known| known == id)
            {
                ids.push(id.to_owned());
            }
        }
    }
}

/// Fields of a trace object, in the seed's order.
pub(super) const TRACE_FIELDS: [&str; 8] = [
    "destination_id",
    "source_id",
    "model_id",
    "model_name",
    "source_vendor",
    "destination_vendor",
    "execution_context",
    "trace",
];

/// The trace object receivers get: the seed's fields, in its order, without nulls.
pub(super) fn trace_object(data: &Value) -> Redacted<String> {
    let mut obj = Map::new();
    for field in TRACE_FIELDS {
        if let Some(v) = data.get(field).filter(|v| !v.is_null()) {
            obj.insert(field.to_owned(), v.clone());
        }
    }
    Redacted::new(Value::Object(obj).to_string())
}

/// The associated data of a dead letter's sealed payload (traces that could not be rendered).
pub(super) fn dead_letter_context(id: &str) -> String {
    format!("dead-letter/{id}/payload")
}

/// The associated data of a sealed trace on the changelog.
pub(super) fn trace_context(transfer_id: &str, seq: i32) -> String {
    format!("trace/{transfer_id}/{seq}")
}

pub(super) fn changelog_key(transfer_id: &str, seq: i32) -> Vec<u8> {
    format!("{transfer_id}#{seq}").into_bytes()
}

pub(super) fn parse_key(key: &[u8]) -> Option<(&str, i32)> {
    let (transfer_id, seq) = std::str::from_utf8(key).ok()?.rsplit_once('#')?;
    Some((transfer_id, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_keys_round_trip_whatever_the_transfer_id() {
        for id in ["t-1", "a#b", "#", "ü/ß"] {
            let key = changelog_key(id, 42);
            assert_eq!(parse_key(&key), Some((id, 42)));
        }
        assert_eq!(parse_key(b"no-seq"), None);
        assert_eq!(parse_key(b"t#x"), None);
    }

    #[test]
    fn trace_objects_keep_the_seed_fields_in_order_without_nulls() {
        let data = serde_json::json!({"transfer_id": "t", "trace": "boom", "destination_id": "d", "source_id": null,
            "model_id": "m", "execution_context": "write_destination"});
        assert_eq!(
            trace_object(&data).expose(),
            r#"{"destination_id":"d","model_id":"m","execution_context":"write_destination","trace":"boom"}"#
        );
    }

    #[test]
    fn transfers_keep_distinct_ids_in_arrival_order() {
        let mut t = Transfer {
            destination_id: String::new(),
            first_event_id: String::new(),
            opened_at_ms: 0,
            traces: 0,
            source_ids: Vec::new(),
            model_ids: Vec::new(),
            scan_from: 0,
            links: Vec::new(),
        };
        t.add_ids(Some("s2"), Some("m1"));
        t.add_ids(Some("s1"), None);
        t.add_ids(Some("s2"), Some(""));
        assert_eq!(t.source_ids, ["s2", "s1"]);
        assert_eq!(t.model_ids, ["m1"]);
    }
}
