//! Sensitive-trace requests: the seed's two endpoint examples verbatim, its default
//! headers and body byte for byte, hookline's split and flush markers, and refusals
//! that name the field without quoting what was rendered.

use render::{
    FlushReason, RenderError, TraceBatch, TracesRequest, compile_traces, render_traces,
    trace_timestamp, validate_traces,
};
use serde_json::{Value, json};
use wire::{Endpoint, Header};

const SEED_GENERIC: &str = include_str!("fixtures/seed-generic-endpoint.json");
const SEED_SLACK: &str = include_str!("fixtures/seed-slack-endpoint.json");

/// The seed's trace object, and a second one with characters JSON and Go quote differently.
const TRACES: &str = r#"[{"destination_id":"dest-123","source_id":"src-456","model_id":"model-789","model_name":"users_table","source_vendor":"postgres","destination_vendor":"snowflake","execution_context":"write_destination","trace":"ERROR: duplicate key value violates unique constraint ..."},{"destination_id":"dest-123","source_id":"src-457","execution_context":"read_source","trace":"line \"one\"\n\ttwo é <b>"}]"#;

/// An endpoint from the API's `{"sensitive_trace_endpoint": {...}}` body, as the producer stores it.
fn from_seed(body: &str) -> Endpoint {
    let v: Value = serde_json::from_str(body).expect("the seed example is JSON");
    let e = &v["sensitive_trace_endpoint"];
    let text = |k: &str| e[k].as_str().map(str::to_owned);
    Endpoint {
        id: "ste-1".into(),
        kind: "sensitive_trace".into(),
        name: text("name").expect("a name"),
        vendor: "sensitive_trace".into(),
        url: text("url").expect("a url"),
        active: true,
        description: text("description"),
        header_template: text("header_template"),
        body_template: text("body_template"),
        secret: text("secret"),
        signing_scheme: "none".into(),
        ..Endpoint::default()
    }
}

fn endpoint(
    url: &str,
    secret: Option<&str>,
    header_template: Option<&str>,
    body_template: Option<&str>,
) -> Endpoint {
    Endpoint {
        id: "ste-2".into(),
        kind: "sensitive_trace".into(),
        name: "n".into(),
        vendor: "sensitive_trace".into(),
        url: url.into(),
        active: true,
        secret: secret.map(Into::into),
        header_template: header_template.map(Into::into),
        body_template: body_template.map(Into::into),
        signing_scheme: "none".into(),
        ..Endpoint::default()
    }
}

fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

struct Batch {
    sources: Vec<String>,
    models: Vec<String>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            sources: ids(&["src-456", "src-457"]),
            models: ids(&["model-789"]),
        }
    }

    fn batch(&self, part: u32, last_part: bool, flush_reason: FlushReason) -> TraceBatch<'_> {
        TraceBatch {
            transfer_id: Some("tr-9"),
            destination_id: "dest-123",
            traces_json: TRACES,
            source_ids: &self.sources,
            model_ids: &self.models,
            timestamp: "2024-01-15T10:30:00Z",
            part,
            last_part,
            flush_reason,
        }
    }
}

fn render(ep: Endpoint, batch: &TraceBatch<'_>) -> TracesRequest {
    let compiled = compile_traces(ep).expect("compiles");
    render_traces(&compiled, batch, "prod").expect("renders")
}

fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn pairs(headers: &[Header]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|h| (h.name.as_str(), h.value.as_str()))
        .collect()
}

#[test]
fn the_seed_generic_example_sends_the_traces_as_errors_with_the_bearer_secret() {
    let b = Batch::new();
    let r = render(
        from_seed(SEED_GENERIC),
        &b.batch(1, true, FlushReason::Completed),
    );
    assert_eq!(r.method, "POST");
    assert_eq!(r.url, "https://your-domain.com/webhooks/prequel-errors");
    assert_eq!(
        pairs(&r.sensitive_headers),
        [
            ("Authorization", "Bearer your-webhook-secret-token"),
            ("Content-Type", "application/json")
        ]
    );
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        body["errors"],
        serde_json::from_str::<Value>(TRACES).unwrap()
    );
    assert_eq!(body["environment"], "prod");
    assert_eq!(body["timestamp"], "2024-01-15T10:30:00Z");
    assert_eq!(
        body["destination_url"],
        "https://YOUR_ADMIN_HOST/destinations/dest-123"
    );
    assert!(
        !pairs(&r.headers)
            .iter()
            .any(|(_, v)| v.contains("your-webhook-secret-token")),
        "the loggable headers hold no secret"
    );
}

