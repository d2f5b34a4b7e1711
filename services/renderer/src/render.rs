//! Decisions without I/O: which endpoints an event goes to, and the request each gets.

use uuid::Uuid;
use wire::{Endpoint, Event, Header, RenderedDelivery};

/// Namespace of delivery ids: UUID v5 of `<len(event id)>:<event id><endpoint id>`.
const DELIVERY_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_4c2e_9a3d_4e57_8c10_d2a4_f0b3_7e91);

/// The vendors the renderer can shape requests for.
pub const SUPPORTED_VENDORS: &[&str] = &["generic_post"];

/// Why an event could not be rendered for an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The endpoint names a vendor this renderer cannot shape.
    #[error("vendor {0} is not supported by this renderer")]
    UnsupportedVendor(String),
    /// The body could not be serialised.
    #[error("cannot serialise the body")]
    Body,
}

impl RenderError {
    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            RenderError::UnsupportedVendor(_) => "HL-RENDER-VENDOR",
            RenderError::Body => "HL-RENDER-BODY",
        }
    }
}

/// The stable id of the delivery of `event_id` to `endpoint_id`: the same on every
/// render of the same event (a renderer restart re-renders it), every attempt, every replay.
pub fn delivery_id(event_id: &str, endpoint_id: &str) -> String {
    // Length-prefixed so no two (event, endpoint) pairs give the same name.
    let name = format!("{}:{event_id}{endpoint_id}", event_id.len());
    Uuid::new_v5(&DELIVERY_NAMESPACE, name.as_bytes()).to_string()
}

/// True when `endpoint` should receive `event`.
pub fn subscribed(endpoint: &Endpoint, event: &Event) -> bool {
    endpoint.active && endpoint.kind == "webhook" && endpoint.events.iter().any(|t| *t == event.event_type)
}

/// The request `endpoint` gets for `event`.
pub fn render(event: &Event, endpoint: &Endpoint, rendered_at: &str) -> Result<RenderedDelivery, RenderError> {
    match endpoint.vendor.as_str() {
        "generic_post" => {
            let body = serde_json::to_vec(&event.envelope_json()).map_err(|_| RenderError::Body)?;
            let sensitive_headers = match &endpoint.api_key {
                Some(key) if !key.is_empty() => vec![Header::new("Authorization", format!("Bearer {key}"))],
                _ => Vec::new(),
            };
            Ok(RenderedDelivery {
                delivery_id: delivery_id(&event.id, &endpoint.id),
                event_id: event.id.clone(),
                event_type: event.event_type.clone(),
                endpoint_id: endpoint.id.clone(),
                rendered_at: rendered_at.to_owned(),
                method: "POST".to_owned(),
                url: endpoint.url.clone(),
                headers: vec![Header::new("Content-Type", "application/json")],
                sensitive_headers,
                body,
            })
        }
        other => Err(RenderError::UnsupportedVendor(other.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str) -> Event {
        Event {
            id: "ev-1".into(),
            event_type: event_type.into(),
            version: "2023-10-15".into(),
            created_at: "2023-10-15T19:19:08+00:00".into(),
            data: json!({"transfer_id": "t1"}),
            key: "t1".into(),
        }
    }

    fn endpoint(events: &[&str], active: bool, vendor: &str, api_key: Option<&str>) -> Endpoint {
        Endpoint {
            id: "ep-1".into(),
            kind: "webhook".into(),
            name: "n".into(),
            vendor: vendor.into(),
            url: "https://example.com/h".into(),
            events: events.iter().map(|s| (*s).to_owned()).collect(),
            api_key: api_key.map(str::to_owned),
            active,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn subscription_table() {
        // (endpoint events, active, event type, expected)
        let table = [
            (&["transfer.error"][..], true, "transfer.error", true),
            (&["transfer.error"][..], false, "transfer.error", false),
            (&["transfer.error"][..], true, "transfer.started", false),
            (&["source.created", "transfer.started"][..], true, "transfer.started", true),
            (&[][..], true, "transfer.error", false),
        ];
        for (events, active, t, expected) in table {
            assert_eq!(subscribed(&endpoint(events, active, "generic_post", None), &event(t)), expected, "{events:?} {active} {t}");
        }
    }

    #[test]
    fn generic_post_is_the_json_envelope() {
        let d = render(&event("transfer.error"), &endpoint(&["transfer.error"], true, "generic_post", None), "now").unwrap();
        assert_eq!(d.method, "POST");
        assert_eq!(d.url, "https://example.com/h");
        assert_eq!(d.headers, vec![Header::new("Content-Type", "application/json")]);
        assert!(d.sensitive_headers.is_empty());
        let body: serde_json::Value = serde_json::from_slice(&d.body).unwrap();
        assert_eq!(
            String::from_utf8(d.body.clone()).unwrap(),
            r#"{"type":"transfer.error","version":"2023-10-15","api_version":"2023-10-15","created_at":"2023-10-15T19:19:08+00:00","data":{"transfer_id":"t1"}}"#
        );
        assert_eq!(body["data"]["transfer_id"], "t1");
    }

    #[test]
    fn the_api_key_goes_in_a_sensitive_header() {
        let d = render(&event("transfer.error"), &endpoint(&["transfer.error"], true, "generic_post", Some("k-1")), "now").unwrap();
        assert_eq!(d.sensitive_headers, vec![Header::new("Authorization", "Bearer k-1")]);
        assert!(!format!("{d:?}").contains("k-1"));
    }

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        assert_eq!(delivery_id("a", "b"), delivery_id("a", "b"));
        assert_ne!(delivery_id("a", "b"), delivery_id("a", "c"));
        assert_ne!(delivery_id("a\nb", "c"), delivery_id("a", "b\nc"));
    }

    #[test]
    fn unsupported_vendors_are_refused_with_a_code() {
        let err = render(&event("transfer.error"), &endpoint(&["transfer.error"], true, "carrier_pigeon", None), "now").unwrap_err();
        assert_eq!(err.code(), "HL-RENDER-VENDOR");
    }
}
