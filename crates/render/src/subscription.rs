//! Which endpoints an event goes to: event-type patterns, Dataprep-style triggers
//! (success, failure) and restriction to chosen destinations, sources and models.
//! Pure functions, table-tested.

use serde_json::Value;
use wire::{Endpoint, Event};

/// Whether an event reports a success, a failure, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A transfer or transformation ended well.
    Success,
    /// Something failed.
    Failure,
    /// Neither (a resource changed, a transfer started...).
    Neutral,
}

impl Outcome {
    /// `success`, `failure` or empty.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Neutral => "",
        }
    }
}

/// The event's outcome.
pub fn outcome(event: &Event) -> Outcome {
    match event.event_type.as_str() {
        "transfer.error" | "transformation.failed" | "endpoint.disabled" => Outcome::Failure,
        "transfer.completed" => match event.data["status"].as_str() {
            Some("SUCCESS") => Outcome::Success,
            _ => Outcome::Failure,
        },
        "transformation.succeeded" => Outcome::Success,
        _ => Outcome::Neutral,
    }
}

/// True when `pattern` (`transfer.error`, `transfer.*`, `*`) covers `event_type`.
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => event_type.starts_with(prefix),
        _ => pattern == event_type,
    }
}

/// True when `pattern` is a valid subscription among `known` event types: an exact
/// type, `*`, or `prefix.*` covering at least one type.
pub fn valid_pattern(pattern: &str, known: &[&str]) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') && !prefix[..prefix.len() - 1].contains('*') => {
            known.iter().any(|t| t.starts_with(prefix))
        }
        Some(_) => false,
        None => known.contains(&pattern),
    }
}

/// Traces of model validation errors are never forwarded, to any endpoint.
pub fn is_model_validation_trace(event: &Event) -> bool {
    event.event_type.ends_with(".sensitive_trace")
        && event
            .data
            .get("execution_context")
            .and_then(serde_json::Value::as_str)
            == Some("model_validation")
}

/// True when `endpoint` should receive `event`.
pub fn subscribed(endpoint: &Endpoint, event: &Event) -> bool {
    endpoint.active
        && endpoint.kind == "webhook"
        && !is_model_validation_trace(event)
        && endpoint
            .events
            .iter()
            .any(|p| type_matches(p, &event.event_type))
        && (endpoint.triggers.is_empty()
            || endpoint
                .triggers
                .iter()
                .any(|t| t == outcome(event).as_str()))
        && restricted_to(
            &endpoint.destination_ids,
            &ids(event, &["destination_id", "error.destination_id"]),
        )
        && restricted_to(
            &endpoint.source_ids,
            &ids(event, &["source_ids", "source_id"]),
        )
        && restricted_to(
            &endpoint.model_ids,
            &ids(event, &["model_ids", "model_id", "error.models"]),
        )
}

fn restricted_to(allowed: &[String], found: &[String]) -> bool {
    allowed.is_empty() || found.iter().any(|id| allowed.contains(id))
}

