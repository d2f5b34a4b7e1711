//! Each vendor's request, shaped as its public API documents it, and templated
//! (Dataprep-style) requests.

use serde_json::{Value, json};
use wire::{Endpoint, Event, HeaderTemplate};

mod common;

use common::{completed, endpoint, event, registry, transfer_error};

fn render(ep: Endpoint, ev: &Event) -> wire::RenderedDelivery {
    let compiled = render::compile(ep).expect("the endpoint compiles");
    render::render(ev, &compiled, "prod", "now").expect("renders")
}

fn body(d: &wire::RenderedDelivery) -> Value {
    serde_json::from_slice(&d.body).expect("a JSON body")
}

#[test]
fn slack_is_an_incoming_webhook_message_red_for_failures() {
    let d = render(
        endpoint("slack", "https://hooks.slack.com/services/T/B/X"),
        &transfer_error(),
    );
    assert_eq!(d.method, "POST");
    let b = body(&d);
    assert!(b["text"].as_str().unwrap().contains("Foo Bar"));
    let a = &b["attachments"][0];
    assert_eq!(a["color"], "danger");
    assert_eq!(a["ts"], 1_697_397_548);
    assert!(a["text"].as_str().unwrap().contains("Credentials expired"));
    let fields: Vec<(&str, &str)> = a["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["title"].as_str().unwrap(), f["value"].as_str().unwrap()))
        .collect();
    assert!(
        fields.contains(&("Transfer", "t-1"))
            && fields.contains(&("Destination", "Foo Bar"))
            && fields.contains(&("When", "2023-10-15T19:19:08+00:00"))
    );
    assert!(
        !String::from_utf8_lossy(&d.body).contains("SECRET STACK TRACE"),
        "the transfer log never goes to Slack"
    );
    assert_eq!(
        body(&render(
            endpoint("slack", "https://hooks.slack.com/x"),
            &completed("SUCCESS")
        ))["attachments"][0]["color"],
        "good"
    );
}

#[test]
fn pagerduty_triggers_on_failure_and_resolves_on_success_per_transfer() {
    let ep = Endpoint {
        api_key: Some("R0UTINGKEY".into()),
        ..endpoint("pagerduty", "")
    };
    let d = render(ep.clone(), &transfer_error());
    assert_eq!(d.url, "https://events.pagerduty.com/v2/enqueue");
    let b = body(&d);
    assert_eq!(b["routing_key"], "R0UTINGKEY");
    assert_eq!(b["event_action"], "trigger");
    assert_eq!(b["dedup_key"], "hookline-transfer-t-1");
    assert_eq!(b["payload"]["severity"], "warning");
    assert_eq!(b["payload"]["source"], "Foo Bar");
    assert_eq!(b["payload"]["timestamp"], "2023-10-15T19:19:08+00:00");
    assert!(
        b["payload"]["summary"]
            .as_str()
            .is_some_and(|s| !s.is_empty() && s.len() <= 1024)
    );
    assert!(b["payload"]["custom_details"].is_object());
    let resolved = body(&render(ep.clone(), &completed("SUCCESS")));
    assert_eq!(
        resolved,
        json!({"routing_key": "R0UTINGKEY", "event_action": "resolve", "dedup_key": "hookline-transfer-t-1"})
    );
    assert_eq!(
        body(&render(ep, &completed("ERROR")))["payload"]["severity"],
        "error"
    );
}

#[test]
fn datadog_is_an_events_api_event_with_the_key_in_a_header() {
    let ep = Endpoint {
        api_key: Some("DDKEY".into()),
        ..endpoint("datadog", "")
    };
    let d = render(ep, &transfer_error());
    assert_eq!(d.url, "https://api.datadoghq.com/api/v1/events");
    assert!(
        d.sensitive_headers
            .iter()
            .any(|h| h.name == "DD-API-KEY" && h.value == "DDKEY")
    );
    assert!(d.headers.iter().all(|h| h.value != "DDKEY"));
    let b = body(&d);
    assert_eq!(b["alert_type"], "error");
    assert_eq!(b["aggregation_key"], "t-1");
    assert_eq!(b["date_happened"], 1_697_397_548);
    assert!(b["title"].as_str().unwrap().chars().count() <= 100);
    let tags: Vec<&str> = b["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tags.contains(&"event_type:transfer.error")
            && tags.contains(&"transfer_id:t-1")
            && tags.contains(&"destination_id:d-1")
    );
}

#[test]
fn generic_get_sends_the_payload_as_query_parameters_without_sensitive_fields() {
    let d = render(
        endpoint("generic_get", "https://example.com/hook?token=abc"),
        &transfer_error(),
    );
    assert_eq!(d.method, "GET");
    assert!(d.body.is_empty());
    let url = url::Url::parse(&d.url).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("token"), Some("abc"), "the URL's own parameters stay");
    assert_eq!(get("type"), Some("transfer.error"));
    assert_eq!(get("api_version"), Some("2023-10-15"));
    assert_eq!(get("data.error.transfer_id"), Some("t-1"));
    assert_eq!(get("data.error.models.0"), Some("users"));
    assert_eq!(get("data.error.is_full_refresh"), Some("true"));
    assert_eq!(
        get("data.error.transfer_ended_at"),
        None,
        "nulls are left out"
    );
    assert_eq!(
        get("data.error.transfer_log"),
        None,
        "sensitive fields never go into URLs"
    );
}