#[test]
fn the_seed_slack_example_is_a_red_attachment_holding_the_traces() {
    let b = Batch::new();
    let r = render(
        from_seed(SEED_SLACK),
        &b.batch(1, true, FlushReason::Completed),
    );
    assert_eq!(r.url, "https://hooks.slack.com/services/YOUR_WEBHOOK_URL");
    assert_eq!(
        pairs(&r.sensitive_headers),
        [("Content-Type", "application/json")],
        "no secret, no Authorization"
    );
    let body: Value = serde_json::from_slice(&r.body).expect("the Slack body is JSON");
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["color"], "danger");
    assert_eq!(attachment["mrkdwn_in"], json!(["text"]));
    let text = attachment["text"].as_str().unwrap();
    assert!(
        text.starts_with("*Prequel Sensitive Trace | Destination:* dest-123\n\n"),
        "{text}"
    );
    assert!(
        text.contains("*Environment:* prod") && text.contains("*Timestamp:* 2024-01-15T10:30:00Z")
    );
    assert!(
        text.contains(&format!("```json\n{TRACES}\n```")),
        "the traces, unchanged, in a code block"
    );
}

#[test]
fn defaults_are_the_seeds_headers_and_body_byte_for_byte() {
    let one = r#"[{"destination_id":"dest-123","trace":"ERROR: ..."}]"#;
    let ids = Batch::new();
    let b = TraceBatch {
        traces_json: one,
        ..ids.batch(1, true, FlushReason::Completed)
    };
    let r = render(
        endpoint("https://h.example/traces", Some("s3cr3t"), None, None),
        &b,
    );
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"{"environment":"prod","sensitive_traces":[{"destination_id":"dest-123","trace":"ERROR: ..."}],"destination_id":"dest-123","timestamp":"2024-01-15T10:30:00Z"}"#
    );
    assert_eq!(
        pairs(&r.sensitive_headers),
        [
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer s3cr3t")
        ]
    );
    // Without a secret, no Authorization; a header_template replaces the defaults entirely.
    let r = render(endpoint("https://h.example/traces", None, None, None), &b);
    assert_eq!(
        pairs(&r.sensitive_headers),
        [("Content-Type", "application/json")]
    );
    let r = render(
        endpoint(
            "https://h.example/traces",
            Some("s3cr3t"),
            Some("X-Token: {{.Secret}}"),
            None,
        ),
        &b,
    );
    assert_eq!(pairs(&r.sensitive_headers), [("X-Token", "s3cr3t")]);
    let staging = render_traces(
        &compile_traces(endpoint("https://h.example/t", None, None, None)).unwrap(),
        &b,
        "staging",
    )
    .unwrap();
    assert!(
        String::from_utf8(staging.body)
            .unwrap()
            .starts_with(r#"{"environment":"staging","#)
    );
}

