//! The fixed request shapes of the vendors, as their public APIs document them:
//! Slack Incoming Webhooks, PagerDuty Events API v2, Datadog Events API (v1), and the
//! query-parameter flattening of `generic_get`. Trace text and transfer logs (sensitive)
//! never go into these messages; `transfer_log_pretty` (customer-safe) does.

use serde_json::{Map, Value, json};
use wire::Event;

use crate::subscription::{Outcome, outcome};

/// PagerDuty's Events API v2 endpoint, used when a `pagerduty` webhook has no URL.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// Datadog's Events API endpoint (US1), used when a `datadog` webhook has no URL.
pub const DATADOG_URL: &str = "https://api.datadoghq.com/api/v1/events";

/// What a person needs to know about an event.
pub struct Summary {
    /// One line.
    pub title: String,
    /// A few lines more.
    pub text: String,
    /// (label, value) pairs.
    pub fields: Vec<(&'static str, String)>,
    /// Failure, success or neither.
    pub outcome: Outcome,
    /// The transfer, when there is one.
    pub transfer_id: Option<String>,
    /// A destination name or id, when there is one.
    pub destination: Option<String>,
}

fn s(v: &Value, path: &str) -> Option<String> {
    let found = path.split('.').try_fold(v, |v, part| v.get(part))?;
    match found {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        )
        .filter(|s| !s.is_empty()),
        _ => None,
    }
}

/// A readable summary of an event.
pub fn summarize(event: &Event) -> Summary {
    let d = &event.data;
    let outcome = outcome(event);
    let mut fields = Vec::new();
    let mut push = |label: &'static str, value: Option<String>| {
        if let Some(v) = value {
            fields.push((label, v));
        }
    };
    let (title, text, transfer_id, destination) = match event.event_type.as_str() {
        "transfer.error" => {
            let e = &d["error"];
            let dest = s(e, "destination_name").or_else(|| s(e, "destination_id"));
            push("Transfer", s(e, "transfer_id"));
            push("Destination", dest.clone());
            push("Status", s(e, "transfer_status"));
            push("Error type", s(e, "transfer_error_type"));
            push("Models", s(e, "models"));
            push("Started", s(e, "transfer_started_at"));
            push("Ended", s(e, "transfer_ended_at"));
            let text = s(e, "transfer_log_pretty")
                .unwrap_or_else(|| "The transfer failed; see the transfer's logs.".to_owned());
            let text = match s(e, "in_app_url") {
                Some(url) => format!("{text}\n{url}"),
                None => text,
            };
            (
                format!(
                    "Transfer failed ({}) to {}",
                    s(e, "transfer_status").unwrap_or_default(),
                    dest.clone().unwrap_or_default()
                ),
                text,
                s(e, "transfer_id"),
                dest,
            )
        }
        "transfer.completed" => {
            push("Transfer", s(d, "transfer_id"));
            push("Destination", s(d, "destination_id"));
            push("Status", s(d, "status"));
            push("Started", s(d, "started_at"));
            push("Ended", s(d, "ended_at"));
            let verb = if outcome == Outcome::Success {
                "succeeded"
            } else {
                "ended with errors"
            };
            (
                format!(
                    "Transfer {verb} to {}",
                    s(d, "destination_id").unwrap_or_default()
                ),
                format!(
                    "Transfer {} {verb}.",
                    s(d, "transfer_id").unwrap_or_default()
                ),
                s(d, "transfer_id"),
                s(d, "destination_id"),
            )
        }
        "transfer.started" => {
            push("Transfer", s(d, "transfer_id"));
            push("Destination", s(d, "destination_id"));
            push("Full refresh", s(d, "is_full_refresh"));
            push("Started", s(d, "started_at"));
            (
                format!(
                    "Transfer started to {}",
                    s(d, "destination_id").unwrap_or_default()
                ),
                format!(
                    "Transfer {} started.",
                    s(d, "transfer_id").unwrap_or_default()
                ),
                s(d, "transfer_id"),
                s(d, "destination_id"),
            )
        }
        t if t.starts_with("transformation.") => {
            push("Transformation", s(d, "name"));
            push("Destination", s(d, "destination_id"));
            push("Started", s(d, "started_at"));
            push("Ended", s(d, "ended_at"));
            let what = t.trim_start_matches("transformation.");
            let text = match (outcome, s(d, "error")) {
                (Outcome::Failure, Some(err)) => err,
                _ => format!(
                    "Transformation {} {what}.",
                    s(d, "name").unwrap_or_default()
                ),
            };
            (
                format!("Transformation {} {what}", s(d, "name").unwrap_or_default()),
                text,
                None,
                s(d, "destination_id"),
            )
        }
        "endpoint.disabled" => {
            push("Endpoint", s(d, "endpoint_id"));
            push("Failing since", s(d, "failing_since"));
            (
                "Webhook endpoint disabled".to_owned(),
                s(d, "reason").unwrap_or_default(),
                None,
                None,
            )
        }
        t => {
            let resource = d
                .get("current_resource")
                .filter(|v| !v.is_null())
                .or_else(|| d.get("previous_resource"))
                .unwrap_or(&Value::Null);
            push("Id", s(resource, "id"));
            push("Name", s(resource, "name"));
            (
                format!(
                    "{} {}",
                    t.replace(['.', '_'], " "),
                    s(resource, "name")
                        .or_else(|| s(resource, "id"))
                        .unwrap_or_default()
                ),
                String::new(),
                None,
                None,
            )
        }
    };
    fields.push(("When", event.created_at.clone()));
    Summary {
        title,
        text,
        fields,
        outcome,
        transfer_id,
        destination,
    }
}