#[test]
fn templated_requests_dataprep_style() {
    let ep = Endpoint {
        url: "https://example.com/{{.Data.error.destination_id}}/tasks?t={{.Type | urlquery}}".into(),
        method: Some("PUT".into()),
        header_template: Some("Authorization: Bearer {{.Secret}}\nX-Outcome: {{.Outcome}}\n".into()),
        headers: vec![HeaderTemplate { name: "X-Transfer".into(), value: "{{.Data.error.transfer_id}}".into() }],
        body_template: Some("{\"transfer\": {{printf \"%q\" .Data.error.transfer_id}}, \"ok\": {{eq .Outcome \"success\"}}}".into()),
        secret: Some("s3cret".into()),
        ..endpoint("generic_post", "")
    };
    let d = render(ep, &transfer_error());
    assert_eq!(d.method, "PUT");
    assert_eq!(d.url, "https://example.com/d-1/tasks?t=transfer.error");
    assert_eq!(body(&d), json!({"transfer": "t-1", "ok": false}));
    let h = |n: &str| {
        d.sensitive_headers
            .iter()
            .find(|h| h.name == n)
            .map(|h| h.value.as_str())
    };
    assert_eq!(h("Authorization"), Some("Bearer s3cret"));
    assert_eq!(h("X-Outcome"), Some("failure"));
    assert_eq!(h("X-Transfer"), Some("t-1"));
    assert!(d.headers.iter().any(|h| h.name == "Content-Type"));

    let get = Endpoint {
        method: Some("DELETE".into()),
        body_template: Some("ignored".into()),
        ..endpoint("generic_post", "https://example.com/x")
    };
    let d = render(get, &transfer_error());
    assert!(d.body.is_empty(), "GET and DELETE send no body");
    assert!(d.headers.iter().all(|h| h.name != "Content-Type"));
}

#[test]
fn the_seed_slack_template_works_on_webhooks() {
    let slack = "{\"attachments\": [{\"text\": {{printf \"*Prequel Sensitive Trace | Destination:* %s\\n\\n*<https://YOUR_ADMIN_HOST/destinations/%s|View Destination>*\\n\\n*Environment:* %s\\n\\n*Timestamp:* %s\\n\\n*Traces:*\\n```json\\n%s\\n```\" .DestinationId .DestinationId .Environment .Timestamp .SensitiveTraces | printf \"%q\"}}, \"color\": \"danger\", \"mrkdwn_in\": [\"text\"]}]}";
    let ep = Endpoint {
        body_template: Some(slack.into()),
        header_template: Some("Content-Type: application/json".into()),
        ..endpoint("generic_post", "https://hooks.slack.com/services/X")
    };
    let trace = event(
        json!({"type": "connection_test.sensitive_trace", "created_at": "2024-01-15T10:30:00Z", "data": {
        "destination_id": "dest-123", "execution_context": "test_destination_connection", "trace": "ERROR: boom"}}),
    );
    let b = body(&render(ep, &trace));
    let text = b["attachments"][0]["text"].as_str().unwrap();
    assert!(text.contains("*Prequel Sensitive Trace | Destination:* dest-123"));
    assert!(
        text.contains("*Environment:* prod") && text.contains("*Timestamp:* 2024-01-15T10:30:00Z")
    );
    assert!(text.contains("\"trace\":\"ERROR: boom\""));
}