#[test]
fn split_and_max_age_batches_say_so_in_the_default_body_and_the_markers() {
    let b = Batch::new();
    let ep = || endpoint("https://h.example/traces", None, None, None);
    // (part, last, reason) -> what the default body ends with, and the markers.
    let table = [
        (
            1,
            true,
            FlushReason::Completed,
            r#""timestamp":"2024-01-15T10:30:00Z"}"#,
            ("1", "true", "completed"),
        ),
        (
            1,
            false,
            FlushReason::MaxAge,
            r#""timestamp":"2024-01-15T10:30:00Z","part":1,"last_part":false,"flush_reason":"max_age"}"#,
            ("1", "false", "max_age"),
        ),
        (
            2,
            false,
            FlushReason::MaxAge,
            r#","part":2,"last_part":false,"flush_reason":"max_age"}"#,
            ("2", "false", "max_age"),
        ),
        (
            3,
            true,
            FlushReason::Completed,
            r#""timestamp":"2024-01-15T10:30:00Z","part":3,"last_part":true}"#,
            ("3", "true", "completed"),
        ),
        (
            1,
            true,
            FlushReason::MaxAge,
            r#""timestamp":"2024-01-15T10:30:00Z","flush_reason":"max_age"}"#,
            ("1", "true", "max_age"),
        ),
        (
            1,
            true,
            FlushReason::ConnectionTest,
            r#""timestamp":"2024-01-15T10:30:00Z"}"#,
            ("1", "true", "connection_test"),
        ),
    ];
    for (part, last, reason, tail, (m_part, m_last, m_flush)) in table {
        let r = render(ep(), &b.batch(part, last, reason));
        let body = String::from_utf8(r.body).unwrap();
        assert!(body.ends_with(tail), "{part} {last} {reason:?}: {body}");
        serde_json::from_str::<Value>(&body).expect("the default body is JSON");
        assert_eq!(
            pairs(&r.headers),
            [
                ("Hookline-Trace-Part", m_part),
                ("Hookline-Trace-Last-Part", m_last),
                ("Hookline-Trace-Flush", m_flush)
            ]
        );
    }
}

#[test]
fn every_variable_reaches_the_templates() {
    let b = Batch::new();
    let body = "{{.Environment}}|{{.Timestamp}}|{{.DestinationId}}|{{.SourceIds}}|{{.ModelIds}}|{{.TransferId}}|{{.Part}}|{{.LastPart}}|{{.FlushReason}}|{{.Secret}}|{{len .SensitiveTraces}}";
    let ep = endpoint(
        "https://h.example/{{.DestinationId}}/{{.Part}}",
        Some("k"),
        Some("X-Part: {{.Part}}/{{.LastPart}}"),
        Some(body),
    );
    let r = render(ep.clone(), &b.batch(2, false, FlushReason::MaxAge));
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        format!(
            r#"prod|2024-01-15T10:30:00Z|dest-123|["src-456","src-457"]|["model-789"]|tr-9|2|false|max_age|k|{}"#,
            TRACES.len()
        )
    );
    assert_eq!(r.url, "https://h.example/dest-123/2");
    assert_eq!(header(&r.sensitive_headers, "X-Part"), Some("2/false"));
    // A connection test has no transfer.
    let test = TraceBatch {
        transfer_id: None,
        source_ids: &[],
        model_ids: &[],
        ..b.batch(1, true, FlushReason::ConnectionTest)
    };
    let r = render(
        endpoint(
            "https://h.example/x",
            None,
            None,
            Some("[{{.TransferId}}]{{.SourceIds}}{{.FlushReason}}{{if .LastPart}}!{{end}}"),
        ),
        &test,
    );
    assert_eq!(String::from_utf8(r.body).unwrap(), "[][]connection_test!");
}