/// The ids an event mentions under any of `paths` (dotted, strings or arrays of strings).
fn ids(event: &Event, paths: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for path in paths {
        let found = path.split('.').try_fold(&event.data, |v, part| v.get(part));
        match found {
            Some(Value::String(s)) => out.push(s.clone()),
            Some(Value::Array(items)) => {
                out.extend(items.iter().filter_map(Value::as_str).map(str::to_owned))
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, data: Value) -> Event {
        Event {
            id: "e".into(),
            event_type: event_type.into(),
            version: "2023-10-15".into(),
            created_at: "2023-10-15T19:19:08+00:00".into(),
            data,
            key: "k".into(),
        }
    }

    fn endpoint(events: &[&str]) -> Endpoint {
        Endpoint {
            id: "ep".into(),
            kind: "webhook".into(),
            events: events.iter().map(|s| (*s).to_owned()).collect(),
            active: true,
            ..Endpoint::default()
        }
    }

    #[test]
    fn type_patterns() {
        let table = [
            ("transfer.error", "transfer.error", true),
            ("transfer.error", "transfer.errors", false),
            ("transfer.*", "transfer.error", true),
            ("transfer.*", "transformation.failed", false),
            ("*", "source.created", true),
            ("source.*", "source.deleted", true),
            ("source*", "source.deleted", false),
        ];
        for (pattern, t, expected) in table {
            assert_eq!(type_matches(pattern, t), expected, "{pattern} {t}");
        }
        let known = ["transfer.error", "source.created"];
        for (pattern, expected) in [
            ("*", true),
            ("transfer.*", true),
            ("nope.*", false),
            ("transfer.error", true),
            ("transfer.x", false),
            ("a*", false),
            ("*.*", false),
        ] {
            assert_eq!(valid_pattern(pattern, &known), expected, "{pattern}");
        }
    }

    #[test]
    fn outcomes() {
        let table = [
            ("transfer.error", json!({}), Outcome::Failure),
            (
                "transfer.completed",
                json!({"status": "SUCCESS"}),
                Outcome::Success,
            ),
            (
                "transfer.completed",
                json!({"status": "PARTIAL_ERROR"}),
                Outcome::Failure,
            ),
            ("transformation.succeeded", json!({}), Outcome::Success),
            ("transformation.failed", json!({}), Outcome::Failure),
            ("source.created", json!({}), Outcome::Neutral),
        ];
        for (t, data, expected) in table {
            assert_eq!(outcome(&event(t, data)), expected, "{t}");
        }
    }

    #[test]
    fn subscription_table() {
        let failed = event(
            "transfer.completed",
            json!({"status": "ERROR", "destination_id": "d1", "transfer_id": "t"}),
        );
        let ok = event(
            "transfer.completed",
            json!({"status": "SUCCESS", "destination_id": "d2"}),
        );
        let err = event(
            "transfer.error",
            json!({"error": {"destination_id": "d1", "models": ["m1", "m2"]}}),
        );
        let started = event(
            "transfer.started",
            json!({"destination_id": "d1", "source_ids": ["s1"], "model_ids": ["m3"]}),
        );
        let all = endpoint(&["*"]);
        let on_failure = Endpoint {
            triggers: vec!["failure".into()],
            ..endpoint(&["transfer.*"])
        };
        let on_success = Endpoint {
            triggers: vec!["success".into()],
            ..endpoint(&["transfer.*"])
        };
        let d1 = Endpoint {
            destination_ids: vec!["d1".into()],
            ..endpoint(&["*"])
        };
        let m2 = Endpoint {
            model_ids: vec!["m2".into()],
            ..endpoint(&["*"])
        };
        let s1 = Endpoint {
            source_ids: vec!["s1".into()],
            ..endpoint(&["*"])
        };
        let inactive = Endpoint {
            active: false,
            ..endpoint(&["*"])
        };
        let trace = event(
            "transfer.sensitive_trace",
            json!({"execution_context": "write_destination", "destination_id": "d1"}),
        );
        let validation = event(
            "transfer.sensitive_trace",
            json!({"execution_context": "model_validation", "destination_id": "d1"}),
        );
        let table: Vec<(&Endpoint, &Event, bool)> = vec![
            (&all, &failed, true),
            (&inactive, &failed, false),
            (&on_failure, &failed, true),
            (&on_failure, &ok, false),
            (&on_failure, &err, true),
            (&on_failure, &started, false),
            (&on_success, &ok, true),
            (&on_success, &failed, false),
            (&d1, &failed, true),
            (&d1, &ok, false),
            (&d1, &err, true),
            (&m2, &err, true),
            (&m2, &started, false),
            (&m2, &ok, false),
            (&s1, &started, true),
            (&s1, &err, false),
            (&all, &trace, true),
            (&all, &validation, false),
        ];
        for (i, (ep, ev, expected)) in table.into_iter().enumerate() {
            assert_eq!(subscribed(ep, ev), expected, "row {i}");
        }
    }
}