#[test]
fn bad_templates_and_requests_are_caught_by_a_dry_run() {
    let reg = registry();
    let check = |ep: Endpoint| render::compile(ep).and_then(|c| render::validate(&c, &reg, "prod"));
    let table = [
        (
            Endpoint {
                body_template: Some("{{.Data.error.transfer_id".into()),
                ..endpoint("generic_post", "https://x")
            },
            "body_template",
            "HL-TEMPLATE-PARSE",
        ),
        (
            Endpoint {
                url: "{{.Type}}".into(),
                ..endpoint("generic_post", "")
            },
            "url",
            "HL-RENDER-INVALID",
        ),
        (
            Endpoint {
                header_template: Some("no colon here".into()),
                ..endpoint("generic_post", "https://x")
            },
            "header_template",
            "HL-RENDER-INVALID",
        ),
        (
            Endpoint {
                header_template: Some("Bad Name: x".into()),
                ..endpoint("generic_post", "https://x")
            },
            "header_template",
            "HL-RENDER-INVALID",
        ),
        (
            Endpoint {
                body_template: Some("{{index .Data.nope 3}}".into()),
                ..endpoint("generic_post", "https://x")
            },
            "body_template",
            "HL-TEMPLATE-EXEC",
        ),
        (
            Endpoint {
                body_template: Some("{{template \"x\"}}".into()),
                ..endpoint("generic_post", "https://x")
            },
            "body_template",
            "HL-TEMPLATE-UNSUPPORTED",
        ),
    ];
    for (ep, field, code) in table {
        let err = check(ep).unwrap_err();
        assert_eq!((err.field(), err.code()), (Some(field), code), "{err}");
    }
    assert!(
        check(Endpoint {
            body_template: Some("{{.Type}}".into()),
            ..endpoint("generic_post", "https://x/{{.Id}}")
        })
        .is_ok()
    );
}

#[test]
fn render_errors_never_carry_the_secret() {
    let ep = Endpoint {
        secret: Some("TOPSECRET".into()),
        header_template: Some("X: {{.Secret}}\n{{.Secret}}".into()),
        ..endpoint("generic_post", "https://x")
    };
    let compiled = render::compile(ep).expect("the endpoint compiles");
    let err = render::render(&transfer_error(), &compiled, "prod", "now").unwrap_err();
    assert!(!err.to_string().contains("TOPSECRET"), "{err}");
}

#[test]
fn secrets_are_marked_for_sealing_and_kept_out_of_urls_and_reserved_headers() {
    let pd = render(
        Endpoint {
            api_key: Some("R".into()),
            ..endpoint("pagerduty", "")
        },
        &transfer_error(),
    );
    assert!(pd.body_sealed, "PagerDuty's body carries the routing key");
    let templated = Endpoint {
        secret: Some("S3".into()),
        body_template: Some("{{.}}".into()),
        ..endpoint("generic_post", "https://x")
    };
    assert!(
        render(templated, &transfer_error()).body_sealed,
        "a templated body of an endpoint with a secret is sealed"
    );
    assert!(!render(endpoint("generic_post", "https://x"), &transfer_error()).body_sealed);

    let reg = registry();
    let check = |ep: Endpoint| render::compile(ep).and_then(|c| render::validate(&c, &reg, "prod"));
    let url = check(Endpoint {
        url: "https://x/?k={{.Secret}}".into(),
        secret: Some("S3".into()),
        ..endpoint("generic_post", "")
    })
    .unwrap_err();
    assert_eq!(url.field(), Some("url"));
    for name in [
        "X-Prequel-Webhook-Signature",
        "webhook-signature",
        "Content-Length",
        "Host",
        "Hookline-Delivery-Id",
    ] {
        let ep = Endpoint {
            header_template: Some(format!("{name}: x")),
            ..endpoint("generic_post", "https://x")
        };
        let err = check(ep).unwrap_err();
        assert_eq!(
            (err.field(), err.code()),
            (Some("header_template"), "HL-RENDER-INVALID"),
            "{name}"
        );
    }
}