#[test]
fn refusals_name_the_field_and_never_quote_the_secret_or_traces() {
    let secret = "s3cr3t-value";
    // (endpoint, field, code)
    let table = [
        (
            endpoint(
                "https://h/x",
                None,
                None,
                Some("{\"a\": {{.SensitiveTraces}"),
            ),
            "body_template",
            "HL-TEMPLATE-PARSE",
        ),
        (
            endpoint("https://h/x", None, None, Some("{{template \"x\"}}")),
            "body_template",
            "HL-TEMPLATE-UNSUPPORTED",
        ),
        (
            endpoint("https://h/x", None, None, Some("{{len .Part}}")),
            "body_template",
            "HL-TEMPLATE-EXEC",
        ),
        (
            endpoint("not a url", None, None, None),
            "url",
            "HL-RENDER-INVALID",
        ),
        (
            endpoint("ftp://h/x", None, None, None),
            "url",
            "HL-RENDER-INVALID",
        ),
        (
            endpoint("https://h/{{.Secret}}", Some(secret), None, None),
            "url",
            "HL-RENDER-INVALID",
        ),
        (
            endpoint("https://h/{{.Nope", None, None, None),
            "url",
            "HL-TEMPLATE-PARSE",
        ),
        (
            endpoint("https://h/x", None, Some("not a header"), None),
            "header_template",
            "HL-RENDER-INVALID",
        ),
        (
            endpoint("https://h/x", None, Some("Hookline-Trace-Part: 9"), None),
            "header_template",
            "HL-RENDER-INVALID",
        ),
        (
            endpoint("https://h/x", None, Some("hookline-anything: x"), None),
            "header_template",
            "HL-RENDER-INVALID",
        ),
        (
            endpoint("https://h/x", None, Some("Content-Length: 3"), None),
            "header_template",
            "HL-RENDER-INVALID",
        ),
        (
            endpoint(
                "https://h/x",
                Some(secret),
                Some("X-Key: {{.Secret}}\n{{.SensitiveTraces}}"),
                None,
            ),
            "header_template",
            "HL-RENDER-INVALID",
        ),
        (
            endpoint(
                "https://h/x",
                None,
                Some("X-Trace: {{printf \"%s\\x00\" .DestinationId}}"),
                None,
            ),
            "header_template",
            "HL-RENDER-INVALID",
        ),
    ];
    for (ep, field, code) in table {
        let err: RenderError = validate_traces(&ep, "prod").unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        assert_eq!(err.code(), code, "{err}");
        let text = err.to_string();
        assert!(
            !text.contains(secret) && !text.contains("duplicate key") && !text.contains("dest-123"),
            "{text}"
        );
    }
    // A template that does not parse is refused with its line and column.
    let err = validate_traces(
        &endpoint(
            "https://h/x",
            None,
            None,
            Some("{\n  \"t\": {{.SensitiveTraces}\n}"),
        ),
        "prod",
    )
    .unwrap_err();
    match err {
        RenderError::Template {
            field,
            error: templates::TemplateError::Parse { line, col, .. },
        } => {
            assert_eq!(field, "body_template");
            assert_eq!(line, 2, "col {col}");
            assert!(col > 1, "col {col}");
        }
        other => panic!("{other:?}"),
    }
    // Traces that are not a JSON array are the caller's bug, refused, not sent.
    let b = Batch::new();
    let bad = TraceBatch {
        traces_json: "{\"trace\": \"x\"}",
        ..b.batch(1, true, FlushReason::Completed)
    };
    let c = compile_traces(endpoint("https://h/x", None, None, None)).unwrap();
    assert_eq!(
        render_traces(&c, &bad, "prod").unwrap_err().field(),
        Some("sensitive_traces")
    );
    // And the seed's examples pass the dry run.
    validate_traces(&from_seed(SEED_GENERIC), "prod").unwrap();
    validate_traces(&from_seed(SEED_SLACK), "staging").unwrap();
}

#[test]
fn timestamps_are_gos_rfc3339_in_seconds() {
    let t = time::macros::datetime!(2024-01-15 12:30:00.987 +02:00);
    assert_eq!(trace_timestamp(t), "2024-01-15T10:30:00Z");
    assert_eq!(
        trace_timestamp(time::OffsetDateTime::UNIX_EPOCH),
        "1970-01-01T00:00:00Z"
    );
}

#[test]
fn urls_never_carry_traces_or_the_secret_even_encoded() {
    let refused = compile_traces(endpoint(
        "https://h/x?t={{.SensitiveTraces}}",
        None,
        None,
        None,
    ))
    .expect_err("traces in the URL");
    assert_eq!(refused.field(), Some("url"));
    let b = Batch::new();
    for url in [
        "https://h/x?s={{.Secret | urlquery}}",
        "https://h/x?d={{printf \"%v\" . | urlquery}}",
    ] {
        let compiled =
            compile_traces(endpoint(url, Some("hush hush"), None, None)).expect("parses");
        let err = render_traces(&compiled, &b.batch(1, true, FlushReason::Completed), "prod")
            .expect_err(url);
        assert_eq!(err.field(), Some("url"), "{url}");
        assert!(!err.to_string().contains("hush"), "{err}");
    }
}