fn unix_seconds(rfc3339: &str) -> i64 {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .unwrap_or(0)
}

/// A Slack Incoming Webhook message: `text` plus one attachment, red for failures.
pub fn slack(event: &Event) -> Value {
    let sum = summarize(event);
    let color = match sum.outcome {
        Outcome::Failure => "danger",
        Outcome::Success => "good",
        Outcome::Neutral => "#439FE0",
    };
    let fields: Vec<Value> = sum
        .fields
        .iter()
        .map(|(k, v)| json!({"title": k, "value": v, "short": true}))
        .collect();
    json!({
        "text": sum.title,
        "attachments": [{
            "color": color,
            "fallback": sum.title,
            "title": sum.title,
            "text": sum.text,
            "fields": fields,
            "footer": format!("hookline · {}", event.event_type),
            "ts": unix_seconds(&event.created_at),
        }]
    })
}

/// A PagerDuty Events API v2 event: failures trigger, a later success of the same
/// transfer resolves (`dedup_key` per transfer).
pub fn pagerduty(event: &Event, routing_key: &str) -> Value {
    let sum = summarize(event);
    let dedup_key = match &sum.transfer_id {
        Some(t) => format!("hookline-transfer-{t}"),
        None => format!("hookline-event-{}", event.id),
    };
    if sum.outcome == Outcome::Success && sum.transfer_id.is_some() {
        return json!({"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key});
    }
    let severity = match (sum.outcome, event.data["error"]["transfer_status"].as_str()) {
        (Outcome::Failure, Some("PARTIAL_ERROR")) => "warning",
        (Outcome::Failure, _) => "error",
        _ => "info",
    };
    let details: Map<String, Value> = sum
        .fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
        .collect();
    let mut summary = sum.title.clone();
    summary.truncate(
        summary
            .char_indices()
            .nth(1024)
            .map_or(summary.len(), |(i, _)| i),
    );
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "severity": severity,
            "source": sum.destination.clone().unwrap_or_else(|| "hookline".to_owned()),
            "timestamp": event.created_at,
            "component": event.event_type.split('.').next().unwrap_or_default(),
            "class": event.event_type,
            "custom_details": details,
        },
        "client": "hookline",
    })
}

/// A Datadog event (Events API v1 `POST /api/v1/events`).
pub fn datadog(event: &Event) -> Value {
    let sum = summarize(event);
    let alert_type = match sum.outcome {
        Outcome::Failure => "error",
        Outcome::Success => "success",
        Outcome::Neutral => "info",
    };
    let mut tags = vec![
        "source:hookline".to_owned(),
        format!("event_type:{}", event.event_type),
    ];
    if let Some(t) = &sum.transfer_id {
        tags.push(format!("transfer_id:{t}"));
    }
    if let Some(d) = event
        .data
        .get("destination_id")
        .or_else(|| event.data["error"].get("destination_id"))
        .and_then(Value::as_str)
    {
        tags.push(format!("destination_id:{d}"));
    }
    let text = std::iter::once(sum.text.clone())
        .chain(sum.fields.iter().map(|(k, v)| format!("{k}: {v}")))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let clip = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    json!({
        "title": clip(&sum.title, 100),
        "text": clip(&text, 4000),
        "alert_type": alert_type,
        "priority": "normal",
        "tags": tags,
        "aggregation_key": clip(sum.transfer_id.as_deref().unwrap_or(&event.id), 100),
        "date_happened": unix_seconds(&event.created_at),
    })
}

/// Keys never put in a URL (receivers log URLs): the sensitive fields.
const NOT_IN_URLS: &[&str] = &["transfer_log", "trace"];

/// `generic_get`: the envelope as query parameters. Nested objects become dotted keys
/// (`data.error.transfer_id`), array elements their index (`data.error.models.0`),
/// nulls are left out, numbers and booleans are their JSON text.
pub fn query_pairs(envelope: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Null => {}
            Value::Object(obj) => {
                for (k, v) in obj {
                    if NOT_IN_URLS.contains(&k.as_str()) {
                        continue;
                    }
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(&format!("{prefix}.{i}"), item, out);
                }
            }
            Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            other => out.push((prefix.to_owned(), other.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", envelope, &mut out);
    out
}
