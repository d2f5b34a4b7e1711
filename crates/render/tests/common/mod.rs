//! Fixtures the render tests share: the bundled registry, events, a webhook.

#![allow(dead_code)] // each test binary uses its own share of them

use serde_json::{Value, json};
use wire::{Endpoint, Event, Registry};

pub fn registry() -> Registry {
    Registry::bundled().expect("bundled schemas")
}

pub fn event(json: Value) -> Event {
    registry().event_from_json(&json).expect("a valid event").0
}

pub fn transfer_error() -> Event {
    event(
        json!({"type": "transfer.error", "created_at": "2023-10-15T19:19:08+00:00", "data": {"error": {
        "destination_id": "d-1", "destination_name": "Foo Bar", "id_in_provider_system": "acme", "models": ["users"],
        "is_full_refresh": true, "transfer_id": "t-1", "transfer_status": "PARTIAL_ERROR", "transfer_error_type": "third_party",
        "transfer_log": "SECRET STACK TRACE", "transfer_log_pretty": "Credentials expired", "transfer_started_at": "2023-10-15T16:19:08+00:00",
        "transfer_ended_at": null, "in_app_url": "https://app/t-1"}}}),
    )
}

pub fn completed(status: &str) -> Event {
    event(
        json!({"type": "transfer.completed", "created_at": "2023-10-15T20:00:00+00:00", "data": {
        "transfer_id": "t-1", "destination_id": "d-1", "status": status, "started_at": "2023-10-15T16:19:08+00:00", "ended_at": "2023-10-15T20:00:00+00:00"}}),
    )
}

pub fn endpoint(vendor: &str, url: &str) -> Endpoint {
    Endpoint {
        id: "ep-1".into(),
        kind: "webhook".into(),
        name: "n".into(),
        vendor: vendor.into(),
        url: url.into(),
        events: vec!["*".into()],
        active: true,
        ..Endpoint::default()
    }
}
