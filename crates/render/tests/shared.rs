//! What a render keeps from one request to the next gives what rendering anew gives:
//! a URL without actions is checked once, when the endpoint is compiled, and an
//! event's body is serialised once for all its endpoints.

use wire::{Endpoint, Event};

mod common;

use common::transfer_error as event;

fn endpoint(id: &str, vendor: &str, url: &str) -> Endpoint {
    Endpoint {
        id: id.into(),
        secret: Some("s3cret".into()),
        api_key: Some("K3Y".into()),
        signing_scheme: "standard_webhooks".into(),
        ..common::endpoint(vendor, url)
    }
}

/// The delivery, or the error's code and message.
fn outcome(event: &Event, ep: Endpoint) -> Result<wire::RenderedDelivery, (String, String)> {
    let compiled = render::compile(ep).expect("the endpoint compiles");
    render::render(event, &compiled, "prod", "2024-01-15T10:30:00Z")
        .map_err(|e| (e.code().to_owned(), e.to_string()))
}

#[test]
fn a_url_without_actions_renders_as_the_same_text_printed_by_a_template() {
    let event = event();
    let cases = [
        ("generic_post", "https://example.com/hook?a=1"),
        ("generic_post", "  https://example.com/padded  "),
        ("generic_get", "https://example.com/hook?a=1"),
        ("slack", "https://hooks.slack.com/services/T/B/X"),
        ("pagerduty", ""),
        ("datadog", "   "),
        ("generic_post", ""),
        ("generic_post", "not a url"),
        ("generic_post", "ftp://example.com/file"),
        ("generic_post", "https://example.com/s3cret"),
    ];
    let mut failures = 0;
    for (vendor, url) in cases {
        let plain = endpoint("ep-1", vendor, url);
        // An action that prints nothing makes the same URL a template.
        let templated = endpoint("ep-1", vendor, &format!("{{{{\"\"}}}}{url}"));
        let first = outcome(&event, plain.clone());
        assert_eq!(first, outcome(&event, templated), "{vendor} {url:?}");
        // Rendered twice from one compiled endpoint (a GET adds its query to a copy).
        let compiled = render::compile(plain).expect("compiles");
        let twice: Vec<_> = (0..2)
            .map(|_| {
                render::render(&event, &compiled, "prod", "2024-01-15T10:30:00Z")
                    .map_err(|e| (e.code().to_owned(), e.to_string()))
            })
            .collect();
        assert_eq!(twice[0], first, "{vendor} {url:?}");
        assert_eq!(twice[1], first, "{vendor} {url:?}");
        failures += usize::from(first.is_err());
    }
    // Blank, not a URL, not http(s), the secret in it: still refused at each render.
    assert_eq!(failures, 4);
}

#[test]
fn an_event_rendered_for_many_endpoints_gives_what_each_render_gives() {
    let event = event();
    let mut with_payload = endpoint("ep-4", "generic_post", "https://example.com/p");
    with_payload.body_template = Some(r#"{"payload": {{.Payload}}}"#.into());
    let endpoints = [
        endpoint("ep-1", "generic_post", "https://example.com/1"),
        endpoint("ep-2", "generic_post", "https://example.com/2"),
        endpoint("ep-3", "generic_get", "https://example.com/3"),
        with_payload,
        endpoint("ep-5", "slack", "https://hooks.slack.com/services/T/B/X"),
    ];
    let compiled: Vec<_> = endpoints
        .iter()
        .map(|e| render::compile(e.clone()).expect("compiles"))
        .collect();
    let rendering = render::EventRender::new(&event);
    for c in compiled.iter().chain(&compiled) {
        let shared = rendering
            .render(c, "prod", "2024-01-15T10:30:00Z")
            .expect("renders");
        let alone = render::render(&event, c, "prod", "2024-01-15T10:30:00Z").expect("renders");
        assert!(shared == alone, "{}", c.endpoint.id);
    }
    // The plain webhooks' bodies are the envelope, and the payload template prints it.
    let body = |i: usize| {
        rendering
            .render(&compiled[i], "prod", "now")
            .expect("renders")
            .body
    };
    assert_eq!(body(0), event.envelope_bytes());
    assert_eq!(body(1), event.envelope_bytes());
    let payload: serde_json::Value = serde_json::from_slice(&body(3)).expect("JSON");
    let envelope: serde_json::Value =
        serde_json::from_slice(&event.envelope_bytes()).expect("JSON");
    assert_eq!(payload["payload"], envelope);
}

#[test]
fn what_is_kept_prints_neither_the_url_nor_the_event_data() {
    let event = event();
    let slack = render::compile(endpoint(
        "ep-1",
        "slack",
        "https://hooks.slack.com/services/T0/B0/CREDENTIAL",
    ))
    .expect("compiles");
    let plain = render::compile(endpoint("ep-2", "generic_post", "https://example.com/in"))
        .expect("compiles");
    let rendering = render::EventRender::new(&event);
    // The plain webhook's body is the envelope, which the rendering now holds.
    rendering.render(&plain, "prod", "now").expect("renders");
    let printed = format!("{slack:?} {plain:?} {rendering:?}");
    assert!(
        printed.contains("ep-1") && printed.contains("ep-2"),
        "{printed}"
    );
    for secret in [
        "CREDENTIAL",
        "hooks.slack.com",
        "SECRET STACK TRACE",
        "s3cret",
    ] {
        assert!(!printed.contains(secret), "{secret} printed: {printed}");
    }
    // Nor the envelope's bytes, printed as numbers.
    let bytes = format!("{:?}", &event.envelope_bytes()[..16]);
    assert!(!printed.contains(bytes.trim_end_matches(']')), "{printed}");
}
